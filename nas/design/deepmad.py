"""Solving the DeepMAD program: maximise score (entropy - depth penalty) subject to hard budgets.

    max_x  score(x)   s.t.  flops(x) <= F,  params(x) <= P,  max_j rho_j(x) <= rho0,  [layers(x) <= Lmax]

over the solver grid of the space (``DeepMADSpace.vars``; ``to_genomes`` applies the original
mutator's rules: widths multiples of 8 and non-decreasing, out <= 4 in, out/10 <= btn <= out, the
bottleneck-ratio grid, first super-block at most 3 deep, kernels that fit their feature map).

* ``solver="mp"``: scipy's ``differential_evolution``, a mixed-integer MP solver (``integrality`` on
  every variable, the budgets as one vectorised ``NonlinearConstraint``, the whole population
  scored per call), seeded with the original config's starting structure, then a best-improvement
  coordinate search on the integer grid (steps of +-1 and +-2 per variable) until no step improves.
  Why this one, with the numbers that decided it: docs/deepmad.md.
* ``solver="evolution"``: the original TinyNAS search (population of copies of the seed, uniform
  random parent, two block mutations with the mutator's rules, children over budget rejected,
  the population kept as the best distinct structures), generational in batches of the population
  size so the objective runs vectorised; it stops after ``iterations`` children or ``time_limit``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from nas.arch import GENOME_DTYPE
from nas.design.deepmad_objective import Objective, evaluate
from nas.errors import UserError
from nas.spaces.deepmad import DeepMADSpace, smart_round

BUDGET_COLUMN = {"flops": "flops", "params": "params_backbone", "rho": "rho", "layers": "layers"}
FLAGS = {"flops": "--max-flops", "params": "--max-params", "rho": "--rho", "layers": "--max-layers"}


@dataclass(frozen=True)
class Budgets:
    flops: float
    params: float
    rho: float
    layers: float | None = None

    def items(self) -> list[tuple[str, float]]:
        return [(k, v) for k, v in (("flops", self.flops), ("params", self.params), ("rho", self.rho),
                                    ("layers", self.layers)) if v is not None]

    def violation(self, m: dict[str, np.ndarray]) -> np.ndarray:
        """(n, k): value / budget - 1 per budget (feasible where all <= 0)."""
        return np.stack([m[BUDGET_COLUMN[k]] / v - 1.0 for k, v in self.items()], axis=1)


@dataclass
class Solution:
    genome: np.ndarray
    metrics: dict[str, Any]
    solve_s: float  # wall seconds
    evaluated: int
    candidates: list[tuple[np.ndarray, dict[str, Any]]] = field(default_factory=list)  # what the run log keeps
    cpu_s: float = 0.0  # CPU seconds of this process (the solvers are single-threaded numpy)


class Scorer:
    """The objective over grid vectors, vectorised, counting the structures it scored."""

    def __init__(self, space: DeepMADSpace, budgets: Budgets, objective: Objective):
        self.space, self.budgets, self.objective = space, budgets, objective
        self.evaluated = 0

    def __call__(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        genomes = self.space.to_genomes(vectors)
        m = evaluate(self.space, genomes, self.objective)
        self.evaluated += len(genomes)
        return genomes, self.budgets.violation(m), m


def check_budgets(space: DeepMADSpace, budgets: Budgets) -> None:
    """Each budget alone must admit some structure of the solver's grid; else name the smallest
    value that could be met (the narrowest, shallowest structure has the least FLOPs, parameters and
    layers; the widest one at depth 1 the least rho)."""
    small = space.to_genomes(np.zeros((1, len(space.vars)), dtype=np.int64))
    wide = np.zeros((1, len(space.vars)), dtype=np.int64)
    wide[0, :] = space.var_sizes - 1
    wide[0, 4::4] = 0  # depth 1 everywhere (every 4th var from 4 is a super-block's L)
    lo = evaluate(space, small)
    lo_rho = min(float(lo["rho"][0]), float(evaluate(space, space.to_genomes(wide))["rho"][0]))
    floor = {"flops": float(lo["flops"][0]), "params": float(lo["params_backbone"][0]), "rho": lo_rho,
             "layers": float(lo["layers"][0])}
    for k, v in budgets.items():
        if v < floor[k]:
            shown = {"flops": _si(floor[k]), "params": _si(floor[k]), "rho": f"{floor[k]:.4f}",
                     "layers": f"{floor[k]:.0f}"}[k]
            raise UserError(f"{FLAGS[k]} {_si(v) if k in ('flops', 'params') else f'{v:g}'} cannot be met in space "
                            f"{space.name!r}: the least {k} a structure there can have is {shown}")


def _si(x: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= div:
            return f"{x / div:.4g}{suffix}"
    return f"{x:.4g}"


def start_vectors(space: DeepMADSpace) -> np.ndarray:
    """The original configs' starting structures, as grid vectors (may be empty)."""
    seeds = list(space.seeds().values())
    if not seeds:
        return np.zeros((0, len(space.vars)), dtype=np.int64)
    return space.to_vectors(np.asarray([a.genome for a in seeds]))


# ---- the MP solver -------------------------------------------------------------------------------
def solve_mp(space: DeepMADSpace, budgets: Budgets, objective: Objective = Objective(), *, seed: int = 0,
             popsize: int = 16, maxiter: int = 5000, restarts: int = 3, time_limit: float | None = None,
             progress: Callable[[int, float], None] | None = None) -> Solution:
    from scipy.optimize import NonlinearConstraint, differential_evolution

    check_budgets(space, budgets)
    scorer = Scorer(space, budgets, objective)
    cache: dict[bytes, tuple[float, np.ndarray]] = {}

    def lookup(xt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.rint(np.atleast_2d(xt.T)).astype(np.int64)  # scipy passes (n_var, S) when vectorised
        keys = [row.tobytes() for row in x]
        if not keys:
            return np.zeros(0), np.zeros((0, len(budgets.items())))
        todo = [i for i, k in enumerate(keys) if k not in cache]
        if todo:
            _, viol, m = scorer(x[todo])
            for j, i in enumerate(todo):
                cache[keys[i]] = (float(m["score"][j]), viol[j])
        f = np.array([cache[k][0] for k in keys])
        g = np.stack([cache[k][1] for k in keys])
        return f, g

    n_var = len(space.vars)
    cap = depth_cap(space, budgets)
    bounds = [(0, int(s) - 1) for s in space.var_sizes]
    if cap is not None:  # the L variables of super-blocks 2.. (every 4th from 8: out, btn, k, L per block)
        for j in range(8, n_var, 4):
            bounds[j] = (0, min(bounds[j][1], cap - 1))
    starts = start_vectors(space)
    t0, c0 = time.perf_counter(), time.process_time()
    gen = [0]
    best_seen = [-math.inf]

    def callback(intermediate_result) -> bool:
        gen[0] += 1
        f, g = lookup(np.asarray(intermediate_result.x)[:, None])
        if (g <= 0).all():
            best_seen[0] = max(best_seen[0], float(f[0]))
        if progress is not None:
            progress(gen[0], best_seen[0])
        return time_limit is not None and time.perf_counter() - t0 > time_limit

    finals, populations = [], []
    for r in range(restarts):  # independent runs from different Latin-hypercube starts; the best wins
        rng = np.random.default_rng([seed, r])
        init = _latin(rng, popsize * n_var, space.var_sizes)
        init[: len(starts)] = starts[: len(init)]
        res = differential_evolution(
            lambda xt: -lookup(xt)[0], bounds, integrality=np.ones(n_var, dtype=bool), popsize=popsize,
            maxiter=maxiter, init=init, rng=rng, polish=False, vectorized=True, updating="deferred", tol=1e-6,
            mutation=(0.5, 1.0), recombination=0.9,
            constraints=NonlinearConstraint(lambda xt: lookup(xt)[1].T, -np.inf, 0.0), callback=callback)
        finals.append(_climb(scorer, np.rint(res.x).astype(np.int64)))
        populations.append(np.rint(res.population).astype(np.int64))
        if time_limit is not None and time.perf_counter() - t0 > time_limit:
            break
    _, viol, m = scorer(np.stack(finals))
    f = np.where((viol <= 0).all(1), m["score"], -np.inf)
    x = finals[int(np.argmax(f))]
    genome, viol, m = scorer(x[None, :])
    if not (viol <= 0).all():
        worst = [k for k, _ in budgets.items()][int(np.argmax(viol[0]))]
        raise UserError(f"the MP solver found no structure within all budgets together ({FLAGS[worst]} is the "
                        f"hardest); each is reachable alone, so relax one or raise --maxiter")
    candidates = _final_candidates(scorer, np.concatenate(populations), x)
    return Solution(genome[0], _row(m, 0), time.perf_counter() - t0, scorer.evaluated, candidates,
                    time.process_time() - c0)


def _latin(rng: np.random.Generator, n: int, sizes: np.ndarray) -> np.ndarray:
    """Latin-hypercube integer samples over the grid (scipy's own init, made reproducible here)."""
    cols = [(rng.permutation(n) + rng.random(n)) / n * s for s in sizes]
    return np.clip(np.floor(np.stack(cols, axis=1)), 0, sizes - 1).astype(np.int64)


def _climb(scorer: Scorer, x: np.ndarray, max_steps: int = 200) -> np.ndarray:
    """Best-improvement search over +-1, +-2 steps of one variable, feasible moves only."""
    sizes = scorer.space.var_sizes
    _, viol, m = scorer(x[None, :])
    best = float(m["score"][0]) if (viol <= 0).all() else -math.inf
    for _ in range(max_steps):
        moves = []
        for j in range(len(x)):
            for d in (-2, -1, 1, 2):
                if 0 <= x[j] + d < sizes[j]:
                    y = x.copy()
                    y[j] += d
                    moves.append(y)
        cand = np.stack(moves)
        _, viol, m = scorer(cand)
        f = np.where((viol <= 0).all(1), m["score"], -np.inf)
        i = int(np.argmax(f))
        if not f[i] > best + 1e-9:
            break
        x, best = cand[i], float(f[i])
    return x


def _final_candidates(scorer: Scorer, population: np.ndarray, x: np.ndarray) -> list:
    """The distinct structures of the final population plus the answer, for the run log."""
    vectors = np.concatenate([np.rint(np.atleast_2d(population)).astype(np.int64), x[None, :]])
    genomes, _, m = scorer(vectors)
    _, first = np.unique(genomes, axis=0, return_index=True)
    return [(genomes[i], _row(m, i)) for i in sorted(first)]


def _row(m: dict[str, np.ndarray], i: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in m.items():
        out[k] = v[i].tolist() if v.ndim > 1 else float(v[i])
    return out


# ---- the original's evolutionary search ------------------------------------------------------------
def solve_evolution(space: DeepMADSpace, budgets: Budgets, objective: Objective = Objective(), *, seed: int = 0,
                    population: int = 256, iterations: int = 500_000, block_mutations: int = 2,
                    time_limit: float | None = None, start: np.ndarray | None = None,
                    progress: Callable[[int, float], None] | None = None) -> Solution:
    """TinyNAS's search on the same objective, run by the engine's top-k evolution searcher
    (``nas.search.evolution.TopKEvolution``, as ViT-ResNAS's and ElasticViT's searches): the
    population is the seed structure, every generation ``population`` children of random parents
    among the best ``population`` scored so far, each made by the original's block mutator
    (``mutate``: ``block_mutations`` blocks), over-budget children rejected before scoring and
    repeats never scored twice. ``iterations`` counts children made, rejected and repeated ones
    included, as the original counts them. ``start``: the genome the population starts as (default the
    space's first seed structure, else the smallest structure); it must meet the budgets."""
    from nas.search.base import Problem
    from nas.search.evolution import TopKEvolution

    check_budgets(space, budgets)
    t0, c0 = time.perf_counter(), time.process_time()
    if start is None:
        seeds = space.seeds()
        start = (np.asarray(next(iter(seeds.values())).genome) if seeds
                 else space.to_genomes(np.zeros((1, len(space.vars)), dtype=np.int64))[0])
    start = np.asarray(start, dtype=GENOME_DTYPE)[None, :]
    m0 = evaluate(space, start, objective)
    if not (budgets.violation(m0) <= 0).all():
        raise UserError(f"the evolution solver starts from the seed structure, which is over the budgets "
                        f"(flops {_si(float(m0['flops'][0]))}, params {_si(float(m0['params_backbone'][0]))}, "
                        f"rho {float(m0['rho'][0]):.3f}); use --solver mp or larger budgets")
    scored: set[bytes] = set()
    checked: dict[bytes, tuple[float, np.ndarray]] = {}  # this generation's children: score and violations

    def identify(x: np.ndarray) -> list[bytes]:
        return [r.tobytes() for r in np.ascontiguousarray(x, dtype=GENOME_DTYPE)]

    def feasible(x: np.ndarray) -> np.ndarray:  # scores the children once: the budgets need rho anyway
        x = np.asarray(x, dtype=GENOME_DTYPE)
        m = evaluate(space, x, objective)
        viol = budgets.violation(m)
        checked.update(zip(identify(x), zip(m["score"].tolist(), viol)))
        return (viol <= 0).all(1)

    cap = depth_cap(space, budgets)
    made = 0  # children made, as the original counts its iterations (rejected and repeated ones too)

    def children(rng: np.random.Generator, parents: np.ndarray) -> np.ndarray:
        nonlocal made
        parents = parents[: max(0, iterations - made)]  # the budget also bounds the redraws inside one ask
        made += len(parents)
        return mutate(space, parents, rng, block_mutations, cap) if len(parents) else parents.copy()

    problem = Problem(  # the searcher's vectors are the genomes themselves: the mutator works on blocks
        names=tuple(f"gene{i}" for i in range(space.n_genes)), sizes=np.asarray(space.gene_sizes), n_obj=1,
        n_constr=len(budgets.items()), sample=lambda rng, n: np.repeat(start, n, axis=0), identify=identify,
        is_known=lambda ids: np.fromiter((i in scored for i in ids), dtype=bool, count=len(ids)), feasible=feasible)
    searcher = TopKEvolution(problem, seed=seed, population=population, parents=population, mutations=population,
                             crossovers=0, initial=start, overdraw=1, mutate=children)
    best_g, best_f, evaluated = start[0], float(m0["score"][0]), 0
    while made < iterations and (time_limit is None or time.perf_counter() - t0 < time_limit):
        x = np.asarray(searcher.ask(), dtype=GENOME_DTYPE)
        if not len(x):
            break  # the budget ran out inside the ask, or every child of the best is scored already
        ids = identify(x)
        if any(i not in checked for i in ids):  # the initial population is not drawn through `feasible`
            feasible(x)
        f = np.array([checked[i][0] for i in ids])
        searcher.tell(x, -f[:, None], np.stack([checked[i][1] for i in ids]))
        checked.clear()
        scored.update(ids)
        evaluated += len(x)
        i = int(np.argmax(f))  # every child told is within the budgets (rejected before scoring)
        if f[i] > best_f:
            best_g, best_f = x[i], float(f[i])
        if progress is not None:
            progress(made, best_f)
    pop = np.asarray(searcher.top(), dtype=GENOME_DTYPE) if searcher.best is not None else start
    m = evaluate(space, pop, objective)
    candidates = [(pop[i], _row(m, i)) for i in range(len(pop))]
    mb = evaluate(space, best_g[None, :], objective)
    return Solution(best_g, _row(mb, 0), time.perf_counter() - t0, evaluated, candidates, time.process_time() - c0)


def depth_cap(space: DeepMADSpace, budgets: Budgets) -> int | None:
    """With a layer budget the original caps every super-block after the first at
    layers // 3 // (n - 1) inner blocks (its mutator's ``budget_layers // 3 // (len - 2)``)."""
    if budgets.layers is None:
        return None
    return max(1, int(budgets.layers // 3 // (space.n_blocks - 1)))


def mutate(space: DeepMADSpace, genomes: np.ndarray, rng: np.random.Generator, times: int = 2,
           cap: int | None = None) -> np.ndarray:
    """The original mutator: ``times`` times, a random block (stem or super-block; the head is never
    mutated) changes one property by the space's rules; ``cap`` bounds later super-blocks' depth."""
    s = space.values(genomes)
    r = space.rules
    stem, out, btn, k, L = s.stem.copy(), s.out.copy(), s.btn.copy(), s.k.copy(), s.L.copy()
    nb = space.n_blocks
    scales = np.asarray(r["channel_scales"])
    kernels = np.asarray(r["kernels"])
    for i in range(len(genomes)):
        for _ in range(times):
            b = int(rng.integers(nb + 1)) - 1  # -1: the stem
            if b < 0:
                c = int(smart_round(scales[rng.integers(len(scales))] * stem[i]))
                c = min(max(c, r["stem_min"]), r["stem_max"], int(out[i, 0]))
                if r["out_max_ratio"]:  # keep the first super-block within out <= 4 in
                    c = max(c, _ceil8(out[i, 0] / r["out_max_ratio"]))
                stem[i] = c
                continue
            cin = int(stem[i]) if b == 0 else int(out[i, b - 1])
            op = ("out", "k", "btn", "L")[int(rng.integers(4))]
            if op == "out":
                ratio = btn[i, b] / out[i, b]
                o = min(int(smart_round(scales[rng.integers(len(scales))] * out[i, b])), space.max_channels)
                if r["out_max_ratio"]:
                    o = min(o, int(r["out_max_ratio"] * cin))
                o = max(o, cin)
                if b < nb - 1:
                    o = min(o, int(out[i, b + 1]))
                    if r["out_max_ratio"]:  # the next block's input stays at least its out / 4 (rounded up
                        o = max(o, _ceil8(out[i, b + 1] / r["out_max_ratio"]))  # so the rule holds exactly)
                out[i, b] = o
                if space.block == "K1DWSEK1":
                    btn[i, b] = int(smart_round(o * _nearest(r["btn_ratios"], ratio)))
            elif op == "k":
                others = kernels[kernels != k[i, b]]
                if others.size:
                    k[i, b] = others[rng.integers(others.size)]
            elif op == "btn":
                if space.block == "K1DWSEK1":
                    ratios = np.asarray(r["btn_ratios"])
                    cur = _nearest(r["btn_ratios"], btn[i, b] / out[i, b])
                    others = ratios[~np.isclose(ratios, cur)]
                    btn[i, b] = int(smart_round(out[i, b] * others[rng.integers(others.size)]))
                else:
                    btn[i, b] = min(int(smart_round(scales[rng.integers(len(scales))] * btn[i, b])), int(out[i, b]))
            else:
                steps = np.asarray(r["depth_steps"])
                for _attempt in range(len(steps)):
                    new = max(1, int(L[i, b] + steps[rng.integers(len(steps))]))
                    if new != L[i, b]:
                        break
                if b == 0:
                    new = min(new, r["first_block_max_depth"])
                elif cap is not None:
                    new = min(new, cap)
                L[i, b] = min(new, space.max_depth)
            if space.block == "K1KXK1":  # btn <= out after every mutation, not only btn's (as to_genomes)
                btn[i, b] = min(btn[i, b], out[i, b])
            if r["btn_min_ratio"] and btn[i, b] < out[i, b] / r["btn_min_ratio"]:
                btn[i, b] = int(smart_round(out[i, b] / r["btn_min_ratio"]))
    btn = np.clip(btn, 1, space.max_btn)
    g = np.asarray(genomes, dtype=GENOME_DTYPE).copy()
    g[:, space._col("stem.out")] = stem - 1
    g[:, space._block_cols("out")] = out - 1
    g[:, space._block_cols("btn")] = btn - 1
    g[:, space._block_cols("k")] = np.searchsorted(np.asarray(space.kernels), space.fit_kernels(k))
    g[:, space._block_cols("L")] = L - 1
    return g


def _ceil8(x: float) -> int:
    return int(math.ceil(x / 8) * 8)


def _nearest(grid, x: float) -> float:
    grid = np.asarray(grid)
    return float(grid[np.abs(grid - x).argmin()])


# ---- the designer: config, breakdown, run files ---------------------------------------------------
@dataclass(frozen=True)
class DesignConfig:
    """Everything that determines a `nas design` run; written to its config.toml."""

    space: str
    max_flops: float
    max_params: float
    rho: float | None = None  # default: the space's [solver] rho
    max_layers: float | None = None
    solver: str = "mp"
    seed: int = 0
    entropy: str = "code"  # "code" (1/2 log, the released code) or "paper"
    corrected: bool = False  # score at the network's own resolution with true K1DWSEK1 sides
    popsize: int = 16  # mp: differential evolution population per variable
    restarts: int = 3  # mp: independent runs, the best one wins
    maxiter: int = 5000  # mp: generations at most (it stops earlier once converged)
    population: int = 256  # evolution
    iterations: int = 500_000  # evolution: children
    time_limit: float | None = None  # seconds; evolution stops there, mp after the generation running
    fingerprint: str = ""

    def validate(self) -> "DesignConfig":
        if self.solver not in SOLVERS:
            from nas.registry import did_you_mean

            raise did_you_mean(self.solver, SOLVERS, "solver")
        if self.entropy not in ("code", "paper"):
            raise UserError(f"--entropy must be 'code' or 'paper', got {self.entropy!r}")
        for flag, v in (("--max-flops", self.max_flops), ("--max-params", self.max_params), ("--rho", self.rho),
                        ("--max-layers", self.max_layers), ("--time-limit", self.time_limit)):
            if v is not None and not v > 0:
                raise UserError(f"{flag} must be positive, got {v:g}")
        for flag, v in (("--popsize", self.popsize), ("--maxiter", self.maxiter), ("--restarts", self.restarts),
                        ("--population", self.population),
                        ("--iterations", self.iterations)):
            if v < 1:
                raise UserError(f"{flag} must be at least 1, got {v}")
        if not 0 <= self.seed < 2**32:
            raise UserError(f"--seed must be between 0 and 2**32 - 1, got {self.seed}")
        return self

    def budgets(self, space: DeepMADSpace) -> Budgets:
        return Budgets(self.max_flops, self.max_params, self.rho if self.rho is not None else space.rules["rho"],
                       self.max_layers)

    def objective(self) -> Objective:
        return Objective(self.entropy, self.corrected)

    def to_toml(self) -> str:
        from nas.config import dataclass_to_toml

        return dataclass_to_toml(self, "`nas design`; a person")

    @classmethod
    def from_toml(cls, path) -> "DesignConfig":
        from nas.config import dataclass_from_toml

        return dataclass_from_toml(cls, path, "nas design").validate()


SOLVERS = ("mp", "evolution")
JSON_KEYS = ("score", "entropy", "penalty", "rho", "rho_per_stage", "flops", "params", "params_with_fc", "layers",
             "solve_s", "structure")
COLUMNS = ["score", "entropy", "penalty", "rho", "flops", "params", "params_with_fc", "layers", "macs_m", "params_m"]


def breakdown(space: DeepMADSpace, genome, objective: Objective = Objective(), solve_s: float | None = None) -> dict:
    """The score breakdown `nas design --json` prints: plain counts, params without the classifier."""
    g = np.asarray(genome, dtype=GENOME_DTYPE).reshape(1, -1)
    m = evaluate(space, g, objective)
    arch = space.arch(g[0])
    out = {"score": float(m["score"][0]), "entropy": float(m["entropy"][0]), "penalty": float(m["penalty"][0]),
           "rho": float(m["rho"][0]), "rho_per_stage": [float(x) for x in m["rho_per_stage"][0]],
           "flops": float(m["flops"][0]), "params": float(m["params_backbone"][0]),
           "params_with_fc": float(m["params"][0]), "layers": int(m["layers"][0]),
           "solve_s": None if solve_s is None else round(float(solve_s), 3),
           "structure": space.structure(arch)}
    assert tuple(out) == JSON_KEYS
    return out


def _columns_of(row: dict) -> dict[str, float]:
    return {"score": row["score"], "entropy": row["entropy"], "penalty": row["penalty"], "rho": row["rho"],
            "flops": row["flops"], "params": row["params_backbone"], "params_with_fc": row["params"],
            "layers": row["layers"], "macs_m": row["macs"] / 1e6, "params_m": row["params"] / 1e6}


def run_constraints(budgets: Budgets) -> list:
    from nas.objectives import Constraint

    out = [Constraint("flops", budgets.flops, "--max-flops"), Constraint("params", budgets.params, "--max-params"),
           Constraint("rho", budgets.rho, "--rho")]
    if budgets.layers is not None:
        out.append(Constraint("layers", budgets.layers, "--max-layers"))
    return out


def report_objectives() -> list:
    """The score (the design's one objective) and, for drawing it, the two budgeted costs."""
    from nas.objectives import Objective as RunObjective

    return [RunObjective("score", "max", "DeepMAD score"), RunObjective("flops", "min", "FLOPs (the code's count)"),
            RunObjective("params", "min", "parameters without the classifier")]


def preset_columns(space: DeepMADSpace, objective: Objective) -> dict[str, dict[str, float]]:
    """The released structures' COLUMNS, scored by ``objective``: what the report places beside a design."""
    presets = space.presets()
    if not presets:
        return {}
    g = np.asarray([a.genome for a in presets.values()], dtype=GENOME_DTYPE)
    m = evaluate(space, g, objective)
    return {name: _columns_of(_row(m, i)) for i, name in enumerate(presets)}


def design(space: DeepMADSpace, cfg: DesignConfig, progress: Callable[[int, float], None] | None = None):
    """Solve the program; returns a ``nas.design.Design`` whose files hold structure.json."""
    import json

    from nas.design import Design

    budgets = cfg.budgets(space)
    obj = cfg.objective()
    if cfg.solver == "mp":
        sol = solve_mp(space, budgets, obj, seed=cfg.seed, popsize=cfg.popsize, maxiter=cfg.maxiter,
                       restarts=cfg.restarts, time_limit=cfg.time_limit, progress=progress)
    else:
        sol = solve_evolution(space, budgets, obj, seed=cfg.seed, population=cfg.population,
                              iterations=cfg.iterations, time_limit=cfg.time_limit, progress=progress)
    best = breakdown(space, sol.genome, obj, sol.solve_s)
    structure = {"space": space.name, "image_size": space.input_resolution(space.arch(sol.genome)),
                 "structure": best["structure"], "score": {k: v for k, v in best.items() if k != "structure"},
                 "budgets": {k: v for k, v in budgets.items()}, "solver": cfg.solver, "seed": cfg.seed,
                 "evaluated": sol.evaluated, "entropy_form": cfg.entropy, "corrected": cfg.corrected}
    return Design(columns=COLUMNS, objectives=report_objectives()[:1], constraints=run_constraints(budgets),
                  candidates=[(g, _columns_of(r)) for g, r in sol.candidates],
                  files={"structure.json": json.dumps(structure, indent=2) + "\n"},
                  summary={**best, "evaluated": sol.evaluated})
