"""Latency-table blocks as torch modules: what one table key measures (``BlockSpec``), built
from the same layers the whole networks use, so a table's blocks sum to the network.

Each builder returns a module in eval mode; ``example_input`` is the batch-1 input it takes.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from nas.nets import deepmad as dm
from nas.nets import elasticvit as ev
from nas.nets import nb201
from nas.nets import vit_resnas as vr
from nas.spaces.base import BlockSpec


class ElasticViTHead(nn.Module):
    """ElasticViTNet's head (pre-head linear on tokens, BN, Hardswish, pool, linear, Hardswish,
    classifier) on a (B, C, h, w) map; the same layers and order as ``ElasticViTNet.forward``."""

    def __init__(self, c: int, mul: int, width: int, classes: int):
        super().__init__()
        self.pre_head = nn.Linear(c, c * mul)
        self.pre_head_norm = nn.BatchNorm1d(c * mul)
        self.head = nn.Linear(c * mul, width)
        self.classifier = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre_head(x.flatten(2).transpose(1, 2))
        x = F.hardswish(self.pre_head_norm(x.transpose(1, 2))).mean(-1)
        return self.classifier(F.hardswish(self.head(x)))


class ViTResHead(nn.Module):
    """ViTResNet's final LayerNorm and classifier on the cls token of (B, N, E) tokens."""

    def __init__(self, e: int, classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(e)
        self.head = nn.Linear(e, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(x)[:, 0])


class NB201Edge(nn.Module):
    """One cell edge: the operation plus the addition into its node."""

    def __init__(self, op: str, c: int):
        super().__init__()
        self.op = nb201.make_op(op, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.op(x)


class NB201Head(nn.Module):
    def __init__(self, c: int, classes: int):
        super().__init__()
        self.lastact = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU())
        self.classifier = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.lastact(x).mean((2, 3)))


class DeepMADHead(nn.Module):
    """DeepMADNet's end: the 1x1 head conv where the space has one (width > 0), global average
    pooling and the classifier, as in ``DeepMADNet.forward``."""

    def __init__(self, c: int, head: int, classes: int):
        super().__init__()
        self.head = dm.ConvBNReLU(c, head, 1) if head > 0 else nn.Identity()
        self.fc = nn.Linear(head or c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.head(x), 1), 1))


def _first_conv(cin: int, cout: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.Hardswish())


BUILDERS: dict[str, Callable[..., nn.Module]] = {
    # ElasticViT family (nas/nets/elasticvit.py)
    "first_conv": lambda cin, cout: _first_conv(cin, cout),
    "mbconv": lambda cin, cout, expand, kernel, stride, se: ev.MBConv(cin, cout, expand, kernel, stride, se),
    "attention": lambda cin, side, heads, v_scale, head_dim: ev.Attention(cin, heads, v_scale, side, head_dim),
    "ffn": lambda cin, ratio: ev.FFN(cin, ratio),
    "elasticvit_head": lambda cin, mul, width, classes: ElasticViTHead(cin, mul, width, classes),
    # ViT-ResNAS family (nas/nets/vit_resnas.py)
    "resnas_embed": lambda cin, side, stem, patch, cout: vr.PatchConvEmbed(stem, cout, patch, side // patch),
    "resnas_block": lambda cin, heads, head_dim, mlp: vr.Block(cin, heads, head_dim, mlp),
    "resnas_sr": lambda cin, side, cout: vr.SpatialReduction(cin, cout, side),
    "resnas_head": lambda cin, classes: ViTResHead(cin, classes),
    # DeepMAD (nas/nets/deepmad.py): one layer of a super-block; the first projects in K1KXK1
    "deepmad_stem": lambda cin, cout, k: dm.ConvBNReLU(cin, cout, k, 2),
    "deepmad_first": lambda cin, block, cout, btn, k, stride: dm.INNER[block](cin, cout, btn, k, stride,
                                                                               force_proj=block == "K1KXK1"),
    "deepmad_inner": lambda cin, block, btn, k: dm.INNER[block](cin, cin, btn, k, 1, force_proj=False),
    "deepmad_head": lambda cin, head, classes: DeepMADHead(cin, head, classes),
    # NAS-Bench-201 (nas/nets/nb201.py)
    "nb201_stem": lambda cin, cout: nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)),
    "nb201_edge": lambda cin, op: NB201Edge(op, cin),
    "nb201_resblock": lambda cin, cout: nb201.ResBlock(cin, cout),
    "nb201_head": lambda cin, classes: NB201Head(cin, classes),
}


def build_block(spec: BlockSpec) -> nn.Module:
    """The module a key measures, in eval mode. ``cin`` is the last input dimension of the spec's
    shape for token inputs (N, C) and the first for maps (C, H, W)."""
    builder = BUILDERS.get(spec.kind)
    if builder is None:
        raise KeyError(f"no block builder {spec.kind!r}; known: {sorted(BUILDERS)}")
    cin = spec.shape[-1] if len(spec.shape) == 2 else spec.shape[0]
    return builder(cin, **spec.kwargs).eval()


def example_input(spec: BlockSpec, batch: int = 1, seed: int = 0, device: str | torch.device = "cpu") -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *spec.shape), generator=g).to(device)
