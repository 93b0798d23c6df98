"""Plots of a run: every evaluated architecture in grey, the Pareto front on top."""
from __future__ import annotations

from itertools import combinations
from pathlib import Path
from typing import Sequence

import numpy as np

from nas.objectives import Objective


def plot_front(log, objectives: Sequence[Objective], path: Path, title: str = "",
               presets: dict[str, dict[str, float]] | None = None) -> Path:
    """``log``: a RunLog (or anything with its ``values``/``col``/``front``/``feasible``).
    ``presets``: published models' known metric values ({name: {column: value}}), drawn on the
    same axes: a labelled point where both axes are known, a dashed line where only x is."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # costs (minimised) on x, scores (maximised) on y: the usual accuracy-vs-latency picture
    pairs = [(j, i) if objectives[i].goal == "max" and objectives[j].goal == "min" else (i, j)
             for i, j in combinations(range(len(objectives)), 2)] or [(0, 0)]
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.2 * len(pairs), 4.4), squeeze=False)
    cols = [log.col[o.column] for o in objectives]
    vals = log.values[:, cols]
    ok = np.all(np.isfinite(vals), axis=1)
    feas = np.zeros(len(vals), dtype=bool)
    if len(vals):
        feas = log.feasible(np.arange(len(vals)))
    front = log.front
    for ax, (i, j) in zip(axes[0], pairs):
        if (ok & ~feas).any():
            ax.scatter(vals[ok & ~feas, i], vals[ok & ~feas, j], s=6, c="#dddddd", label="infeasible", rasterized=True)
        ax.scatter(vals[feas, i], vals[feas, j], s=6, c="#999999", label="evaluated", rasterized=True)
        if len(front):
            fv = vals[front]
            order = np.argsort(fv[:, i])
            ax.plot(fv[order, i], fv[order, j], "-o", ms=4, c="C3", lw=1, label=f"Pareto front ({len(front)})")
        for name, known in (presets or {}).items():
            xv, yv = known.get(objectives[i].column), known.get(objectives[j].column)
            if xv is None:
                continue
            if yv is not None:
                ax.scatter([xv], [yv], marker="*", s=60, c="C0", zorder=3)
                ax.annotate(name, (xv, yv), fontsize=6, xytext=(3, 3), textcoords="offset points", color="C0")
            else:
                ax.axvline(xv, ls="--", lw=0.6, c="C0", alpha=0.6)
                ax.annotate(name, (xv, 1.0), xycoords=("data", "axes fraction"), fontsize=6, rotation=90,
                            va="top", ha="right", color="C0")
        ax.set_xlabel(f"{objectives[i].label} ({'lower' if objectives[i].goal == 'min' else 'higher'} is better)")
        ax.set_ylabel(f"{objectives[j].label} ({'lower' if objectives[j].goal == 'min' else 'higher'} is better)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(f"{title}\n{len(vals)} architectures evaluated", fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path
