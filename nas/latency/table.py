"""Per-device latency lookup tables: load, compile against a space, predict whole batches.

A table is two files in ``predictors/<device>/``: ``<family>.csv`` (``block,latency_ms``; one row
per measured block) and ``<family>.toml`` (what was measured, where, how, by whom; the token-grid
rounding its keys use; the licence). Prediction sums one entry per block of the architecture
(``SearchSpace.latency_slots``). Compiling turns each slot into a dense array over the choice
indices of the genes its key depends on, so a batch of genomes costs one gather per slot.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import itertools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nas.arch import Arch
from nas.errors import MissingKeysError, UserError
from nas.registry import did_you_mean
from nas.resources import data_dir
from nas.spaces.base import BlockSpec, LatencySlot, SearchSpace
from nas.tomldoc import TomlDoc

GRID_ROUNDINGS = ("floor", "ceil")
KINDS = ("blocks", "mpc", "network", "fitted")  # a device TOML's `kind` (absent: blocks); network: nas/latency/network.py,
# fitted: nas/latency/fewshot.py


@dataclass
class LatencyTable:
    device: str
    family: str
    ms: dict[str, float]
    meta: dict[str, Any]
    path: Path
    grid_rounding: str = "floor"
    kind: str = "blocks"
    _compiled: dict[str, "_Compiled"] = field(default_factory=dict, repr=False)

    # ---- loading ---------------------------------------------------------------------------
    @classmethod
    def load(cls, meta_path: Path) -> "LatencyTable":
        doc = TomlDoc(meta_path)
        d = doc.data
        device = doc.get(d, "device", "device", str)
        family = doc.get(d, "family", "family", str)
        if doc.get(d, "kind", "kind", str, "blocks") != "blocks":
            raise doc.error("kind", f"a block table has kind 'blocks', got {d['kind']!r} (read it with load_any)")
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
                                      "the table was edited (update the metadata and its provenance, or restore the file) or "
                                      "`nas lut build` was interrupted while writing it (run it again)")
        meta = dict(d)
        meta["sha256"] = digest
        return cls(device, family, ms, meta, meta_path, rounding)

    @property
    def version(self) -> str:
        """``<device>:<version>@<sha256[:8]>[+<correction hash>]``: enough to tell two tables apart
        in a CSV, and a run resumed after `nas lut validate` saved a correction from one before."""
        base = f"{self.device}:{self.meta.get('version', 'unversioned')}@{self.meta['sha256'][:8]}"
        c = self.meta.get("correction")
        if not c:
            return base
        text = repr((c.get("scale"), c.get("per_block_ms"), c.get("offset_ms")))
        return f"{base}+c{hashlib.sha256(text.encode()).hexdigest()[:6]}"

    # ---- prediction ------------------------------------------------------------------------
    def compiled(self, space: SearchSpace) -> "_Compiled":
        key = f"{space.name}:{space.fingerprint}"
        if key not in self._compiled:
            if is_layered(space):
                from nas.latency.layers import LayerCompiled

                self._compiled[key] = LayerCompiled(self, space)
            else:
                self._compiled[key] = _Compiled(self, space)
        return self._compiled[key]

    def predict(self, space: SearchSpace, genomes: np.ndarray, corrected: bool = True) -> np.ndarray:
        """Latency in ms of each genome (vectorised): the sum of its blocks, through the table's
        ``[correction]`` when it has one and ``corrected``. A block the table lacks raises
        MissingKeysError naming every missing key of the batch."""
        return self.compiled(space).predict(genomes, corrected)

    @property
    def entries(self) -> int:
        return len(self.ms)

    def describe(self) -> str:
        return f"grid rounding {self.grid_rounding}"

    def block_rows(self, space: SearchSpace, arch: Arch) -> list[dict[str, Any]]:
        if is_layered(space):  # a layer the table lacks comes from its fitted model: say which
            return [{"key": k, "ms": v, "source": src} for k, v, src in self.compiled(space).rows(np.asarray([arch.genome]))]
        return [{"key": k, "ms": v} for k, v in self.breakdown(space, arch)]

    @property
    def correction(self) -> "Correction | None":
        return Correction.from_meta(self.meta.get("correction"))

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
            for idx, values in slot_choices(slot, space):
                k = slot.key(*values)
                v = table.ms.get(k)
                if v is None:
                    missing.add(k)
                else:
                    dense[idx] = v
            self.dense.append(np.append(dense.ravel(), 0.0))
            self.strides.append([int(np.prod(shape[i + 1:])) for i in range(len(shape))])
        self.missing = sorted(missing)
        self.correction = Correction.from_meta(table.meta.get("correction"))

    CHUNK = 32768  # genomes per pass: keeps each column slice in cache

    def predict(self, genomes: np.ndarray, corrected: bool = True) -> np.ndarray:
        if corrected and self.correction is not None:
            total, count = self.sums(genomes, count=True)
            return self.correction.apply(total, count)
        return self.sums(genomes)[0]

    def sums(self, genomes: np.ndarray, count: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Sum of block latencies of each genome and, with ``count``, how many blocks it has."""
        g = np.asarray(genomes)
        total = np.empty(len(g))
        n_blocks = np.empty(len(g)) if count else None
        for start in range(0, len(g), self.CHUNK):
            cols = np.ascontiguousarray(g[start:start + self.CHUNK].T, dtype=np.intp)  # (genes, n)
            acc = np.zeros(cols.shape[1])
            cnt = np.zeros(cols.shape[1]) if count else None
            for slot, dense, strides in zip(self.slots, self.dense, self.strides):
                if not slot.factors:  # a fixed part of the network
                    acc += dense[0]
                    if count:
                        cnt += 1
                    continue
                idx = cols[slot.factors[0]] * strides[0]
                for f, st in zip(slot.factors[1:], strides[1:]):
                    idx += cols[f] * st
                if slot.active is None:
                    acc += dense[idx]
                    if count:
                        cnt += 1
                else:  # absent layers read the appended 0.0 at the end of the dense array
                    on = cols[slot.active[0]] >= slot.active[1]
                    acc += dense[np.where(on, idx, dense.size - 1)]
                    if count:
                        cnt += on
            total[start:start + len(acc)] = acc
            if count:
                n_blocks[start:start + len(acc)] = cnt
        bad = np.isnan(total)
        if bad.any():
            keys = sorted({k for row in g[bad] for k, v in self.breakdown(row[None, :]) if math.isnan(v)})
            raise missing_error(self.table, self.space, keys)
        return total, n_blocks

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


@dataclass(frozen=True)
class Correction:
    """What block sums miss, fitted by ``nas lut validate`` on measured whole networks:
    ``latency = scale * sum(blocks) + per_block_ms * n_blocks + offset_ms``. Stored in the
    table's TOML under ``[correction]``; ``scale`` absorbs effects proportional to the work
    (cache misses between blocks), ``per_block_ms`` the glue between blocks (reshapes, module
    calls), ``offset_ms`` a per-call cost (the runtime's entry and exit)."""

    scale: float = 1.0
    per_block_ms: float = 0.0
    offset_ms: float = 0.0

    @classmethod
    def from_meta(cls, d: Any) -> "Correction | None":
        if not d:
            return None
        return cls(float(d["scale"]), float(d.get("per_block_ms", 0.0)), float(d.get("offset_ms", 0.0)))

    def apply(self, block_sum: np.ndarray, n_blocks: np.ndarray) -> np.ndarray:
        return self.scale * block_sum + self.per_block_ms * n_blocks + self.offset_ms


def is_layered(space: SearchSpace) -> bool:
    """Blocks keyed by a signature (``latency_layers``) rather than by a few genes (``latency_slots``)."""
    return getattr(space, "layer_kinds", None) is not None


def slot_choices(slot: LatencySlot, space: SearchSpace):
    """(choice indices, gene values) of every combination of the slot's factors that a valid
    architecture can reach."""
    for idx in itertools.product(*(range(space.genes[g].size) for g in slot.factors)):
        if _reachable(slot, idx, space):
            yield idx, [space.genes[g].choices[i] for g, i in zip(slot.factors, idx)]


def space_blocks(space: SearchSpace, grid_rounding: str) -> dict[str, BlockSpec]:
    """Every distinct block the space's architectures use: key -> what to build and measure,
    sorted by key (the same keys prediction reads, so a built table covers the space exactly)."""
    if is_layered(space):  # too many to enumerate: the layers of a fixed, repeatable sample
        return space.layer_universe()
    out: dict[str, BlockSpec] = {}
    try:
        slots = space.latency_slots(grid_rounding)
    except NotImplementedError as e:
        raise UserError(f"space {space.name!r}: {e} (latency tables exist for the elasticvit and nb201 families)") from None
    for slot in slots:
        if slot.block is None:
            raise UserError(f"space {space.name!r} does not say how to build its latency blocks")
        for _, values in slot_choices(slot, space):
            k = slot.key(*values)
            spec = slot.block(*values)
            if out.setdefault(k, spec) != spec:  # one key, two different blocks: the grammar is ambiguous
                raise AssertionError(f"latency key {k!r} names two different blocks: {out[k]} and {spec}")
    return dict(sorted(out.items()))


def _reachable(slot: LatencySlot, idx: tuple[int, ...], space: SearchSpace) -> bool:
    seen: dict[int, int] = {}
    for g, i in zip(slot.factors, idx):  # a gene used twice must take one value
        if seen.setdefault(g, i) != i:
            return False
    for a, b in slot.ordered:
        if space.genes[slot.factors[a]].choices[idx[a]] > space.genes[slot.factors[b]].choices[idx[b]]:
            return False
    return True


LOCAL_DEVICES = ("local-cpu", "onnxruntime-cpu", "local-cuda")  # what `nas lut build` can measure here


def fill_command(table: LatencyTable, space: SearchSpace) -> str:
    """How to measure what a table lacks: `nas lut build` resumes into the same table."""
    rt = table.meta.get("runtime")
    if rt in LOCAL_DEVICES:
        from nas.latency.measure import Protocol

        default = Protocol().as_dict()
        flags = "".join(f" --{k.replace('_', '-')} {v}" for k, v in table.meta.get("protocol", {}).items()
                        if k in default and v != default[k] and not isinstance(v, bool))
        if table.meta.get("protocol", {}).get("context") is False:
            flags += " --no-context"
        return f"nas lut build --space {space.name} --device {rt} --out {table.path.parent}{flags}"
    return f"nas lut build --space {space.name} --device android --adb-serial SERIAL"


def missing_error(table: LatencyTable, space: SearchSpace, keys: list[str]) -> MissingKeysError:
    shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
    return MissingKeysError(
        f"latency table {table.path} ({table.device}) lacks {len(keys)} block(s) that space "
        f"{space.name!r} needs: {shown}; measure them with `{fill_command(table, space)}` "
        f"or search a space the table covers", keys)


def read_csv(path: Path) -> dict[str, float]:
    """``block,latency_ms[,...]`` rows (columns after the first two are documentation, e.g. a
    measured table's spread and source); errors name the file, the line and the field."""
    try:
        f = path.open(newline="", encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot read latency table {path}: {e.strerror}") from None
    ms: dict[str, float] = {}
    with f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or header[:2] != ["block", "latency_ms"]:
            raise UserError(f"{path}:1: expected the header 'block,latency_ms', got {','.join(header or [])!r}")
        for line, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise UserError(f"{path}:{line}: expected {len(header)} fields ({', '.join(header)}), got {len(row)}")
            key, value = row[:2]
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
def user_tables_dir() -> Path:
    """Where `nas lut build` puts tables by default: ``$VITNAS_TABLES``, else
    ``$XDG_DATA_HOME/vitnas/predictors`` (``~/.local/share/vitnas/predictors``)."""
    if os.environ.get("VITNAS_TABLES"):
        return Path(os.environ["VITNAS_TABLES"])
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "vitnas" / "predictors"


def device_dirs() -> dict[str, Path]:
    """Device name -> folder: the shipped tables, then the ones you built (a built device never
    shadows a shipped one of the same name)."""
    out: dict[str, Path] = {}
    for root in (data_dir("predictors"), user_tables_dir()):
        if root.is_dir():
            for p in sorted(root.iterdir()):
                if p.is_dir() and any(p.glob("*.toml")):
                    out.setdefault(p.name, p)
    return out


def table_path(device: str, space: SearchSpace) -> Path:
    """Metadata TOML of the table for ``device`` and ``space``: ``<device>/<space name>.toml``,
    else ``<device>/<family>.toml`` (never for a whole-network table: its architectures are one
    space's); ``device`` may also be a directory, a .toml path, or a bare whole-network CSV
    (``FILE.csv``, ``FILE.csv:COLUMN``)."""
    given = Path(device)
    if csv_device(device) is not None:
        return csv_device(device)[0]
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
            if stem != space.name and _kind(folder / f"{stem}.toml") in ("network", "fitted"):
                continue  # a whole-network table times one space's architectures, not a family's
            return folder / f"{stem}.toml"
    have = sorted(p.stem for p in folder.glob("*.toml"))
    raise UserError(f"device {device!r} has no latency table for space {space.name!r} (family {space.family!r}); "
                    f"it has tables for: {', '.join(have) or 'nothing'}; build one with `nas lut build --space {space.name} --device local-cpu`")


def load_table(device: str, space: SearchSpace, check: bool = True, allow_missing: bool = False) -> LatencyTable:
    """The table for ``device`` and ``space``; with ``check`` every key the space can need is
    verified up front, so a search never starts on a table with holes. A whole-network table
    cannot be checked that way (it need not cover the space): a lookup it cannot answer names the
    architecture, or with ``allow_missing`` returns NaN (a failed row of the search)."""
    path = table_path(device, space)
    bare = csv_device(device)
    if bare is not None:
        from nas.latency.network import NetworkTable

        table = NetworkTable.from_csv(*bare)
    else:
        table = _load_cached(path.resolve(), path.stat().st_mtime_ns)
    if table.kind == "fitted":
        table.check(space)  # its space, and the shipped devices it reads as features
        return table
    if table.kind == "network":
        table.check(space)  # parses every key once (cached): a key of another space fails here
        return dataclasses.replace(table, allow_missing=allow_missing) if allow_missing else table
    if table.family != space.family:
        raise UserError(f"latency table {path} is for space family {table.family!r}, not {space.family!r}")
    if table.kind == "mpc":
        table.check(space)  # names the operator and the table; cheap, so always
        return table
    if check:
        missing = table.missing_keys(space)
        if missing:
            raise missing_error(table, space, missing)
    _warn_if_elsewhere(table)
    return table


class ForeignTableWarning(UserWarning):
    """A table measured on this kind of device, but on another machine."""


def _warn_if_elsewhere(table: LatencyTable) -> None:
    if table.meta.get("runtime") not in ("local-cpu", "onnxruntime-cpu"):
        return
    from nas.latency.measure import cpu_model

    there, here = table.meta.get("environment", {}).get("cpu"), cpu_model()
    if there and there != here:
        import warnings

        warnings.warn(f"latency table {table.path} was measured on {there!r}, this machine is {here!r}: "
                      f"its numbers describe that machine", ForeignTableWarning, stacklevel=3)


def csv_device(device: str) -> tuple[Path, str] | None:
    """(path, column) when ``--device`` names a whole-network CSV: ``FILE.csv`` (column ``ms``) or
    ``FILE.csv:COLUMN``; None otherwise."""
    path, sep, column = device.rpartition(":") if ".csv:" in device else (device, "", "ms")
    if not path.endswith(".csv"):
        return None
    if not Path(path).is_file():
        raise UserError(f"--device {device}: no such file {path}")
    return Path(path), column or "ms"


def _kind(meta_path: Path) -> str:
    doc = TomlDoc(meta_path)
    kind = doc.get(doc.data, "kind", "kind", str, "blocks")
    if kind not in KINDS:
        raise doc.error("kind", str(did_you_mean(kind, KINDS, "table kind")))
    return kind


def load_any(meta_path: Path):
    """The table a device TOML describes, by its ``kind``: a block table (``LatencyTable``), an
    analytic MPC model (``nas.latency.mpc.MpcTable``), a whole-network table
    (``nas.latency.network.NetworkTable``) or a few-shot fit (``nas.latency.fewshot.FittedTable``); all answer ``predict(space, genomes)``."""
    kind = _kind(meta_path)
    if kind == "mpc":
        from nas.latency.mpc import MpcTable

        return MpcTable.load(meta_path)
    if kind == "network":
        from nas.latency.network import NetworkTable

        return NetworkTable.load(meta_path)
    if kind == "fitted":
        from nas.latency.fewshot import FittedTable

        return FittedTable.load(meta_path)
    return LatencyTable.load(meta_path)


_CACHE: dict[tuple[Path, int], Any] = {}


def _load_cached(path: Path, mtime: int):
    if (path, mtime) not in _CACHE:
        _CACHE[(path, mtime)] = load_any(path)
    return _CACHE[(path, mtime)]
