"""The NAS-Bench-201 network for one cell (the benchmark's "infer" model, layer for layer).

Shapes: B batch, C channels, H x W grid. ``forward_features`` is the map before global pooling
(after the last BN + ReLU), ``forward_pooled`` the pooled vector the classifier reads; proxies
use them (Zen-score, NTK, length distortion).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from nas.spaces.nb201 import EDGES


class ReLUConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int):
        super().__init__(nn.ReLU(), nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout))


class AvgPool3x3(nn.Module):
    """3x3 average pooling, stride 1, padding 1, not counting the padding (NB201's avg_pool_3x3),
    written as a fixed depthwise sum over a count map: the same numbers as
    ``nn.AvgPool2d(3, 1, 1, count_include_pad=False)``, but its double backward (GraSP) is a
    convolution's, 40x faster here than avg_pool2d's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> same
        c, h, w = (int(s) for s in x.shape[1:])  # constants when traced: ONNX needs a kernel of known shape
        ones = torch.ones(c, 1, 3, 3, dtype=x.dtype, device=x.device)
        count = F.conv2d(torch.ones(1, 1, h, w, dtype=x.dtype, device=x.device), ones[:1], padding=1)
        return F.conv2d(x, ones, padding=1, groups=c) / count


class Zero(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def make_op(name: str, c: int) -> nn.Module:
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(c, c, 1, 1)
    if name == "nor_conv_3x3":
        return ReLUConvBN(c, c, 3, 1)
    if name == "avg_pool_3x3":
        return AvgPool3x3()
    raise ValueError(f"unknown NB201 operation {name!r}")


class Cell(nn.Module):
    def __init__(self, ops: Sequence[str], c: int):
        super().__init__()
        self.edges = nn.ModuleList(make_op(op, c) for op in ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> same
        nodes = [x]
        k = 0
        for j in (1, 2, 3):
            nodes.append(sum(self.edges[k + i](nodes[i]) for i in range(j)))
            k += j
        return nodes[3]


class ResBlock(nn.Module):
    """ResNet basic block, stride 2: two ReLU-conv-BN 3x3 plus an avg-pool + 1x1 conv shortcut."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv_a = ReLUConvBN(cin, cout, 3, 2)
        self.conv_b = ReLUConvBN(cout, cout, 3, 1)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(cin, cout, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, Cin, H, W) -> (B, Cout, H/2, W/2)
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class ThinCell(nn.Module):
    """TE-NAS's network for counting linear regions on NB201: the cell alone at 1 channel (no
    stem, no reduction blocks, one cell), on 1-channel inputs."""

    in_channels, min_input_size = 1, 3

    def __init__(self, ops: Sequence[str]):
        super().__init__()
        self.cell = Cell(ops, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, H, W) -> (B, H * W)
        return self.cell(x).flatten(1)


class NB201Net(nn.Module):
    def __init__(self, ops: Sequence[str], channels: int = 16, cells: int = 5, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        assert len(ops) == len(EDGES)
        c = channels
        self.in_channels = in_channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        layers: list[nn.Module] = []
        for s in range(3):
            if s:
                layers.append(ResBlock(c << (s - 1), c << s))
            layers += [Cell(ops, c << s) for _ in range(cells)]
        self.cells = nn.Sequential(*layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(4 * c), nn.ReLU())
        self.classifier = nn.Linear(4 * c, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, 4C, H/4, W/4)
        return self.lastact(self.cells(self.stem(x)))

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:  # -> (B, 4C)
        return self.forward_features(x).mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # -> (B, classes)
        return self.classifier(self.forward_pooled(x))
