"""The real mini-batches that ship with vitnas (MIT; see their SOURCE.txt):

* ``imagenet-samples``: 20 ImageNet photos, preprocessed as ElasticViT evaluates (resize the short
  side to 256 bicubic, centre-crop 224, ImageNet mean/std); models resize to their resolution.
* ``cifar10-samples``: 20 CIFAR-10 test images (32 px), CIFAR-10 mean/std, for CIFAR-sized
  spaces such as nb201.

A space names its batch (``proxy_batch``); ``proxy_data`` returns it as the proxies' input.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "imagenet-samples"
CIFAR_ASSETS = ASSETS.parent / "cifar10-samples"
CIFAR_MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)
CIFAR_STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32)
BATCHES = ("imagenet-samples", "cifar10-samples")
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _load(path: Path, resize: int, crop: int) -> np.ndarray:
    img = Image.open(path).convert("RGB")
    w, h = img.size
    s = resize / min(w, h)
    img = img.resize((max(crop, round(w * s)), max(crop, round(h * s))), Image.BICUBIC)
    w, h = img.size
    left, top = (w - crop) // 2, (h - crop) // 2
    arr = np.asarray(img.crop((left, top, left + crop, top + crop)), dtype=np.float32) / 255.0
    return ((arr - MEAN) / STD).transpose(2, 0, 1)


@lru_cache(maxsize=4)
def imagenet_samples(resize: int = 256, crop: int = 224) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (20, 3, crop, crop) float32, labels (20,) int64), labels parsed from file names."""
    files = sorted(ASSETS.glob("imagenet_*.jpg"))
    if not files:
        raise FileNotFoundError(f"the shipped mini-batch is missing from {ASSETS}")
    x = torch.from_numpy(np.stack([_load(f, resize, crop) for f in files]))
    y = torch.tensor([int(f.stem.split("_")[2]) for f in files])
    return x, y


@lru_cache(maxsize=1)
def cifar10_samples() -> tuple[torch.Tensor, torch.Tensor]:
    """(images (20, 3, 32, 32) float32, labels (20,) int64)."""
    files = sorted(CIFAR_ASSETS.glob("cifar10_*.png"))
    if not files:
        raise FileNotFoundError(f"the shipped mini-batch is missing from {CIFAR_ASSETS}")
    arr = np.stack([(np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255.0 - CIFAR_MEAN) / CIFAR_STD
                    for f in files]).transpose(0, 3, 1, 2)
    y = torch.tensor([int(f.stem.split("_")[2]) for f in files])
    return torch.from_numpy(np.ascontiguousarray(arr)), y


@lru_cache(maxsize=16)
def proxy_data(batch: str, num_classes: int, seed: int, resolution: int | None = None):
    """The ``ProxyData`` a space's proxies read: its shipped batch, labels folded into its classes.
    Cached (the resize is done once per search, not per architecture); proxies never modify it."""
    from nas.proxies.common import ProxyData

    if batch == "imagenet-samples":
        x, y = imagenet_samples()
    elif batch == "cifar10-samples":
        x, y = cifar10_samples()
    else:
        from nas.registry import did_you_mean

        raise did_you_mean(batch, BATCHES, "proxy batch")
    if resolution is not None and x.shape[-1] != resolution:
        x = torch.nn.functional.interpolate(x, size=resolution, mode="bicubic", align_corners=False)
    return ProxyData(x, y % num_classes, num_classes, seed)
