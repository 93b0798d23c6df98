"""The ViT-ResNAS supernet with multi-architecture sampling (Liao et al. 2021, B.3).

Unlike the slicing supernets, every layer runs at its largest width and a subnet is a set of
*per-example* channel masks: prefix masks on the embedding width of each stage, on the heads of
every block (the concatenated head outputs before ``proj``), on the MLP hidden units, and a layer
mask that zeroes a skipped block's residual branches. LayerNorm normalises over each example's
active channels only. ``set_active_many(archs)`` lets one forward/backward pass train k subnets:
example b runs subnet ``b % k`` (interleaved, as the original's ChannelDrop repeats its choice
list over sub-batches). A masked channel contributes exactly zero to its examples' outputs, so it
gets no gradient from them, and ``extract(arch)`` (the standalone model with sliced weights)
computes what the masked supernet computes on that arch.

Module names mirror ``nas.nets.vit_resnas``; the fused q/k/v projection slices per segment.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from nas.arch import Arch
from nas.elastic.supernet import Supernet
from nas.errors import UserError
from nas.nets.asvit import vit_init
from nas.nets.vit_resnas import PatchConvEmbed, SpatialReduction


def masked_layer_norm(x: torch.Tensor, m: torch.Tensor, ln: nn.LayerNorm) -> torch.Tensor:
    """LayerNorm over the channels where ``m`` (B, 1, C) is 1; masked channels come out 0.
    ``x`` must already be 0 on masked channels (the supernet keeps its token stream so), which
    saves a full-size multiply on this hot path."""
    n = m.sum(-1, keepdim=True)
    d = (x - x.sum(-1, keepdim=True) / n) * m
    var = (d * d).sum(-1, keepdim=True) / n
    return d * (torch.rsqrt(var + ln.eps) * ln.weight) + ln.bias * m


class FusedQKV(nn.Linear):
    """[Q | K | V], each segment sized for the most heads; a subnet's weight is a prefix of every
    segment, not of the fused matrix."""

    def extract_tensor(self, name: str, t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        a, big = shape[0] // 3, t.shape[0] // 3
        rows = torch.cat([t[:a], t[big:big + a], t[2 * big:2 * big + a]])
        return rows if t.dim() == 1 else rows[:, : shape[1]]


class MaskedBlock(nn.Module):
    def __init__(self, embed: int, heads: int, head_dim: int, mlp: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        a = heads * head_dim
        self.norm1 = nn.LayerNorm(embed)
        self.qkv = FusedQKV(embed, 3 * a)
        self.proj = nn.Linear(a, embed)
        self.norm2 = nn.LayerNorm(embed)
        self.fc1 = nn.Linear(embed, mlp)
        self.fc2 = nn.Linear(mlp, embed)

    def forward(self, x, em, hm, mm, lm):
        """x (B, N, E); masks em (B, 1, E), hm (B, heads), mm (B, 1, mlp), lm (B, 1, 1)."""
        B, N, _ = x.shape
        q, k, v = self.qkv(masked_layer_norm(x, em, self.norm1)).view(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v) * hm[:, :, None, None]  # (B, h, N, d), masked heads 0
        keep = lm * em  # (B, 1, E): the residual branches write only active channels of existing blocks
        x = x + self.proj(out.transpose(1, 2).reshape(B, N, -1)) * self._drop(keep)
        return x + self.fc2(F.gelu(self.fc1(masked_layer_norm(x, em, self.norm2))) * mm) * self._drop(keep)

    drop_path = 0.0

    def _drop(self, keep: torch.Tensor) -> torch.Tensor:
        """Stochastic depth per example and branch while training (the original's DropPath)."""
        if not self.training or self.drop_path == 0.0:
            return keep
        alive = torch.rand(len(keep), 1, 1, device=keep.device) >= self.drop_path
        return keep * alive / (1.0 - self.drop_path)

    @torch.no_grad()
    def importance_order(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Heads and MLP units by descending L1 importance (the original's ``rewiring``): per head
        |qkv weight| + |qkv bias| of its Q, K, V rows + |proj weight| of its columns; per unit
        |fc1 weight| + |fc1 bias| + |fc2 weight|."""
        h, d = self.heads, self.head_dim
        w = self.qkv.weight.abs().sum(1) + self.qkv.bias.abs()
        head = w.view(3, h, d).sum((0, 2)) + self.proj.weight.abs().sum(0).view(h, d).sum(1)
        unit = self.fc1.weight.abs().sum(1) + self.fc1.bias.abs() + self.fc2.weight.abs().sum(0)
        return torch.argsort(head, descending=True, stable=True), torch.argsort(unit, descending=True, stable=True)

    def permutations(self, head: torch.Tensor, unit: torch.Tensor) -> list[tuple[nn.Parameter, int, torch.Tensor]]:
        """(parameter, dim, index) for reordering heads and units without changing the function."""
        h, d = self.heads, self.head_dim
        cols = (head[:, None] * d + torch.arange(d)).flatten()  # the proj columns of the heads, in new order
        rows = torch.cat([cols + i * h * d for i in range(3)])
        return [(self.qkv.weight, 0, rows), (self.qkv.bias, 0, rows), (self.proj.weight, 1, cols),
                (self.fc1.weight, 0, unit), (self.fc1.bias, 0, unit), (self.fc2.weight, 1, unit)]


class MaskedReduction(SpatialReduction):
    """Residual spatial reduction at the largest widths: the standalone layer's parameters (so names
    and shapes match for extraction), computed under per-example width masks."""

    def forward(self, x, em_in, em_out):
        B, N, ein = x.shape
        s, eout = self.side, self.conv.out_channels
        y = masked_layer_norm(x, em_in, self.norm)
        main = self.conv(y[:, 1:].transpose(1, 2).reshape(B, ein, s, s)).flatten(2).transpose(1, 2)
        res = F.avg_pool2d(x[:, 1:].transpose(1, 2).reshape(B, ein, s, s), 2).flatten(2).transpose(1, 2)
        cls = self.cls_proj(y[:, :1]) + F.pad(x[:, :1], (0, eout - ein))
        return (torch.cat([cls, main + F.pad(res, (0, eout - ein))], 1) + self.pos_embed) * em_out


class MaskedStage(nn.Module):
    def __init__(self, blocks: dict[str, nn.Module], reduce: nn.Module | None):
        super().__init__()
        self.reduce = reduce
        self.blocks = nn.ModuleDict(blocks)


class ViTResNASSupernet(Supernet):
    def __init__(self, space):
        super().__init__()
        self.space = space
        widths = [st.embeds[-1] for st in space.stages]
        self.resolution = space.resolution
        self.embed = PatchConvEmbed(space.stem_width, widths[0], space.patch, space.grid)
        stages = []
        for s, (st, side) in enumerate(zip(space.stages, space.sides())):
            reduce = MaskedReduction(widths[s - 1], widths[s], side * 2) if s else None
            blocks = {str(j): MaskedBlock(widths[s], st.heads[-1], st.head_dims[0], st.mlps[-1]) for j in range(st.slots)}
            stages.append(MaskedStage(blocks, reduce))
        self.stages = nn.ModuleList(stages)
        # DropPath rising linearly over the blocks to the space's [train] drop_path (DeiT's rule)
        blocks = [b for st in self.stages for b in st.blocks.values()]
        top = float((space.train_recipe or {}).get("drop_path", 0.0))
        for i, b in enumerate(blocks):
            b.drop_path = top * i / max(1, len(blocks) - 1)
        self.norm = nn.LayerNorm(widths[-1])
        self.head = nn.Linear(widths[-1], space.num_classes)
        # always present (trained only with --patch-mixup), so every checkpoint of a space loads
        # into the same supernet; extraction copies it only into models built with a patch head
        self.patch_head = nn.Linear(widths[-1], space.num_classes)
        self.apply(vit_init)
        self.set_active(space.largest())

    # ---- which subnets run ---------------------------------------------------------------------
    def set_active(self, arch: Arch) -> None:
        self.set_active_many([arch])

    def set_active_many(self, archs: list[Arch]) -> None:
        """k subnets for the next forward passes: example b runs ``archs[b % k]``."""
        for a in archs:
            if self.space.is_reference(a):
                raise UserError(f"{a.id} is a reference network outside the space's choices (head_dim); "
                                "the supernet has no weights for it")
        v = self.space.values(self.space.genomes(archs))
        dev = self.head.weight.device

        def prefix(counts, size):  # (k,) widths -> (k, size) float prefix masks
            return torch.as_tensor(np.arange(size)[None, :] < np.asarray(counts)[:, None], dtype=torch.float32, device=dev)

        self._k = len(archs)
        masks = {"embed": [], "heads": [], "mlp": [], "layer": []}
        for vs, st in zip(v, self.space.stages):
            masks["embed"].append(prefix(vs["embed"], st.embeds[-1]))
            masks["heads"].append([prefix(vs["heads"][:, j], st.heads[-1]) for j in range(st.slots)])
            masks["mlp"].append([prefix(vs["mlp"][:, j], st.mlps[-1]) for j in range(st.slots)])
            masks["layer"].append(torch.as_tensor(vs["exists"], dtype=torch.float32, device=dev))
        self._masks = masks

    def _per_example(self, m: torch.Tensor, batch: int) -> torch.Tensor:
        return m.repeat((batch + self._k - 1) // self._k, *([1] * (m.dim() - 1)))[:batch]  # row b: subnet b % k

    # ---- forward ---------------------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            x = F.interpolate(x, size=self.resolution, mode="bilinear", align_corners=False)
        B, m = len(x), self._masks
        em = self._per_example(m["embed"][0], B)[:, None]
        x = self.embed(x) * em
        for s, stage in enumerate(self.stages):
            if s:
                em_out = self._per_example(m["embed"][s], B)[:, None]
                x = stage.reduce(x, em, em_out)
                em = em_out
            layer = self._per_example(m["layer"][s], B)
            for j, block in enumerate(stage.blocks.values()):
                if not bool(layer[:, j].any()):
                    continue  # skipped by every example: nothing to compute
                x = block(x, em, self._per_example(m["heads"][s][j], B), self._per_example(m["mlp"][s][j], B)[:, None],
                          layer[:, j, None, None])
        return masked_layer_norm(x, em, self.norm)

    def forward(self, x: torch.Tensor, patches: bool = False):
        """(B, 3, H, W) -> (B, classes); with ``patches`` also the patch head's (B, N - 1, classes)."""
        t = self.features(x)
        if patches:
            return self.head(t[:, 0]), self.patch_head(t[:, 1:])
        return self.head(t[:, 0])

    # ---- progressive warm-up: L1 re-sorting -----------------------------------------------------
    @torch.no_grad()
    def rewire(self, optimizer: torch.optim.Optimizer | None = None, follow: list[nn.Module] = ()) -> None:
        """Re-sort every block's heads and MLP units by L1 importance, so prefix masks keep the most
        important ones. The optimiser's moment estimates, and the same parameters of the ``follow``
        copies (an EMA), are permuted alike, so they stay aligned with their weights."""
        copies = [dict(m.named_parameters()) for m in follow]
        names = {id(p): n for n, p in self.named_parameters()}
        for stage in self.stages:
            for block in stage.blocks.values():
                for p, dim, idx in block.permutations(*block.importance_order()):
                    idx = idx.to(p.device)
                    state = optimizer.state.get(p, {}) if optimizer is not None else {}
                    targets = [p] + [t for t in state.values() if torch.is_tensor(t) and t.shape == p.shape]
                    targets += [c[names[id(p)]] for c in copies]
                    for t in targets:
                        t.copy_(t.index_select(dim, idx))
