"""The ask/tell contract every search strategy implements, and the strategy registry.

Searchers see integer *search vectors* (``SearchSpace.vars``), never torch or genomes. ``tell``
receives objective values already in minimisation form, ``F`` (n, n_obj), and constraint values
``G`` (n, n_constr), feasible where all G <= 0. Failed evaluations arrive as rows of +inf.
Searchers are deterministic for a seed: the same tells give the same asks, which is what lets
``nas resume`` replay a run from its log.
"""
from __future__ import annotations

import dataclasses
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

    def usable(self, x: np.ndarray, before: np.ndarray | None = None) -> np.ndarray:
        """Bool mask: rows that are fresh (not known, not in ``before``, not earlier in ``x``) and
        meet the constraints (checked on the cheap metrics)."""
        x = np.asarray(x)
        if not len(x):
            return np.zeros(0, dtype=bool)
        pool = x if before is None or not len(before) else np.concatenate([np.asarray(before, dtype=x.dtype), x])
        ok = self.fresh(pool)[len(pool) - len(x):]
        if self.feasible is not None and ok.any():
            ok[ok] = self.feasible(x[ok])
        return ok


FILL_ROUNDS = 50  # candidate batches drawn before a fill gives up (the space is exhausted or infeasible)


def fill(problem: Problem, n: int, draw: Callable[[int], np.ndarray], before: np.ndarray | None = None,
         rounds: int = FILL_ROUNDS, relax: bool = False) -> np.ndarray:
    """Up to n usable candidates (``Problem.usable``) from ``draw(k)``, which returns k candidates:
    every strategy spends its evaluations on new architectures that meet the constraints. With
    ``relax``, what the constraints leave short is filled with new infeasible candidates (a
    constraint nothing drawn meets must not stall a search: the tells of violations guide it)."""
    width = problem.n_var
    out = np.empty((0, width), dtype=np.int64)
    known = np.empty((0, width), dtype=np.int64) if before is None else np.asarray(before, dtype=np.int64).reshape(-1, width)
    for _ in range(rounds):
        if len(out) >= n:
            break
        cand = np.asarray(draw(max(4 * (n - len(out)), 32)), dtype=np.int64).reshape(-1, width)
        out = np.concatenate([out, cand[problem.usable(cand, np.concatenate([known, out]))]])
    if relax and len(out) < n and problem.feasible is not None:
        out = np.concatenate([out, fill(dataclasses.replace(problem, feasible=None), n - len(out), draw,
                                        np.concatenate([known, out]), max(rounds // 5, 2))])
    return out[:n]


def neighbours(problem: Problem, rng: np.random.Generator, parents: np.ndarray) -> np.ndarray:
    """Each parent with one variable changed to another of its choices."""
    parents = np.asarray(parents, dtype=np.int64)
    mutable = np.flatnonzero(problem.sizes > 1)
    if not mutable.size:
        return parents.copy()
    col = mutable[rng.integers(mutable.size, size=len(parents))]
    rows = np.arange(len(parents))
    new = rng.integers(problem.sizes[col] - 1)
    child = parents.copy()
    child[rows, col] = new + (new >= parents[rows, col])  # never the parent's own choice
    return child


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
    if feas.size:  # one objective: the fronts are the distinct values in order (no sort of all pairs)
        fronts = (np.unique(f[feas, 0], return_inverse=True)[1].reshape(-1) if f.shape[1] == 1
                  else NonDominatedSorting().do(f[feas], return_rank=True)[1])
        rank[feas] = fronts
        base = int(fronts.max()) + 1
    else:
        base = 0
    infeas = np.flatnonzero(cv > 0)
    if infeas.size:
        order = np.argsort(cv[infeas], kind="stable")
        rank[infeas[order]] = base + np.arange(infeas.size)
    return rank
