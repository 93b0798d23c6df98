"""Reading and writing trainer state safely: checkpoints hold only tensors and plain Python data,
so they load with ``torch.load(weights_only=True)`` and a planted file cannot run code."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas.errors import UserError


def plain(obj: Any) -> Any:
    """Numpy scalars and arrays in trainer state as Python numbers and lists, so the checkpoint
    holds only tensors and plain data and loads with ``weights_only=True``."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def load_checkpoint(path: Path, device, flag: str) -> dict:
    """A vitnas checkpoint, unpickled with ``weights_only=True``: tensors and plain data only, so a
    planted file cannot run code. Anything else is refused with one line."""
    try:
        ck = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        lines = str(e).strip().splitlines()
        why = next((ln.strip() for ln in lines if "GLOBAL" in ln or "Unsupported global" in ln), None)
        if why is None:  # not a pickle of any kind (torch: "Unsupported operand ...")
            raise UserError(f"{flag} {path}: not a vitnas checkpoint (not a torch checkpoint file)") from None
        raise UserError(f"{flag} {path}: refusing to unpickle it: it holds objects other than tensors and plain data "
                        f"({why[:160]}); vitnas checkpoints never do (one written by a vitnas older than this "
                        "release does if its sampler state held numpy values: retrain it)") from None
    except (OSError, RuntimeError, EOFError) as e:
        raise UserError(f"{flag} {path}: not a vitnas checkpoint ({type(e).__name__}: {str(e)[:160]})") from None
    if not isinstance(ck, dict):
        raise UserError(f"{flag} {path}: not a vitnas checkpoint")
    return ck
