"""SearchSpace: the numeric contract every family implements (no torch here).

Two encodings live side by side:

* the **genome**: one index per ``Gene``, canonical (inactive genes are 0); what ``Arch`` holds,
  what ids, caches, latency tables and cost models read. It can express per-layer choices.
* the **search vector**: what searchers mutate. A ``Var`` is one integer decision that is written
  to one or more genome positions, so a stage-wise space (one expand ratio per stage, the
  ElasticViT default) searches a short vector while its genome stays per-layer.

Everything works on batches: ``np.ndarray`` of shape (n, len(genes)) or (n, len(vars)).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from nas.arch import GENOME_DTYPE, Arch, Gene, genome_ids
from nas.errors import UserError

if TYPE_CHECKING:  # torch is imported only by build()
    import torch.nn as nn

    from nas.tomldoc import TomlDoc


@dataclass(frozen=True)
class Var:
    """One decision of the search vector, written to ``positions`` of the genome."""

    name: str
    size: int
    positions: tuple[int, ...]


@dataclass(frozen=True)
class BlockSpec:
    """What one latency-table key measures: a builder name (``nas/nets/blocks.py``), its
    arguments and the input shape at batch 1. Torch-free, so key sets can be enumerated, compared
    and stored without building anything."""

    kind: str
    shape: tuple[int, ...]
    args: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, kind: str, shape: Sequence[int], **args: Any) -> "BlockSpec":
        return cls(kind, tuple(int(x) for x in shape), tuple(sorted(args.items())))

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.args)


@dataclass(frozen=True)
class LatencySlot:
    """One block a latency table is summed over.

    The block's table key is a function of a few genes (``factors``); the block is present when
    gene ``active[0]`` has choice index >= ``active[1]`` (a layer exists when the stage's depth
    reaches it), always when ``active`` is None. A table compiles each slot into a dense array over
    the factors' choice indices, so prediction is one gather per slot for a whole batch. A slot
    with no factors is a fixed part of the network (one key for every architecture).
    """

    factors: tuple[int, ...]  # gene indices
    key: Callable[..., str]  # gene *values* of the factors -> table key
    active: tuple[int, int] | None = None  # (gene, min choice index); None: always present
    ordered: tuple[tuple[int, int], ...] = ()  # (i, j): value of factor i <= value of factor j
    block: Callable[..., BlockSpec] | None = None  # same arguments as ``key``: what the key measures

    def present(self, genomes: np.ndarray) -> np.ndarray:
        if self.active is None:
            return np.ones(len(genomes), dtype=bool)
        return genomes[:, self.active[0]] >= self.active[1]


@dataclass(frozen=True)
class LayerCensus:
    """The layers of a batch of genomes, for spaces whose blocks are keyed by a signature rather
    than by a few genes (``SearchSpace.latency_layers``): slot j of genome i is a layer of kind
    ``kind[i, j]`` (an index into the space's ``layer_kinds``) and signature ``sig[i, j]``,
    present ``count[i, j]`` times (0: absent)."""

    kind: np.ndarray  # (n, slots) int
    sig: np.ndarray  # (n, slots, fields) int
    count: np.ndarray  # (n, slots) int


class SearchSpace:
    """Base class; a family sets ``name``, ``genes``, ``vars``, ``fingerprint`` and the hooks."""

    family: str = ""
    name: str
    description: str = ""
    source: str = ""
    path: Path | None = None
    genes: tuple[Gene, ...]
    vars: tuple[Var, ...]
    fingerprint: str

    # ---- hooks a family implements -------------------------------------------------------
    def active_mask(self, genomes: np.ndarray) -> np.ndarray:
        """Bool (n, len(genes)): which genes matter for each genome (others are normalised to 0)."""
        return np.ones(genomes.shape, dtype=bool)

    def repair(self, genomes: np.ndarray) -> np.ndarray:
        """Map any in-range genome onto a valid one (e.g. clip widths to be non-decreasing)."""
        return genomes

    def violations(self, genomes: np.ndarray) -> list[str]:
        """Why the first invalid genome of the batch is invalid ([] if all are valid)."""
        return []

    def sample_vectors(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Uniform over each var; families with ordered widths override to sample valid ones."""
        sizes = np.array([v.size for v in self.vars])
        return (rng.random((n, len(sizes))) * sizes).astype(GENOME_DTYPE)

    def cost(self, genomes: np.ndarray) -> dict[str, np.ndarray]:
        """Analytic complexity per genome: at least ``macs`` and ``params`` (counts, not millions)."""
        raise NotImplementedError

    def latency_slots(self, grid_rounding: str) -> list[LatencySlot]:
        raise NotImplementedError(f"space family {self.family!r} has no latency-table blocks")

    def decode(self, arch: Arch) -> dict[str, Any]:
        """Human-readable columns (become pareto.csv columns)."""
        return {g.name: g.choices[i] for g, i in zip(self.genes, arch.genome)}

    def parse_arch(self, spec: Any) -> Arch:
        """An Arch from user input (a preset name, the family's native encoding, a gene dict)."""
        if isinstance(spec, str):
            presets = self.presets()
            if spec in presets:
                return presets[spec]
            from nas.registry import did_you_mean

            raise did_you_mean(spec, presets, f"preset of space {self.name!r}")
        if isinstance(spec, dict):
            return self.from_values(spec)
        raise UserError(f"cannot read an architecture of space {self.name!r} from {spec!r}")

    def presets(self) -> dict[str, Arch]:
        return {}

    def build(self, arch: Arch) -> "nn.Module":
        raise NotImplementedError(f"space family {self.family!r} cannot build models")

    def input_resolution(self, arch: Arch) -> int:
        """The image side the architecture's network computes at."""
        return int(getattr(self, "resolution", 0))

    def build_for_proxy(self, arch: Arch, proxy: str) -> "nn.Module":
        """The model a proxy scores; a family may return a proxy-specific variant (e.g. the thin
        network TE-NAS counts linear regions on)."""
        return self.build(arch)

    def build_supernet(self):
        """The weight-sharing supernet of this space (``nas.elastic.Supernet``), or None."""
        return None

    # ---- generic machinery ----------------------------------------------------------------
    def _read_header(self, doc: "TomlDoc") -> dict:
        """The fields every space file has (name, description, source); returns the TOML table."""
        d = doc.data
        self.path = doc.path
        self.name = doc.get(d, "name", "name", str)
        self.description = doc.get(d, "description", "description", str, "")
        self.source = doc.get(d, "source", "source", str, "")
        return d

    def _string_presets(self, doc: "TomlDoc", parse: Callable[[str], Arch]) -> dict[str, Arch]:
        """``[presets]`` whose values are the family's arch strings; a bad one names its field."""
        out = {}
        for name, text in doc.get(doc.data, "presets", "presets", dict, {}).items():
            try:
                out[name] = parse(str(text))
            except UserError as e:
                raise doc.error(f"presets.{name}", str(e)) from None
        return out

    @property
    def n_genes(self) -> int:
        return len(self.genes)

    @functools.cached_property
    def gene_sizes(self) -> np.ndarray:
        return np.array([g.size for g in self.genes], dtype=np.int64)

    @functools.cached_property
    def var_sizes(self) -> np.ndarray:
        return np.array([v.size for v in self.vars], dtype=np.int64)

    def to_genomes(self, vectors: np.ndarray) -> np.ndarray:
        """Search vectors -> canonical, valid genomes (vectorised)."""
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != len(self.vars):
            raise ValueError(f"expected vectors of shape (n, {len(self.vars)}), got {vectors.shape}")
        x = np.clip(vectors, 0, self.var_sizes - 1).astype(GENOME_DTYPE)
        x = np.concatenate([x, np.zeros((len(x), 1), dtype=GENOME_DTYPE)], axis=1)  # column -1: constant 0
        return self.canonicalize(self.repair(x[:, self._gene_var]))

    @functools.cached_property
    def _gene_var(self) -> np.ndarray:
        """For each genome position, the search variable written there (-1: none, stays 0)."""
        out = np.full(self.n_genes, -1, dtype=np.int64)
        for j, var in enumerate(self.vars):
            out[list(var.positions)] = j
        return out

    def canonicalize(self, genomes: np.ndarray) -> np.ndarray:
        genomes = np.asarray(genomes, dtype=GENOME_DTYPE)
        return np.where(self.active_mask(genomes), genomes, 0).astype(GENOME_DTYPE)

    def ids(self, genomes: np.ndarray) -> list[str]:
        return genome_ids(self.name, self.fingerprint, genomes)

    def canonical(self, genome: Sequence[int]) -> Arch:
        """Validate one genome and return its canonical Arch; bad genomes raise UserError."""
        g = np.asarray(genome, dtype=np.int64).reshape(1, -1)
        if g.shape[1] != self.n_genes:
            raise UserError(f"space {self.name!r} has {self.n_genes} genes, got a genome of {g.shape[1]}")
        sizes = np.array([gene.size for gene in self.genes])
        bad = np.flatnonzero((g[0] < 0) | (g[0] >= sizes))
        if bad.size:
            gene = self.genes[bad[0]]
            raise UserError(f"gene {gene.name!r}: index {g[0, bad[0]]} outside 0..{gene.size - 1}")
        problems = self.violations(g.astype(GENOME_DTYPE))
        if problems:
            raise UserError(f"not an architecture of space {self.name!r}: {problems[0]}")
        canon = self.canonicalize(g)[0]
        return Arch(self.name, tuple(int(x) for x in canon), self.fingerprint)

    def arch(self, genome_row: np.ndarray) -> Arch:
        """Arch of a genome already known to be canonical (no validation; internal use)."""
        return Arch(self.name, tuple(int(x) for x in genome_row), self.fingerprint)

    def genomes(self, archs: Sequence[Arch]) -> np.ndarray:
        for a in archs:
            if a.space != self.name:
                raise UserError(f"architecture {a.id} belongs to space {a.space!r}, not {self.name!r}")
        return np.array([a.genome for a in archs], dtype=GENOME_DTYPE).reshape(len(archs), self.n_genes)

    def from_values(self, values: dict[str, Any]) -> Arch:
        """An Arch from {gene name: value}; genes left out take their first choice."""
        index = {g.name: i for i, g in enumerate(self.genes)}
        genome = [0] * self.n_genes
        for name, value in values.items():
            if name not in index:
                from nas.registry import did_you_mean

                raise did_you_mean(name, index, f"gene of space {self.name!r}")
            gene = self.genes[index[name]]
            if value not in gene.choices:
                raise UserError(f"gene {name!r}: {value!r} is not one of {list(gene.choices)}")
            genome[index[name]] = gene.choices.index(value)
        return self.canonical(genome)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n random canonical genomes."""
        return self.to_genomes(self.sample_vectors(rng, n))

    def smallest(self) -> Arch:
        return self.arch(self.to_genomes(np.zeros((1, len(self.vars)), dtype=GENOME_DTYPE))[0])

    def largest(self) -> Arch:
        return self.arch(self.to_genomes((self.var_sizes - 1)[None, :])[0])

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "description": self.description,
            "source": self.source,
            "path": str(self.path) if self.path else None,
            "genes": self.n_genes,
            "search_vars": len(self.vars),
            "presets": sorted(self.presets()),
        }
