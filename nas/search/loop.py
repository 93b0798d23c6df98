"""The search loop: ask the strategy, answer from the run log or evaluate, log, tell, repeat.

``prepare`` does every check that can fail on user input (space, devices, tables, objectives,
constraints, strategy) before anything is written; ``run`` then owns the run directory. A
resumed run replays the same asks from the seed and answers them from ``evals.jsonl``, so the
final front equals an uninterrupted run's.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from nas.config import SearchConfig
from nas.errors import UserError
from nas.latency import load_table
from nas.objectives import Constraint, Evaluator, Objective, latency_column, parse_constraint, parse_objectives
from nas.runlog import FAILED, OK, SKIPPED, RunLog
from nas.runners import LocalRunner, RayRunner
from nas.scorers import ProxyScorer, ProxyScorers, SupernetScorer
from nas.search.base import Problem, Searcher, make_searcher
from nas.spaces import SearchSpace, get_space

BIG = 1e12  # what a searcher is told for a failed or unmeasured objective
STALL_BATCHES = 100  # stop when this many asks in a row bring nothing new


class History:
    """What the strategy has witnessed: the run log and how far into it the (re)play has come.

    ``seen`` counts the evaluations the strategy has been shown in this pass. In a fresh run it
    equals ``log.n``; in a resumed run the strategy replays from its seed, and log rows with index
    >= seen are results it is about to "discover" (answered from the log, never recomputed)."""

    def __init__(self, space: SearchSpace):
        self.space, self.log, self.seen = space, None, 0

    def identify(self, x: np.ndarray) -> list[str]:
        return self.space.ids(self.space.to_genomes(x))

    def is_known(self, ids: list[str]) -> np.ndarray:
        if self.log is None:
            return np.zeros(len(ids), dtype=bool)
        index, seen = self.log.index, self.seen
        return np.array([index.get(i, seen) < seen for i in ids], dtype=bool)


@dataclass
class Session:
    """A prepared search: every input checked, the strategy built; ``run`` it once."""

    cfg: SearchConfig
    space: SearchSpace
    tables: list
    evaluator: Evaluator
    objectives: list[Objective]
    constraints: list[Constraint]
    problem: Problem
    history: History
    searcher: Searcher

    @property
    def label(self) -> str:
        """``<space>-<devices>`` for run directory names."""
        return f"{self.space.name}-{'+'.join(t.device for t in self.tables) or 'nodevice'}"


def prepare(cfg: SearchConfig) -> Session:
    from nas.proxies import proxy_names
    from nas.search.presets import apply_preset

    space = get_space(cfg.space)
    cfg = apply_preset(cfg, space).validate()
    if len(set(cfg.devices)) != len(cfg.devices):
        raise UserError(f"--device lists a device twice: {','.join(cfg.devices)}")
    tables = [load_table(d, space, allow_missing=cfg.allow_missing) for d in cfg.devices]
    devices = [t.device for t in tables]
    if len(set(devices)) != len(devices):
        raise UserError(f"--device lists device {next(d for d in devices if devices.count(d) > 1)!r} twice")
    from nas import metrics as tm

    named = tm.available(cfg.metrics)
    clash = next((n for n in named if n in proxy_names()), None)
    if clash:
        raise UserError(f"metric {clash!r} has the name of a proxy; choose another name")
    objectives, estimate = parse_objectives(cfg.objectives, devices, proxy_names(), supernet=cfg.supernet is not None,
                                            metrics=named)
    if cfg.supernet is not None and estimate != "supernet":
        raise UserError("--supernet is given but no objective uses it: add 'accuracy' to --objectives")
    if cfg.max_latency is not None and not devices:
        raise UserError("--max-latency needs --device")
    constraints = constraints_of(cfg, devices, list(named))
    used = [c[len(tm.PREFIX):] for c in [o.column for o in objectives] + [c.column for c in constraints]
            if c.startswith(tm.PREFIX)]
    metrics = tm.load_metrics(cfg.metrics, list(dict.fromkeys(used)), space, cfg.allow_missing)
    scorer = None
    if estimate == "supernet":
        scorer = SupernetScorer(space, cfg.supernet, cfg.threads)
        scorer.check()
    elif estimate is not None:
        scorers = [ProxyScorer(space, p, cfg.seed, cfg.threads) for p in estimate.split(",")]
        scorer = scorers[0] if len(scorers) == 1 else ProxyScorers(scorers)
    evaluator = Evaluator(space, tables, scorer, metrics)
    history = History(space)

    def feasible(x: np.ndarray) -> np.ndarray:
        cheap = evaluator.cheap(space.to_genomes(x))
        return np.all([c.violation(cheap[c.column]) <= 0 for c in constraints], axis=0)

    problem = Problem(tuple(v.name for v in space.vars), space.var_sizes, len(objectives), len(constraints),
                      space.sample_vectors, identify=history.identify, is_known=history.is_known,
                      feasible=feasible if constraints else None)
    searcher = make_searcher(cfg.strategy, problem, seed=cfg.seed, population=cfg.population, preset=cfg.preset)
    fingerprints = {"space": space.fingerprint, **{f"table.{t.device}": t.version for t in tables},
                    **{f"metric.{m.name}": m.version for m in metrics}}
    if isinstance(scorer, SupernetScorer):
        fingerprints["supernet"] = scorer.fingerprint
    if cfg.fingerprints and cfg.fingerprints != fingerprints:
        changed = sorted(k for k in set(cfg.fingerprints) | set(fingerprints) if cfg.fingerprints.get(k) != fingerprints.get(k))
        raise UserError(f"cannot resume: {', '.join(changed)} changed since the run started "
                        f"(was {[cfg.fingerprints.get(k) for k in changed]}, now {[fingerprints.get(k) for k in changed]}); "
                        "start a new run")
    # paths are stored absolute so that `nas resume` works from any directory
    cfg = cfg.with_(space=_absolute(cfg.space), devices=tuple(_absolute(d) for d in cfg.devices), fingerprints=fingerprints,
                    metrics=tuple(tm.absolute_spec(m) for m in cfg.metrics),
                    supernet=str(scorer.path) if isinstance(scorer, SupernetScorer) else None)
    return Session(cfg, space, tables, evaluator, objectives, constraints, problem, history, searcher)


def constraints_of(cfg: SearchConfig, devices: list[str], metrics: list[str] = ()) -> list[Constraint]:
    """The constraints a search's flags set (``devices``: the tables' device names; ``metrics``:
    the metric names a ``--constraint`` may use)."""
    constraints = []
    if cfg.max_latency is not None:
        constraints += [Constraint(latency_column(d), cfg.max_latency, "--max-latency") for d in devices]
    if cfg.max_macs is not None:
        constraints.append(Constraint("macs_m", cfg.max_macs, "--max-macs"))
    if cfg.min_macs is not None:
        constraints.append(Constraint("macs_m", cfg.min_macs, "--min-macs", ">="))
    if cfg.max_params is not None:
        constraints.append(Constraint("params_m", cfg.max_params, "--max-params"))
    for text in cfg.constraints:
        constraints += parse_constraint(text, devices, list(metrics))
    return constraints


def evaluator_for(cfg: SearchConfig) -> Evaluator:
    """What a Ray worker builds once from the run's config: the same evaluator as the driver's,
    refusing to score with a space, table or supernet that differs from the driver's files."""
    session = prepare(cfg.with_(fingerprints={}))
    mine = session.cfg.fingerprints
    if cfg.fingerprints and mine != cfg.fingerprints:
        changed = sorted(k for k in set(mine) | set(cfg.fingerprints) if mine.get(k) != cfg.fingerprints.get(k))
        raise UserError(f"this node's {', '.join(changed)} differ from the driver's: install the same vitnas "
                        "and files on every node")
    return session.evaluator


def make_runner(session: Session) -> LocalRunner | RayRunner:
    """Ray actors for a search with an expensive metric and ``ray`` set; else this process
    (cheap metrics are vectorised in the driver: shipping them to workers would only add latency)."""
    cfg = session.cfg
    if cfg.ray is None or not session.evaluator.expensive_columns:
        return LocalRunner(session.evaluator)
    return RayRunner(partial(evaluator_for, cfg), address=cfg.ray, workers=cfg.workers, threads=cfg.threads,
                     gpus=cfg.gpus_per_worker or 0.0)


def _absolute(name: str) -> str:
    path, sep, column = name.rpartition(":") if ".csv:" in name else (name, "", "")
    p = Path(path)
    if ("/" in path or path.endswith((".toml", ".csv"))) and p.exists():
        return str(p.resolve()) + sep + column
    return name


@dataclass
class SearchResult:
    run_dir: Path
    evaluated: int
    front: int
    failed: int
    pareto_csv: Path
    plot: Path | None
    seconds: float
    stalled: bool
    report: Path | None = None

    def summary(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "evaluated": self.evaluated, "pareto_size": self.front,
                "failed": self.failed, "pareto_csv": str(self.pareto_csv),
                "plot": str(self.plot) if self.plot else None, "report": str(self.report) if self.report else None,
                "seconds": round(self.seconds, 2),
                "stalled": self.stalled}


def run(session: Session, run_dir: Path, *, progress: bool = True, plot: bool = True,
        pareto_every_s: float = 2.0, runner: LocalRunner | RayRunner | None = None) -> SearchResult:
    """Search until ``budget`` distinct architectures are evaluated (or the strategy stalls).
    ``runner`` (default ``make_runner(session)``) lives for the whole search and is closed here."""
    cfg, space, history, searcher = session.cfg, session.space, session.history, session.searcher
    if history.log is not None:
        raise RuntimeError("a Session runs once; prepare a new one")
    t0 = time.perf_counter()
    runner = runner or make_runner(session)
    log = RunLog(run_dir / "evals.jsonl", session.evaluator.columns, session.objectives, session.constraints,
                 space.gene_sizes)
    history.log = log
    bar = _progress(cfg.budget, min(log.n, cfg.budget), progress)
    pareto = run_dir / "pareto.csv"
    mirror = None
    if cfg.optuna_storage is not None:
        from nas.tracking import OptunaMirror

        mirror = OptunaMirror(cfg.optuna_storage, run_dir, space, session.objectives, session.constraints)
    last_write, stall, stalled = time.perf_counter(), 0, False
    try:
        while history.seen < cfg.budget:
            x = searcher.ask()
            genomes = space.to_genomes(x)
            ids = space.ids(genomes)
            fresh = list(np.flatnonzero(session.problem.fresh(x)))  # new to the strategy, in order
            room = cfg.budget - history.seen
            take = fresh[:room]
            todo = [i for i in take if ids[i] not in log.index]
            if todo:
                _evaluate(session, runner, log, genomes, ids, todo, bar)
            history.seen += len(take)
            if len(fresh) > room:
                break  # the budget ends inside this batch: nothing left to tell
            stall = 0 if take else stall + 1
            if stall >= STALL_BATCHES:
                stalled = True
                print(f"warning: {STALL_BATCHES} batches in a row proposed only evaluated architectures; "
                      f"stopping at {history.seen} of {cfg.budget} evaluations", file=sys.stderr)
                break
            if len(x) == 0:
                continue
            rows = log.rows(ids)
            f = log.minimised(rows)
            f[~np.isfinite(f)] = BIG
            f[log.status[rows] == FAILED] = BIG
            searcher.tell(x, f, log.violations(rows))
            if todo and time.perf_counter() - last_write > pareto_every_s:
                log.write_pareto(pareto, *_row_fields(session, log))
                if mirror is not None:
                    mirror.sync()
                last_write = time.perf_counter()
            if bar is not None:
                bar.set_postfix(front=len(log.front), refresh=False)
    finally:
        if bar is not None:
            bar.close()
        log.close()
        runner.close()
    n_front = log.write_pareto(pareto, *_row_fields(session, log))
    if mirror is not None:
        mirror.sync()  # everything logged, also what an interrupted batch finished
    png = report = None
    if plot:
        from nas.run_report import write_report

        report = write_report(run_dir)  # pareto.png and the other figures beside it
        png = run_dir / "pareto.png"
    return SearchResult(run_dir, log.n, n_front, int((log.status == FAILED).sum()), pareto, png,
                        time.perf_counter() - t0, stalled, report)


def _evaluate(session: Session, runner, log: RunLog, genomes: np.ndarray, ids: list[str], todo: list[int],
              bar) -> None:
    """Cheap metrics for the whole batch at once; expensive ones one architecture at a time,
    each logged as soon as it is done (in whatever order a Ray pool finishes them: rows are
    looked up by id, so the order changes neither the tell nor the front) so an interrupted
    batch keeps its finished work."""
    ev = session.evaluator
    g = genomes[todo]
    t = time.perf_counter()
    cheap = ev.cheap(g)
    per = (time.perf_counter() - t) / len(todo)
    values = np.full((len(todo), len(ev.columns)), np.nan)
    for c, v in cheap.items():
        values[:, log.col[c]] = v
    batch_ids = [ids[i] for i in todo]
    # --allow-missing: a whole-network table or metric without the architecture answered NaN
    lacking = np.isnan(values[:, [log.col[c] for c in cheap]]).any(1)
    errors = [f"not in the table of {', '.join(c for c in cheap if np.isnan(cheap[c][i]))}" if lacking[i] else None
              for i in range(len(todo))]
    if not ev.expensive_columns:
        log.append(batch_ids, g, values, np.where(lacking, FAILED, OK).astype(np.int8), errors, [per] * len(todo))
        if bar is not None:
            bar.update(len(todo))
        return
    for i in np.flatnonzero(lacking):
        log.append([batch_ids[i]], g[i:i + 1], values[i:i + 1], np.array([FAILED], dtype=np.int8), [errors[i]], [per])
        if bar is not None:
            bar.update(1)
    viol = lacking.copy()
    for c in session.constraints:
        viol |= c.violation(values[:, log.col[c.column]]) > 0

    def log_one(i: int, status: int, error: str | None, seconds: float) -> None:
        log.append([batch_ids[i]], g[i:i + 1], values[i:i + 1], np.array([status], dtype=np.int8), [error], [seconds])
        if bar is not None:
            bar.update(1)

    for i in np.flatnonzero(viol & ~lacking):
        log_one(int(i), SKIPPED, None, per)
    score = np.flatnonzero(~viol)
    for r in runner.imap(g[score]):
        i = int(score[r.index])
        for c, v in r.values.items():
            values[i, log.col[c]] = v
        log_one(i, FAILED if r.error else OK, r.error, per + r.seconds)


def _row_fields(session: Session, log: RunLog) -> tuple[list[str], Any]:
    """The pareto.csv header (the same whether or not the front is empty) and the row builder."""
    space, ev = session.space, session.evaluator
    devices = ";".join(t.device for t in session.tables)
    versions = ";".join(t.version for t in session.tables)
    obj_cols = [o.column for o in session.objectives]
    other = [c for c in ev.columns if c not in obj_cols]

    def fields(row: int, genome: np.ndarray, ident: str) -> dict:
        vals = log.values[row]
        rec: dict[str, Any] = {"arch_id": ident}
        for c in obj_cols + other:
            rec[c] = float(vals[log.col[c]])
        rec["accuracy_estimate"] = ev.accuracy_estimate()
        rec["device"] = devices
        rec["table_version"] = versions
        rec["space"] = space.name
        rec.update(space.decode(space.arch(genome)))
        return rec

    header = ["arch_id", *obj_cols, *other, "accuracy_estimate", "device", "table_version", "space",
              *space.decode(space.smallest())]
    return header, fields


def _progress(total: int, done: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=done, unit="arch", desc="search", dynamic_ncols=True, file=sys.stderr)


