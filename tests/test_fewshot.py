"""Few-shot devices (`nas lut fit`, `nas lut sample`, `nas latency --archs`): transfer from the
shipped devices, the fitted device as --device everywhere, bad measured files."""
import csv
import json
import os
import re

import numpy as np
import pytest

from conftest import REPO, write_csv
from nas.latency import fewshot as fs
from nas.latency import load_table
from nas.spaces import get_space

SHIPPED = REPO / "predictors" / "nb201-data" / "nb201.csv"


@pytest.fixture(scope="module")
def nb201():
    return get_space("nb201")


@pytest.fixture(scope="module")
def rows():
    with SHIPPED.open(newline="") as f:
        return list(csv.DictReader(f))


def _env(tmp_path):
    return {"VITNAS_TABLES": str(tmp_path / "tables")}


def nas(tmp_path, *args, path=None):
    import subprocess
    import sys

    env = {**os.environ, **_env(tmp_path), **({"PATH": f"{path}{os.pathsep}{os.environ['PATH']}"} if path else {})}
    return subprocess.run([sys.executable, "-m", "nas.cli", *args], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=600)


def test_held_out_device_transfers_from_the_others_and_beats_flops(nb201):
    """gold_6226 fitted from 20 of its cells without its own table: ranks the other 15,605 cells
    as its table does (the issue's target), and better than MACs alone (a sign or a scaling slip in
    the features would not)."""
    refs = fs.reference_devices(nb201, exclude=("gold_6226",))
    assert len(refs) == 22 and "gold_6226" not in refs
    g = nb201.from_index(np.arange(nb201.size()))
    truth = load_table("gold_6226", nb201).predict(nb201, g)
    names, x = fs.all_features(nb201, g, refs)
    idx = np.random.default_rng(0).choice(len(g), 20, replace=False)
    rest = np.setdiff1d(np.arange(len(g)), idx)
    model, cv = fs.fit(names, x[idx], truth[idx])
    assert set(cv) == {"ridge", "single", "flops"} and model.method == min(cv, key=lambda m: cv[m]["mape_pct"])
    got = fs.scores(np.exp(model.predict_log(x[rest])), truth[rest])
    flops = fs.scores(np.exp(fs.FITTERS["flops"](names, x[idx], np.log(truth[idx])).predict_log(x[rest])), truth[rest])
    assert got["spearman"] >= 0.95 and got["within_10pct"] >= 0.80
    assert got["spearman"] > flops["spearman"] + 0.05


def test_elasticvit_phone_held_out_from_the_other_phones():
    ev = get_space("elasticvit")
    refs = fs.reference_devices(ev, exclude=("pixel4",))
    assert sorted(refs) == ["pixel1", "pixel6", "xiaomi11"]
    g = ev.sample(np.random.default_rng(1), 300)
    truth = load_table("pixel4", ev).predict(ev, g)
    names, x = fs.all_features(ev, g, refs)
    assert "n_layers" in names and "log_res" in names
    model, _ = fs.fit(names, x[:20], truth[:20])
    s = fs.scores(np.exp(model.predict_log(x[20:])), truth[20:])
    assert s["spearman"] >= 0.98 and s["within_10pct"] >= 0.9


def test_fit_writes_a_device_every_command_reads(tmp_path, nb201, rows):
    meas = write_csv(tmp_path / "cpu.csv", ["arch", "ms"], [[r["arch"], r["gold_6240"]] for r in rows[:30]])
    r = nas(tmp_path, "lut", "fit", "--space", "nb201", "--measured", str(meas), "--name", "newcpu", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["n"] == 30 and out["method"] in ("ridge", "single", "flops")
    meta = tmp_path / "tables" / "newcpu" / "nb201.toml"
    import tomllib

    doc = tomllib.loads(meta.read_text())
    assert doc["kind"] == "fitted" and doc["provenance"]["n"] == 30
    assert doc["provenance"]["cv_mape_pct"] == round(out["cv_mape_pct"], 3)
    assert doc["model"]["method"] == out["method"]
    # batch prediction: the fitted device next to the real table, on 200 cells it never saw
    archs = write_csv(tmp_path / "archs.csv", ["arch"], [[r["arch"]] for r in rows[1000:1200]])
    r = nas(tmp_path, "latency", "--space", "nb201", "--device", "newcpu,gold_6240", "--archs", str(archs), "--csv")
    assert r.returncode == 0, r.stderr
    table = list(csv.DictReader(r.stdout.splitlines()))
    assert list(table[0]) == ["arch", "arch_id", "macs_m", "params_m", "latency_newcpu_ms", "latency_gold_6240_ms"]
    assert [t["arch"] for t in table] == [r["arch"] for r in rows[1000:1200]]
    pred = np.array([float(t["latency_newcpu_ms"]) for t in table])
    truth = np.array([float(r["gold_6240"]) for r in rows[1000:1200]])
    assert np.array([float(t["latency_gold_6240_ms"]) for t in table]) == pytest.approx(truth, rel=1e-5)
    assert np.median(np.abs(pred / truth - 1)) < 0.10
    # --json: the objects `--arch --json` prints, one per row, in file order
    r = nas(tmp_path, "latency", "--space", "nb201", "--device", "newcpu", "--archs", str(archs), "--json")
    objs = json.loads(r.stdout)
    one = json.loads(nas(tmp_path, "latency", "--space", "nb201", "--device", "newcpu", "--arch", rows[1000]["arch"],
                         "--json").stdout)
    assert len(objs) == 200 and objs[0].keys() == one.keys()
    assert objs[0]["latency_ms"]["newcpu"] == pytest.approx(one["latency_ms"]["newcpu"])
    # a search says how good the fitted device is, next to its name
    r = nas(tmp_path, "search", "--space", "nb201", "--device", "newcpu", "--objectives", "latency,max:nb201-cifar10",
            "--budget", "12", "--no-progress", "--out", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    assert f"device newcpu: fitted ({out['method']}) from 30 measurements: CV MAPE {out['cv_mape_pct']:.1f}%" in r.stderr
    r = nas(tmp_path, "devices", "--json")
    (dev,) = [d for d in json.loads(r.stdout) if d["device"] == "newcpu"]
    assert dev["kind"] == "fitted" and dev["space"] == "nb201"


def test_latency_arch_and_archs_are_exclusive(tmp_path, rows):
    archs = write_csv(tmp_path / "a.csv", ["arch"], [[rows[0]["arch"]]])
    r = nas(tmp_path, "latency", "--space", "nb201", "--device", "fpga", "--arch", rows[0]["arch"], "--archs", str(archs))
    assert r.returncode == 2 and "not allowed with argument" in r.stderr
    r = nas(tmp_path, "latency", "--space", "nb201", "--device", "fpga", "--arch", rows[0]["arch"], "--csv")
    assert r.returncode == 2 and "--csv is for --archs" in r.stderr


@pytest.mark.parametrize("case, expect", [
    ("few", "4 measured architecture(s); a fit needs at least 5"),
    ("zero", ":4: column 'ms': '0' is not a positive latency"),
    ("negative", ":3: column 'ms': '-1.5' is not a positive latency"),
    ("duplicate", ":7: column 'arch': the architecture of line 2 again"),
    ("outside", ":5: column 'arch': "),
    ("header", ":1: expected the columns 'arch,ms'"),
])
def test_bad_measured_files_are_one_line_naming_file_and_row(tmp_path, rows, case, expect):
    data = [[r["arch"], r["fpga"]] for r in rows[:8]]
    header = ["arch", "ms"]
    if case == "few":
        data = data[:4]
    elif case == "zero":
        data[2][1] = "0"
    elif case == "negative":
        data[1][1] = "-1.5"
    elif case == "duplicate":
        data[5][0] = data[0][0]
    elif case == "outside":
        data[3][0] = re.sub(r"^\|[a-z0-9_]+~0\|", "|conv_9x9~0|", data[3][0])
    elif case == "header":
        header = ["arch", "latency"]
    meas = write_csv(tmp_path / "m.csv", header, data)
    r = nas(tmp_path, "lut", "fit", "--space", "nb201", "--measured", str(meas))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(meas) in lines[0] and expect in lines[0], r.stderr


def test_sample_then_fit_on_this_cpu(tmp_path, nb201):
    """`nas lut sample` measures whole networks with the block protocol (no table), and its file
    is what `nas lut fit` reads."""
    out = tmp_path / "cpu.csv"
    fast = ["--repeats", "5", "--warmup", "1", "--min-sample-ms", "0.2", "--retries", "0", "--passes", "1"]
    r = nas(tmp_path, "lut", "sample", "--space", "nb201", "--device", "local-cpu", "--n", "6", "--out", str(out),
            "--no-progress", *fast)
    assert r.returncode == 0, r.stderr
    got = list(csv.DictReader(out.open()))
    assert len(got) == 6 and all(float(g["ms"]) > 0 for g in got)
    assert [nb201.from_string(g["arch"]).id for g in got] == [g["arch_id"] for g in got]
    log = [json.loads(ln) for ln in out.with_suffix(".measure.jsonl").read_text().splitlines()]
    assert log[0]["header"]["environment"]["runtime"] == "local-cpu" and len(log) == 7
    r = nas(tmp_path, "lut", "fit", "--space", "nb201", "--measured", str(out), "--out", str(tmp_path / "here"))
    assert r.returncode == 0, r.stderr
    assert load_table(str(tmp_path / "here"), nb201).kind == "fitted"


def test_sample_on_a_phone_over_adb(tmp_path, nb201):
    """Whole networks pushed and timed like blocks, against the fake adb replaying recorded output."""
    import onnx

    from test_android import FakeAdb

    sme2 = ["perf_test_arm_kleidiai_sme2.txt", 0]  # 98.961997 ms per run
    adb = FakeAdb(tmp_path, [sme2])
    out = tmp_path / "phone.csv"
    r = nas(tmp_path, "lut", "sample", "--space", "nb201", "--device", "android", "--adb-serial", "R58M123",
            "--n", "2", "--out", str(out), "--no-progress", "--repeats", "5", "--retries", "0", "--passes", "1",
            "--min-sample-ms", "200", path=tmp_path)
    assert r.returncode == 0, r.stderr
    got = list(csv.DictReader(out.open()))
    assert [float(g["ms"]) for g in got] == [pytest.approx(98.962)] * 2
    calls = adb.calls()
    pushes = [c for c in calls if c[2] == "push"]
    runs = [c for c in calls if c[2] == "shell" and "onnxruntime_perf_test" in c[3]]
    assert len(pushes) == 2 and len(runs) == 2 * (1 + 5)  # per network: calibration, then 5 samples
    assert all(" -r 3 " in c[3] for c in runs[1:6])  # ceil(200 / 98.96) runs per sample
    model = onnx.load(str(adb.pushed))  # the last network as a whole: its stem, 3 cells x 3 stages and head
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Gemm") + ops.count("MatMul") >= 1 and ops.count("Conv") >= 3


def test_json_encoded_space_round_trips_and_a_shipped_name_is_never_its_own_feature(tmp_path):
    """ElasticViT's arch column is the compact JSON encoding (as `lut sample` writes it); fitting a
    device named like a shipped one must not read that device's own table."""
    ev = get_space("elasticvit")
    g = ev.sample(np.random.default_rng(3), 60)
    truth = load_table("pixel6", ev).predict(ev, g)
    texts = [fs.arch_text(ev, ev.arch(r)) for r in g]
    assert texts[0].startswith("[") and '"' not in texts[0]
    meas = write_csv(tmp_path / "p6.csv", ["arch", "ms"], [[t, repr(float(v))] for t, v in zip(texts[:20], truth[:20])])
    r = nas(tmp_path, "lut", "fit", "--space", "elasticvit", "--measured", str(meas), "--name", "pixel6",
            "--out", str(tmp_path / "p6"), "--json")
    assert r.returncode == 0, r.stderr
    assert "pixel6" not in json.loads(r.stdout)["references"]
    import tomllib

    model = tomllib.loads((tmp_path / "p6" / "elasticvit.toml").read_text())["model"]
    assert "ref:pixel6" not in model["features"] and "ref:pixel4" in model["features"]
    archs = write_csv(tmp_path / "a.csv", ["arch"], [[t] for t in texts[20:]])
    r = nas(tmp_path, "latency", "--space", "elasticvit", "--device", str(tmp_path / "p6"), "--archs", str(archs), "--csv")
    assert r.returncode == 0, r.stderr
    pred = np.array([float(row["latency_pixel6_ms"]) for row in csv.DictReader(r.stdout.splitlines())])
    assert np.mean(np.abs(pred / truth[20:] - 1) <= 0.10) >= 0.9


def test_a_name_a_shipped_device_would_shadow_is_refused(tmp_path, rows):
    meas = write_csv(tmp_path / "m.csv", ["arch", "ms"], [[r["arch"], r["fpga"]] for r in rows[:8]])
    r = nas(tmp_path, "lut", "fit", "--space", "nb201", "--measured", str(meas), "--name", "fpga")
    assert r.returncode == 2 and "'fpga' is a shipped device" in r.stderr
    assert not (tmp_path / "tables" / "fpga").exists()
