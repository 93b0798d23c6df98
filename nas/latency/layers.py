"""Block tables for spaces whose blocks are keyed by a signature (DeepMAD: any width, bottleneck,
kernel and side), too many to hold densely: the table's measured layers are looked up by an integer
code of their signature (sorted array, ``np.searchsorted``), and every other layer is predicted by
the table's per-kind linear model (``[model.<kind>]``, nas/latency/fit.py) on analytic features
the space computes without torch. A whole batch of genomes costs a few numpy operations.
"""
from __future__ import annotations

import math

import numpy as np

from nas.latency.fit import FEATURES

_RADIX = (4097, 4097, 4097, 16, 3, 2049)  # bounds of (cin, cout, btn, k, s, side); codes fit in int64


def encode(kind: np.ndarray, sig: np.ndarray) -> np.ndarray:
    code = np.asarray(kind, dtype=np.int64)
    for i, r in enumerate(_RADIX):
        code = code * r + np.minimum(sig[..., i], r - 1)  # beyond a bound: the model's, never a wrong row
    return code


def fits(sig: np.ndarray) -> np.ndarray:
    return np.all(sig < np.asarray(_RADIX), axis=-1)


class LayerCompiled:
    """What ``LatencyTable.compiled`` returns for a space with ``latency_layers``."""

    CHUNK = 8192

    def __init__(self, table, space):
        from nas.latency.table import Correction

        self.table, self.space = table, space
        codes, values = [], []
        for key, ms in table.ms.items():
            parsed = space.parse_layer_key(key)
            if parsed is not None and fits(np.asarray(parsed[1])):
                codes.append(int(encode(np.int64(parsed[0]), np.asarray(parsed[1], dtype=np.int64))))
                values.append(ms)
        order = np.argsort(codes)
        self.codes = np.asarray(codes, dtype=np.int64)[order]
        self.values = np.asarray(values, dtype=float)[order]
        model = table.meta.get("model") or {}
        self.coef = np.full((len(space.layer_kinds), len(FEATURES)), np.nan)
        for i, kind in enumerate(space.layer_kinds):
            m = model.get(kind)
            if m is not None and list(m.get("features", [])) == list(FEATURES):
                self.coef[i] = m["coef"]
        # without a model a kind's unmeasured layers cannot be predicted: name the kind up front
        self.missing = [f"{kind} (any layer not in the table: it has no fitted model for this kind)"
                        for i, kind in enumerate(space.layer_kinds) if np.isnan(self.coef[i]).any()]
        self.correction = Correction.from_meta(table.meta.get("correction"))

    def _layer_ms(self, kind: np.ndarray, sig: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ms, measured?) of each layer: the table's row where it has one, else the model's."""
        code = encode(kind, sig)
        if len(self.codes):
            idx = np.minimum(np.searchsorted(self.codes, code), len(self.codes) - 1)
            hit = (self.codes[idx] == code) & fits(sig)
        else:
            idx, hit = np.zeros(code.shape, dtype=np.intp), np.zeros(code.shape, dtype=bool)
        model = np.maximum((self.space.layer_features(kind, sig) * self.coef[kind]).sum(-1), 0.0)
        return np.where(hit, self.values[idx] if len(self.values) else 0.0, model), hit

    def sums(self, genomes: np.ndarray, count: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        g = np.asarray(genomes)
        total = np.empty(len(g))
        n_layers = np.empty(len(g)) if count else None
        for start in range(0, len(g), self.CHUNK):
            c = self.space.latency_layers(g[start:start + self.CHUNK])
            ms, _ = self._layer_ms(c.kind, c.sig)
            ms = np.where(c.count > 0, ms, 0.0)  # an absent slot adds nothing, even where it has no model
            total[start:start + len(ms)] = (ms * c.count).sum(1)
            if count:
                n_layers[start:start + len(ms)] = c.count.sum(1)
        bad = np.isnan(total)
        if bad.any():
            from nas.latency.table import missing_error

            keys = sorted({k for row in g[bad] for k, v in self.breakdown(row[None, :]) if math.isnan(v)})
            raise missing_error(self.table, self.space, keys)
        return total, n_layers

    def predict(self, genomes: np.ndarray, corrected: bool = True) -> np.ndarray:
        if corrected and self.correction is not None:
            total, n = self.sums(genomes, count=True)
            return self.correction.apply(total, n)
        return self.sums(genomes)[0]

    def breakdown(self, genomes: np.ndarray) -> list[tuple[str, float]]:
        """(key, ms) of every layer of the first genome, in network order."""
        return [(k, ms) for k, ms, _ in self.rows(genomes)]

    def rows(self, genomes: np.ndarray) -> list[tuple[str, float, str]]:
        """(key, ms, "measured" | "model") of every layer of the first genome."""
        c = self.space.latency_layers(np.asarray(genomes)[:1])
        ms, hit = self._layer_ms(c.kind, c.sig)
        out = []
        for j in range(c.kind.shape[1]):
            key = self.space.layer_key(int(c.kind[0, j]), c.sig[0, j])
            out += [(key, float(ms[0, j]), "measured" if hit[0, j] else "model")] * int(c.count[0, j])
        return out
