"""Latency-table prediction throughput (architectures per second) on one core.

    python benchmarks/bench_latency.py [--device pixel6]
    python benchmarks/bench_latency.py --space deepmad-resnet --build   # a signature-keyed table

Prints: table load + compile time; vectorised prediction throughput at several batch sizes;
one-architecture-at-a-time throughput for comparison; and the cost of sampling and canonicalising
the genomes themselves. Pinned to one core. ``--build`` first builds a small table for the space
on this machine (local-cpu, quick protocol, 40 measured layers; for spaces such as DeepMAD's, whose
tables are signature-keyed with a fitted model) and times prediction on it.
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
from nas.latency.table import _CACHE  # noqa: E402
from nas.spaces import get_space  # noqa: E402


def best_of(fn, repeat=3):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def throughput(table, space, rng: np.random.Generator, one_at_a_time: int = 2000) -> None:
    """Vectorised prediction at batch sizes 1k-1M, then one architecture per call."""
    big = space.sample(rng, 1_000_000)
    print(f"{'batch':>10} {'predict':>12} {'archs/s':>14}")
    for n in (1_000, 10_000, 100_000, 1_000_000):
        g = big[:n]
        s = best_of(lambda: table.predict(space, g))
        print(f"{n:>10,} {s * 1e3:>10.1f}ms {n / s:>14,.0f}")
    one = big[:one_at_a_time]
    s = best_of(lambda: [table.predict(space, one[i:i + 1]) for i in range(len(one))], repeat=1)
    print(f"{'1 at a time':>10} {s / len(one) * 1e6:>10.1f}us {len(one) / s:>14,.0f}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="pixel6")
    p.add_argument("--space", default="elasticvit")
    p.add_argument("--build", action="store_true", help="build a small local-cpu table first and use it")
    a = p.parse_args()
    space = get_space(a.space)
    if a.build:
        import tempfile
        from pathlib import Path

        from nas.latency.build import build_table
        from nas.latency.measure import Protocol

        quick = Protocol(repeats=5, warmup=1, warmup_ms=0, min_sample_ms=0.2, retries=0, passes=1)
        t = time.perf_counter()
        r = build_table(space, "local-cpu", quick, out=Path(tempfile.mkdtemp()) / "bench-cpu", max_blocks=40,
                        progress=False)
        a.device = str(r.table.parent)
        print(f"built {r.table} ({r.measured} measured, {r.fitted} fitted) in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    table = load_table(a.device, space, check=False)
    t_load = time.perf_counter() - t
    t = time.perf_counter()
    table.missing_keys(space)  # compiles the dense per-block arrays
    t_compile = time.perf_counter() - t
    compiled = table.compiled(space)
    per_arch = (f"{len(compiled.slots)} blocks per architecture (max)" if hasattr(compiled, "slots") else
                f"{space.latency_layers(space.sample(np.random.default_rng(0), 1)).kind.shape[1]} layer slots per "
                f"architecture, {len(compiled.codes)} keyed rows + per-kind models")
    print(f"space {space.name}, device {a.device}: {len(table.ms)} table entries, {per_arch}")
    print(f"load {t_load * 1e3:.0f} ms, compile + exact coverage check {t_compile * 1e3:.0f} ms")
    _CACHE.clear()

    rng = np.random.default_rng(0)
    print()
    throughput(table, space, rng)

    n = 100_000
    x = space.sample_vectors(rng, n)
    s_vec = best_of(lambda: space.sample_vectors(rng, n))
    s_gen = best_of(lambda: space.to_genomes(x))
    g = space.to_genomes(x)
    s_ids = best_of(lambda: space.ids(g), repeat=1)
    s_cost = best_of(lambda: space.cost(g))
    print(f"\nper 100,000 architectures: sample vectors {s_vec * 1e3:.0f} ms, vectors -> canonical genomes "
          f"{s_gen * 1e3:.0f} ms, ids {s_ids * 1e3:.0f} ms, MACs + params {s_cost * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
