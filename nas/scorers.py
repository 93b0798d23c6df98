"""Accuracy estimates: the expensive metric of a search, computed one architecture at a time.

* ``ProxyScorer``: a training-free proxy on a freshly initialised model (seeded) and the real
  mini-batch that ships with vitnas.
* ``SupernetScorer``: a trained supernet kept resident; each architecture is activated, its
  BatchNorm statistics recalibrated on training batches, and its accuracy measured on the
  held-out split the supernet was trained without (never the test set).

Both import torch only when first used, so LUT-only searches never do.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from nas.errors import UserError
from nas.spaces.base import SearchSpace


class ProxyScorer:
    """A training-free proxy of one architecture: a fresh model per repeat (init seed ``seed + r``)
    scored on the space's shipped real mini-batch; the mean over ``repeats``. Analytic proxies
    (params, macs) come from the space's cost model without building anything."""

    def __init__(self, space: SearchSpace, proxy: str, seed: int, threads: int, repeats: int = 1):
        from nas.proxies import ANALYTIC, get_proxy

        self.space, self.proxy, self.seed, self.threads, self.repeats = space, proxy, seed, threads, repeats
        self.column = f"proxy_{proxy}"
        self._analytic = ANALYTIC.get(proxy)
        if self._analytic is None:
            get_proxy(proxy)  # unknown names fail here, before a run starts
        self._fn = None
        self.batch = getattr(space, "proxy_batch", "imagenet-samples")
        self.resolution = getattr(space, "proxy_resolution", None)

    def describe(self) -> str:
        if self._analytic:
            return f"proxy:{self.proxy} (analytic)"
        what = {"imagenet-samples": "20 ImageNet samples", "cifar10-samples": "20 CIFAR-10 test images"}.get(self.batch, self.batch)
        size = self.resolution or (224 if self.batch == "imagenet-samples" else 32)
        rep = f", mean of {self.repeats} inits" if self.repeats > 1 else ""
        return f"proxy:{self.proxy} (untrained weights, init seed {self.seed}{rep}, {what} at {size} px)"

    def __call__(self, genome: np.ndarray) -> dict[str, float]:
        if self._analytic:
            return {self.column: float(self.space.cost(np.asarray(genome)[None])[self._analytic][0])}
        import torch

        from nas.proxies import get_proxy
        from nas.proxies.batch import proxy_data

        if self._fn is None:
            torch.set_num_threads(self.threads)
            keep_freed_memory()
            bound_kernel_cache()
            self._fn = get_proxy(self.proxy)
        arch = self.space.arch(genome)
        scores = []
        for r in range(self.repeats):
            torch.manual_seed(self.seed + r)
            model = self.space.build_for_proxy(arch, self.proxy)
            data = proxy_data(self.batch, self.space.num_classes, self.seed + r, self.resolution)
            scores.append(float(self._fn(model, data)))
        score = float(np.mean(scores))
        if math.isnan(score):
            raise ValueError(f"proxy {self.proxy} returned NaN")
        return {self.column: score}


class ProxyScorers:
    """Several proxies as objectives of one search: every proxy scored on each architecture."""

    def __init__(self, scorers: list[ProxyScorer]):
        self.scorers = scorers
        self.columns = [s.column for s in scorers]

    def describe(self) -> str:
        return "; ".join(s.describe() for s in self.scorers)

    def __call__(self, genome: np.ndarray) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in self.scorers:
            out.update(s(genome))
        return out


class SupernetScorer:
    column = "accuracy"

    def __init__(self, space: SearchSpace, checkpoint: str, threads: int, bn_batches: int = 8):
        self.space, self.threads, self.bn_batches, self.batch_size = space, threads, bn_batches, 128
        self.path = resolve_checkpoint(checkpoint)
        self._model = None

    @property
    def fingerprint(self) -> str:
        """sha256 prefix of the checkpoint file: a resumed search checks it is the same supernet."""
        from nas.runs import sha256_16

        return sha256_16(self.path)

    def check(self) -> None:
        """Read the checkpoint's header up front: wrong space or data fail before the search starts."""
        self._load()

    def _load(self):
        if self._model is not None:
            return
        import torch

        from nas.data import load_data

        torch.set_num_threads(self.threads)
        keep_freed_memory()
        bound_kernel_cache()
        from nas.train.checkpoint import evaluated_weights, read_checkpoint

        ck = read_checkpoint(self.path, "cpu", "--supernet", only=("model", "ema"))
        if "model" not in ck or "space_fingerprint" not in ck or "data" not in ck:
            raise UserError(f"--supernet {self.path}: not a vitnas supernet checkpoint")
        if ck["space_fingerprint"] != self.space.fingerprint:
            raise UserError(f"--supernet {self.path} was trained on space {ck.get('space')!r}, not on this "
                            f"definition of {self.space.name!r}")
        model = self.space.build_supernet()
        weights, ema = evaluated_weights(ck)
        try:
            model.load_state_dict(weights)
        except RuntimeError as e:
            raise UserError(f"--supernet {self.path}: weights do not fit space {self.space.name!r} "
                            f"({str(e).splitlines()[0]})") from None
        self._ema = bool(ema)
        self.bn_batches = ck.get("evaluation", {}).get("bn_batches", self.bn_batches)  # the recipe's search count
        self.batch_size = ck.get("evaluation", {}).get("batch", self.batch_size)
        self._data_spec = ck["data"]
        if not ck["data"].get("spec"):  # imported weights without --data
            raise UserError(f"--supernet {self.path} names no dataset to recalibrate BN and score on: "
                            "re-import it with --data")
        self.data = load_data(ck["data"]["spec"], heldout=ck["data"]["heldout"], seed=ck["data"]["seed"])
        # a GPU when one is visible: a Ray worker given --gpus-per-worker sees exactly its own
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self._model = model.to(self.device).eval()

    def describe(self) -> str:
        self._load()
        d = self._data_spec
        return (f"supernet:{self.path.name} ({'EMA ' if self._ema else ''}weights, BN recalibrated on "
                f"{self.bn_batches}x{self.batch_size} training images, {len(self.data.heldout)} held-out images of "
                f"{d['spec']})")

    def __call__(self, genome: np.ndarray) -> dict[str, float]:
        from nas.train.trainer import evaluate_subnet

        self._load()
        acc, _ = evaluate_subnet(self._model, self.space.arch(genome), self.data, self.bn_batches, self.batch_size, self.device)
        return {self.column: acc}

    def calibrated(self, genome: np.ndarray):
        """The resident supernet with ``genome`` active and its BatchNorm statistics recalibrated
        exactly as ``__call__`` does before measuring accuracy (``nas export`` extracts from it)."""
        from nas.train.trainer import calibrate_subnet

        self._load()
        calibrate_subnet(self._model, self.space.arch(genome), self.data, self.bn_batches, self.batch_size, self.device)
        return self._model


def resolve_checkpoint(spec: str) -> Path:
    from nas.train.checkpoint import CHECKPOINT, find_checkpoint

    p = Path(spec)
    if p.is_dir():
        p = find_checkpoint(p, "--supernet") or p / CHECKPOINT
    if not p.is_file():
        raise UserError(f"--supernet {spec}: no checkpoint there (give a {CHECKPOINT} or a `nas train` run directory)")
    return p.resolve()


def keep_freed_memory() -> None:
    """Ask glibc to keep freed activation buffers instead of unmapping them.

    Every proxy evaluation builds a new model and runs large activations through it; by default
    glibc returns those buffers to the OS and page-faults fresh ones in on the next forward
    (measured here: 4.4 M page faults and 8 s of system time per 10 ElasticViT archs, -30 % wall
    time once disabled). No effect where libc is not glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: serve buffers up to 1 GiB from the heap
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: do not give the heap back eagerly
    except (OSError, AttributeError):
        pass


def bound_kernel_cache() -> None:
    """Cap oneDNN's primitive cache so a long search does not grow without bound.

    Every subnet has its own layer shapes, and oneDNN caches one compiled kernel per shape
    (1024 by default). Evaluating hundreds of subnets with one resident supernet grew RSS from
    1.9 to 2.5 GB here; capped at 128 it stays flat at ~1.3 GB at no measurable speed cost.
    oneDNN reads the variable when it creates its first primitive, so this must run before the
    first convolution; a user's own setting wins."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "128")
