"""Evolution: regularized (aging) evolution by default, top-k history evolution with a preset.

Regularized (aging) evolution, Real et al., AAAI 2019, for several objectives.

The population is a queue of the P most recent individuals. Each child comes from a tournament:
draw S individuals, take the best, mutate it (every variable is redrawn with probability
``mutation_prob``; at least one changes), append the child, retire the oldest. With several
objectives "best" is the lowest constraint-domination rank inside the tournament sample, ties
broken at random. Children are produced ``batch`` at a time (from the same population) so
evaluations can run in parallel. Children (and the initial population) that repeat an evaluated
architecture or break a constraint (cheap metrics) are redrawn, not evaluated.

Top-k evolution (``TopKEvolution``; ViT-ResNAS's and ElasticViT's searches, see presets.py): an
initial random population, then per iteration mutations and crossovers of parents drawn from the
best ``parents`` of *everything evaluated so far*. Candidates that break a constraint (checked on
the cheap metrics) or repeat an evaluated architecture are redrawn, not evaluated.
"""
from __future__ import annotations

from collections import deque
from typing import Callable

import numpy as np

from nas.search.base import STRATEGIES, Problem, constrained_rank, fill


@STRATEGIES.register("evolution")
def evolution(problem: Problem, *, seed: int, population: int, **options):
    """Regularized evolution; with a preset's options (``parents`` etc.), top-k evolution."""
    if "parents" in options:
        return TopKEvolution(problem, seed=seed, population=population, **options)
    return RegularizedEvolution(problem, seed=seed, population=population, **options)


class RegularizedEvolution:
    def __init__(self, problem: Problem, *, seed: int, population: int, sample_size: int | None = None,
                 mutation_prob: float = 0.1, batch: int | None = None):
        self.problem = problem
        self.rng = np.random.default_rng(seed)
        self.population = population
        # a tournament of 3/4 of the population and about one variable changed per child: on NB201
        # (benchmarks/README.md) P/4 and 0.2 left the search barely ahead of random sampling
        self.sample_size = sample_size or max(2, 3 * population // 4)
        self.mutation_prob = mutation_prob
        self.batch = batch or max(1, population // 4)
        self.pop: deque = deque(maxlen=population)  # (x, f, g) of the most recent individuals

    def ask(self) -> np.ndarray:
        if len(self.pop) < self.population:  # initial random population
            n = self.population - len(self.pop)
            x = fill(self.problem, n, lambda k: self.problem.sample(self.rng, k), relax=True)
            return x if len(x) else self.problem.sample(self.rng, n)  # a space smaller than the population
        xs = np.stack([p[0] for p in self.pop])
        fs = np.stack([p[1] for p in self.pop])
        gs = np.stack([p[2] for p in self.pop])

        def children(k: int) -> np.ndarray:
            out = []
            for _ in range(k):
                idx = self.rng.choice(len(xs), size=self.sample_size, replace=False)
                rank = constrained_rank(fs[idx], gs[idx])
                out.append(self._mutate(xs[idx[self.rng.choice(np.flatnonzero(rank == rank.min()))]]))
            return np.stack(out)

        x = fill(self.problem, self.batch, children, rounds=10, relax=True)
        return x if len(x) else children(self.batch)

    def _mutate(self, x: np.ndarray) -> np.ndarray:
        sizes = self.problem.sizes
        child = x.copy()
        mutable = np.flatnonzero(sizes > 1)
        hit = mutable[self.rng.random(mutable.size) < self.mutation_prob]
        if hit.size == 0:
            hit = self.rng.choice(mutable, size=1)
        for j in hit:  # redraw among the *other* choices so the gene really changes
            new = self.rng.integers(sizes[j] - 1)
            child[j] = new + (new >= x[j])
        return child

    def tell(self, x: np.ndarray, f: np.ndarray, g: np.ndarray) -> None:
        for row in zip(x, f, g):
            self.pop.append(row)


class TopKEvolution:
    DRAWS = 200  # rounds of candidate batches before an ask returns short (the space is exhausted)

    def __init__(self, problem: Problem, *, seed: int, population: int, parents: int, mutations: int,
                 crossovers: int, mutation_prob: float = 0.0, depth_mutation_prob: float | None = None,
                 random_redraw: float = 1.0, crossover: str = "uniform",
                 mutate: Callable[[np.random.Generator, np.ndarray], np.ndarray] | None = None,
                 initial: np.ndarray | None = None, overdraw: int = 4):
        """``mutate(rng, parents) -> children``: a family's own mutation operator instead of
        redrawing variables (DeepMAD's block mutator); ``initial``: the first population instead of
        ``population`` random samples (DeepMAD starts from one seed structure); ``overdraw``:
        candidates drawn per one wanted, so that redraws after constraint rejection are rare (1 for
        an operator whose children are mostly feasible and cost more to make than to check)."""
        self.problem, self.rng = problem, np.random.default_rng(seed)
        self.custom_mutate, self.initial, self.overdraw = mutate, initial, overdraw
        self.population, self.parents, self.mutations, self.crossovers = population, parents, mutations, crossovers
        names = problem.names
        self.prob = np.full(len(names), mutation_prob)
        if depth_mutation_prob is not None:  # ElasticViT re-samples depths more often
            self.prob[[i for i, n in enumerate(names) if n.endswith(".depth")]] = depth_mutation_prob
        self.prob[problem.sizes <= 1] = 0.0
        self.random_redraw = random_redraw
        if crossover not in ("uniform", "grouped"):
            raise ValueError(f"crossover must be 'uniform' or 'grouped', got {crossover!r}")
        self.crossover = crossover
        # grouped crossover: one parent per kind of variable ("width", "depth", "mlp", ...)
        kinds = [n.rsplit(".", 1)[-1] for n in names]
        self.groups = np.unique(kinds, return_inverse=True)[1]
        self.xs: list[np.ndarray] = []  # several objectives: everything told, with its values
        self.fs: list[np.ndarray] = []
        self.gs: list[np.ndarray] = []
        self.best: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # one objective: the best `parents`

    def ask(self) -> np.ndarray:
        if not self.xs and self.best is None:
            if self.initial is not None:
                return np.asarray(self.initial)
            return self._fill(self.population, lambda n: self.problem.sample(self.rng, n))
        top = self.top()
        muts = self._fill(self.mutations, lambda n: self._mutate(top[self.rng.integers(len(top), size=n)]))
        cross = self._fill(self.crossovers, lambda n: self._cross(top), known=muts) if len(top) > 1 else muts[:0]
        return np.concatenate([muts, cross])

    def top(self) -> np.ndarray:
        """The parents of the next generation: the best ``parents`` of everything told."""
        if self.best is not None:
            return self.best[0]
        x, f, g = np.concatenate(self.xs), np.concatenate(self.fs), np.concatenate(self.gs)
        return x[self._order(f, g)[: self.parents]]

    @staticmethod
    def _order(f: np.ndarray, g: np.ndarray) -> np.ndarray:
        rank = constrained_rank(f, g)
        return np.lexsort((f[:, 0], rank))  # feasible first, then by rank, then the first objective

    def _mutate(self, parents: np.ndarray) -> np.ndarray:
        """Each variable is redrawn with its probability: uniformly (or, with ``random_redraw`` < 1,
        uniformly with that probability and otherwise its smallest choice), or by ``mutate``."""
        if self.custom_mutate is not None:
            return self.custom_mutate(self.rng, parents)
        hit = self.rng.random(parents.shape) < self.prob
        new = (self.rng.random(parents.shape) * self.problem.sizes).astype(parents.dtype)
        if self.random_redraw < 1.0:
            new = np.where(self.rng.random(parents.shape) < self.random_redraw, new, 0)
        return np.where(hit, new, parents)

    def _cross(self, top: np.ndarray) -> np.ndarray:
        n = max(4 * self.crossovers, 64)
        a = self.rng.integers(len(top), size=n)
        b = (a + 1 + self.rng.integers(len(top) - 1, size=n)) % len(top)  # a distinct second parent
        if self.crossover == "uniform":
            take_a = self.rng.random((n, top.shape[1])) < 0.5
        else:
            take_a = (self.rng.random((n, self.groups.max() + 1)) < 0.5)[:, self.groups]
        return np.where(take_a, top[a], top[b])

    def _fill(self, n: int, draw, known: np.ndarray | None = None) -> np.ndarray:
        """Up to n new candidates that meet the constraints, none repeating an evaluated one,
        ``known`` or each other."""
        width = self.problem.n_var
        out = np.empty((0, width), dtype=np.int64) if known is None else known[:0]
        before = known if known is not None else np.empty((0, width), dtype=out.dtype)
        for _ in range(self.DRAWS):
            if len(out) >= n:
                break
            cand = np.asarray(draw(max(self.overdraw * (n - len(out)), 64 if self.overdraw > 1 else 1)))
            if len(cand) and self.problem.feasible is not None:
                cand = cand[self.problem.feasible(cand)]
            if not len(cand):
                continue
            pool = np.concatenate([before, out.astype(cand.dtype), cand])
            fresh = self.problem.fresh(pool)[len(before) + len(out):]
            out = np.concatenate([out.astype(cand.dtype), cand[fresh]])
        return out[:n]

    def tell(self, x: np.ndarray, f: np.ndarray, g: np.ndarray) -> None:
        if not len(x):
            return
        x, f, g = np.asarray(x), np.asarray(f, dtype=float), np.asarray(g, dtype=float).reshape(len(x), -1)
        if f.shape[1] != 1:
            self.xs.append(x)
            self.fs.append(f)
            self.gs.append(g)
            return
        # One objective: a row's place (feasible by f, infeasible by violation, ties in the order
        # told) does not depend on the other rows, so the best `parents` of everything told are
        # the best of the previous best and the new rows; a long search (DeepMAD's 500,000
        # children) then never re-sorts its whole history.
        if self.best is not None:
            x, f, g = (np.concatenate([a, b]) for a, b in zip(self.best, (x, f, g)))
        keep = self._order(f, g)[: self.parents]
        self.best = (x[keep], f[keep], g[keep])
