"""DeepMAD (Shen et al., CVPR 2023; TinyNAS v2): CNNs as block lists, designed by a mathematical program.

A network is the block list of the original code: a stem ``ConvKXBNRELU`` (3 -> c, stride 2),
``n`` super-blocks of one class, and for the MobileNet-like space a 1x1 ``ConvKXBNRELU`` head::

    {"class": "SuperResK1KXK1", "in": 96, "out": 384, "s": 2, "k": 5, "L": 6, "btn": 40}

A super-block is ``L`` inner blocks; the first maps in -> out with the block's stride, the others
out -> out at stride 1.

* ``K1KXK1`` (ResNet-like, ``SuperResK1KXK1``): 1x1 in->btn, kxk btn->btn (stride s), 1x1
  btn->out, BN after each, ReLU after the first two and after the residual add; the residual is a
  2x2 avg-pool when s = 2, then a 1x1 conv + BN, forced on the first inner block, else when in != out.
* ``K1DWSEK1`` (MobileNet-like, ``SuperResK1DWSEK1``): 1x1 in->btn, depthwise kxk (stride s), SE
  (ratio 1/4, its bottleneck a multiple of 8), 1x1 btn->out, SiLU; a residual only when in == out.

Genome: one gene per number of the block list (input resolution, stem width, and per super-block
stride, out, btn, kernel, depth, and the head width), so every released structure is a point of
the space, the released R18/R34 with their decreasing last widths included. The rules of the
original mutator (widths multiples of 8 and non-decreasing, out <= 4 in, out/10 <= btn <= out, the
bottleneck-ratio grid, stem width limits) are the *solver's* rules: ``vars`` and ``to_genomes``
search only structures that follow them, and ``nas design`` solves over those.

Cost (torch-free, vectorised): ``macs`` counts conv and linear multiply-accumulates at the
network's real feature-map sizes (the engine's convention; 2 x macs equals torch's flop counter);
``flops`` is the original code's count that its budgets bind to (conv MACs plus BN 2C, ReLU C,
residual add and avg-pool terms per pixel, SE left out, no classifier, at the float resolution
R / prod(strides)); ``params`` is the whole model including the classifier (sum of numel);
``params_backbone`` the original's ``model_size`` (no classifier), which ``--max-params`` binds to.
The DeepMAD objective (entropy, effectiveness rho, depth penalty) lives in ``nas.design.deepmad``.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from nas.arch import GENOME_DTYPE, Arch, Gene
from nas.errors import UserError
from nas.spaces.base import BlockSpec, LayerCensus, SearchSpace, Var
from nas.tomldoc import TomlDoc

BLOCK_CLASSES = {"K1KXK1": "SuperResK1KXK1", "K1DWSEK1": "SuperResK1DWSEK1"}
STEM_CLASS = "ConvKXBNRELU"
KNOWN_KEYS = {"class", "in", "out", "s", "k", "L", "btn", "inner_class"}


def smart_round(x: np.ndarray | float, base: int = 8) -> np.ndarray:
    """Nearest multiple of ``base``, at least ``base`` (the original's rounding of widths;
    numpy rounds halves to even, as Python's round does)."""
    return np.maximum(base, np.round(np.asarray(x, dtype=float) / base) * base).astype(np.int64)


def se_channels(btn: np.ndarray) -> np.ndarray:
    """The SE bottleneck of the original: max(1, round(btn / 4) // 8) * 8."""
    return np.maximum(1, np.round(np.asarray(btn) * 0.25).astype(np.int64) // 8) * 8


@dataclass(frozen=True)
class Structure:
    """Gene values of a batch of genomes as arrays: (n,) or (n, blocks)."""

    res: np.ndarray
    stem: np.ndarray
    stride: np.ndarray
    out: np.ndarray
    btn: np.ndarray
    k: np.ndarray
    L: np.ndarray
    head: np.ndarray | None  # (n,) head width, None for spaces without a head

    @property
    def cin(self) -> np.ndarray:
        """Input width of each super-block: the previous block's output."""
        return np.concatenate([self.stem[:, None], self.out[:, :-1]], axis=1)


class DeepMADSpace(SearchSpace):
    family = "deepmad"

    def __init__(self, doc: TomlDoc):
        d = self._read_header(doc)
        self._doc = doc
        kind = doc.get(d, "block", "block", str)
        if kind not in BLOCK_CLASSES:
            raise doc.error("block", f"expected one of {sorted(BLOCK_CLASSES)}, got {kind!r}")
        self.block = kind
        self.block_class = BLOCK_CLASSES[kind]
        self.resolutions = tuple(doc.int_list(d, "resolution", "resolution"))
        self.resolution = self.resolutions[0]
        self.score_resolution = doc.get(d, "score_resolution", "score_resolution", int, 224)
        self.num_classes = doc.get(d, "num_classes", "num_classes", int, 1000)
        self.stem_kernel = doc.get(d, "stem_kernel", "stem_kernel", int, 3)
        self.strides = tuple(doc.int_list(d, "strides", "strides"))
        self.n_blocks = len(self.strides)
        if any(s not in (1, 2) for s in self.strides):
            raise doc.error("strides", f"each stride is 1 or 2, got {list(self.strides)}")
        self.alpha = tuple(float(a) for a in doc.get(d, "alpha", "alpha", list, [1, 1, 1, 1, 8]))
        if sum(self.strides) - self.n_blocks + 1 != len(self.alpha):
            raise doc.error("strides", f"{self.strides.count(2)} stride-2 super-blocks make "
                                       f"{self.strides.count(2) + 1} stages, but alpha has {len(self.alpha)} weights")
        self.kernels = tuple(doc.int_list(d, "kernels", "kernels"))
        self.max_channels = doc.get(d, "max_channels", "max_channels", int)
        self.max_btn = doc.get(d, "max_btn", "max_btn", int, self.max_channels)
        self.max_depth = doc.get(d, "max_depth", "max_depth", int)
        heads = doc.get(d, "head", "head", list, [])
        if self.block == "K1DWSEK1" and not heads:
            raise doc.error("head", "the K1DWSEK1 space ends with a 1x1 head conv: give its widths, e.g. [1792]")
        self.heads = tuple(int(h) for h in heads)
        for field, v in (("max_channels", self.max_channels), ("max_btn", self.max_btn),
                         ("max_depth", self.max_depth), ("num_classes", self.num_classes)):
            if v < 1:
                raise doc.error(field, f"must be positive, got {v}")
        if any(k % 2 == 0 or k < 1 for k in self.kernels):
            raise doc.error("kernels", f"kernel sizes are odd and positive, got {list(self.kernels)}")
        self.rules = self._read_rules(doc, d.get("solver", {}))
        self.proxy_batch = doc.get(d, "proxy_batch", "proxy_batch", str, "imagenet-samples")
        self._build_genes()
        self._build_vars()
        canon = json.dumps({k: d[k] for k in sorted(d) if k not in ("description", "source", "presets", "seeds")},
                           sort_keys=True)
        self.fingerprint = hashlib.blake2b(canon.encode(), digest_size=8).hexdigest()
        self._presets: dict[str, Arch] | None = None

    # ---- definition ------------------------------------------------------------------------
    def _read_rules(self, doc: TomlDoc, t: dict) -> dict:
        """The original mutator's rules, which the solvers follow (``[solver]`` of the TOML)."""
        r = {
            "channel_step": doc.get(t, "channel_step", "solver.channel_step", int, 8),
            "kernels": tuple(doc.get(t, "kernels", "solver.kernels", list, list(self.kernels))),
            "channel_scales": tuple(float(x) for x in doc.get(t, "channel_scales", "solver.channel_scales", list)),
            "depth_steps": tuple(doc.get(t, "depth_steps", "solver.depth_steps", list, [-2, -1, 1, 2])),
            "stem_min": doc.get(t, "stem_min", "solver.stem_min", int, 8),
            "stem_max": doc.get(t, "stem_max", "solver.stem_max", int, 32),
            "first_block_max_depth": doc.get(t, "first_block_max_depth", "solver.first_block_max_depth", int, 3),
            "out_max_ratio": float(doc.get(t, "out_max_ratio", "solver.out_max_ratio", (int, float), 0)),
            "btn_min_ratio": float(doc.get(t, "btn_min_ratio", "solver.btn_min_ratio", (int, float), 0)),
            "btn_ratios": tuple(float(x) for x in doc.get(t, "btn_ratios", "solver.btn_ratios", list, [])),
            "rho": float(doc.get(t, "rho", "solver.rho", (int, float))),
            "depth_penalty": float(doc.get(t, "depth_penalty", "solver.depth_penalty", (int, float), 10.0)),
        }
        bad = [k for k in r["kernels"] if k not in self.kernels]
        if bad:
            raise doc.error("solver.kernels", f"{bad} not among the space's kernels {list(self.kernels)}")
        if self.block == "K1DWSEK1" and not r["btn_ratios"]:
            raise doc.error("solver.btn_ratios", "the K1DWSEK1 solver searches btn as a ratio of out: give the grid")
        if r["stem_max"] > self.max_channels or r["stem_min"] > r["stem_max"]:
            raise doc.error("solver.stem_max", "need stem_min <= stem_max <= max_channels")
        return r

    def _build_genes(self) -> None:
        genes = [Gene("resolution", self.resolutions), Gene("stem.out", tuple(range(1, self.max_channels + 1)))]
        for i, s in enumerate(self.strides, start=1):
            genes += [
                Gene(f"b{i}.s", (s, 3 - s)),  # the space's stride first: searchers leave it at index 0
                Gene(f"b{i}.out", tuple(range(1, self.max_channels + 1))),
                Gene(f"b{i}.btn", tuple(range(1, self.max_btn + 1))),
                Gene(f"b{i}.k", self.kernels),
                Gene(f"b{i}.L", tuple(range(1, self.max_depth + 1))),
            ]
        if self.heads:
            genes.append(Gene("head.out", self.heads))
        self.genes = tuple(genes)
        self._pos = {g.name: i for i, g in enumerate(self.genes)}

    def _col(self, name: str) -> int:
        return self._pos[name]

    def _block_cols(self, field: str) -> list[int]:
        return [self._pos[f"b{i}.{field}"] for i in range(1, self.n_blocks + 1)]

    def _build_vars(self) -> None:
        """The solver's grid: widths in steps of ``channel_step``, stem in [stem_min, stem_max],
        K1DWSEK1 bottlenecks as a ratio of out from ``btn_ratios``, kernels from the solver's list."""
        step, r = self.rules["channel_step"], self.rules
        self._stem_grid = np.arange(max(step, -(-r["stem_min"] // step) * step), r["stem_max"] + 1, step)
        self._out_grid = np.arange(step, self.max_channels + 1, step)
        self._btn_grid = np.arange(step, self.max_btn + 1, step)
        self._kernel_grid = np.array(r["kernels"])
        vars_ = [Var("stem.out", len(self._stem_grid), (self._col("stem.out"),))]
        for i in range(1, self.n_blocks + 1):
            vars_.append(Var(f"b{i}.out", len(self._out_grid), (self._col(f"b{i}.out"),)))
            if self.block == "K1DWSEK1":
                vars_.append(Var(f"b{i}.btn_ratio", len(r["btn_ratios"]), (self._col(f"b{i}.btn"),)))
            else:
                vars_.append(Var(f"b{i}.btn", len(self._btn_grid), (self._col(f"b{i}.btn"),)))
            vars_.append(Var(f"b{i}.k", len(self._kernel_grid), (self._col(f"b{i}.k"),)))
            vars_.append(Var(f"b{i}.L", self.max_depth, (self._col(f"b{i}.L"),)))
        self.vars = tuple(vars_)

    # ---- values <-> genomes ----------------------------------------------------------------
    def values(self, genomes: np.ndarray) -> Structure:
        g = np.asarray(genomes, dtype=np.int64)
        res = np.asarray(self.resolutions)[g[:, 0]]
        k = np.asarray(self.kernels)[g[:, self._block_cols("k")]]
        strides = np.where(g[:, self._block_cols("s")] == 0, np.asarray(self.strides), 3 - np.asarray(self.strides))
        head = np.asarray(self.heads)[g[:, self._col("head.out")]] if self.heads else None
        return Structure(res=res, stem=g[:, 1] + 1, stride=strides, out=g[:, self._block_cols("out")] + 1,
                         btn=g[:, self._block_cols("btn")] + 1, k=k, L=g[:, self._block_cols("L")] + 1, head=head)

    def to_genomes(self, vectors: np.ndarray) -> np.ndarray:
        """Solver grid vectors -> genomes that follow the solver's rules (vectorised)."""
        v = np.asarray(vectors, dtype=np.int64)
        if v.ndim != 2 or v.shape[1] != len(self.vars):
            raise ValueError(f"expected vectors of shape (n, {len(self.vars)}), got {v.shape}")
        v = np.clip(v, 0, self.var_sizes - 1)
        n, r = len(v), self.rules
        stem = self._stem_grid[v[:, 0]]
        per = v[:, 1:].reshape(n, self.n_blocks, 4)
        out = self._out_grid[per[:, :, 0]]
        depth = per[:, :, 3] + 1
        prev = stem.copy()
        outs = np.empty_like(out)
        for i in range(self.n_blocks):  # non-decreasing, and at most out_max_ratio x the input
            o = np.maximum(out[:, i], prev)
            if r["out_max_ratio"]:
                o = np.minimum(o, np.maximum(prev, (prev * r["out_max_ratio"]).astype(np.int64) // 8 * 8))
            outs[:, i] = o
            prev = o
        if self.block == "K1DWSEK1":
            btn = smart_round(outs * np.asarray(r["btn_ratios"])[per[:, :, 1]])
        else:
            btn = np.minimum(self._btn_grid[per[:, :, 1]], outs)
            if r["btn_min_ratio"]:
                btn = np.maximum(btn, np.minimum(outs, smart_round(outs / r["btn_min_ratio"])))
        btn = np.minimum(btn, self.max_btn)
        depth[:, 0] = np.minimum(depth[:, 0], r["first_block_max_depth"])
        kernel_idx = np.searchsorted(np.asarray(self.kernels), self.fit_kernels(self._kernel_grid[per[:, :, 2]]))
        g = np.zeros((n, self.n_genes), dtype=GENOME_DTYPE)
        g[:, self._col("stem.out")] = stem - 1
        g[:, self._block_cols("out")] = outs - 1
        g[:, self._block_cols("btn")] = btn - 1
        g[:, self._block_cols("k")] = kernel_idx
        g[:, self._block_cols("L")] = depth - 1
        return g

    def fit_kernels(self, kernels: np.ndarray) -> np.ndarray:
        """(n, blocks) kernel sizes, each shrunk by 2 while 1.5 k exceeds the side of the map the
        super-block starts on at the default resolution (the original's adjust_structures_inplace)."""
        side = self.resolution / 2 / np.concatenate([[1.0], np.cumprod(self.strides)[:-1]])
        fit = np.maximum(1, np.floor((side / 1.5 - 1) / 2) * 2 + 1).astype(np.int64)
        return np.where(kernels * 1.5 > side, fit, kernels).astype(np.int64)

    def to_vectors(self, genomes: np.ndarray) -> np.ndarray:
        """The nearest grid vector of each genome (the solvers start from released or seed structures)."""
        s = self.values(genomes)
        n = len(s.res)
        v = np.zeros((n, len(self.vars)), dtype=np.int64)
        near = lambda grid, x: np.abs(grid[None, :] - np.asarray(x).reshape(-1, 1)).argmin(1).reshape(np.shape(x))  # noqa: E731
        v[:, 0] = near(self._stem_grid, s.stem)
        per = v[:, 1:].reshape(n, self.n_blocks, 4)
        per[:, :, 0] = near(self._out_grid, s.out)
        if self.block == "K1DWSEK1":
            per[:, :, 1] = near(np.asarray(self.rules["btn_ratios"]), s.btn / s.out)
        else:
            per[:, :, 1] = near(self._btn_grid, s.btn)
        per[:, :, 2] = near(self._kernel_grid, s.k)
        per[:, :, 3] = s.L - 1
        v[:, 1:] = per.reshape(n, -1)
        return v

    def violations(self, genomes: np.ndarray) -> list[str]:
        s = self.values(genomes)
        twos = (s.stride == 2).sum(1)
        want = len(self.alpha) - 1
        bad = np.flatnonzero(twos != want)
        if bad.size:
            return [f"{int(twos[bad[0]])} stride-2 super-blocks, the space's {len(self.alpha)} stages need {want}"]
        side = self.sides(s)
        odd = (side[:, :-1] % 2 == 1) & (s.stride == 2)
        if odd.any():
            i, j = np.argwhere(odd)[0]
            return [f"super-block {j + 1} halves an odd {side[i, j]}x{side[i, j]} map (its avg-pool residual cannot)"]
        return []

    def sides(self, s: Structure) -> np.ndarray:
        """(n, blocks + 1): the feature-map side entering each super-block, then the last one."""
        side = -(-s.res // 2)
        out = [side]
        for j in range(self.n_blocks):
            side = -(-side // s.stride[:, j])
            out.append(side)
        return np.stack(out, axis=1)

    # ---- cost ------------------------------------------------------------------------------
    def cost(self, genomes: np.ndarray) -> dict[str, np.ndarray]:
        s = self.values(genomes)
        c, o, b, k, L = s.cin.astype(float), s.out.astype(float), s.btn.astype(float), s.k.astype(float), s.L
        st = s.stride.astype(float)
        s2 = st ** 2
        k0, c0 = float(self.stem_kernel), s.stem.astype(float)
        n_cls = float(self.num_classes)
        side = self.sides(s).astype(float)
        hin, hout = side[:, :-1], side[:, 1:]
        res = s.res.astype(float)
        # the code's per-pixel FLOP coefficients (multiplied by the square of the float input side)
        stem_f = 3 * c0 * k0 ** 2 / 4 + 2 * c0 / 4 + c0 / 4
        if self.block == "K1KXK1":
            first_f = (c * b + 2 * b + b * b * k * k / s2 + 2 * b / s2 + (b * o + 2 * o) / s2 + b + b / s2 + o / s2
                       + np.where(st == 2, c, 0) + (c * o + 2 * o) / s2 + o / s2)
            rest_f = o * b + 2 * b + b * b * k * k + 2 * b + b * o + 2 * o + b + b + o
            first_p = c * b + 2 * b + b * b * k * k + 2 * b + b * o + 2 * o + c * o + 2 * o
            rest_p = o * b + 2 * b + b * b * k * k + 2 * b + b * o + 2 * o
            first_m = c * b * hin ** 2 + b * b * k * k * hout ** 2 + b * o * hout ** 2 + c * o * hout ** 2
            rest_m = (o * b + b * b * k * k + b * o) * hout ** 2
        else:
            se = se_channels(s.btn).astype(float)
            first_f = (c * b + 2 * b + b * k * k / s2 + 2 * b / s2 + (b * o + 2 * o) / s2 + b + b / s2 + o / s2
                       + np.where((st == 2) & (c == o), c, 0))
            rest_f = o * b + 2 * b + b * k * k + 2 * b + b * o + 2 * o + b + b + o
            se_p = b * se + 2 * se + se * b + 2 * b
            first_p = c * b + 2 * b + b * k * k + 2 * b + se_p + b * o + 2 * o
            rest_p = o * b + 2 * b + b * k * k + 2 * b + se_p + b * o + 2 * o
            first_m = c * b * hin ** 2 + b * k * k * hout ** 2 + 2 * b * se + b * o * hout ** 2
            rest_m = (o * b + b * k * k + b * o) * hout ** 2 + 2 * b * se
        fres = res[:, None] / 2 / np.concatenate([np.ones((len(res), 1)), np.cumprod(st, axis=1)[:, :-1]], axis=1)
        flops = stem_f * res ** 2 + ((first_f + (L - 1) * rest_f / s2) * fres ** 2).sum(1)
        params_b = 3 * c0 * k0 ** 2 + 2 * c0 + (first_p + (L - 1) * rest_p).sum(1)
        macs = 3 * c0 * k0 ** 2 * side[:, 0] ** 2 + (first_m + (L - 1) * rest_m).sum(1)
        last = o[:, -1]
        if s.head is not None:
            h = s.head.astype(float)
            r_last = fres[:, -1] / st[:, -1]
            flops = flops + (last * h + 2 * h + h) * r_last ** 2
            params_b = params_b + last * h + 2 * h
            macs = macs + last * h * side[:, -1] ** 2
            last = h
        layers = 1 + 3 * L.sum(1) + (1 if s.head is not None else 0)
        return {"macs": macs + last * n_cls, "params": params_b + last * n_cls + n_cls, "flops": flops,
                "params_backbone": params_b, "layers": layers.astype(float)}

    # ---- latency layers --------------------------------------------------------------------
    # The block set of a DeepMAD space (widths 1..2048, any kernel, bottleneck and side) is far too
    # large for a dense table, so a table holds the layers it measured, keyed by their signature,
    # and a per-kind linear model on analytic features predicts the rest (nas/latency/layers.py).
    layer_kinds = ("deepmad_stem", "deepmad_first", "deepmad_inner", "deepmad_head")
    SIG = ("cin", "cout", "btn", "k", "s", "side")

    def latency_layers(self, genomes: np.ndarray) -> LayerCensus:
        """Per genome: the stem, each super-block's first layer, its other L - 1 layers (one slot,
        counted L - 1 times) and the head (1x1 head conv if any, pooling, classifier)."""
        st = self.values(genomes)
        n, nb = len(st.res), self.n_blocks
        side = self.sides(st)
        cin = st.cin
        slots = 2 + 2 * nb
        sig = np.zeros((n, slots, 6), dtype=np.int64)
        kind = np.zeros((n, slots), dtype=np.int64)
        count = np.ones((n, slots), dtype=np.int64)
        sig[:, 0] = np.stack([np.full(n, 3), st.stem, np.zeros(n, np.int64), np.full(n, self.stem_kernel),
                              np.full(n, 2), st.res], axis=1)
        for j in range(nb):
            a, b = 1 + 2 * j, 2 + 2 * j
            kind[:, a], kind[:, b] = 1, 2
            sig[:, a] = np.stack([cin[:, j], st.out[:, j], st.btn[:, j], st.k[:, j], st.stride[:, j], side[:, j]], axis=1)
            sig[:, b] = np.stack([st.out[:, j], st.out[:, j], st.btn[:, j], st.k[:, j], np.ones(n, np.int64),
                                  side[:, j + 1]], axis=1)
            count[:, b] = st.L[:, j] - 1
        kind[:, -1] = 3
        head = st.head if st.head is not None else np.zeros(n, np.int64)
        zero = np.zeros(n, np.int64)  # fields a layer does not use are 0, so equal layers share one key
        sig[:, -1] = np.stack([st.out[:, -1], head, np.full(n, self.num_classes), zero, zero, side[:, -1]], axis=1)
        return LayerCensus(kind, sig, count)

    def layer_key(self, kind: int, sig) -> str:
        c, o, b, k, s, r = (int(v) for v in sig)
        name = self.layer_kinds[kind]
        if name == "deepmad_stem":
            return f"{name}:c{c}-o{o}-k{k}-s{s}-r{r}"
        if name == "deepmad_head":
            return f"{name}:c{c}-h{o}-n{b}-r{r}"
        return f"{name}:{self.block}:c{c}-o{o}-b{b}-k{k}-s{s}-r{r}"

    def parse_layer_key(self, key: str) -> tuple[int, tuple[int, ...]] | None:
        """(kind, signature) of a key this space can read; None for other keys (another block type)."""
        import re

        name, _, rest = key.partition(":")
        if name not in self.layer_kinds:
            return None
        kind = self.layer_kinds.index(name)
        pats = {"deepmad_stem": r"c(\d+)-o(\d+)-k(\d+)-s(\d+)-r(\d+)", "deepmad_head": r"c(\d+)-h(\d+)-n(\d+)-r(\d+)"}
        m = re.fullmatch(pats.get(name, re.escape(self.block) + r":c(\d+)-o(\d+)-b(\d+)-k(\d+)-s(\d+)-r(\d+)"), rest)
        if m is None:
            return None
        v = [int(x) for x in m.groups()]
        if name == "deepmad_stem":
            return kind, (v[0], v[1], 0, v[2], v[3], v[4])
        if name == "deepmad_head":
            return kind, (v[0], v[1], v[2], 0, 0, v[3])
        return kind, tuple(v)

    def layer_spec(self, kind: int, sig) -> BlockSpec:
        c, o, b, k, s, r = (int(v) for v in sig)
        name = self.layer_kinds[kind]
        if name == "deepmad_stem":
            return BlockSpec.of(name, (c, r, r), cout=o, k=k)
        if name == "deepmad_head":
            return BlockSpec.of(name, (c, r, r), head=o, classes=b)
        if name == "deepmad_first":
            return BlockSpec.of(name, (c, r, r), block=self.block, cout=o, btn=b, k=k, stride=s)
        return BlockSpec.of(name, (c, r, r), block=self.block, btn=b, k=k)

    def layer_features(self, kind: np.ndarray, sig: np.ndarray) -> np.ndarray:
        """(..., 4): FLOPs (2 x MACs), elements written by all operators, operators, 1 -- the
        features nas/latency/fit.py fits on, computed analytically (torch-free) for any batch."""
        c, o, b, k, s, h = (sig[..., i].astype(float) for i in range(6))
        ho = np.ceil(h / np.maximum(s, 1))
        first = kind == 1
        if self.block == "K1KXK1":
            proj = first.astype(float)  # the first layer always projects (force_proj), inner ones never
            pool = (first & (s == 2)).astype(float)
            macs_b = c * b * h ** 2 + b * b * k * k * ho ** 2 + b * o * ho ** 2 + proj * c * o * ho ** 2
            elems_b = 3 * b * h ** 2 + 3 * b * ho ** 2 + 4 * o * ho ** 2 + pool * c * ho ** 2 + proj * 2 * o * ho ** 2
            ops_b = 10 + pool + 2 * proj
        else:
            se = se_channels(sig[..., 2]).astype(float)
            res = (c == o).astype(float)
            pool = res * (s == 2)
            macs_b = c * b * h ** 2 + b * k * k * ho ** 2 + 2 * b * se + b * o * ho ** 2
            elems_b = 3 * b * h ** 2 + 4 * b * ho ** 2 + 4 * b + 3 * se + 3 * o * ho ** 2 + res * (pool * c * ho ** 2 + o * ho ** 2)
            ops_b = 17 + res * (1 + pool)
        hd = o  # head width (0: no head conv)
        wide = np.where(hd > 0, hd, c)
        macs = np.select([kind == 0, kind == 3], [c * o * k * k * ho ** 2, (hd > 0) * c * hd * h ** 2 + wide * b], macs_b)
        elems = np.select([kind == 0, kind == 3], [3 * o * ho ** 2, (hd > 0) * 3 * hd * h ** 2 + wide + b], elems_b)
        ops = np.select([kind == 0, kind == 3], [np.full_like(c, 3.0), (hd > 0) * 3 + 3.0], ops_b)
        return np.stack([2 * macs, elems, ops, np.ones_like(c)], axis=-1)

    def layer_universe(self, samples: int = 256) -> dict[str, BlockSpec]:
        """The layers a table is built from: those of the presets, the solver's seeds and
        ``samples`` architectures drawn on the solver's grid (seed 0), so a build is repeatable."""
        genomes = [a.genome for a in (*self.presets().values(), *self.seeds().values())]
        g = np.concatenate([np.asarray(genomes, dtype=GENOME_DTYPE).reshape(-1, len(self.genes)),
                            self.sample(np.random.default_rng(0), samples)])
        census = self.latency_layers(g)
        out = {}
        for kind, sig, cnt in zip(census.kind.ravel(), census.sig.reshape(-1, 6), census.count.ravel()):
            if cnt > 0:
                out.setdefault(self.layer_key(int(kind), sig), self.layer_spec(int(kind), sig))
        return dict(sorted(out.items()))

    # ---- the block-list encoding -----------------------------------------------------------
    def structure(self, arch: Arch) -> list[dict[str, int]]:
        """The original's block list of one architecture."""
        s = self.values(np.asarray([arch.genome]))
        blocks = [{"class": STEM_CLASS, "in": 3, "out": int(s.stem[0]), "s": 2, "k": self.stem_kernel}]
        prev = int(s.stem[0])
        for j in range(self.n_blocks):
            blocks.append({"class": self.block_class, "in": prev, "out": int(s.out[0, j]), "s": int(s.stride[0, j]),
                           "k": int(s.k[0, j]), "L": int(s.L[0, j]), "btn": int(s.btn[0, j])})
            prev = int(s.out[0, j])
        if s.head is not None:
            blocks.append({"class": STEM_CLASS, "in": prev, "out": int(s.head[0]), "s": 1, "k": 1})
        return blocks

    def to_encoding(self, arch: Arch) -> dict[str, Any]:
        return {"image_size": int(self.values(np.asarray([arch.genome])).res[0]), "structure": self.structure(arch)}

    def from_structure(self, spec: Any, what: str = "structure") -> Arch:
        """An Arch from a block list, or a structure file's object: ``{"structure": [...]}``,
        ``{"released_structure": ...}``, ``{"best_structures": [[...]]}``, ``{"structure_info": ...}``;
        ``image_size`` beside it sets the resolution."""
        image_size = None
        if isinstance(spec, dict):
            image_size = spec.get("image_size")
            for key in ("structure", "released_structure", "structure_info", "best_structures"):
                if key in spec:
                    blocks = spec[key]
                    if key == "best_structures":
                        blocks = blocks[0] if blocks and isinstance(blocks[0], list) else blocks
                    break
            else:
                raise UserError(f"{what}: expected a block list or an object with 'structure' "
                                f"(or 'released_structure', 'best_structures'), got keys {sorted(spec)}")
        else:
            blocks = spec
        if not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks):
            raise UserError(f"{what}: a structure is a list of blocks (JSON objects)")
        n_want = 1 + self.n_blocks + (1 if self.heads else 0)
        if len(blocks) != n_want:
            raise UserError(f"{what}: space {self.name!r} has {n_want} blocks (stem, {self.n_blocks} "
                            f"{self.block_class}{', head' if self.heads else ''}), got {len(blocks)}")

        def field(i: int, key: str) -> int:
            b = blocks[i]
            if key not in b:
                raise UserError(f"{what}: block {i} ({b.get('class', '?')}): field {key!r} is missing")
            v = b[key]
            if isinstance(v, bool) or not isinstance(v, int):
                raise UserError(f"{what}: block {i} ({b.get('class', '?')}): field {key!r}: expected an integer, got {v!r}")
            return v

        def check(i: int, key: str, v: int, choices) -> int:
            if v not in choices:
                shown = f"{choices[0]}..{choices[-1]}" if len(choices) > 8 else str(list(choices))
                raise UserError(f"{what}: block {i} ({blocks[i]['class']}): field {key!r}: {v} is not in {shown}")
            return choices.index(v)

        for i, b in enumerate(blocks):
            unknown = set(b) - KNOWN_KEYS
            if unknown:
                raise UserError(f"{what}: block {i}: unknown field(s) {sorted(unknown)} (known: {sorted(KNOWN_KEYS)})")
            want = STEM_CLASS if i == 0 or (self.heads and i == n_want - 1) else self.block_class
            if b.get("class") != want:
                raise UserError(f"{what}: block {i}: field 'class': expected {want!r}, got {b.get('class')!r}")
        genome = [0] * self.n_genes
        if image_size is not None:
            if isinstance(image_size, bool) or not isinstance(image_size, int):
                raise UserError(f"{what}: image_size: expected an integer, got {image_size!r}")
            if image_size not in self.resolutions:
                raise UserError(f"{what}: image_size {image_size} is not one of the space's resolutions {list(self.resolutions)}")
            genome[0] = self.resolutions.index(image_size)
        if field(0, "in") != 3 or field(0, "s") != 2 or field(0, "k") != self.stem_kernel:
            raise UserError(f"{what}: block 0 (stem): expected in 3, s 2, k {self.stem_kernel}")
        genome[1] = check(0, "out", field(0, "out"), self.genes[1].choices)
        prev = field(0, "out")
        for j in range(self.n_blocks):
            i = j + 1
            if field(i, "in") != prev:
                raise UserError(f"{what}: block {i} ({self.block_class}): field 'in': {blocks[i]['in']} "
                                f"differs from the previous block's out {prev}")
            for key in ("s", "out", "btn", "k", "L"):
                genome[self._col(f"b{i}.{key}")] = check(i, key, field(i, key), self.genes[self._col(f"b{i}.{key}")].choices)
            prev = field(i, "out")
        if self.heads:
            i = n_want - 1
            if field(i, "in") != prev or field(i, "s") != 1 or field(i, "k") != 1:
                raise UserError(f"{what}: block {i} (head): expected in {prev}, s 1, k 1")
            genome[self._col("head.out")] = check(i, "out", field(i, "out"), self.heads)
        try:
            return self.canonical(genome)
        except UserError as e:
            raise UserError(f"{what}: {e}") from None

    def parse_arch(self, spec: Any) -> Arch:
        if isinstance(spec, (list, dict)) and not (isinstance(spec, dict) and spec and all(k in self._pos for k in spec)):
            return self.from_structure(spec)
        return super().parse_arch(spec)

    def presets(self) -> dict[str, Arch]:
        if self._presets is None:
            out = {}
            for name, spec in self._doc.get(self._doc.data, "presets", "presets", dict, {}).items():
                try:
                    out[name] = self.from_structure(spec, what=f"preset {name}")
                except UserError as e:
                    raise self._doc.error(f"presets.{name}", str(e)) from None
            self._presets = out
        return self._presets

    def seeds(self) -> dict[str, Arch]:
        """The original configs' starting structures (``[seeds]``), which the evolution solver starts from."""
        out = {}
        for name, spec in self._doc.get(self._doc.data, "seeds", "seeds", dict, {}).items():
            try:
                out[name] = self.from_structure(spec, what=f"seed {name}")
            except UserError as e:
                raise self._doc.error(f"seeds.{name}", str(e)) from None
        return out

    def decode(self, arch: Arch) -> dict[str, Any]:
        s = self.values(np.asarray([arch.genome]))
        out: dict[str, Any] = {"resolution": int(s.res[0]), "stem": int(s.stem[0])}
        for j in range(self.n_blocks):
            out[f"b{j + 1}"] = f"s{s.stride[0, j]} out{s.out[0, j]} btn{s.btn[0, j]} k{s.k[0, j]} L{s.L[0, j]}"
        if s.head is not None:
            out["head"] = int(s.head[0])
        out["encoding"] = json.dumps(self.to_encoding(arch), separators=(",", ":"))
        return out

    def input_resolution(self, arch: Arch) -> int:
        return int(self.resolutions[arch.genome[0]])

    def build(self, arch: Arch):
        from nas.nets.deepmad import DeepMADNet

        return DeepMADNet(self.structure(arch), self.block, self.num_classes, self.input_resolution(arch))

    def size(self) -> int:
        return int(np.prod([g.size for g in self.genes], dtype=float))


def load(doc: TomlDoc) -> DeepMADSpace:
    return DeepMADSpace(doc)
