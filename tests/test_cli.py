"""The `nas` command as users type it: outputs, --json, and one-line errors with exit 2."""
import json

import pytest

from conftest import DEVICES, ELASTICVIT_MFLOPS, nas_cli


def test_latency_json_for_a_preset():
    r = nas_cli("latency", "--space", "elasticvit", "--device", "pixel6", "--arch", "elastic_S1", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert abs(out["macs_m"] - ELASTICVIT_MFLOPS["elastic_S1"]) < 0.01 * ELASTICVIT_MFLOPS["elastic_S1"]
    assert out["params_m"] > 1 and 5 < out["latency_ms"]["pixel6"] < 50
    assert out["decoded"]["resolution"] == 192 and out["arch_id"].startswith("elasticvit-")


def test_latency_for_every_preset_on_every_device():
    r = nas_cli("latency", "--space", "elasticvit", "--arch", "elastic_L3", "--json")  # all devices by default
    assert r.returncode == 0, r.stderr
    assert set(json.loads(r.stdout)["latency_ms"]) == set(DEVICES)


def test_latency_of_an_encoding_with_blocks(tmp_path):
    enc = [128, [16, 24, 32, 64, 96, 176, 272], [1, 2, 3, 1, 1, 1, 1], [1, 3, 3, 3, 3, 3], [3, 3, 3, 3, 3, 3],
           [2, 2, 3, 4], [4, 6, 11, 17], [1, 1, 1, 1], [1, 1, 1, 1], [2, 2, 2, 2]]  # elastic_T1
    f = tmp_path / "a.json"
    f.write_text(json.dumps(enc))
    r = nas_cli("latency", "--space", "elasticvit", "--device", "pixel4", "--arch", f"@{f}", "--blocks", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    blocks = out["blocks"]["pixel4"]
    assert blocks[0]["key"] == "firstconv_128_3_16_2_3" and blocks[-1]["key"].startswith("mbpool_2_272")
    assert sum(b["ms"] for b in blocks) == pytest.approx(out["latency_ms"]["pixel4"])
    t1 = json.loads(nas_cli("latency", "--space", "elasticvit", "--device", "pixel4", "--arch", "elastic_T1",
                            "--json").stdout)
    assert t1["arch_id"] == out["arch_id"]
    text = nas_cli("latency", "--space", "elasticvit", "--device", "pixel4", "--arch", "elastic_T1").stdout
    assert "62.9 M MACs" in text and "pixel4" in text


@pytest.mark.parametrize("args, message", [
    (["search", "--space", "elasticvt", "--device", "pixel6"], "did you mean 'elasticvit'"),
    (["search", "--space", "elasticvit", "--device", "pixel7"], "did you mean 'pixel6'"),
    (["search", "--space", "elasticvit", "--device", "pixel6", "--budget", "-5"], "--budget must be a positive"),
    (["search", "--space", "elasticvit", "--device", "pixel6", "--budget", "many"], "invalid int value"),
    (["search", "--space", "elasticvit", "--device", "pixel6", "--objectives", "naswat"], "did you mean 'naswot'"),
    (["search", "--space", "elasticvit", "--device", "pixel6", "--strategy", "nsga"], "did you mean 'nsga2'"),
    (["search", "--device", "pixel6"], "the following arguments are required: --space"),
    (["search", "--space", "elasticvit", "--objectives", "naswot,latency"], "a latency objective needs --device"),
    (["search", "--space", "elasticvit", "--max-latency", "20"], "--max-latency needs --device"),
    (["latency", "--space", "elasticvit", "--arch", "elastic_S3"], "did you mean 'elastic_S2'"),
    (["latency", "--space", "elasticvit", "--arch", "[128, [16]]"], "10-item ElasticViT encoding"),
    (["latency", "--space", "elasticvit", "--arch", "{\"resolution\": 100}"], "resolution"),
    (["latency", "--space", "elasticvit", "--arch", "[1, 2"], "not valid JSON"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, message):
    r = nas_cli(*args, cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []  # no runs/ folder, no half-written run


def test_arch_outside_the_space_is_rejected(tmp_path):
    enc = [128, [16, 24, 32, 64, 96, 176, 272], [1, 2, 3, 1, 1, 1, 7], [1, 3, 3, 3, 3, 3], [3, 3, 3, 3, 3, 3],
           [2, 2, 3] + [4] * 7, [4, 6, 11] + [17] * 7, [1] * 10, [1] * 10, [2] * 10]  # stage 6 depth 7 > 6
    r = nas_cli("latency", "--space", "elasticvit", "--arch", json.dumps(enc))
    assert r.returncode == 2 and "stage6.depth=7 is not one of [1, 2, 3, 4, 5, 6]" in r.stderr


def test_malformed_space_file_names_file_and_line(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('family = "elasticvit"\nname = "bad"\nresolutions = [128, \n')
    r = nas_cli("search", "--space", str(p), "--device", "pixel6", "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and f"{p}:3: malformed TOML" in r.stderr
    assert not (tmp_path / "run").exists()


def test_debug_shows_the_traceback(tmp_path):
    r = nas_cli("--debug", "search", "--space", "elasticvt", "--device", "pixel6", cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_search_json_summary_and_files(tmp_path):
    r = nas_cli("search", "--space", "elasticvit", "--device", "pixel6", "--objectives", "latency,max:params",
                "--budget", "300", "--json", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    run = tmp_path / out["run_dir"]
    assert out["evaluated"] == 300 and out["pareto_size"] > 3
    assert run.parent.name == "runs" and "-elasticvit-pixel6-" in run.name
    for name in ["config.toml", "evals.jsonl", "pareto.csv", "pareto.png"]:
        assert (run / name).stat().st_size > 0
    assert (run / "pareto.png").read_bytes()[:4] == b"\x89PNG"


def test_out_dir_that_is_not_empty_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "x").write_text("keep me")
    r = nas_cli("search", "--space", "elasticvit", "--device", "pixel6", "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and "not an empty directory" in r.stderr


def test_spaces_and_devices_listings():
    spaces = json.loads(nas_cli("spaces", "--json").stdout)
    ev = next(s for s in spaces if s["name"] == "elasticvit")
    assert ev["size"] > 1e16 and "elastic_S1" in ev["presets"]
    devices = json.loads(nas_cli("devices", "--json").stdout)
    assert {d["device"] for d in devices} >= set(DEVICES)
    assert all("MIT" in d["licence"] and d["source"] and d["entries"] == 12116 for d in devices if d["kind"] == "blocks")
    assert "pixel6" in nas_cli("devices").stdout


def test_help_has_examples():
    for cmd in ["search", "resume", "latency", "spaces", "devices"]:
        r = nas_cli(cmd, "--help")
        assert r.returncode == 0 and "examples:" in r.stdout


def test_table_missing_keys_is_one_line_and_writes_nothing(tmp_path):
    import shutil

    from nas.latency.table import table_path
    from nas.spaces import get_space

    dev = tmp_path / "halfphone"
    shutil.copytree(table_path("pixel6", get_space("elasticvit")).parent, dev)
    csv = dev / "elasticvit.csv"
    csv.write_text("".join(ln for ln in csv.read_text().splitlines(keepends=True) if not ln.startswith("transattn_4_")))
    meta = dev / "elasticvit.toml"
    meta.write_text("".join(ln for ln in meta.read_text().splitlines(keepends=True) if not ln.startswith("sha256")))
    r = nas_cli("search", "--space", "elasticvit", "--device", str(dev), "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "lacks" in r.stderr and "transattn_4_" in r.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, message", [
    (["--seed", "-1"], "--seed must be between 0 and 2**32 - 1"),
    (["--seed", str(2**33), "--strategy", "optuna-tpe"], "--seed must be between"),
    (["--population", "100000000"], "--population must be between 2 and 100000"),
])
def test_bad_search_numbers(tmp_path, args, message):
    r = nas_cli("search", "--space", "elasticvit", "--device", "pixel6", *args, cwd=tmp_path)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_bad_out_paths(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    r = nas_cli("search", "--space", "elasticvit", "--device", "pixel6", "--out", str(f))
    assert r.returncode == 2 and "not an empty directory" in r.stderr
    r = nas_cli("search", "--space", "elasticvit", "--device", "pixel6", "--out", "/proc/nope/run")
    assert r.returncode == 2 and "cannot create run directory" in r.stderr and "Traceback" not in r.stderr


def test_encoding_with_wrong_types():
    enc = [128, [16, 24, 32, 64, 96, 176, 272], [1, 2, 3, 1, 1, 1, 1], ["1", 3, 3, 3, 3, 3], [3, 3, 3, 3, 3, 3],
           [2, 2, 3, 4], [4, 6, 11, 17], [1, 1, 1, 1], [1, 1, 1, 1], [2, 2, 2, 2]]
    r = nas_cli("latency", "--space", "elasticvit", "--arch", json.dumps(enc))
    assert r.returncode == 2 and "conv_ratio must hold integers" in r.stderr
    enc[3][0], enc[2][1] = 1, 1.5
    r = nas_cli("latency", "--space", "elasticvit", "--arch", json.dumps(enc))
    assert r.returncode == 2 and "depths must hold integers, got 1.5" in r.stderr


def test_resume_guards(tmp_path):
    from conftest import run_search
    from nas.runs import locked

    run = run_search(tmp_path / "r", budget=60)
    r = nas_cli("resume", str(run), "--budget", "30")
    assert r.returncode == 2 and "below the 60 evaluations already" in r.stderr
    cfg = (run / "config.toml").read_text()
    with locked(run):  # another process is writing this run
        r = nas_cli("resume", str(run), "--budget", "500")
    assert r.returncode == 2 and "being written by another nas process" in r.stderr
    assert (run / "config.toml").read_text() == cfg


def test_relative_space_path_resumes_from_elsewhere(tmp_path):
    from nas.spaces import get_space

    work = tmp_path / "work"
    work.mkdir()
    (work / "mine.toml").write_text(get_space("elasticvit").path.read_text().replace('name = "elasticvit"', 'name = "mine"'))
    r = nas_cli("search", "--space", "mine.toml", "--device", "pixel6", "--objectives", "latency,max:params",
                "--budget", "50", "--out", "run", "--no-progress", cwd=work)
    assert r.returncode == 0, r.stderr
    r = nas_cli("resume", str(work / "run"), "--budget", "80", "--no-progress", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["evaluated"] == 80
