"""The real mini-batch that ships with vitnas: 20 ImageNet photos (MIT, see assets/imagenet-samples).

Preprocessed as ElasticViT evaluates: resize the short side to 256 (bicubic), centre-crop 224,
normalise with the ImageNet mean/std; models resize to their own resolution.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "imagenet-samples"
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
