"""ViT-ResNAS's multi-architecture sampling (Liao et al. 2021, B.3): k subnets per pass.

Every searchable dimension (each search variable: a stage's embedding width, a block's heads,
MLP size, existence) draws its k values as the original's ChannelDrop does: a random permutation
of its enabled choices, repeated until k are taken, so the k sub-batches get distinct choices
where there are enough and each sub-batch is an independent combination across dimensions. The
trainer runs all k in one forward/backward pass (``joint``): example b runs subnet b % k.

Progressive warm-up: at epoch e only the largest ``min(1 + floor(e (K - 1) / W), K)`` of a
dimension's K choices are enabled (W = the space's ``[train] warmup_epochs``); while e <= W the
supernet re-sorts heads and MLP units by L1 importance after every epoch (``rewire_after``).
"""
from __future__ import annotations

import numpy as np

from nas.arch import GENOME_DTYPE
from nas.spaces.base import SearchSpace
from nas.train.samplers import SAMPLERS, Pick, SubnetSampler


@SAMPLERS.register("multi-arch")
class MultiArch(SubnetSampler):
    joint = True  # the trainer runs the picks in one pass, interleaved over the batch

    def __init__(self, space: SearchSpace, rng: np.random.Generator, n: int):
        super().__init__(space, rng, n)
        self.warmup = float((getattr(space, "train_recipe", None) or {}).get("warmup_epochs", 0))

    def enabled(self, epoch: int) -> np.ndarray:
        """How many of each variable's choices (the largest ones) are enabled at ``epoch``."""
        sizes = self.space.var_sizes
        if self.warmup <= 0:
            return sizes.copy()
        return np.minimum(1 + np.floor(epoch * (sizes - 1) / self.warmup).astype(np.int64), sizes)

    def sample(self, epoch: int) -> list[Pick]:
        sizes, on = self.space.var_sizes, self.enabled(epoch)
        vec = np.empty((self.n, len(sizes)), dtype=GENOME_DTYPE)
        for j, (size, k) in enumerate(zip(sizes, on)):
            choices = np.arange(size - k, size)  # search-vector choices are ascending: the largest k
            vec[:, j] = np.resize(self.rng.permutation(choices), self.n)
        return [Pick(self.space.arch(g), "multi", "label") for g in self.space.to_genomes(vec)]

    def rewire_after(self, epoch: int) -> bool:
        return epoch <= self.warmup and self.warmup > 0

    def info(self) -> dict:
        return {}
