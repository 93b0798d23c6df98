"""NSGA-II from pymoo (Deb et al. 2002) behind ask/tell.

Integer variables use pymoo's SBX crossover and polynomial mutation on the ordinal choice index
with rounding repair, with the wide distribution indices (eta = 3) of pymoo's own integer example
(every gene's choices are listed in increasing order, so neighbouring indices are similar
networks). The first population is drawn by the space's own sampler.

Offspring must be new architectures that meet the constraints (checked on the cheap metrics):
others count as pymoo duplicates, so mating draws again, at most ``MATING_TRIES`` times. What it
cannot fill, neighbours of the population fill (one variable changed, drawn from the algorithm's
own random state, so runs stay deterministic), then random architectures. A converged population
(a degenerate front of one network) used to spend 8 of pymoo's 10 mating rounds per generation
re-discovering known architectures, 3x the time of a normal run; and when mating found nothing
at all pymoo ended its run, which we re-opened with random architectures.
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

from nas.search.base import STRATEGIES, Problem, fill, neighbours


MATING_TRIES = 3


class _SpaceSampling(Sampling):
    def __init__(self, problem: Problem):
        super().__init__()
        self.space_problem = problem

    def _do(self, problem, n_samples, *args, random_state=None, **kwargs):
        p = self.space_problem
        x = fill(p, n_samples, lambda k: p.sample(random_state, k), relax=True)
        if len(x) < n_samples:  # fewer architectures than a population: repeats are answered from the log
            x = np.concatenate([x, p.sample(random_state, n_samples - len(x))])
        return x.astype(float)


class _ArchDuplicates(DuplicateElimination):
    """Duplicates are vectors denoting the same architecture (not just equal vectors), architectures
    the run already evaluated, and infeasible ones: pymoo then keeps mating until offspring are
    new and feasible."""

    def __init__(self, problem: Problem):
        super().__init__()
        self.space_problem = problem

    def _do(self, pop, other, is_duplicate):
        x = np.rint(pop.get("X")).astype(np.int64)
        before = None if other is None else np.rint(other.get("X")).astype(np.int64)
        return is_duplicate | ~self.space_problem.usable(x, before)


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
        if pop is None:  # mating found nothing new: pymoo ended its run; go on with the top-up below
            self.algorithm.termination.force_termination = False
            pop = Population.new(X=np.empty((0, self.problem.n_var)))  # merged with the top-up
        n_var = self.problem.n_var
        x = np.rint(pop.get("X")).astype(np.int64).reshape(-1, n_var)
        short = self.population - len(x)
        if short > 0:
            rs = self.algorithm.random_state
            if self.algorithm.pop is not None and len(self.algorithm.pop):
                base = np.rint(self.algorithm.pop.get("X")).astype(np.int64).reshape(-1, n_var)
                extra = fill(self.problem, short,
                             lambda k: neighbours(self.problem, rs, base[rs.integers(len(base), size=k)]), x, rounds=4)
            else:  # no population yet: nothing drawn met the constraints (pymoo dropped them all as unusable)
                extra = np.empty((0, n_var), dtype=np.int64)
            if len(extra) < short:
                extra = np.concatenate([extra, fill(self.problem, short - len(extra), lambda k: self.problem.sample(rs, k),
                                                    np.concatenate([x, extra]), relax=True)])
            x = np.concatenate([x, extra])
            pop = Population.merge(pop, Population.new(X=extra.astype(float))) if len(extra) else pop
        self._pending = pop
        return x

    def tell(self, x: np.ndarray, f: np.ndarray, g: np.ndarray) -> None:
        pop = self._pending
        pop.set("F", np.asarray(f, dtype=float))
        if self.problem.n_constr:
            pop.set("G", np.asarray(g, dtype=float))
        self.algorithm.tell(infills=pop)
        self._pending = None
