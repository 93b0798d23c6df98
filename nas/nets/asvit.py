"""As-ViT's backbone (Chen et al., ICLR 2022; VITA-Group/AsViT ``lib/models/cell_infers/transformer.py``)
as a plain torch model: 4 stages of non-shifted window attention, widths C, 2C, 4C, 8C (capped at
1024), heads H/8, H/4, H/2, H, no position embedding.

Tokenisation: stage 1 is a conv with kernel K1, stride 4, zero padding ((K1-4)//2, (K1-3)//2)
and a LayerNorm; stages 2-4 are T2T-style soft splits: unfold with kernel K, stride 2, padding
((K-2)//2, (K-1)//2), LayerNorm over K*K*d, bias-free linear to the next width. Block: pre-LN
window MHSA (window = stage grid / split, qkv with bias), pre-LN GELU MLP with ratio E. Head:
LayerNorm, average pool, Linear - Tanh - Linear. Linear weights trunc-normal(0.02), biases 0.
Shapes: B batch, h x w token grid, d width.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class AsViTConfig:
    kernels: tuple[int, int, int, int]
    splits: tuple[int, int, int, int]
    expands: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    heads: int  # H: heads of the last stage
    width: int  # C
    num_classes: int
    resolution: int

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(min(1024, self.width << i) for i in range(4))

    @property
    def stage_heads(self) -> tuple[int, ...]:
        return tuple(self.heads >> (3 - i) for i in range(4))


class WindowAttention(nn.Module):
    """MHSA inside each of split x split windows (window side = grid / split, read from the input,
    so the same layer serves coarse and fine tokenisation). As in the original, a width the heads
    do not divide attends in heads * (dim // heads) channels (the auto-scaling's 4x narrower proxy
    networks have widths such as 9 with 4 heads)."""

    def __init__(self, dim: int, heads: int, split: int):
        super().__init__()
        if dim < heads:
            raise ValueError(f"width {dim} is narrower than its {heads} heads")
        self.heads, self.split, self.scale = heads, split, (dim // heads) ** -0.5
        self.inner = dim // heads * heads
        self.qkv = nn.Linear(dim, 3 * self.inner)
        self.proj = nn.Linear(self.inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, h, w, d) -> same
        b, h, w, d = x.shape
        if h % self.split or w % self.split:
            raise ValueError(f"a {h}x{w} token grid cannot be split into {self.split}x{self.split} windows")
        s = h // self.split
        win = x.reshape(b, h // s, s, w // s, s, d).permute(0, 1, 3, 2, 4, 5).reshape(-1, s * s, d)  # (B*nW, s*s, d)
        q, k, v = self.qkv(win).reshape(win.shape[0], s * s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(win.shape[0], s * s, self.inner)
        out = self.proj(out).reshape(b, h // s, w // s, s, s, d).permute(0, 1, 3, 2, 4, 5)
        return out.reshape(b, h, w, d)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, split: int, expand: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, split)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, expand * dim), nn.GELU(), nn.Linear(expand * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Stage-1 tokenisation. ``coarse`` (progressive re-tokenisation): the same kernel with stride 8
    and dilation 2, so a quarter of the tokens cover the image with the same parameters."""

    def __init__(self, kernel: int, dim: int):
        super().__init__()
        self.kernel = kernel
        self.proj = nn.Conv2d(3, dim, kernel, stride=4)
        self.norm = nn.LayerNorm(dim)
        self.set_coarse(False)

    def set_coarse(self, coarse: bool) -> None:
        k = self.kernel
        if coarse:  # padding p with (R + p - (2k - 1)) // 8 + 1 == R / 8
            p = max(0, 2 * k - 9)
            self.proj.stride, self.proj.dilation, self.pad = (8, 8), (2, 2), (p // 2, p - p // 2)
        else:
            self.proj.stride, self.proj.dilation, self.pad = (4, 4), (1, 1), ((k - 4) // 2, (k - 3) // 2)
        self.coarse = coarse

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, H/4, W/4, d)
        lo, hi = self.pad
        x = self.proj(F.pad(x, (lo, hi, lo, hi)))
        return self.norm(x.permute(0, 2, 3, 1))


class PatchMerging(nn.Module):
    def __init__(self, kernel: int, din: int, dout: int):
        super().__init__()
        self.kernel, self.pad = kernel, ((kernel - 2) // 2, (kernel - 1) // 2)
        self.norm = nn.LayerNorm(kernel * kernel * din)
        self.reduction = nn.Linear(kernel * kernel * din, dout, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, h, w, d) -> (B, h/2, w/2, dout)
        b, h, w, _ = x.shape
        lo, hi = self.pad
        cols = F.unfold(F.pad(x.permute(0, 3, 1, 2), (lo, hi, lo, hi)), self.kernel, stride=2)  # (B, K*K*d, h/2*w/2)
        return self.reduction(self.norm(cols.transpose(1, 2))).reshape(b, h // 2, w // 2, -1)


class AsViTNet(nn.Module):
    def __init__(self, cfg: AsViTConfig):
        super().__init__()
        self.cfg = cfg
        dims, heads = cfg.dims, cfg.stage_heads
        grid = cfg.resolution // 4
        stages: list[nn.Module] = []
        for i in range(4):
            tok = PatchEmbed(cfg.kernels[0], dims[0]) if i == 0 else PatchMerging(cfg.kernels[i], dims[i - 1], dims[i])
            if i:
                grid //= 2
            if grid % cfg.splits[i]:
                raise ValueError(f"stage {i + 1}: a {grid}x{grid} grid cannot be split into {cfg.splits[i]}x{cfg.splits[i]} windows")
            stages.append(nn.Sequential(tok, *[Block(dims[i], heads[i], cfg.splits[i], cfg.expands[i])
                                               for _ in range(cfg.depths[i])]))
        self.stages = nn.Sequential(*stages)
        nf = dims[-1]
        self.norm = nn.LayerNorm(nf)
        self.head = nn.Sequential(nn.Linear(nf, nf), nn.Tanh(), nn.Linear(nf, cfg.num_classes))
        self.apply(vit_init)

    def set_coarse_tokens(self, coarse: bool) -> None:
        """As-ViT's progressive re-tokenisation: train early on a quarter of the tokens (stage-1
        stride 8, dilation 2), then on the full grid; parameters are the same in both modes. Coarse
        grids are R/8 ... R/64, so every stage's split must still divide them."""
        grid = self.cfg.resolution // 8
        for i, split in enumerate(self.cfg.splits):
            if coarse and (grid < 1 or grid % split or (i < 3 and grid % 2)):
                raise ValueError(f"coarse tokens at {self.cfg.resolution} px give a {grid}x{grid} grid in stage {i + 1}, "
                                 f"which {split}x{split} windows do not divide: use a resolution divisible by 64")
            grid //= 2
        self.stages[0][0].set_coarse(coarse)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, R, R) -> (B, R/32, R/32, nf)
        if x.shape[-1] != self.cfg.resolution or x.shape[-2] != self.cfg.resolution:
            x = F.interpolate(x, size=self.cfg.resolution, mode="bicubic", align_corners=False)
        return self.stages(x)

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        """(B, nf): the pooled last-stage tokens *before* the final LayerNorm, which As-ViT's
        complexity measures read."""
        return self.forward_features(x).mean((1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # -> (B, classes)
        return self.head(self.norm(self.forward_features(x)).mean((1, 2)))


def vit_init(m: nn.Module) -> None:
    """Truncated-normal(0.02) linear weights, zero biases, unit LayerNorms (timm's ViT init)."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
