"""`nas export`: a run's architecture as safetensors + config.json (timm-loadable) and ONNX, with
parity against what the search evaluated. Every family goes through the same path."""
import json

import numpy as np
import pytest
import torch

from conftest import nas_cli, run_search
from nas.spaces import FAMILIES, SearchSpace, get_space, space_files



def _one_space_per_family() -> list[str]:
    """The shipped space of each family whose largest network is smallest: a family added later is
    exported here without editing this file (the contract test covers that every space builds)."""
    best: dict[str, tuple[float, str]] = {}
    for name in sorted(space_files()):
        space = get_space(name)
        params = float(space.cost(space.genomes([space.largest()]))["params"][0])
        best[space.family] = min(best.get(space.family, (params, name)), (params, name))
    return sorted(name for _, name in best.values())


FAMILY_SPACES = _one_space_per_family()


def test_every_family_has_an_exported_space():
    assert {get_space(n).family for n in FAMILY_SPACES} == set(FAMILIES.names())
    assert {"nb201", "asvit-tiny", "elasticvit-tiny", "deepmad-tiny", "vit-resnas-micro"} <= set(FAMILY_SPACES)


def _timm(folder):
    import timm

    import nas.export  # noqa: F401  (registers vitnas_<family> with timm)

    cfg = json.loads((folder / "config.json").read_text())
    return timm.create_model(cfg["timm_name"], pretrained_cfg_overlay=dict(file=str(folder / "model.safetensors"))).eval()


def _onnx(folder, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x.numpy()})[0]


@pytest.mark.parametrize("name", FAMILY_SPACES)
def test_every_family_exports_fresh_weights_with_parity(name, tmp_path):
    from nas.export import Source, export, timm_name

    space = get_space(name)
    arch = space.arch(space.sample(np.random.default_rng(3), 1)[0])  # convs, attention and MLPs in every family
    rec = export(Source(tmp_path, space, np.asarray(arch.genome), arch.id, None, None, 5, 2), tmp_path / "e", "all")
    assert rec["parity_ok"] and rec["weights"] == "fresh" and rec["max_abs_err_torch"] == 0.0
    assert rec["max_rel_err_onnx"] < 1e-4
    assert json.loads((tmp_path / "exports.jsonl").read_text()) == rec
    folder = tmp_path / "e"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.onnx", "model.safetensors", "space.toml"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    # independently: the network the run's seed initialises (what its proxy scored), the loaded
    # one, and onnxruntime at a batch size the graph was not traced at (dynamic batch)
    torch.manual_seed(5)
    ref = space.build(arch).eval()
    model = _timm(folder)
    assert type(model) is type(ref) and json.loads((folder / "config.json").read_text())["timm_name"] == timm_name(space.family)
    r = space.input_resolution(arch) or 32
    x = torch.randn(3, 3, r, r, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y_ref, y = ref(x), model(x)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    np.testing.assert_allclose(_onnx(folder, x), y.numpy(), rtol=1e-4, atol=1e-4 * float(y.abs().max()))


def test_loading_refuses_an_edited_space_and_a_mismatched_family(tmp_path):
    from nas.errors import UserError
    from nas.export import Source, export, load

    space = get_space("nb201")
    arch = space.smallest()
    export(Source(tmp_path, space, np.asarray(arch.genome), arch.id, None, None, 0, 2), tmp_path / "e", "torch")
    assert not (tmp_path / "e" / "model.onnx").exists()
    load(tmp_path / "e")  # the documented equivalent of the timm call
    import timm

    with pytest.raises(UserError, match="not 'asvit'"):
        timm.create_model("vitnas_asvit", pretrained_cfg_overlay=dict(file=str(tmp_path / "e" / "model.safetensors")))
    toml = tmp_path / "e" / "space.toml"
    toml.write_text(toml.read_text().replace("channels = 16", "channels = 24"))
    with pytest.raises(UserError, match="edited since the export"):
        load(tmp_path / "e")


def test_a_family_without_build_support_is_refused_with_nothing_written(tmp_path, monkeypatch):
    from nas.errors import UserError
    from nas.export import Source, export

    space = get_space("nb201")
    monkeypatch.setattr(type(space), "build", SearchSpace.build)  # the base class: "cannot build models"
    arch = space.smallest()
    with pytest.raises(UserError, match="cannot build standalone networks"):
        export(Source(tmp_path, space, np.asarray(arch.genome), arch.id, None, None, 0, 2), tmp_path / "e", "all")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def nb201_run(tmp_path_factory):
    return run_search(tmp_path_factory.mktemp("nb201") / "run", space="nb201", devices=(), objectives="naswot,params",
                      budget=4, population=4, seed=2)


def test_cli_exports_a_pareto_point_of_a_proxy_run(nb201_run, tmp_path):
    r = nas_cli("export", str(nb201_run), "--point", "0")
    assert r.returncode == 0, r.stderr
    assert "FRESHLY INITIALISED" in r.stdout and "timm.create_model('vitnas_nb201'" in r.stdout
    rec = json.loads((nb201_run / "exports.jsonl").read_text().splitlines()[-1])
    first = (nb201_run / "pareto.csv").read_text().splitlines()[1].split(",")[0]
    assert rec["point"] == 0 and rec["arch_id"] == first and rec["format"] == "all" and rec["parity_ok"]
    assert set(rec) >= {"point", "arch_id", "format", "path", "max_abs_err_torch", "max_abs_err_onnx", "max_rel_err_onnx"}
    assert f"onnxruntime max abs err {rec['max_abs_err_onnx']:.3g}" in r.stdout
    folder = nb201_run / "exports" / first
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["weights"]["kind"] == "fresh" and cfg["point"] == 0 and cfg["arch_id"] == first
    # --id: any evaluated architecture, here the last one evaluated
    from nas.export import export, source

    last = json.loads((nb201_run / "evals.jsonl").read_text().splitlines()[-1])["id"]
    rec = export(source(nb201_run, arch_id=last), tmp_path / "last", "onnx")
    assert rec["point"] is None and rec["arch_id"] == last and rec["max_abs_err_onnx"] is not None
    assert sorted(p.name for p in (tmp_path / "last").iterdir()) == ["config.json", "model.onnx", "space.toml"]


def test_cli_bad_input_is_one_line_and_writes_nothing(nb201_run, tmp_path):
    before = sorted(p.name for p in nb201_run.rglob("*"))
    log = (nb201_run / "exports.jsonl").read_bytes() if (nb201_run / "exports.jsonl").exists() else b""
    n = len((nb201_run / "pareto.csv").read_text().splitlines()) - 1
    (tmp_path / "file").write_text("x")
    cases = [(["--point", "99"], f"has {n} points"),
             (["--id", "nb201-000000000000"], "not among the 4 architectures"),
             (["--point", "0", "--out", str(tmp_path / "file" / "sub")], "cannot write there"),
             (["--point", "0", "--out", str(tmp_path)], "exists and is not an empty directory"),
             (["--point", "0", "--format", "tflite"], "unknown --format 'tflite'")]
    for args, msg in cases:
        r = nas_cli("export", str(nb201_run), *args)
        assert r.returncode == 2 and msg in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = nas_cli("export", str(tmp_path), "--point", "0")
    assert r.returncode == 2 and "not a run directory" in r.stderr
    assert sorted(p.name for p in nb201_run.rglob("*")) == before
    assert ((nb201_run / "exports.jsonl").read_bytes() if (nb201_run / "exports.jsonl").exists() else b"") == log
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_export_of_an_asvit_tiny_proxy_run(tmp_path):
    from nas.export import export, source

    run = run_search(tmp_path / "run", space="asvit-tiny", devices=(), objectives="naswot,macs", budget=3, population=3)
    rec = export(source(run, point=0), run / "exports" / "p0", "all")
    assert rec["parity_ok"] and rec["max_abs_err_torch"] == 0.0 and rec["max_rel_err_onnx"] < 1e-4
    genome = json.loads((run / "exports" / "p0" / "config.json").read_text())["genome"]
    model = _timm(run / "exports" / "p0")
    assert sum(p.numel() for p in model.parameters()) == get_space("asvit-tiny").cost(np.asarray([genome]))["params"][0]


def test_export_of_a_supernet_run_matches_the_supernet_with_the_arch(trained, tmp_path):
    """Pareto point 0 of an elasticvit-tiny search with a trained supernet: the exported network
    computes what the supernet with that arch active computes after the search's BN recalibration."""
    from nas.data import load_data
    from nas.export import export, source
    from nas.scorers import SupernetScorer
    from nas.train.bn import accuracy

    run = run_search(tmp_path / "run", space="elasticvit-tiny", devices=(), objectives="accuracy,macs",
                     supernet=str(trained), budget=3, population=3, threads=2)
    rec = export(source(run, point=0), run / "exports" / "p0", "all")
    assert rec["weights"] == "supernet" and rec["parity_ok"]
    assert rec["max_abs_err_torch"] < 1e-5 and rec["max_rel_err_onnx"] < 1e-4
    folder = run / "exports" / "p0"
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["weights"]["ema"] and "bn_recalibration" in cfg["weights"] and cfg["input"]["shape"][0] == 3
    model = _timm(folder)
    space = get_space("elasticvit-tiny")
    # independently: a fresh scorer on the same checkpoint; the supernet with the arch active
    scorer = SupernetScorer(space, str(trained), 2)
    supernet = scorer.calibrated(np.asarray(cfg["genome"])).eval()
    data = load_data("fashion-mnist", heldout=600, seed=0)
    x = torch.cat([data.normalise(b) for b, _ in data.raw_batches(data.heldout, 5, stop=1)])
    with torch.no_grad():
        torch.testing.assert_close(model(x), supernet(x), rtol=0, atol=1e-5)
    np.testing.assert_allclose(_onnx(folder, x), model(x).detach().numpy(), rtol=1e-4, atol=1e-4)
    # the exported network's held-out accuracy is the accuracy the search logged for it
    pareto = (run / "pareto.csv").read_text().splitlines()
    logged = float(pareto[1].split(",")[pareto[0].split(",").index("accuracy")])
    acc, _ = accuracy(model, [(data.normalise(xb), yb) for xb, yb in data.raw_batches(data.heldout, 512)])
    assert acc == pytest.approx(logged, abs=2e-3)
