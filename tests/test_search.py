"""Searches on the phone tables: every strategy, fronts that are fronts, constraints, budgets,
determinism for a seed."""
import csv
import json

import numpy as np
import pytest

from conftest import run_search
from nas.errors import UserError


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def dominates(a, b):
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def assert_front(rows, cols, signs):
    pts = [[s * float(r[c]) for c, s in zip(cols, signs)] for r in rows]
    for i, p in enumerate(pts):
        for j, q in enumerate(pts):
            assert i == j or not dominates(q, p), (rows[i]["arch_id"], rows[j]["arch_id"])


STRATEGIES = ["nsga2", "optuna-nsga2", "optuna-tpe", "evolution", "random"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_front_is_nondominated_feasible_and_complete(tmp_path, strategy):
    budget = 120 if strategy == "optuna-tpe" else 300
    run = run_search(tmp_path / "r", strategy=strategy, budget=budget, devices=("pixel6", "pixel4"),
                     objectives="latency:pixel6,max:params", max_latency=25.0)
    rows = read_csv(run / "pareto.csv")
    assert len(rows) > 5  # a real trade-off: more parameters cost latency
    assert_front(rows, ["latency_pixel6_ms", "params_m"], [1, -1])
    assert all(float(r["latency_pixel6_ms"]) <= 25 and float(r["latency_pixel4_ms"]) <= 25 for r in rows)
    lines = (run / "evals.jsonl").read_text().splitlines()
    ids = [json.loads(ln)["id"] for ln in lines]
    assert len(ids) == budget and len(set(ids)) == budget  # exactly the budget, no re-evaluation
    # the front is the front of everything evaluated, computed independently here
    recs = [json.loads(ln) for ln in lines]
    feas = [r for r in recs if r["latency_pixel6_ms"] <= 25 and r["latency_pixel4_ms"] <= 25]
    pts = {r["id"]: (r["latency_pixel6_ms"], -r["params_m"]) for r in feas}
    expected = {i for i, p in pts.items() if not any(dominates(q, p) for q in pts.values())}
    assert {r["arch_id"] for r in rows} == expected


def test_budget_500_seed_0_front_is_valid_and_reproducible(tmp_path):
    kw = dict(strategy="nsga2", budget=500, seed=0, objectives="latency,max:params", max_latency=20.0, max_macs=600)
    a = run_search(tmp_path / "a", **kw)
    b = run_search(tmp_path / "b", **kw)
    c = run_search(tmp_path / "c", **{**kw, "seed": 1})
    rows = read_csv(a / "pareto.csv")
    assert len(rows) > 10
    assert_front(rows, ["latency_pixel6_ms", "params_m"], [1, -1])
    assert all(float(r["latency_pixel6_ms"]) <= 20 and float(r["macs_m"]) <= 600 for r in rows)
    assert (a / "pareto.csv").read_bytes() == (b / "pareto.csv").read_bytes()
    ids = [[json.loads(ln)["id"] for ln in (r / "evals.jsonl").read_text().splitlines()] for r in (a, b, c)]
    assert ids[0] == ids[1] and ids[0] != ids[2]
    assert (a / "pareto.csv").read_bytes() != (c / "pareto.csv").read_bytes()


@pytest.mark.parametrize("strategy", ["evolution", "optuna-nsga2", "random"])
def test_other_strategies_are_deterministic(tmp_path, strategy):
    a = run_search(tmp_path / "a", strategy=strategy, budget=150)
    b = run_search(tmp_path / "b", strategy=strategy, budget=150)
    assert (a / "pareto.csv").read_bytes() == (b / "pareto.csv").read_bytes()


def test_csv_schema(tmp_path, space):
    run = run_search(tmp_path / "r", budget=100, devices=("pixel6", "xiaomi11"), objectives="latency,macs")
    rows = read_csv(run / "pareto.csv")
    cols = list(rows[0])
    assert cols[:4] == ["arch_id", "latency_pixel6_ms", "latency_xiaomi11_ms", "macs_m"]
    for c in ["params_m", "accuracy_estimate", "device", "table_version", "space", "resolution", "stage6.width",
              "encoding"]:
        assert c in cols
    assert rows[0]["device"] == "pixel6;xiaomi11"
    assert rows[0]["accuracy_estimate"] == "none"
    assert "pixel6:nnmeter-transformer-lut-v3@" in rows[0]["table_version"]
    lat = [float(r["latency_pixel6_ms"]) for r in rows]
    assert lat == sorted(lat)
    # every row can be taken home: its encoding rebuilds the same architecture
    for r in rows:
        assert space.from_encoding(json.loads(r["encoding"])).id == r["arch_id"]


def test_macs_constraint_and_infeasible_everything(tmp_path):
    run = run_search(tmp_path / "r", budget=200, max_macs=150)
    rows = read_csv(run / "pareto.csv")
    assert rows and all(float(r["macs_m"]) <= 150 for r in rows)
    run = run_search(tmp_path / "s", budget=50, max_latency=0.5)
    assert read_csv(run / "pareto.csv") == []  # nothing is that fast: an empty front, not a crash


def test_config_errors_before_anything_is_written(tmp_path):
    for bad in [dict(budget=-5), dict(population=1), dict(strategy="nsga3"), dict(objectives="latency,acc"),
                dict(objectives="max:"), dict(objectives="latency,latency"),
                dict(devices=("pixel6", "pixel6")), dict(max_latency=-1.0), dict(space="nope")]:
        with pytest.raises(UserError):
            run_search(tmp_path / "never", **bad)
        assert not (tmp_path / "never").exists()


def test_search_space_of_a_user_file(tmp_path, space):
    p = tmp_path / "narrow.toml"
    p.write_text(space.path.read_text().replace('name = "elasticvit"', 'name = "narrow"')
                 .replace("resolutions = [128, 160, 176, 192, 224, 256]", "resolutions = [160, 192]"))
    run = run_search(tmp_path / "r", space=str(p), budget=60)
    rows = read_csv(run / "pareto.csv")
    assert {r["space"] for r in rows} == {"narrow"}
    assert {int(r["resolution"]) for r in rows} <= {160, 192}


def test_objective_directions():
    from nas.objectives import parse_objectives

    objs, proxy = parse_objectives("naswot,latency,max:params,min:macs", ["pixel6", "pixel1"], ["naswot"])
    assert [(o.column, o.goal) for o in objs] == [("proxy_naswot", "max"), ("latency_pixel6_ms", "min"),
                                                  ("latency_pixel1_ms", "min"), ("params_m", "max"), ("macs_m", "min")]
    assert proxy == "naswot"


def test_problem_fresh_masks_known_and_repeated(space):
    from nas.search.base import Problem

    x = space.sample_vectors(np.random.default_rng(0), 4)
    x = np.concatenate([x, x[:1]])
    ids = space.ids(space.to_genomes(x))
    p = Problem(tuple(v.name for v in space.vars), space.var_sizes, 2, 0, space.sample_vectors,
                identify=lambda v: space.ids(space.to_genomes(v)), is_known=lambda i: np.array([j == ids[1] for j in i]))
    assert p.fresh(x).tolist() == [True, False, True, True, False]


def tiny_space(tmp_path, space) -> str:
    """A 64-architecture corner of ElasticViT, small enough to exhaust."""
    text = space.path.read_text().split("[presets]")[0]
    subs = [("name = \"elasticvit\"", "name = \"tiny\""), ("resolutions = [128, 160, 176, 192, 224, 256]", "resolutions = [128]"),
            ("width = [16, 24]\ndepth = [1, 2]\nkernel = [3, 5]", "width = [16]\ndepth = [1, 1]\nkernel = [3]")]
    for a, b in subs:
        assert a in text
        text = text.replace(a, b)
    stages = text.split("[[stages]]")
    fixed = {1: ("[2, 2]", "[16, 16, 8]"), 2: ("[2, 2]", "[16, 16, 8]"), 3: ("[1, 1]", "[48, 64, 16]"),
             4: ("[1, 1]", "[80, 80, 16]"), 5: ("[1, 1]", "[144, 144, 16]"), 6: ("[1, 1]", "[160, 160, 16]")}
    for i, (depth, width) in fixed.items():
        lines = []
        for ln in stages[i].splitlines():
            key = ln.split("=")[0].strip()
            value = {"depth": depth, "width": width, "expand": "[3]", "mlp": "[2, 3]", "v_scale": "[2]",
                     "kernel": "[3, 5]" if i == 1 else "[3]"}.get(key)
            lines.append(f"{key} = {value}" if value else ln)
        stages[i] = "\n".join(lines) + "\n"
    p = tmp_path / "tiny.toml"
    p.write_text("[[stages]]".join(stages))
    return str(p)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_exhausting_a_small_space_stops_cleanly(tmp_path, space, strategy, capsys):
    from nas.spaces import get_space

    path = tiny_space(tmp_path, space)
    assert get_space(path).size() == 64
    run = run_search(tmp_path / "r", space=path, strategy=strategy, budget=1000, population=8)
    ids = [json.loads(ln)["id"] for ln in (run / "evals.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) <= 64
    assert "proposed only evaluated architectures" in capsys.readouterr().err
    assert read_csv(run / "pareto.csv")


def test_empty_front_keeps_the_csv_schema(tmp_path):
    full = run_search(tmp_path / "a", budget=40)
    empty = run_search(tmp_path / "b", budget=40, max_latency=0.5)
    assert (empty / "pareto.csv").read_text().splitlines() == [(full / "pareto.csv").read_text().splitlines()[0]]
