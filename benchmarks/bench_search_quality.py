"""Search quality on NAS-Bench-201, held to the true Pareto front of all 15,625 cells.

    python benchmarks/bench_search_quality.py [--seeds 10] [--slow-seeds 5] [--strategies a,b] [--json FILE]
    python benchmarks/bench_search_quality.py --scale     # optuna strategies at 2,000 evaluations

The problem is a benchmark run that needs no files: objectives max:nb201-cifar10 (the shipped
CIFAR-10 test accuracy), latency on fpga and on gold_6226 (two shipped devices with continuous
values), as `nas search --space nb201 --device fpga,gold_6226 --objectives max:nb201-cifar10,latency`
runs it (the real search loop, population 32). Every strategy is run for 1,000 evaluations per
seed; the figures at 100 and 300 are those of the first 100 / 300 distinct evaluations of the same
run (a search's first B evaluations do not depend on its budget).

Per strategy and budget:

* best: the best CIFAR-10 accuracy found;
* HV: hypervolume of the found front over that of the true front (objectives normalised to [0, 1]
  over the whole table, accuracy as 1 - normalised accuracy, reference point 1.1 in each; pymoo's HV);
* share: the share of true-front points found (an architecture with the same objective values as a
  front point counts);
* constrained: the best accuracy among evaluated architectures meeting latency on fpga <= the
  table's 30th percentile (a second run with `--constraint latency:fpga<=BOUND`);
* random over the feasible cells: B cells drawn uniformly from those meeting the constraint (what
  random search would find if it, too, skipped what the cheap constraint rejects), a reference;
* repeats: proposals of an already-evaluated architecture (answered from the cache) per 100 asks
  of the 1,000-evaluation runs; s: wall seconds of one 1,000-evaluation run (search loop only,
  the table loads are done once before).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STRATEGIES = ("nsga2", "optuna-nsga2", "optuna-tpe", "evolution", "random")
SLOW = ("optuna-nsga2", "optuna-tpe")  # run with --slow-seeds
BUDGETS = (100, 300, 1000)
DEVICES = ("fpga", "gold_6226")
OBJECTIVES = "max:nb201-cifar10,latency"
PUBLISHED = {  # Dong & Yang, ICLR 2020, Table 5, CIFAR-10 test accuracy (mean +/- std)
    "REA": (93.92, 0.30), "random search": (93.70, 0.36)}


class Truth:
    """Every cell's objectives, the normalisation, the true front and its hypervolume."""

    def __init__(self):
        from pymoo.indicators.hv import HV
        from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

        from nas.latency import load_table
        from nas.metrics import load_metrics
        from nas.spaces import get_space

        self.space = get_space("nb201")
        g = self.space.from_index(np.arange(self.space.size()))
        (acc,) = load_metrics([], ["nb201-cifar10"], self.space)
        self.acc = acc.values(self.space, g)
        lat = [load_table(d, self.space).predict(self.space, g) for d in DEVICES]
        raw = np.stack([-self.acc, *lat], axis=1)  # minimisation form
        self.lo, self.hi = raw.min(0), raw.max(0)
        self.F = (raw - self.lo) / (self.hi - self.lo)
        self.row = dict(zip(self.space.ids(g), range(len(g))))
        self.nds = NonDominatedSorting()
        front = self.nds.do(self.F, only_non_dominated_front=True)
        self.front = {tuple(r) for r in self.F[front]}
        self.hv = HV(ref_point=np.full(3, 1.1))
        self.hv_true = self.hv(self.F[front])
        self.bound = float(np.quantile(lat[0], 0.30))
        self.feasible_share = float((lat[0] <= self.bound).mean())
        self.fpga = lat[0]

    def score(self, rows: np.ndarray) -> dict:
        F = self.F[rows]
        nd = F[self.nds.do(F, only_non_dominated_front=True)]
        found = {tuple(r) for r in F}
        return {"best": float(self.acc[rows].max()), "hv": float(self.hv(nd) / self.hv_true),
                "share": len(self.front & found) / len(self.front)}

    def constrained(self, rows: np.ndarray) -> float:
        ok = rows[self.fpga[rows] <= self.bound]
        return float(self.acc[ok].max()) if ok.size else float("nan")


def run_one(truth: Truth, strategy: str, seed: int, constraint: str | None, out: Path) -> dict:
    from nas.config import SearchConfig
    from nas.search.loop import prepare, run

    cfg = SearchConfig(space="nb201", devices=DEVICES, objectives=OBJECTIVES, strategy=strategy, budget=BUDGETS[-1],
                       population=32, seed=seed, constraints=(constraint,) if constraint else ())
    session = prepare(cfg)
    asked = [0, 0]  # rows proposed, rows already evaluated (answered from the cache)
    ask = session.searcher.ask

    def counting():
        x = ask()
        asked[0] += len(x)
        asked[1] += int((~session.problem.fresh(x)).sum()) if len(x) else 0
        return x

    session.searcher.ask = counting
    out.mkdir(parents=True)
    t = time.perf_counter()
    res = run(session, out, progress=False, plot=False)
    wall = time.perf_counter() - t
    ids = [json.loads(line)["id"] for line in (out / "evals.jsonl").read_text().splitlines()]
    return {"rows": np.array([truth.row[i] for i in ids]), "seconds": wall, "asked": asked[0], "repeats": asked[1],
            "evaluated": res.evaluated}


def scale(budget: int = 2000) -> None:
    """Wall time of the optuna strategies at ``budget`` evaluations: on this NB201 table problem and
    on ElasticViT's LUT problem (28 variables; latency on pixel6, max:params, latency <= 25 ms)."""
    from nas.config import SearchConfig
    from nas.search.loop import prepare, run

    problems = {"nb201 table": dict(space="nb201", devices=DEVICES, objectives=OBJECTIVES),
                "elasticvit LUT": dict(space="elasticvit", devices=("pixel6",), objectives="latency,max:params",
                                       max_latency=25.0)}
    with tempfile.TemporaryDirectory() as tmp:
        for label, fields in problems.items():
            for strategy in SLOW:
                session = prepare(SearchConfig(strategy=strategy, budget=budget, population=32, seed=0, **fields))
                out = Path(tmp) / f"{label}-{strategy}".replace(" ", "-")
                out.mkdir()
                t = time.perf_counter()
                res = run(session, out, progress=False, plot=False)
                print(f"{label:15s} {strategy:13s} {res.evaluated:5d} evaluations in {time.perf_counter() - t:6.1f} s",
                      flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", action="store_true", help="only time the optuna strategies at 2,000 evaluations")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--slow-seeds", type=int, default=5, help=f"seeds for {', '.join(SLOW)}")
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--json", type=Path, help="also write every figure here")
    a = p.parse_args()
    if a.scale:
        scale()
        return
    truth = Truth()
    constraint = f"latency:fpga<={truth.bound:.6g}"
    print(f"NB201, objectives {OBJECTIVES} on {','.join(DEVICES)}: true front {len(truth.front)} cells, "
          f"constraint {constraint} met by {100 * truth.feasible_share:.1f} % of the space "
          f"(best feasible accuracy {truth.constrained(np.arange(len(truth.acc))):.2f}, best overall {truth.acc.max():.3f})")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in a.strategies.split(","):
            seeds = a.slow_seeds if strategy in SLOW else a.seeds
            per = []
            for seed in range(seeds):
                free = run_one(truth, strategy, seed, None, Path(tmp) / f"{strategy}-{seed}")
                cons = run_one(truth, strategy, seed, constraint, Path(tmp) / f"{strategy}-{seed}-c")
                per.append((free, cons))
            results[strategy] = summarise(truth, per)
            print_rows(strategy, seeds, results[strategy])
    feasible = np.flatnonzero(truth.fpga <= truth.bound)
    line = []
    for b in BUDGETS:  # random search that skipped what the cheap constraint rejects: uniform over the feasible cells
        best = [truth.acc[np.random.default_rng(seed).choice(feasible, b, replace=False)].max() for seed in range(a.seeds)]
        results.setdefault("random-feasible", {})[b] = {"constrained": (float(np.mean(best)), float(np.std(best)))}
        line.append(f"{b} evals {np.mean(best):.2f} +/- {np.std(best):.2f}")
    print(f"random over the feasible cells only (drawn from the table, {a.seeds} seeds), constrained: {';  '.join(line)}")
    print("published (Dong & Yang, ICLR 2020, Table 5, CIFAR-10 test; searched on validation accuracy under a "
          "12,000 s simulated budget, one objective, no latency: not this protocol):")
    for k, (m, s) in PUBLISHED.items():
        print(f"  {k:14s} {m:.2f} +/- {s:.2f}")
    if a.json:
        a.json.write_text(json.dumps({"bound_ms": truth.bound, "feasible_share": truth.feasible_share,
                                      "results": results}, indent=2))


def summarise(truth: Truth, per: list) -> dict:
    out = {}
    for b in BUDGETS:
        scores = [truth.score(free["rows"][:b]) for free, _ in per]
        cons = [truth.constrained(c["rows"][:b]) for _, c in per]
        out[b] = {k: (float(np.mean([s[k] for s in scores])), float(np.std([s[k] for s in scores])))
                  for k in ("best", "hv", "share")}
        out[b]["constrained"] = (float(np.nanmean(cons)), float(np.nanstd(cons)))
    asked = sum(f["asked"] + c["asked"] for f, c in per)
    out["repeats_pct"] = 100 * sum(f["repeats"] + c["repeats"] for f, c in per) / max(asked, 1)
    out["seconds"] = float(np.mean([f["seconds"] for f, _ in per]))
    out["evaluated"] = min(min(f["evaluated"], c["evaluated"]) for f, c in per)
    return out


def print_rows(strategy: str, seeds: int, r: dict) -> None:
    for b in BUDGETS:
        x = r[b]
        print(f"{strategy:13s} {seeds:2d} seeds {b:5d} evals  best {x['best'][0]:6.2f} +/- {x['best'][1]:4.2f}  "
              f"HV {x['hv'][0]:.4f} +/- {x['hv'][1]:.4f}  share {100 * x['share'][0]:5.1f} %  "
              f"constrained {x['constrained'][0]:6.2f} +/- {x['constrained'][1]:4.2f}")
    stalled = "" if r["evaluated"] >= BUDGETS[-1] else f", a run stalled at {r['evaluated']} evaluations"
    print(f"{strategy:13s} repeats {r['repeats_pct']:.1f} % of asks, {r['seconds']:.2f} s per 1,000-evaluation run"
          f"{stalled}", flush=True)


if __name__ == "__main__":
    main()
