"""`nas lut sample`: measure N sampled whole networks end to end, for `nas lut fit`.

No block table is needed: each network is built, exported as a whole (ONNX for onnxruntime and
the phone) and timed with the block protocol (``nas.latency.measure``) on the chosen runtime,
``local-cpu``, ``onnxruntime-cpu``, ``local-cuda`` or ``android`` (one adb push and benchmark
run per network, as ``nas lut build`` does per block). Every measurement is appended to
``<out>.measure.jsonl`` as it is taken (so an interrupted run resumes with the same command); the
``arch,ms`` CSV is written at the end, atomically.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from nas.errors import UserError
from nas.latency.fewshot import arch_text
from nas.latency.measure import PINNED_ENV, Protocol, runtime
from nas.proxy_report import sample_unique
from nas.runs import write_atomic
from nas.spaces.base import SearchSpace


def sample_networks(space: SearchSpace, device: str, protocol: Protocol, n: int, out: Path, seed: int = 0,
                    progress: bool = True, device_options: dict[str, Any] | None = None) -> dict[str, Any]:
    from nas.latency.validate import _measure_all

    if n < 1:
        raise UserError(f"--n must be positive, got {n}")
    if out.suffix != ".csv":
        raise UserError(f"--out {out}: expected a .csv path (the arch,ms file `nas lut fit --measured` reads)")
    rt = runtime(device, protocol, **{k: v for k, v in (device_options or {}).items() if v is not None})
    genomes = sample_unique(space, n, seed)
    ids = space.ids(genomes)
    env = rt.environment()
    header = {"space": space.name, "fingerprint": space.fingerprint, "seed": seed,
              "protocol": {k: v for k, v in protocol.as_dict().items() if k != "passes"},
              "environment": {k: env.get(k) for k in PINNED_ENV}}
    out.parent.mkdir(parents=True, exist_ok=True)
    measured = _measure_all(space, rt, genomes, ids, out.with_suffix(".measure.jsonl"), progress, header)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["arch", "ms", "spread", "arch_id"])
    for g, i in zip(genomes, ids):
        w.writerow([arch_text(space, space.arch(g)), f"{measured[i]['median_ms']:.6g}", f"{measured[i]['spread']:.4f}", i])
    write_atomic(out, buf.getvalue())
    ms = [measured[i]["median_ms"] for i in ids]
    return {"out": str(out), "n": len(ids), "device": device, "min_ms": min(ms), "max_ms": max(ms),
            "environment": env}
