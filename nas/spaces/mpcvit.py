"""MPCViT / MPCViT+ (Zeng et al., ICCV 2023): a ViT-Lite whose heads pick an MPC-friendly attention.

Backbone (``PKU-SEC-Lab/mpcvit`` ``src/vit.py``, CCT code base): a p x p patch convolution, a
class token, learned positions, then ``layers`` CCT-style blocks (LN_pre -> attention -> residual
-> LN_1 *replaces* x -> fc1 -> GeLU -> fc2 -> residual), a final LayerNorm and a linear head on the
class token. qkv has no bias; proj, fc1, fc2 have biases.

Genes (the genome is the choice index):

* ``layer{l}.head{h}`` in ("scal", "rs", "softmax"): ScalAttn ``S / N``, RSAttn
  ``ReLU(S) / (sum ReLU(S) + 1e-5)`` or softmax, with ``S = Q K^T / sqrt(d_h)`` and N the token
  count including cls. The search vector covers the first two choices only (the paper's space);
  softmax is reachable through presets and encodings, for the baseline and the KD teacher, so
  ``all-softmax`` is an ordinary architecture of the space that no searcher proposes.
* with ``gelu_tokens = true`` (MPCViT+), ``layer{l}.token{t}`` in ("gelu", "linear"): a linear
  token skips the GeLU and gets a ReLU after fc2 instead (the "post-added ReLU"). Searched only
  when ``search_gelu = true``; otherwise every token keeps its GeLU (plain MPCViT).

``scalattn_order = "linear"`` evaluates ScalAttn heads as ``Q (K^T V) / (sqrt(d_h) N)``
(MPCViT+; the same function, other MACs and MPC cost).

Encoding (``decode()["encoding"]``, also what ``parse_arch`` reads): ``{"heads":
"1000,1111,..."}`` with one character per head, layer by layer (0 ScalAttn, 1 RSAttn, s softmax:
the released code's 0/1 alpha pattern), plus ``"linear": ["<hex mask>", ...]`` per layer when
any token is linearised (bit t set = token t linear).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from nas.arch import Arch, Gene
from nas.errors import UserError
from nas.spaces.base import SearchSpace, Var
from nas.tomldoc import TomlDoc

ATTN = ("scal", "rs", "softmax")
ATTN_CHAR = "01s"
SCAL, RS, SOFTMAX = 0, 1, 2
RS_EPS = 1e-5


@dataclass(frozen=True)
class MpcOp:
    """One use of an MPC operator by a batch of architectures.

    ``count`` (an array over genomes: (n,) for a network part, (n, layers) for a block part)
    multiplies the per-unit sizes: ``elements`` is what the protocol's bytes-per-element
    multiplies (for a matmul: the elements of both operands it opens), ``outputs`` what a
    matmul truncates afterwards (fixed point: a product doubles the fractional bits), ``work``
    what the compute time multiplies (MACs for a matmul, else elements). ``calls`` counts
    invocations when the heads of a layer run together; ``heads`` (head-wise ops only) is how
    many heads it covers, the invocations when heads run one by one. ``reduce`` is the length of
    the reduction a round count may grow with. Arrays are shared between uses, so a cost model
    can add up coefficients per distinct array and multiply once."""

    key: str
    op: str
    count: np.ndarray
    calls: np.ndarray
    elements: float
    work: float
    outputs: float = 0.0
    heads: np.ndarray | None = None
    reduce: int = 1


class MpcViTSpace(SearchSpace):
    family = "mpcvit"

    def __init__(self, doc: TomlDoc):
        d = self._read_header(doc)
        geti = lambda k, default=...: doc.get(d, k, k, int, default)  # noqa: E731
        self.resolution, self.patch = geti("resolution"), geti("patch")
        self.in_chans, self.num_classes = geti("in_chans", 3), geti("num_classes")
        self.layers, self.heads, self.dim = geti("layers"), geti("heads"), geti("dim")
        self.mlp_ratio = geti("mlp_ratio", 2)
        for k in ("resolution", "patch", "in_chans", "num_classes", "layers", "heads", "dim", "mlp_ratio"):
            if getattr(self, k) < 1:
                raise doc.error(k, f"must be a positive integer, got {getattr(self, k)}")
        if self.resolution % self.patch:
            raise doc.error("patch", f"{self.patch} does not divide the resolution {self.resolution}")
        if self.dim % self.heads:
            raise doc.error("heads", f"{self.heads} heads do not divide dim {self.dim}")
        self.order = doc.get(d, "scalattn_order", "scalattn_order", str, "quadratic")
        if self.order not in ("quadratic", "linear"):
            raise doc.error("scalattn_order", f"expected 'quadratic' or 'linear', got {self.order!r}")
        self.gelu_tokens = doc.get(d, "gelu_tokens", "gelu_tokens", bool, False)
        self.search_gelu = doc.get(d, "search_gelu", "search_gelu", bool, False)
        if self.search_gelu and not self.gelu_tokens:
            raise doc.error("search_gelu", "needs gelu_tokens = true (the per-token GeLU genes)")
        self.head_dim = self.dim // self.heads
        self.hidden = self.dim * self.mlp_ratio
        self.tokens = (self.resolution // self.patch) ** 2 + 1  # + cls
        L, H, N = self.layers, self.heads, self.tokens
        genes = [Gene(f"layer{l}.head{h}", ATTN) for l in range(L) for h in range(H)]
        if self.gelu_tokens:
            genes += [Gene(f"layer{l}.token{t}", ("gelu", "linear")) for l in range(L) for t in range(N)]
        self.genes = tuple(genes)
        n_vars = L * H + (L * N if self.search_gelu else 0)
        self.vars = tuple(Var(self.genes[i].name, 2, (i,)) for i in range(n_vars))
        canon = json.dumps({k: d[k] for k in sorted(d) if k not in ("description", "source", "presets")}, sort_keys=True)
        self.fingerprint = hashlib.blake2b(canon.encode(), digest_size=8).hexdigest()
        self._doc = doc

    def size(self) -> int:
        return 2 ** len(self.vars)

    # ---- genome views -----------------------------------------------------------------------
    def head_choices(self, genomes: np.ndarray) -> np.ndarray:
        """(n, layers, heads) choice indices (SCAL, RS, SOFTMAX)."""
        g = np.asarray(genomes)
        return g[:, : self.layers * self.heads].reshape(len(g), self.layers, self.heads)

    def linear_tokens(self, genomes: np.ndarray) -> np.ndarray:
        """(n, layers, tokens) bool: which tokens skip GeLU (all False without MPCViT+ genes)."""
        g = np.asarray(genomes)
        if not self.gelu_tokens:
            return np.zeros((len(g), self.layers, self.tokens), dtype=bool)
        return g[:, self.layers * self.heads:].reshape(len(g), self.layers, self.tokens).astype(bool)

    def head_counts(self, genomes: np.ndarray) -> dict[str, np.ndarray]:
        """(n, layers) number of heads of each kind, and of GeLU / linear tokens."""
        c = self.head_choices(genomes)
        g = np.asarray(genomes)
        lin = (g[:, self.layers * self.heads:].reshape(len(g), self.layers, self.tokens).sum(-1, dtype=np.int64)
               if self.gelu_tokens else np.zeros((len(g), self.layers), dtype=np.int64))
        return {"scal": (c == SCAL).sum(-1), "rs": (c == RS).sum(-1), "softmax": (c == SOFTMAX).sum(-1),
                "linear": lin, "gelu": self.tokens - lin}

    # ---- encodings ----------------------------------------------------------------------------
    def to_encoding(self, arch: Arch) -> dict[str, Any]:
        g = np.asarray([arch.genome])
        c = self.head_choices(g)[0]
        out: dict[str, Any] = {"heads": ",".join("".join(ATTN_CHAR[x] for x in row) for row in c)}
        lin = self.linear_tokens(g)[0]
        if lin.any():
            out["linear"] = [format(sum(1 << int(t) for t in np.flatnonzero(row)), "x") for row in lin]
        return out

    def from_encoding(self, enc: Any, what: str = "encoding") -> Arch:
        L, H, N = self.layers, self.heads, self.tokens
        if isinstance(enc, str) and enc.lstrip().startswith("{"):
            try:
                enc = json.loads(enc)
            except json.JSONDecodeError as e:
                raise UserError(f"MPCViT {what} {enc!r} is not valid JSON: {e}") from None
        if isinstance(enc, str):
            enc = {"heads": enc}
        if not isinstance(enc, dict) or not isinstance(enc.get("heads"), str) or set(enc) - {"heads", "linear"}:
            raise UserError(f"MPCViT {what} {enc!r}: expected {{\"heads\": \"1000,1111,...\"}} with an optional "
                            f"\"linear\" list of per-layer hex token masks")
        rows = enc["heads"].replace(" ", "").split(",")
        if len(rows) != L or any(len(r) != H for r in rows):
            raise UserError(f"MPCViT {what} heads {enc['heads']!r}: expected {L} comma-separated layers of {H} "
                            f"characters (0 ScalAttn, 1 RSAttn, s softmax)")
        bad = sorted({ch for r in rows for ch in r} - set(ATTN_CHAR))
        if bad:
            raise UserError(f"MPCViT {what} heads {enc['heads']!r}: unknown character(s) {''.join(bad)!r}; "
                            f"use 0 (ScalAttn), 1 (RSAttn) or s (softmax)")
        genome = [ATTN_CHAR.index(ch) for r in rows for ch in r]
        masks = enc.get("linear")
        if self.gelu_tokens:
            masks = masks or ["0"] * L
            if not isinstance(masks, list) or len(masks) != L:
                raise UserError(f"MPCViT {what}: 'linear' must list {L} hex token masks, one per layer")
            for l, m in enumerate(masks):
                try:
                    bits = int(str(m), 16)
                except ValueError:
                    raise UserError(f"MPCViT {what}: linear[{l}] = {m!r} is not a hex mask") from None
                if bits >> N:
                    raise UserError(f"MPCViT {what}: linear[{l}] = {m!r} sets a token beyond the {N} tokens")
                genome += [(bits >> t) & 1 for t in range(N)]
        elif masks and any(int(str(m), 16) for m in masks):
            raise UserError(f"MPCViT {what}: space {self.name!r} has no GeLU linearisation genes "
                            f"(gelu_tokens = false), so 'linear' must be empty")
        return self.canonical(genome)

    def parse_arch(self, spec: Any) -> Arch:
        pattern = isinstance(spec, str) and ("," in spec or spec.lstrip().startswith("{")
                                             or spec not in self.presets() and set(spec) <= set(ATTN_CHAR))
        if pattern:
            return self.from_encoding(spec)
        if isinstance(spec, dict) and "heads" in spec:
            return self.from_encoding(spec)
        return super().parse_arch(spec)

    def presets(self) -> dict[str, Arch]:
        """``all-softmax``, ``all-rs``, ``all-scal`` in every space (the baselines and endpoints),
        then the TOML's ``[presets]`` (released patterns)."""
        out = {f"all-{kind}": self._preset(f"all:{kind}") for kind in ("softmax", "rs", "scal")}
        return {**out, **self._string_presets(self._doc, self._preset)}

    def _preset(self, text: str) -> Arch:
        """A pattern string, or ``all:<scal|rs|softmax>`` for a uniform network."""
        if text.startswith("all:"):
            kind = text[4:]
            if kind not in ATTN:
                raise UserError(f"'{text}': expected all:scal, all:rs or all:softmax")
            return self.from_encoding(",".join([ATTN_CHAR[ATTN.index(kind)] * self.heads] * self.layers))
        return self.from_encoding(text)

    def decode(self, arch: Arch) -> dict[str, Any]:
        g = np.asarray([arch.genome])
        enc = self.to_encoding(arch)
        counts = {k: int(v[0].sum()) for k, v in self.head_counts(g).items()}
        out: dict[str, Any] = {"heads": enc["heads"], "rs_heads": counts["rs"], "scal_heads": counts["scal"],
                               "softmax_heads": counts["softmax"]}
        if self.gelu_tokens:
            out["linear_tokens"] = counts["linear"]
        out["encoding"] = json.dumps(enc, separators=(",", ":"))
        return out

    # ---- cost ---------------------------------------------------------------------------------
    def param_count(self) -> int:
        """Every weight of the network; no gene changes a shape, so one number for the space."""
        C, M, L, K = self.dim, self.hidden, self.layers, self.num_classes
        embed = self.in_chans * self.patch ** 2 * C + C + C + self.tokens * C  # conv (bias), cls, positions
        block = 2 * C + 3 * C * C + (C * C + C) + 2 * C + (C * M + M) + (M * C + C)
        return embed + L * block + 2 * C + C * K + K

    def cost(self, genomes: np.ndarray) -> dict[str, np.ndarray]:
        g = np.asarray(genomes)
        C, M, N, D, K = self.dim, self.hidden, self.tokens, self.head_dim, self.num_classes
        patches = N - 1
        per_layer = N * 3 * C * C + N * C * C + 2 * N * C * M  # qkv, proj, fc1, fc2
        quad_head = 2 * N * N * D  # QK^T and A V
        linear_head = 2 * N * D * D  # K^T V and Q (K^T V)
        scal = self.head_counts(g)["scal"].sum(-1)
        heads = self.layers * self.heads
        scal_cost = linear_head if self.order == "linear" else quad_head
        macs = (patches * self.in_chans * self.patch ** 2 * C + self.layers * per_layer + C * K
                + (heads - scal) * quad_head + scal * scal_cost)
        return {"macs": macs.astype(np.int64), "params": np.full(len(g), self.param_count(), dtype=np.int64)}

    # ---- MPC operator inventory (read by nas/latency/mpc.py) -----------------------------------
    MPC_OPS = ("share", "matmul", "bmm", "trunc", "layernorm", "softmax", "rsattn", "scalattn", "gelu", "relu")

    def mpc_ops_needed(self) -> set[str]:
        return set(self.MPC_OPS)

    def mpc_ops(self, genomes: np.ndarray) -> list[MpcOp]:
        """Every operator the 2PC evaluation of each genome runs; arrays are (n,) for the network
        parts and (n, layers) for the blocks. Additions (residuals, positions) and the public
        selection of tokens are local and free; a product with a public constant is a truncation."""
        g = np.asarray(genomes)
        n = len(g)
        C, M, N, D, K, L = self.dim, self.hidden, self.tokens, self.head_dim, self.num_classes, self.layers
        P, F = N - 1, self.in_chans * self.patch ** 2
        one, lay = np.ones(n), np.ones((n, L))
        # the image secret-shared by the client (the weights are shared once, offline)
        ops = [MpcOp("input", "share", one, one, self.in_chans * self.resolution ** 2, self.in_chans * self.resolution ** 2),
               MpcOp("embed", "matmul", one, one, P * F + F * C, P * F * C, P * C)]

        def linear(key, rows, cin, cout):
            ops.append(MpcOp(key, "matmul", lay, lay, rows * cin + cin * cout, rows * cin * cout, rows * cout))

        counts = {k: v.astype(float) for k, v in self.head_counts(g).items()}
        present = {k: (v > 0).astype(float) for k, v in counts.items()}

        def headwise(key, op, kind, elements, work=None, reduce=1, outputs=0):
            ops.append(MpcOp(key, op, counts[kind], present[kind], elements, elements if work is None else work,
                             outputs, counts[kind], reduce))

        ops.append(MpcOp("ln_pre", "layernorm", lay, lay, N * C, N * C))
        linear("qkv", N, C, 3 * C)
        for kind in ("softmax", "rs", "scal"):
            if kind == "scal" and self.order == "linear":
                headwise("scal.ktv", "bmm", kind, 2 * N * D, N * D * D, outputs=D * D)
                headwise("scal.qktv", "bmm", kind, N * D + D * D, N * D * D, outputs=N * D)
                headwise("scal.scalattn", "scalattn", kind, N * D)  # 1 / (sqrt(d_h) N) on the output
                continue
            headwise(f"{kind}.qk", "bmm", kind, 2 * N * D, N * N * D, outputs=N * N)
            if kind == "scal":  # 1 / (sqrt(d_h) N): one public product
                headwise("scal.scalattn", "scalattn", kind, N * N)
            else:
                headwise(f"{kind}.scale", "trunc", kind, N * N)  # 1 / sqrt(d_h)
                op = "softmax" if kind == "softmax" else "rsattn"
                headwise(f"{kind}.{op}", op, kind, N * N, reduce=N)
            headwise(f"{kind}.av", "bmm", kind, N * N + N * D, N * N * D, outputs=N * D)
        linear("proj", N, C, C)
        ops.append(MpcOp("ln_1", "layernorm", lay, lay, N * C, N * C))
        linear("fc1", N, C, M)
        ops.append(MpcOp("gelu", "gelu", counts["gelu"], present["gelu"], M, M))
        linear("fc2", N, M, C)
        ops.append(MpcOp("post_relu", "relu", counts["linear"], present["linear"], C, C))
        ops += [MpcOp("norm", "layernorm", one, one, N * C, N * C),
                MpcOp("head", "matmul", one, one, C + C * K, C * K, K)]
        return ops

    # ---- torch ------------------------------------------------------------------------------
    def net_config(self, arch: Arch | None = None):
        from nas.nets.mpcvit import MpcViTConfig

        if arch is None:
            attn, lin = ((RS,) * self.heads,) * self.layers, ((False,) * self.tokens,) * self.layers
        else:
            g = np.asarray([arch.genome])
            attn = tuple(tuple(int(x) for x in row) for row in self.head_choices(g)[0])
            lin = tuple(tuple(bool(x) for x in row) for row in self.linear_tokens(g)[0])
        return MpcViTConfig(resolution=self.resolution, patch=self.patch, in_chans=self.in_chans,
                            num_classes=self.num_classes, layers=self.layers, heads=self.heads, dim=self.dim,
                            mlp_ratio=self.mlp_ratio, attention=attn, linear_tokens=lin,
                            linear_scalattn=self.order == "linear")

    def build(self, arch: Arch):
        from nas.nets.mpcvit import MpcViTNet

        return MpcViTNet(self.net_config(arch))

    def build_supernet(self):
        from nas.elastic.mpcvit import MpcViTSupernet

        return MpcViTSupernet(self)
