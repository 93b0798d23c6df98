"""Few-shot latency: a predictor for a new device fitted from 5 to a few hundred whole networks
measured on it, transferring from what the engine already knows about the space.

Features of an architecture (all in log space, where devices differ mostly by a scale and a
power): the latency every *reference device* predicts for it (the shipped whole-network tables
for NB201, the shipped phone block tables for ElasticViT: ``reference_devices``), and analytic
ones everywhere (log MACs, log params, block counts: ``analytic_features``). Candidate methods,
each fitted on ``log(ms)``:

* ``ridge``: ridge regression over every standardised feature, its penalty chosen by exact
  leave-one-out error (the hat-matrix identity, so choosing costs one SVD);
* ``single``: the best single reference device rescaled (``ms = s * ref``, ``s`` their geometric
  mean ratio), the device chosen by leave-one-out error;
* ``flops``: ``log ms = a + b log MACs``, the baseline every engine has.

``auto`` (the default) fits all three and keeps the lowest k-fold cross-validated MAPE; which one
wins at which N on the shipped devices is in docs/latency-tables.md ("Few-shot devices"). The
model is a few numbers stored in the device's TOML (``kind = "fitted"``), never pickled.
"""
from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nas.arch import Arch
from nas.errors import UserError
from nas.spaces.base import SearchSpace
from nas.tomldoc import TomlDoc

MIN_ROWS = 5
METHODS = ("auto", "ridge", "single", "flops")
ALPHAS = np.logspace(-3, 3, 13)  # ridge penalties tried, on standardised features
FOLDS = 10


# ---- features ------------------------------------------------------------------------------------
def reference_devices(space: SearchSpace, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """Shipped devices whose tables answer every architecture of ``space``: name -> table. User-built
    and fitted devices are left out, so a fit reads the same features on every machine."""
    from nas.latency.table import _load_cached, data_dir

    out = {}
    root = data_dir("predictors")
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in exclude):
        for stem in (space.name, space.family):
            meta = folder / f"{stem}.toml"
            if not meta.is_file():
                continue
            t = _load_cached(meta.resolve(), meta.stat().st_mtime_ns)  # one load per process, shared with --device
            if t.kind == "network" and t.space_name == space.name and t.entries >= space.size():
                out[folder.name] = t
            elif t.kind == "blocks" and t.family == space.family and not t.missing_keys(space):
                out[folder.name] = t
            break
    return out


def analytic_features(space: SearchSpace, genomes: np.ndarray) -> dict[str, np.ndarray]:
    """log MACs, log params and block counts (per op for NB201, layers and input side for
    ElasticViT): what any space can say about an architecture without a device."""
    g = np.asarray(genomes)
    cost = space.cost(g)
    out = {"log_macs": np.log(np.maximum(cost["macs"], 1).astype(float)),
           "log_params": np.log(np.maximum(cost["params"], 1).astype(float))}
    if space.family == "nb201":
        for i, op in enumerate(space.ops):
            out[f"n_{op}"] = (g == i).sum(1).astype(float)
    elif hasattr(space, "values"):
        v = space.values(g)
        if "depth" in v:
            out["n_layers"] = np.asarray(v["depth"]).sum(1).astype(float)
        if "res" in v:
            out["log_res"] = np.log(np.asarray(v["res"], dtype=float))
    return out


def feature_matrix(space: SearchSpace, genomes: np.ndarray, names: list[str], refs: dict[str, Any]) -> np.ndarray:
    """Columns ``names`` of a batch: ``ref:<device>`` is log of that device's prediction."""
    analytic = analytic_features(space, genomes)
    cols = []
    for n in names:
        if n.startswith("ref:"):
            cols.append(np.log(np.maximum(refs[n[4:]].predict(space, genomes), 1e-9)))
        else:
            cols.append(analytic[n])
    return np.stack(cols, 1) if cols else np.zeros((len(genomes), 0))


def all_features(space: SearchSpace, genomes: np.ndarray, refs: dict[str, Any]) -> tuple[list[str], np.ndarray]:
    names = [f"ref:{d}" for d in refs] + list(analytic_features(space, genomes[:1]))
    return names, feature_matrix(space, genomes, names, refs)


# ---- methods -------------------------------------------------------------------------------------
@dataclass
class Linear:
    """``log ms = intercept + sum(coef * (x - mean) / scale)`` over the named features."""

    method: str
    features: list[str]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    alpha: float = 0.0

    def predict_log(self, x: np.ndarray) -> np.ndarray:
        return self.intercept + ((x - self.mean) / self.scale) @ self.coef

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "features": self.features, "mean": self.mean.tolist(),
                "scale": self.scale.tolist(), "coef": self.coef.tolist(), "intercept": float(self.intercept),
                "alpha": float(self.alpha)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Linear":
        return cls(d["method"], list(d["features"]), np.asarray(d["mean"], float), np.asarray(d["scale"], float),
                   np.asarray(d["coef"], float), float(d["intercept"]), float(d.get("alpha", 0.0)))


def _ridge(names: list[str], x: np.ndarray, y: np.ndarray) -> Linear:
    mean, sd = x.mean(0), x.std(0)
    keep = sd > 1e-12  # a feature constant over the measured rows says nothing about them
    scale = np.where(keep, sd, 1.0)
    z = np.where(keep, (x - mean) / scale, 0.0)
    yc = y - y.mean()
    u, s, vt = np.linalg.svd(z, full_matrices=False)
    uy = u.T @ yc
    best = (np.inf, ALPHAS[0])
    for alpha in ALPHAS:  # exact leave-one-out residuals: r_i / (1 - h_ii), h from the SVD
        f = s**2 / (s**2 + alpha)
        h = (u**2) @ f + 1.0 / len(y)  # + the intercept's share
        r = yc - u @ (f * uy)
        loo = np.mean((r / np.maximum(1 - h, 1e-9)) ** 2)
        if loo < best[0]:
            best = (loo, alpha)
    alpha = best[1]
    coef = vt.T @ (s / (s**2 + alpha) * uy)
    return Linear("ridge", names, mean, scale, coef, float(y.mean()), float(alpha))


def _single(names: list[str], x: np.ndarray, y: np.ndarray) -> Linear:
    refs = [i for i, n in enumerate(names) if n.startswith("ref:")]
    if not refs:
        raise UserError("method 'single' needs a reference device for this space; use --method ridge or flops")
    n = len(y)
    best = (np.inf, refs[0])
    for i in refs:  # log ms = log s + log ref; leave-one-out offset is the mean of the others
        d = y - x[:, i]
        loo = (d.sum() - d) / (n - 1)
        err = np.mean(np.abs(np.exp(x[:, i] + loo - y) - 1))
        if err < best[0]:
            best = (err, i)
    i = best[1]
    coef = np.zeros(len(names))
    coef[i] = 1.0
    return Linear("single", names, np.zeros(len(names)), np.ones(len(names)), coef, float(np.mean(y - x[:, i])))


def _flops(names: list[str], x: np.ndarray, y: np.ndarray) -> Linear:
    i = names.index("log_macs")
    b, a = np.polyfit(x[:, i], y, 1) if np.ptp(x[:, i]) > 0 else (0.0, float(y.mean()))
    coef = np.zeros(len(names))
    coef[i] = b
    return Linear("flops", names, np.zeros(len(names)), np.ones(len(names)), coef, float(a))


FITTERS = {"ridge": _ridge, "single": _single, "flops": _flops}


def cross_validate(method: str, names: list[str], x: np.ndarray, y_ms: np.ndarray, seed: int = 0) -> np.ndarray:
    """Out-of-fold predictions (ms) of ``method``: k-fold (k = min(N, 10)), every choice the method
    makes (penalty, device) made again inside each fold."""
    n = len(y_ms)
    folds = np.random.default_rng(seed).permutation(n) % min(n, FOLDS)
    out = np.empty(n)
    y = np.log(y_ms)
    for f in np.unique(folds):
        tr = folds != f
        m = FITTERS[method](names, x[tr], y[tr])
        out[~tr] = np.exp(m.predict_log(x[~tr]))
    return out


def scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    from scipy.stats import spearmanr

    rel = pred / truth - 1
    rho = spearmanr(pred, truth).statistic if len(truth) > 2 and np.ptp(truth) > 0 else float("nan")
    return {"mape_pct": float(100 * np.mean(np.abs(rel))), "within_10pct": float(np.mean(np.abs(rel) <= 0.10)),
            "spearman": float(rho)}


def fit(names: list[str], x: np.ndarray, y_ms: np.ndarray, method: str = "auto", seed: int = 0) -> tuple[Linear, dict]:
    """The fitted model and, per candidate method, its cross-validated scores."""
    if method not in METHODS:
        from nas.registry import did_you_mean

        raise did_you_mean(method, METHODS, "fit method")
    tried = [m for m in FITTERS if m == method or method == "auto"]
    if method == "auto" and not any(n.startswith("ref:") for n in names):
        tried.remove("single")
    cv = {m: scores(cross_validate(m, names, x, y_ms, seed), y_ms) for m in tried}
    chosen = min(tried, key=lambda m: cv[m]["mape_pct"]) if method == "auto" else method
    return FITTERS[chosen](names, x, np.log(y_ms)), cv


# ---- measured files ------------------------------------------------------------------------------
def read_measured(path: Path, space: SearchSpace) -> tuple[np.ndarray, np.ndarray]:
    """Genomes and ms of an ``arch,ms`` file; a bad row is one error naming file, line and reason."""
    from nas.latency.network import arch_index, read_keyed_csv

    table = read_keyed_csv(path)
    if table.key != "arch" or "ms" not in table.header:
        raise UserError(f"{path}:1: expected the columns 'arch,ms' (the space's architecture string or JSON "
                        f"encoding, and its measured latency), got {','.join(table.header)!r}")
    ms = table.column("ms", "measured latency")
    bad = np.flatnonzero(ms <= 0)
    if bad.size:
        raise UserError(f"{path}:{bad[0] + 2}: column 'ms': {table.cells['ms'][bad[0]]!r} is not a positive latency")
    index = arch_index(table, space)  # errors: an architecture outside the space, or one twice
    if table.rows < MIN_ROWS:
        raise UserError(f"{path}: {table.rows} measured architecture(s); a fit needs at least {MIN_ROWS} "
                        f"(20 give a usable predictor: docs/latency-tables.md)")
    return index.genomes(), ms.copy()


def arch_text(space: SearchSpace, arch: Arch) -> str:
    """How a measured file names an architecture: NB201's string, else the compact JSON encoding."""
    import json

    if hasattr(space, "arch_string"):
        return space.arch_string(arch)
    enc = space.decode(arch)["encoding"]
    return enc if isinstance(enc, str) else json.dumps(enc, separators=(",", ":"))


# ---- the device ----------------------------------------------------------------------------------
@dataclass
class FittedTable:
    """A device of ``kind = "fitted"``: ``predict(space, genomes)`` (ms) from a few-shot model."""

    device: str
    space_name: str
    family: str
    model: Linear
    meta: dict[str, Any]
    path: Path
    kind: str = "fitted"
    grid_rounding: str = "-"
    _refs_of: dict = field(default_factory=dict, repr=False)  # space -> checked reference tables

    @classmethod
    def load(cls, meta_path: Path) -> "FittedTable":
        doc = TomlDoc(meta_path)
        d = doc.data
        device = doc.get(d, "device", "device", str)
        space = doc.get(d, "space", "space", str)
        m = d.get("model")
        if not isinstance(m, dict):
            raise doc.error("model", "a fitted device needs a [model] table (written by `nas lut fit`)")
        try:
            model = Linear.from_dict(m)
        except (KeyError, TypeError, ValueError) as e:
            raise doc.error("model", f"malformed fitted model ({e})") from None
        if not (len(model.features) == len(model.mean) == len(model.scale) == len(model.coef)):
            raise doc.error("model", "features, mean, scale and coef must have one entry per feature")
        digest = hashlib.sha256(repr(m).encode()).hexdigest()
        return cls(device, space, doc.get(d, "family", "family", str, ""), model, {**d, "sha256": digest}, meta_path)

    def check(self, space: SearchSpace) -> None:
        if self.space_name != space.name:
            raise UserError(f"fitted device {self.device} ({self.path}) predicts architectures of space "
                            f"{self.space_name!r}, not {space.name!r}; fit one with `nas lut fit --space {space.name}`")
        self._refs(space)

    def _refs(self, space: SearchSpace) -> dict[str, Any]:
        key = f"{space.name}:{space.fingerprint}"
        if key not in self._refs_of:
            self._refs_of[key] = self._find_refs(space)
        return self._refs_of[key]

    def _find_refs(self, space: SearchSpace) -> dict[str, Any]:
        want = self.meta.get("references", {})
        refs = reference_devices(space)
        for n in self.model.features:
            if n.startswith("ref:"):
                dev = n[4:]
                if dev not in refs:
                    raise UserError(f"fitted device {self.device} ({self.path}) uses shipped device {dev!r}, which is "
                                    f"not installed for space {space.name!r}; fit it again with `nas lut fit`")
                if want.get(dev) and want[dev] != refs[dev].version:
                    raise UserError(f"fitted device {self.device} ({self.path}) was fitted on {want[dev]} of {dev}, "
                                    f"now {refs[dev].version}: fit it again with `nas lut fit`")
        return refs

    @property
    def version(self) -> str:
        return f"{self.device}:{self.meta.get('version', 'fitted')}@{self.meta['sha256'][:8]}"

    @property
    def entries(self) -> int:
        return int(self.meta.get("provenance", {}).get("n", 0))

    @property
    def quality(self) -> dict[str, float]:
        """Cross-validated MAPE (%) and Spearman of the fit: what a search prints beside the name."""
        p = self.meta.get("provenance", {})
        return {"n": int(p.get("n", 0)), "cv_mape_pct": float(p.get("cv_mape_pct", float("nan"))),
                "cv_spearman": float(p.get("cv_spearman", float("nan")))}

    def describe(self) -> str:
        q = self.quality
        return (f"fitted ({self.model.method}) from {q['n']} measurements: CV MAPE {q['cv_mape_pct']:.1f}%, "
                f"Spearman {q['cv_spearman']:.3f}")

    def missing_keys(self, space: SearchSpace) -> list[str]:
        return []

    def predict(self, space: SearchSpace, genomes: np.ndarray, corrected: bool = True) -> np.ndarray:
        g = np.asarray(genomes)
        return np.exp(self.model.predict_log(feature_matrix(space, g, self.model.features, self._refs(space))))

    def block_rows(self, space: SearchSpace, arch: Arch) -> list[dict[str, Any]]:
        return [{"key": "whole network (fitted)", "ms": float(self.predict(space, np.asarray([arch.genome]))[0])}]

    def breakdown(self, space: SearchSpace, arch: Arch) -> list[tuple[str, float]]:
        return [(r["key"], r["ms"]) for r in self.block_rows(space, arch)]


def fit_device(space: SearchSpace, measured: Path, name: str | None = None, out: Path | None = None,
               method: str = "auto", seed: int = 0) -> dict[str, Any]:
    """Fit a device from ``measured`` and write ``<out>/<space>.toml`` (+ a copy of the measurements);
    returns what the CLI prints."""
    import datetime as _dt

    import tomli_w

    from nas.latency.table import user_tables_dir
    from nas.runs import write_atomic

    measured = Path(measured)
    genomes, ms = read_measured(measured, space)
    name = name or (out.name if out else measured.stem)
    if out is None:
        from nas.latency.table import data_dir

        if (data_dir("predictors") / name).is_dir():  # the shipped one would win: --device NAME never finds it
            raise UserError(f"device name {name!r} is a shipped device; choose another --name, or give --out DIR "
                            f"and use --device DIR")
    refs = reference_devices(space, exclude=(name,))
    names, x = all_features(space, genomes, refs)
    model, cv = fit(names, x, ms, method, seed)
    chosen = cv[model.method]
    out = Path(out) if out else user_tables_dir() / name
    out.mkdir(parents=True, exist_ok=True)
    copy = out / f"{space.name}.measured.csv"
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["arch", "ms"])
    for row, v in zip(genomes, ms):
        w.writerow([arch_text(space, space.arch(row)), repr(float(v))])
    write_atomic(copy, buf.getvalue())
    used = sorted(n[4:] for n, c in zip(model.features, model.coef) if n.startswith("ref:") and c != 0)
    doc = {
        "device": name, "kind": "fitted", "space": space.name, "family": space.family, "units": "ms",
        "version": f"fitted-{_dt.date.today():%Y%m%d}",
        "description": f"few-shot fit ({model.method}) from {len(ms)} whole networks measured in {measured.name}",
        "references": {d: refs[d].version for d in used},
        "provenance": {
            "source": f"`nas lut fit` on {measured} ({len(ms)} rows, sha256 {hashlib.sha256(measured.read_bytes()).hexdigest()[:12]}; "
                      f"copied to {copy.name})",
            "licence": "your own measurements; the reference devices' licences apply to their tables",
            "n": len(ms), "method": model.method, "seed": seed,
            "cv_mape_pct": round(chosen["mape_pct"], 3), "cv_spearman": round(chosen["spearman"], 4),
            "cv_within_10pct": round(chosen["within_10pct"], 4),
            "cv": {m: {k: round(v, 4) for k, v in s.items()} for m, s in cv.items()},
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        },
        "model": model.as_dict(),
    }
    meta = out / f"{space.name}.toml"
    write_atomic(meta, "# written by `nas lut fit`; a few-shot predictor (nas/latency/fewshot.py)\n" + tomli_w.dumps(doc))
    return {"device": name, "table": str(meta), "n": len(ms), "method": model.method, "cv": cv,
            "references": used, "cv_mape_pct": chosen["mape_pct"], "cv_spearman": chosen["spearman"]}
