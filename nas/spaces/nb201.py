"""NAS-Bench-201 (Dong & Yang, ICLR 2020): the standard cell space, the standard CIFAR skeleton.

A cell is a DAG on 4 nodes; each of its 6 edges (j <- i, i < j) carries one of 5 operations, and
node j is the sum of its incoming edges. The arch string lists the edges node by node:
``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` (edge 1<-0, then 2<-0, 2<-1, then 3<-0, 3<-1, 3<-2).
All 5^6 = 15,625 cells are distinct architectures of the benchmark (isomorphic cells included),
so every genome is canonical. ``index`` is the benchmark's own index (NAS-Bench-201 = NATS-Bench
TSS, 0..15624; ``nas/assets/nb201-index``), so ``--arch 6111`` is the benchmark's #6111; the arch
string stays the primary key of every table.

Skeleton (N cells per stage, C channels): 3x3 conv stem + BN; N cells at C; a ResNet basic block
(stride 2) to 2C; N cells; a block to 4C; N cells; BN + ReLU; global pool; linear classifier.

Cost convention: parameters are every weight the model holds (BN included); MACs are those of
convolutions and the classifier plus the classifier's bias, which is how the benchmark's "FLOPs"
were counted (its extremes 7.78305 M and 220.11969 M on CIFAR-10 are reproduced exactly).
"""
from __future__ import annotations

import functools
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from nas.arch import GENOME_DTYPE, Arch, Gene
from nas.errors import UserError
from nas.spaces.base import BlockSpec, LatencySlot, SearchSpace, Var
from nas.tomldoc import TomlDoc

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))  # (to, from), in arch-string order
_CONV_K2 = {"nor_conv_1x1": 1, "nor_conv_3x3": 9}  # kernel area of the convolution ops
_INDEX_FILE = Path(__file__).resolve().parent.parent / "assets" / "nb201-index" / "cells.txt"
_RADIX = len(OPS) ** np.arange(len(EDGES) - 1, -1, -1)  # base-5 code of a cell, edge 1<-0 most significant


@functools.cache
def _bench_order() -> tuple[np.ndarray, np.ndarray]:
    """(code of each benchmark index, benchmark index of each code): the benchmark's order is its
    own (a shuffle), so it ships as a table of 15,625 cells rather than a formula."""
    lines = _INDEX_FILE.read_text().split()
    digits = np.frombuffer("".join(lines).encode(), dtype=np.uint8).reshape(len(lines), len(EDGES)) - ord("0")
    code = digits.astype(np.int64) @ _RADIX
    inverse = np.empty_like(code)
    inverse[code] = np.arange(len(code))
    return code, inverse


class NB201Space(SearchSpace):
    family = "nb201"

    def __init__(self, doc: TomlDoc):
        d = self._read_header(doc)
        self.channels = doc.get(d, "channels", "channels", int, 16)
        self.cells = doc.get(d, "cells_per_stage", "cells_per_stage", int, 5)
        self.num_classes = doc.get(d, "num_classes", "num_classes", int, 10)
        self.resolution = doc.get(d, "resolution", "resolution", int, 32)
        self.proxy_batch = doc.get(d, "proxy_batch", "proxy_batch", str, "cifar10-samples")
        ops = tuple(doc.get(d, "ops", "ops", list, list(OPS)))
        unknown = [o for o in ops if o not in OPS]
        if unknown or len(set(ops)) != len(ops) or not ops:
            raise doc.error("ops", f"expected distinct operations from {list(OPS)}, got {list(ops)}")
        for field, v in (("channels", self.channels), ("cells_per_stage", self.cells), ("num_classes", self.num_classes)):
            if v < 1:
                raise doc.error(field, f"must be positive, got {v}")
        if self.resolution < 4 or self.resolution % 4:
            raise doc.error("resolution", f"must be a positive multiple of 4 (two stride-2 blocks), got {self.resolution}")
        self.ops = ops
        self.genes = tuple(Gene(f"edge{j}<-{i}", ops) for j, i in EDGES)
        self.vars = tuple(Var(g.name, g.size, (k,)) for k, g in enumerate(self.genes))
        canon = json.dumps({k: d[k] for k in sorted(d) if k not in ("description", "source", "presets")}, sort_keys=True)
        self.fingerprint = hashlib.blake2b(canon.encode(), digest_size=8).hexdigest()
        self._doc = doc

    # ---- encodings -------------------------------------------------------------------------
    def arch_string(self, arch: Arch) -> str:
        names = [self.ops[i] for i in arch.genome]
        nodes, k = [], 0
        for j in (1, 2, 3):
            nodes.append("|" + "|".join(f"{names[k + i]}~{i}" for i in range(j)) + "|")
            k += j
        return "+".join(nodes)

    def from_string(self, text: str) -> Arch:
        """Parse ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``; errors say which node and edge."""
        s = text.strip()
        nodes = s.split("+")
        if len(nodes) != 3:
            raise UserError(f"arch string {text!r}: expected 3 nodes separated by '+', got {len(nodes)}")
        genome = []
        for j, node in enumerate(nodes, start=1):
            if not (node.startswith("|") and node.endswith("|")):
                raise UserError(f"arch string {text!r}: node {j} {node!r} must look like '|op~0|...|'")
            edges = node[1:-1].split("|")
            if len(edges) != j:
                raise UserError(f"arch string {text!r}: node {j} needs {j} incoming edge(s), got {len(edges)}")
            for i, edge in enumerate(edges):
                m = re.fullmatch(r"([a-z0-9_]+)~(\d+)", edge)
                if not m or int(m.group(2)) != i:
                    raise UserError(f"arch string {text!r}: edge {edge!r} of node {j} must be 'op~{i}'")
                if m.group(1) not in self.ops:
                    from nas.registry import did_you_mean

                    raise did_you_mean(m.group(1), self.ops, f"operation (node {j}, edge from {i})")
                genome.append(self.ops.index(m.group(1)))
        return self.canonical(genome)

    @functools.cached_property
    def _std_op(self) -> np.ndarray:
        """Position in the benchmark's OPS of each of this space's ops (a space may reorder or
        drop some)."""
        return np.array([OPS.index(o) for o in self.ops], dtype=np.int64)

    def index(self, genomes: np.ndarray) -> np.ndarray:
        """The NAS-Bench-201 index of each genome (vectorised)."""
        g = np.asarray(genomes, dtype=np.int64)
        return _bench_order()[1][self._std_op[g] @ _RADIX]

    def from_index(self, index: np.ndarray | int) -> np.ndarray:
        """Genomes of the given NAS-Bench-201 indices, 0..15624 (vectorised)."""
        idx = np.atleast_1d(np.asarray(index, dtype=np.int64))
        code = _bench_order()[0]
        if idx.size and (idx.min() < 0 or idx.max() >= len(code)):
            raise UserError(f"NB201 index must be in 0..{len(code) - 1}, got {int(idx.min() if idx.min() < 0 else idx.max())}")
        std = (code[idx][:, None] // _RADIX) % len(OPS)  # the benchmark's op of each edge
        mine = np.full(len(OPS), -1, dtype=np.int64)
        mine[self._std_op] = np.arange(len(self.ops))
        g = mine[std]
        if (g < 0).any():
            row = int(np.flatnonzero((g < 0).any(1))[0])
            missing = OPS[int(std[row][g[row] < 0][0])]
            raise UserError(f"NB201 index {int(idx[row])} uses {missing!r}, which space {self.name!r} does not have "
                            f"(its ops: {', '.join(self.ops)})")
        return g.astype(GENOME_DTYPE)

    def size(self) -> int:
        return len(self.ops) ** len(EDGES)

    def parse_arch(self, spec: Any) -> Arch:
        if isinstance(spec, str) and spec.strip().startswith("|"):
            return self.from_string(spec)
        if isinstance(spec, int) and not isinstance(spec, bool):
            return self.arch(self.from_index(spec)[0])
        if isinstance(spec, str) and spec.strip().isdigit():  # `--arch 6111`: the benchmark's index
            return self.arch(self.from_index(int(spec))[0])
        return super().parse_arch(spec)

    def presets(self) -> dict[str, Arch]:
        return self._string_presets(self._doc, self.from_string)

    def decode(self, arch: Arch) -> dict[str, Any]:
        return {"arch": self.arch_string(arch), **{g.name: g.choices[i] for g, i in zip(self.genes, arch.genome)}}

    # ---- cost ------------------------------------------------------------------------------
    def cost(self, genomes: np.ndarray) -> dict[str, np.ndarray]:
        g = np.asarray(genomes, dtype=np.int64)
        c, r, k = self.channels, self.resolution, self.num_classes
        # fixed skeleton: stem conv + BN, two residual blocks (3x3 a, 3x3 b, 1x1 shortcut, 2 BNs), last BN, classifier
        params = 27 * c + 2 * c
        macs = 27 * c * r * r
        for s in (1, 2):
            cin, cout, side = c << (s - 1), c << s, r >> s
            conv = 9 * cin * cout + 9 * cout * cout + cin * cout
            params += conv + 4 * cout
            macs += conv * side * side
        params += 2 * 4 * c + 4 * c * k + k
        macs += 4 * c * k + k
        # cells: per stage, every edge's op; parameter-free ops contribute nothing
        op_params = np.zeros(len(self.ops), dtype=np.int64)
        op_macs = np.zeros(len(self.ops), dtype=np.int64)
        for s in range(3):
            cs, side = c << s, r >> s
            for o, name in enumerate(self.ops):
                if name in _CONV_K2:
                    op_params[o] += self.cells * (_CONV_K2[name] * cs * cs + 2 * cs)
                    op_macs[o] += self.cells * _CONV_K2[name] * cs * cs * side * side
        return {"params": params + op_params[g].sum(1), "macs": macs + op_macs[g].sum(1)}

    # ---- latency-table blocks ------------------------------------------------------------
    def latency_slots(self, grid_rounding: str) -> list[LatencySlot]:
        """The stem, every edge of every cell, the two residual blocks and the head. An edge's
        block is its operation plus the addition into its node (Python's ``sum`` adds every
        incoming edge, the first one to 0), so a cell is exactly the sum of its 6 edges. NB201 has
        no token grids; ``grid_rounding`` is accepted and ignored."""
        c, r, k = self.channels, self.resolution, self.num_classes
        slots = [LatencySlot((), lambda: f"nb201stem_{r}_{c}", block=lambda: BlockSpec.of("nb201_stem", (3, r, r), cout=c))]
        for s in range(3):
            cs, side = c << s, r >> s
            if s:
                def key_res(cin=cs // 2, cout=cs, hw=side * 2):
                    return f"nb201res_{hw}_{cin}_{cout}"

                def block_res(cin=cs // 2, cout=cs, hw=side * 2):
                    return BlockSpec.of("nb201_resblock", (cin, hw, hw), cout=cout)
                slots.append(LatencySlot((), key_res, block=block_res))

            def key_edge(op, cs=cs, side=side):
                return f"nb201edge_{op}_{cs}_{side}"

            def block_edge(op, cs=cs, side=side):
                return BlockSpec.of("nb201_edge", (cs, side, side), op=op)
            slots += [LatencySlot((g,), key_edge, block=block_edge) for _ in range(self.cells) for g in range(len(EDGES))]
        last = 4 * c
        slots.append(LatencySlot((), lambda: f"nb201head_{r >> 2}_{last}_{k}",
                                 block=lambda: BlockSpec.of("nb201_head", (last, r >> 2, r >> 2), classes=k)))
        return slots

    def build(self, arch: Arch):
        from nas.nets.nb201 import NB201Net

        return NB201Net([self.ops[i] for i in arch.genome], self.channels, self.cells, self.num_classes)

    def build_for_proxy(self, arch: Arch, proxy: str):
        if proxy != "linear_regions":
            return self.build(arch)
        from nas.nets.nb201 import ThinCell

        # TE-NAS counts linear regions on a thin network: the cell alone, 1 channel, no stem
        return ThinCell([self.ops[i] for i in arch.genome])
