"""Run directories: ``runs/<date>-<space>-<devices>-<id>/`` with config.toml, evals.jsonl,
pareto.csv and pareto.png. One process at a time may write a run (an flock on ``.lock``)."""
from __future__ import annotations

import datetime as _dt
import fcntl
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from nas.errors import UserError


def new_run_dir(cfg, out: Path | None, label: str, root: Path = Path("runs")) -> Path:
    """Create the run directory and its config.toml (``cfg.to_toml()``); ``label`` names it."""
    if out is not None:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UserError(f"--out {out} exists and is not an empty directory; resume a run with "
                            f"`nas resume {out}` or choose another")
        path = out
    else:
        path = root / f"{_dt.date.today():%Y%m%d}-{label}-{secrets.token_hex(3)}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        write_atomic(path / "config.toml", cfg.to_toml())
    except OSError as e:
        raise UserError(f"cannot create run directory {path}: {e.strerror}") from None
    return path


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


@contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    fd = os.open(run_dir / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{run_dir} is being written by another nas process") from None
        yield
    finally:
        os.close(fd)


def read_records(path: Path, what: str) -> list[dict]:
    """The JSON records of an append-only log, one per line. A torn last line (a write cut by a
    crash) is dropped and cut from the file, so the next append starts on a line of its own; a
    corrupt line anywhere else is an error naming file and line."""
    import json

    if not path.exists():
        return []
    out, good = [], 0
    with path.open("rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    for lineno, raw in enumerate(lines[:-1], start=1):  # the part after the last newline is incomplete
        try:
            rec = json.loads(raw)
            if not isinstance(rec, dict):
                raise ValueError("not an object")
        except ValueError as e:
            if lineno == len(lines) - 1 and not lines[-1]:
                break  # a last complete line that does not parse: torn mid-write, drop it too
            raise UserError(f"{path}:{lineno}: not a {what} record ({e}); fix or delete that line") from None
        out.append(rec)
        good += len(raw) + 1
    if good < len(data):
        with path.open("r+b") as f:
            f.truncate(good)
    return out


# ---- reading a finished (or running) run: `nas export`, `nas report`, `nas evals` ----------------
def run_config(run_dir: Path) -> dict:
    """The run's config.toml as a table (searches, designers and `nas search --strategy mpcvit`
    write different configs; every one names its ``space``)."""
    import tomllib

    run_dir = Path(run_dir)
    path = run_dir / "config.toml"
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a run directory")
    try:
        cfg = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{run_dir} is not a run directory (no config.toml)") from None
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise UserError(f"{path}: unreadable ({e})") from None
    if not isinstance(cfg.get("space"), str):
        raise UserError(f"{path}: no 'space' field; not a vitnas run")
    return cfg


def run_space(run_dir: Path, cfg: dict):
    """The run's space, refused when its definition changed since the run (ids would not match)."""
    from nas.spaces import get_space

    space = get_space(cfg["space"])
    recorded = (cfg.get("fingerprints") or {}).get("space") or cfg.get("fingerprint")
    if recorded and recorded != space.fingerprint:
        raise UserError(f"{run_dir}: space {space.name!r} changed since the run (fingerprint {recorded} != "
                        f"{space.fingerprint}); its architecture ids no longer resolve")
    return space


def sha256_16(path: Path) -> str:
    """sha256 prefix of a file (a checkpoint): what runs and exports record to name the weights they used."""
    import hashlib

    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def evaluations(run_dir: Path, log: str = "evals.jsonl", keys: tuple[str, ...] = ("id", "genome")) -> list[dict]:
    """Every complete record of ``log`` (evals.jsonl; an As-ViT run's measures.jsonl), in order,
    without touching the file (a search may still be appending; a torn last line is skipped, not cut)."""
    import json

    path = Path(run_dir) / log
    if not path.exists():
        raise UserError(f"{run_dir} has no {log} (an As-ViT seed-search run writes measures.jsonl and family.csv instead)")
    out = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.endswith(b"\n"):
                break
            try:
                rec = json.loads(raw)
                if not isinstance(rec, dict) or any(k not in rec for k in keys):
                    raise ValueError("not an evaluation record")
            except ValueError as e:
                raise UserError(f"{path}:{lineno}: corrupt evaluation record ({e})") from None
            out.append(rec)
    return out


def pareto_rows(run_dir: Path) -> list[dict]:
    """pareto.csv as dicts (strings), in file order: row K is Pareto point K."""
    import csv

    path = Path(run_dir) / "pareto.csv"
    if not path.exists():
        raise UserError(f"{run_dir} has no pareto.csv yet")
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def find_arch(run_dir: Path, point: int | None = None, arch_id: str | None = None):
    """(config, space, canonical genome, arch id) of ``--point K`` (row K of pareto.csv, 0-based)
    or ``--id ARCH_ID`` (any evaluation of evals.jsonl). Torch-free: bad input fails fast."""
    import numpy as np

    cfg = run_config(run_dir)
    space = run_space(run_dir, cfg)
    if (point is None) == (arch_id is None):
        raise UserError("give exactly one of --point K and --id ARCH_ID")
    if point is not None:
        rows = pareto_rows(run_dir)
        if not rows:
            raise UserError(f"--point {point}: the Pareto front of {run_dir} is empty")
        if not 0 <= point < len(rows):
            raise UserError(f"--point {point}: {run_dir / 'pareto.csv'} has {len(rows)} points (0..{len(rows) - 1})")
        arch_id = rows[point]["arch_id"]
    evals = {r["id"]: r for r in evaluations(run_dir)}
    if arch_id not in evals:
        import difflib

        close = difflib.get_close_matches(arch_id, list(evals), n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise UserError(f"--id {arch_id}: not among the {len(evals)} architectures of {run_dir / 'evals.jsonl'}{hint}")
    arch = space.canonical(np.asarray(evals[arch_id]["genome"], dtype=np.int64))
    if arch.id != arch_id:
        raise UserError(f"{run_dir / 'evals.jsonl'}: record {arch_id} holds a genome of id {arch.id}")
    return cfg, space, np.asarray(arch.genome), arch_id


def claim_dir(out: Path) -> Path:
    """Check that directory ``out`` can be written (absent or empty) and create the temporary
    folder beside it that a writer fills and then renames to ``out``: nothing half-written."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} exists and is not an empty directory; choose another or delete it")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    except OSError as e:
        raise UserError(f"--out {out}: cannot write there ({e.strerror})") from None
    if out.exists():
        out.rmdir()  # the empty directory the user named: the rename needs it gone
    return tmp
