"""Runners score architectures with the expensive metrics (a proxy now, supernet accuracy later).

``imap(genomes)`` yields ``Scored`` results as they finish, so the loop logs each one at once and
an interruption loses only what was in flight. LocalRunner works in this process; a Ray runner
(distributed, one resident evaluator per actor) will live in this module too: it is the only
module allowed to import ray.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from nas.objectives import Evaluator


@dataclass(frozen=True)
class Scored:
    index: int  # position in the genomes given to imap
    values: dict[str, float]  # metric column -> value (empty if it failed)
    error: str | None  # "ExceptionType: message" when scoring failed
    seconds: float


class LocalRunner:
    def __init__(self, evaluator: Evaluator):
        self.evaluator = evaluator

    def imap(self, genomes: np.ndarray) -> Iterator[Scored]:
        for i, genome in enumerate(genomes):
            t = time.perf_counter()
            try:
                values, error = self.evaluator.expensive(genome), None
            except Exception as e:  # a failing architecture is a row, not a crashed search
                values, error = {}, f"{type(e).__name__}: {e}"
            yield Scored(i, values, error, time.perf_counter() - t)
