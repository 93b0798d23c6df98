"""The run log: append-only ``evals.jsonl``, the evaluation cache, the Pareto front, pareto.csv.

One JSON line per evaluated architecture, flushed per batch: a crash or ``kill -9`` loses at
most the batch being evaluated, and a line cut in half by the kill is dropped on reopening.
Memory holds only what the search needs: id -> row number, the metric values (n x columns
floats) and the genomes of the current front; never the parsed lines.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from nas.arch import GENOME_DTYPE
from nas.errors import UserError
from nas.objectives import Constraint, Objective

OK, FAILED, SKIPPED = 0, 1, 2  # status codes; SKIPPED: failed a cheap constraint, expensive metrics not run
STATUS = {OK: "ok", FAILED: "failed", SKIPPED: "skipped-infeasible"}
_CODES = {v: k for k, v in STATUS.items()}


class RunLog:
    def __init__(self, path: Path, columns: Sequence[str], objectives: Sequence[Objective],
                 constraints: Sequence[Constraint], gene_sizes: np.ndarray):
        self.path = Path(path)
        self.columns = list(columns)
        self.col = {c: i for i, c in enumerate(self.columns)}
        self.objectives, self.constraints = list(objectives), list(constraints)
        self.gene_sizes = np.asarray(gene_sizes)
        self.index: dict[str, int] = {}
        self._values = np.empty((1024, len(self.columns)))
        self._status = np.empty(1024, dtype=np.int8)
        self.n = 0
        self.front = np.empty(0, dtype=np.int64)  # row numbers of the current Pareto front
        self.front_genomes: dict[int, np.ndarray] = {}
        self.front_ids: dict[int, str] = {}
        self._load()
        self._file = self.path.open("a", encoding="utf-8")

    # ---- reading back ------------------------------------------------------------------------
    def _load(self) -> None:
        if not self.path.exists():
            return
        good = 0  # byte offset after the last complete line
        rows, genomes, ids, status = [], [], [], []
        with self.path.open("rb") as f:
            for lineno, raw in enumerate(f, start=1):
                if not raw.endswith(b"\n"):
                    break  # the tail of an interrupted write
                try:
                    rec = json.loads(raw)
                    genome = np.asarray(rec["genome"], dtype=np.int64)
                    if genome.shape != self.gene_sizes.shape:
                        raise ValueError(f"genome has {genome.size} genes, the space has {self.gene_sizes.size}")
                    if np.any((genome < 0) | (genome >= self.gene_sizes)):
                        raise ValueError("genome has a choice index outside its gene")
                    values = [_num(rec.get(c)) for c in self.columns]
                    code = _CODES[rec["status"]]
                    ident = rec["id"]
                except (ValueError, KeyError, TypeError, OverflowError) as e:
                    if not f.peek(1):  # a torn last line: drop it
                        break
                    raise UserError(f"{self.path}:{lineno}: corrupt evaluation record ({e}); "
                                    "fix or delete that line, then resume") from None
                rows.append(values)
                genomes.append(genome)
                ids.append(ident)
                status.append(code)
                good += len(raw)
                if len(rows) == 4096:
                    self._absorb(ids, genomes, rows, status)
                    rows, genomes, ids, status = [], [], [], []
        if rows:
            self._absorb(ids, genomes, rows, status)
        if good < self.path.stat().st_size:
            print(f"warning: {self.path}: dropped an incomplete last line (interrupted write)", file=sys.stderr)
            with self.path.open("r+b") as f:
                f.truncate(good)

    def _absorb(self, ids, genomes, rows, status) -> None:
        self._add(ids, np.asarray(genomes, dtype=GENOME_DTYPE), np.asarray(rows, dtype=float), np.asarray(status, dtype=np.int8))

    # ---- writing -----------------------------------------------------------------------------
    def append(self, ids: list[str], genomes: np.ndarray, values: np.ndarray, status: np.ndarray,
               errors: Sequence[str | None], seconds: Sequence[float]) -> None:
        """Log a batch of new evaluations (one flushed line each) and update the front."""
        buf = io.StringIO()
        for i, ident in enumerate(ids):
            rec = {"n": self.n + i, "id": ident, "status": STATUS[int(status[i])]}
            for c, v in zip(self.columns, values[i]):
                rec[c] = None if math.isnan(v) else float(v)
            if errors[i]:
                rec["error"] = errors[i]
            rec["seconds"] = round(float(seconds[i]), 4)
            rec["genome"] = genomes[i].tolist()
            buf.write(json.dumps(rec, separators=(",", ":")))
            buf.write("\n")
        self._file.write(buf.getvalue())
        self._file.flush()  # in the kernel now: survives kill -9 of this process
        self._add(ids, genomes, values, status)

    def sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self.sync()
            self._file.close()

    def _add(self, ids, genomes, values, status) -> None:
        k = len(ids)
        while self.n + k > len(self._values):
            self._values = np.concatenate([self._values, np.empty_like(self._values)])
            self._status = np.concatenate([self._status, np.empty_like(self._status)])
        rows = np.arange(self.n, self.n + k)
        self._values[rows] = values
        self._status[rows] = status
        for r, ident in zip(rows, ids):
            self.index[ident] = int(r)
        self.n += k
        self._update_front(rows, genomes, ids)

    # ---- queries -----------------------------------------------------------------------------
    @property
    def values(self) -> np.ndarray:
        return self._values[: self.n]

    @property
    def status(self) -> np.ndarray:
        return self._status[: self.n]

    def rows(self, ids: Sequence[str]) -> np.ndarray:
        return np.array([self.index[i] for i in ids], dtype=np.int64)

    def minimised(self, rows: np.ndarray) -> np.ndarray:
        """Objective values of rows, in minimisation form (NaN where not measured)."""
        cols = [self.col[o.column] for o in self.objectives]
        return self._values[rows][:, cols] * np.array([o.sign for o in self.objectives])

    def violations(self, rows: np.ndarray) -> np.ndarray:
        """Constraint values (n, n_constraints): how far past its bound (upper or lower), feasible where <= 0."""
        if not self.constraints:
            return np.zeros((len(rows), 0))
        cols = [self.col[c.column] for c in self.constraints]
        signs = np.array([c.sign for c in self.constraints])
        return signs * (self._values[rows][:, cols] - np.array([c.bound for c in self.constraints]))

    def feasible(self, rows: np.ndarray) -> np.ndarray:
        ok = self._status[rows] == OK
        return ok & np.all(self.violations(rows) <= 0, axis=1) & np.all(np.isfinite(self.minimised(rows)), axis=1)

    # ---- the Pareto front --------------------------------------------------------------------
    def _update_front(self, rows: np.ndarray, genomes: np.ndarray, ids: Sequence[str]) -> None:
        keep = self.feasible(rows)
        if not keep.any():
            return
        cand = np.concatenate([self.front, rows[keep]])
        from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

        nd = NonDominatedSorting().do(self.minimised(cand), only_non_dominated_front=True)
        new_front = np.sort(cand[nd])
        fresh = {int(r): (g, i) for r, g, i, k in zip(rows, genomes, ids, keep) if k}
        self.front_genomes = {int(r): (self.front_genomes[int(r)] if int(r) in self.front_genomes else fresh[int(r)][0])
                              for r in new_front}
        self.front_ids = {int(r): (self.front_ids[int(r)] if int(r) in self.front_ids else fresh[int(r)][1])
                          for r in new_front}
        self.front = new_front

    def write_pareto(self, path: Path, header: Sequence[str], row_fields: Callable[[int, np.ndarray, str], dict]) -> int:
        """Rewrite pareto.csv atomically; ``row_fields(row, genome, id)`` gives a row's columns."""
        rows = self.front
        records = [row_fields(int(r), self.front_genomes[int(r)], self.front_ids[int(r)]) for r in rows]
        if records:
            sort_col = next((c for c in self.columns if c.startswith("latency_")), self.objectives[0].column)
            order = sorted(range(len(rows)), key=lambda i: (records[i][sort_col], records[i]["arch_id"]))
            records = [records[i] for i in order]
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=header, lineterminator="\n")
            w.writeheader()
            for rec in records:
                w.writerow({k: (_fmt(v) if isinstance(v, float) else v) for k, v in rec.items()})
        tmp.replace(path)
        return len(records)


def _num(v) -> float:
    return float("nan") if v is None else float(v)


def _fmt(v: float) -> str:
    return "" if math.isnan(v) else f"{v:.6g}"
