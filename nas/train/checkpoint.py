"""Trainer state on disk without pickle: one safetensors file per run, ``checkpoint.safetensors``.

Every tensor of the state (supernet weights under ``model.``, EMA under ``ema.``, optimiser moments
under ``optimizer.``...) is a safetensors tensor, bit for bit; everything else (step, config,
schedule, sampler banks, last evaluation) is JSON in the file's metadata, with a placeholder where
a tensor was. Reading it parses a JSON header and copies raw bytes: a planted file can carry no code.
One file keeps the write atomic (write beside, fsync, rename), so a ``kill -9`` leaves either the
previous checkpoint or the new one.

``checkpoint.pt`` (vitnas 0.1's pickle) is no longer read, since unpickling can run code;
``nas convert-checkpoint`` turns one into the new format with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from nas.errors import UserError

CHECKPOINT = "checkpoint.safetensors"
LEGACY = "checkpoint.pt"
FORMAT = 2
_META_KEY = "vitnas"


def plain(obj: Any) -> Any:
    """Numpy scalars and arrays in trainer state as Python numbers and lists (JSON can hold them)."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


# ---- state <-> (tensors, JSON) ---------------------------------------------------------------------
# JSON has no tuples, no non-string keys and no tensors; the trainer's state has all three
# (optimizer.state is keyed by parameter index, Adam's betas are a tuple). They are tagged so the
# state reads back exactly as it was written.

def _split(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        if path in tensors:
            raise ValueError(f"checkpoint: two tensors would be stored as {path!r}")
        tensors[path] = obj
        return {"$tensor": path}
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in obj):
            return {k: _split(v, f"{path}.{k}" if path else k, tensors) for k, v in obj.items()}
        return {"$items": [[_split(k, f"{path}.$k{i}", tensors), _split(v, f"{path}.{k}", tensors)]
                           for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, tuple):
        return {"$tuple": [_split(v, f"{path}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_split(v, f"{path}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (np.generic, np.ndarray)):
        return _split(plain(obj), path, tensors)
    raise TypeError(f"checkpoint: cannot store a {type(obj).__name__} at {path!r} (tensors and plain data only)")


def _join(obj: Any, tensor) -> Any:
    if isinstance(obj, list):
        return [_join(v, tensor) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "$tensor" in obj:
        return tensor(obj["$tensor"])
    if "$tuple" in obj:
        return tuple(_join(v, tensor) for v in obj["$tuple"])
    if "$items" in obj:
        return {_join(k, tensor): _join(v, tensor) for k, v in obj["$items"]}
    return {k: _join(v, tensor) for k, v in obj.items()}


def write_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors, numbers, strings, lists, tuples, dicts) atomically to ``path``."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    meta = _split(dict(state, format=FORMAT), "", tensors)
    seen: set[int] = set()
    out = {}
    for k, t in tensors.items():  # safetensors stores each tensor once: copy views that share storage
        t = t.detach().cpu().contiguous()
        ptr = t.untyped_storage().data_ptr() if t.numel() else None
        if ptr is not None and ptr in seen:
            t = t.clone()
        elif ptr is not None:
            seen.add(ptr)
        out[k] = t
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file(out, str(tmp), metadata={_META_KEY: json.dumps(meta)})
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)


def read_checkpoint(path: Path, device="cpu", flag: str = "--resume", only: Iterable[str] | None = None) -> dict:
    """A vitnas checkpoint as the dict it was written from. ``only``: the top-level entries to
    read tensors for (e.g. ``("model", "ema")`` for evaluation); the others come back as None."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if _is_pickle(path):
        raise UserError(legacy_message(path, flag))
    try:
        f = safe_open(str(path), framework="pt", device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{flag} {path}: not a vitnas checkpoint (not a safetensors file: {str(e)[:120]})") from None
    with f:
        raw = (f.metadata() or {}).get(_META_KEY)
        if raw is None:
            raise UserError(f"{flag} {path}: a safetensors file, but not a vitnas checkpoint (no vitnas metadata; "
                            "weights from elsewhere go through `nas import-weights`)")
        try:
            meta = json.loads(raw)
        except json.JSONDecodeError as e:
            raise UserError(f"{flag} {path}: its vitnas metadata is not valid JSON ({e})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise UserError(f"{flag} {path}: checkpoint format {meta.get('format') if isinstance(meta, dict) else '?'} "
                            f"(this vitnas reads format {FORMAT})")
        keep = None if only is None else set(only)
        if keep is not None:
            meta = {k: (v if k in keep or not _holds_tensor(v) else None) for k, v in meta.items()}
        keys = set(f.keys())

        def tensor(key: str) -> torch.Tensor:
            if key not in keys:
                raise UserError(f"{flag} {path}: checkpoint is damaged (tensor {key!r} is missing)")
            return f.get_tensor(key)

        return _join(meta, tensor)


def _holds_tensor(obj: Any) -> bool:
    return "$tensor" in json.dumps(obj) if isinstance(obj, (dict, list)) else False


def read_meta(path: Path, flag: str = "--supernet") -> dict:
    """The checkpoint's plain data only (no tensors read)."""
    return read_checkpoint(path, "cpu", flag, only=())


def evaluated_weights(ck: dict) -> tuple[dict[str, torch.Tensor], bool]:
    """(state dict, is EMA): the weights a checkpoint's evaluations use. timm's ModelEmaV3 keeps the
    averaged model under "module."; without EMA, the trained model itself."""
    ema = ck.get("ema")
    if ema:
        return {k[len("module."):]: v for k, v in ema.items() if k.startswith("module.")}, True
    return ck["model"], False


def find_checkpoint(run_dir: Path, flag: str = "--resume") -> Path | None:
    """The run directory's checkpoint, None when it has none yet; an old pickle there is an error,
    not a silent fresh start."""
    run_dir = Path(run_dir)
    if (run_dir / CHECKPOINT).is_file():
        return run_dir / CHECKPOINT
    if (run_dir / LEGACY).is_file():
        raise UserError(legacy_message(run_dir / LEGACY, flag))
    return None


def legacy_message(path: Path, flag: str) -> str:
    return (f"{flag} {path}: a checkpoint in vitnas 0.1's pickle format, which is no longer read because "
            f"unpickling a file can run code; convert it once with `nas convert-checkpoint {path}` "
            f"(it reads only tensors and plain data) and use the {CHECKPOINT} it writes beside it")


def _is_pickle(path: Path) -> bool:
    """torch.save's zip container or a bare pickle. A safetensors file starts with its header's
    length (8 bytes, little-endian) and then the JSON header's ``{``."""
    try:
        with Path(path).open("rb") as f:
            head = f.read(9)
    except OSError:
        return False
    if len(head) == 9 and head[8:9] == b"{":
        return False
    return head[:4] == b"PK\x03\x04" or head[:1] == b"\x80"


def convert_legacy(path: Path) -> Path:
    """``checkpoint.pt`` -> ``checkpoint.safetensors`` beside it, read with ``weights_only=True``
    (tensors and plain data only: a planted pickle is refused, nothing runs). The old file stays."""
    path = Path(path)
    if path.is_dir():
        path = path / LEGACY
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = str(e).strip().splitlines()
        why = next((ln.strip() for ln in lines if "GLOBAL" in ln or "Unsupported global" in ln), None)
        if why is None:
            raise UserError(f"{path}: not a vitnas checkpoint (not a torch checkpoint file)") from None
        raise UserError(f"{path}: refusing to unpickle it: it holds objects other than tensors and plain data "
                        f"({why[:160]}); retrain it") from None
    except (OSError, RuntimeError, EOFError) as e:
        raise UserError(f"{path}: not a vitnas checkpoint ({type(e).__name__}: {str(e)[:160]})") from None
    if not isinstance(ck, dict) or "model" not in ck or "space_fingerprint" not in ck:
        raise UserError(f"{path}: not a vitnas checkpoint")
    out = path.with_name(CHECKPOINT)
    write_checkpoint(out, ck)
    return out
