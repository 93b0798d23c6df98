"""Tables for block sets too large to measure: a designed subset, measured, and a per-kind linear
model that fills the rest.

Features of a block come from one forward pass on torch's meta device (no memory, no compute):
``flops`` (torch's FLOP formulas, counted as FlopCounterMode counts them), ``elems`` (elements
written by every operator: the memory traffic that bounds depthwise and elementwise work),
``ops`` (operators dispatched: the per-call overhead that dominates small blocks in eager
runtimes) and a constant. Per block kind (mbconv, attention, ...) ``latency = sum(coef *
feature)`` is fitted by non-negative least squares on
relative errors (each row divided by its measured latency), so small and large blocks count
alike and no coefficient can make a block cheaper for doing more work.

The subset is a space-filling design per kind: farthest-point sampling in the standardised
log-feature space, started from the cheapest and the most expensive block, with at least
``MIN_PER_KIND`` blocks per kind (all of them when a kind has fewer), the rest shared in
proportion to each kind's size. Deterministic: no random draws.

The model is stored in the table's TOML (``[model.<kind>]``: features, coefficients, fit
statistics), never pickled; fitted rows carry ``source = fitted`` in the CSV.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import nnls

from nas.spaces.base import BlockSpec

FEATURES = ("flops", "elems", "ops", "const")
MIN_PER_KIND = 8
CV_FOLDS = 5


def block_features(specs: dict[str, BlockSpec]) -> dict[str, list[float]]:
    """key -> [flops, elems, ops, 1] of each block (about 10 ms per block, mostly torch's meta kernels)."""
    import torch

    from nas.nets.blocks import build_block

    census = _census()
    out = {}
    for key, spec in specs.items():
        with torch.device("meta"):
            module = build_block(spec)
            x = torch.empty((1, *spec.shape))
        census.flops.total = census.ops = census.elems = 0
        with torch.inference_mode(), census:
            module(x)
        out[key] = [float(census.flops.total), float(census.elems), float(census.ops), 1.0]
    return out


def _census():
    """A dispatch mode counting the operators a forward dispatches and the elements they write,
    with FLOPs counted by torch's formulas (``torch.utils.flop_counter``) exactly as
    FlopCounterMode counts them (an operator without a formula is decomposed), but without its
    per-module tracking, whose hooks cost several times the forward itself."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves
    from torch.utils.flop_counter import flop_registry

    class Flops(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func not in flop_registry and func is not torch.ops.prim.device.default:
                with self:
                    r = func.decompose(*args, **kwargs)
                    if r is not NotImplemented:
                        return r
            out = func(*args, **kwargs)
            if func._overloadpacket in flop_registry:
                self.total += flop_registry[func._overloadpacket](*args, **kwargs, out_val=out)
            return out

    class Census(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = self.elems = 0
            self.flops = Flops()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            with self.flops:
                out = func(*args, **(kwargs or {}))
            self.ops += 1
            self.elems += sum(t.numel() for t in tree_leaves(out) if isinstance(t, torch.Tensor))
            return out

    return Census()


def design_subset(specs: dict[str, BlockSpec], features: dict[str, list[float]], n: int) -> list[str]:
    """About ``n`` keys covering every kind's feature range (sorted)."""
    kinds: dict[str, list[str]] = {}
    for k, s in specs.items():
        kinds.setdefault(s.kind, []).append(k)
    quota = {kind: min(len(keys), MIN_PER_KIND) for kind, keys in kinds.items()}
    spare = max(0, n - sum(quota.values()))
    total = sum(len(keys) - quota[kind] for kind, keys in kinds.items())
    for kind, keys in kinds.items():
        if total:
            quota[kind] += int(round(spare * (len(keys) - quota[kind]) / total))
        quota[kind] = min(quota[kind], len(keys))
    chosen = []
    for kind, keys in sorted(kinds.items()):
        chosen += _farthest_points(keys, np.array([features[k][:3] for k in keys]), quota[kind])
    return sorted(chosen)


def _farthest_points(keys: list[str], x: np.ndarray, m: int) -> list[str]:
    if m >= len(keys):
        return list(keys)
    z = np.log1p(x)
    sd = z.std(0)
    z = (z - z.mean(0)) / np.where(sd > 0, sd, 1)
    first = [int(np.argmin(x[:, 0])), int(np.argmax(x[:, 0]))]
    picked = list(dict.fromkeys(first))[:m]
    dist = np.min([((z - z[i]) ** 2).sum(1) for i in picked], axis=0)
    dist[picked] = -np.inf
    while len(picked) < m:  # blocks with identical features are distinct keys: distance 0 still counts
        i = int(np.argmax(dist))
        picked.append(i)
        dist = np.minimum(dist, ((z - z[i]) ** 2).sum(1))
        dist[picked] = -np.inf
    return [keys[i] for i in picked]


def fit_kind(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """NNLS coefficients on relative errors, and their k-fold cross-validated MAPE (in %)."""
    coef = _nnls_rel(x, y)
    if len(y) < 2 * CV_FOLDS:
        return coef, float("nan")
    errs = np.empty(len(y))
    folds = np.arange(len(y)) % CV_FOLDS
    for f in range(CV_FOLDS):
        c = _nnls_rel(x[folds != f], y[folds != f])
        errs[folds == f] = np.abs(x[folds == f] @ c - y[folds == f]) / y[folds == f]
    return coef, float(100 * errs.mean())


def _nnls_rel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    scale = x.max(0)
    scale[scale == 0] = 1
    w = 1 / np.maximum(y, 1e-9)
    coef, _ = nnls((x / scale) * w[:, None], y * w)
    return coef / scale


def fit_model(specs: dict[str, BlockSpec], features: dict[str, list[float]], measured: dict[str, float]) -> dict[str, Any]:
    """Per kind: {"features", "coef", "n"[, "cv_mape_pct"]} fitted on the measured keys."""
    model = {}
    kinds = sorted({s.kind for s in specs.values()})
    for kind in kinds:
        keys = [k for k in measured if specs[k].kind == kind]
        if not keys:
            raise ValueError(f"no measured block of kind {kind!r} to fit")
        x = np.array([features[k] for k in keys])
        y = np.array([measured[k] for k in keys])
        coef, cv = fit_kind(x, y)
        model[kind] = {"features": list(FEATURES), "coef": [float(c) for c in coef], "n": len(keys)}
        if not np.isnan(cv):  # too few blocks of this kind to cross-validate
            model[kind]["cv_mape_pct"] = round(cv, 2)
    return model


def predict(model: dict[str, Any], spec: BlockSpec, feats: list[float]) -> float:
    return float(np.dot(model[spec.kind]["coef"], feats))
