"""Table metrics: any column of a CSV keyed by architecture, as an objective or a constraint.

``--metric NAME=FILE.csv:COLUMN`` defines one (the CSV keyed like a whole-network table:
``arch`` or ``arch_id``, ``nas/latency/network.py``); shipped metrics live in ``metrics/*.toml``
(e.g. ``nb201-cifar10``, NAS-Bench-201's CIFAR-10 test accuracy) and are loaded when an
objective or a constraint names them. A metric is recorded as column ``metric_NAME`` of every
evaluation; it is cheap (one vectorised lookup per batch), like latency.

A bare user metric is minimised (``max:NAME`` maximises); a shipped metric has its own
direction (accuracy is maximised), as a proxy has.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nas.errors import UserError
from nas.latency.network import KeyedCsv, arch_index, lookup, read_keyed_csv
from nas.registry import did_you_mean
from nas.resources import data_dir
from nas.spaces.base import SearchSpace
from nas.tomldoc import TomlDoc

PREFIX = "metric_"
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]*")
RESERVED = ("latency", "macs", "params", "accuracy")  # objective tokens a metric may not shadow


def metric_column(name: str) -> str:
    return f"{PREFIX}{name}"


@dataclass(frozen=True)
class TableMetric:
    name: str
    data: KeyedCsv
    column: str
    goal: str  # direction of a bare ``NAME`` objective
    meta: dict
    path: Path  # the TOML of a shipped metric, the CSV of a user's
    allow_missing: bool = False

    @property
    def output(self) -> str:
        return metric_column(self.name)

    @property
    def label(self) -> str:
        units = self.meta.get("units")
        return f"{self.name}{f' ({units})' if units else ''}"

    @property
    def version(self) -> str:
        return f"{self.name}:{self.meta.get('version', 'user-file')}@{self.data.sha256[:8]}:{self.column}"

    def check(self, space: SearchSpace) -> None:
        want = self.meta.get("space")
        if want and want != space.name:
            raise UserError(f"metric {self.name!r} ({self.path}) scores architectures of space {want!r}, "
                            f"not {space.name!r}")
        self.data.column(self.column, f"metric {self.name}")
        arch_index(self.data, space)  # every key must be an architecture of the space

    def values(self, space: SearchSpace, genomes: np.ndarray) -> np.ndarray:
        return lookup(self.data, self.data.column(self.column, f"metric {self.name}"), space, genomes,
                      f"metric {self.name!r}", self.allow_missing)


def check_name(name: str, flag: str) -> str:
    if not _NAME.fullmatch(name):
        raise UserError(f"{flag}: metric name {name!r} must start with a letter and hold only letters, digits, "
                        "'_', '.' and '-'")
    if name in RESERVED:
        raise UserError(f"{flag}: {name!r} is a built-in objective; choose another metric name")
    return name


def parse_metric_spec(spec: str) -> tuple[str, Path, str]:
    """``NAME=FILE.csv:COLUMN`` -> (name, path, column)."""
    name, eq, rest = spec.partition("=")
    path, colon, column = rest.rpartition(":")
    if not eq or not colon or not path or not column:
        raise UserError(f"--metric {spec!r}: expected NAME=FILE.csv:COLUMN (e.g. acc=results.csv:top1)")
    check_name(name.strip(), "--metric")
    if not Path(path).is_file():
        raise UserError(f"--metric {spec!r}: no such file {path}")
    return name.strip(), Path(path), column.strip()


def absolute_spec(spec: str) -> str:
    """The spec with its file made absolute (config.toml: a resume may run elsewhere)."""
    name, path, column = parse_metric_spec(spec)
    return f"{name}={path.resolve()}:{column}"


def shipped_metrics() -> dict[str, Path]:
    root = data_dir("metrics")
    return {p.stem: p for p in sorted(root.glob("*.toml"))} if root.is_dir() else {}


def load_shipped(path: Path) -> TableMetric:
    doc = TomlDoc(path)
    d = doc.data
    name = check_name(doc.get(d, "name", "name", str), str(path))
    goal = doc.get(d, "goal", "goal", str, "min")
    if goal not in ("min", "max"):
        raise doc.error("goal", f"expected 'min' or 'max', got {goal!r}")
    data = read_keyed_csv(path.parent / doc.get(d, "table", "table", str))
    want = d.get("sha256")
    if want is not None and want != data.sha256:
        raise doc.error("sha256", f"{data.path.name} has sha256 {data.sha256[:12]}..., the metadata says "
                                  f"{str(want)[:12]}...: the table was edited")
    return TableMetric(name, data, doc.get(d, "column", "column", str), goal, dict(d), path)


def available(specs: Sequence[str]) -> dict[str, str]:
    """Metric name -> direction of its bare name, for the objective parser: the user's (``min``)
    and the shipped ones (their own), without reading any table."""
    out = {name: TomlDoc(path).data.get("goal", "min") for name, path in shipped_metrics().items()}
    mine: set[str] = set()
    for spec in specs:
        name = parse_metric_spec(spec)[0]
        if name in mine:
            raise UserError(f"--metric {name} is given twice")
        mine.add(name)
        out[name] = "min"  # a user's metric of a shipped name replaces it
    return out


def load_metrics(specs: Sequence[str], used: Sequence[str], space: SearchSpace,
                 allow_missing: bool = False) -> list[TableMetric]:
    """The user's metrics, and the shipped ones that ``used`` (metric names) needs."""
    out: dict[str, TableMetric] = {}
    for spec in specs:
        name, path, column = parse_metric_spec(spec)
        meta: dict[str, Any] = {"provenance": {"source": "user file", "licence": "user file"}}
        out[name] = TableMetric(name, read_keyed_csv(path), column, "min", meta, path)
    shipped = shipped_metrics()
    for name in used:
        if name not in out:
            if name not in shipped:
                raise did_you_mean(name, list(shipped), "metric")
            out[name] = load_shipped(shipped[name])
    metrics = [TableMetric(m.name, m.data, m.column, m.goal, m.meta, m.path, allow_missing) for m in out.values()]
    for m in metrics:
        m.check(space)
    return metrics
