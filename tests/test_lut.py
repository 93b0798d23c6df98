"""`nas lut build` / `nas lut validate`: block decomposition, the measurement protocol, resumable
builds, fitted subsets, validation with a correction, and local tables as ordinary devices."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.errors import MissingKeysError, UserError
from nas.latency import load_table
from nas.latency.build import build_table
from nas.latency.measure import Protocol, runtime, summarise, time_samples
from nas.latency.table import space_blocks
from nas.spaces import get_space

FAST = Protocol(repeats=5, warmup=1, warmup_ms=0, min_sample_ms=0.2, retries=0, passes=1)
FAST_FLAGS = ["--repeats", "5", "--warmup", "1", "--min-sample-ms", "0.2", "--retries", "0", "--passes", "1"]
REPO = Path(__file__).resolve().parents[1]


def nas(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "nas.cli", *args], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, **(env or {})}, timeout=600)
    if check and r.returncode != 0:
        raise AssertionError(f"nas {' '.join(args)} failed ({r.returncode}): {r.stderr[-2000:]}")
    return r


def _archs(space, n=3, seed=0):
    rng = np.random.default_rng(seed)
    return [space.smallest(), space.largest()] + [space.arch(g) for g in space.sample(rng, n)]


# ---- blocks ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["elasticvit-tiny", "nb201"])
def test_blocks_sum_to_the_network(name):
    """Every architecture's blocks, built from their keys alone, hold exactly the network's
    parameters and do exactly its FLOPs: the table's decomposition misses no layer."""
    from torch.utils.flop_counter import FlopCounterMode

    from nas.latency.fit import block_features
    from nas.nets.blocks import build_block

    space = get_space(name)
    specs = space_blocks(space, "ceil")
    for arch in _archs(space):
        keys = _keys_of(space, arch)
        feats = block_features({k: specs[k] for k in set(keys)})
        net = space.build(arch).eval()
        res = space.input_resolution(arch)
        flops = FlopCounterMode(display=False)
        with torch.inference_mode(), flops:
            net(torch.randn(1, getattr(net, "in_channels", 3), res, res))
        assert sum(feats[k][0] for k in keys) == flops.get_total_flops()
        assert sum(sum(p.numel() for p in build_block(specs[k]).parameters()) for k in keys) == \
            sum(p.numel() for p in net.parameters())


def _keys_of(space, arch) -> list[str]:
    """The keys one architecture sums, in network order, straight from the space's slots."""
    g = np.asarray([arch.genome])
    out = []
    for slot in space.latency_slots("ceil"):
        if slot.present(g)[0]:
            out.append(slot.key(*[space.genes[i].choices[arch.genome[i]] for i in slot.factors]))
    return out


def test_key_set_is_what_prediction_reads(tmp_path):
    space = get_space("nb201")
    keys = list(space_blocks(space, "ceil"))
    assert keys == sorted(keys) and len(keys) == 19  # stem, 2 residual blocks, head, 5 ops x 3 stages
    assert keys == list(space_blocks(space, "ceil"))  # deterministic
    ev = get_space("elasticvit-tiny")
    assert len(space_blocks(ev, "ceil")) == 567
    # a table holding exactly these keys covers the space; without one key, that key is missing
    folder = _write_table(tmp_path / "t", space, {k: 0.01 for k in keys})
    assert load_table(str(folder), space).missing_keys(space) == []
    _write_table(tmp_path / "u", space, {k: 0.01 for k in keys[1:]})
    with pytest.raises(MissingKeysError) as e:
        load_table(str(tmp_path / "u"), space)
    assert e.value.keys == [keys[0]]
    assert f"nas lut build --space nb201 --device local-cpu --out {tmp_path / 'u'}" in str(e.value)


def _write_table(folder: Path, space, values: dict[str, float]) -> Path:
    import hashlib

    folder.mkdir(parents=True)
    text = "block,latency_ms\n" + "".join(f"{k},{v}\n" for k, v in values.items())
    (folder / f"{space.name}.csv").write_text(text)
    (folder / f"{space.name}.toml").write_text(
        f'device = "local-cpu"\nruntime = "local-cpu"\nfamily = "{space.family}"\ntable = "{space.name}.csv"\n'
        f'units = "ms"\ngrid_rounding = "ceil"\nsha256 = "{hashlib.sha256(text.encode()).hexdigest()}"\n')
    return folder


# ---- protocol --------------------------------------------------------------------------------
def test_summarise_rejects_outliers_and_reports_spread():
    samples = [1.0, 1.01, 0.99, 1.02, 0.98, 1.0, 1.01, 0.99, 5.0, 9.0]  # two preemptions
    m = summarise(samples)
    assert m.taken == 10 and m.kept == 8
    assert m.median_ms == pytest.approx(1.0)
    assert 0 < m.spread < 0.03


def test_time_samples_times_in_milliseconds():
    def spin():  # busy for 1 ms (sleep would measure the scheduler)
        t = time.perf_counter()
        while time.perf_counter() - t < 1e-3:
            pass

    m = time_samples(spin, Protocol(repeats=5, warmup=1, warmup_ms=0, min_sample_ms=0, retries=0))
    # the spin guarantees >= 1 ms; the upper bound only catches a unit error (us would read 1000)
    assert m.inner == 1 and 1.0 <= m.median_ms < 100
    calls = []
    m = time_samples(lambda: calls.append(1), Protocol(repeats=5, warmup=2, warmup_ms=0, min_sample_ms=1.0, retries=0))
    assert m.inner > 1  # a sample of a microsecond call holds many calls
    assert len(calls) >= 2 + 5 * m.inner


def test_protocol_rejects_bad_values():
    with pytest.raises(UserError, match="--repeats"):
        Protocol(repeats=3)
    with pytest.raises(UserError, match="--threads"):
        Protocol(threads=0)


def test_onnxruntime_measures_the_same_block():
    """The ONNX export the runtime times computes what the torch block computes."""
    from nas.nets.blocks import build_block, example_input

    space = get_space("elasticvit-tiny")
    specs = space_blocks(space, "ceil")
    rt = runtime("onnxruntime-cpu", FAST)
    for key in [k for k in specs if k.startswith(("transattn", "conv_"))][:2]:
        block, x = build_block(specs[key]), example_input(specs[key])
        sess = rt.session(block, x)
        with torch.inference_mode():
            want = block(x).numpy()
        np.testing.assert_allclose(sess.run(None, {"x": x.numpy()})[0], want, rtol=1e-4, atol=1e-5)
        m = rt.measure(block, x)
        assert m.median_ms > 0 and m.taken == FAST.repeats
    assert rt.environment()["onnxruntime"]


def test_unknown_or_unavailable_devices():
    with pytest.raises(UserError, match="did you mean 'local-cpu'"):
        runtime("local-cp", FAST)
    if not torch.cuda.is_available():  # (with a GPU, the next test measures on it instead)
        with pytest.raises(UserError, match="no CUDA device"):
            runtime("local-cuda", FAST)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: the local-cuda runtime times on it")
def test_local_cuda_measures_blocks_on_the_gpu():
    from nas.nets.blocks import build_block, example_input

    specs = space_blocks(get_space("elasticvit-tiny"), "ceil")
    rt = runtime("local-cuda", FAST)
    key = next(k for k in specs if k.startswith("transattn"))
    m = rt.measure(build_block(specs[key]), example_input(specs[key]))
    assert m.median_ms > 0 and m.taken == FAST.repeats
    env = rt.environment()
    assert env["gpu"] and env["cuda"]


# ---- build -----------------------------------------------------------------------------------
def test_build_writes_a_table_with_provenance(tmp_path):
    space = get_space("nb201")
    r = build_table(space, "local-cpu", FAST, out=tmp_path / "cpu", progress=False)
    assert (r.measured, r.fitted, r.new) == (19, 0, 19)
    table = load_table(str(tmp_path / "cpu"), space)
    assert table.device == "cpu" and table.grid_rounding == "ceil"
    assert sorted(table.ms) == list(space_blocks(space, "ceil")) and all(v > 0 for v in table.ms.values())
    env = table.meta["environment"]
    assert env["threads"] == 1 and env["torch"] == torch.__version__ and env["cpu"]
    assert table.meta["protocol"]["repeats"] == 5 and table.meta["runtime"] == "local-cpu"
    how = table.meta["provenance"]["measured"]
    assert "{" not in how and f"after {3} other blocks" in how and "median over passes" in how
    rows = list(csv.DictReader((tmp_path / "cpu" / "nb201.csv").open()))
    assert {r["source"] for r in rows} == {"measured"}
    # rebuilding an unchanged space measures nothing
    again = build_table(space, "local-cpu", FAST, out=tmp_path / "cpu", progress=False)
    assert again.new == 0
    # a table carried to another machine says so
    from nas.latency.table import ForeignTableWarning

    toml = tmp_path / "cpu" / "nb201.toml"
    toml.write_text(toml.read_text().replace(f'cpu = "{env["cpu"]}"', 'cpu = "Some Other CPU"'))
    with pytest.warns(ForeignTableWarning, match="Some Other CPU"):
        load_table(str(tmp_path / "cpu"), space)


def test_partial_build_resumes_and_refuses_other_settings(tmp_path):
    space = get_space("nb201")
    out = tmp_path / "cpu"
    r = build_table(space, "local-cpu", FAST, out=out, progress=False, limit=7)
    assert r.new == 7 and not (out / "nb201.toml").exists()
    with pytest.raises(UserError, match="--fresh"):
        build_table(space, "local-cpu", Protocol(**{**FAST.as_dict(), "threads": 2}), out=out, progress=False)
    r = build_table(space, "local-cpu", FAST, out=out, progress=False)
    assert r.new == 12
    log = [json.loads(x) for x in (out / "nb201.build.jsonl").read_text().splitlines()]
    assert len(log) == 1 + 19 and len({x["key"] for x in log[1:]}) == 19


def test_build_killed_with_sigkill_resumes_without_losing_work(tmp_path):
    out = tmp_path / "cpu"
    log = out / "elasticvit-tiny.build.jsonl"
    subset = ["--max-blocks", "100", *FAST_FLAGS]  # the designed subset: the same 100 blocks after the resume
    args = ["-m", "nas.cli", "lut", "build", "--space", "elasticvit-tiny", "--device", "local-cpu", "--out", str(out),
            "--no-progress", *subset]
    p = subprocess.Popen([sys.executable, *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not (log.exists() and log.read_text().count("\n") >= 30):  # no deadline: pytest-timeout
            assert p.poll() is None, "the build ended before it could be killed"
            time.sleep(0.05)
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.wait()
    before = [json.loads(x) for x in log.read_text().split("\n")[:-1]][1:]  # complete lines only
    assert 29 <= len(before) < 90
    nas("lut", "build", "--space", "elasticvit-tiny", "--device", "local-cpu", "--out", str(out), "--no-progress", *subset)
    after = [json.loads(x) for x in log.read_text().splitlines()][1:]
    from nas.latency.fit import block_features, design_subset

    specs = space_blocks(get_space("elasticvit-tiny"), "ceil")
    chosen = design_subset(specs, block_features(specs), 100)
    assert len(after) == len(chosen) and {x["key"] for x in after} == set(chosen)  # each block measured once
    assert after[:len(before)] == before  # finished work kept as it was
    assert sorted(load_table(str(out), get_space("elasticvit-tiny")).ms) == list(space_blocks(get_space("elasticvit-tiny"), "ceil"))


def test_designed_subset_and_fitted_model(tmp_path):
    from nas.latency.fit import block_features, design_subset

    space = get_space("elasticvit-tiny")
    specs = space_blocks(space, "ceil")
    feats = block_features(specs)
    subset = design_subset(specs, feats, 60)
    assert subset == design_subset(specs, feats, 60)  # deterministic
    assert 55 <= len(subset) <= 65 and {specs[k].kind for k in subset} == {s.kind for s in specs.values()}
    assert len(set(subset)) == len(subset)
    big = design_subset(specs, feats, 566)  # blocks with identical features are still distinct keys
    assert len(set(big)) == len(big) >= 560
    r = build_table(space, "local-cpu", FAST, out=tmp_path / "cpu", max_blocks=60, progress=False)
    assert r.measured == len(subset) and r.fitted == 567 - len(subset)
    rows = {row["block"]: row for row in csv.DictReader((tmp_path / "cpu" / "elasticvit-tiny.csv").open())}
    assert {k for k, row in rows.items() if row["source"] == "measured"} == set(subset)
    table = load_table(str(tmp_path / "cpu"), space)  # covers the space
    model = table.meta["model"]
    assert set(model) == {s.kind for s in specs.values()}
    for kind, m in model.items():
        assert m["features"] == ["flops", "elems", "ops", "const"] and all(c >= 0 for c in m["coef"])
    # a fitted row is the model's prediction from the block's features
    k = next(k for k, row in rows.items() if row["source"] == "fitted")
    assert table.ms[k] == pytest.approx(float(np.dot(model[specs[k].kind]["coef"], feats[k])), rel=1e-5)
    assert "fitted" in table.meta["provenance"]


# ---- validation and use ----------------------------------------------------------------------
def test_validate_fits_and_saves_a_correction(tmp_path):
    from nas.latency.validate import validate

    space = get_space("nb201")
    build_table(space, "local-cpu", FAST, out=tmp_path / "cpu", progress=False)
    table = load_table(str(tmp_path / "cpu"), space)
    rep = validate(space, table, tmp_path / "v", n=12, calibrate=5, progress=False)
    assert rep["evaluated"] == 7
    for what in ("before", "after"):
        assert set(rep[what]) >= {"mape_pct", "within_10pct", "kendall_tau", "spearman"}
    rows = list(csv.DictReader((tmp_path / "v" / "validation.csv").open()))
    assert len(rows) == 12 and sum(r["role"] == "calibration" for r in rows) == 5
    assert (tmp_path / "v" / "validation.png").stat().st_size > 10_000
    # saved: predictions now go through the correction; raw sums are still available
    table = load_table(str(tmp_path / "cpu"), space)
    c = table.correction
    assert c is not None and table.meta["validation"]["after"] == rep["after"]
    g = space.from_index(np.arange(50))
    raw, count = table.compiled(space).sums(g, count=True)
    np.testing.assert_allclose(table.predict(space, g), c.scale * raw + c.per_block_ms * count + c.offset_ms)
    np.testing.assert_allclose(table.predict(space, g, corrected=False), raw)
    assert table.version.startswith(load_table(str(tmp_path / "cpu"), space).version.split("+")[0])
    assert "+c" in table.version  # a saved correction changes the version: resumed runs notice
    # re-running into the same folder measures nothing again
    n_log = len((tmp_path / "v" / "measured.jsonl").read_text().splitlines())
    validate(space, table, tmp_path / "v", n=12, calibrate=5, progress=False, save=False)
    assert len((tmp_path / "v" / "measured.jsonl").read_text().splitlines()) == n_log


def test_local_table_is_an_ordinary_device(tmp_path):
    env = {"VITNAS_TABLES": str(tmp_path / "tables")}
    r = nas("lut", "build", "--space", "nb201", "--device", "local-cpu", "--no-progress", "--json", *FAST_FLAGS, env=env)
    assert json.loads(r.stdout)["measured"] == 19
    assert (tmp_path / "tables" / "local-cpu" / "nb201.toml").exists()
    devices = json.loads(nas("devices", "--json", env=env).stdout)
    assert any(d["device"] == "local-cpu" and d["family"] == "nb201" for d in devices)
    lat = json.loads(nas("latency", "--space", "nb201", "--device", "local-cpu", "--arch", "best-cifar10", "--json", env=env).stdout)
    assert lat["latency_ms"]["local-cpu"] > 0
    r = nas("search", "--space", "nb201", "--device", "local-cpu", "--objectives", "latency,params", "--budget", "40",
            "--population", "20", "--out", str(tmp_path / "run"), "--no-progress", "--json", env=env)
    assert (tmp_path / "run" / "pareto.csv").exists()
    r = nas("lut", "validate", "--space", "nb201", "--device", "local-cpu", "--n", "10", "--calibrate", "4",
            "--out", str(tmp_path / "v"), "--no-progress", env=env)
    assert "before" in r.stdout and "after" in r.stdout and "correction:" in r.stdout


def test_cli_errors_are_one_line(tmp_path):
    r = nas("lut", "build", "--space", "nb201", "--device", "local-cp", "--out", str(tmp_path / "x"), check=False)
    assert r.returncode == 2 and "did you mean 'local-cpu'" in r.stderr and "Traceback" not in r.stderr
    r = nas("lut", "validate", "--space", "elasticvit", "--device", "pixel6", "--n", "30", check=False)
    assert r.returncode == 2 and "not measured by `nas lut build`" in r.stderr
    r = nas("lut", "build", "--space", "nb201", "--device", "local-cpu", "--repeats", "2", "--out", str(tmp_path / "y"), check=False)
    assert r.returncode == 2 and "--repeats" in r.stderr
    r = nas("lut", "build", "--space", "asvit-tiny", "--device", "local-cpu", "--out", str(tmp_path / "z"), check=False)
    assert r.returncode == 2 and "no latency-table blocks" in r.stderr and "Traceback" not in r.stderr
