"""Latency tables built on this machine: build cost, end-to-end validation, and how good a fitted
subset table is.

    python benchmarks/bench_lut.py --space elasticvit-tiny --max-blocks 120
    python benchmarks/bench_lut.py --space nb201

For the space: builds the full table (or reuses one in --tables), validates it on --n subnets;
with --max-blocks also builds a designed-subset table, compares its fitted blocks with the full
table's measured ones, and validates it too. Needs a quiet machine: anything else running
changes the numbers. Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from nas.latency import load_table  # noqa: E402
from nas.latency.build import build_table  # noqa: E402
from nas.latency.measure import Protocol  # noqa: E402
from nas.latency.validate import validate  # noqa: E402
from nas.spaces import get_space  # noqa: E402


def row(name: str, rep: dict) -> str:
    out = []
    for what in ("before", "after"):
        m = rep[what]
        out.append(f"{name:28s} {what:6s} MAPE {m['mape_pct']:6.2f} %  ±10 % {100 * m['within_10pct']:5.1f} %  "
                   f"±5 % {100 * m['within_5pct']:5.1f} %  bias {m['bias_pct']:+6.2f} %  tau {m['kendall_tau']:.3f}  "
                   f"rho {m['spearman']:.3f}")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="elasticvit-tiny")
    ap.add_argument("--device", default="local-cpu")
    ap.add_argument("--tables", type=Path, default=Path("runs/bench-lut"))
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--calibrate", type=int, default=20)
    ap.add_argument("--max-blocks", type=int)
    a = ap.parse_args()
    space = get_space(a.space)
    p = Protocol()
    full_dir = a.tables / f"{a.device}-full"
    t0 = time.perf_counter()
    r = build_table(space, a.device, p, out=full_dir, progress=True)
    print(f"build {a.space} on {a.device}: {r.measured} blocks, {r.new} measured now in {time.perf_counter() - t0:.0f} s "
          f"({p.passes} passes)")
    full = load_table(str(full_dir), space)
    for old in a.tables.glob(f"validate-{a.space}-*"):  # fresh measurements of the networks every time
        shutil.rmtree(old)
    rep = validate(space, full, a.tables / f"validate-{a.space}-full", n=a.n, calibrate=a.calibrate, save=False)
    print(row(f"{a.space} full table", rep))
    print(f"  correction {json.dumps(rep['correction'])}; measured {rep['measured_ms']}")
    if a.max_blocks:
        sub_dir = a.tables / f"{a.device}-subset{a.max_blocks}"
        t0 = time.perf_counter()
        r = build_table(space, a.device, p, out=sub_dir, max_blocks=a.max_blocks, progress=True)
        print(f"subset build: {r.measured} measured + {r.fitted} fitted in {time.perf_counter() - t0:.0f} s")
        sub = load_table(str(sub_dir), space)
        fitted = [k for k in sub.ms if k not in _measured_keys(sub_dir / f"{space.name}.csv")]
        err = np.array([(sub.ms[k] - full.ms[k]) / full.ms[k] for k in fitted])
        print(f"  fitted blocks vs measured: MAPE {100 * np.abs(err).mean():.1f} %, within ±10 % {100 * (np.abs(err) <= .1).mean():.0f} %, "
              f"median bias {100 * np.median(err):+.1f} %")
        for kind, m in sub.meta["model"].items():
            print(f"  model {kind:16s} n={m['n']:4d} cv MAPE {m.get('cv_mape_pct', 'n/a')} %")
        rep = validate(space, sub, a.tables / f"validate-{a.space}-subset", n=a.n, calibrate=a.calibrate, save=False)
        print(row(f"{a.space} subset {a.max_blocks}", rep))


def _measured_keys(csv_path: Path) -> set[str]:
    import csv

    return {r["block"] for r in csv.DictReader(csv_path.open()) if r["source"] == "measured"}


if __name__ == "__main__":
    main()
