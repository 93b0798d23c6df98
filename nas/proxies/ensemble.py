"""Rank aggregation of several proxies and rank correlation with accuracy (numpy/scipy, no torch).

Every proxy is first turned into ranks in its own direction (higher rank = predicted better; a
failed score, NaN, ranks last; ties share the mean rank). Methods:

* ``ranksum`` -- sum of ranks (As-ViT's and TE-NAS's combination rule).
* ``logrank`` -- sum of log(rank / N), AZ-NAS's non-linear aggregation: one bad proxy pulls an
  architecture down more than one good proxy lifts it.
* ``vote`` -- Copeland score of pairwise majority votes: for every pair, the architecture most
  proxies prefer wins; score = wins - losses. The zero-cost paper's "vote" as a ranking.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
from scipy.stats import kendalltau, rankdata, spearmanr

METHODS = ("ranksum", "logrank", "vote")


def ranks(values: np.ndarray, goal: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    v = v if goal == "max" else -v
    v = np.where(np.isnan(v), -np.inf, v)
    return rankdata(v, method="average")


def aggregate(scores: Mapping[str, np.ndarray], goals: Mapping[str, str], method: str = "ranksum") -> np.ndarray:
    if method not in METHODS:
        from nas.registry import did_you_mean

        raise did_you_mean(method, METHODS, "ensemble method")
    if not scores:
        raise ValueError("no proxies to aggregate")
    r = np.stack([ranks(v, goals[name]) for name, v in scores.items()])  # (P, N)
    if method == "ranksum":
        return r.sum(0)
    if method == "logrank":
        return np.log(r / r.shape[1]).sum(0)
    # vote: for each pair (a, b), +1 per proxy preferring a, -1 per proxy preferring b; rows in
    # chunks so memory stays O(chunk * N) (all 15,625 NB201 cells: 15,625^2 pairs)
    n = r.shape[1]
    out = np.zeros(n)
    for lo in range(0, n, 512):
        margin = np.zeros((min(512, n - lo), n), dtype=np.int32)
        for p in r:
            margin += np.sign(p[lo:lo + 512, None] - p[None, :]).astype(np.int32)
        out[lo:lo + 512] = np.sign(margin).sum(1)
    return out


def correlation(pred: np.ndarray, truth: np.ndarray, goal: str = "max") -> tuple[float, float, int]:
    """Spearman rho and Kendall tau (tau-b) of a proxy against accuracy, in the proxy's
    direction, over the architectures where both are known and the score is not NaN."""
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    ok = ~np.isnan(p) & ~np.isnan(t)
    if ok.sum() < 3:
        return float("nan"), float("nan"), int(ok.sum())
    p = p[ok] if goal == "max" else -p[ok]
    p = rankdata(np.where(np.isinf(p), np.sign(p) * np.finfo(float).max, p))
    return float(spearmanr(p, t[ok])[0]), float(kendalltau(p, t[ok])[0]), int(ok.sum())
