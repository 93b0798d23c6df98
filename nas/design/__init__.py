"""Designers: strategies that solve or train internally and emit finished architectures.

A designer is ``design(space, cfg, progress) -> Design``: it returns the candidates it scored
(genome + metric values) with the objective and constraints they were judged by. ``write_run``
lays them out like a search's run directory (config.toml, evals.jsonl, pareto.csv) through the
same ``RunLog``, plus whatever files the designer adds (DeepMAD: structure.json). Designs that
take CPU-seconds are written when they finish, so a failed one leaves nothing behind.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from nas.objectives import Constraint, Objective
from nas.registry import Registry

DESIGNERS: Registry[Callable[..., "Design"]] = Registry("designer")


@dataclass
class Design:
    columns: list[str]  # metric columns of evals.jsonl / pareto.csv
    objectives: list[Objective]
    constraints: list[Constraint]
    candidates: list[tuple[np.ndarray, dict[str, Any]]]  # (genome, {column: value}), in the order scored
    files: dict[str, str] = field(default_factory=dict)  # extra files of the run directory: name -> text
    summary: dict[str, Any] = field(default_factory=dict)


def write_run(run_dir: Path, space, design: Design) -> Path:
    """evals.jsonl (every candidate), pareto.csv (the non-dominated feasible ones) and the
    designer's files into an existing run directory (its config.toml already written)."""
    from nas.runlog import OK, RunLog
    from nas.runs import write_atomic

    log = RunLog(run_dir / "evals.jsonl", design.columns, design.objectives, design.constraints, space.gene_sizes)
    try:
        genomes = np.asarray([g for g, _ in design.candidates], dtype=np.int16).reshape(-1, space.n_genes)
        ids = space.ids(genomes)
        first = {ident: i for i, ident in reversed(list(enumerate(ids)))}  # each id at its first position
        keep = sorted(i for ident, i in first.items() if ident not in log.index)
        values = np.array([[float(design.candidates[i][1].get(c, np.nan)) for c in design.columns] for i in keep])
        if keep:
            log.append([ids[i] for i in keep], genomes[keep], values.reshape(len(keep), len(design.columns)),
                       np.full(len(keep), OK, dtype=np.int8), [None] * len(keep), [0.0] * len(keep))

        def fields(row: int, genome: np.ndarray, ident: str) -> dict:
            rec: dict[str, Any] = {"arch_id": ident}
            rec.update({c: float(log.values[row][log.col[c]]) for c in design.columns})
            rec["space"] = space.name
            rec.update(space.decode(space.arch(genome)))
            return rec

        header = ["arch_id", *design.columns, "space", *space.decode(space.smallest())]
        pareto = run_dir / "pareto.csv"
        log.write_pareto(pareto, header, fields)
    finally:
        log.close()
    for name, text in design.files.items():
        write_atomic(run_dir / name, text)
    return pareto


__all__ = ["DESIGNERS", "Design", "write_run"]
