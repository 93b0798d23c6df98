"""MPC latency prediction throughput (architectures per second) on one core.

    python benchmarks/bench_mpc.py [--device mpc-semi2k-wan] [--space mpcvit-cifar]

Prints the vectorised prediction throughput of an ``mpc`` device (rounds x RTT + bytes /
bandwidth + compute over every operator of every genome) at several batch sizes, and one
architecture at a time for comparison. Pinned to one core.
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from bench_latency import throughput  # noqa: E402  (pins this process to one core too)
from nas.latency import load_table  # noqa: E402
from nas.spaces import get_space  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="mpc-semi2k-wan")
    p.add_argument("--space", default="mpcvit-cifar")
    a = p.parse_args()
    space = get_space(a.space)
    table = load_table(a.device, space)
    print(f"space {space.name} ({space.n_genes} genes), device {a.device} ({table.describe()})")
    throughput(table, space, np.random.default_rng(0), one_at_a_time=200)


if __name__ == "__main__":
    main()
