"""TE-NAS's expressivity measure (Chen et al., "Neural Architecture Search on ImageNet in Four GPU
Hours: A Theoretically Inspired Perspective", ICLR 2021; VITA-Group/TENAS
``lib/procedures/linear_region_counter.py``): the number of linear regions the network cuts its
input space into, estimated as the number of distinct rectifier activation patterns over 3,000
inputs (3 batches of 1,000, the network in train mode as TE-NAS runs it). As in TE-NAS the inputs
are random 3 x 3 crops of the real images, from one random channel when the network takes one
channel. TE-NAS counts on a thin copy of the network (NB201: the cell alone at 1 channel, no stem,
1-channel input); a space provides it through ``build_for_proxy`` (nb201 does). Other spaces are
counted on the network itself at 3 x 3 inputs (``min_input_size`` can ask for more; networks that
resize their input, like ElasticViT's, upsample them), where wide networks saturate the count at
the number of samples: the proxy then says little.

Patterns are the signs of the inputs of every rectifier (ReLU, GELU, Hardswish, ...), as NASWOT
reads them.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn as nn

from nas.proxies import PROXIES
from nas.proxies.common import ProxyData, rectifiers

SAMPLES = 3000
CHUNK = 1000


@PROXIES.register("linear_regions")
def linear_regions(model: nn.Module, data: ProxyData, samples: int = SAMPLES) -> float:
    side = int(getattr(model, "min_input_size", 3))
    channels = int(getattr(model, "in_channels", 3))
    g = data.generator(13)
    model.train()
    images = data.images
    if images.shape[-1] < side:
        images = torch.nn.functional.interpolate(images, size=side, mode="bicubic", align_corners=False)
    digests: list[bytes] = []
    current: list[np.ndarray] = []

    def hook(_m, inputs, _out):
        current.append(np.packbits((inputs[0].reshape(inputs[0].shape[0], -1) > 0).numpy(), axis=1))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, rectifiers())]
    try:
        with torch.inference_mode():
            for start in range(0, samples, CHUNK):
                x = _crops(images, min(CHUNK, samples - start), channels, side, g)
                current.clear()
                model(x)
                codes = np.concatenate(current, axis=1) if current else np.zeros((len(x), 0), np.uint8)
                # a digest per pattern keeps memory flat however many units the network has
                digests += [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in codes]
    finally:
        for h in handles:
            h.remove()
    return float(len(set(digests)))


def _crops(images: torch.Tensor, n: int, channels: int, side: int, g: torch.Generator) -> torch.Tensor:
    """n random side x side crops of random images; ``channels`` random channels of each."""
    b, c, h, w = images.shape
    idx = torch.randint(0, b, (n,), generator=g)
    top = torch.randint(0, h - side + 1, (n,), generator=g)
    left = torch.randint(0, w - side + 1, (n,), generator=g)
    chans = torch.randint(0, c, (n, channels), generator=g) if channels != c else torch.arange(c).expand(n, c)
    rows = (top[:, None] + torch.arange(side))[:, None, :, None]
    cols = (left[:, None] + torch.arange(side))[:, None, None, :]
    return images[idx[:, None, None, None], chans[:, :, None, None], rows, cols]
