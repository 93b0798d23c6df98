"""Where the shipped data lives: ``spaces/``, ``predictors/`` and ``metrics/`` of a checkout, or the copies
bundled into the wheel under ``nas/_bundled/`` (see pyproject's package-dir mapping)."""
from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def data_dir(kind: str) -> Path:
    """``kind`` is "spaces", "predictors" or "metrics"; a checkout's folder wins over the bundled copy."""
    checkout = _PKG.parent / kind
    if checkout.is_dir():
        return checkout
    return _PKG / "_bundled" / kind
