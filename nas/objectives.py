"""What a search measures: metric columns, objectives over them, constraints, and the Evaluator.

Every evaluation records all *cheap* metrics (analytic MACs and parameters, latency on every
requested device), whether or not they are objectives, so pareto.csv always shows them. An
accuracy estimate (a training-free proxy now; supernet accuracy later) is *expensive*: computed
per architecture, only for architectures that pass the cheap constraints.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from nas.errors import UserError
from nas.registry import did_you_mean
from nas.spaces.base import SearchSpace


@dataclass(frozen=True)
class Objective:
    column: str  # evals.jsonl / pareto.csv column
    goal: str  # "min" | "max"
    label: str  # axis label

    @property
    def sign(self) -> float:  # multiply to get a value to minimise
        return 1.0 if self.goal == "min" else -1.0


@dataclass(frozen=True)
class Constraint:
    column: str
    bound: float
    flag: str  # the CLI flag that set it, for messages
    op: str = "<="  # "<=": an upper bound; ">=": a lower bound

    def __post_init__(self):
        if self.op not in ("<=", ">="):
            raise ValueError(f"constraint operator must be '<=' or '>=', got {self.op!r}")

    @property
    def sign(self) -> float:  # violation = sign * (value - bound), feasible where <= 0
        return 1.0 if self.op == "<=" else -1.0

    @property
    def upper(self) -> float:
        """The bound of an upper-bound constraint (the name callers used before lower bounds)."""
        if self.op != "<=":
            raise AttributeError(f"constraint {self} is a lower bound; use .bound and .violation()")
        return self.bound

    def violation(self, values: np.ndarray) -> np.ndarray:
        return self.sign * (np.asarray(values, dtype=float) - self.bound)

    def __str__(self) -> str:
        return f"{self.column} {self.op} {self.bound:g}"


def latency_column(device: str) -> str:
    return f"latency_{device}_ms"


COST_COLUMNS = {"macs": ("macs_m", "MACs (M)"), "params": ("params_m", "parameters (M)")}
PROXY_PREFIX = "proxy:"


def parse_objectives(spec: str, devices: Sequence[str], proxies: Sequence[str],
                     supernet: bool = False, metrics: dict[str, str] | None = None) -> tuple[list[Objective], str | None]:
    """``"naswot,latency"`` -> objectives; returns them and the accuracy estimate used: proxy
    name(s) (comma-separated when several proxies are objectives), "supernet", or None.

    Tokens: ``latency`` (one objective per device), ``latency:<device>``, ``macs``, ``params``,
    ``<proxy>`` or ``proxy:<proxy>`` (in the proxy's own direction: ntk is minimised), ``accuracy`` (held-out accuracy from the
    ``--supernet``, maximised), a table metric ``<name>`` or ``metric:<name>`` (``metrics``: name -> the
    direction of its bare name; nas/metrics.py). Supernet accuracy and proxies do not mix; several proxies may
    (As-ViT optimises its NTK condition number and length distortion together).
    ``max:`` or ``min:`` in front of a token overrides its direction: ``latency,max:params`` asks
    for the most capacity at each latency (parameter count is itself a training-free proxy)."""
    objectives: list[Objective] = []
    proxy = None
    metrics = metrics or {}
    tokens = [t.strip() for t in spec.split(",") if t.strip()]
    if not tokens:
        raise UserError("--objectives is empty; give e.g. 'naswot,latency'")
    if not devices and any(t.split(":")[-1] == "latency" or t.startswith(("latency", "max:latency", "min:latency"))
                           for t in tokens):
        raise UserError("a latency objective needs --device (see `nas devices`)")
    for tok in tokens:
        goal = None
        if tok.startswith(("max:", "min:")):
            goal, tok = tok[:3], tok[4:]
        before = len(objectives)
        if tok == "latency":
            objectives += [Objective(latency_column(d), "min", f"latency on {d} (ms)") for d in devices]
        elif tok.startswith("latency:"):
            d = tok.split(":", 1)[1]
            if d not in devices:
                raise UserError(f"objective {tok!r}: device {d!r} is not among --device {','.join(devices)}")
            objectives.append(Objective(latency_column(d), "min", f"latency on {d} (ms)"))
        elif tok in COST_COLUMNS:
            col, label = COST_COLUMNS[tok]
            objectives.append(Objective(col, "min", label))
        elif tok in metrics or (tok.startswith("metric:") and tok[len("metric:"):] in metrics):
            name = tok.removeprefix("metric:")
            objectives.append(Objective(f"metric_{name}", metrics[name], name))
        elif tok == "accuracy":
            if not supernet:
                raise UserError("objective 'accuracy' needs a trained supernet: add --supernet CHECKPOINT "
                                "(or use a training-free proxy such as naswot)")
            if proxy is not None:
                raise UserError(f"objectives {proxy!r} and 'accuracy': use supernet accuracy or proxies, not both")
            proxy = "supernet"
            objectives.append(Objective("accuracy", "max", "supernet accuracy (held-out)"))
        else:
            name = tok[len(PROXY_PREFIX):] if tok.startswith(PROXY_PREFIX) else tok
            if name not in proxies:
                raise did_you_mean(tok, list(dict.fromkeys(["latency", *COST_COLUMNS, "accuracy", *metrics, *proxies])),
                                   "objective")
            if proxy == "supernet":
                raise UserError(f"objectives 'accuracy' and {name!r}: use supernet accuracy or proxies, not both")
            from nas.proxies import proxy_goal

            proxy = name if proxy is None else f"{proxy},{name}"  # several proxies: As-ViT's K and LE
            objectives.append(Objective(f"proxy_{name}", proxy_goal(name), f"{name} score"))
        if goal is not None:
            objectives[before:] = [Objective(o.column, goal, o.label) for o in objectives[before:]]
    cols = [o.column for o in objectives]
    dup = next((c for c in cols if cols.count(c) > 1), None)
    if dup:
        raise UserError(f"objective {dup!r} given twice in --objectives {spec!r}")
    return objectives, proxy


_CONSTRAINT = re.compile(r"\s*([A-Za-z][A-Za-z0-9_.:\-]*)\s*(<=|>=|<|>|=)\s*(\S+)\s*")


def parse_constraint(text: str, devices: Sequence[str], metrics: Sequence[str]) -> list[Constraint]:
    """``"NAME<=VALUE"`` / ``"NAME>=VALUE"`` -> constraints, in the units of the CSV columns
    (ms, millions of MACs or parameters, a metric's own). NAME: ``latency`` (every device),
    ``latency:<device>``, ``macs``, ``params`` or a table metric (cheap metrics only: a search
    skips what they reject before any expensive estimate is computed)."""
    flag = f"--constraint {text!r}"
    m = _CONSTRAINT.fullmatch(text)
    if not m:
        raise UserError(f"{flag}: expected NAME<=VALUE or NAME>=VALUE (e.g. 'latency<=20', 'nb201-cifar10>=93')")
    name, op, value = m.groups()
    if op not in ("<=", ">="):
        raise UserError(f"{flag}: use '<=' or '>=' (a bound includes its value), not {op!r}")
    try:
        bound = float(value)
    except ValueError:
        raise UserError(f"{flag}: {value!r} is not a number") from None
    if not np.isfinite(bound):
        raise UserError(f"{flag}: the bound must be finite")
    if name == "latency":
        if not devices:
            raise UserError(f"{flag}: a latency constraint needs --device")
        return [Constraint(latency_column(d), bound, "--constraint", op) for d in devices]
    if name.startswith("latency:"):
        d = name.split(":", 1)[1]
        if d not in devices:
            raise UserError(f"{flag}: device {d!r} is not among --device {','.join(devices)}")
        return [Constraint(latency_column(d), bound, "--constraint", op)]
    if name in COST_COLUMNS:
        return [Constraint(COST_COLUMNS[name][0], bound, "--constraint", op)]
    name = name.removeprefix("metric:")
    if name in metrics:
        return [Constraint(f"metric_{name}", bound, "--constraint", op)]
    raise did_you_mean(name, ["latency", *COST_COLUMNS, *metrics], "constraint (cheap metric)")


class Evaluator:
    """Computes every metric column for a batch of canonical genomes.

    ``cheap(genomes)`` is vectorised (tables and cost models); ``expensive(genome)`` scores one
    architecture with the accuracy estimate (a proxy or a supernet, see scorers.py) and is what
    runners parallelise.
    """

    def __init__(self, space: SearchSpace, tables: Sequence[Any], scorer=None, metrics: Sequence[Any] = ()):
        self.space, self.tables, self.scorer, self.metrics = space, list(tables), scorer, list(metrics)

    @property
    def columns(self) -> list[str]:
        return self.cheap_columns + self.expensive_columns

    @property
    def cheap_columns(self) -> list[str]:
        return ["macs_m", "params_m"] + [latency_column(t.device) for t in self.tables] + [m.output for m in self.metrics]

    @property
    def expensive_columns(self) -> list[str]:
        if self.scorer is None:
            return []
        return list(self.scorer.columns) if hasattr(self.scorer, "columns") else [self.scorer.column]

    def accuracy_estimate(self) -> str:
        return self.scorer.describe() if self.scorer else "none"

    def cheap(self, genomes: np.ndarray) -> dict[str, np.ndarray]:
        cost = self.space.cost(genomes)
        out = {"macs_m": cost["macs"] / 1e6, "params_m": cost["params"] / 1e6}
        for t in self.tables:
            out[latency_column(t.device)] = t.predict(self.space, genomes)
        for m in self.metrics:
            out[m.output] = m.values(self.space, genomes)
        return out

    def expensive(self, genome: np.ndarray) -> dict[str, float]:
        return self.scorer(genome) if self.scorer else {}
