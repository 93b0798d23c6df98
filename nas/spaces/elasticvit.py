"""ElasticViT (Tang et al., ICCV 2023): a hybrid MBConv / transformer space for mobile phones.

Macro-architecture (fixed): first conv 3x3/2 -> stem of depthwise-separable layers -> 2 MBConv
stages -> 4 transformer stages -> MobileNetV3-style head. Every transformer stage opens with an
MBConv (expand 6, k3, SE) that downsamples (stride 1 in stage 4). Widths never decrease.

Genome layout: ``resolution``, then for block b in (stem, stage1..stage6): ``b.width``,
``b.depth`` and one gene per layer for each micro choice (``stage1.expand.0`` ...). Micro genes of
layers beyond the depth are inactive. The search vector is stage-wise by default (one micro value
per stage, as the supernet samples), per-layer with ``sampling = "layer"``.

Token grids: the PyTorch model halves transformer grids with ceil (224 -> ... 7 -> 4); MACs and
parameters follow the model. The nn-Meter latency tables were indexed with floor; the table
declares its rounding and ``latency_slots`` follows it.
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from nas.arch import GENOME_DTYPE, Arch, Gene
from nas.errors import UserError
from nas.spaces.base import BlockSpec, LatencySlot, SearchSpace, Var
from nas.tomldoc import TomlDoc

ACT = "hard_swish"  # the activation name used in the nn-Meter table keys
MICRO = {"conv": ("expand", "kernel"), "transformer": ("mlp", "v_scale")}


@dataclass(frozen=True)
class Block:
    """The stem (index 0) or one searchable stage; the 7 blocks of the paper's encoding."""

    name: str  # "stem", "stage1", ...
    kind: str  # "conv" | "transformer"
    widths: tuple[int, ...]
    depths: tuple[int, ...]
    micro: dict  # micro gene -> choices, e.g. {"expand": (3, 4, 5, 6), "kernel": (3, 5)}
    se: bool
    stride: int  # of the first layer (stem: 1, the first conv already halved the input)

    @property
    def max_depth(self) -> int:
        return self.depths[-1]


def _range(doc: TomlDoc, spec: list[int], field: str, *, step_default: int = 1) -> tuple[int, ...]:
    if len(spec) == 2:
        lo, hi, step = spec[0], spec[1], step_default
    elif len(spec) == 3:
        lo, hi, step = spec
    else:
        raise doc.error(field, f"expected [min, max] or [min, max, step], got {spec}")
    if step <= 0 or lo > hi or lo <= 0:
        raise doc.error(field, f"expected 0 < min <= max and step > 0, got {spec}")
    return tuple(range(lo, hi + 1, step))


class ElasticViTSpace(SearchSpace):
    family = "elasticvit"

    def __init__(self, doc: TomlDoc):
        d = self._read_header(doc)
        self.sampling = doc.get(d, "sampling", "sampling", str, "stage")
        if self.sampling not in ("stage", "layer"):
            raise doc.error("sampling", f"expected 'stage' or 'layer', got {self.sampling!r}")
        self.resolutions = tuple(doc.int_list(d, "resolutions", "resolutions"))
        if any(r <= 0 or r % 2 for r in self.resolutions) or list(self.resolutions) != sorted(set(self.resolutions)):
            raise doc.error("resolutions", "expected distinct, increasing, even resolutions")
        self.num_classes = doc.get(d, "num_classes", "num_classes", int)
        self.head_dim = doc.get(d, "head_dim", "head_dim", int, 16)
        self.ds_expand = doc.get(d, "ds_expand", "ds_expand", int, 6)
        self.classifier_mul = doc.get(d, "classifier_mul", "classifier_mul", int, 6)
        self.head_width = doc.get(d, "head_width", "head_width", int, 1984)

        stem = doc.get(d, "stem", "stem", dict)
        blocks = [
            Block(
                "stem", "conv",
                widths=tuple(doc.int_list(stem, "width", "stem.width")),
                depths=_range(doc, doc.int_list(stem, "depth", "stem.depth"), "stem.depth"),
                micro={"expand": (1,), "kernel": tuple(doc.int_list(stem, "kernel", "stem.kernel"))},
                se=False, stride=1,
            )
        ]
        stages = doc.get(d, "stages", "stages", list)
        for i, st in enumerate(stages):
            f = f"stages[{i}]"
            kind = doc.get(st, "type", f"{f}.type", str)
            if kind not in MICRO:
                raise doc.error(f"{f}.type", f"expected 'conv' or 'transformer', got {kind!r}")
            micro = {m: tuple(doc.int_list(st, m, f"{f}.{m}")) for m in MICRO[kind]}
            widths = _range(doc, doc.int_list(st, "width", f"{f}.width"), f"{f}.width", step_default=8)
            if kind == "transformer" and any(w % self.head_dim for w in widths):
                raise doc.error(f"{f}.width", f"transformer widths must be multiples of head_dim={self.head_dim}")
            blocks.append(
                Block(
                    f"stage{i + 1}", kind, widths=widths,
                    depths=_range(doc, doc.int_list(st, "depth", f"{f}.depth"), f"{f}.depth"),
                    micro=micro,
                    se=doc.get(st, "se", f"{f}.se", bool, False),
                    stride=2 if doc.get(st, "downsample", f"{f}.downsample", bool) else 1,
                )
            )
        kinds = [b.kind for b in blocks[1:]]
        if "transformer" not in kinds or kinds != sorted(kinds):  # conv stages first, then transformer
            raise doc.error("stages", "expected conv stages followed by at least one transformer stage")
        for prev, b in zip(blocks, blocks[1:]):
            if b.widths[-1] < prev.widths[-1]:
                raise doc.error("stages", f"{b.name} cannot be at least as wide as {prev.name} (max {b.widths[-1]} < {prev.widths[-1]})")
        self.blocks = tuple(blocks)
        self._build_genes()
        # the fingerprint covers what gives genomes their meaning, not presets, prose or training recipes
        canon = json.dumps({k: v for k, v in d.items() if k not in ("presets", "description", "source", "train")},
                           sort_keys=True)
        self.fingerprint = hashlib.blake2b(canon.encode(), digest_size=8).hexdigest()
        self._preset_specs = doc.get(d, "presets", "presets", dict, {})
        self._presets: dict[str, Arch] | None = None
        self._doc = doc

    @functools.cached_property
    def train_recipe(self) -> dict:
        """The optional ``[train]`` table: supernet-training settings tied to this space (read on
        first use, so a mistake there never blocks a search)."""
        doc = self._doc
        t = doc.get(doc.data, "train", "train", dict, {})
        out: dict[str, Any] = {}
        num = (int, float)
        if "levels" in t:
            levels = doc.get(t, "levels", "train.levels", list)
            if not levels or not all(isinstance(v, num) and not isinstance(v, bool) for v in levels) or levels != sorted(levels):
                raise doc.error("train.levels", "expected an increasing list of M MACs")
            out["levels"] = [float(v) for v in levels]
        for key, kind in (("level_window", num), ("bank_size", int), ("big_bank_size", int), ("big_bank_from", num),
                          ("explore", int), ("bank_rate", num), ("bank_rate_inc", num), ("bank_rate_every", int),
                          ("ema", num), ("agc", num), ("bn_batches", int), ("bn_batch", int), ("search_bn_batches", int)):
            if key in t:
                out[key] = doc.get(t, key, f"train.{key}", kind)
        mins = doc.get(t, "min_archs", "train.min_archs", dict, {})
        out["min_archs"] = {}
        for key, enc in mins.items():
            try:
                out["min_archs"][float(key)] = self.from_encoding(enc, what=f"min arch {key}")
            except (UserError, ValueError) as e:
                raise doc.error(f"train.min_archs.{key}", str(e)) from None
        return out

    # ---- genes and search vector -----------------------------------------------------------
    def _build_genes(self) -> None:
        genes = [Gene("resolution", self.resolutions)]
        self.g_width, self.g_depth, self.g_micro = [], [], []
        for b in self.blocks:
            self.g_width.append(len(genes))
            genes.append(Gene(f"{b.name}.width", b.widths))
            self.g_depth.append(len(genes))
            genes.append(Gene(f"{b.name}.depth", b.depths))
            micro = {}
            for m, choices in b.micro.items():
                micro[m] = list(range(len(genes), len(genes) + b.max_depth))
                genes += [Gene(f"{b.name}.{m}.{layer}", choices) for layer in range(b.max_depth)]
            self.g_micro.append(micro)
        self.genes = tuple(genes)

        vars_ = [Var("resolution", len(self.resolutions), (0,))]
        for b, gw, gd, micro in zip(self.blocks, self.g_width, self.g_depth, self.g_micro):
            vars_.append(Var(f"{b.name}.width", len(b.widths), (gw,)))
            vars_.append(Var(f"{b.name}.depth", len(b.depths), (gd,)))
            for m, pos in micro.items():
                if len(b.micro[m]) == 1:
                    continue
                if self.sampling == "stage":
                    vars_.append(Var(f"{b.name}.{m}", len(b.micro[m]), tuple(pos)))
                else:
                    vars_ += [Var(self.genes[p].name, len(b.micro[m]), (p,)) for p in pos]
        self.vars = tuple(vars_)
        self._width_vars = [next(j for j, v in enumerate(self.vars) if v.positions == (gw,)) for gw in self.g_width]

    def active_mask(self, genomes: np.ndarray) -> np.ndarray:
        mask = np.ones(genomes.shape, dtype=bool)
        for gd, pos, table in self._layer_tables:
            mask[:, pos] = table[genomes[:, gd]]
        return mask

    @functools.cached_property
    def _layer_tables(self) -> list[tuple[int, list[int], np.ndarray]]:
        """Per block: (depth gene, micro gene positions, bool table depth index -> active positions)."""
        out = []
        for b, gd, micro in zip(self.blocks, self.g_depth, self.g_micro):
            pos = [p for ps in micro.values() for p in ps]
            layer = np.array([int(self.genes[p].name.rsplit(".", 1)[1]) for p in pos])
            out.append((gd, pos, layer[None, :] < np.asarray(b.depths)[:, None]))
        return out

    def repair(self, genomes: np.ndarray) -> np.ndarray:
        """Widths never decrease: a stage narrower than its input is widened to the nearest choice."""
        genomes = genomes.copy()
        prev = np.zeros(len(genomes), dtype=np.int64)
        for b, gw in zip(self.blocks, self.g_width):
            choices = np.asarray(b.widths)
            width = choices[genomes[:, gw]]
            low = width < prev
            if low.any():
                genomes[low, gw] = np.searchsorted(choices, prev[low], side="left")
            prev = choices[genomes[:, gw]]
        return genomes

    def violations(self, genomes: np.ndarray) -> list[str]:
        widths = self.values(genomes)["width"]
        for i in range(1, len(self.blocks)):
            bad = np.flatnonzero(widths[:, i] < widths[:, i - 1])
            if bad.size:
                r = bad[0]
                return [f"{self.blocks[i].name}.width={widths[r, i]} is narrower than "
                        f"{self.blocks[i - 1].name}.width={widths[r, i - 1]} (widths never decrease)"]
        return []

    def sample_vectors(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Uniform per var; each width uniform among the choices not narrower than its input,
        which is what the paper's rejection sampling (``sampled_channels >= in_channels``) draws."""
        x = super().sample_vectors(rng, n)
        prev = np.zeros(n, dtype=np.int64)
        for b, j in zip(self.blocks, self._width_vars):
            choices = np.asarray(b.widths)
            lo = np.searchsorted(choices, prev, side="left")
            x[:, j] = lo + (rng.random(n) * (len(choices) - lo)).astype(np.int64)
            prev = choices[x[:, j]]
        return x.astype(GENOME_DTYPE)

    def sample_above(self, rng: np.random.Generator, n: int, floor: Arch) -> np.ndarray:
        """n random canonical genomes bounded below by ``floor`` in every dimension: resolution,
        widths, depths and micro-choices, each uniform among its choices not below the floor's
        (a stage's micro-choices not below the floor's choice in that stage's first layer, as
        ElasticViT's ``arch_sampling_engine(min_arch=...)`` reads it through ``parse_arch``).
        Widths also stay at least as wide as the stage before, as in ``sample_vectors``."""
        fg = np.asarray(floor.genome)
        first = {p: pos[0] for micro in self.g_micro for pos in micro.values() for p in pos}
        lows = np.array([int(np.searchsorted(self.genes[v.positions[0]].choices,
                                             self.genes[v.positions[0]].choices[fg[first.get(v.positions[0], v.positions[0])]]))
                         for v in self.vars])
        sizes = self.var_sizes
        x = lows + (rng.random((n, len(sizes))) * (sizes - lows)).astype(np.int64)
        prev = np.zeros(n, dtype=np.int64)
        for b, j in zip(self.blocks, self._width_vars):
            choices = np.asarray(b.widths)
            lo = np.maximum(lows[j], np.searchsorted(choices, prev, side="left"))
            x[:, j] = lo + (rng.random(n) * (len(choices) - lo)).astype(np.int64)
            prev = choices[x[:, j]]
        return self.to_genomes(x.astype(GENOME_DTYPE))

    # ---- values --------------------------------------------------------------------------
    def values(self, genomes: np.ndarray) -> dict[str, Any]:
        """Gene values of a batch: res (n,), width/depth (n, 7), micro[b][m] (n, max_depth)."""
        g = np.asarray(genomes)
        width = np.stack([np.asarray(b.widths)[g[:, gw]] for b, gw in zip(self.blocks, self.g_width)], 1)
        depth = np.stack([np.asarray(b.depths)[g[:, gd]] for b, gd in zip(self.blocks, self.g_depth)], 1)
        micro = [{m: np.asarray(b.micro[m])[g[:, pos]] for m, pos in gm.items()} for b, gm in zip(self.blocks, self.g_micro)]
        return {"res": np.asarray(self.resolutions)[g[:, 0]], "width": width, "depth": depth, "micro": micro}

    def grids(self, res: np.ndarray, rounding: str = "ceil") -> list[tuple[np.ndarray, np.ndarray]]:
        """(input side, output side) of every block's feature grid.

        Conv stages halve with floor (inputs are even for every listed resolution); transformer
        stages halve with ``rounding``: "ceil" is what the PyTorch model computes, "floor" is how
        the nn-Meter tables were indexed (reference A.5)."""
        side = np.asarray(res) // 2
        out = []
        for b in self.blocks:
            if b.stride == 1:
                nxt = side
            elif b.kind == "conv" or rounding == "floor":
                nxt = side // 2
            else:
                nxt = -(-side // 2)
            out.append((side, nxt))
            side = nxt
        return out

    def size(self) -> int:
        """Number of distinct architectures the search vector can reach (stage-wise or per-layer),
        counting only non-decreasing width chains."""
        counts = np.ones(1, dtype=object)  # ways to reach each width of the previous block
        prev_widths = np.array([0])
        for b in self.blocks:
            micro_per_depth = [
                int(np.prod([len(c) ** (1 if self.sampling == "stage" else d) for c in b.micro.values()]))
                for d in b.depths
            ]
            per_width = sum(micro_per_depth)
            new = np.array([sum(counts[prev_widths <= w]) * per_width for w in b.widths], dtype=object)
            counts, prev_widths = new, np.asarray(b.widths)
        return int(sum(counts)) * len(self.resolutions)

    # ---- analytic cost (MACs in the ElasticViT convention, parameters of the built model) ----
    def cost(self, genomes: np.ndarray) -> dict[str, np.ndarray]:
        v = self.values(genomes)
        res, width, depth, micro = v["res"].astype(np.int64), v["width"].astype(np.int64), v["depth"], v["micro"]
        n = len(res)
        macs = np.zeros(n, dtype=np.int64)
        params = np.zeros(n, dtype=np.int64)
        grids = self.grids(res, "ceil")
        c0 = width[:, 0]
        half = res // 2
        macs += 3 * c0 * half * half * 9  # first conv
        params += 27 * c0 + 2 * c0
        hd = self.head_dim
        for bi, b in enumerate(self.blocks):
            rin, rout = grids[bi]
            cout = width[:, bi]
            cin_stage = width[:, bi - 1] if bi else c0
            for layer in range(b.max_depth):
                on = layer < depth[:, bi]
                first = layer == 0
                cin = cin_stage if first else cout
                stride = b.stride if first else 1
                lm = np.zeros(n, dtype=np.int64)
                lp = np.zeros(n, dtype=np.int64)
                if b.kind == "conv":
                    m, p = _mbconv(cin, cout, micro[bi]["expand"][:, layer], micro[bi]["kernel"][:, layer],
                                   b.se, stride, rout)
                    lm += m
                    lp += p
                else:
                    if first:  # the downsampling MBConv; ElasticViT counts no SE and no shortcut MACs
                        inner = cin * self.ds_expand
                        ds_in = rout * 2 if stride == 2 else rout
                        lm += cin * inner * ds_in * ds_in + inner * 9 * rout * rout + inner * cout * rout * rout
                        _, p = _mbconv(cin, cout, np.full(n, self.ds_expand), np.full(n, 3), True, stride, rout)
                        lp += p
                    tokens = rout * rout
                    heads = cout // hd
                    vdim = micro[bi]["v_scale"][:, layer] * hd * heads  # all heads' v channels
                    qkdim = hd * heads
                    lm += heads * tokens * tokens * hd + heads * tokens * tokens + vdim * tokens * tokens  # QK^T, softmax, AV
                    lm += cout * tokens * (2 * qkdim + vdim) + tokens * vdim * cout + tokens * vdim  # qkv, proj, dw-V
                    lp += 2 * cout + cout * (2 * qkdim + vdim) + vdim * 9 + vdim * cout + cout
                    lp += (2 * rout - 1) ** 2 * heads  # relative-position bias of this grid
                    hidden = micro[bi]["mlp"][:, layer] * cout
                    lm += 2 * cout * hidden * tokens
                    lp += 2 * cout + cout * hidden + hidden + hidden * cout + cout
                macs += np.where(on, lm, 0)
                params += np.where(on, lp, 0)
        c = width[:, -1]
        last = grids[-1][1]
        wide = c * self.classifier_mul
        macs += c * wide * last * last + wide * self.head_width + self.head_width * self.num_classes
        params += c * wide + wide + 2 * wide + wide * self.head_width + self.head_width
        params += self.head_width * self.num_classes + self.num_classes
        return {"macs": macs, "params": params}

    # ---- latency-table blocks (nn-Meter key grammar v3) ------------------------------------------
    def latency_slots(self, grid_rounding: str) -> list[LatencySlot]:
        """One slot per block the nn-Meter predictor sums: firstconv, conv_* per MBConv layer,
        transds_* + transattn_* + transffn_* per transformer layer (ds only for layer 0), mbpool_*.
        A conv layer's key uses its input side; layer 0 of a transformer stage uses the input side
        for transds and the output side for attention/FFN; the head uses the last output side."""
        table = {r: [(int(a[0]), int(b[0])) for a, b in self.grids(np.array([r]), grid_rounding)]
                 for r in self.resolutions}

        def side(r, bi, out):  # a block's input (0) or output (1) grid side at resolution r
            return table[r][bi][out]

        hd, dse = self.head_dim, self.ds_expand
        slots = [LatencySlot((0, self.g_width[0]), lambda r, c: f"firstconv_{r}_3_{c}_2_3",
                             block=lambda r, c: BlockSpec.of("first_conv", (3, r, r), cout=c))]
        for bi, b in enumerate(self.blocks):
            gw, gd = self.g_width[bi], self.g_depth[bi]
            gin = self.g_width[bi - 1] if bi else self.g_width[0]
            for layer in range(b.max_depth):
                # present when depth > layer: the first depth choice index with depth > layer
                active = None if layer < b.depths[0] else (gd, int(np.searchsorted(b.depths, layer + 1)))
                if b.kind == "conv":
                    ge, gk = self.g_micro[bi]["expand"][layer], self.g_micro[bi]["kernel"][layer]
                    se = "se" if b.se else "nose"
                    if layer == 0:
                        def key(r, cin, cout, e, k, bi=bi, s=b.stride, se=se):
                            return f"conv_{side(r, bi, 0)}_{cin}_{cout}_{e}_{s}_{ACT}_{k}_{se}"

                        def block(r, cin, cout, e, k, bi=bi, s=b.stride, se=b.se):
                            hw = side(r, bi, 0)
                            return BlockSpec.of("mbconv", (cin, hw, hw), cout=cout, expand=e, kernel=k, stride=s, se=se)
                        slots.append(LatencySlot((0, gin, gw, ge, gk), key, active, ordered=((1, 2),), block=block))
                    else:
                        def key(r, c, e, k, bi=bi, se=se):
                            return f"conv_{side(r, bi, 1)}_{c}_{c}_{e}_1_{ACT}_{k}_{se}"

                        def block(r, c, e, k, bi=bi, se=b.se):
                            hw = side(r, bi, 1)
                            return BlockSpec.of("mbconv", (c, hw, hw), cout=c, expand=e, kernel=k, stride=1, se=se)
                        slots.append(LatencySlot((0, gw, ge, gk), key, active, block=block))
                else:
                    gm, gv = self.g_micro[bi]["mlp"][layer], self.g_micro[bi]["v_scale"][layer]
                    if layer == 0:
                        def key(r, cin, cout, bi=bi, s=b.stride):
                            return f"transds_{side(r, bi, 0)}_{cin}_{cout}_{s}_{dse}"

                        def block(r, cin, cout, bi=bi, s=b.stride):  # the stage's downsampling MBConv
                            hw = side(r, bi, 0)
                            return BlockSpec.of("mbconv", (cin, hw, hw), cout=cout, expand=dse, kernel=3, stride=s, se=True)
                        slots.append(LatencySlot((0, gin, gw), key, active, ordered=((1, 2),), block=block))

                    def key_attn(r, c, v, bi=bi):
                        return f"transattn_{side(r, bi, 1)}_{c}_{ACT}_{v}_ln"

                    def block_attn(r, c, v, bi=bi):
                        hw = side(r, bi, 1)
                        return BlockSpec.of("attention", (hw * hw, c), side=hw, heads=c // hd, v_scale=v, head_dim=hd)

                    def key_ffn(r, c, m, bi=bi):
                        return f"transffn_{side(r, bi, 1)}_{c}_{m}_{ACT}_ln"

                    def block_ffn(r, c, m, bi=bi):
                        hw = side(r, bi, 1)
                        return BlockSpec.of("ffn", (hw * hw, c), ratio=m)

                    slots.append(LatencySlot((0, gw, gv), key_attn, active, block=block_attn))
                    slots.append(LatencySlot((0, gw, gm), key_ffn, active, block=block_ffn))
        last = len(self.blocks) - 1

        def block_head(r, c):
            hw = side(r, last, 1)
            return BlockSpec.of("elasticvit_head", (c, hw, hw), mul=self.classifier_mul, width=self.head_width,
                                classes=self.num_classes)
        slots.append(LatencySlot((0, self.g_width[last]),
                                 lambda r, c: f"mbpool_{side(r, last, 1)}_{c}_{self.head_width}_{self.classifier_mul}_{ACT}",
                                 block=block_head))
        return slots

    # ---- the paper's 10-tuple encoding -------------------------------------------------------
    def to_encoding(self, arch: Arch) -> list:
        v = self.values(np.asarray([arch.genome]))
        res, width, depth, micro = int(v["res"][0]), v["width"][0], v["depth"][0], v["micro"]
        conv_ratio, kernel, mlp, heads, vs = [], [], [], [], []
        for bi, b in enumerate(self.blocks):
            d = int(depth[bi])
            if b.kind == "conv":
                conv_ratio += [int(x) for x in micro[bi]["expand"][0, :d]]
                kernel += [int(x) for x in micro[bi]["kernel"][0, :d]]
            else:
                mlp += [int(x) for x in micro[bi]["mlp"][0, :d]]
                vs += [int(x) for x in micro[bi]["v_scale"][0, :d]]
                heads += [int(width[bi]) // self.head_dim] * d
        ones = [1] * len(mlp)
        return [res, [int(x) for x in width], [int(x) for x in depth], conv_ratio, kernel, mlp, heads, ones, list(ones), vs]

    def from_encoding(self, enc: Any, what: str = "encoding") -> Arch:
        def bad(msg: str) -> UserError:
            return UserError(f"{what}: {msg}")

        if not isinstance(enc, (list, tuple)) or len(enc) != 10:
            raise bad("expected the 10-item ElasticViT encoding [res, channels, depths, conv_ratio, kernel, "
                      "mlp_ratio, num_heads, window, qk_scale, v_scale]")
        def ints(name, v):
            if isinstance(v, bool) or not isinstance(v, int):
                raise bad(f"{name} must hold integers, got {v!r}")
            return v

        res, channels, depths, conv_ratio, kernel, mlp, heads, window, qk, vs = enc
        ints("res", res)
        for name, lst in zip(("channels", "depths", "conv_ratio", "kernel", "mlp_ratio", "num_heads", "window",
                              "qk_scale", "v_scale"), enc[1:]):
            if not isinstance(lst, (list, tuple)):
                raise bad(f"{name} must be a list, got {lst!r}")
            for v in lst:
                ints(name, v)
        nb = len(self.blocks)
        if not isinstance(channels, (list, tuple)) or len(channels) != nb:
            raise bad(f"channels must list {nb} widths (stem + {nb - 1} stages), got {channels!r}")
        if not isinstance(depths, (list, tuple)) or len(depths) != nb:
            raise bad(f"depths must list {nb} depths, got {depths!r}")
        n_conv = sum(d for d, b in zip(depths, self.blocks) if b.kind == "conv")
        n_t = sum(d for d, b in zip(depths, self.blocks) if b.kind == "transformer")
        for name, lst, n in (("conv_ratio", conv_ratio, n_conv), ("kernel", kernel, n_conv), ("mlp_ratio", mlp, n_t),
                             ("num_heads", heads, n_t), ("window", window, n_t), ("qk_scale", qk, n_t), ("v_scale", vs, n_t)):
            if not isinstance(lst, (list, tuple)) or len(lst) != n:
                raise bad(f"{name} must have {n} entries (one per layer for these depths), got {lst!r}")
        if any(w != 1 for w in window) or any(q != 1 for q in qk):
            raise bad("window and qk_scale must be 1 (global attention, q/k head dim 16)")
        values: dict[str, Any] = {"resolution": res}
        ci = ti = 0
        for bi, b in enumerate(self.blocks):
            values[f"{b.name}.width"] = channels[bi]
            values[f"{b.name}.depth"] = depths[bi]
            for layer in range(depths[bi]):
                if b.kind == "conv":
                    values[f"{b.name}.expand.{layer}"] = conv_ratio[ci]
                    values[f"{b.name}.kernel.{layer}"] = kernel[ci]
                    ci += 1
                else:
                    if heads[ti] != channels[bi] // self.head_dim:
                        raise bad(f"num_heads of {b.name} must be width/{self.head_dim} = {channels[bi] // self.head_dim}, got {heads[ti]}")
                    values[f"{b.name}.mlp.{layer}"] = mlp[ti]
                    values[f"{b.name}.v_scale.{layer}"] = vs[ti]
                    ti += 1
        for name in list(values):
            gene = next((g for g in self.genes if g.name == name), None)
            if gene is None:
                raise bad(f"{name} is beyond the space (max depth exceeded)")
            if values[name] not in gene.choices:
                raise bad(f"{name}={values[name]!r} is not one of {list(gene.choices)}")
        return self.from_values(values)

    def parse_arch(self, spec: Any) -> Arch:
        if isinstance(spec, (list, tuple)):
            return self.from_encoding(spec)
        return super().parse_arch(spec)

    def presets(self) -> dict[str, Arch]:
        if self._presets is None:
            presets = {}
            for name, enc in self._preset_specs.items():
                try:
                    presets[name] = self.from_encoding(enc, what=f"preset {name}")
                except UserError as e:
                    raise self._doc.error(f"presets.{name}", str(e)) from None
            self._presets = presets
        return self._presets

    # ---- human-readable columns --------------------------------------------------------------
    def decode(self, arch: Arch) -> dict[str, Any]:
        v = self.values(np.asarray([arch.genome]))
        out: dict[str, Any] = {"resolution": int(v["res"][0])}
        for bi, b in enumerate(self.blocks):
            d = int(v["depth"][0, bi])
            out[f"{b.name}.width"] = int(v["width"][0, bi])
            out[f"{b.name}.depth"] = d
            for m, vals in v["micro"][bi].items():
                if len(b.micro[m]) == 1:
                    continue
                layer_vals = [int(x) for x in vals[0, :d]]
                out[f"{b.name}.{m}"] = str(layer_vals[0]) if len(set(layer_vals)) == 1 else "|".join(map(str, layer_vals))
        out["encoding"] = json.dumps(self.to_encoding(arch), separators=(",", ":"))
        return out

    def input_resolution(self, arch: Arch) -> int:
        return int(self.values(np.asarray([arch.genome]))["res"][0])

    def build(self, arch: Arch):
        from nas.nets.elasticvit import ElasticViTNet

        return ElasticViTNet.from_arch(self, arch)

    def build_supernet(self):
        from nas.elastic.elasticvit import ElasticViTSupernet

        return ElasticViTSupernet(self)


def _mbconv(cin, cout, expand, kernel, se: bool, stride: int, rout):
    """MACs (ElasticViT convention) and parameters of one MBConv layer, vectorised.

    MACs: expand 1x1 (at the input side; ElasticViT takes 2 x output side for stride 2), depthwise,
    SE's two 1x1 convs, projection, and the stride-2 shortcut 1x1 conv (counted even when widths
    match). Parameters: the layers the model builds; BN has 2 per channel; the shortcut 1x1 conv
    exists only when widths differ."""
    inner = cin * expand
    has_pw = expand > 1
    rin = rout * 2 if stride == 2 else rout
    macs = np.where(has_pw, cin * inner * rin * rin, 0) + inner * kernel * kernel * rout * rout + inner * cout * rout * rout
    params = np.where(has_pw, cin * inner + 2 * inner, 0) + inner * kernel * kernel + 2 * inner + inner * cout + 2 * cout
    if se:
        red = inner // 4
        macs = macs + inner * red * 2
        params = params + inner * red + red + red * inner + inner
    if stride == 2:
        macs = macs + cin * cout * rout * rout
    params = params + np.where(cin != cout, cin * cout, 0)
    return macs, params


def load(doc: TomlDoc) -> ElasticViTSpace:
    return ElasticViTSpace(doc)

