"""ViT-Res (ViT-ResNAS's macro-architecture) as a plain torch model, one fixed architecture.

Module names mirror ``nas.elastic.vit_resnas`` so a supernet extracts into it by prefix slicing;
the parameter count is ``ViTResNASSpace.cost``'s (``params``; plus ``patch_head`` when built with
it). Shapes: B batch, N tokens (cls first), E embedding width, A = heads * head_dim, H MLP hidden.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from nas.arch import Arch
from nas.nets.asvit import vit_init


def conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class PatchConvEmbed(nn.Module):
    """3x3/2 conv, two 3x3 convs inside one residual, then a (patch/2)-strided projection to E;
    cls token and position embedding. (B, 3, R, R) -> (B, 1 + (R/patch)^2, E)."""

    def __init__(self, stem: int, embed: int, patch: int, grid: int):
        super().__init__()
        self.stem = conv_bn_relu(3, stem, 2)
        self.res = nn.Sequential(conv_bn_relu(stem, stem, 1), conv_bn_relu(stem, stem, 1))
        self.proj = nn.Conv2d(stem, embed, patch // 2, patch // 2)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, embed))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.proj(x + self.res(x)).flatten(2).transpose(1, 2)  # (B, N - 1, E)
        return torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed


class Block(nn.Module):
    """Pre-LN MHSA with an explicit head_dim and qkv bias ([Q | K | V], each heads * head_dim wide),
    then a pre-LN GELU MLP with an absolute hidden size."""

    def __init__(self, embed: int, heads: int, head_dim: int, mlp: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        a = heads * head_dim
        self.norm1 = nn.LayerNorm(embed)
        self.qkv = nn.Linear(embed, 3 * a)
        self.proj = nn.Linear(a, embed)
        self.norm2 = nn.LayerNorm(embed)
        self.fc1 = nn.Linear(embed, mlp)
        self.fc2 = nn.Linear(mlp, embed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, E)
        B, N, _ = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1)) * self.head_dim ** -0.5  # (B, h, N, N); explicit, so FLOP counters see it
        out = attn.softmax(-1) @ v  # (B, h, N, d)
        x = x + self.proj(out.transpose(1, 2).reshape(B, N, -1))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class SpatialReduction(nn.Module):
    """Residual spatial reduction: LN -> 3x3/2 conv on the patch grid, plus a 2x2 avg-pool of the
    input with zero-padded channels; the cls token through a linear plus its zero-padded self; a
    new position embedding. (B, 1 + s^2, Ein) -> (B, 1 + (s/2)^2, Eout)."""

    def __init__(self, ein: int, eout: int, side: int):
        super().__init__()
        self.side = side
        self.norm = nn.LayerNorm(ein)
        self.conv = nn.Conv2d(ein, eout, 3, 2, 1)
        self.cls_proj = nn.Linear(ein, eout)
        self.pos_embed = nn.Parameter(torch.zeros(1, (side // 2) ** 2 + 1, eout))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, ein = x.shape
        s = self.side
        y = self.norm(x)
        grid = y[:, 1:].transpose(1, 2).reshape(B, ein, s, s)
        main = self.conv(grid).flatten(2).transpose(1, 2)  # (B, (s/2)^2, Eout)
        eout = main.shape[-1]
        res = F.avg_pool2d(x[:, 1:].transpose(1, 2).reshape(B, ein, s, s), 2).flatten(2).transpose(1, 2)
        cls = self.cls_proj(y[:, :1]) + F.pad(x[:, :1], (0, eout - ein))
        out = torch.cat([cls, main + F.pad(res, (0, eout - ein))], 1)
        return out + self.pos_embed


class Stage(nn.Module):
    """The existing blocks of one stage, keyed by their slot index (so skipped slots keep their
    supernet names out of the model)."""

    def __init__(self, blocks: dict[str, nn.Module], reduce: nn.Module | None):
        super().__init__()
        self.reduce = reduce
        self.blocks = nn.ModuleDict(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reduce is not None:
            x = self.reduce(x)
        for block in self.blocks.values():
            x = block(x)
        return x


class ViTResNet(nn.Module):
    def __init__(self, resolution: int, patch: int, stem: int, num_classes: int,
                 stages: list[dict], patch_head: bool = False):
        """``stages``: per stage {embed, head_dim, blocks: {slot: (heads, mlp)}}."""
        super().__init__()
        self.resolution, self.patch = resolution, patch
        grid = resolution // patch
        self.embed = PatchConvEmbed(stem, stages[0]["embed"], patch, grid)
        mods = []
        for s, st in enumerate(stages):
            e, side = st["embed"], grid // 2 ** s
            reduce = SpatialReduction(stages[s - 1]["embed"], e, side * 2) if s else None
            blocks = {str(j): Block(e, h, st["head_dim"], m) for j, (h, m) in st["blocks"].items()}
            mods.append(Stage(blocks, reduce))
        self.stages = nn.Sequential(*mods)
        e = stages[-1]["embed"]
        self.norm = nn.LayerNorm(e)
        self.head = nn.Linear(e, num_classes)
        self.patch_head = nn.Linear(e, num_classes) if patch_head else None
        self.apply(vit_init)

    @classmethod
    def from_arch(cls, space, arch: Arch, patch_head: bool = False) -> "ViTResNet":
        v = space.values(np.asarray([arch.genome]))
        stages = []
        for vs in v:
            on = vs["exists"][0]
            stages.append({"embed": int(vs["embed"][0]), "head_dim": int(vs["head_dim"][0]),
                           "blocks": {j: (int(vs["heads"][0, j]), int(vs["mlp"][0, j])) for j in np.flatnonzero(on)}})
        return cls(space.resolution, space.patch, space.stem_width, space.num_classes, stages, patch_head)

    def features(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, N, E), final LN applied
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            x = F.interpolate(x, size=self.resolution, mode="bilinear", align_corners=False)
        return self.norm(self.stages(self.embed(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, classes)
        return self.head(self.features(x)[:, 0])

    def forward_with_patches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cls logits (B, classes), patch-token logits (B, N - 1, classes)) for patch-token mixup."""
        t = self.features(x)
        return self.head(t[:, 0]), self.patch_head(t[:, 1:])
