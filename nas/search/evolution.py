"""Regularized (aging) evolution, Real et al., AAAI 2019, for several objectives.

The population is a queue of the P most recent individuals. Each child comes from a tournament:
draw S individuals, take the best, mutate it (every variable is redrawn with probability
``mutation_prob``; at least one changes), append the child, retire the oldest. With several
objectives "best" is the lowest constraint-domination rank inside the tournament sample, ties
broken at random. Children are produced ``batch`` at a time (from the same population) so
evaluations can run in parallel.
"""
from __future__ import annotations

from collections import deque

import numpy as np

from nas.search.base import STRATEGIES, Problem, constrained_rank


@STRATEGIES.register("evolution")
class RegularizedEvolution:
    def __init__(self, problem: Problem, *, seed: int, population: int, sample_size: int | None = None,
                 mutation_prob: float = 0.2, batch: int | None = None):
        self.problem = problem
        self.rng = np.random.default_rng(seed)
        self.population = population
        self.sample_size = sample_size or max(2, population // 4)
        self.mutation_prob = mutation_prob
        self.batch = batch or max(1, population // 4)
        self.pop: deque = deque(maxlen=population)  # (x, f, g) of the most recent individuals

    def ask(self) -> np.ndarray:
        if len(self.pop) < self.population:  # initial random population
            return self.problem.sample(self.rng, self.population - len(self.pop))
        xs = np.stack([p[0] for p in self.pop])
        fs = np.stack([p[1] for p in self.pop])
        gs = np.stack([p[2] for p in self.pop])
        children = []
        for _ in range(self.batch):
            idx = self.rng.choice(len(xs), size=self.sample_size, replace=False)
            rank = constrained_rank(fs[idx], gs[idx])
            parent = xs[idx[self.rng.choice(np.flatnonzero(rank == rank.min()))]]
            for _attempt in range(10):  # prefer a child that is a new architecture
                child = self._mutate(parent)
                if self.problem.fresh(np.stack(children + [child]))[-1]:
                    break
            children.append(child)
        return np.stack(children)

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
