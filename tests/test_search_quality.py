"""What the searchers do with the run's history and the cheap constraints (benchmarks/bench_search_quality.py
measures the quality that follows; these check the mechanisms, on NB201's shipped tables)."""
import json

import numpy as np
import pytest

from nas.config import SearchConfig
from nas.search.base import constrained_rank
from nas.search.loop import prepare, run

BOUND = 3.08816  # ms on fpga: the 30th percentile of the table (about 30 % of NB201 meets it)


def _run(tmp_path, strategy, budget, population=32, **kw):
    fields = dict(space="nb201", devices=("fpga", "gold_6226"), objectives="max:nb201-cifar10,latency",
                  strategy=strategy, budget=budget, population=population, seed=0)
    fields.update(kw)
    session = prepare(SearchConfig(**fields))
    stats = {"asks": 0, "rows": 0, "repeats": 0}
    ask = session.searcher.ask

    def counting():
        x = ask()
        stats["asks"] += 1
        stats["rows"] += len(x)
        stats["repeats"] += int((~session.problem.fresh(x)).sum()) if len(x) else 0
        return x

    session.searcher.ask = counting
    out = tmp_path / strategy
    out.mkdir()
    res = run(session, out, progress=False, plot=False)
    rows = [json.loads(line) for line in (out / "evals.jsonl").read_text().splitlines()]
    return session, res, rows, stats


@pytest.mark.parametrize("strategy,budget", [("optuna-nsga2", 300), ("optuna-tpe", 120)])
def test_optuna_proposes_what_the_run_has_not_seen(tmp_path, strategy, budget):
    # before: 50 % (optuna-nsga2) and 68 % (optuna-tpe) of the proposals repeated evaluated architectures
    _, res, rows, stats = _run(tmp_path, strategy, budget)
    assert res.evaluated == budget and len({r["id"] for r in rows}) == budget
    assert stats["repeats"] <= 0.05 * stats["rows"], stats


@pytest.mark.parametrize("strategy", ["nsga2", "evolution", "optuna-nsga2", "optuna-tpe"])
def test_no_evaluation_is_spent_on_what_the_cheap_constraint_rejects(tmp_path, strategy):
    _, res, rows, _ = _run(tmp_path, strategy, 96, constraints=(f"latency:fpga<={BOUND}",))
    assert res.evaluated == 96
    assert all(r["latency_fpga_ms"] <= BOUND for r in rows)  # random search spends ~70 % of its budget there


def test_random_search_still_samples_uniformly(tmp_path):
    _, _, rows, _ = _run(tmp_path, "random", 200, constraints=(f"latency:fpga<={BOUND}",))
    share = np.mean([r["latency_fpga_ms"] <= BOUND for r in rows])
    assert 0.15 < share < 0.45  # the baseline: about the 30 % of the space that meets the bound


def test_nsga2_fills_every_generation_on_a_degenerate_front(tmp_path):
    # one objective (accuracy): the front is one network and the population converges on it; mating
    # then finds few new children (before: 8 of 10 mating rounds per generation, 3x the time of a
    # normal run), and neighbours of the population fill the generation
    _, res, rows, stats = _run(tmp_path, "nsga2", 640, objectives="max:nb201-cifar10")
    assert res.evaluated == 640 and res.front <= 2  # isomorphic cells may share the best accuracy
    assert stats["asks"] == 640 // 32 and stats["repeats"] == 0  # every generation full, all new


def test_tpe_fits_on_a_bounded_window_that_keeps_the_best(tmp_path, monkeypatch):
    import nas.search.optuna_adapter as oa

    monkeypatch.setattr(oa, "WINDOW", 48)
    session, res, _, _ = _run(tmp_path, "optuna-tpe", 200, objectives="max:nb201-cifar10,latency:fpga")
    s = session.searcher
    assert s.window == 48 and len(s.done) == 200
    from optuna.trial import TrialState

    held = s.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert len(held) <= 48 * 3 // 2 + oa.TPE_BATCH
    f = np.array([t.values for t in s.done])
    best = {tuple(s._vector(s.done[i])) for i in np.flatnonzero(constrained_rank(f, np.zeros((len(f), 0))) == 0)}
    assert len(best) < 24 and best <= {tuple(s._vector(t)) for t in held}  # the front is always in the window
