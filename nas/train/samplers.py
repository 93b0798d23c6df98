"""Which subnets a training step trains, and what each learns from.

* ``uniform``: n random subnets, each learns from the labels.
* ``sandwich`` (BigNAS / AttentiveNAS): the largest (labels) + the smallest + n-2 random subnets,
  which learn from the largest's predictions (in-place distillation).
* ``complexity``: ElasticViT's complexity-aware sampling. MACs levels with windows [L, L + w];
  the level moves by a random walk of at most one step per training step, so consecutive steps
  train subnets of similar size (the gradient-conflict fix of the paper); n-1 subnets drawn
  uniformly inside the level's window, and not below the level's min subnet in any dimension,
  learn from the labels, plus the level's min subnet, which learns from their mean prediction
  (alpha-divergence in the paper).
* ``elasticvit``: complexity-aware plus performance-aware sampling (the paper's recipe): one
  memory bank per level of (subnet, -CE) pairs; with a probability that rises during training
  (0.2 + 0.15 per 100 epochs), a level subnet is drawn from the bank (softmax(-CE) weights);
  otherwise up to 5 random candidates are compared and the one that is wider and shallower in
  its transformer stages (relative to an anchor) is kept; explored subnets enter the bank when it
  has room or they beat its worst entry; banks are re-scored periodically.

Levels, windows, min subnets and bank sizes come from the space's ``[train]`` table.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from nas.arch import Arch
from nas.registry import Registry
from nas.spaces.base import SearchSpace


@dataclass(frozen=True)
class Pick:
    arch: Arch
    role: str  # "largest", "smallest", "random", "level", "bank", "min"
    target: str  # "label": the labels (or the teachers); "largest" / "mean": in-place distillation


SAMPLERS: Registry = Registry("sampler")


class SubnetSampler:
    """Base: uniform random subnets. ``rng`` is owned by the sampler and checkpointed with it."""

    def __init__(self, space: SearchSpace, rng: np.random.Generator, n: int):
        self.space, self.rng, self.n = space, rng, n

    def sample(self, epoch: int) -> list[Pick]:
        return [Pick(self.space.arch(g), "random", "label") for g in self.space.sample(self.rng, self.n)]

    def observe(self, pick: Pick, neg_loss: float) -> None:
        """Told the -CE (finite) of every trained pick on the step's training batch."""

    def end_epoch(self) -> None:
        pass

    def rescore(self, score: Callable[[Arch], float], full: bool) -> None:
        """Re-evaluate banked subnets with ``score`` (-CE on the current batch)."""

    def info(self) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]


SAMPLERS.register("uniform")(SubnetSampler)


@SAMPLERS.register("sandwich")
class Sandwich(SubnetSampler):
    def sample(self, epoch: int) -> list[Pick]:
        picks = [Pick(self.space.largest(), "largest", "label"), Pick(self.space.smallest(), "smallest", "largest")]
        for g in self.space.sample(self.rng, max(0, self.n - 2)):
            picks.append(Pick(self.space.arch(g), "random", "largest"))
        return picks


@SAMPLERS.register("complexity")
class ComplexityAware(SubnetSampler):
    def __init__(self, space: SearchSpace, rng: np.random.Generator, n: int):
        super().__init__(space, rng, n)
        recipe = train_recipe(space)
        self.levels: list[float] = recipe["levels"]
        self.window: float = recipe["level_window"]
        self.min_archs: dict[float, Arch] = recipe["min_archs"]
        self.level = 0

    def _walk(self) -> None:
        """One step of the level walk: -1, 0 or +1 uniformly; at an end, staying counts twice."""
        last = len(self.levels) - 1
        steps = [0, 0, 1] if self.level == 0 else [-1, 0, 0] if self.level == last else [-1, 0, 1]
        self.level += steps[int(self.rng.integers(3))]

    def in_level(self, k: int) -> Arch:
        """A random subnet in the level's MACs window, bounded below by the level's min subnet in
        every dimension where the space has a min-arch table (ElasticViT's fallback sampler,
        ``sample_random_subnet_from_range``; its offline tables hold such subnets too)."""
        lo = self.levels[self.level] * 1e6
        hi = lo + self.window * 1e6
        floor = self.min_arch() if self.min_archs and hasattr(self.space, "sample_above") else None
        for _ in range(200):
            g = self.space.sample(self.rng, 4096) if floor is None else self.space.sample_above(self.rng, 4096, floor)
            macs = self.space.cost(g)["macs"]
            hit = np.flatnonzero((macs >= lo) & (macs <= hi))
            if hit.size:
                return self.space.arch(g[hit[0]])
        raise RuntimeError(f"no architecture of space {self.space.name!r} has {lo / 1e6:g}-{hi / 1e6:g} M MACs; "
                           "fix the [train] levels of the space file")

    def min_arch(self) -> Arch:
        """The level's min subnet: the smallest key k with level <= k + window (ElasticViT's
        select_min_arch), else the largest key; the space's smallest without a table."""
        if not self.min_archs:
            return self.space.smallest()
        level = self.levels[self.level]
        for k in sorted(self.min_archs):
            if level <= k + self.window:
                return self.min_archs[k]
        return self.min_archs[max(self.min_archs)]

    def level_picks(self, epoch: int) -> list[Pick]:
        return [Pick(self.in_level(i), "level", "label") for i in range(self.n - 1)]

    def sample(self, epoch: int) -> list[Pick]:
        self._walk()
        return self.level_picks(epoch) + [Pick(self.min_arch(), "min", "mean")]

    def end_epoch(self) -> None:
        self._walk()

    def info(self) -> dict:
        return {"level": self.levels[self.level]}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "level": self.level}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.level = state["level"]


@SAMPLERS.register("elasticvit")
class PerformanceAware(ComplexityAware):
    def __init__(self, space: SearchSpace, rng: np.random.Generator, n: int):
        super().__init__(space, rng, n)
        recipe = train_recipe(space)
        self.bank_size, self.big_bank_size, self.big_from = recipe["bank_size"], recipe["big_bank_size"], recipe["big_bank_from"]
        self.explore = recipe["explore"]
        self.rate_start, self.rate_inc, self.rate_every = recipe["bank_rate"], recipe["bank_rate_inc"], recipe["bank_rate_every"]
        self.banks: list[list[tuple[tuple[int, ...], float]]] = [[] for _ in self.levels]

    def capacity(self, k: int) -> int:
        return self.bank_size if self.levels[k] < self.big_from else self.big_bank_size

    def rate(self, epoch: int) -> float:
        return min(1.0, self.rate_start + self.rate_inc * (epoch // self.rate_every))

    def level_picks(self, epoch: int) -> list[Pick]:
        picks = []
        for _ in range(self.n - 1):
            bank = self.banks[self.level]
            if self.rng.random() < self.rate(epoch) and len(bank) > self.capacity(self.level) // 2:
                scores = np.array([s for _, s in bank])
                w = np.exp(scores - scores.max())
                choice = bank[int(self.rng.choice(len(bank), p=w / w.sum()))][0]
                picks.append(Pick(self.space.arch(np.asarray(choice)), "bank", "label"))
                continue
            n_cand = 1 if len(bank) < self.capacity(self.level) // 2 else self.explore
            cands = [self.in_level(i) for i in range(n_cand)]
            picks.append(Pick(cands[int(np.argmin(self.preference(cands)))] if n_cand > 1 else cands[0], "level", "label"))
        return picks

    def preference(self, cands: list[Arch]) -> np.ndarray:
        """ElasticViT's _importance_comparison: MACs with the anchor's transformer-stage widths
        minus MACs with the anchor's transformer-stage depths; the minimum is the candidate whose
        transformer stages are widest and shallowest relative to the anchor. The anchor is the
        best subnet of the first bank, or the space's smallest subnet."""
        first = self.banks[0]
        if self.level > 0 and first:
            anchor = np.asarray(max(first, key=lambda e: e[1])[0])
        else:  # the paper's arch_sampling(mode="min"): the space's smallest subnet
            anchor = np.asarray(self.space.smallest().genome)
        g = self.space.genomes(cands)
        t_blocks = [b for b, blk in enumerate(self.space.blocks) if blk.kind == "transformer"]
        with_widths = g.copy()
        with_depths = g.copy()
        for b in t_blocks:
            with_widths[:, self.space.g_width[b]] = anchor[self.space.g_width[b]]
            gd = self.space.g_depth[b]
            with_depths[:, gd] = anchor[gd]
            for pos in self.space.g_micro[b].values():  # new layers copy the stage's first layer
                with_depths[:, pos] = with_depths[:, [pos[0]]]
        with_widths = self.space.canonicalize(self.space.repair(with_widths))
        with_depths = self.space.canonicalize(self.space.repair(with_depths))
        return self.space.cost(with_widths)["macs"].astype(float) - self.space.cost(with_depths)["macs"].astype(float)

    def observe(self, pick: Pick, neg_loss: float) -> None:
        if pick.role != "level":
            return
        bank, cap = self.banks[self.level], self.capacity(self.level)
        entry = (tuple(int(x) for x in pick.arch.genome), float(neg_loss))
        if any(e[0] == entry[0] for e in bank):
            return
        if len(bank) < cap:
            bank.append(entry)
        else:
            worst = int(np.argmin([s for _, s in bank]))
            if bank[worst][1] < entry[1]:
                bank[worst] = entry

    def rescore(self, score: Callable[[Arch], float], full: bool) -> None:
        ids = range(len(self.banks)) if full else [self.level]
        for k in ids:
            lo, hi = self.levels[k] * 1e6, (self.levels[k] + self.window) * 1e6
            kept = []
            for genome, _ in self.banks[k]:
                arch = self.space.arch(np.asarray(genome))
                macs = float(self.space.cost(np.asarray([genome]))["macs"][0])
                if full and not lo <= macs <= hi:
                    continue  # evicted: outside the level's window
                value = float(score(arch))
                if np.isfinite(value):  # a non-finite score would poison the softmax draw
                    kept.append((genome, value))
            self.banks[k] = kept

    def info(self) -> dict:
        return {**super().info(), "banks": "|".join(str(len(b)) for b in self.banks)}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "banks": [[(list(g), s) for g, s in b] for b in self.banks]}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.banks = [[(tuple(g), s) for g, s in b] for b in state["banks"]]


def train_recipe(space: SearchSpace) -> dict:
    """The space's ``[train]`` table with defaults: levels (M MACs; default the 10-90th
    percentiles of a random sample), level_window, min_archs, bank sizes and rates."""
    recipe = dict(getattr(space, "train_recipe", {}) or {})
    if "levels" not in recipe:
        macs = space.cost(space.sample(np.random.default_rng(0), 20000))["macs"] / 1e6
        recipe["levels"] = [float(np.round(v, 2)) for v in np.percentile(macs, [10, 25, 40, 55, 70, 85])]
        recipe.setdefault("level_window", float(np.round((macs.max() - macs.min()) / 40, 3)))
    recipe.setdefault("level_window", 20.0)
    recipe.setdefault("min_archs", {})
    recipe.setdefault("bank_size", 150)
    recipe.setdefault("big_bank_size", 50)
    recipe.setdefault("big_bank_from", 500.0)
    recipe.setdefault("explore", 5)
    recipe.setdefault("bank_rate", 0.2)
    recipe.setdefault("bank_rate_inc", 0.15)
    recipe.setdefault("bank_rate_every", 100)
    return recipe


def make_sampler(name: str, space: SearchSpace, rng: np.random.Generator, n: int) -> SubnetSampler:
    import nas.train.multi_arch  # noqa: F401  (registers "multi-arch")

    return SAMPLERS.get(name)(space, rng, n)
