"""MPC latency prediction throughput (architectures per second) on one core.

    python benchmarks/bench_mpc.py [--device mpc-semi2k-wan] [--space mpcvit-cifar]

Prints the vectorised prediction throughput of an ``mpc`` device (rounds x RTT + bytes /
bandwidth + compute over every operator of every genome) at several batch sizes, and one
architecture at a time for comparison. Pinned to one core.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

import numpy as np  # noqa: E402

from nas.latency import load_table  # noqa: E402
from nas.spaces import get_space  # noqa: E402


def best_of(fn, repeat=3):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="mpc-semi2k-wan")
    p.add_argument("--space", default="mpcvit-cifar")
    a = p.parse_args()
    space = get_space(a.space)
    table = load_table(a.device, space)
    print(f"space {space.name} ({space.n_genes} genes), device {a.device} ({table.describe()})")
    print(f"{'batch':>10s} {'predict':>12s} {'archs/s':>14s}")
    rng = np.random.default_rng(0)
    for n in (1_000, 10_000, 100_000, 1_000_000):
        g = space.sample(rng, n)
        s = best_of(lambda: table.predict(space, g))
        print(f"{n:>10,d} {s * 1e3:>10.1f}ms {n / s:>14,.0f}")
    g = space.sample(rng, 200)
    s = best_of(lambda: [table.predict(space, g[i:i + 1]) for i in range(len(g))]) / len(g)
    print(f"{'1 at a time':>10s} {s * 1e6:>10.1f}us {1 / s:>14,.0f}")


if __name__ == "__main__":
    main()
