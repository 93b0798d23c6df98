"""Whole-network tables as devices, table metrics, --constraint: NB201 on its 23 shipped devices."""
import csv
import json

import numpy as np
import pytest

from conftest import REPO, SHARED, nas_cli, run_search, write_csv
from nas.errors import UserError
from nas.latency import load_table
from nas.latency.network import MissingArchError, NetworkTable, read_keyed_csv
from nas.spaces import get_space

LATENCY = SHARED / "data" / "nb201" / "latency" / "nb201_latency_ms.csv"
ACCURACY = SHARED / "data" / "nb201" / "nb201_cifar10_test_acc.csv"
SHIPPED = REPO / "predictors" / "nb201-data" / "nb201.csv"


@pytest.fixture(scope="module")
def nb201():
    return get_space("nb201")


def _by_arch(path):
    with open(path, newline="") as f:
        return {row["arch"]: row for row in csv.DictReader(f)}


def _sample(space, n=50, seed=0):
    return space.sample(np.random.default_rng(seed), n)


def test_shipped_devices_read_back_exactly(nb201):
    ref = _by_arch(LATENCY if LATENCY.exists() else SHIPPED)  # the upstream file when we have it
    devices = [c for c in next(csv.reader(SHIPPED.open()))[1:] if c != "cifar10_test_acc"]
    assert len(devices) == 23
    g = _sample(nb201)
    strings = [nb201.arch_string(nb201.arch(row)) for row in g]
    for d in devices:
        t = load_table(d, nb201)
        assert t.kind == "network" and t.meta["provenance"]["licence"].startswith("MIT")
        assert t.predict(nb201, g).tolist() == [float(ref[s][d]) for s in strings], d


def test_shipped_metric_reads_back_exactly_and_its_best_is_6111(nb201):
    from nas.metrics import load_metrics

    (m,) = load_metrics([], ["nb201-cifar10"], nb201)
    ref = _by_arch(ACCURACY if ACCURACY.exists() else SHIPPED)
    col = "cifar10_test_acc_200ep" if ACCURACY.exists() else "cifar10_test_acc"
    g = _sample(nb201, seed=1)
    assert m.values(nb201, g).tolist() == [float(ref[nb201.arch_string(nb201.arch(r))][col]) for r in g]
    acc = m.values(nb201, nb201.from_index(np.arange(nb201.size())))  # in the benchmark's index order
    assert int(np.argmax(acc)) == 6111 and round(acc[6111], 3) == 94.373
    assert m.goal == "max"


def test_a_folder_device_keyed_by_id_and_json_round_trips(tmp_path):
    space = get_space("mpcvit-mini")  # no arch string: keyed by the compact JSON encoding
    g = np.unique(_sample(space, 60), axis=0)[:50]
    archs = [space.arch(r) for r in g]
    values = np.random.default_rng(2).random(len(archs)) * 100
    folder = tmp_path / "mydev"
    folder.mkdir()
    write_csv(folder / "mpcvit-mini.csv", ["arch", "ms"],
           [[space.decode(a)["encoding"], repr(float(v))] for a, v in zip(archs, values)])
    (folder / "mpcvit-mini.toml").write_text('device = "mydev"\nkind = "network"\nspace = "mpcvit-mini"\n'
                                             'table = "mpcvit-mini.csv"\n[provenance]\nsource = "test"\n')
    t = load_table(str(folder), space)
    assert t.kind == "network" and t.predict(space, g).tolist() == values.tolist()
    by_id = write_csv(tmp_path / "ids.csv", ["arch_id", "ms"], [[a.id, repr(float(v))] for a, v in zip(archs, values)])
    assert load_table(str(by_id), space).predict(space, g[::-1]).tolist() == values[::-1].tolist()
    with pytest.raises(UserError, match="of space 'mpcvit-mini', not 'mpcvit-tiny-imagenet'"):
        load_table(str(folder / "mpcvit-mini.toml"), get_space("mpcvit-tiny-imagenet"))


def test_a_missing_architecture_names_itself(nb201, tmp_path):
    g = nb201.from_index(np.arange(10))
    path = write_csv(tmp_path / "few.csv", ["arch", "ms"], [[nb201.arch_string(nb201.arch(r)), "1.5"] for r in g])
    t = load_table(str(path), nb201)
    assert t.device == "few" and t.predict(nb201, g).tolist() == [1.5] * 10
    other = nb201.arch(nb201.from_index(11)[0])
    with pytest.raises(MissingArchError) as e:
        t.predict(nb201, np.concatenate([g, nb201.from_index([11])]))
    assert f"no row for architecture {nb201.arch_string(other)} ({other.id})" in str(e.value)
    lenient = load_table(str(path), nb201, allow_missing=True)
    assert np.isnan(lenient.predict(nb201, nb201.from_index([3, 11])))[1:].all()


@pytest.mark.parametrize("rows,message", [
    ([["{a}", "1.0"], ["{b}", "1.0"], ["{c}", "fast"]], r"bad.csv:4: column 'ms': 'fast' is not a finite, non-negative number"),
    ([["{a}", "1.0"], ["{b}", "-2"]], r"bad.csv:3: column 'ms': '-2'"),
    ([["{a}", "1.0", "x"]], r"bad.csv:2: expected 2 fields"),
    ([["{a}", "1.0"], ["{b}", "2.0"], ["{a}", "3.0"]], r"bad.csv:4: column 'arch': the architecture of line 2 again"),
    ([["{a}", "1.0"], ["|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "2"]], r"bad.csv:3: column 'arch': .*operation"),
])
def test_a_bad_row_names_file_line_and_column(nb201, tmp_path, rows, message):
    a, b, c = (nb201.arch_string(nb201.arch(r)) for r in nb201.from_index([0, 1, 2]))
    path = write_csv(tmp_path / "bad.csv", ["arch", "ms"], [[x.format(a=a, b=b, c=c) for x in r] for r in rows])
    with pytest.raises(UserError, match=message):
        load_table(str(path), nb201).predict(nb201, nb201.from_index([0]))


def test_a_wrong_header_names_the_file(tmp_path):
    path = write_csv(tmp_path / "h.csv", ["network", "ms"], [["x", "1"]])
    with pytest.raises(UserError, match=r"h.csv:1: needs a key column 'arch'"):
        read_keyed_csv(path)
    with pytest.raises(UserError, match=r"did you mean 'ms'"):
        NetworkTable.from_csv(write_csv(tmp_path / "k.csv", ["arch", "ms"], [["x", "1"]]), "m")


def test_nas_devices_lists_the_kind():
    r = nas_cli("devices", "--json")
    assert r.returncode == 0, r.stderr
    rows = {d["device"]: d for d in json.loads(r.stdout)}
    assert rows["pixel2"]["kind"] == "network" and rows["pixel2"]["space"] == "nb201" and rows["pixel2"]["entries"] == 15625
    assert rows["pixel6"]["kind"] == "blocks" and rows["mpc-semi2k-lan"]["kind"] == "mpc"
    assert sum(d["kind"] == "network" for d in rows.values()) == 23


def test_the_benchmark_search_needs_no_files(tmp_path):
    r = nas_cli("search", "--space", "nb201", "--device", "pixel2", "--objectives", "latency,max:nb201-cifar10",
                "--budget", "300", "--no-progress", "--out", str(tmp_path / "r"), "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["evaluated"] == 300
    front = list(csv.DictReader((tmp_path / "r" / "pareto.csv").open()))
    ref = _by_arch(SHIPPED)
    for row in front:  # each front row carries the benchmark's own numbers
        assert float(row["metric_nb201-cifar10"]) == pytest.approx(float(ref[row["arch"]]["cifar10_test_acc"]), abs=1e-3)
        assert float(row["latency_pixel2_ms"]) == float(ref[row["arch"]]["pixel2"])
    assert max(float(r["metric_nb201-cifar10"]) for r in front) > 93.0


def test_a_front_over_two_shipped_devices_with_a_proxy(tmp_path):
    r = nas_cli("search", "--space", "nb201", "--device", "pixel2,eyeriss", "--objectives", "latency,synflow",
                "--budget", "2", "--population", "2", "--no-progress", "--out", str(tmp_path / "r"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    header = next(csv.reader((tmp_path / "r" / "pareto.csv").open()))
    assert header[1:4] == ["latency_pixel2_ms", "latency_eyeriss_ms", "proxy_synflow"]
    run = run_search(tmp_path / "m", space="nb201", devices=("pixel2", "eyeriss"), objectives="latency,max:nb201-cifar10",
                     budget=200)
    front = list(csv.DictReader((run / "pareto.csv").open()))
    assert len({(r["latency_pixel2_ms"], r["latency_eyeriss_ms"]) for r in front}) > 3  # a front over both devices


def test_user_metric_and_general_constraints(nb201, tmp_path):
    g = nb201.from_index(np.arange(nb201.size()))
    score = np.random.default_rng(3).random(len(g))
    path = write_csv(tmp_path / "m.csv", ["arch_id", "score"], [[i, repr(float(v))] for i, v in zip(nb201.ids(g), score)])
    run = run_search(tmp_path / "r", space="nb201", devices=("fpga",), objectives="latency,score", budget=200,
                     metrics=(f"score={path}:score",), constraints=("latency<=4", "nb201-cifar10>=90", "params>=0.2"))
    rows = [json.loads(line) for line in (run / "evals.jsonl").read_text().splitlines()]
    truth = dict(zip(nb201.ids(g), score))
    assert all(r["metric_score"] == truth[r["id"]] for r in rows)  # exact, and recorded for every row
    front = list(csv.DictReader((run / "pareto.csv").open()))
    assert front and all(float(r["latency_fpga_ms"]) <= 4 and float(r["metric_nb201-cifar10"]) >= 90
                         and float(r["params_m"]) >= 0.2 for r in front)
    # a bare user metric is minimised: the front's lowest score is the lowest among feasible rows
    feasible = [r for r in rows if r["latency_fpga_ms"] <= 4 and r["metric_nb201-cifar10"] >= 90 and r["params_m"] >= 0.2]
    assert min(float(r["metric_score"]) for r in front) == pytest.approx(min(r["metric_score"] for r in feasible), rel=1e-5)


@pytest.mark.parametrize("args,message", [
    (["--constraint", "latncy<=3"], "did you mean 'latency'"),
    (["--constraint", "latency<3"], "use '<=' or '>='"),
    (["--constraint", "latency<=fast"], "'fast' is not a number"),
    (["--metric", "acc=nowhere.csv"], "expected NAME=FILE.csv:COLUMN"),
    (["--metric", "latency=x.csv:a"], "no such file|built-in objective"),
    (["--objectives", "latency,max:nb201-cifr10"], "did you mean 'nb201-cifar10'"),
])
def test_bad_metric_and_constraint_flags(tmp_path, args, message):
    r = nas_cli("search", "--space", "nb201", "--device", "fpga", "--budget", "10", "--no-progress",
                "--out", str(tmp_path / "r"), *args, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert __import__("re").search(message, r.stderr), r.stderr


def test_allow_missing_logs_failed_rows(nb201, tmp_path):
    g = nb201.from_index(np.arange(300))
    path = write_csv(tmp_path / "part.csv", ["arch", "ms"], [[nb201.arch_string(nb201.arch(r)), "2"] for r in g])
    run = run_search(tmp_path / "r", space="nb201", devices=(str(path),), objectives="latency,max:nb201-cifar10",
                     budget=60, allow_missing=True)
    rows = [json.loads(line) for line in (run / "evals.jsonl").read_text().splitlines()]
    known = set(nb201.ids(g))
    assert len(rows) == 60 and any(r["id"] not in known for r in rows)
    for r in rows:
        assert (r["status"] == "failed") == (r["id"] not in known)
        if r["status"] == "failed":
            assert r["error"] == "not in the table of latency_part_ms"


@pytest.mark.parametrize("strategy", ["nsga2", "evolution", "optuna-nsga2"])
def test_a_constraint_nothing_meets_still_spends_the_budget(strategy, tmp_path):
    """pixel2's fastest cell takes 4 ms: under a 3 ms bound every candidate is infeasible, and the
    searchers must evaluate them anyway (their violations guide the search) -- not stop at 0 with
    an empty log -- and report.html must draw a run without a front."""
    r = nas_cli("search", "--space", "nb201", "--device", "pixel2", "--objectives", "latency,max:nb201-cifar10",
                "--constraint", "latency<=3", "--strategy", strategy, "--budget", "40", "--population", "8",
                "--no-progress", "--out", str(tmp_path / "r"), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["evaluated"] == 40 and out["pareto_size"] == 0
    assert (tmp_path / "r" / "report.html").exists()
