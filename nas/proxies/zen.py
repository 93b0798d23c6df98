"""Zen-score (Lin et al., "Zen-NAS: A Zero-Shot NAS for High-Performance Deep Image Recognition",
ICCV 2021), as idstcv/ZenNAS computes it.

Every Conv/Linear weight is drawn from N(0, 1) (no fan-in scaling), biases 0, BN affine (1, 0);
BN in train mode. With x, e ~ N(0, I) of the batch's shape and f the pre-pooling feature map,
``zen = log E_n ||f(x) - f(x + 0.01 e)||_1 + sum over BN layers of log sqrt(mean running_var)``,
the running variances read after the two forwards (momentum 0.1 from 1).

Deviation: Zen-NAS scores its own networks rebuilt without residual links; an arbitrary model
cannot be rebuilt that way, so residual links stay. The proxy is meant for CNNs (BN everywhere);
on a transformer the N(0, 1) weights saturate attention and the score says little.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from nas.proxies import PROXIES
from nas.proxies.common import ProxyData, feature_map, weighted_layers

MIXUP = 0.01


@PROXIES.register("zen")
def zen(model: nn.Module, data: ProxyData) -> float:
    g = data.generator(7)
    with torch.no_grad():
        for m in weighted_layers(model):
            m.weight.normal_(0.0, 1.0, generator=g)
            if m.bias is not None:
                m.bias.zero_()
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
                m.weight.fill_(1.0)
                m.bias.zero_()
        model.train()
        x = torch.randn(data.images.shape, generator=g)
        e = torch.randn(data.images.shape, generator=g)
        diff = (feature_map(model, x) - feature_map(model, x + MIXUP * e)).abs()
        score = diff.flatten(1).sum(1).mean()
        bn = sum(math.log(math.sqrt(float(m.running_var.mean()))) for m in model.modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None)
    return float(torch.log(score)) + bn
