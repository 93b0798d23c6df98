"""Whole-network tables: one value per architecture, read from a CSV keyed by architecture.

The key column is ``arch`` (the space's architecture string: NB201's ``|op~0|+...``, or the
compact JSON of ``decode()["encoding"]`` for spaces without one, CSV-quoted) or ``arch_id`` (the
engine's own id, ``nb201-1a2b3c...``). Value columns are numbers; which one a table reads is its
``column`` (``ms`` by default). Two users:

* a **device** of ``kind = "network"`` (``NetworkTable``): latency in ms, in a folder with a
  provenance TOML like the block tables, or a bare CSV path given to ``--device``;
* a **metric** (``nas/metrics.py``): any column, usable as an objective or a constraint.

Lookup is vectorised: the key column is parsed once per (file, space) into genomes, sorted, and a
batch of genomes is found with one ``searchsorted``. An architecture the table lacks is an error
that names it (or NaN, which the search logs as a failed row, when the user allows it).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nas.arch import GENOME_DTYPE, Arch
from nas.errors import UserError
from nas.spaces.base import SearchSpace
from nas.tomldoc import TomlDoc

KEY_COLUMNS = ("arch", "arch_id")


class MissingArchError(UserError):
    """A whole-network table lacks an architecture the search asked for."""


@dataclass
class KeyedCsv:
    """A CSV of text cells with a key column; columns are converted to numbers on demand."""

    path: Path
    key: str  # "arch" or "arch_id"
    header: list[str]
    cells: dict[str, np.ndarray]  # column -> object array of the raw text
    sha256: str
    _numbers: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def rows(self) -> int:
        return len(self.cells[self.key])

    def column(self, name: str, what: str, nonnegative: bool = False) -> np.ndarray:
        """The column as floats; a cell that is not a (finite, with ``nonnegative`` >= 0) number
        is an error naming the file, the line and the column."""
        if name not in self.cells or name == self.key:
            from nas.registry import did_you_mean

            raise did_you_mean(name, [c for c in self.header if c != self.key], f"column of {self.path} ({what})")
        if name not in self._numbers:
            text = self.cells[name]
            try:
                v = text.astype(np.float64)  # float() per cell: values read back exactly
                bad = ~np.isfinite(v) | ((v < 0) if nonnegative else False)
            except ValueError:
                v, bad = None, np.array([not _is_number(t) for t in text])
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                need = "a finite, non-negative number" if nonnegative else "a finite number"
                raise UserError(f"{self.path}:{i + 2}: column {name!r}: {text[i]!r} is not {need}")
            self._numbers[name] = v
        return self._numbers[name]


def _is_number(text: str) -> bool:
    try:
        return bool(np.isfinite(float(text)))
    except ValueError:
        return False


_FILES: dict[tuple[Path, int], KeyedCsv] = {}


def read_keyed_csv(path: Path) -> KeyedCsv:
    """The CSV at ``path`` (cached by path and modification time, so the 23 NB201 devices and the
    accuracy metric that share one file read it once)."""
    path = Path(path)
    try:
        stat = path.resolve().stat()
    except OSError as e:
        raise UserError(f"cannot read table {path}: {e.strerror}") from None
    cache_key = (path.resolve(), stat.st_mtime_ns)
    if cache_key not in _FILES:
        _FILES[cache_key] = _read(path)
    return _FILES[cache_key]


def _read(path: Path) -> KeyedCsv:
    import csv

    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if not header:
        raise UserError(f"{path}:1: empty file; expected a header such as 'arch,ms'")
    header = [h.strip() for h in header]
    keys = [k for k in KEY_COLUMNS if k in header]
    if not keys:
        raise UserError(f"{path}:1: needs a key column 'arch' (the architecture string or JSON encoding) or "
                        f"'arch_id'; the header is {','.join(header)!r}")
    dup = next((h for h in header if header.count(h) > 1), None)
    if dup:
        raise UserError(f"{path}:1: column {dup!r} appears twice")
    rows = []
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise UserError(f"{path}:{line}: expected {len(header)} fields ({','.join(header)}), got {len(row)}")
        rows.append(row)
    if not rows:
        raise UserError(f"{path}: no rows after the header")
    cols = np.array(rows, dtype=object).T
    cells = {h: cols[j] for j, h in enumerate(header)}
    return KeyedCsv(path, keys[0], header, cells, hashlib.sha256(raw).hexdigest())


def _void(genomes: np.ndarray) -> np.ndarray:
    g = np.ascontiguousarray(genomes, dtype=GENOME_DTYPE)
    return g.view(np.dtype((np.void, g.shape[1] * g.itemsize))).ravel()


class ArchIndex:
    """Row of each architecture of one space in one keyed CSV (built once per file and space)."""

    def __init__(self, table: KeyedCsv, space: SearchSpace):
        self.table, self.space = table, space
        self.by_id: dict[str, int] | None = None
        keys = table.cells[table.key]
        if table.key == "arch_id":
            self.by_id = {}
            for i, k in enumerate(keys):
                if self.by_id.setdefault(str(k).strip(), i) != i:
                    raise UserError(f"{table.path}:{i + 2}: column 'arch_id': {k!r} appears twice "
                                    f"(first on line {self.by_id[str(k).strip()] + 2})")
            return
        from nas.archspec import read_arch_spec

        genomes = np.empty((len(keys), space.n_genes), dtype=GENOME_DTYPE)
        for i, k in enumerate(keys):
            try:
                genomes[i] = space.parse_arch(read_arch_spec(str(k))).genome
            except UserError as e:
                raise UserError(f"{table.path}:{i + 2}: column 'arch': {e}") from None
        v = _void(genomes)
        self.order = np.argsort(v, kind="stable")
        self.sorted = v[self.order]
        same = np.flatnonzero(self.sorted[1:] == self.sorted[:-1])
        if same.size:
            a, b = sorted(self.order[same[0]:same[0] + 2])
            raise UserError(f"{table.path}:{b + 2}: column 'arch': the architecture of line {a + 2} again "
                            f"({keys[b]!r})")

    def genomes(self) -> np.ndarray:
        """The genome of every row, in file order (an ``arch``-keyed table)."""
        n, width = len(self.order), self.space.n_genes
        out = np.empty((n, width), dtype=GENOME_DTYPE)
        out[self.order] = np.frombuffer(self.sorted.tobytes(), dtype=GENOME_DTYPE).reshape(n, width)
        return out

    def rows(self, genomes: np.ndarray) -> np.ndarray:
        """Row number of each genome, -1 where the table lacks it."""
        g = np.asarray(genomes)
        if self.by_id is not None:
            return np.array([self.by_id.get(i, -1) for i in self.space.ids(g)], dtype=np.int64)
        v = _void(g)
        pos = np.minimum(np.searchsorted(self.sorted, v), len(self.sorted) - 1)
        return np.where(self.sorted[pos] == v, self.order[pos], -1)


_INDEXES: dict[tuple[int, str, str], ArchIndex] = {}


def arch_index(table: KeyedCsv, space: SearchSpace) -> ArchIndex:
    key = (id(table), space.name, space.fingerprint)
    if key not in _INDEXES:
        _INDEXES[key] = ArchIndex(table, space)
    return _INDEXES[key]


def lookup(table: KeyedCsv, column: np.ndarray, space: SearchSpace, genomes: np.ndarray, what: str,
           allow_missing: bool = False) -> np.ndarray:
    """``column`` values of each genome; a genome the table lacks is an error naming it (NaN with
    ``allow_missing``)."""
    rows = arch_index(table, space).rows(genomes)
    out = column[np.maximum(rows, 0)]
    lacking = rows < 0
    if lacking.any():
        if not allow_missing:
            first = space.arch(np.asarray(genomes)[int(np.flatnonzero(lacking)[0])])
            raise MissingArchError(f"{what} ({table.path}) has no row for architecture {describe_arch(space, first)}"
                                   f"{f' and {int(lacking.sum()) - 1} more of this batch' if lacking.sum() > 1 else ''}; "
                                   "add it, search a space the table covers, or pass --allow-missing to log such "
                                   "architectures as failed rows")
        out = np.where(lacking, np.nan, out)
    return out


def describe_arch(space: SearchSpace, arch: Arch) -> str:
    """How a table would key the architecture: its arch string (or JSON encoding) and its id."""
    d = space.decode(arch)
    text = d.get("arch") if isinstance(d.get("arch"), str) else d.get("encoding")
    return f"{text} ({arch.id})" if text else arch.id


# ---- whole-network latency as a device -----------------------------------------------------------
@dataclass
class NetworkTable:
    """A device of ``kind = "network"``: the same ``predict(space, genomes)`` (ms) as a block table."""

    device: str
    space_name: str
    family: str
    data: KeyedCsv
    column: str
    meta: dict[str, Any]
    path: Path
    kind: str = "network"
    grid_rounding: str = "-"
    allow_missing: bool = False

    @classmethod
    def load(cls, meta_path: Path) -> "NetworkTable":
        doc = TomlDoc(meta_path)
        d = doc.data
        device = doc.get(d, "device", "device", str)
        space = doc.get(d, "space", "space", str)
        units = doc.get(d, "units", "units", str, "ms")
        if units != "ms":
            raise doc.error("units", f"only 'ms' tables are supported, got {units!r}")
        csv_path = meta_path.parent / doc.get(d, "table", "table", str)
        data = read_keyed_csv(csv_path)
        column = doc.get(d, "column", "column", str, "ms")
        data.column(column, f"device {device}", nonnegative=True)
        want = d.get("sha256")
        if want is not None and want != data.sha256:
            raise doc.error("sha256", f"{csv_path.name} has sha256 {data.sha256[:12]}..., the metadata says "
                                      f"{str(want)[:12]}...: the table was edited (update the metadata and its "
                                      "provenance, or restore the file)")
        meta = {**d, "sha256": data.sha256}
        return cls(device, space, doc.get(d, "family", "family", str, ""), data, column, meta, meta_path)

    @classmethod
    def from_csv(cls, path: Path, column: str = "ms") -> "NetworkTable":
        """A bare CSV given to ``--device``: named after the file (or the column, when not ``ms``)."""
        data = read_keyed_csv(path)
        data.column(column, f"device {path.stem}", nonnegative=True)
        name = path.stem if column == "ms" else column
        meta = {"device": name, "kind": "network", "version": "user-file", "sha256": data.sha256,
                "description": f"whole-network latencies from {path}",
                "provenance": {"source": "user file", "licence": "user file"}}
        return cls(name, "", "", data, column, meta, Path(path))

    def check(self, space: SearchSpace) -> None:
        if self.space_name and self.space_name != space.name:
            raise UserError(f"whole-network table {self.path} ({self.device}) times the architectures of space "
                            f"{self.space_name!r}, not {space.name!r}")
        arch_index(self.data, space)  # every key must parse as an architecture of the space

    @property
    def version(self) -> str:
        return f"{self.device}:{self.meta.get('version', 'unversioned')}@{self.data.sha256[:8]}:{self.column}"

    @property
    def entries(self) -> int:
        return self.data.rows

    def describe(self) -> str:
        return f"whole networks, column {self.column}"

    def missing_keys(self, space: SearchSpace) -> list[str]:
        return []  # a table need not cover the space; a lookup it cannot answer names the architecture

    def predict(self, space: SearchSpace, genomes: np.ndarray, corrected: bool = True) -> np.ndarray:
        return lookup(self.data, self.data.column(self.column, self.device, True), space, genomes,
                      f"device {self.device!r}", self.allow_missing)

    def block_rows(self, space: SearchSpace, arch: Arch) -> list[dict[str, Any]]:
        return [{"key": "whole network", "ms": float(self.predict(space, np.asarray([arch.genome]))[0])}]

    def breakdown(self, space: SearchSpace, arch: Arch) -> list[tuple[str, float]]:
        return [(r["key"], r["ms"]) for r in self.block_rows(space, arch)]
