"""LUT-only search throughput, driver overhead per evaluation, and peak memory.

    python benchmarks/bench_search.py [--quick]

1. Every strategy on the same LUT-only problem (objectives latency on pixel6 and max:params,
   latency <= 25 ms on pixel6 and pixel4): evaluations per second of the search loop, and the
   split of its wall time into evaluation (MACs, params, two table lookups) and driver (ask/tell,
   ids, cache, log, front); set-up (space and table load, checks) timed apart.
2. End to end: the same nsga2 search as a user runs it, `nas search` in a fresh process (imports,
   table load, the loop, pareto.csv and the plot), next to the loop alone.
3. nsga2 with a normal front (latency, max:params) and a degenerate one (latency, macs: the single
   smallest network), 20,000 evaluations each: the wall time of each.
4. Peak RSS of a nsga2 LUT-only search at 10k / 50k / 100k evaluations, each in a fresh process,
   next to the size of its evals.jsonl: memory must not grow with evaluations beyond the log.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_one(strategy: str, budget: int, out: Path, objectives: str = "latency:pixel6,max:params",
            max_latency: float | None = 25.0) -> dict:
    from nas.config import SearchConfig
    from nas.objectives import Evaluator
    from nas.runs import new_run_dir
    from nas.search.loop import prepare, run

    spent = [0.0]
    orig = Evaluator.cheap

    def timed(self, genomes):
        t = time.perf_counter()
        r = orig(self, genomes)
        spent[0] += time.perf_counter() - t
        return r

    Evaluator.cheap = timed
    try:
        cfg = SearchConfig(space="elasticvit", devices=("pixel6", "pixel4"), objectives=objectives,
                           strategy=strategy, budget=budget, population=100, seed=0, max_latency=max_latency)
        t = time.perf_counter()
        session = prepare(cfg)
        run_dir = new_run_dir(session.cfg, out, session.label)
        setup = time.perf_counter() - t
        t = time.perf_counter()
        res = run(session, run_dir, progress=False, plot=False)
        wall = time.perf_counter() - t
    finally:
        Evaluator.cheap = orig
    n = res.evaluated
    return {"strategy": strategy, "evaluated": n, "setup_s": setup, "wall_s": wall, "evals_per_s": n / wall,
            "eval_us": spent[0] / n * 1e6, "driver_us": (wall - spent[0]) / n * 1e6, "front": res.front}


def memory_probe(budget: int, out: str) -> None:
    """Run in a child process: one search, then print peak RSS and the log size."""
    import resource

    res = run_one("nsga2", budget, Path(out))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    log = Path(out) / "evals.jsonl"
    print(json.dumps({"budget": budget, "peak_rss_mb": rss, "log_mb": log.stat().st_size / 2**20,
                      "evals_per_s": res["evals_per_s"]}))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="smaller budgets")
    p.add_argument("--probe", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.probe:
        memory_probe(int(a.probe[0]), a.probe[1])
        return
    scale = 0.2 if a.quick else 1.0
    budgets = {"nsga2": 20000, "evolution": 20000, "random": 20000, "optuna-nsga2": 3000, "optuna-tpe": 600}
    print("LUT-only search, objectives latency(pixel6) and max:params, latency <= 25 ms on pixel6 + pixel4")
    print(f"{'strategy':>13} {'evals':>7} {'setup s':>8} {'loop s':>7} {'evals/s':>9} {'eval us':>8} {'driver us':>10} "
          f"{'front':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for strategy, budget in budgets.items():
            r = run_one(strategy, max(200, int(budget * scale)), Path(tmp) / strategy)
            print(f"{r['strategy']:>13} {r['evaluated']:>7} {r['setup_s']:>8.2f} {r['wall_s']:>7.2f} "
                  f"{r['evals_per_s']:>9,.0f} {r['eval_us']:>8.1f} {r['driver_us']:>10.1f} {r['front']:>6}")
        budget = max(200, int(20000 * scale))
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "nas.cli", "search", "--space", "elasticvit", "--device", "pixel6,pixel4",
                        "--objectives", "latency:pixel6,max:params", "--max-latency", "25", "--budget", str(budget),
                        "--population", "100", "--seed", "0", "--out", f"{tmp}/e2e", "--no-progress"],
                       capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        e2e = time.perf_counter() - t
        loop = run_one("nsga2", budget, Path(tmp) / "loop")["wall_s"]
        print(f"\nend to end, nsga2, {budget:,} evaluations: `nas search` in a fresh process {e2e:.2f} s "
              f"(imports, table load, loop, pareto.csv, plot) vs the loop alone {loop:.2f} s")
        n = 4000 if a.quick else 20000
        print(f"\nnsga2, {n:,} evaluations, no constraint: a normal front against a degenerate one (the single smallest network)")
        for obj in ("latency:pixel6,max:params", "latency:pixel6,macs"):
            r = run_one("nsga2", n, Path(tmp) / f"degenerate-{obj}", objectives=obj, max_latency=None)
            print(f"{obj:>26} {r['wall_s']:7.2f} s  front {r['front']}")
        print("\npeak memory of an nsga2 LUT-only search (fresh process each)")
        print(f"{'evaluations':>12} {'peak RSS MB':>12} {'evals.jsonl MB':>15} {'evals/s':>9}")
        for budget in ([2000, 10000, 20000] if a.quick else [10000, 50000, 100000]):
            out = subprocess.run([sys.executable, __file__, "--probe", str(budget), f"{tmp}/mem{budget}"],
                                 capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{r['budget']:>12,} {r['peak_rss_mb']:>12.0f} {r['log_mb']:>15.1f} {r['evals_per_s']:>9,.0f}")


if __name__ == "__main__":
    main()
