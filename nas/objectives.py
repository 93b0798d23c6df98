"""What a search measures: metric columns, objectives over them, constraints, and the Evaluator.

Every evaluation records all *cheap* metrics (analytic MACs and parameters, latency on every
requested device), whether or not they are objectives, so pareto.csv always shows them. An
accuracy estimate (a training-free proxy now; supernet accuracy later) is *expensive*: computed
per architecture, only for architectures that pass the cheap constraints.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

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
    upper: float
    flag: str  # the CLI flag that set it, for messages

    def __str__(self) -> str:
        return f"{self.column} <= {self.upper:g}"


def latency_column(device: str) -> str:
    return f"latency_{device}_ms"


COST_COLUMNS = {"macs": ("macs_m", "MACs (M)"), "params": ("params_m", "parameters (M)")}
PROXY_PREFIX = "proxy:"


def parse_objectives(spec: str, devices: Sequence[str], proxies: Sequence[str]) -> tuple[list[Objective], str | None]:
    """``"naswot,latency"`` -> objectives; returns them and the proxy name (if any).

    Tokens: ``latency`` (one objective per device), ``latency:<device>``, ``macs``, ``params``,
    ``<proxy>`` or ``proxy:<proxy>`` (maximised). At most one proxy: it is the accuracy estimate.
    ``max:`` or ``min:`` in front of a token overrides its direction: ``latency,max:params`` asks
    for the most capacity at each latency (parameter count is itself a training-free proxy)."""
    objectives: list[Objective] = []
    proxy = None
    tokens = [t.strip() for t in spec.split(",") if t.strip()]
    if not tokens:
        raise UserError("--objectives is empty; give e.g. 'naswot,latency'")
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
        else:
            name = tok[len(PROXY_PREFIX):] if tok.startswith(PROXY_PREFIX) else tok
            if name not in proxies:
                raise did_you_mean(tok, ["latency", *COST_COLUMNS, *proxies], "objective")
            if proxy is not None and proxy != name:
                raise UserError(f"objectives {proxy!r} and {name!r}: use one accuracy estimate per search")
            proxy = name
            objectives.append(Objective(f"proxy_{name}", "max", f"{name} score"))
        if goal is not None:
            objectives[before:] = [Objective(o.column, goal, o.label) for o in objectives[before:]]
    cols = [o.column for o in objectives]
    dup = next((c for c in cols if cols.count(c) > 1), None)
    if dup:
        raise UserError(f"objective {dup!r} given twice in --objectives {spec!r}")
    return objectives, proxy


class Evaluator:
    """Computes every metric column for a batch of canonical genomes.

    ``cheap(genomes)`` is vectorised (tables and cost models); ``expensive(arch)`` handles one
    architecture (a proxy on a freshly initialised model) and is what runners parallelise.
    """

    def __init__(self, space: SearchSpace, tables: Sequence[Any], proxy: str | None = None,
                 seed: int = 0, threads: int = 1):
        self.space, self.tables, self.proxy, self.seed, self.threads = space, list(tables), proxy, seed, threads
        self._proxy_fn: Callable | None = None
        self._batch = None

    @property
    def columns(self) -> list[str]:
        cols = ["macs_m", "params_m"] + [latency_column(t.device) for t in self.tables]
        return cols + ([f"proxy_{self.proxy}"] if self.proxy else [])

    @property
    def expensive_columns(self) -> list[str]:
        return [f"proxy_{self.proxy}"] if self.proxy else []

    def accuracy_estimate(self) -> str:
        if not self.proxy:
            return "none"
        return f"proxy:{self.proxy} (untrained weights, init seed {self.seed}, 20 ImageNet samples at 224 px)"

    def cheap(self, genomes: np.ndarray) -> dict[str, np.ndarray]:
        cost = self.space.cost(genomes)
        out = {"macs_m": cost["macs"] / 1e6, "params_m": cost["params"] / 1e6}
        for t in self.tables:
            out[latency_column(t.device)] = t.predict(self.space, genomes)
        return out

    def expensive(self, genome: np.ndarray) -> dict[str, float]:
        if not self.proxy:
            return {}
        import torch

        from nas.proxies import get_proxy
        from nas.proxies.batch import imagenet_samples

        if self._proxy_fn is None:
            torch.set_num_threads(self.threads)
            _keep_freed_memory()
            self._proxy_fn = get_proxy(self.proxy)
            self._batch = imagenet_samples()
        torch.manual_seed(self.seed)
        model = self.space.build(self.space.arch(genome))
        images, labels = self._batch
        score = float(self._proxy_fn(model, images, labels))
        if math.isnan(score):
            raise ValueError(f"proxy {self.proxy} returned NaN")
        return {f"proxy_{self.proxy}": score}


def _keep_freed_memory() -> None:
    """Ask glibc to keep freed activation buffers instead of unmapping them.

    Every proxy evaluation builds a new model and runs large activations through it; by default
    glibc returns those buffers to the OS and page-faults fresh ones in on the next forward
    (measured here: 4.4 M page faults and 8 s of system time per 10 ElasticViT archs, -30 % wall
    time once disabled). No effect where libc is not glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: serve buffers up to 1 GiB from the heap
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: do not give the heap back eagerly
    except (OSError, AttributeError):
        pass
