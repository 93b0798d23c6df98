"""The ElasticViT supernet: every layer of ``nas.nets.elasticvit`` at its largest size, with the
same module names, so ``extract(arch)`` is a generic slice-and-copy (see supernet.py).

What is elastic: resolution (inputs are resized), widths (prefix channels), depths (the first
``depth`` layers of a stage run), MBConv expand ratio and kernel (centre crop), MLP ratio, V scale
(the fused q/k/v projection is sliced and read per head as the original's, see ElasticQKV), heads
(width / 16: also prefixes of the relative-position table's head columns), and the relative-position
table (one per attention layer, sized for the stage's largest grid; a smaller grid reads the
entries of its own relative offsets).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from nas.arch import Arch
from nas.elastic.ops import ElasticBatchNorm1d, ElasticBatchNorm2d, ElasticConv2d, ElasticLinear
from nas.elastic.supernet import Supernet
from nas.nets.elasticvit import TokenChannelLayerNorm, _init


class ElasticSequential(nn.Sequential):
    """Runs its first ``active_depth`` modules."""

    active_depth: int = 0

    def forward(self, x):
        for i in range(self.active_depth):
            x = self[i](x)
        return x


class ElasticMBConv(nn.Module):
    weight_decay_exempt = True  # the original takes every MobileBlock off weight decay

    def __init__(self, max_in: int, max_out: int, max_expand: int, max_kernel: int, stride: int, se: bool,
                 shortcut: bool):
        super().__init__()
        inner = max_in * max_expand
        self.stride = stride
        self.pw = nn.Sequential(ElasticConv2d(max_in, inner), ElasticBatchNorm2d(inner), nn.Hardswish()) if max_expand > 1 else None
        self.dw = nn.Sequential(ElasticConv2d(inner, inner, max_kernel, stride, depthwise=True), ElasticBatchNorm2d(inner),
                                nn.Hardswish())
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), ElasticConv2d(inner, inner // 4, bias=True), nn.ReLU(),
                                ElasticConv2d(inner // 4, inner, bias=True), nn.Hardsigmoid()) if se else None
        self.pwl = nn.Sequential(ElasticConv2d(inner, max_out), ElasticBatchNorm2d(max_out))
        self.shortcut = ElasticConv2d(max_in, max_out) if shortcut else None
        self.expand, self.kernel, self.out = max_expand, max_kernel, max_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, Cin, H, W) -> (B, out, H/s, W/s)
        cin = x.shape[1]
        inner = cin * self.expand
        if self.pw is not None and self.expand > 1:
            self.pw[0].active_out = inner
            out = self.pw(x)
        else:
            out = x
        self.dw[0].active_kernel = self.kernel
        out = self.dw(out)
        if self.se is not None:
            self.se[1].active_out, self.se[3].active_out = inner // 4, inner
            out = out * self.se(out)
        self.pwl[0].active_out = self.out
        out = self.pwl(out)
        res = x
        if self.stride > 1:
            res = F.avg_pool2d(res, self.stride, padding=res.shape[-1] % 2)
        if cin != self.out:
            self.shortcut.active_out = self.out
            res = self.shortcut(res)
        return out + res


class ElasticQKV(nn.Linear):
    """The fused projection of the largest layer, as the original's (microsoft/Moonlit): three
    sections of rows sized for the most heads, [A | B | C] with A and B of max_heads * 16 rows
    and C of max_heads * 16 * max_v. A subnet with h heads and V scale s fuses the prefixes
    F = [A[:16h] ; B[:16h] ; C[:16hs]] and reads F's output per head in blocks of P = 32 + 16s:
    head i's q, k and v are F rows i*P + [0, 16), [16, 32), [32, P). So the sections are not
    q, k and v (for h > 2 a head's rows straddle them); weights trained with the original code
    load unchanged. ``extract`` reorders F's rows into the standalone layout [Q_all | K_all | V_all]."""

    def __init__(self, max_dim: int, max_heads: int, head_dim: int, max_v: int):
        self.qk_max, self.head_dim = max_heads * head_dim, head_dim
        super().__init__(max_dim, 2 * self.qk_max + max_heads * head_dim * max_v, bias=False)
        self.active_qk, self.active_v = self.qk_max, max_heads * head_dim * max_v

    def _weight(self, q: int, v: int, c: int) -> torch.Tensor:
        w, m = self.weight, self.qk_max
        return torch.cat([w[:q, :c], w[m:m + q, :c], w[2 * m:2 * m + v, :c]])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., C) -> (..., h * P), head-major blocks [q_i | k_i | v_i]
        return F.linear(x, self._weight(self.active_qk, self.active_v, x.shape[-1]))

    def extract_tensor(self, name: str, t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        d = self.head_dim
        h = shape[1] // d  # heads = width / head_dim
        e = (shape[0] - 2 * h * d) // h
        p = 2 * d + e
        heads = torch.arange(h)[:, None] * p
        rows = torch.cat([(heads + torch.arange(d)).flatten(), (heads + d + torch.arange(d)).flatten(),
                          (heads + 2 * d + torch.arange(e)).flatten()])
        return self._weight(h * d, h * e, shape[1])[rows]


class ElasticAttention(nn.Module):
    def __init__(self, max_dim: int, head_dim: int, max_v: int, max_side: int):
        super().__init__()
        max_heads = max_dim // head_dim
        vt = max_heads * head_dim * max_v
        self.head_dim, self.max_side, self.v_scale = head_dim, max_side, max_v
        self.norm = TokenChannelLayerNorm(max_dim)  # slices its affine to the input's width
        self.qkv = ElasticQKV(max_dim, max_heads, head_dim, max_v)
        self.dw_v = ElasticConv2d(vt, vt, 3, depthwise=True)
        self.proj = ElasticLinear(vt, max_dim)
        self.attention_bias = nn.Parameter(torch.zeros((2 * max_side - 1) ** 2, max_heads))
        nn.init.trunc_normal_(self.attention_bias, std=0.02)
        self._index: dict[int, torch.Tensor] = {}

    def table_rows(self, side: int) -> torch.Tensor:
        """Rows of the largest table holding a side x side grid's relative offsets, in the order
        of a standalone table for that grid: row (dy + s - 1) * (2s - 1) + (dx + s - 1)."""
        d = torch.arange(-(side - 1), side)
        dy, dx = torch.meshgrid(d, d, indexing="ij")
        return ((dy + self.max_side - 1) * (2 * self.max_side - 1) + dx + self.max_side - 1).flatten()

    def bias_index(self, side: int) -> torch.Tensor:
        if side not in self._index:
            ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
            pos = torch.stack([ys.flatten(), xs.flatten()])
            rel = pos[:, :, None] - pos[:, None, :] + side - 1
            self._index[side] = self.table_rows(side)[rel[0] * (2 * side - 1) + rel[1]]  # (N, N) rows
        return self._index[side].to(self.attention_bias.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, C)
        B, N, C = x.shape
        side = int(round(N ** 0.5))
        h, qk = C // self.head_dim, self.head_dim
        vd = qk * self.v_scale
        self.qkv.active_qk, self.qkv.active_v = h * qk, h * vd
        q, k, v = self.qkv(self.norm(x)).view(B, N, h, 2 * qk + vd).split([qk, qk, vd], dim=-1)  # per head
        v = v.reshape(B, N, h * vd)  # V channels head-major, as the depthwise conv and proj read them
        v = self.dw_v(v.transpose(1, 2).reshape(B, -1, side, side)).flatten(2).transpose(1, 2)
        q = q.transpose(1, 2)  # (B, h, N, qk)
        k = k.transpose(1, 2)
        v = v.reshape(B, N, h, vd).transpose(1, 2)
        attn = (q @ k.transpose(-2, -1)) * qk ** -0.5
        attn = attn + self.attention_bias[self.bias_index(side)][:, :, :h].permute(2, 0, 1)
        out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(B, N, -1)
        self.proj.active_out = C
        return x + self.proj(F.hardswish(out))

    def extract_tensor(self, name: str, t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor | None:
        if name != "attention_bias":
            return None
        side = (int(round(shape[0] ** 0.5)) + 1) // 2
        return t[self.table_rows(side)][:, : shape[1]]


class ElasticFFN(nn.Module):
    def __init__(self, max_dim: int, max_ratio: int):
        super().__init__()
        self.norm = TokenChannelLayerNorm(max_dim)  # slices its affine to the input's width
        self.fc1 = ElasticLinear(max_dim, max_dim * max_ratio)
        self.act = nn.Hardswish()
        self.fc2 = ElasticLinear(max_dim * max_ratio, max_dim)
        self.ratio = max_ratio

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[-1]
        self.fc1.active_out, self.fc2.active_out = c * self.ratio, c
        return x + self.fc2(self.act(self.fc1(self.norm(x))))


class ElasticTransformerStage(nn.Module):
    def __init__(self, max_in: int, max_out: int, stride: int, max_side: int, max_depth: int, max_mlp: int,
                 max_v: int, head_dim: int, ds_expand: int):
        super().__init__()
        self.ds = ElasticMBConv(max_in, max_out, ds_expand, 3, stride, se=True, shortcut=True)
        layers: list[nn.Module] = []
        for _ in range(max_depth):
            layers += [ElasticAttention(max_out, head_dim, max_v, max_side), ElasticFFN(max_out, max_mlp)]
        self.layers = ElasticSequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, Cin, H, W) -> (B, Cout, H', W')
        x = self.ds(x)
        B, C, H, W = x.shape
        x = self.layers(x.flatten(2).transpose(1, 2))
        return x.transpose(1, 2).reshape(B, C, H, W)


class ElasticViTSupernet(Supernet):
    def __init__(self, space):
        super().__init__()
        self.space = space
        blocks_cfg = space.blocks
        widths = [b.widths[-1] for b in blocks_cfg]
        max_sides = [int(out[0]) for _, out in space.grids(np.array([max(space.resolutions)]), "ceil")]
        c0 = widths[0]
        self.first_conv = nn.Sequential(ElasticConv2d(3, c0, 3, 2), ElasticBatchNorm2d(c0), nn.Hardswish())
        self.first_conv.weight_decay_exempt = True
        blocks: list[nn.Module] = []
        cin = c0
        for b, cfg in enumerate(blocks_cfg):
            if cfg.kind == "conv":
                # a layer 0 may change width (the stem never does: it is as wide as the first conv)
                layers = [ElasticMBConv(cin if i == 0 else widths[b], widths[b], max(cfg.micro["expand"]),
                                        max(cfg.micro["kernel"]), cfg.stride if i == 0 else 1, cfg.se,
                                        shortcut=i == 0 and b > 0) for i in range(cfg.max_depth)]
                blocks.append(ElasticSequential(*layers))
            else:
                blocks.append(ElasticTransformerStage(cin, widths[b], cfg.stride, max_sides[b], cfg.max_depth,
                                                      max(cfg.micro["mlp"]), max(cfg.micro["v_scale"]),
                                                      space.head_dim, space.ds_expand))
            cin = widths[b]
        self.blocks = nn.Sequential(*blocks)
        wide = cin * space.classifier_mul
        self.pre_head = ElasticLinear(cin, wide)
        self.pre_head_norm = ElasticBatchNorm1d(wide)
        self.head = ElasticLinear(wide, space.head_width)
        self.dropout = nn.Dropout(0.0)  # none while training a supernet (ElasticViT, after NASViT)
        self.classifier = nn.Linear(space.head_width, space.num_classes)
        self.apply(_init)
        self.res = max(space.resolutions)
        self.set_active(space.largest())

    def set_active(self, arch: Arch) -> None:
        space = self.space
        v = space.values(np.asarray([arch.genome]))
        self.res = int(v["res"][0])
        widths, depths = [int(w) for w in v["width"][0]], [int(d) for d in v["depth"][0]]
        self.first_conv[0].active_out = widths[0]
        for b, cfg in enumerate(space.blocks):
            micro = {m: [int(x) for x in a[0]] for m, a in v["micro"][b].items()}
            block = self.blocks[b]
            if cfg.kind == "conv":
                block.active_depth = depths[b]
                for i in range(depths[b]):
                    layer = block[i]
                    layer.expand, layer.kernel, layer.out = micro["expand"][i], micro["kernel"][i], widths[b]
            else:
                block.ds.out = widths[b]
                block.layers.active_depth = 2 * depths[b]
                for i in range(depths[b]):
                    block.layers[2 * i].v_scale = micro["v_scale"][i]
                    block.layers[2 * i + 1].ratio = micro["mlp"][i]
        self.pre_head.active_out = widths[-1] * space.classifier_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, classes)
        if x.shape[-1] != self.res or x.shape[-2] != self.res:
            x = F.interpolate(x, size=self.res, mode="bicubic", align_corners=False)
        x = self.blocks(self.first_conv(x))
        x = self.pre_head(x.flatten(2).transpose(1, 2))
        x = F.hardswish(self.pre_head_norm(x.transpose(1, 2))).mean(-1)
        x = self.dropout(F.hardswish(self.head(x)))
        return self.classifier(x)
