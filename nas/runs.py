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
