"""One architecture trained as a plain network by the common trainer (``nas train --arch``).

The trainer speaks to supernets (``set_active``, ``extract``) and samplers; a ``Standalone``
wraps a single built network behind the same interface, and ``FixedSampler`` proposes it at
every step, so checkpoints, EMA, DDP, resume and evaluation work unchanged. This is how spaces
without a supernet (As-ViT) are trained, with their schedule options (progressive re-tokenisation).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from nas.arch import Arch
from nas.errors import UserError
from nas.train.samplers import Pick, SubnetSampler


class Standalone(nn.Module):
    def __init__(self, net: nn.Module, arch: Arch):
        super().__init__()
        self.net, self.arch = net, arch

    def set_active(self, arch: Arch) -> None:
        if arch != self.arch:
            raise ValueError(f"a standalone network trains {self.arch.id} only, not {arch.id}")

    def extract(self, arch: Arch) -> nn.Module:
        self.set_active(arch)
        return self.net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def set_coarse_tokens(self, coarse: bool) -> None:
        if not hasattr(self.net, "set_coarse_tokens"):
            raise UserError(f"{type(self.net).__name__} has no progressive re-tokenisation (As-ViT networks do)")
        self.net.set_coarse_tokens(coarse)


class FixedSampler(SubnetSampler):
    def __init__(self, space, rng, arch: Arch):
        super().__init__(space, rng, 1)
        self.arch = arch

    def sample(self, epoch: int) -> list[Pick]:
        return [Pick(self.arch, "network", "label")]
