"""The DeepMAD networks as torch modules, built from the original block list.

Layer for layer as TinyNAS builds them (``tinynas/models/blocks_cnn_2d``): every conv is bias-free
and followed by BN; ``K1KXK1`` inner blocks use ReLU, ``K1DWSEK1`` ones SiLU and an SE module whose
two 1x1 convs carry BN too; then global average pooling and a linear classifier (the original
backbone has none; the parameter count ``params_backbone`` leaves it out).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1):
        super().__init__(nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout))


class ConvBNReLU(ConvBN):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(super().forward(x))


class SE(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        mid = max(1, round(c * 0.25) // 8) * 8
        self.reduce, self.expand = ConvBN(c, mid, 1), ConvBN(mid, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)  # (B, C, 1, 1)
        return x * torch.sigmoid(self.expand(F.silu(self.reduce(s))))


class ResK1KXK1(nn.Module):
    def __init__(self, cin: int, cout: int, btn: int, k: int, stride: int, force_proj: bool):
        super().__init__()
        self.conv1, self.conv2, self.conv3 = ConvBN(cin, btn, 1), ConvBN(btn, btn, k, stride), ConvBN(btn, cout, 1)
        self.pool = nn.AvgPool2d(2, 2) if stride == 2 else nn.Identity()
        self.proj = ConvBN(cin, cout, 1) if (cin != cout or force_proj) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3(F.relu(self.conv2(F.relu(self.conv1(x)))))
        return F.relu(y + self.proj(self.pool(x)))


class ResK1DWSEK1(nn.Module):
    def __init__(self, cin: int, cout: int, btn: int, k: int, stride: int, force_proj: bool = False):
        super().__init__()
        self.conv1 = ConvBN(cin, btn, 1)
        self.conv2 = ConvBN(btn, btn, k, stride, groups=btn)
        self.se = SE(btn)
        self.conv3 = ConvBN(btn, cout, 1)
        self.residual = cin == cout
        self.pool = nn.AvgPool2d(2, 2) if stride == 2 and self.residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3(self.se(F.silu(self.conv2(F.silu(self.conv1(x))))))
        if self.residual:
            y = y + self.pool(x)
        return F.silu(y)


INNER = {"K1KXK1": ResK1KXK1, "K1DWSEK1": ResK1DWSEK1}


class DeepMADNet(nn.Module):
    def __init__(self, structure: list[dict], block: str, num_classes: int, resolution: int):
        super().__init__()
        self.resolution = resolution
        inner = INNER[block]
        stem = structure[0]
        self.stem = ConvBNReLU(stem["in"], stem["out"], stem["k"], stem["s"])
        blocks = []
        for b in structure[1:]:
            if b["class"].startswith("SuperRes"):
                layers = [inner(b["in"] if j == 0 else b["out"], b["out"], b["btn"], b["k"], b["s"] if j == 0 else 1,
                                force_proj=(j == 0 and block == "K1KXK1")) for j in range(b["L"])]
                blocks.append(nn.Sequential(*layers))
        self.blocks = nn.Sequential(*blocks)
        last = structure[-1]
        self.head = ConvBNReLU(last["in"], last["out"], 1) if not last["class"].startswith("SuperRes") else nn.Identity()
        self.fc = nn.Linear(last["out"], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:  # data at another size (28 px Fashion-MNIST)
            x = F.interpolate(x, size=self.resolution, mode="bicubic", align_corners=False)
        x = self.head(self.blocks(self.stem(x)))  # (B, C, H/32, W/32)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
