"""``nas search --optuna-storage``: every evaluation mirrored as a trial of a multi-objective optuna
study, so ``optuna-dashboard STORAGE`` (or ``optuna.load_study``) can browse a run.

The study is named after the run directory; its directions are the objectives'. Each trial holds
the objective values (``values``), the search variables as categorical params, the constraint violations
(optuna's ``constraints``, by name: feasible where <= 0) and, as user attributes, the run id, the arch id,
the decoded architecture, the order of evaluation, the status and every metric. The mirror reads
``evals.jsonl`` from where it left off, so a resumed run adds only what is new, and the run log
stays the one source of truth.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from nas.errors import UserError
from nas.objectives import Constraint, Objective


def check_storage(url: str) -> None:
    """Refuse a malformed ``--optuna-storage`` before a run starts."""
    if url.startswith("sqlite:///"):
        where = Path(url[len("sqlite:///"):])
    elif url.startswith("journal:"):
        where = Path(url[len("journal:"):])
    else:
        raise UserError(f"--optuna-storage {url!r}: give sqlite:///PATH or journal:PATH")
    if not where.name:
        raise UserError(f"--optuna-storage {url!r}: no file name")
    if not where.parent.resolve().is_dir():
        raise UserError(f"--optuna-storage {url!r}: directory {where.parent} does not exist")


def open_storage(url: str):
    import optuna

    check_storage(url)
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(url[len("journal:"):]))
    return optuna.storages.RDBStorage(url)


class OptunaMirror:
    def __init__(self, url: str, run_dir: Path, space, objectives: Sequence[Objective],
                 constraints: Sequence[Constraint]):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.run_dir, self.space = Path(run_dir), space
        self.objectives, self.constraints = list(objectives), list(constraints)
        directions = ["minimize" if o.goal == "min" else "maximize" for o in self.objectives]
        self.study = optuna.create_study(storage=open_storage(url), study_name=self.run_id, directions=directions,
                                         load_if_exists=True)
        if [d.name.lower() for d in self.study.directions] != directions:
            raise UserError(f"--optuna-storage {url}: study {self.run_id!r} exists with other objectives")
        self.study.set_user_attr("run_dir", str(self.run_dir.resolve()))
        self.study.set_user_attr("objectives", [o.column for o in self.objectives])
        self.study.set_user_attr("space", space.name)
        self._done = {t.user_attrs.get("order") for t in self.study.get_trials(deepcopy=False)}
        self._offset = 0
        # params: the search variables (what the strategy chose), each as its first gene's choices;
        # optuna writes one row per param, so the full genome (87 genes for elasticvit) would cost
        # 0.3 s a trial in SQLite; it goes to user_attrs["genome"] instead
        self._vars = [(v.name, space.genes[v.positions[0]], v.positions[0]) for v in space.vars]
        self._dists = {name: optuna.distributions.CategoricalDistribution(tuple(str(c) for c in gene.choices))
                       for name, gene, _ in self._vars}

    @property
    def run_id(self) -> str:
        return self.run_dir.resolve().name

    def sync(self) -> int:
        """Mirror the evaluations logged since the last call; returns how many were added."""
        path = self.run_dir / "evals.jsonl"
        if not path.exists():
            return 0
        with path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # complete lines only: the search may be mid-write
        self._offset += end
        trials = [self._trial(json.loads(ln)) for ln in data[:end].splitlines() if ln.strip()]
        trials = [t for t in trials if t is not None]
        if trials:
            self.study.add_trials(trials)
        return len(trials)

    def _trial(self, rec: dict):
        import optuna

        order = int(rec["n"])
        if order in self._done:
            return None
        self._done.add(order)
        genome = np.asarray(rec["genome"], dtype=np.int64)
        decoded = {k: _plain(v) for k, v in self.space.decode(self.space.arch(genome)).items()}
        values = [rec.get(o.column) for o in self.objectives]
        ok = rec["status"] == "ok" and all(v is not None and math.isfinite(v) for v in values)
        metrics = {k: v for k, v in rec.items() if k not in ("n", "id", "status", "error", "genome", "seconds")}
        constraints = None  # optuna's feasibility: each value <= 0
        if self.constraints and all(rec.get(c.column) is not None for c in self.constraints):
            constraints = {str(c): float(c.violation(rec[c.column])) for c in self.constraints}
        return optuna.trial.create_trial(
            state=optuna.trial.TrialState.COMPLETE if ok else optuna.trial.TrialState.FAIL,
            values=[float(v) for v in values] if ok else None,
            params={name: str(gene.choices[genome[pos]]) for name, gene, pos in self._vars},
            distributions=self._dists,
            user_attrs={"run_id": self.run_id, "arch_id": rec["id"], "order": order, "status": rec["status"],
                        "error": rec.get("error"), "arch": decoded, "metrics": metrics, "genome": genome.tolist()},
            constraints=constraints,
        )


def _plain(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v
