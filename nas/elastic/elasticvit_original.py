"""Weights trained with the original ElasticViT code (microsoft/Moonlit, MIT) as a vitnas supernet.

The original saves ``torch.save`` of a dict (``util/checkpoint.py``: ``epoch``, ``state_dict``,
``optimizer``, ``bank``, ``arch``, ``extras``, ``model_ema``) and evaluates the EMA copy; a bare
``FusedSuperNet.state_dict()`` (a ``.pth`` or ``.safetensors`` file) is accepted too, with or
without DDP's ``module.`` prefix. Its tensors map onto ``ElasticViTSupernet``'s one to one:

* the module names differ (``feature_exactor.k`` is our ``blocks.k+1``, a transformer stage's
  ``layers.0.reduction`` is our ``ds``, ``norm1`` is ``norm``, ``pre_head_0/1`` are ``pre_head``
  and ``head``, ``classifer`` is ``classifier``, ...);
* a tensor is the same or a leading block of the original's (our stage-opening layers size
  their input for the previous stage's widest width, the original for its own);
* the fused q/k/v weight and the relative-position tables are copied as they are: our supernet
  slices and reads them as the original does (``ElasticQKV``); extraction re-indexes them for a
  standalone network;
* ``relative_position_index`` (a buffer we compute) and the 1x1 ``shortcut_conv`` of layers whose
  input and output widths are always equal are not needed.

The checkpoint is read without running code (``weights_only``; safetensors has no code at all).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from nas.errors import UserError

SOURCE = "microsoft/Moonlit ElasticViT (MIT, Copyright (c) Microsoft Corporation)"

# original name pattern -> ours; \1.. are the captured indices (conv stages shifted by one below)
_MB = {"pw_conv": "pw.0", "pw_bn": "pw.1", "dw_conv": "dw.0", "dw_bn": "dw.1", "se_conv1": "se.1",
       "se_conv2": "se.3", "pwl_conv": "pwl.0", "pwl_bn": "pwl.1", "shortcut_conv": "shortcut"}
_ATTN = {"norm1": "norm", "qkv": "qkv", "proj": "proj", "dw_v_conv": "dw_v", "fc1": "fc1", "fc2": "fc2"}
_HEAD = {"first_conv": "first_conv.0", "first_conv_bn": "first_conv.1", "pre_head_0": "pre_head",
         "pre_head_norm_0": "pre_head_norm", "pre_head_1": "head", "classifer": "classifier"}
_UNUSED = re.compile(r"\.relative_position_index$")


def rename(key: str, conv_stages: int) -> str | None:
    """Our supernet's name for an original key, or None for a key we do not read."""
    if _UNUSED.search(key):
        return None
    head, _, leaf = key.rpartition(".")
    if head in _HEAD:
        return f"{_HEAD[head]}.{leaf}"
    if m := re.fullmatch(r"conv_stem\.layers\.(\d+)\.0\.(\w+)", head):
        if m.group(2) in _MB:
            return f"blocks.0.{m.group(1)}.{_MB[m.group(2)]}.{leaf}"
    elif m := re.fullmatch(r"feature_exactor\.(\d+)\.layers\.(\d+)", head):  # a transformer layer's own tensor
        if int(m.group(1)) >= conv_stages and leaf == "attention_bias":
            return f"blocks.{int(m.group(1)) + 1}.layers.{m.group(2)}.attention_bias"
    elif m := re.fullmatch(r"feature_exactor\.(\d+)\.layers\.0\.reduction\.(\w+)", head):  # a stage's opening MBConv
        if int(m.group(1)) >= conv_stages and m.group(2) in _MB:
            return f"blocks.{int(m.group(1)) + 1}.ds.{_MB[m.group(2)]}.{leaf}"
    elif m := re.fullmatch(r"feature_exactor\.(\d+)\.layers\.(\d+)\.0\.(\w+)", head):  # a conv stage's MBConv
        if int(m.group(1)) < conv_stages and m.group(3) in _MB:
            return f"blocks.{int(m.group(1)) + 1}.{m.group(2)}.{_MB[m.group(3)]}.{leaf}"
    elif m := re.fullmatch(r"feature_exactor\.(\d+)\.layers\.(\d+)\.(\w+)", head):  # attention / FFN ops
        if int(m.group(1)) >= conv_stages and m.group(3) in _ATTN:
            return f"blocks.{int(m.group(1)) + 1}.layers.{m.group(2)}.{_ATTN[m.group(3)]}.{leaf}"
    raise UserError(f"{key!r} is not a key of ElasticViT's FusedSuperNet")


def read_original(path: Path) -> dict[str, torch.Tensor]:
    """The original's weights: ``model_ema`` (what it evaluates), else ``state_dict``, else the
    file itself as a bare state_dict; ``module.`` prefixes stripped."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            ck: Any = load_file(path)
        except SafetensorError as e:
            raise UserError(f"{path}: not a safetensors file ({e})") from None
    else:
        import pickle

        try:  # tensors and plain data only: nothing in the file runs
            ck = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise UserError(f"{path}: refusing to unpickle it: it holds objects other than tensors and plain data "
                            f"({str(e).strip().splitlines()[0][:160]})") from None
        except (OSError, RuntimeError, EOFError) as e:
            raise UserError(f"{path}: not a torch checkpoint ({type(e).__name__}: {str(e)[:160]})") from None
    if not isinstance(ck, dict):
        raise UserError(f"{path}: expected a dict (a checkpoint or a state_dict), got {type(ck).__name__}")
    for key in ("model_ema", "state_dict"):
        if isinstance(ck.get(key), dict):
            ck = ck[key]
            break
    tensors = {k[len("module."):] if k.startswith("module.") else k: v for k, v in ck.items()}
    bad = next((k for k, v in tensors.items() if not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise UserError(f"{path}: {bad!r} is not a tensor: not an ElasticViT state_dict (or a checkpoint with "
                        "'model_ema' / 'state_dict')")
    return tensors


def convert(original: dict[str, torch.Tensor], space, *, allow_missing: bool = False) -> tuple[dict, list[str]]:
    """(our supernet's state_dict, the names of our tensors the original did not provide). Each
    original tensor is cut to our shape (a leading block) and cast to our dtype. A missing tensor
    is an error unless ``allow_missing`` (then it keeps the supernet's initial value)."""
    if space.family != "elasticvit":
        raise UserError(f"--from elasticvit-original loads into an ElasticViT space, not {space.name!r} "
                        f"(family {space.family})")
    conv_stages = sum(b.kind == "conv" for b in space.blocks[1:])
    names = {key: rename(key, conv_stages) for key in original}  # unknown keys fail before the build
    torch.manual_seed(0)
    ours = space.build_supernet().state_dict()
    seen = set()
    for key, t in original.items():
        name = names[key]
        if name is None:
            continue
        if name not in ours:
            if key.endswith("shortcut_conv.weight"):
                continue  # widths never differ in that layer: the original's 1x1 is never used
            raise UserError(f"{key!r} (our {name!r}) has no place in space {space.name!r}: a different ElasticViT space?")
        target = ours[name]
        if t.dim() != target.dim() or any(a < b for a, b in zip(t.shape, target.shape)):
            raise UserError(f"{key!r} has shape {tuple(t.shape)}, smaller than our {name!r} {tuple(target.shape)}: "
                            f"not a checkpoint of space {space.name!r}")
        ours[name] = t[tuple(slice(0, n) for n in target.shape)].to(target.dtype).clone()
        seen.add(name)
    missing = [k for k in ours if k not in seen and not k.endswith("num_batches_tracked")]
    if missing and not allow_missing:
        raise UserError(f"the checkpoint lacks {len(missing)} of the supernet's tensors (e.g. {missing[0]!r}); "
                        "pass allow_missing (--allow-missing) to keep their initial values")
    return ours, missing


def supernet_state(path: Path, space, *, data: str | None = None, heldout: int = 5000, seed: int = 0,
                   allow_missing: bool = False) -> tuple[dict[str, Any], list[str]]:
    """A vitnas supernet checkpoint state (what ``nas search --supernet`` reads) from an original
    ElasticViT checkpoint, and the tensors it lacked. ``data``: the dataset a search will
    recalibrate BatchNorm on and score with (the original: ImageNet)."""
    weights, missing = convert(read_original(path), space, allow_missing=allow_missing)
    recipe = getattr(space, "train_recipe", None) or {}
    bn = int(recipe.get("bn_batches", 8))
    state = {
        "space": space.name, "space_fingerprint": space.fingerprint,
        "data": {"spec": data, "heldout": heldout, "seed": seed},
        "evaluation": {"bn_batches": int(recipe.get("search_bn_batches", bn)), "batch": int(recipe.get("bn_batch", 128))},
        "model": weights, "ema": None,  # the original's EMA, when it had one, is "model" here
        "source": {"from": "elasticvit-original", "file": str(Path(path).name), "code": SOURCE,
                   "missing": len(missing)},
    }
    return state, missing


def import_weights(ckpt: Path, space, out: Path, **kw) -> dict[str, Any]:
    """Convert ``ckpt`` (the original's) into a supernet checkpoint at ``out``; a summary."""
    from nas.train.checkpoint import write_checkpoint

    state, missing = supernet_state(ckpt, space, **kw)
    write_checkpoint(out, state)  # the trainer's format: safetensors, the rest JSON in its metadata
    return {"out": str(out), "space": space.name, "tensors": len(state["model"]), "missing": len(missing),
            "data": state["data"]["spec"], "source": state["source"]["code"]}
