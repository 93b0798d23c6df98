"""From a run to a deployable model: ``nas export``, and the timm entry points that load one.

An export directory holds

* ``model.safetensors``: the standalone network's state dict (``space.build(arch)``);
* ``config.json``: what the network is (family, space, arch, genome, input, weights' origin);
* ``space.toml``: the space definition the arch belongs to, so loading needs no run and no
  ``spaces/`` folder;
* ``model.onnx``: the same network, dynamic batch, exported as ``nas lut build`` exports blocks.

``import nas.export`` registers one timm model per family, ``vitnas_<family>`` (``-`` as ``_``):
``timm.create_model("vitnas_elasticvit", pretrained_cfg_overlay=dict(file=".../model.safetensors"))``
reads ``config.json`` beside the file, builds the network and loads the weights through timm's
own loader (safetensors: no unpickling). This module imports torch, timm and the space
definitions, never the search, Ray or optuna.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from nas.errors import UserError
from nas.spaces import FAMILIES, SearchSpace, get_space

FORMAT = "vitnas-export/1"
FORMATS = ("torch", "onnx", "all")
PARITY_BATCH = 8  # images of the fixed parity batch; ONNX is traced at batch 2 and checked on all 8
TOL_TORCH = 1e-4  # max |exported torch - reference|: the same weights give the same numbers (1e-6 seen)
TOL_ONNX = 1e-3  # max |onnxruntime - torch| relative to max |torch|: kernel differences only


# ---- loading (what a user's code does) ----------------------------------------------------------
def timm_name(family: str) -> str:
    return "vitnas_" + family.replace("-", "_")


def read_config(folder: Path) -> dict:
    path = Path(folder) / "config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no config.json beside the weights (a `nas export` directory has one)") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a vitnas export config ({e})") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise UserError(f"{path}: not a vitnas export config (format {cfg.get('format') if isinstance(cfg, dict) else None!r}, "
                        f"expected {FORMAT!r})")
    return cfg


def build_exported(folder: Path) -> tuple[nn.Module, dict]:
    """The network an export directory describes, freshly initialised (weights not loaded), and
    its config. The space comes from the directory's own ``space.toml``; a file that no longer
    gives the arch its id (edited) is refused."""
    folder = Path(folder)
    cfg = read_config(folder)
    space = get_space(folder / "space.toml")
    arch = space.canonical(cfg["genome"])
    if arch.id != cfg["arch_id"]:
        raise UserError(f"{folder / 'space.toml'}: the space was edited since the export ({arch.id} != {cfg['arch_id']})")
    return space.build(arch), cfg


def load(folder: Path) -> nn.Module:
    """The exported network with its weights, in eval mode (the documented equivalent of the timm call)."""
    from safetensors.torch import load_file

    net, _ = build_exported(folder)
    net.load_state_dict(load_file(str(Path(folder) / "model.safetensors")), strict=True)
    return net.eval()


def _timm_entry(family: str):
    def create(pretrained: bool = False, pretrained_cfg=None, pretrained_cfg_overlay=None, **kwargs):
        from timm.models import build_model_with_cfg

        file = (pretrained_cfg_overlay or {}).get("file")
        if not file:
            raise UserError(f"{timm_name(family)}: vitnas models have no hub weights; pass "
                            "pretrained_cfg_overlay=dict(file='<export dir>/model.safetensors')")
        folder = Path(file).parent
        net, cfg = build_exported(folder)
        if cfg["family"] != family:
            raise UserError(f"{file}: a {cfg['family']!r} network, not {family!r} (use {timm_name(cfg['family'])})")
        unknown = sorted(k for k in kwargs if k not in ("cache_dir",))
        if unknown:
            raise UserError(f"{timm_name(family)}: the architecture comes from {folder / 'config.json'}; "
                            f"unsupported arguments {unknown}")
        inp = cfg["input"]
        weights = dict(file=str(file), num_classes=cfg["num_classes"], input_size=tuple(inp["shape"]),
                       mean=tuple(inp["mean"]), std=tuple(inp["std"]), first_conv=None, classifier=None,
                       architecture=timm_name(family))
        return build_model_with_cfg(lambda **_: net, timm_name(family), pretrained=True, pretrained_cfg=weights)

    create.__name__ = timm_name(family)
    create.__module__ = __name__
    create.__doc__ = f"A `nas export` network of family {family!r} (arch in config.json beside the weights)."
    return create


def _register_timm() -> None:
    from timm.models import is_model, register_model

    for family in FAMILIES.names():
        if not is_model(timm_name(family)):
            register_model(_timm_entry(family))


_register_timm()


# ---- exporting (what `nas export` does) ---------------------------------------------------------
@dataclass
class Source:
    """An architecture of a run and where its weights come from."""

    run_dir: Path
    space: SearchSpace
    genome: np.ndarray
    arch_id: str
    point: int | None
    supernet: str | None
    seed: int
    threads: int
    trained: Path | None = None  # a `retrain-*/` trainer run of this very network (designers that retrain)


def source(run_dir: Path, point: int | None = None, arch_id: str | None = None, threads: int = 2) -> Source:
    """The architecture ``--point K`` (row K of pareto.csv) or ``--id ARCH_ID`` of a run (``nas.runs.find_arch``)."""
    from nas.runs import find_arch

    cfg, space, genome, arch_id = find_arch(Path(run_dir), point, arch_id)
    return Source(Path(run_dir), space, genome, arch_id, point, cfg.get("supernet"), int(cfg.get("seed", 0)), threads,
                  trained_run(Path(run_dir), space, arch_id))


def trained_run(run_dir: Path, space: SearchSpace, arch_id: str) -> Path | None:
    """The ``retrain-*/`` subdirectory in which a designer (MPCViT) trained ``arch_id`` from
    scratch with the common trainer, if it holds a checkpoint: its weights are what the run's
    accuracy was measured on, so they are what an export of that row must carry."""
    from nas.archspec import parse_arch_text
    from nas.train.checkpoint import find_checkpoint
    from nas.train.config import TrainConfig

    for sub in sorted(run_dir.glob("retrain-*/config.toml")):
        tcfg = TrainConfig.from_toml(sub)
        if tcfg.arch is None or find_checkpoint(sub.parent) is None:
            continue
        if parse_arch_text(space, tcfg.arch).id == arch_id:
            return sub.parent
    return None


def export(src: Source, out: Path, fmt: str = "all", tmp: Path | None = None) -> dict[str, Any]:
    """Write the export directory ``out`` (atomically: built in ``tmp`` beside it, from
    ``nas.runs.claim_dir(out)``, then renamed), check parity, append the record to the run's
    ``exports.jsonl`` and return it."""
    from nas.runs import claim_dir

    space, arch = src.space, src.space.arch(src.genome)
    tmp = tmp or claim_dir(out)
    try:
        if fmt not in FORMATS:
            from nas.registry import did_you_mean

            raise did_you_mean(fmt, FORMATS, "--format")
        if fmt in ("onnx", "all"):
            _need_onnx()
        t0 = time.perf_counter()
        reference, net, x, weights, inp = _materialise(src)
        with torch.no_grad():
            y_ref = reference(x).float()
        files = {"config": "config.json", "space": "space.toml"}
        config = {"format": FORMAT, "family": space.family, "timm_name": timm_name(space.family), "space": space.name,
                  "space_fingerprint": space.fingerprint, "arch_id": src.arch_id, "arch": _arch_form(space, arch),
                  "genome": [int(g) for g in arch.genome], "decoded": _plain(space.decode(arch)),
                  "num_classes": int(y_ref.shape[-1]), "input": inp, "weights": weights,
                  "run": str(src.run_dir.resolve()), "point": src.point}
        _write_text(tmp / "config.json", json.dumps(config, indent=2) + "\n")
        _write_text(tmp / "space.toml", Path(space.path).read_text(encoding="utf-8"))
        state = {k: v.detach().contiguous().clone() for k, v in net.state_dict().items()}
        from safetensors.torch import save_file

        save_file(state, str(tmp / "model.safetensors"), metadata={"format": FORMAT, "arch_id": src.arch_id})
        os.chmod(tmp / "model.safetensors", 0o644)  # safetensors creates it owner-only; the other files are not
        loaded = _create_timm(tmp / "model.safetensors", space.family)  # the user's path, weights read back
        with torch.no_grad():
            y_torch = loaded(x).float()
        err_torch = float((y_torch - y_ref).abs().max())
        err_onnx = rel_onnx = None
        if fmt in ("onnx", "all"):
            from nas.latency.measure import onnx_export

            onnx_export(loaded, x[:2], str(tmp / "model.onnx"), dynamic_batch=True)
            y_onnx = _run_onnx(tmp / "model.onnx", x, src.threads)
            err_onnx = float(np.abs(y_onnx - y_torch.numpy()).max())
            rel_onnx = err_onnx / max(float(y_torch.abs().max()), 1e-12)
            files["onnx"] = "model.onnx"
        if fmt == "onnx":
            (tmp / "model.safetensors").unlink()  # it was only the source of the ONNX graph and its check
        else:
            files["torch"] = "model.safetensors"
        ok = err_torch <= TOL_TORCH and (rel_onnx is None or rel_onnx <= TOL_ONNX)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    rec = {"point": src.point, "arch_id": src.arch_id, "timm_name": timm_name(space.family), "format": fmt,
           "path": str(Path(out).resolve()), "files": files,
           "max_abs_err_torch": err_torch, "max_abs_err_onnx": err_onnx, "max_rel_err_onnx": rel_onnx,
           "parity_ok": ok, "weights": weights["kind"], "batch": inp["batch"],
           "seconds": round(time.perf_counter() - t0, 2), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _append(src.run_dir / "exports.jsonl", rec)
    return rec


def _materialise(src: Source):
    """(reference model, exported network, parity batch, weights' origin, input description).

    With a supernet, the reference is the supernet itself with the arch active and BN recalibrated
    as the search measured it, and the network is extracted from it; without one, the network is
    built with the run's seed (the weights a proxy scored) and is its own reference."""
    space, arch = src.space, src.space.arch(src.genome)
    torch.set_num_threads(src.threads)
    if src.trained is not None:
        return _trained(src, arch)
    if src.supernet is not None:
        from nas.scorers import SupernetScorer

        scorer = SupernetScorer(space, src.supernet, src.threads)
        supernet = scorer.calibrated(src.genome).cpu().eval()
        net = supernet.extract(arch).eval()
        data = scorer.data
        images, _ = next(data.raw_batches(data.heldout, PARITY_BATCH))
        x = data.normalise(images).contiguous()
        weights = {"kind": "supernet", "checkpoint": str(scorer.path), "checkpoint_sha256_16": scorer.fingerprint,
                   "ema": scorer._ema, "bn_recalibration": f"{scorer.bn_batches}x{scorer.batch_size} training images "
                                                           f"of {data.name}"}
        inp = {"shape": list(x.shape[1:]), "mean": _three(data.mean), "std": _three(data.std),
               "batch": f"first {len(x)} held-out images of {data.name}", "data": data.name}
        return supernet, net, x, weights, inp
    from nas.proxies.batch import proxy_data

    try:
        torch.manual_seed(src.seed)
        net = space.build(arch).eval()
    except NotImplementedError:
        raise UserError(f"space family {space.family!r} cannot build standalone networks, so {src.arch_id} "
                        "cannot be exported") from None
    batch = getattr(space, "proxy_batch", "imagenet-samples")
    res = space.input_resolution(arch) or None
    d = proxy_data(batch, getattr(space, "num_classes", 1000), src.seed, res)
    x = d.images[:PARITY_BATCH].contiguous()
    from nas.proxies import batch as pb

    mean, std = (pb.CIFAR_MEAN, pb.CIFAR_STD) if batch == "cifar10-samples" else (pb.MEAN, pb.STD)
    weights = {"kind": "fresh", "init_seed": src.seed,
               "note": "freshly initialised (the run had no supernet): train before use, e.g. `nas train --arch`"}
    inp = {"shape": list(x.shape[1:]), "mean": [float(m) for m in mean], "std": [float(s) for s in std],
           "batch": f"first {len(x)} images of {batch}", "data": batch}
    return net, net, x, weights, inp


def _trained(src: Source, arch):
    """The network as its ``retrain-*/`` run evaluated it: the (EMA) weights of the last
    checkpoint, BatchNorm recalibrated as the trainer's evaluation does (a no-op without BN)."""
    from nas.data import load_data
    from nas.runs import sha256_16
    from nas.train.checkpoint import evaluated_weights, find_checkpoint, read_checkpoint
    from nas.train.config import TrainConfig
    from nas.train.standalone import Standalone
    from nas.train.trainer import calibrate_subnet

    space, run = src.space, src.trained
    tcfg = TrainConfig.from_toml(run / "config.toml").resolved(getattr(space, "train_recipe", None) or {})
    path = find_checkpoint(run)
    ck = read_checkpoint(path, "cpu", "nas export", only=("model", "ema"))
    weights, ema = evaluated_weights(ck)
    model = Standalone(space.build(arch), arch)
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise UserError(f"{path}: its weights do not fit {arch.id} ({str(e).splitlines()[0]})") from None
    data = load_data(tcfg.data, heldout=tcfg.heldout, seed=tcfg.seed)
    calibrate_subnet(model, arch, data, tcfg.bn_batches, tcfg.bn_batch, torch.device("cpu"))
    model.eval()
    images, _ = next(data.raw_batches(data.heldout, PARITY_BATCH))
    x = data.normalise(images).contiguous()
    weights_info = {"kind": "trained", "checkpoint": str(path), "checkpoint_sha256_16": sha256_16(path),
                    "step": int(ck["step"]), "ema": ema,
                    "note": f"trained from scratch by the run ({run.name}/): the weights its accuracy was measured on"}
    inp = {"shape": list(x.shape[1:]), "mean": _three(data.mean), "std": _three(data.std),
           "batch": f"first {len(x)} held-out images of {data.name}", "data": data.name}
    return model, model.net, x, weights_info, inp


def _create_timm(file: Path, family: str) -> nn.Module:
    import timm

    return timm.create_model(timm_name(family), pretrained_cfg_overlay=dict(file=str(file))).eval()


def _run_onnx(path: Path, x: torch.Tensor, threads: int) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x.numpy()})[0]


def _need_onnx() -> None:
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
        import onnxruntime  # noqa: F401
    except ImportError:
        raise UserError("--format onnx/all needs onnx and onnxruntime: pip install 'vitnas[onnx]' "
                        "(or --format torch)") from None


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def _append(path: Path, rec: dict) -> None:
    """One line, flushed and synced: exports.jsonl is append-only like evals.jsonl."""
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(rec, separators=(",", ":")) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _arch_form(space: SearchSpace, arch) -> str:
    d = space.decode(arch)
    return str(d.get("arch", d.get("encoding", "")))


def _plain(d: dict) -> dict:
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in d.items()}


def _three(v) -> list[float]:
    v = [float(a) for a in v]
    return v * 3 if len(v) == 1 else v  # grey images are repeated to 3 channels (nas.data.Data.normalise)


def summary(rec: dict) -> str:
    w = {"supernet": "weights from the run's supernet (BN recalibrated as the search did)",
         "trained": "weights the run trained this network to (its retraining checkpoint)",
         "fresh": "FRESHLY INITIALISED weights: the run had no supernet; train the network before use"}[rec["weights"]]
    lines = [f"exported {rec['arch_id']}" + (f" (Pareto point {rec['point']})" if rec["point"] is not None else "")
             + f" -> {rec['path']}", f"  {w}",
             f"  parity on {rec['batch']}: torch max abs err {rec['max_abs_err_torch']:.3g}"]
    if rec["max_abs_err_onnx"] is not None:
        lines[-1] += f", onnxruntime max abs err {rec['max_abs_err_onnx']:.3g} (rel {rec['max_rel_err_onnx']:.3g})"
    if not rec["parity_ok"]:
        lines.append(f"  PARITY FAILED (tolerances: torch {TOL_TORCH:g} abs, onnx {TOL_ONNX:g} rel)")
    if "torch" in rec["files"]:
        lines.append(f"  load: import nas.export, timm; timm.create_model({rec['timm_name']!r}, "
                     f"pretrained_cfg_overlay=dict(file={str(Path(rec['path']) / 'model.safetensors')!r}))")
    return "\n".join(lines)

