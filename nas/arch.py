"""Core data types, free of torch: a Gene is one discrete decision, an Arch one point of a space.

A genome is a tuple of choice *indices*, one per gene, in canonical form (inactive genes are 0),
so two genomes describe the same network exactly when they are equal. Batches of genomes travel
as ``np.ndarray[int16]`` of shape (n, len(genes)); Arch objects are made only where a single
architecture is handled (a CSV row, a proxy evaluation, the CLI).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

GENOME_DTYPE = np.int16


@dataclass(frozen=True)
class Gene:
    name: str  # "stage3.depth", "resolution", "stage1.expand.2"
    choices: tuple  # the values this gene can take; the genome stores an index into it

    @property
    def size(self) -> int:
        return len(self.choices)


def genome_id(space: str, fingerprint: str, genome: bytes) -> str:
    digest = hashlib.blake2b(fingerprint.encode() + genome, digest_size=6).hexdigest()
    return f"{space}-{digest}"


def genome_ids(space: str, fingerprint: str, genomes: np.ndarray) -> list[str]:
    """Stable ids for a batch of canonical genomes (the same id as ``Arch.id``)."""
    rows = np.ascontiguousarray(genomes, dtype=GENOME_DTYPE)
    return [genome_id(space, fingerprint, row.tobytes()) for row in rows]


@dataclass(frozen=True)
class Arch:
    """One architecture: the space it belongs to and its canonical genome.

    Construct through ``SearchSpace.canonical`` (which validates and normalises); ``id`` is a
    stable hash of the space's definition and the genome, so a cached result can never be
    attributed to an architecture of an edited space.
    """

    space: str
    genome: tuple[int, ...]
    fingerprint: str = field(default="", repr=False, compare=False)

    @property
    def id(self) -> str:
        return genome_id(self.space, self.fingerprint, np.asarray(self.genome, GENOME_DTYPE).tobytes())

    def __str__(self) -> str:
        return self.id
