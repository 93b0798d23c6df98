"""`nas lut build`: measure a space's blocks on a device reachable from this machine into a table.

The key set is ``space_blocks(space, "ceil")``: exactly the keys prediction reads, on the token
grids the PyTorch model computes. Every measurement is appended to ``<space>.build.jsonl`` next
to the table as soon as it is taken, so a build killed at any point resumes where it stopped;
the log's first record pins what the numbers depend on (space, device, protocol, machine), and a
resume under different conditions is refused rather than mixed. The table (CSV, then TOML) is
written atomically at the end; rebuilding an unchanged space measures nothing.
"""
from __future__ import annotations

import csv
import hashlib
import io
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.errors import UserError
from nas.latency.measure import PINNED_ENV, Protocol, runtime, today
from nas.latency.passes import measure_in_passes
from nas.latency.table import user_tables_dir
from nas.runs import locked, write_atomic
from nas.spaces.base import SearchSpace

ROUNDING = "ceil"  # local tables index token grids as the PyTorch model computes them


@dataclass
class BuildResult:
    table: Path  # the TOML
    measured: int  # blocks measured in total (this run and earlier ones)
    fitted: int
    new: int  # measurements taken by this run (one per block and pass)
    seconds: float


def table_files(folder: Path, space: SearchSpace) -> tuple[Path, Path, Path]:
    return folder / f"{space.name}.toml", folder / f"{space.name}.csv", folder / f"{space.name}.build.jsonl"


def build_table(space: SearchSpace, device: str, protocol: Protocol, out: Path | None = None,
                max_blocks: int | None = None, fresh: bool = False, progress: bool = True,
                limit: int | None = None, device_options: dict | None = None, name: str | None = None) -> BuildResult:
    """Measure (the designed subset of) ``space``'s blocks on ``device`` and write the table
    ``<out>/<space>.{csv,toml}``; ``name`` is the table's device name (default: ``device``; the
    folder's name when ``out`` is given).
    ``limit`` stops after that many new measurements without writing the table (a partial build,
    as if interrupted; used by tests and for builds spread over several sittings)."""
    from nas.latency.table import is_layered, space_blocks

    t0 = time.perf_counter()
    specs = space_blocks(space, ROUNDING)
    layered = is_layered(space)
    folder = Path(out) if out is not None else user_tables_dir() / (name or device)
    name = name or (folder.name if out is not None else device)
    meta_path, csv_path, log_path = table_files(folder, space)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the table folder {folder}: {e.strerror}") from None
    rt = runtime(device, protocol, **(device_options or {}))
    env = rt.environment()
    with locked(folder):
        if fresh and log_path.exists():
            log_path.unlink()
        features = layer_features(space, specs) if layered else None
        targets = list(specs)
        if max_blocks is not None and len(specs) > max_blocks:
            from nas.latency.fit import block_features, design_subset

            features = features or block_features(specs)
            targets = design_subset(specs, features, max_blocks)
        header = {"space": space.name, "fingerprint": space.fingerprint, "device": device, "rounding": ROUNDING,
                  "protocol": protocol.as_dict(), "environment": {k: env.get(k) for k in PINNED_ENV},
                  "keys_sha256": _digest(targets)}
        context = _context(specs, protocol)
        got = measure_in_passes(log_path, header, targets, protocol.passes,
                                lambda key: _measure(rt, specs[key], protocol, context), field="key",
                                what="lut build", unit="block", progress=progress, limit=limit,
                                hint="resume with the same settings on the same machine, or pass --fresh "
                                     "to measure again from scratch")
        new, done = got.new, got.combined
        if not got.complete:  # stopped by ``limit``: the log holds the work, no table yet
            return BuildResult(meta_path, len(done), 0, new, time.perf_counter() - t0)
        model = None
        values = {k: done[k]["median_ms"] for k in targets}
        if len(targets) < len(specs) or layered:  # a layered table always carries its model: layers outside it
            from nas.latency.fit import fit_model, predict

            model = fit_model(specs, features, values)
            for k in specs:
                if k not in values:
                    values[k] = max(predict(model, specs[k], features[k]), 0.0)
        text = _csv_text(specs, values, done)
        if new == 0 and meta_path.exists() and csv_path.exists() and csv_path.read_text(encoding="utf-8") == text:
            # nothing measured, nothing changed: keep the TOML (its version, a saved correction)
            return BuildResult(meta_path, len(targets), len(specs) - len(targets), 0, time.perf_counter() - t0)
        write_atomic(csv_path, text)
        meta = _meta(space, name, device, protocol, env, csv_path, text, len(targets), len(specs) - len(targets), model, max_blocks)
        write_atomic(meta_path, meta)
    return BuildResult(meta_path, len(targets), len(specs) - len(targets), new, time.perf_counter() - t0)


CONTEXT_BLOCKS = 3


def layer_features(space, specs: dict) -> dict[str, list[float]]:
    """The analytic features the space predicts unmeasured layers with: the model must be fitted
    on the same numbers it is applied to."""
    import numpy as np

    parsed = [space.parse_layer_key(k) for k in specs]
    kind = np.array([p[0] for p in parsed])
    sig = np.array([p[1] for p in parsed], dtype=np.int64).reshape(len(parsed), -1)
    return {k: [float(x) for x in row] for k, row in zip(specs, space.layer_features(kind, sig))}


def _context(specs: dict, protocol: Protocol) -> list:
    """The blocks run before every timed call: a few of the space's own, spread over its key list
    (so the same for every build of the space)."""
    if not protocol.context:
        return []
    keys = list(specs)
    picks = [keys[round(i * (len(keys) - 1) / max(CONTEXT_BLOCKS - 1, 1))] for i in range(min(CONTEXT_BLOCKS, len(keys)))]
    return [_module(specs[k], protocol) for k in dict.fromkeys(picks)]


def _module(spec, protocol: Protocol):
    import torch

    from nas.nets.blocks import build_block, example_input

    torch.manual_seed(zlib.crc32(repr(spec).encode()))  # the same weights for the same block, every build
    return build_block(spec), example_input(spec, protocol.batch)


def _measure(rt, spec, protocol: Protocol, context: list):
    module, x = _module(spec, protocol)
    return rt.measure(module, x, context)


def _digest(keys: list[str]) -> str:
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()


def _csv_text(specs: dict, values: dict[str, float], done: dict[str, dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["block", "latency_ms", "spread", "source"])
    for k in specs:
        if k in done:
            w.writerow([k, f"{values[k]:.6g}", f"{done[k]['spread']:.4f}", "measured"])
        else:
            w.writerow([k, f"{values[k]:.6g}", "", "fitted"])
    return buf.getvalue()


def _meta(space, name: str, device: str, protocol: Protocol, env: dict, csv_path: Path, text: str, measured: int, fitted: int,
          model: dict | None, max_blocks: int | None) -> str:
    import tomli_w

    from importlib.metadata import PackageNotFoundError, version

    from nas.latency.table import is_layered

    try:
        ours = version("vitnas")
    except PackageNotFoundError:
        ours = "unknown"
    p = protocol
    how = (f"{env['runtime']}, {p.threads} thread(s), batch {p.batch}, FP32; per block: >= {p.warmup} warm-up calls "
           f"and >= {p.warmup_ms:g} ms, {p.repeats} samples of >= {p.min_sample_ms:g} ms each"
           f"{f' (each call after {CONTEXT_BLOCKS} other blocks of the space, untimed)' if p.context else ''}, Tukey-fence outlier "
           f"rejection, median of the rest; re-measured up to {p.retries} times when IQR/median > {p.max_spread:g}; "
           f"{p.passes} passes over all blocks in alternating order, the median over passes kept")
    doc: dict[str, Any] = {
        "device": name,
        "runtime": device,  # what `nas lut validate` measures whole networks with
        "description": f"{env.get('label', device)} on {env.get('gpu') or env['cpu']}, {p.threads} thread(s), batch {p.batch}, FP32",
        "family": space.family,
        "kind": "blocks",
        "space": space.name,
        "space_fingerprint": space.fingerprint,
        "table": csv_path.name,
        "units": "ms",
        "grid_rounding": ROUNDING,
        "version": f"{name}-{today()[:10].replace('-', '')}",
        "rows": measured + fitted,
        "measured_rows": measured,
        "fitted_rows": fitted,
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
        "provenance": {
            "source": f"measured on this machine by `nas lut build` (vitnas {ours})",
            "licence": "your own measurements; no third-party data",
            "measured": how,
            "date": today(),
        },
        "protocol": p.as_dict(),
        "environment": {k: v for k, v in env.items() if v is not None},
    }
    if model is not None:
        doc["model"] = model
        doc["provenance"]["fitted"] = (f"{fitted} of {measured + fitted} blocks predicted by per-kind NNLS models "
                                       f"fitted on {'a designed subset of ' if fitted else ''}{measured} measured blocks"
                                       f"{f' (--max-blocks {max_blocks})' if fitted else ''}; nas/latency/fit.py"
                                       + ("; the models also predict every layer outside the table (a signature-keyed "
                                          "table: nas/latency/layers.py)" if is_layered(space) else ""))
    return tomli_w.dumps(doc)
