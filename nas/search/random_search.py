"""Random search: batches of uniform samples from the space (valid widths by construction)."""
from __future__ import annotations

import numpy as np

from nas.search.base import STRATEGIES, Problem


@STRATEGIES.register("random")
class RandomSearch:
    def __init__(self, problem: Problem, *, seed: int, population: int):
        self.problem, self.batch = problem, population
        self.rng = np.random.default_rng(seed)

    def ask(self) -> np.ndarray:
        x = self.problem.sample(self.rng, self.batch)
        for _ in range(10):  # redraw rows that denote already evaluated architectures
            bad = ~self.problem.fresh(x)
            if not bad.any():
                break
            x[bad] = self.problem.sample(self.rng, int(bad.sum()))
        return x

    def tell(self, x: np.ndarray, f: np.ndarray, g: np.ndarray) -> None:
        pass
