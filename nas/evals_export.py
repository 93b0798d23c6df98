"""``nas evals``: every evaluation of a run as one pandas table, written as CSV or Parquet.

The schema (docs/runs.md) is pareto.csv's columns, in its order, plus ``run_id`` (the run
directory's name) and ``order`` (0-based order of evaluation) first, and ``status`` and
``error`` last. Metric columns are float64 (NaN where not measured), ``order`` int64, genes keep
their type where every value shares one (int64, float64) and are strings otherwise (a per-layer
list reads ``2|5`` as in pareto.csv).
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from nas.errors import UserError

FORMATS = ("csv", "parquet")


def evals_frame(run_dir: Path):
    import pandas as pd

    from nas.runs import evaluations, pareto_rows, run_config, run_space

    run_dir = Path(run_dir)
    cfg = run_config(run_dir)
    space = run_space(run_dir, cfg)
    recs = evaluations(run_dir)
    first = pareto_rows(run_dir)[:1]
    with (run_dir / "pareto.csv").open(newline="", encoding="utf-8") as f:  # an empty front still has its header
        header = next(csv.reader(f))
    genes_at = header.index("space") + 1
    metrics = [c for c in header[1:genes_at] if c not in ("accuracy_estimate", "device", "table_version", "space")]
    constants = {c: (first[0][c] if first else "") for c in ("accuracy_estimate", "device", "table_version") if c in header}
    genomes = np.asarray([r["genome"] for r in recs], dtype=np.int64).reshape(len(recs), space.n_genes)
    decoded = [space.decode(space.arch(g)) for g in genomes]
    cols: dict[str, object] = {
        "run_id": run_dir.resolve().name,
        "order": np.asarray([r.get("n", i) for i, r in enumerate(recs)], dtype=np.int64),
        "arch_id": [r["id"] for r in recs],
    }
    for c in metrics:
        cols[c] = np.asarray([np.nan if r.get(c) is None else float(r[c]) for r in recs], dtype=np.float64)
    cols.update(constants)
    cols["space"] = space.name
    for g in header[genes_at:]:
        cols[g] = _typed([d.get(g) for d in decoded])
    cols["status"] = [r["status"] for r in recs]
    cols["error"] = [r.get("error") for r in recs]
    frame = pd.DataFrame(cols, index=pd.RangeIndex(len(recs)))
    return frame[["run_id", "order", *header, "status", "error"]]


def _typed(values: list):
    if values and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        return np.asarray(values, dtype=np.int64)
    if values and all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in values):
        return np.asarray(values, dtype=np.float64)
    return ["|".join(map(str, v)) if isinstance(v, (list, tuple)) else ("" if v is None else str(v)) for v in values]


def write_evals(run_dir: Path, out: Path, fmt: str) -> int:
    """Write the table to ``out`` atomically (a temporary file beside it, then renamed)."""
    if fmt not in FORMATS:
        from nas.registry import did_you_mean

        raise did_you_mean(fmt, FORMATS, "--format")
    out = Path(out)
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: cannot write there (no directory {out.parent})")
    frame = evals_frame(run_dir)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        if fmt == "csv":
            frame.to_csv(tmp, index=False)
        else:
            try:
                frame.to_parquet(tmp, index=False)
            except ImportError:
                raise UserError("--format parquet needs pyarrow: pip install pyarrow") from None
        tmp.replace(out)
    except OSError as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise UserError(f"--out {out}: cannot write there ({e.strerror})") from None
    return len(frame)
