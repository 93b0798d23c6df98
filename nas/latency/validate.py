"""`nas lut validate`: does the table predict what whole networks measure?

N subnets are sampled (seeded), built as whole networks and measured end to end with the table's
own protocol (the ``[protocol]`` it was built with, on the same runtime). Predictions are the raw
block sums. The first ``calibrate`` subnets of the sample fit the correction
(``scale * sum + per_block_ms * n_blocks + offset_ms``, least squares on relative errors); every
figure, before and after, is reported on the *other* subnets, so the correction is judged on
networks it never saw. Figures: MAPE, the share within +-10 % (nn-Meter's headline metric),
Kendall's tau and Spearman's rho. With ``save`` the correction and the figures are written into
the table's TOML, and every prediction from then on goes through the correction.

Each measurement is appended to ``measured.jsonl`` in the output folder as it is taken, so a
killed validation resumes without measuring again, and a rebuilt table can be validated against
the same measured networks.
"""
from __future__ import annotations

import csv
import io
import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from nas.errors import UserError
from nas.latency.measure import PINNED_ENV, Protocol, runtime, today
from nas.latency.passes import measure_in_passes
from nas.latency.table import Correction, LatencyTable
from nas.proxy_report import sample_unique
from nas.runs import locked, write_atomic
from nas.spaces.base import SearchSpace


def validate(space: SearchSpace, table: LatencyTable, out: Path, n: int = 100, calibrate: int = 20, seed: int = 0,
             save: bool = True, progress: bool = True, passes: int | None = None) -> dict[str, Any]:
    """``passes`` overrides the table's protocol for the networks (records are kept per pass)."""
    if calibrate < 3:
        raise UserError(f"--calibrate must be at least 3 (the correction has 3 terms), got {calibrate}")
    if n < calibrate + 5:
        raise UserError(f"--n must exceed --calibrate by at least 5 (figures are reported on the rest), "
                        f"got --n {n} --calibrate {calibrate}")
    try:
        protocol = Protocol(**{**table.meta.get("protocol", {}), **({} if passes is None else {"passes": passes})})
    except TypeError as e:
        raise UserError(f"{table.path}: [protocol] is not a measurement protocol ({e})") from None
    if table.meta.get("runtime") == "android":
        raise UserError(f"{table.path} was measured on a phone; `nas lut validate` measures whole networks only on "
                        f"this machine's runtimes (local-cpu, onnxruntime-cpu, local-cuda) so far")
    if "runtime" not in table.meta:
        raise UserError(f"{table.path} was not measured by `nas lut build` (no 'runtime' field), so there is nothing "
                        f"here to measure whole networks with; validate tables you built")
    rt = runtime(table.meta["runtime"], protocol)
    _check_same_machine(table, rt.environment())
    genomes = sample_unique(space, n, seed)
    block_sum, n_blocks = table.compiled(space).sums(genomes, count=True)
    ids = space.ids(genomes)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    # what the networks' times depend on (not the table: a rebuilt table is validated against the
    # same measurements); passes are stored per record, so more passes add to the same log
    env = rt.environment()
    header = {"space": space.name, "fingerprint": space.fingerprint, "seed": seed,
              "protocol": {k: v for k, v in protocol.as_dict().items() if k != "passes"},
              "environment": {k: env.get(k) for k in PINNED_ENV}}
    with locked(out):
        measured = _measure_all(space, rt, genomes, ids, out / "measured.jsonl", progress, header)
    y = np.array([measured[i]["median_ms"] for i in ids])
    cal = np.arange(len(genomes)) < calibrate
    ev = ~cal
    corr = fit_correction(block_sum[cal], n_blocks[cal], y[cal])
    after = corr.apply(block_sum, n_blocks)
    report = {
        "space": space.name, "device": table.device, "table": table.version, "n": len(genomes), "calibrate": calibrate,
        "evaluated": int(ev.sum()), "seed": seed, "date": today(),
        "before": metrics(block_sum[ev], y[ev]),
        "after": metrics(after[ev], y[ev]),
        "correction": {"scale": corr.scale, "per_block_ms": corr.per_block_ms, "offset_ms": corr.offset_ms},
        "protocol": protocol.as_dict(),
        "measured_ms": {"min": float(y.min()), "median": float(np.median(y)), "max": float(y.max())},
    }
    rows = [{"arch_id": i, "role": "calibration" if c else "evaluation", "n_blocks": int(k),
             "block_sum_ms": float(s), "corrected_ms": float(a), "measured_ms": float(m),
             "spread": measured[i]["spread"], **_decoded(space, g)}
            for i, c, k, s, a, m, g in zip(ids, cal, n_blocks, block_sum, after, y, genomes)]
    write_atomic(out / "validation.csv", _csv(rows))
    write_atomic(out / "report.json", json.dumps(_finite(report), indent=2) + "\n")
    plot(block_sum, after, y, cal, report, out / "validation.png")
    if save:
        if corr.scale <= 0:
            raise UserError(f"the fitted correction has scale {corr.scale:.3g} <= 0 (block sums do not explain the "
                            f"measurements; see {out}/validation.png); not saved")
        save_correction(table, corr, report)
    report["out"] = str(out)
    return report


def _check_same_machine(table: LatencyTable, env: dict) -> None:
    """Whole networks must be measured where the blocks were, or the comparison means nothing."""
    built = table.meta.get("environment", {})
    for k in PINNED_ENV:
        if built.get(k) is not None and env.get(k) is not None and built[k] != env[k]:
            raise UserError(f"{table.path} was measured with {k} = {built[k]!r}, this machine has {env[k]!r}: "
                            f"validate a table where it was built (or build one here)")


def _finite(x: Any) -> Any:
    """NaN (a constant prediction has no Kendall tau) as null: report.json stays valid JSON."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def _decoded(space: SearchSpace, genome: np.ndarray) -> dict[str, Any]:
    d = space.decode(space.arch(genome))
    return {"arch": d["arch"]} if "arch" in d else {"genome": " ".join(str(int(x)) for x in genome)}


def _measure_all(space, rt, genomes, ids, log_path: Path, progress: bool, header: dict) -> dict[str, dict]:
    import torch

    by_id = dict(zip(ids, genomes))

    def measure(arch_id: str):
        arch = space.arch(by_id[arch_id])
        torch.manual_seed(zlib.crc32(arch_id.encode()))
        model = space.build(arch).eval()
        res = space.input_resolution(arch)
        return rt.measure(model, torch.randn(rt.protocol.batch, getattr(model, "in_channels", 3), res, res))

    return measure_in_passes(log_path, header, list(ids), rt.protocol.passes, measure, field="arch_id",
                             what="lut validate", unit="net", progress=progress,
                             hint="choose another --out").combined


def fit_correction(block_sum: np.ndarray, n_blocks: np.ndarray, measured: np.ndarray) -> Correction:
    """Least squares on relative errors. Terms that do not vary in the calibration set (NB201:
    every network has the same number of blocks) are dropped rather than fitted to noise."""
    cols = [block_sum]
    names = ["scale"]
    if np.ptp(n_blocks) > 0:
        cols.append(n_blocks)
        names.append("per_block_ms")
    cols.append(np.ones_like(block_sum))
    names.append("offset_ms")
    x = np.stack(cols, 1) / measured[:, None]
    coef, *_ = np.linalg.lstsq(x, np.ones_like(measured), rcond=None)
    c = dict(zip(names, (float(v) for v in coef)))
    return Correction(c["scale"], c.get("per_block_ms", 0.0), c["offset_ms"])


def metrics(pred: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    from scipy.stats import kendalltau, spearmanr

    rel = (pred - measured) / measured
    return {"mape_pct": float(100 * np.abs(rel).mean()), "within_10pct": float((np.abs(rel) <= 0.10).mean()),
            "within_5pct": float((np.abs(rel) <= 0.05).mean()), "bias_pct": float(100 * np.median(rel)),
            "kendall_tau": float(kendalltau(pred, measured)[0]), "spearman": float(spearmanr(pred, measured)[0])}


def save_correction(table: LatencyTable, corr: Correction, report: dict) -> None:
    """Write ``[correction]`` and ``[validation]`` into the table's TOML (atomically, under the
    table folder's lock, and only if the table is still the one validated)."""
    import hashlib
    import tomllib

    import tomli_w

    with locked(table.path.parent):
        doc = tomllib.loads(table.path.read_text(encoding="utf-8"))
        csv_path = table.path.parent / doc.get("table", "")
        now = hashlib.sha256(csv_path.read_bytes()).hexdigest() if csv_path.is_file() else None
        if now != table.meta["sha256"]:
            raise UserError(f"{table.path} changed while it was being validated (rebuilt?); the correction was not "
                            f"saved: validate it again")
        _write_correction(table, doc, corr, report, tomli_w)


def _write_correction(table, doc, corr, report, tomli_w) -> None:
    doc["correction"] = {"scale": corr.scale, "per_block_ms": corr.per_block_ms, "offset_ms": corr.offset_ms,
                         "fitted_on": f"{report['calibrate']} measured subnets (nas lut validate, seed {report['seed']})"}
    doc["validation"] = {k: report[k] for k in ("n", "calibrate", "evaluated", "seed", "date")}
    doc["validation"]["passes"] = report["protocol"]["passes"]
    doc["validation"]["before"] = report["before"]
    doc["validation"]["after"] = report["after"]
    write_atomic(table.path, tomli_w.dumps(doc))


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    fields = list(dict.fromkeys(k for r in rows for k in r))
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def plot(before: np.ndarray, after: np.ndarray, measured: np.ndarray, cal: np.ndarray, report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), sharex=True, sharey=True)
    lo, hi = float(min(before.min(), after.min(), measured.min())), float(max(before.max(), after.max(), measured.max()))
    grid = np.linspace(lo * 0.95, hi * 1.05, 2)
    for ax, pred, what in ((axes[0], before, "before"), (axes[1], after, "after")):
        m = report[what]
        ax.fill_between(grid, grid * 0.9, grid * 1.1, color="0.9", label="±10 %")
        ax.plot(grid, grid, color="0.5", lw=1)
        ax.scatter(measured[~cal], pred[~cal], s=12, label="evaluated")
        ax.scatter(measured[cal], pred[cal], s=12, marker="x", color="C3", label="calibration")
        ax.set_title(f"{what} correction: MAPE {m['mape_pct']:.1f} %, ±10 % {100 * m['within_10pct']:.0f} %, "
                     f"tau {m['kendall_tau']:.2f}", fontsize=9)
        ax.set_xlabel("measured end to end (ms)")
    axes[0].set_ylabel("predicted (ms)")
    axes[0].legend(fontsize=8, loc="upper left")
    fig.suptitle(f"{report['space']} on {report['device']} ({report['table']}), {report['evaluated']} evaluated subnets",
                 fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
