"""TrainConfig: everything that determines a supernet training run (written to config.toml)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from nas.config import check_ray_flags, dataclass_from_toml, dataclass_to_toml
from nas.errors import UserError

SAMPLER_DEFAULTS = {  # what each sampler distils by default
    "uniform": dict(subnets=2, alpha_div=False),
    "sandwich": dict(subnets=4, alpha_div=False),
    "complexity": dict(subnets=4, alpha_div=True),
    "elasticvit": dict(subnets=4, alpha_div=True),
    "multi-arch": dict(subnets=2, alpha_div=False),  # ViT-ResNAS: 2 subnets per pass (128 / 64 per GPU)
}
ONE_SUBNET_OK = ("uniform", "multi-arch")


@dataclass(frozen=True)
class TrainConfig:
    space: str
    data: str
    sampler: str = "sandwich"
    subnets: int | None = None  # per step; default per sampler
    steps: int | None = None  # total optimiser steps (or --epochs)
    epochs: float | None = None
    batch_size: int = 128
    lr: float = 2e-3
    min_lr: float = 1e-5
    warmup_steps: int | None = None  # default: 5 % of the steps
    weight_decay: float = 0.05  # on Linear weights only (ElasticViT: none on conv, norm, bias)
    label_smoothing: float = 0.1
    alpha_div: bool | None = None  # in-place distillation with AlphaNet's alpha-divergence (else soft CE)
    teachers: tuple[str, ...] = ()  # timm "name:checkpoint" models; their mean prediction replaces labels
    teacher_temperature: float = 1.0
    ema: float | None = None  # EMA decay of the supernet weights (evaluation uses the EMA)
    agc: float | None = None  # adaptive gradient clipping factor (ElasticViT: 0.1)
    accumulate: int = 1  # gradient accumulation: micro-batches per optimiser step
    heldout: int = 5000  # training images set aside for search-time accuracy
    bn_batches: int = 8  # batches for BN recalibration before each evaluation
    eval_every: int | None = None  # steps between evaluations (default: every epoch and at the end)
    eval_random: int = 2  # random subnets evaluated besides the smallest and the largest
    eval_images: int | None = None  # held-out images used by the training-time evaluations (default: all)
    checkpoint_every: int = 50  # steps
    max_bad_steps: int = 10  # consecutive non-finite losses before the run stops
    arch: str | None = None  # train this one network of the space, no weight sharing (a preset or arch string)
    retokenize: float | None = None  # As-ViT progressive re-tokenisation: share of steps on coarse tokens
    patch_mixup: bool = False  # ViT-ResNAS patch-token mixup with the patch head (multi-arch sampler)
    seed: int = 0
    threads: int = 2
    # Ray Train (nas/train/distributed.py). Unlike a search's, the worker count changes the result
    # (each step averages `workers` shards), so it is stored resolved and a resume keeps it.
    ray: str | None = None  # "local" or a cluster address
    workers: int | None = None
    gpus_per_worker: float | None = None

    def resolved(self) -> "TrainConfig":
        d = SAMPLER_DEFAULTS.get(self.sampler, {})
        return dataclasses.replace(
            self,
            subnets=self.subnets if self.subnets is not None else d.get("subnets", 4),
            alpha_div=self.alpha_div if self.alpha_div is not None else d.get("alpha_div", False),
        )

    def validate(self) -> "TrainConfig":
        if (self.steps is None) == (self.epochs is None):
            raise UserError("give exactly one of --steps and --epochs")
        if self.steps is not None and self.steps <= 0 or self.epochs is not None and self.epochs <= 0:
            raise UserError("--steps/--epochs must be positive")
        if self.sampler not in SAMPLER_DEFAULTS:
            from nas.registry import did_you_mean

            raise did_you_mean(self.sampler, SAMPLER_DEFAULTS, "sampler")
        least = 1 if self.sampler in ONE_SUBNET_OK else 2
        if self.subnets is not None and self.subnets < least:
            raise UserError(f"--subnets must be at least {least} for {self.sampler}")
        if self.sampler == "multi-arch" and self.subnets is not None and self.subnets > self.batch_size:
            raise UserError(f"--subnets {self.subnets} exceeds --batch-size {self.batch_size}: every subnet needs examples")
        for name in ("batch_size", "accumulate", "bn_batches", "checkpoint_every", "max_bad_steps", "threads"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise UserError(f"--lr must be positive, got {self.lr}")
        if self.ema is not None and not 0 < self.ema < 1:
            raise UserError(f"--ema must be a decay in (0, 1), got {self.ema}")
        if self.patch_mixup and self.sampler != "multi-arch":
            raise UserError("--patch-mixup trains ViT-ResNAS's patch head: it needs --sampler multi-arch")
        if self.patch_mixup and self.teachers:
            raise UserError("--patch-mixup mixes the images after the teachers saw them: use one or the other")
        if self.retokenize is not None and not 0 < self.retokenize < 1:
            raise UserError(f"--retokenize must be a share of the steps in (0, 1), got {self.retokenize}")
        if not 0 <= self.seed < 2**32:
            raise UserError(f"--seed must be between 0 and 2**32 - 1, got {self.seed}")
        check_ray_flags(self.ray, self.workers, self.gpus_per_worker)
        return self

    def to_toml(self) -> str:
        return dataclass_to_toml(self, "`nas train`; `nas train --resume`")

    @classmethod
    def from_toml(cls, path: Path) -> "TrainConfig":
        return dataclass_from_toml(cls, path, "nas train", tuples=("teachers",))
