"""The one supernet trainer, generic over spaces (anything whose space builds a ``Supernet``).

A step: draw subnets from the sampler, run each on the same batch, accumulate their losses'
gradients (labels, teachers, or in-place distillation from the largest / the mean of the level
subnets, soft CE or alpha-divergence), then one AdamW step under a warm-up + cosine schedule
(timm), optional adaptive gradient clipping and EMA. Every randomness is keyed by (seed, step),
and the data order by (seed, epoch), so a run resumed from a checkpoint reproduces the
uninterrupted run bit for bit on the same machine.

Run directory: config.toml, checkpoint.safetensors (atomic, no pickle: nas/train/checkpoint.py;
model, EMA, optimiser, schedule, sampler and its banks), steps.csv (one row per trained subnet), evals.csv (held-out accuracy of
the smallest, largest and fixed random subnets after BN recalibration), train.png.
"""
from __future__ import annotations

import copy
import csv
import math
import os
import pickle
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from nas.arch import Arch
from nas.archspec import parse_arch_text
from nas.data import Data, load_data, random_crop_flip
from nas.errors import UserError
from nas.spaces import get_space
from nas.train.bn import accuracy, recalibrate_bn
from nas.train.checkpoint import CHECKPOINT, plain, read_checkpoint, write_checkpoint
from nas.train.config import TrainConfig
from nas.train.losses import alpha_divergence, soft_cross_entropy
from nas.train.samplers import Pick, make_sampler

STEP_FIELDS = ["step", "epoch", "lr", "level", "banks", "role", "arch_id", "macs_m", "loss", "skipped", "tokens"]
EVAL_FIELDS = ["step", "epoch", "role", "arch_id", "macs_m", "resolution", "accuracy", "loss", "seconds"]


class TrainingError(UserError):
    """The run cannot go on (e.g. losses stayed non-finite); the last checkpoint is intact."""


class Trainer:
    def __init__(self, cfg: TrainConfig, out: Path, *, progress: bool = True, net: nn.Module | None = None,
                 loss=None):
        """``net`` (with ``cfg.arch``): train this module instead of ``space.build(arch)``, e.g. a
        designer's relaxed search model; ``loss(model, logits, y, x)`` replaces the label loss
        (a designer's penalty or token distillation)."""
        self.space = get_space(cfg.validate().space)
        self.cfg = cfg = cfg.resolved(getattr(self.space, "train_recipe", None) or {}).validate()
        self.loss_fn = loss
        self.out, self.progress = Path(out), progress
        torch.set_num_threads(cfg.threads)
        self.data: Data = load_data(cfg.data, heldout=cfg.heldout, seed=cfg.seed)
        if self.data.num_classes != self.space.num_classes:
            raise UserError(f"space {self.space.name!r} has a {self.space.num_classes}-class head but "
                            f"{cfg.data} has {self.data.num_classes} classes")
        self.world, self.rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
        self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() else torch.device("cpu")
        torch.manual_seed(cfg.seed)
        self.fixed = parse_arch_text(self.space, cfg.arch) if cfg.arch is not None else None
        if self.fixed is not None:  # one network, no weight sharing (nas/train/standalone.py)
            from nas.train.standalone import Standalone

            supernet = Standalone(net if net is not None else self.space.build(self.fixed), self.fixed)
        else:
            supernet = self.space.build_supernet()
        if supernet is None:
            raise UserError(f"space {self.space.name!r} has no supernet to train; train one of its networks "
                            f"with --arch (a preset or an architecture string)")
        if cfg.patch_mixup and self.fixed is not None:
            raise UserError("--patch-mixup is part of multi-architecture supernet training; it does not apply to --arch")
        if cfg.sampler == "multi-arch" and self.fixed is None and not hasattr(supernet, "set_active_many"):
            raise UserError(f"--sampler multi-arch runs several subnets in one pass, which needs a masked supernet "
                            f"(the vit-resnas family); space {self.space.name!r} has a slicing one")
        self.coarse_steps = 0
        if cfg.retokenize is not None:
            if not hasattr(supernet, "set_coarse_tokens"):
                raise UserError("--retokenize needs --arch: it is a schedule for one As-ViT network")
            try:
                supernet.set_coarse_tokens(True)  # fails here, before training, if the resolution does not allow it
                supernet.set_coarse_tokens(False)
            except ValueError as e:
                raise UserError(f"--retokenize: {e}") from None
        self.supernet = supernet.to(self.device)
        self.model: nn.Module = self.supernet
        if self.world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():  # long timeout: the other ranks wait while rank 0 evaluates
                import datetime

                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo",
                                        timeout=datetime.timedelta(hours=2))
            self.model = nn.parallel.DistributedDataParallel(self.supernet, find_unused_parameters=True)
        self.batches_per_epoch = len(self.data.train) // (cfg.batch_size * self.world)
        self.steps_per_epoch = max(1, self.batches_per_epoch // cfg.accumulate)
        self.total = cfg.steps if cfg.steps is not None else math.ceil(cfg.epochs * self.steps_per_epoch)
        if cfg.retokenize is not None:
            self.coarse_steps = round(cfg.retokenize * self.total)
        self.optimizer = torch.optim.AdamW(_param_groups(self.supernet, cfg.weight_decay), lr=cfg.lr)
        from timm.scheduler import CosineLRScheduler

        warmup = cfg.warmup_steps if cfg.warmup_steps is not None else max(1, self.total // 20)
        self.scheduler = CosineLRScheduler(self.optimizer, t_initial=self.total, lr_min=cfg.min_lr, warmup_t=warmup,
                                           warmup_lr_init=cfg.lr * 0.01, t_in_epochs=False)
        self.ema = None
        if cfg.ema:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.supernet, decay=cfg.ema)
        if self.fixed is not None:
            from nas.train.standalone import FixedSampler

            self.sampler = FixedSampler(self.space, np.random.default_rng(cfg.seed), self.fixed)
        else:
            self.sampler = make_sampler(cfg.sampler, self.space, np.random.default_rng(cfg.seed), cfg.subnets)
        self.teachers = [_load_teacher(t, self.data.num_classes).to(self.device) for t in cfg.teachers]
        self.use_amp = self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if self.use_amp and not torch.cuda.is_bf16_supported() else None
        rng = np.random.default_rng([cfg.seed, 1])
        self.eval_archs = [("network", self.fixed)] if self.fixed is not None else [
            ("smallest", self.space.smallest()), ("largest", self.space.largest())] + [
            ("random", self.space.arch(g)) for g in self.space.sample(rng, cfg.eval_random)]
        self.step, self.bad_steps, self.skipped = 0, 0, 0
        self.last_eval: list[dict] = []

    # ---- checkpoints --------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "step": self.step, "config": self.cfg.to_toml(),
            "space": self.space.name, "space_fingerprint": self.space.fingerprint,
            "data": {"spec": self.cfg.data, "heldout": self.cfg.heldout, "seed": self.cfg.seed},
            "evaluation": {"bn_batches": self.cfg.search_bn_batches, "batch": self.cfg.bn_batch},  # for a search
            "model": self.supernet.state_dict(), "ema": self.ema.state_dict() if self.ema else None,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "sampler": plain(self.sampler.state_dict()), "scaler": self.scaler.state_dict() if self.scaler else None,
            "bad_steps": self.bad_steps, "skipped": self.skipped, "last_eval": plain(self.last_eval),
        }

    def save(self) -> None:
        if self.rank != 0:
            return
        write_checkpoint(self.out / CHECKPOINT, self.state())

    def load(self, path: Path) -> None:
        ck = read_checkpoint(path, self.device, "--resume")
        if ck.get("space_fingerprint") != self.space.fingerprint:
            raise UserError(f"{path} was trained on a different definition of space {self.space.name!r}")
        self.supernet.load_state_dict(ck["model"])
        if self.ema is not None and ck["ema"] is not None:
            self.ema.load_state_dict(ck["ema"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        self.sampler.load_state_dict(ck["sampler"])
        if self.scaler is not None and ck["scaler"] is not None:
            self.scaler.load_state_dict(ck["scaler"])
        self.step, self.bad_steps, self.skipped = ck["step"], ck["bad_steps"], ck["skipped"]
        self.last_eval = ck["last_eval"]
        self.truncate_logs()

    def truncate_logs(self) -> None:
        """Drop log rows after the current step: they are redone (all of them without a checkpoint)."""
        if self.rank == 0:
            for name in ("steps.csv", "evals.csv"):
                _truncate_log(self.out / name, self.step)

    # ---- one step -----------------------------------------------------------------------------
    def _batch(self, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return next(self.data.raw_batches(self.data.train, self.cfg.batch_size, shuffle_seed=[self.cfg.seed, epoch],
                                          start=index, shard=(self.rank, self.world)))

    def _forward(self, pick: Pick, x: torch.Tensor) -> torch.Tensor:
        self.supernet.set_active(pick.arch)
        with torch.autocast(self.device.type, dtype=torch.bfloat16 if self.scaler is None else torch.float16,
                            enabled=self.use_amp):
            return self.model(x)

    def train_step(self, epoch: int) -> list[dict]:
        cfg, step = self.cfg, self.step
        coarse = step < self.coarse_steps  # As-ViT's progressive re-tokenisation: coarse tokens first
        if cfg.retokenize is not None:
            self.supernet.set_coarse_tokens(coarse)
        picks = self.sampler.sample(epoch)
        info = self.sampler.info()
        rows: dict[int, dict] = {}
        finite = True
        bn_before = [(b, b.clone()) for m in self.supernet.modules()
                     if isinstance(m, nn.modules.batchnorm._BatchNorm) for b in m.buffers()]
        self.model.train()
        for micro in range(cfg.accumulate):
            index = (step % self.steps_per_epoch) * cfg.accumulate + micro
            raw, y = self._batch(epoch, index)
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step * 64 + micro)
            torch.manual_seed(cfg.seed * 1_000_003 + step * 64 + micro)  # any torch randomness in the forward
            x = self.data.normalise(random_crop_flip(raw, pad=max(1, raw.shape[-1] // 8), generator=gen)).to(self.device)
            y = y.to(self.device)
            teacher = self._teacher_probs(x) if self.teachers else None
            if getattr(self.sampler, "joint", False):  # k subnets in one pass (multi-architecture sampling)
                finite &= self._joint_pass(picks, x, y, teacher, rows, micro)
                continue
            largest, level = None, []
            for i, pick in enumerate(picks):
                logits = self._forward(pick, x).float()
                if self.loss_fn is not None:
                    loss = self.loss_fn(self.supernet, logits, y, x)
                elif pick.target == "label":
                    loss = self._label_loss(logits, y, teacher)
                else:
                    target = largest if pick.target == "largest" else torch.stack(level).mean(0)
                    loss = alpha_divergence(logits, target) if cfg.alpha_div else soft_cross_entropy(logits, target)
                finite &= self._all_finite(loss)  # agreed by every rank, so DDP's collectives stay matched
                if finite:  # the subnets' losses are summed, as ElasticViT's one backward each
                    scaled = loss / cfg.accumulate
                    (self.scaler.scale(scaled) if self.scaler else scaled).backward()
                elif self.world > 1:
                    (logits.sum() * 0.0).backward()  # DDP expects a backward for every forward; discarded
                probs = F.softmax(logits.detach(), -1)
                if pick.role == "largest":
                    largest = probs
                elif pick.role in ("level", "bank", "random"):
                    level.append(probs)
                ce = F.cross_entropy(logits.detach(), y)
                if self.world > 1:
                    import torch.distributed as dist

                    dist.all_reduce(ce)
                    ce /= self.world
                if micro == 0 and torch.isfinite(ce):
                    self.sampler.observe(pick, -float(ce))
                row = rows.setdefault(i, {"role": pick.role, "arch_id": pick.arch.id, "loss": 0.0,
                                          "macs_m": float(self.space.cost(np.asarray([pick.arch.genome]))["macs"][0]) / 1e6})
                row["loss"] += float(loss.detach()) / cfg.accumulate
        if finite and self.scaler is None:  # an overflow in backward must not reach the weights either
            grads = [p.grad for p in self.supernet.parameters() if p.grad is not None]
            finite = bool(torch.isfinite(torch.stack([g.abs().max() for g in grads])).all()) if grads else True
        if finite:
            self.bad_steps = 0
            if self.scaler:
                self.scaler.unscale_(self.optimizer)
            if cfg.agc:
                from timm.utils import adaptive_clip_grad

                adaptive_clip_grad(self.supernet.parameters(), clip_factor=cfg.agc)
            if self.scaler:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.supernet, step=step + 1)
        else:
            self.bad_steps += 1
            self.skipped += 1
            with torch.no_grad():  # the skipped forwards must not leave NaN in BN statistics either
                for buf, saved in bn_before:
                    buf.copy_(saved)
        self.optimizer.zero_grad(set_to_none=True)
        lr = self.optimizer.param_groups[0]["lr"]
        self.step += 1
        self.scheduler.step_update(self.step)
        tokens = ("coarse" if coarse else "fine") if cfg.retokenize is not None else ""
        return [{"step": self.step, "epoch": epoch, "lr": lr, "level": info.get("level", ""), "banks": info.get("banks", ""),
                 **r, "skipped": int(not finite), "tokens": tokens} for r in rows.values()]

    def _joint_pass(self, picks: list[Pick], x, y, teacher, rows: dict, micro: int) -> bool:
        """One forward/backward for all picks: example b runs picks[b % k]; the loss is the plain
        batch mean, as in ViT-ResNAS. Rows get each subnet's own examples' loss."""
        cfg, k = self.cfg, len(picks)
        self.supernet.set_active_many([p.arch for p in picks])
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16 if self.scaler is None else torch.float16,
                                  enabled=self.use_amp)
        if cfg.patch_mixup:  # ViT-ResNAS's patch-token mixup: cls + patch-head losses
            from nas.train import token_mix

            r = self.space.resolution  # mix on the model's input grid, so regions are whole tokens
            x = F.interpolate(x, size=r, mode="bilinear", align_corners=False) if x.shape[-1] != r else x
            x, target, labels = token_mix.mix(x, y, self.space.sides()[-1], self.space.num_classes)
            with autocast:
                logits, patches = self.model(x, patches=True)  # through DDP's forward when distributed
            logits = logits.float()
            per = token_mix.loss(logits, patches.float(), target, labels, cfg.label_smoothing)
        else:
            with autocast:
                logits = self.model(x).float()
            if teacher is not None:
                per = -(teacher * F.log_softmax(logits, -1)).sum(-1)
            else:
                per = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing, reduction="none")
        loss = per.mean()
        finite = self._all_finite(loss)
        if finite:
            scaled = loss / cfg.accumulate
            (self.scaler.scale(scaled) if self.scaler else scaled).backward()
        elif self.world > 1:
            (logits.sum() * 0.0).backward()
        for i, pick in enumerate(picks):
            if micro == 0:
                ce = F.cross_entropy(logits[i::k].detach(), y[i::k])
                if torch.isfinite(ce):
                    self.sampler.observe(pick, -float(ce))
            row = rows.setdefault(i, {"role": pick.role, "arch_id": pick.arch.id, "loss": 0.0,
                                      "macs_m": float(self.space.cost(np.asarray([pick.arch.genome]))["macs"][0]) / 1e6})
            row["loss"] += float(per[i::k].detach().mean()) / cfg.accumulate
        return finite

    def _all_finite(self, t: torch.Tensor) -> bool:
        ok = torch.isfinite(t).all().to(torch.float32)
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        return bool(ok)

    def _label_loss(self, logits: torch.Tensor, y: torch.Tensor, teacher: torch.Tensor | None) -> torch.Tensor:
        """Labels, or the teachers: an ensemble's mean prediction replaces the labels, one teacher
        gets 0.5 label CE + 0.5 KD (ElasticViT's compute_dist_loss, ALPHA 0.5)."""
        ce = lambda: F.cross_entropy(logits, y, label_smoothing=self.cfg.label_smoothing)  # noqa: E731
        if teacher is None:
            return ce()
        kd = soft_cross_entropy(logits, teacher)
        return kd if len(self.teachers) > 1 else 0.5 * ce() + 0.5 * kd

    def _teacher_probs(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.stack([F.softmax(t(x).float() / self.cfg.teacher_temperature, -1) for t in self.teachers]).mean(0)

    def _score(self, x: torch.Tensor, y: torch.Tensor):
        """-CE of a subnet on a batch, without gradients: what memory banks are ranked by."""
        def score(arch: Arch) -> float:
            with torch.no_grad():
                self.supernet.set_active(arch)
                ce = F.cross_entropy(self.supernet(x).float(), y)
            if self.world > 1:
                import torch.distributed as dist

                dist.all_reduce(ce)
                ce /= self.world
            return -float(ce)
        return score

    # ---- evaluation ---------------------------------------------------------------------------
    def evaluate(self) -> list[dict]:
        """Held-out accuracy of the smallest, largest and fixed random subnets, each after BN
        recalibration, on a copy of the (EMA) supernet so training state is untouched."""
        model = copy.deepcopy(self.ema.module if self.ema is not None else self.supernet)
        if self.cfg.retokenize is not None:
            model.set_coarse_tokens(False)  # networks are evaluated as they will be used: fine tokens
        rows = []
        for role, arch in self.eval_archs:
            t = time.perf_counter()
            acc, loss = evaluate_subnet(model, arch, self.data, self.cfg.bn_batches, self.cfg.bn_batch, self.device,
                                        limit=self.cfg.eval_images)
            rows.append({"step": self.step, "epoch": (self.step - 1) // self.steps_per_epoch, "role": role,
                         "arch_id": arch.id, "macs_m": float(self.space.cost(np.asarray([arch.genome]))["macs"][0]) / 1e6,
                         "resolution": self.space.input_resolution(arch), "accuracy": acc, "loss": loss,
                         "seconds": round(time.perf_counter() - t, 2)})
        self.last_eval = rows
        return rows

    # ---- the loop -----------------------------------------------------------------------------
    def run(self, *, stop_at: int | None = None) -> dict:
        cfg = self.cfg
        bar = None
        if self.progress and self.rank == 0:
            from tqdm import tqdm

            bar = tqdm(total=self.total, initial=self.step, unit="step", desc="train", dynamic_ncols=True, file=sys.stderr)
        steps_log = _CsvLog(self.out / "steps.csv", STEP_FIELDS) if self.rank == 0 else None
        evals_log = _CsvLog(self.out / "evals.csv", EVAL_FIELDS) if self.rank == 0 else None
        eval_every = cfg.eval_every or self.steps_per_epoch
        t0 = time.perf_counter()
        try:
            while self.step < self.total and (stop_at is None or self.step < stop_at):
                epoch, pos = divmod(self.step, self.steps_per_epoch)
                if hasattr(self.sampler, "banks") and (pos == 0 or pos % max(1, self.steps_per_epoch // 4) == 0):
                    raw, y = self._batch(epoch, pos * cfg.accumulate)
                    self.sampler.rescore(self._score(self.data.normalise(raw).to(self.device), y.to(self.device)),
                                         full=pos == 0)
                rows = self.train_step(epoch)
                if steps_log:
                    steps_log.write(rows)
                if self.bad_steps >= cfg.max_bad_steps:
                    raise TrainingError(
                        f"the loss was not finite for {self.bad_steps} steps in a row (step {self.step}); stopped. "
                        f"The last good checkpoint is {self.out / CHECKPOINT}; lower --lr or set --agc, then "
                        f"`nas train --resume {self.out}`")
                if self.step % self.steps_per_epoch == 0 and self.step < self.total:
                    self.sampler.end_epoch()
                    if getattr(self.sampler, "rewire_after", lambda e: False)(epoch):  # progressive warm-up
                        self.supernet.rewire(self.optimizer, follow=[self.ema.module] if self.ema else [])
                if self.step % eval_every == 0 or self.step == self.total:
                    if self.rank == 0:
                        evals_log.write(self.evaluate())
                        _plot(self.out)
                    if self.world > 1:
                        import torch.distributed as dist

                        dist.barrier()
                if (self.step % cfg.checkpoint_every == 0 or self.step == self.total) and not self.bad_steps:
                    self.save()  # never from inside a run of skipped steps: the last good state stays
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{np.mean([r['loss'] for r in rows]):.3f}", refresh=False)
        finally:
            if bar is not None:
                bar.close()
        return {"run_dir": str(self.out), "step": self.step, "total": self.total, "skipped_steps": self.skipped,
                "seconds": round(time.perf_counter() - t0, 1), "evaluation": self.last_eval,
                "checkpoint": str(self.out / CHECKPOINT)}


def evaluate_subnet(supernet, arch: Arch, data: Data, bn_batches: int, batch_size: int, device,
                    limit: int | None = None) -> tuple[float, float]:
    """BN-recalibrate ``arch`` on the first ``bn_batches`` training batches (a fixed order), then
    its (accuracy, loss) on the held-out split (its first ``limit`` images). Modifies the
    supernet's BN statistics."""
    calibrate_subnet(supernet, arch, data, bn_batches, batch_size, device)
    held = ((data.normalise(x).to(device), y.to(device)) for x, y in
            data.raw_batches(data.heldout, 512, stop=None if limit is None else -(-limit // 512)))
    return accuracy(supernet, held)


def calibrate_subnet(supernet, arch: Arch, data: Data, bn_batches: int, batch_size: int, device) -> None:
    """Activate ``arch`` and re-estimate its BatchNorm statistics on the first ``bn_batches``
    training batches (a fixed order): the supernet as a search evaluates (and exports) it."""
    supernet.set_active(arch)
    calib = (data.normalise(x).to(device) for x, _ in
             data.raw_batches(data.train, batch_size, shuffle_seed=[0, 10**6], stop=bn_batches))
    recalibrate_bn(supernet, calib)


def _param_groups(model: nn.Module, wd: float) -> list[dict]:
    """ElasticViT's weight decay (timm's create_optimizer with the first conv's and every
    MobileBlock's parameters on the no_weight_decay list): every parameter of two or more
    dimensions (so the relative-position tables and the V depthwise conv too) except biases and
    the parameters of modules marked ``weight_decay_exempt`` (the first conv, the MBConvs).
    A model with no such marks (other families) decays its Linear weights only. A module may
    name parameters to decay whatever the rule (``weight_decay_also``): MPCViT's alpha and beta,
    which the released optimiser (timm's, on every parameter of two or more dimensions) decays."""
    exempt = {id(p) for m in model.modules() if getattr(m, "weight_decay_exempt", False) for p in m.parameters()}
    decay, rest = [], []
    for m in model.modules():
        for name, p in m.named_parameters(recurse=False):
            if exempt:
                keep = p.dim() > 1 and name != "bias" and id(p) not in exempt
            else:
                keep = isinstance(m, nn.Linear) and name == "weight"
            keep = keep or name in getattr(m, "weight_decay_also", ())
            (decay if keep else rest).append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}]


def _load_teacher(spec: str, num_classes: int) -> nn.Module:
    import timm

    name, _, ckpt = spec.partition(":")
    if not ckpt:
        raise UserError(f"teacher {spec!r}: give NAME:CHECKPOINT (weights are never downloaded)")
    if not Path(ckpt).is_file():
        raise UserError(f"teacher checkpoint {ckpt} does not exist")
    try:  # weights_only: a planted pickle is refused, nothing runs (timm reads .safetensors natively)
        model = timm.create_model(name, pretrained=False, num_classes=num_classes)
        timm.models.load_checkpoint(model, ckpt, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError) as e:
        raise UserError(f"teacher {spec!r}: {str(e).splitlines()[0]}") from None
    return model.eval().requires_grad_(False)


class _CsvLog:
    """Append-only CSV, flushed per write."""

    def __init__(self, path: Path, fields: list[str]):
        new = not path.exists() or path.stat().st_size == 0
        self.f = path.open("a", newline="", encoding="utf-8")
        self.w = csv.DictWriter(self.f, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        if new:
            self.w.writeheader()
            self.f.flush()

    def write(self, rows: list[dict]) -> None:
        self.w.writerows({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows)
        self.f.flush()


def _truncate_log(path: Path, step: int) -> None:
    if not path.exists():
        return
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        path.unlink()
        return
    # a row cut short by a kill has fewer fields: dropped with the rows after the checkpoint
    keep = [rows[0]] + [r for r in rows[1:] if len(r) == len(rows[0]) and r[0].isdigit() and int(r[0]) <= step]
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(keep)
    tmp.replace(path)


def _plot(out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    steps = pd.read_csv(out / "steps.csv")
    evals = pd.read_csv(out / "evals.csv") if (out / "evals.csv").exists() else None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for role, g in steps.groupby("role"):
        loss = g.groupby("step")["loss"].mean()
        axes[0].plot(loss.index, loss.rolling(max(1, len(loss) // 50), min_periods=1).mean(), label=role, lw=1)
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("training loss (smoothed)")
    axes[0].legend(fontsize=8)
    if evals is not None and len(evals):
        for (role, arch), g in evals.groupby(["role", "arch_id"]):
            axes[1].plot(g["step"], 100 * g["accuracy"], "-o", ms=3, label=f"{role} ({g['macs_m'].iloc[0]:.1f} M MACs)")
        axes[1].set_xlabel("step")
        axes[1].set_ylabel("held-out accuracy (%)")
        axes[1].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(out.name, fontsize=10)
    fig.tight_layout()
    tmp = out / "train.tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out / "train.png")
