"""DeepMAD: the MP solver against the released structures and the original evolution, same budgets.

For each released model's budgets (FLOPs and parameters in the code's count, rho0), prints the
released structure's score under the code's formula, the `--solver mp` design (score, solve time
on one core) and `--solver evolution` given the same wall time, and whether each meets every
budget. Times are CPU seconds of the solving process (single-threaded numpy; on a quiet core wall
time is the same, on a loaded machine CPU time stays comparable). The evolution runs for the
mp solve's CPU time (its children per CPU second measured on a short run); ``evals`` is the
distinct structures it scored. Also the objective's throughput (structures scored per second,
vectorised).

    python benchmarks/bench_deepmad.py [--seeds 0,1] [--cases r18,r34,r50,29m,50m]
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from nas.design.deepmad import Budgets, solve_evolution, solve_mp  # noqa: E402
from nas.design.deepmad_objective import evaluate  # noqa: E402
from nas.spaces import get_space  # noqa: E402

CASES = {  # budgets of the released configs (configs/classification/deepmad_*.py)
    "r18": ("deepmad-resnet", "deepmad-r18", Budgets(1.82e9, 11.69e6, 0.3)),
    "r34": ("deepmad-resnet", "deepmad-r34", Budgets(3.68e9, 21.80e6, 0.3)),
    "r50": ("deepmad-resnet", "deepmad-r50", Budgets(4.13e9, 25.55e6, 0.3)),
    "29m": ("deepmad-mobilenet", "deepmad-29m-224", Budgets(4.5e9, 29e6, 0.5)),
    "50m": ("deepmad-mobilenet", "deepmad-50m", Budgets(8.7e9, 50e6, 0.5)),
    "89m": ("deepmad-mobilenet", "deepmad-89m", Budgets(15.4e9, 89e6, 0.5)),
}


def feasible(m: dict, b: Budgets) -> bool:
    return m["flops"] <= b.flops and m["params_backbone"] <= b.params and m["rho"] <= b.rho


def _iterations_for(space, b: Budgets, cpu_s: float) -> int:
    """Children the evolution makes in ``cpu_s`` CPU seconds (its rate measured on a short run),
    so both solvers get the same CPU time however loaded the machine is."""
    probe = solve_evolution(space, b, iterations=20_000)
    return max(256, int(20_000 * cpu_s / max(probe.cpu_s, 1e-9)))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--cases", default="r18,r34,r50,29m,50m")
    p.add_argument("--seeds", default="0")
    a = p.parse_args()
    print(f"{'budget':6s} {'released':>10s} {'ok':>3s} | {'seed':>4s} {'mp score':>10s} {'ok':>3s} {'cpu s':>5s} | "
          f"{'evolution':>10s} {'ok':>3s} {'evals':>8s} | mp/released  mp/evolution", flush=True)
    for case in a.cases.split(","):
        space_name, preset, b = CASES[case]
        space = get_space(space_name)
        rel = evaluate(space, np.asarray([space.presets()[preset].genome]))
        rel_m = {k: float(v[0]) for k, v in rel.items() if v.ndim == 1}
        for seed in (int(s) for s in a.seeds.split(",")):
            mp = solve_mp(space, b, seed=seed)
            evo = solve_evolution(space, b, seed=seed, iterations=_iterations_for(space, b, mp.cpu_s))
            print(f"{case:6s} {rel_m['score']:10.1f} {'yes' if feasible(rel_m, b) else 'NO':>3s} | {seed:4d} "
                  f"{mp.metrics['score']:10.1f} {'yes' if feasible(mp.metrics, b) else 'NO':>3s} {mp.cpu_s:5.1f} | "
                  f"{evo.metrics['score']:10.1f} {'yes' if feasible(evo.metrics, b) else 'NO':>3s} {evo.evaluated:8d} | "
                  f"{mp.metrics['score'] / rel_m['score']:11.3f}  {mp.metrics['score'] / evo.metrics['score']:12.3f}",
                  flush=True)
    space = get_space("deepmad-resnet")
    g = space.sample(np.random.default_rng(0), 100_000)
    evaluate(space, g[:1000])
    t = time.perf_counter()
    evaluate(space, g)
    dt = time.perf_counter() - t
    print(f"objective throughput: {len(g) / dt:,.0f} structures/s (deepmad-resnet, batches of 100,000, one core)")


if __name__ == "__main__":
    main()
