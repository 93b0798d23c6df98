"""Optuna's NSGA-II and TPE samplers behind ask/tell (``optuna-nsga2``, ``optuna-tpe``).

Each variable is an ``IntDistribution`` over its choice indices (ordered choices suit TPE's
kernels). The first population is the space's own sampler, enqueued, so every strategy starts
from valid, comparable architectures. Constraint values are set on each trial with
``Trial.set_constraint``, which both samplers read (feasible when all are <= 0).
"""
from __future__ import annotations

import warnings

import numpy as np
import optuna
from optuna.distributions import IntDistribution

from nas.search.base import STRATEGIES, Problem

optuna.logging.set_verbosity(optuna.logging.WARNING)


class _OptunaSearcher:
    def __init__(self, problem: Problem, sampler: optuna.samplers.BaseSampler, *, seed: int, population: int):
        self.problem, self.batch = problem, population
        self.study = optuna.create_study(directions=["minimize"] * problem.n_obj, sampler=sampler)
        self.dists = {n: IntDistribution(0, int(s) - 1) for n, s in zip(problem.names, problem.sizes)}
        for x in problem.sample(np.random.default_rng(seed), population):
            self.study.enqueue_trial({n: int(v) for n, v in zip(problem.names, x)})
        self._pending: list = []

    def ask(self) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._pending = [self.study.ask(self.dists) for _ in range(self.batch)]
        return np.array([[t.params[n] for n in self.problem.names] for t in self._pending], dtype=np.int64)

    def tell(self, x: np.ndarray, f: np.ndarray, g: np.ndarray) -> None:
        for trial, fi, gi in zip(self._pending, f, g):
            for j, v in enumerate(gi):
                trial.set_constraint(f"c{j}", float(v))
            self.study.tell(trial, [float(v) for v in fi])
        self._pending = []


@STRATEGIES.register("optuna-nsga2")
def optuna_nsga2(problem: Problem, *, seed: int, population: int) -> _OptunaSearcher:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    return _OptunaSearcher(problem, sampler, seed=seed, population=population)


@STRATEGIES.register("optuna-tpe")
def optuna_tpe(problem: Problem, *, seed: int, population: int) -> _OptunaSearcher:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=population)
    return _OptunaSearcher(problem, sampler, seed=seed, population=population)
