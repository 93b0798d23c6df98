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
