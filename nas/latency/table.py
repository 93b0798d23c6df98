"""Per-device latency lookup tables: load, compile against a space, predict whole batches.

A table is two files in ``predictors/<device>/``: ``<family>.csv`` (``block,latency_ms``; one row
per measured block) and ``<family>.toml`` (what was measured, where, how, by whom; the token-grid
rounding its keys use; the licence). Prediction sums one entry per block of the architecture
(``SearchSpace.latency_slots``). Compiling turns each slot into a dense array over the choice
indices of the genes its key depends on, so a batch of genomes costs one gather per slot.
"""
from __future__ import annotations

import csv
import hashlib
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nas.arch import Arch
from nas.errors import MissingKeysError, UserError
from nas.registry import did_you_mean
from nas.resources import data_dir
from nas.spaces.base import LatencySlot, SearchSpace
from nas.tomldoc import TomlDoc

GRID_ROUNDINGS = ("floor", "ceil")


@dataclass
class LatencyTable:
    device: str
    family: str
    ms: dict[str, float]
    meta: dict[str, Any]
    path: Path
    grid_rounding: str = "floor"
    _compiled: dict[str, "_Compiled"] = field(default_factory=dict, repr=False)

    # ---- loading ---------------------------------------------------------------------------
    @classmethod
    def load(cls, meta_path: Path) -> "LatencyTable":
        doc = TomlDoc(meta_path)
        d = doc.data
        device = doc.get(d, "device", "device", str)
        family = doc.get(d, "family", "family", str)
        rounding = doc.get(d, "grid_rounding", "grid_rounding", str)
        if rounding not in GRID_ROUNDINGS:
            raise doc.error("grid_rounding", f"expected one of {GRID_ROUNDINGS}, got {rounding!r}")
        units = doc.get(d, "units", "units", str)
        if units != "ms":
            raise doc.error("units", f"only 'ms' tables are supported, got {units!r}")
        csv_path = meta_path.parent / doc.get(d, "table", "table", str)
        ms = read_csv(csv_path)
        digest = hashlib.sha256(csv_path.read_bytes()).hexdigest()
        want = d.get("sha256")
        if want is not None and want != digest:
            raise doc.error("sha256", f"{csv_path.name} has sha256 {digest[:12]}..., the metadata says {str(want)[:12]}...; "
                                      "the table was edited: update the metadata (and its provenance) or restore the file")
        meta = dict(d)
        meta["sha256"] = digest
        return cls(device, family, ms, meta, meta_path, rounding)

    @property
    def version(self) -> str:
        """``<device>:<version>@<sha256[:8]>``: enough to tell two tables apart in a CSV."""
        return f"{self.device}:{self.meta.get('version', 'unversioned')}@{self.meta['sha256'][:8]}"

    # ---- prediction ------------------------------------------------------------------------
    def compiled(self, space: SearchSpace) -> "_Compiled":
        key = f"{space.name}:{space.fingerprint}"
        if key not in self._compiled:
            self._compiled[key] = _Compiled(self, space)
        return self._compiled[key]

    def predict(self, space: SearchSpace, genomes: np.ndarray) -> np.ndarray:
        """Latency in ms of each genome (vectorised). A block the table lacks raises
        MissingKeysError naming every missing key of the batch."""
        return self.compiled(space).predict(genomes)

    def breakdown(self, space: SearchSpace, arch: Arch) -> list[tuple[str, float]]:
        """(key, ms) of every block of one architecture, in network order."""
        return self.compiled(space).breakdown(np.asarray([arch.genome]))

    def missing_keys(self, space: SearchSpace) -> list[str]:
        """Every key some valid architecture of ``space`` needs and the table lacks (exact)."""
        return self.compiled(space).missing


class _Compiled:
    def __init__(self, table: LatencyTable, space: SearchSpace):
        self.table, self.space = table, space
        self.slots = space.latency_slots(table.grid_rounding)
        self.dense: list[np.ndarray] = []  # per slot: flattened table over its factors, then 0.0
        self.strides: list[list[int]] = []
        missing: set[str] = set()
        for slot in self.slots:
            shape = [space.genes[g].size for g in slot.factors]
            dense = np.full(shape, np.nan)
            for idx in itertools.product(*(range(s) for s in shape)):
                if not _reachable(slot, idx, space):
                    continue
                values = [space.genes[g].choices[i] for g, i in zip(slot.factors, idx)]
                k = slot.key(*values)
                v = table.ms.get(k)
                if v is None:
                    missing.add(k)
                else:
                    dense[idx] = v
            self.dense.append(np.append(dense.ravel(), 0.0))
            self.strides.append([int(np.prod(shape[i + 1:])) for i in range(len(shape))])
        self.missing = sorted(missing)

    CHUNK = 32768  # genomes per pass: keeps each column slice in cache

    def predict(self, genomes: np.ndarray) -> np.ndarray:
        g = np.asarray(genomes)
        total = np.empty(len(g))
        for start in range(0, len(g), self.CHUNK):
            cols = np.ascontiguousarray(g[start:start + self.CHUNK].T, dtype=np.intp)  # (genes, n)
            acc = np.zeros(cols.shape[1])
            for slot, dense, strides in zip(self.slots, self.dense, self.strides):
                idx = cols[slot.factors[0]] * strides[0]
                for f, st in zip(slot.factors[1:], strides[1:]):
                    idx += cols[f] * st
                if slot.active is None:
                    acc += dense[idx]
                else:  # absent layers read the appended 0.0 at the end of the dense array
                    acc += dense[np.where(cols[slot.active[0]] >= slot.active[1], idx, dense.size - 1)]
            total[start:start + len(acc)] = acc
        bad = np.isnan(total)
        if bad.any():
            keys = sorted({k for row in g[bad] for k, v in self.breakdown(row[None, :]) if math.isnan(v)})
            raise missing_error(self.table, self.space, keys)
        return total

    def breakdown(self, genomes: np.ndarray) -> list[tuple[str, float]]:
        row = genomes[0]
        out = []
        for slot in self.slots:
            if not slot.present(genomes[:1])[0]:
                continue
            values = [self.space.genes[gi].choices[row[gi]] for gi in slot.factors]
            k = slot.key(*values)
            out.append((k, self.table.ms.get(k, float("nan"))))
        return out


def _reachable(slot: LatencySlot, idx: tuple[int, ...], space: SearchSpace) -> bool:
    seen: dict[int, int] = {}
    for g, i in zip(slot.factors, idx):  # a gene used twice must take one value
        if seen.setdefault(g, i) != i:
            return False
    for a, b in slot.ordered:
        if space.genes[slot.factors[a]].choices[idx[a]] > space.genes[slot.factors[b]].choices[idx[b]]:
            return False
    return True


def missing_error(table: LatencyTable, space: SearchSpace, keys: list[str]) -> MissingKeysError:
    shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
    return MissingKeysError(
        f"latency table {table.path} ({table.device}) lacks {len(keys)} block(s) that space "
        f"{space.name!r} needs: {shown}; measure them into a table of your own "
        f"(docs/latency-tables.md) or search a space the table covers", keys)


def read_csv(path: Path) -> dict[str, float]:
    """``block,latency_ms`` rows; errors name the file, the line and the field."""
    try:
        f = path.open(newline="", encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot read latency table {path}: {e.strerror}") from None
    ms: dict[str, float] = {}
    with f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != ["block", "latency_ms"]:
            raise UserError(f"{path}:1: expected the header 'block,latency_ms', got {','.join(header or [])!r}")
        for line, row in enumerate(reader, start=2):
            if len(row) != 2:
                raise UserError(f"{path}:{line}: expected 2 fields (block, latency_ms), got {len(row)}")
            key, value = row
            try:
                v = float(value)
            except ValueError:
                raise UserError(f"{path}:{line}: field 'latency_ms': {value!r} is not a number") from None
            if not math.isfinite(v) or v < 0:
                raise UserError(f"{path}:{line}: field 'latency_ms': {value!r} is not a finite, non-negative time")
            if key in ms:
                raise UserError(f"{path}:{line}: field 'block': {key!r} appears twice")
            ms[key] = v
    return ms


# ---- finding tables ----------------------------------------------------------------------------
def device_dirs() -> dict[str, Path]:
    root = data_dir("predictors")
    return {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and any(p.glob("*.toml"))} if root.is_dir() else {}


def table_path(device: str, space: SearchSpace) -> Path:
    """Metadata TOML of the table for ``device`` and ``space``: ``<device>/<space name>.toml``,
    else ``<device>/<family>.toml``; ``device`` may also be a directory or a .toml path."""
    given = Path(device)
    if device.endswith(".toml") or given.is_file():
        if not given.is_file():
            raise UserError(f"latency table metadata {given} does not exist")
        return given
    dirs = device_dirs()
    folder = given if (given.is_dir() and ("/" in device or device.startswith("."))) else dirs.get(device)
    if folder is None:
        raise did_you_mean(device, dirs, "device") from None
    for stem in (space.name, space.family):
        if (folder / f"{stem}.toml").is_file():
            return folder / f"{stem}.toml"
    have = sorted(p.stem for p in folder.glob("*.toml"))
    raise UserError(f"device {device!r} has no latency table for space {space.name!r} (family {space.family!r}); "
                    f"it has tables for: {', '.join(have) or 'nothing'}; see docs/latency-tables.md to build one")


def load_table(device: str, space: SearchSpace, check: bool = True) -> LatencyTable:
    """The table for ``device`` and ``space``; with ``check`` every key the space can need is
    verified up front, so a search never starts on a table with holes."""
    path = table_path(device, space)
    table = _load_cached(path.resolve(), path.stat().st_mtime_ns)
    if table.family != space.family:
        raise UserError(f"latency table {path} is for space family {table.family!r}, not {space.family!r}")
    if check:
        missing = table.missing_keys(space)
        if missing:
            raise missing_error(table, space, missing)
    return table


_CACHE: dict[tuple[Path, int], LatencyTable] = {}


def _load_cached(path: Path, mtime: int) -> LatencyTable:
    if (path, mtime) not in _CACHE:
        _CACHE[(path, mtime)] = LatencyTable.load(path)
    return _CACHE[(path, mtime)]
