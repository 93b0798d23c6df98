"""The ask/tell contract every search strategy implements, and the strategy registry.

Searchers see integer *search vectors* (``SearchSpace.vars``), never torch or genomes. ``tell``
receives objective values already in minimisation form, ``F`` (n, n_obj), and constraint values
``G`` (n, n_constr), feasible where all G <= 0. Failed evaluations arrive as rows of +inf.
Searchers are deterministic for a seed: the same tells give the same asks, which is what lets
``nas resume`` replay a run from its log.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from nas.registry import Registry, did_you_mean


@dataclass(frozen=True)
class Problem:
    names: tuple[str, ...]  # search-vector variable names
    sizes: np.ndarray  # choices per variable; values are 0..size-1
    n_obj: int
    n_constr: int
    sample: Callable[[np.random.Generator, int], np.ndarray]  # valid random vectors
    # The architecture a vector denotes (distinct vectors may denote one architecture), and
    # whether it was already evaluated earlier in this run; searchers use them to propose new ones.
    identify: Callable[[np.ndarray], list[str]] | None = None
    is_known: Callable[[list[str]], np.ndarray] | None = None
    # Bool mask: rows that meet every constraint, from the cheap (vectorised) metrics; lets a
    # searcher redraw out-of-range candidates instead of spending evaluations on them.
    feasible: Callable[[np.ndarray], np.ndarray] | None = None

    def fresh(self, x: np.ndarray) -> np.ndarray:
        """Bool mask: rows that denote an architecture neither known nor earlier in ``x``."""
        if self.identify is None:
            return np.ones(len(x), dtype=bool)
        ids = self.identify(x)
        known = self.is_known(ids) if self.is_known is not None else np.zeros(len(ids), dtype=bool)
        seen: set[str] = set()
        out = np.zeros(len(x), dtype=bool)
        for i, ident in enumerate(ids):
            out[i] = not known[i] and ident not in seen
            seen.add(ident)
        return out

    @property
    def n_var(self) -> int:
        return len(self.sizes)


class Searcher(Protocol):
    def ask(self) -> np.ndarray: ...  # (n, n_var) ints

    def tell(self, x: np.ndarray, f: np.ndarray, g: np.ndarray) -> None: ...


STRATEGIES: Registry[Callable[..., Searcher]] = Registry("strategy")
BUILTIN = {  # name -> module that registers it; imported on first use (optuna costs an import)
    "nsga2": "nas.search.pymoo_adapter",
    "optuna-nsga2": "nas.search.optuna_adapter",
    "optuna-tpe": "nas.search.optuna_adapter",
    "evolution": "nas.search.evolution",
    "random": "nas.search.random_search",
}


def strategy_names() -> list[str]:
    return sorted(set(BUILTIN) | set(STRATEGIES.names()))


def make_searcher(name: str, problem: Problem, *, seed: int, population: int, preset: str | None = None) -> Searcher:
    if name not in STRATEGIES:
        if name not in BUILTIN:
            raise did_you_mean(name, strategy_names(), "strategy")
        importlib.import_module(BUILTIN[name])
    if preset is not None:  # a named configuration of the strategy (nas/search/presets.py)
        from nas.search.presets import preset_options

        return STRATEGIES.get(name)(problem, seed=seed, population=population, **preset_options(preset, name))
    return STRATEGIES.get(name)(problem, seed=seed, population=population)


def constrained_rank(f: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Non-domination rank under constraint domination (Deb): feasible before infeasible,
    infeasible ordered by total violation, feasible by Pareto rank (0 = front)."""
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    cv = np.clip(g, 0, None).sum(1) if g.size else np.zeros(len(f))
    rank = np.empty(len(f), dtype=np.int64)
    feas = np.flatnonzero(cv <= 0)
    if feas.size:
        fronts = NonDominatedSorting().do(f[feas], return_rank=True)[1]
        rank[feas] = fronts
        base = int(fronts.max()) + 1
    else:
        base = 0
    infeas = np.flatnonzero(cv > 0)
    if infeas.size:
        order = np.argsort(cv[infeas], kind="stable")
        rank[infeas[order]] = base + np.arange(infeas.size)
    return rank
