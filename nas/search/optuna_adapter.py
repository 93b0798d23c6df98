"""Optuna's NSGA-II and TPE samplers behind ask/tell (``optuna-nsga2``, ``optuna-tpe``).

Each variable is an ``IntDistribution`` over its choice indices (ordered choices suit TPE's
kernels). The first population is the space's own sampler (new, feasible architectures), enqueued,
so every strategy starts from valid, comparable architectures. Constraint values are set on each trial with
``Trial.set_constraint``, which both samplers read (feasible when all are <= 0).

What the samplers do not know, the adapter does (measured on NB201, benchmarks/README.md):

* **The run's history.** A sampler re-proposes architectures the run has evaluated (an optuna-nsga2
  run made 15,680 proposals for 916 distinct architectures; optuna-tpe repeated 68 % of its asks).
  A proposal that repeats one, repeats one of the same batch or breaks a constraint (cheap
  metrics) is told ``FAIL`` (the sampler learns nothing false) and asked again, at most
  ``reasks`` times; then the slot takes the nearest new, feasible neighbour of the last proposal
  (one variable changed), enqueued so the sampler sees it as its own trial.
* **TPE's batches.** TPE fits one model per ask and does not see pending results, so it draws
  ``batch`` = min(population, 8) at a time (a model update every 8 evaluations) after a random
  start of min(population, 16) (``n_startup_trials`` the same), not a whole population of each.
* **TPE's cost.** Each ask refits over every trial (O(n) per ask, minutes at 2,000 trials), so the
  sampler sees a window of ``WINDOW`` trials: the best half by constrained non-domination rank
  (TPE's "good" set is at most the best 25, so it is unchanged) and a seeded uniform sample of the
  rest, in their original order.
"""
from __future__ import annotations

import warnings

import numpy as np
import optuna
from optuna.distributions import IntDistribution
from optuna.trial import TrialState

from nas.search.base import STRATEGIES, Problem, constrained_rank, fill, neighbours

optuna.logging.set_verbosity(optuna.logging.WARNING)

WINDOW = 128  # trials TPE fits its densities on
TPE_BATCH, TPE_START = 8, 16


class _OptunaSearcher:
    def __init__(self, problem: Problem, sampler: optuna.samplers.BaseSampler, *, seed: int, population: int,
                 batch: int | None = None, start: int | None = None, reasks: int = 8, window: int | None = None):
        self.problem, self.sampler = problem, sampler
        self.batch, self.reasks, self.window = batch or population, reasks, window
        self.rng = np.random.default_rng([seed, 1])  # neighbours and window samples: apart from the sampler's
        self.directions = ["minimize"] * problem.n_obj
        self.study = optuna.create_study(directions=self.directions, sampler=sampler)
        self.dists = {n: IntDistribution(0, int(s) - 1) for n, s in zip(problem.names, problem.sizes)}
        rng0, n0 = np.random.default_rng(seed), start or population
        first = fill(problem, n0, lambda k: problem.sample(rng0, k), relax=True)
        if len(first) < n0:  # a space smaller than the population: repeats are answered from the log
            first = np.concatenate([first, problem.sample(rng0, n0 - len(first))])
        for x in first:
            self.study.enqueue_trial(self._params(x))
        self._queued = len(first)  # optuna asks enqueued trials first, in order
        self._pending: list = []
        self.done: list[optuna.trial.FrozenTrial] = []  # every completed trial, for the window
        self._base = self._since = 0  # trials the current study started with; len(done) then

    def _params(self, x: np.ndarray) -> dict[str, int]:
        return {n: int(v) for n, v in zip(self.problem.names, x)}

    def _vector(self, trial) -> np.ndarray:
        params = trial.params  # a deep copy per access
        return np.array([params[n] for n in self.problem.names], dtype=np.int64)

    def ask(self) -> np.ndarray:
        self._slide_window()
        chosen: list[np.ndarray] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            for _ in range(self.batch):
                trial = self._ask_one(np.array(chosen, dtype=np.int64).reshape(-1, self.problem.n_var))
                if trial is None:
                    break  # nothing new and feasible left to propose
                self._pending.append(trial)
                chosen.append(self._vector(trial))
        return np.array(chosen, dtype=np.int64).reshape(-1, self.problem.n_var)

    def _ask_one(self, chosen: np.ndarray):
        last = None
        for _ in range(max(self.reasks, 1)):
            trial = self.study.ask(self.dists)
            if self._queued:  # one we enqueued (the first population, a replacement): chosen already
                self._queued -= 1
                return trial
            x = self._vector(trial)
            if self.problem.usable(x[None], chosen)[0]:
                return trial
            self.study.tell(trial, state=TrialState.FAIL)
            last = x
        y = fill(self.problem, 1, lambda k: neighbours(self.problem, self.rng, np.repeat(last[None], k, 0)), chosen,
                 rounds=4)
        if not len(y):
            y = fill(self.problem, 1, lambda k: self.problem.sample(self.rng, k), chosen, relax=True)
        if not len(y):
            return None
        self.study.enqueue_trial(self._params(y[0]))  # nothing else waits: the first population is asked first
        return self.study.ask(self.dists)

    def tell(self, x: np.ndarray, f: np.ndarray, g: np.ndarray) -> None:
        for trial, fi, gi in zip(self._pending, f, g):
            for j, v in enumerate(gi):
                trial.set_constraint(f"c{j}", float(v))
            self.done.append(self.study.tell(trial, [float(v) for v in fi]))
        self._pending = []

    def _slide_window(self) -> None:
        """Refit TPE on a bounded window once the study outgrows it by half (see the module docstring)."""
        if self.window is None or self._base + len(self.done) - self._since <= self.window * 3 // 2:
            return
        n = len(self.done)
        f = np.array([t.values for t in self.done], dtype=float)
        g = np.array([[t.constraints.get(f"c{j}", 0.0) for j in range(self.problem.n_constr)]
                      for t in self.done], dtype=float).reshape(n, -1)
        order = np.lexsort((np.arange(n), constrained_rank(f, g)))
        best = order[: self.window // 2]
        rest = np.setdiff1d(np.arange(n), best)
        keep = np.sort(np.concatenate([best, self.rng.choice(rest, size=self.window - best.size, replace=False)]))
        self.study = optuna.create_study(directions=self.directions, sampler=self.sampler)
        self.study.add_trials([self.done[i] for i in keep])
        self._base, self._since, self._queued = len(keep), n, 0


@STRATEGIES.register("optuna-nsga2")
def optuna_nsga2(problem: Problem, *, seed: int, population: int) -> _OptunaSearcher:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    return _OptunaSearcher(problem, sampler, seed=seed, population=population)


@STRATEGIES.register("optuna-tpe")
def optuna_tpe(problem: Problem, *, seed: int, population: int) -> _OptunaSearcher:
    start = min(population, TPE_START)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=start, constant_liar=True)
    # one proposal per slot: a TPE ask costs a refit, a repeat is cheaper to replace by a neighbour
    return _OptunaSearcher(problem, sampler, seed=seed, population=population, batch=min(population, TPE_BATCH),
                           start=start, reasks=1, window=WINDOW)
