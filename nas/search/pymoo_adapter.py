"""NSGA-II from pymoo (Deb et al. 2002) behind ask/tell.

Integer variables use pymoo's SBX crossover and polynomial mutation on the ordinal choice index
with rounding repair, with the wide distribution indices (eta = 3) of pymoo's own integer example
(every gene's choices are listed in increasing order, so neighbouring indices are similar
networks). The first population is drawn by the space's own sampler.

Mating retries at most ``MATING_TRIES`` times to fill a generation with new architectures (pymoo's
default, 100, makes a converged run spend most of its time re-discovering known ones). When it
finds none at all, pymoo ends its run (``ask`` returns None); we re-open it with a batch of fresh
random architectures drawn from the algorithm's own random state, so the search goes on,
deterministically, until the budget or the loop's stall rule stops it.
"""
from __future__ import annotations

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.duplicate import DuplicateElimination
from pymoo.core.population import Population
from pymoo.core.problem import Problem as PymooProblem
from pymoo.core.sampling import Sampling
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.mutation.pm import PM
from pymoo.operators.repair.rounding import RoundingRepair

from nas.search.base import STRATEGIES, Problem


MATING_TRIES = 10


class _SpaceSampling(Sampling):
    def __init__(self, problem: Problem):
        super().__init__()
        self.space_problem = problem

    def _do(self, problem, n_samples, *args, random_state=None, **kwargs):
        return self.space_problem.sample(random_state, n_samples).astype(float)


class _ArchDuplicates(DuplicateElimination):
    """Duplicates are vectors denoting the same architecture (not just equal vectors), and
    architectures the run already evaluated: pymoo then keeps mating until offspring are new."""

    def __init__(self, problem: Problem):
        super().__init__()
        self.space_problem = problem

    def _do(self, pop, other, is_duplicate):
        x = np.rint(pop.get("X")).astype(np.int64)
        if other is None:
            return is_duplicate | ~self.space_problem.fresh(x)
        theirs = set(self.space_problem.identify(np.rint(other.get("X")).astype(np.int64)))
        return is_duplicate | np.array([i in theirs for i in self.space_problem.identify(x)], dtype=bool)


@STRATEGIES.register("nsga2")
class PymooNSGA2:
    def __init__(self, problem: Problem, *, seed: int, population: int):
        self.problem = problem
        self.moo = PymooProblem(n_var=problem.n_var, n_obj=problem.n_obj, n_ieq_constr=max(problem.n_constr, 0),
                                xl=np.zeros(problem.n_var), xu=(problem.sizes - 1).astype(float), vtype=int)
        self.algorithm = NSGA2(
            pop_size=population,
            sampling=_SpaceSampling(problem),
            crossover=SBX(prob=1.0, eta=3.0, vtype=float, repair=RoundingRepair()),
            mutation=PM(prob=1.0, eta=3.0, vtype=float, repair=RoundingRepair()),
            eliminate_duplicates=_ArchDuplicates(problem) if problem.identify else True,
        )
        self.algorithm.mating.n_max_iterations = MATING_TRIES
        self.algorithm.setup(self.moo, termination=("n_gen", 10**9), seed=seed, verbose=False)
        self.population = population
        self._pending: Population | None = None

    def ask(self) -> np.ndarray:
        pop = self.algorithm.ask()
        if pop is None:  # no new offspring: re-open the run with fresh random architectures
            self.algorithm.termination.force_termination = False
            x = self.problem.sample(self.algorithm.random_state, self.population)
            pop = Population.new(X=x.astype(float))
        self._pending = pop
        return np.rint(pop.get("X")).astype(np.int64)

    def tell(self, x: np.ndarray, f: np.ndarray, g: np.ndarray) -> None:
        pop = self._pending
        pop.set("F", np.asarray(f, dtype=float))
        if self.problem.n_constr:
            pop.set("G", np.asarray(g, dtype=float))
        self.algorithm.tell(infills=pop)
        self._pending = None
