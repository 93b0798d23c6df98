"""As-ViT (Chen et al., "Auto-scaling Vision Transformers without Training", ICLR 2022).

Topology space (VITA-Group/AsViT ``cell_operations.SEARCH_SPACE``), 12 decisions, 4,556,250 archs:
tokenisation kernel K1 in {4..8} (conv, stride 4), K2-K4 in {2,3,4} (unfold, stride 2); attention
splits S1 in {2,4,8}, S2 in {1,2,4}, S3 in {1,2}, S4 = 1 (window = stage grid / S); MLP ratios
E1-E4 in {2..6}; heads H in {16,32,64} (stages get H/8, H/4, H/2, H).

The genome also holds the scaling genes, depth per stage and the width C (stage widths C, 2C, 4C,
min(1024, 8C)), which the topology search keeps at the seed network (depths 1, C = 32) and the
auto-scaling rule grows. Search vectors cover the 12 topology decisions only.

Arch strings: ``K1,S1,E1|K2,S2,E2|K3,S3,E3|K4,1,E4|H`` for a topology,
``K1,S1,E1,L1|...|K4,1,E4,L4|H,C`` for a scaled network (the repository's formats).

Cost (MACs, parameters) is analytic at ``resolution`` with ``num_classes`` outputs, counting
every weight the model holds; MACs count convolutions, linear layers and the two attention
matmuls (QK^T, AV) per window. The complexity measures are computed at ``proxy_resolution``.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from nas.arch import Arch, Gene
from nas.errors import UserError
from nas.spaces.base import SearchSpace, Var
from nas.tomldoc import TomlDoc

TOPOLOGY = {
    "kernel": ((4, 5, 6, 7, 8), (2, 3, 4), (2, 3, 4), (2, 3, 4)),
    "split": ((2, 4, 8), (1, 2, 4), (1, 2), (1,)),
    "expand": ((2, 3, 4, 5, 6),) * 4,
}
HEADS = (16, 32, 64)


class AsViTSpace(SearchSpace):
    family = "asvit"

    def __init__(self, doc: TomlDoc):
        d = self._read_header(doc)
        self.resolution = doc.get(d, "resolution", "resolution", int, 224)
        self.proxy_resolution = doc.get(d, "proxy_resolution", "proxy_resolution", int, 224)
        self.num_classes = doc.get(d, "num_classes", "num_classes", int, 1000)
        self.proxy_batch = doc.get(d, "proxy_batch", "proxy_batch", str, "imagenet-samples")
        self.max_depth = doc.get(d, "max_depth", "max_depth", int, 24)
        self.seed_width = doc.get(d, "seed_width", "seed_width", int, 32)
        for field, res in (("resolution", self.resolution), ("proxy_resolution", self.proxy_resolution)):
            if res < 32 or res % 32:
                raise doc.error(field, f"must be a multiple of 32 (stride 4, then three halvings), got {res}")
            if (res // 4) % 8:
                raise doc.error(field, f"the stage-1 grid ({res // 4}) must split into 8x8 windows: use a multiple of 32")
        if self.seed_width % 8 or not 8 <= self.seed_width <= 1024:
            raise doc.error("seed_width", f"must be a multiple of 8 in 8..1024, got {self.seed_width}")
        self.scaling = doc.get(d, "scaling", "scaling", dict, {})
        genes = [Gene(f"stage{i + 1}.kernel", TOPOLOGY["kernel"][i]) for i in range(4)]
        genes += [Gene(f"stage{i + 1}.split", TOPOLOGY["split"][i]) for i in range(4)]
        genes += [Gene(f"stage{i + 1}.expand", TOPOLOGY["expand"][i]) for i in range(4)]
        genes.append(Gene("heads", HEADS))
        genes += [Gene(f"stage{i + 1}.depth", tuple(range(1, self.max_depth + 1))) for i in range(4)]
        # any width: the auto-scaling's proxy networks take round(h * (1 + r)) (search/grow.py)
        genes.append(Gene("width", tuple(range(1, 1025))))
        self.genes = tuple(genes)
        self.vars = tuple(Var(g.name, g.size, (k,)) for k, g in enumerate(self.genes[:13]) if g.size > 1)
        self._width_gene = len(self.genes) - 1
        # [scaling] is in: its repeats and widths decide what a cached measurement means
        canon = json.dumps({k: d[k] for k in sorted(d) if k not in ("description", "source", "presets")}, sort_keys=True)
        self.fingerprint = hashlib.blake2b(canon.encode(), digest_size=8).hexdigest()
        self._doc = doc

    def size(self) -> int:
        return int(np.prod([v.size for v in self.vars]))

    # ---- genome <-> values ----------------------------------------------------------------
    def to_genomes(self, vectors: np.ndarray) -> np.ndarray:
        """Topology vectors -> genomes of the seed network (depths 1, width ``seed_width``)."""
        g = super().to_genomes(vectors)
        g[:, self._width_gene] = self.genes[self._width_gene].choices.index(self.seed_width)
        return g

    def values(self, genomes: np.ndarray) -> dict[str, np.ndarray]:
        g = np.asarray(genomes, dtype=np.int64)
        choice = [np.asarray(gene.choices)[g[:, k]] for k, gene in enumerate(self.genes)]
        return {"kernel": np.stack(choice[0:4], 1), "split": np.stack(choice[4:8], 1), "expand": np.stack(choice[8:12], 1),
                "heads": choice[12], "depth": np.stack(choice[13:17], 1), "width": choice[17]}

    def with_scale(self, arch: Arch, depths: tuple[int, ...], width: int) -> Arch:
        g = list(arch.genome)
        for i, dep in enumerate(depths):
            if not 1 <= dep <= self.max_depth:
                raise UserError(f"stage {i + 1} depth {dep} outside 1..{self.max_depth}")
            g[13 + i] = dep - 1
        if not 1 <= width <= 1024:
            raise UserError(f"width {width} must be in 1..1024")
        g[self._width_gene] = self.genes[self._width_gene].choices.index(width)
        return self.canonical(g)

    def violations(self, genomes: np.ndarray) -> list[str]:
        v = self.values(genomes)
        bad = v["width"] < v["heads"] // 8  # a width the heads do not divide is fine: see cost()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            return [f"width {v['width'][i]} is narrower than the {v['heads'][i] // 8} heads of stage 1 (H = {v['heads'][i]})"]
        return []

    # ---- encodings ------------------------------------------------------------------------
    def arch_string(self, arch: Arch) -> str:
        v = {k: a[0] for k, a in self.values(np.asarray([arch.genome])).items()}
        scaled = bool((v["depth"] != 1).any() or v["width"] != self.seed_width)
        stages = []
        for i in range(4):
            parts = [v["kernel"][i], v["split"][i], v["expand"][i]] + ([v["depth"][i]] if scaled else [])
            stages.append(",".join(str(int(x)) for x in parts))
        tail = f"{int(v['heads'])},{int(v['width'])}" if scaled else str(int(v["heads"]))
        return "|".join(stages) + "|" + tail

    def from_string(self, text: str) -> Arch:
        parts = text.strip().split("|")
        if len(parts) != 5:
            raise UserError(f"As-ViT arch {text!r}: expected 4 stages and the heads separated by '|', got {len(parts)} fields")
        try:
            stages = [[int(x) for x in p.split(",")] for p in parts[:4]]
            tail = [int(x) for x in parts[4].split(",")]
        except ValueError:
            raise UserError(f"As-ViT arch {text!r}: every field must be an integer") from None
        lens = {len(s) for s in stages}
        if lens not in ({3}, {4}) or len(tail) != (2 if lens == {4} else 1):
            raise UserError(f"As-ViT arch {text!r}: use 'K,S,E|...|H' or 'K,S,E,L|...|H,C'")
        values: dict[str, Any] = {}
        for i, s in enumerate(stages):
            values[f"stage{i + 1}.kernel"], values[f"stage{i + 1}.split"], values[f"stage{i + 1}.expand"] = s[:3]
            values[f"stage{i + 1}.depth"] = s[3] if len(s) == 4 else 1
        values["heads"] = tail[0]
        values["width"] = tail[1] if len(tail) == 2 else self.seed_width
        return self.from_values(values)

    def parse_arch(self, spec: Any) -> Arch:
        if isinstance(spec, str) and "|" in spec:
            return self.from_string(spec)
        return super().parse_arch(spec)

    def presets(self) -> dict[str, Arch]:
        return self._string_presets(self._doc, self.from_string)

    def decode(self, arch: Arch) -> dict[str, Any]:
        v = {k: a[0] for k, a in self.values(np.asarray([arch.genome])).items()}
        out: dict[str, Any] = {"arch": self.arch_string(arch)}
        for key in ("kernel", "split", "expand", "depth"):
            out[key] = "|".join(str(int(x)) for x in v[key])
        out["heads"], out["width"] = int(v["heads"]), int(v["width"])
        return out

    # ---- cost -----------------------------------------------------------------------------
    def cost(self, genomes: np.ndarray, resolution: int | None = None) -> dict[str, np.ndarray]:
        v = self.values(genomes)
        r = resolution or self.resolution
        k, s, e, dep, c = v["kernel"], v["split"], v["expand"], v["depth"], v["width"]
        n = len(c)
        macs = np.zeros(n, dtype=np.int64)
        params = np.zeros(n, dtype=np.int64)
        dims = [np.minimum(1024, c << i) for i in range(4)]
        grid = r // 4
        # stage-1 tokenisation: conv (with bias) + LayerNorm
        params += 3 * dims[0] * k[:, 0] ** 2 + dims[0] + 2 * dims[0]
        macs += 3 * dims[0] * k[:, 0] ** 2 * grid * grid
        for i in range(4):
            d = dims[i]
            if i:
                grid //= 2
                fan = k[:, i] ** 2 * dims[i - 1]
                params += 2 * fan + fan * d
                macs += fan * d * grid * grid
            tokens = grid * grid
            window = (grid // s[:, i]) ** 2
            heads = v["heads"] >> (3 - i)
            inner = d // heads * heads  # attention channels: the original floors a width the heads do not divide
            block_params = 4 * d + 4 * d * inner + 3 * inner + d + 2 * e[:, i] * d * d + e[:, i] * d + d
            block_macs = tokens * (4 * d * inner + 2 * e[:, i] * d * d) + 2 * tokens * window * inner
            params += dep[:, i] * block_params
            macs += dep[:, i] * block_macs
        nf = dims[3]
        params += 2 * nf + nf * nf + nf + nf * self.num_classes + self.num_classes
        macs += nf * nf + nf * self.num_classes
        return {"params": params, "macs": macs}

    def build_for_proxy(self, arch: Arch, proxy: str):
        return self.build(arch, self.proxy_resolution)

    def build(self, arch: Arch, resolution: int | None = None):
        """The network at ``resolution`` (default: the space's); its input is resized to it."""
        from nas.nets.asvit import AsViTConfig, AsViTNet

        v = {k: a[0] for k, a in self.values(np.asarray([arch.genome])).items()}
        t = lambda a: tuple(int(x) for x in a)  # noqa: E731
        return AsViTNet(AsViTConfig(t(v["kernel"]), t(v["split"]), t(v["expand"]), t(v["depth"]), int(v["heads"]),
                                    int(v["width"]), self.num_classes, resolution or self.resolution))
