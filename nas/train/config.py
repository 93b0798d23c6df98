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
    weight_decay: float = 0.05  # ElasticViT: on every 2-D+ weight but the first conv's and MBConvs' (trainer._param_groups)
    label_smoothing: float = 0.1
    alpha_div: bool | None = None  # in-place distillation with AlphaNet's alpha-divergence (else soft CE)
    teachers: tuple[str, ...] = ()  # timm "name:checkpoint" models; their mean prediction replaces labels
    teacher_temperature: float | None = None  # default as ElasticViT: 0.2 for an ensemble, 1 for one teacher
    # None: the space's [train] recipe (elasticvit: the original's EMA 0.99985 and AGC 0.1), else off;
    # 0 turns either off
    ema: float | None = None  # EMA decay of the supernet weights (evaluation uses the EMA)
    agc: float | None = None  # adaptive gradient clipping factor
    accumulate: int = 1  # gradient accumulation: micro-batches per optimiser step
    heldout: int = 5000  # training images set aside for search-time accuracy
    # BN recalibration before each evaluation; None: the space's recipe (elasticvit: the original's
    # 129 batches of 96 in training, 65 in search), else 8 (and as many in search) of 128
    bn_batches: int | None = None
    bn_batch: int | None = None
    search_bn_batches: int | None = None
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

    def resolved(self, recipe: dict | None = None) -> "TrainConfig":
        """Defaults filled in: the sampler's, then the space's ``[train]`` recipe (``recipe``) for
        EMA, AGC and BN recalibration, else the fast CPU ones (no EMA, no AGC, 8 x 128 images)."""
        d = SAMPLER_DEFAULTS.get(self.sampler, {})
        r = recipe or {}
        bn = self.bn_batches if self.bn_batches is not None else int(r.get("bn_batches", 8))
        pick = lambda v, key, default: v if v is not None else r.get(key, default)  # noqa: E731
        return dataclasses.replace(
            self,
            subnets=self.subnets if self.subnets is not None else d.get("subnets", 4),
            alpha_div=self.alpha_div if self.alpha_div is not None else d.get("alpha_div", False),
            ema=float(pick(self.ema, "ema", 0.0)), agc=float(pick(self.agc, "agc", 0.0)),
            bn_batches=bn, bn_batch=int(pick(self.bn_batch, "bn_batch", 128)),
            # an explicit --bn-batches also sets the search's count (smaller only by flag)
            search_bn_batches=int(self.search_bn_batches if self.search_bn_batches is not None else
                                  bn if self.bn_batches is not None else r.get("search_bn_batches", bn)),
            teacher_temperature=float(self.teacher_temperature if self.teacher_temperature is not None else
                                      0.2 if len(self.teachers) > 1 else 1.0),
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
        for name in ("batch_size", "accumulate", "bn_batches", "bn_batch", "search_bn_batches", "checkpoint_every",
                     "max_bad_steps", "threads"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise UserError(f"--lr must be positive, got {self.lr}")
        if self.ema is not None and not 0 <= self.ema < 1:
            raise UserError(f"--ema must be a decay in (0, 1) (0: off), got {self.ema}")
        if self.agc is not None and self.agc < 0:
            raise UserError(f"--agc must be a clipping factor > 0 (0: off), got {self.agc}")
        if self.teacher_temperature is not None and not self.teacher_temperature > 0:
            raise UserError(f"the teacher temperature must be positive, got {self.teacher_temperature}")
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
