"""MPCViT networks (``PKU-SEC-Lab/mpcvit`` ``src/vit.py``, ViT-Lite from the CCT code base).

One module serves three uses:

* a fixed network: every head has its attention (ScalAttn, RSAttn or softmax), every layer its
  GeLU token mask (MPCViT+);
* the weight-sharing supernet (``nas/elastic/mpcvit.py``): the same weights, ``set_active(arch)``
  switches the choices (no gene changes a shape, so extraction copies every tensor);
* the differentiable search: ``enable_mixture()`` gives every head a free alpha (init 1) and
  computes ``alpha * RSAttn + (1 - alpha) * ScalAttn``; ``enable_gelu_mixture()`` a per-token
  beta (init 1) and ``beta * GeLU(h) + (1 - beta) * h`` with ``beta * fc2 + (1 - beta) * ReLU(fc2)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from nas.nets.asvit import vit_init
from nas.spaces.mpcvit import RS, RS_EPS, SCAL, SOFTMAX


@dataclass(frozen=True)
class MpcViTConfig:
    resolution: int = 32
    patch: int = 4
    in_chans: int = 3
    num_classes: int = 10
    layers: int = 7
    heads: int = 4
    dim: int = 256
    mlp_ratio: int = 2
    attention: tuple[tuple[int, ...], ...] = ()  # (layers, heads) of SCAL / RS / SOFTMAX
    linear_tokens: tuple[tuple[bool, ...], ...] = ()  # (layers, tokens): True = GeLU linearised
    linear_scalattn: bool = False  # ScalAttn as Q (K^T V) / N (MPCViT+)
    attn_drop: float = 0.0

    @property
    def tokens(self) -> int:
        return (self.resolution // self.patch) ** 2 + 1


def rs_attention(s: torch.Tensor) -> torch.Tensor:
    r = F.relu(s)
    return r / (r.sum(-1, keepdim=True) + RS_EPS)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, attn_drop: float, linear_scalattn: bool):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.linear_scalattn = linear_scalattn
        self.alpha: nn.Parameter | None = None
        self.set_choices((RS,) * heads)

    def set_choices(self, choices) -> None:
        """Per-head SCAL / RS / SOFTMAX; heads of one kind are computed together."""
        self.choices = tuple(int(c) for c in choices)
        self.groups = [(kind, [h for h, c in enumerate(self.choices) if c == kind]) for kind in (SCAL, RS, SOFTMAX)]
        self.groups = [(k, idx) for k, idx in self.groups if idx]
        order = [h for _, idx in self.groups for h in idx]
        self.inverse = [order.index(h) for h in range(self.heads)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, H, N, d_h)
        if self.alpha is not None:  # search mode: every head mixes RSAttn and ScalAttn
            s = (q @ k.transpose(-2, -1)) * self.scale
            a = self.alpha * rs_attention(s) + (1 - self.alpha) * (s / N)
            out = self.attn_drop(a) @ v
        else:
            parts = []
            for kind, idx in self.groups:
                qh, kh, vh = (t[:, idx] for t in (q, k, v)) if len(idx) < self.heads else (q, k, v)
                if kind == SCAL and self.linear_scalattn:  # S V / N = Q (K^T V) * scale / N
                    parts.append(qh @ (kh.transpose(-2, -1) @ vh) * (self.scale / N))
                    continue
                s = (qh @ kh.transpose(-2, -1)) * self.scale  # (B, h, N, N)
                a = s / N if kind == SCAL else rs_attention(s) if kind == RS else s.softmax(-1)
                parts.append(self.attn_drop(a) @ vh)
            out = parts[0] if len(parts) == 1 else torch.cat(parts, 1)[:, self.inverse]
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    """CCT's TransformerEncoderLayer: the second LayerNorm replaces x (no pre-norm MLP branch)."""

    def __init__(self, cfg: MpcViTConfig):
        super().__init__()
        C, M = cfg.dim, cfg.dim * cfg.mlp_ratio
        self.pre_norm = nn.LayerNorm(C)
        self.self_attn = Attention(C, cfg.heads, cfg.attn_drop, cfg.linear_scalattn)
        self.norm1 = nn.LayerNorm(C)
        self.linear1 = nn.Linear(C, M)
        self.linear2 = nn.Linear(M, C)
        self.act, self.post_relu = nn.GELU(), nn.ReLU()  # modules, so activation-based proxies see them
        self.beta: nn.Parameter | None = None
        self.register_buffer("gelu_mask", torch.ones(1, cfg.tokens, 1), persistent=False)  # 1 keeps GeLU

    def set_linear_tokens(self, linear) -> None:
        mask = torch.tensor([0.0 if t else 1.0 for t in linear]).view(1, -1, 1)
        self.gelu_mask = mask.to(self.gelu_mask.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.pre_norm(x))
        x = self.norm1(x)
        h = self.linear1(x)
        b = self.beta if self.beta is not None else self.gelu_mask
        if self.beta is None and bool((b == 1).all()):
            return x + self.linear2(self.act(h))
        h = b * self.act(h) + (1 - b) * h
        y = self.linear2(h)
        return x + b * y + (1 - b) * self.post_relu(y)  # linearised tokens get the post-added ReLU


class MpcViTNet(nn.Module):
    def __init__(self, cfg: MpcViTConfig):
        super().__init__()
        self.cfg = cfg
        C = cfg.dim
        self.tokenizer = nn.Conv2d(cfg.in_chans, C, cfg.patch, stride=cfg.patch)
        self.class_emb = nn.Parameter(torch.zeros(1, 1, C))
        self.positional_emb = nn.Parameter(torch.zeros(1, cfg.tokens, C))
        nn.init.trunc_normal_(self.positional_emb, std=0.2)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(C)
        self.fc = nn.Linear(C, cfg.num_classes)
        self.apply(vit_init)
        self.keep_tokens = False  # token distillation reads the final-LN tokens of the last forward
        self.last_tokens: torch.Tensor | None = None
        self.configure(cfg.attention, cfg.linear_tokens)

    def configure(self, attention, linear_tokens) -> None:
        for l, block in enumerate(self.blocks):
            if attention:
                block.self_attn.set_choices(attention[l])
            if linear_tokens:
                block.set_linear_tokens(linear_tokens[l])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Final-LN tokens (B, N, C): what token-level distillation compares."""
        if x.shape[-1] != self.cfg.resolution:
            x = F.interpolate(x, size=(self.cfg.resolution,) * 2, mode="bilinear", align_corners=False)
        x = self.tokenizer(x).flatten(2).transpose(1, 2)  # (B, N-1, C)
        x = torch.cat([self.class_emb.expand(x.shape[0], -1, -1), x], 1) + self.positional_emb
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.features(x)
        if self.keep_tokens:
            self.last_tokens = tokens
        return self.fc(tokens[:, 0])

    # ---- search mode (nas/search/mpcvit.py) ---------------------------------------------------
    def enable_mixture(self) -> list[nn.Parameter]:
        """alpha per head, init 1, unconstrained; returned in layer order."""
        alphas = []
        for block in self.blocks:
            a = nn.Parameter(torch.ones(1, self.cfg.heads, 1, 1, device=self.fc.weight.device))
            block.self_attn.alpha = a
            block.self_attn.weight_decay_also = ("alpha",)  # the released timm optimiser decays the 4-D alpha
            alphas.append(a)
        return alphas

    def enable_gelu_mixture(self) -> list[nn.Parameter]:
        betas = []
        for block in self.blocks:
            b = nn.Parameter(torch.ones(1, self.cfg.tokens, 1, device=self.fc.weight.device))
            block.beta = b
            block.weight_decay_also = ("beta",)
            betas.append(b)
        return betas
