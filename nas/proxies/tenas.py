"""TE-NAS's expressivity measure (Chen et al., "Neural Architecture Search on ImageNet in Four GPU
Hours: A Theoretically Inspired Perspective", ICLR 2021; VITA-Group/TENAS
``lib/procedures/linear_region_counter.py``): the number of linear regions the network cuts its
input space into, estimated as the number of distinct rectifier activation patterns over 3,000
random N(0, 1) inputs of 3 x 3 pixels (TE-NAS's setting; a model that needs larger inputs can
set ``min_input_size``, one with other input channels ``in_channels``; models that resize their
input, like ElasticViT, accept any size).

TE-NAS counts on a *thin* copy of the network (NB201: 1 channel, 1 cell per stage, 1-channel
input): on a full-width network nearly every input gets its own pattern and the count saturates
at the number of samples. A space provides that copy through ``build_for_proxy`` (nb201 does);
other spaces are counted at full width, where the score saturates for wide networks.

Patterns are the signs of the inputs of every rectifier (ReLU, GELU, Hardswish, ...), as NASWOT
reads them; BatchNorm in eval mode so that a pattern depends on one input only.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn as nn

from nas.proxies import PROXIES
from nas.proxies.common import ProxyData, rectifiers

SAMPLES = 3000
CHUNK = 500


@PROXIES.register("linear_regions")
def linear_regions(model: nn.Module, data: ProxyData, samples: int = SAMPLES) -> float:
    side = int(getattr(model, "min_input_size", 3))
    channels = int(getattr(model, "in_channels", 3))
    g = data.generator(13)
    model.eval()
    digests: list[bytes] = []
    current: list[np.ndarray] = []

    def hook(_m, inputs, _out):
        current.append(np.packbits((inputs[0].reshape(inputs[0].shape[0], -1) > 0).numpy(), axis=1))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, rectifiers())]
    try:
        with torch.inference_mode():
            for start in range(0, samples, CHUNK):
                x = torch.randn(min(CHUNK, samples - start), channels, side, side, generator=g)
                current.clear()
                model(x)
                codes = np.concatenate(current, axis=1) if current else np.zeros((len(x), 0), np.uint8)
                # a digest per pattern keeps memory flat however many units the network has
                digests += [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in codes]
    finally:
        for h in handles:
            h.remove()
    return float(len(set(digests)))
