"""SearchConfig: everything that determines a search, written to ``<run>/config.toml``.

``nas resume`` rebuilds the search from this file alone, so every field that changes the result
(space, devices, objectives, constraints, strategy, seed, budget, proxy threads) lives here,
together with fingerprints of the space and tables that a resume checks.
"""
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from nas.errors import UserError

DEFAULT_OBJECTIVES = "naswot,latency"


def default_objectives(supernet: bool, devices: bool) -> str:
    """naswot,latency; with a trained supernet accuracy,latency; without devices MACs stand in."""
    return f"{'accuracy' if supernet else 'naswot'},{'latency' if devices else 'macs'}"


@dataclass(frozen=True)
class SearchConfig:
    space: str
    devices: tuple[str, ...] = ()
    objectives: str = DEFAULT_OBJECTIVES
    strategy: str = "nsga2"
    budget: int = 160
    population: int = 32
    seed: int = 0
    max_latency: float | None = None  # ms, every device
    max_macs: float | None = None  # millions
    max_params: float | None = None  # millions
    min_macs: float | None = None  # millions: a lower bound (ViT-ResNAS searches MACs in [0.975 C, C])
    preset: str | None = None  # a named strategy configuration (nas/search/presets.py), e.g. "resnas"
    metrics: tuple[str, ...] = ()  # NAME=FILE.csv:COLUMN table metrics (nas/metrics.py), files absolute
    constraints: tuple[str, ...] = ()  # "NAME<=VALUE" / "NAME>=VALUE" (nas.objectives.parse_constraint)
    allow_missing: bool = False  # an architecture a whole-network table or metric lacks: a failed row, not an error
    threads: int = 2  # torch threads for proxy evaluation; fixed so scores are reproducible
    supernet: str | None = None  # a `nas train` checkpoint: accuracy comes from it
    # where expensive metrics run; none of these changes the result, so a resume may change them
    ray: str | None = None  # None: this process; "local": a local Ray instance; else a cluster address
    workers: int | None = None  # Ray actors (default: cluster CPUs // threads)
    gpus_per_worker: float | None = None  # may be fractional: several actors share a GPU
    optuna_storage: str | None = None  # sqlite:///PATH or journal:PATH: every evaluation mirrored as an optuna trial
    fingerprints: dict = field(default_factory=dict)  # filled by the search: space + table versions
    design: dict = field(default_factory=dict)  # a designer strategy's own settings (e.g. mpcvit: mu, data, steps)

    def validate(self) -> "SearchConfig":
        if self.budget <= 0:
            raise UserError(f"--budget must be a positive number of evaluations, got {self.budget}")
        if not 2 <= self.population <= 100_000:
            raise UserError(f"--population must be between 2 and 100000, got {self.population}")
        if not 0 <= self.seed < 2**32:
            raise UserError(f"--seed must be between 0 and 2**32 - 1, got {self.seed}")
        if self.threads < 1:
            raise UserError(f"--threads must be at least 1, got {self.threads}")
        check_ray_flags(self.ray, self.workers, self.gpus_per_worker)
        if self.optuna_storage is not None:
            from nas.tracking import check_storage

            check_storage(self.optuna_storage)
        for flag, v in (("--max-latency", self.max_latency), ("--max-macs", self.max_macs), ("--max-params", self.max_params),
                        ("--min-macs", self.min_macs)):
            if v is not None and not v > 0:
                raise UserError(f"{flag} must be positive, got {v}")
        if self.min_macs is not None and self.max_macs is not None and self.min_macs > self.max_macs:
            raise UserError(f"--min-macs {self.min_macs:g} exceeds --max-macs {self.max_macs:g}: no architecture can satisfy both")
        return self

    def to_toml(self) -> str:
        return dataclass_to_toml(self, "`nas search`; `nas resume`")

    @classmethod
    def from_toml(cls, path: Path) -> "SearchConfig":
        return dataclass_from_toml(cls, path, "nas search", tuples=("devices", "metrics", "constraints")).validate()

    def with_(self, **changes: Any) -> "SearchConfig":
        return dataclasses.replace(self, **changes)


def check_ray_flags(ray: str | None, workers: int | None, gpus_per_worker: float | None) -> None:
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    if gpus_per_worker is not None and not gpus_per_worker >= 0:
        raise UserError(f"--gpus-per-worker must be 0 or more, got {gpus_per_worker}")
    if ray is None and (workers is not None or gpus_per_worker):
        raise UserError("--workers and --gpus-per-worker need --ray")


def dataclass_to_toml(obj, writer: str) -> str:
    """A frozen config dataclass as TOML (None fields left out, tuples as lists)."""
    data = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(obj).items() if v is not None}
    return f"# written by {writer} reads it back\n" + tomli_w.dumps(data)


def dataclass_from_toml(cls, path: Path, writer: str, tuples: tuple[str, ...] = ()):
    """The inverse of dataclass_to_toml; unknown or missing fields are one-line errors."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist: is this a directory written by `{writer}`?") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: malformed TOML: {e}") from None
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise UserError(f"{path}: unknown field(s) {', '.join(sorted(unknown))}")
    for name in tuples:
        data[name] = tuple(data.get(name, ()))
    try:
        return cls(**data)
    except TypeError as e:
        raise UserError(f"{path}: incomplete configuration ({e})") from None
