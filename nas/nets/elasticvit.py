"""ElasticViT as a plain torch model (one fixed architecture; no weight slicing).

Layer for layer what microsoft/Moonlit's FusedSuperNet computes for one subnet, so that a
supernet (nas/elastic) can extract into it and the analytic parameter count of
``ElasticViTSpace.cost`` equals ``sum(p.numel())``. Shapes in comments: B batch, C channels,
H x W grid, N = H * W tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from nas.arch import Arch


class MBConv(nn.Module):
    """Inverted residual: [1x1 expand] -> kxk depthwise (stride) -> [SE] -> 1x1 project.

    Expansion multiplies the *input* width. Stride-2 layers add an avg-pooled shortcut, with a
    1x1 conv when widths differ (ElasticViT's MobileBlock)."""

    weight_decay_exempt = True  # the original takes every MobileBlock off weight decay

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int, se: bool):
        super().__init__()
        inner = cin * expand
        self.stride = stride
        self.pw = nn.Sequential(nn.Conv2d(cin, inner, 1, bias=False), nn.BatchNorm2d(inner), nn.Hardswish()) if expand > 1 else None
        self.dw = nn.Sequential(nn.Conv2d(inner, inner, kernel, stride, kernel // 2, groups=inner, bias=False),
                                nn.BatchNorm2d(inner), nn.Hardswish())
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(inner, inner // 4, 1), nn.ReLU(),
                                nn.Conv2d(inner // 4, inner, 1), nn.Hardsigmoid()) if se else None
        self.pwl = nn.Sequential(nn.Conv2d(inner, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = nn.Conv2d(cin, cout, 1, bias=False) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, Cin, H, W) -> (B, Cout, H/s, W/s)
        out = self.pw(x) if self.pw is not None else x
        out = self.dw(out)
        if self.se is not None:
            out = out * self.se(out)
        out = self.pwl(out)
        res = x
        if self.stride > 1:
            res = F.avg_pool2d(res, self.stride, padding=res.shape[-1] % 2)  # ceil for odd grids
        if self.shortcut is not None:
            res = self.shortcut(res)
        return out + res


class TokenChannelLayerNorm(nn.LayerNorm):
    """ElasticViT's LayerNorm (``LNSuper``: ``F.layer_norm(x, x.shape[1:])``): each sample of a
    (B, N, C) input is normalised over its N tokens and C channels jointly, then scaled by a
    per-channel affine shared by every token. Not ``nn.LayerNorm(C)``, which normalises each token
    on its own: weights trained with the original code only reproduce with the joint statistics.
    The affine is sliced to the input's C, so the supernet uses this layer unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, C)
        # the statistics written out rather than F.layer_norm(x, x.shape[1:]): a normalized_shape
        # read from the input does not export to ONNX with a free batch dimension
        c = x.shape[-1]
        mu = x.mean(dim=(1, 2), keepdim=True)
        var = (x - mu).pow(2).mean(dim=(1, 2), keepdim=True)
        return (x - mu) * torch.rsqrt(var + self.eps) * self.weight[:c] + self.bias[:c]


class Attention(nn.Module):
    """Pre-LN MHSA with q/k head dim 16, v head dim 16 * v_scale, a 3x3 depthwise conv on V,
    a learned relative-position bias over the grid, and Hardswish before the projection."""

    def __init__(self, dim: int, heads: int, v_scale: int, side: int, head_dim: int = 16):
        super().__init__()
        self.heads, self.qk, self.vd, self.side = heads, head_dim, head_dim * v_scale, side
        vt = heads * self.vd
        self.norm = TokenChannelLayerNorm(dim)
        self.qkv = nn.Linear(dim, 2 * heads * head_dim + vt, bias=False)  # [Q_all | K_all | V_all]
        self.dw_v = nn.Conv2d(vt, vt, 3, padding=1, groups=vt, bias=False)
        self.proj = nn.Linear(vt, dim)
        self.attention_bias = nn.Parameter(torch.zeros((2 * side - 1) ** 2, heads))
        nn.init.trunc_normal_(self.attention_bias, std=0.02)
        ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
        pos = torch.stack([ys.flatten(), xs.flatten()])  # (2, N)
        rel = pos[:, :, None] - pos[:, None, :] + side - 1  # (2, N, N), offsets shifted to >= 0
        self.register_buffer("bias_index", rel[0] * (2 * side - 1) + rel[1], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, C)
        B, N, _ = x.shape
        h, qk = self.heads, self.qk
        q, k, v = self.qkv(self.norm(x)).split([h * qk, h * qk, h * self.vd], dim=-1)
        v = self.dw_v(v.transpose(1, 2).reshape(B, -1, self.side, self.side)).flatten(2).transpose(1, 2)
        q = q.view(B, N, h, qk).transpose(1, 2)  # (B, h, N, qk)
        k = k.view(B, N, h, qk).transpose(1, 2)
        v = v.reshape(B, N, h, self.vd).transpose(1, 2)  # (B, h, N, vd)
        attn = (q @ k.transpose(-2, -1)) * qk ** -0.5  # (B, h, N, N)
        attn = attn + self.attention_bias[self.bias_index].permute(2, 0, 1)
        out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(B, N, -1)  # (B, N, h * vd)
        return x + self.proj(F.hardswish(out))


class FFN(nn.Module):
    def __init__(self, dim: int, ratio: int):
        super().__init__()
        self.norm = TokenChannelLayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim * ratio)
        self.act = nn.Hardswish()
        self.fc2 = nn.Linear(dim * ratio, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, C)
        return x + self.fc2(self.act(self.fc1(self.norm(x))))


class TransformerStage(nn.Module):
    """Downsampling MBConv on the grid, then ``depth`` x (attention + FFN) on the tokens."""

    def __init__(self, cin: int, cout: int, stride: int, side: int, mlp: list[int], v_scale: list[int],
                 head_dim: int, ds_expand: int):
        super().__init__()
        self.side = side
        self.ds = MBConv(cin, cout, ds_expand, 3, stride, se=True)
        layers: list[nn.Module] = []
        for m, v in zip(mlp, v_scale):
            layers += [Attention(cout, cout // head_dim, v, side, head_dim), FFN(cout, m)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, Cin, H, W) -> (B, Cout, H', W')
        x = self.ds(x)
        B, C, H, W = x.shape
        x = self.layers(x.flatten(2).transpose(1, 2))  # (B, N, C)
        return x.transpose(1, 2).reshape(B, C, H, W)


@dataclass(frozen=True)
class ElasticViTConfig:
    res: int
    widths: tuple[int, ...]  # stem + stages
    depths: tuple[int, ...]
    micro: tuple[dict, ...]  # per block: {"expand": [...], "kernel": [...]} or {"mlp": [...], "v_scale": [...]}
    kinds: tuple[str, ...]
    strides: tuple[int, ...]
    se: tuple[bool, ...]
    sides: tuple[int, ...]  # output grid side of each block
    num_classes: int
    head_dim: int
    ds_expand: int
    classifier_mul: int
    head_width: int


class ElasticViTNet(nn.Module):
    def __init__(self, cfg: ElasticViTConfig, head_dropout: float = 0.2):
        super().__init__()
        self.cfg = cfg
        c0 = cfg.widths[0]
        self.first_conv = nn.Sequential(nn.Conv2d(3, c0, 3, 2, 1, bias=False), nn.BatchNorm2d(c0), nn.Hardswish())
        self.first_conv.weight_decay_exempt = True  # as the original's (trainer._param_groups)
        blocks: list[nn.Module] = []
        cin = c0
        for b, kind in enumerate(cfg.kinds):
            cout, d, m = cfg.widths[b], cfg.depths[b], cfg.micro[b]
            if kind == "conv":
                layers = [MBConv(cin if i == 0 else cout, cout, m["expand"][i], m["kernel"][i],
                                 cfg.strides[b] if i == 0 else 1, cfg.se[b]) for i in range(d)]
                blocks.append(nn.Sequential(*layers))
            else:
                blocks.append(TransformerStage(cin, cout, cfg.strides[b], cfg.sides[b], m["mlp"][:d], m["v_scale"][:d],
                                               cfg.head_dim, cfg.ds_expand))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        wide = cin * cfg.classifier_mul
        self.pre_head = nn.Linear(cin, wide)
        self.pre_head_norm = nn.BatchNorm1d(wide)
        self.head = nn.Linear(wide, cfg.head_width)
        self.dropout = nn.Dropout(head_dropout)
        self.classifier = nn.Linear(cfg.head_width, cfg.num_classes)
        self.apply(_init)

    @classmethod
    def from_arch(cls, space, arch: Arch) -> "ElasticViTNet":
        import numpy as np

        v = space.values(np.asarray([arch.genome]))
        sides = tuple(int(out[0]) for _, out in space.grids(v["res"], "ceil"))
        blocks = space.blocks
        cfg = ElasticViTConfig(
            res=int(v["res"][0]),
            widths=tuple(int(w) for w in v["width"][0]),
            depths=tuple(int(d) for d in v["depth"][0]),
            micro=tuple({k: [int(x) for x in a[0]] for k, a in mic.items()} for mic in v["micro"]),
            kinds=tuple(b.kind for b in blocks), strides=tuple(b.stride for b in blocks),
            se=tuple(b.se for b in blocks), sides=sides, num_classes=space.num_classes,
            head_dim=space.head_dim, ds_expand=space.ds_expand, classifier_mul=space.classifier_mul,
            head_width=space.head_width,
        )
        return cls(cfg)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, C, h, w), before the head
        if x.shape[-1] != self.cfg.res or x.shape[-2] != self.cfg.res:
            x = F.interpolate(x, size=self.cfg.res, mode="bicubic", align_corners=False)
        return self.blocks(self.first_conv(x))

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:  # -> (B, 6C): pooled, before the MLP head
        x = self.pre_head(self.forward_features(x).flatten(2).transpose(1, 2))  # (B, N, 6C)
        return F.hardswish(self.pre_head_norm(x.transpose(1, 2))).mean(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, classes)
        x = self.dropout(F.hardswish(self.head(self.forward_pooled(x))))
        return self.classifier(x)


def _init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
