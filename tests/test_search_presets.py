"""Top-k evolution with the published presets (ViT-ResNAS, ElasticViT) and lower-bound constraints."""
import json

import numpy as np
import pytest

from conftest import nas_cli, run_search
from nas.objectives import Constraint


def evals(run):
    return [json.loads(ln) for ln in (run / "evals.jsonl").read_text().splitlines()]


def test_lower_bound_constraint_sign():
    lo, hi = Constraint("macs_m", 10.0, "--min-macs", ">="), Constraint("macs_m", 10.0, "--max-macs")
    v = np.array([8.0, 10.0, 12.0])
    assert list(lo.violation(v)) == [2.0, 0.0, -2.0] and list(hi.violation(v)) == [-2.0, 0.0, 2.0]
    assert str(lo) == "macs_m >= 10" and hi.upper == 10.0
    with pytest.raises(AttributeError):
        lo.upper  # a lower bound has no upper bound to misread
    with pytest.raises(ValueError):
        Constraint("macs_m", 1.0, "x", "<")


def test_min_macs_keeps_every_front_member_above_it(tmp_path):
    run = run_search(tmp_path / "r", strategy="nsga2", budget=200, objectives="latency,max:params", min_macs=400.0)
    import csv

    rows = evals(run)
    pareto = list(csv.DictReader((run / "pareto.csv").open()))
    assert pareto and all(float(r["macs_m"]) >= 400 for r in pareto)
    assert all(r["macs_m"] >= 400 for r in rows)  # nsga2 redraws what the cheap bound rejects: no evaluation spent on it
    run = run_search(tmp_path / "s", strategy="random", budget=200, objectives="latency,max:params", min_macs=400.0)
    pareto = list(csv.DictReader((run / "pareto.csv").open()))
    assert pareto and all(float(r["macs_m"]) >= 400 for r in pareto)
    assert any(r["macs_m"] < 400 for r in evals(run))  # random search does propose smaller ones: the bound did the work


def test_resnas_preset_is_the_papers_schedule_inside_the_macs_window(tmp_path):
    from nas.config import SearchConfig
    from nas.search.presets import preset_defaults

    d = preset_defaults("resnas")
    assert d == {"population": 500, "budget": 500 + 19 * 150}
    run = run_search(tmp_path / "r", space="vit-resnas-tiny", devices=(), strategy="evolution", preset="resnas",
                     objectives="max:params", **d)
    cfg = SearchConfig.from_toml(run / "config.toml")
    assert cfg.max_macs == 1794.4 and cfg.min_macs == pytest.approx(0.975 * 1794.4)  # the space's default C
    recs = evals(run)
    assert len(recs) == 3350 and len({r["id"] for r in recs}) == 3350  # duplicates rejected
    macs = np.array([r["macs_m"] for r in recs])
    assert macs.min() >= 0.975 * 1794.4 and macs.max() <= 1794.4  # out-of-range candidates are redrawn, not evaluated
    params = np.array([r["params_m"] for r in recs])
    assert params[500:].max() > params[:500].max() + 5  # offspring of the top 75 beat the random population


def test_elasticvit_preset_window_and_budget(tmp_path):
    from nas.search.presets import preset_defaults

    d = preset_defaults("elasticvit")
    assert d == {"population": 512, "budget": 512 + 39 * 256}
    run = run_search(tmp_path / "r", devices=(), strategy="evolution", preset="elasticvit", objectives="max:params",
                     min_macs=300.0, budget=512 + 3 * 256, population=512)
    macs = np.array([r["macs_m"] for r in evals(run)])
    assert len(macs) == 512 + 3 * 256 and macs.min() >= 300 and macs.max() <= 320


def test_top_k_mutation_rate_and_crossover_mix_two_parents():
    from nas.search.base import Problem
    from nas.search.evolution import TopKEvolution

    sizes = np.full(40, 5)
    p = Problem(tuple(f"g{i}" for i in range(40)), sizes, 1, 0, lambda rng, n: rng.integers(0, 5, (n, 40)))
    ev = TopKEvolution(p, seed=0, population=10, parents=2, mutations=4, crossovers=4, mutation_prob=0.3)
    parents = np.zeros((4000, 40), dtype=np.int64)
    changed = (ev._mutate(parents) != 0).mean()
    assert abs(changed - 0.3 * 4 / 5) < 0.01  # redrawn uniformly: 1 in 5 redraws keeps the value
    top = np.stack([np.zeros(40, np.int64), np.full(40, 4)])
    kids = ev._cross(top)
    share = (kids == 0).mean(1)
    assert set(np.unique(kids)) == {0, 4} and 0.3 < share.mean() < 0.7 and (share > 0).all() and (share < 1).all()


def test_top_k_with_a_family_mutator_and_a_given_initial_population():
    """DeepMAD's solver plugs its block mutator and its one seed structure into the searcher."""
    from nas.search.base import Problem, constrained_rank
    from nas.search.evolution import TopKEvolution

    calls = []

    def plus_one(rng, parents):  # a family operator: every child one step up on a random variable
        calls.append(len(parents))
        kids = parents.copy()
        kids[np.arange(len(kids)), rng.integers(0, 3, len(kids))] += 1
        return np.minimum(kids, 9)

    p = Problem(("a", "b", "c"), np.full(3, 10), 1, 0, lambda rng, n: rng.integers(0, 10, (n, 3)),
                identify=lambda x: [str(r.tolist()) for r in x])
    start = np.zeros((1, 3), dtype=np.int64)
    ev = TopKEvolution(p, seed=0, population=4, parents=4, mutations=4, crossovers=0, initial=start, overdraw=1,
                       mutate=plus_one)
    assert (ev.ask() == start).all()  # not random samples
    ev.tell(start, np.array([[0.0]]), np.zeros((1, 0)))
    kids = ev.ask()
    assert calls and len(kids) == 3 and set(map(tuple, kids)) == {(1, 0, 0), (0, 1, 0), (0, 0, 1)}  # only 3 exist
    assert calls[0] == 4  # overdraw 1: as many drawn as wanted
    # one objective: the best `parents` kept as rows are told equal those of the whole history
    rng = np.random.default_rng(1)
    ev = TopKEvolution(p, seed=0, population=4, parents=7, mutations=4, crossovers=0)
    hist = []
    for _ in range(6):
        x = rng.integers(0, 10, (9, 3))
        f = rng.integers(0, 4, (9, 1)).astype(float)  # ties, told in different batches
        g = np.where(rng.random((9, 1)) < 0.3, rng.integers(1, 3, (9, 1)), -1.0)  # infeasible ones, tied too
        ev.tell(x, f, g)
        hist.append((x, f, g))
        X, F, G = (np.concatenate(v) for v in zip(*hist))
        assert (ev.top() == X[TopKEvolution._order(F, G)[:7]]).all()
    # one objective: the fronts are the distinct values in order, as pymoo's sort gives them
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    f = np.random.default_rng(0).integers(0, 6, (200, 1)).astype(float)
    g = np.where(np.arange(200)[:, None] % 7 == 0, 1.0, -1.0)
    rank = constrained_rank(f, g)
    feas = g[:, 0] <= 0
    assert (rank[feas] == NonDominatedSorting().do(f[feas], return_rank=True)[1]).all()
    assert (rank[~feas] > rank[feas].max()).all()


@pytest.mark.parametrize("args, message", [
    (["--strategy", "nsga2", "--preset", "resnas"], "--preset resnas configures --strategy evolution, not nsga2"),
    (["--strategy", "evolution", "--preset", "resnsa"], "did you mean 'resnas'"),
    (["--strategy", "evolution", "--min-macs", "9", "--max-macs", "5"], "--min-macs 9 exceeds --max-macs 5"),
])
def test_preset_errors_are_one_line(args, message):
    r = nas_cli("search", "--space", "vit-resnas-micro", "--objectives", "max:params", "--no-progress", *args)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_cut_preset_search_resumes_into_the_uninterrupted_result(tmp_path):
    kw = dict(space="vit-resnas-micro", devices=(), strategy="evolution", preset="resnas", objectives="max:params",
              population=60, budget=60 + 3 * 150)
    full = run_search(tmp_path / "full", **kw)
    cut = run_search(tmp_path / "cut", **kw)
    log = cut / "evals.jsonl"
    log.write_text("".join(log.read_text().splitlines(keepends=True)[:137]))  # inside the first offspring batch
    res = nas_cli("resume", str(cut), "--no-progress")
    assert res.returncode == 0, res.stderr
    assert [r["id"] for r in evals(cut)] == [r["id"] for r in evals(full)]
    assert (cut / "pareto.csv").read_bytes() == (full / "pareto.csv").read_bytes()
