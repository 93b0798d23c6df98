"""As-ViT's training-free design (Chen et al., ICLR 2022): topology seed search, then auto-scaling.

1. **Seed search** (``search/reinforce.py``): one categorical per topology decision (logits
   1e-3 N(0, 1), Adam lr 0.08), one architecture per step on the seed network (depths 1, width
   32). Reward: the "changing range" of both measures, r_t = dLE_t - dK_t with
   dm_t = (m_t - m_{t-1}) / (max(buffer) - min(buffer) + 1e-6) over the last 20 values (K = NTK
   condition number, lower is better; LE = length distortion, higher is better), baseline an
   EMA (0.9) of rewards, loss -log pi(a) (r - baseline). The seed is the argmax of each
   categorical after the last step. (NSGA-II over the two measures: `nas search --space asvit
   --objectives ntk,length_distortion`.)
2. **Auto-scaling** (``search/grow.py``): from depths [1,1,1,1] and proxy width 8, every step
   adds one layer to one stage AND takes the width round(h * (1 + r)), r = 5/10/15/20 % (<= 16
   candidates; below a width of about 11 some of them round back to h); candidates whose
   real network (4x wider) exceeds 110 M parameters are dropped; the measures are taken on the
   proxy network (the real one 4x narrower) and the candidate with the smallest rank sum (K
   ascending, LE descending) wins. Stop once the chosen network reaches 80 M parameters.

Each measure is the mean over ``repeats`` re-initialised copies (seeds seed .. seed + repeats - 1).
Measurements are appended to ``measures.jsonl`` as they finish; a resumed run replays the same
decisions from the seed and reads finished measurements back instead of recomputing them.

Deviations, documented: the measures run on the shipped 20 ImageNet samples at the space's
``proxy_resolution``, as they are (As-ViT: 16 training images at 224 px from its training loader,
which augments them -- RandAugment, mixup/cutmix -- because its ``no_aug=True`` never reaches the
loader); ties of the rank sum go to the candidate best on the measure with the larger relative
range, in that measure's own direction (As-ViT's loop takes argmin regardless of direction and
stops after one comparison); a non-finite measure counts as the worst seen so far. As-ViT does
not do that: its NTK records a NaN condition number as -1 and averages it into the repeats'
mean (a NaN reads as a very good, low value), and its "bad" flag, which would substitute the
worst value, is reset by the length-distortion step whenever both measures run, so it never
fires. Width candidates are As-ViT's own, ``round(h * (1 + r))`` with Python's rounding (a
repeat dropped); the networks attend in heads * (width // heads) channels where the heads do
not divide a width, as the original's do.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nas.arch import Arch
from nas.errors import UserError

MEASURES = ("ntk", "length_distortion")


@dataclass
class AsViTResult:
    run_dir: Path
    seed_arch: str
    family: list[dict[str, Any]]
    measured: int
    seconds: float
    family_csv: Path
    plot: Path | None = None
    reinforce: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        last = self.family[-1]
        return {"run_dir": str(self.run_dir), "seed": self.seed_arch, "family_csv": str(self.family_csv),
                "scaling_steps": len(self.family) - 1, "final": last["arch"], "final_params_m": last["params_m"],
                "final_macs_g": last["macs_g"], "measured": self.measured, "seconds": round(self.seconds, 1),
                "plot": str(self.plot) if self.plot else None}


class Measures:
    """K and LE of an architecture, averaged over re-initialised copies, cached in an append-only log."""

    def __init__(self, space, seed: int, threads: int, repeats: int, path: Path):
        from nas.scorers import ProxyScorer

        self.space, self.path = space, path
        self.scorers = {m: ProxyScorer(space, m, seed, threads, repeats=repeats) for m in MEASURES}
        self.cache: dict[str, dict[str, float]] = {}
        self.computed = 0
        from nas.runs import read_records

        for rec in read_records(path, "measures"):
            try:
                self.cache[rec["id"]] = {m: _num(rec[m]) for m in MEASURES}
            except KeyError:
                raise UserError(f"{path}: a record without {' and '.join(MEASURES)}") from None
        self._log = path.open("a", encoding="utf-8")

    def __call__(self, arch: Arch, role: str) -> dict[str, float]:
        if arch.id not in self.cache:
            g = np.asarray(arch.genome)
            vals = {}
            for m, sc in self.scorers.items():
                try:
                    vals[m] = sc(g)[sc.column]
                except ValueError:  # NaN: the caller substitutes the worst seen (As-ViT averages it in as -1)
                    vals[m] = math.nan
            self.cache[arch.id] = vals
            self.computed += 1
            self._log.write(json.dumps({"id": arch.id, "arch": self.space.arch_string(arch), "role": role, **vals}) + "\n")
            self._log.flush()
        return self.cache[arch.id]

    def close(self) -> None:
        self._log.close()


def _num(v) -> float:
    return math.nan if v is None else float(v)


def run_asvit(space, run_dir: Path, *, seed: int, steps: int | None, threads: int,
              progress: bool = True) -> AsViTResult:
    if space.family != "asvit":
        raise UserError(f"--strategy asvit needs an As-ViT space, not {space.name!r} (family {space.family})")
    sc = space.scaling
    repeats = int(sc.get("repeats", 5))
    steps = int(steps if steps is not None else sc.get("reinforce_steps", 500))
    t0 = time.perf_counter()
    measures = Measures(space, seed, threads, repeats, run_dir / "measures.jsonl")
    try:
        seed_arch, trace = reinforce(space, measures, seed, steps, sc, progress)
        family = scale(space, measures, seed_arch, sc, progress)
    finally:
        measures.close()
    from nas.runs import write_atomic

    csv_path = run_dir / "family.csv"
    write_atomic(csv_path, _csv(family))
    write_atomic(run_dir / "reinforce.csv", _csv(trace))
    plot = plot_family(family, run_dir / "family.png", f"{space.name}: seed {space.arch_string(seed_arch)}")
    return AsViTResult(run_dir, space.arch_string(seed_arch), family, measures.computed, time.perf_counter() - t0,
                       csv_path, plot, trace)


def reinforce(space, measures: Measures, seed: int, steps: int, sc: dict, progress: bool) -> tuple[Arch, list[dict]]:
    import torch

    gen = torch.Generator().manual_seed(seed)
    logits = [(1e-3 * torch.randn(v.size, generator=gen)).requires_grad_(True) for v in space.vars]
    opt = torch.optim.Adam(logits, lr=float(sc.get("reinforce_lr", 0.08)))
    momentum, size = float(sc.get("baseline_momentum", 0.9)), int(sc.get("reward_buffer", 20))
    buffers: dict[str, list[float]] = {m: [] for m in MEASURES}
    num = den = 0.0  # As-ViT's bias-corrected EMA of the reward: baseline = num / den
    trace = []
    bar = _bar(steps, "seed search", progress)
    for step in range(steps):
        dists = [torch.distributions.Categorical(logits=lg) for lg in logits]
        choice = [int(torch.multinomial(d.probs.detach(), 1, generator=gen)) for d in dists]
        arch = space.arch(space.to_genomes(np.asarray([choice]))[0])
        cur = finite_measures(measures(arch, "topology"), buffers)
        reward = 0.0
        if all(buffers[m] for m in MEASURES):
            delta = {}
            for m in MEASURES:
                window = buffers[m][-(size - 1):] + [cur[m]]  # the last `size` values, this one included
                delta[m] = (cur[m] - buffers[m][-1]) / (max(window) - min(window) + 1e-6)
            reward = delta["length_distortion"] - delta["ntk"]
        for m in MEASURES:
            buffers[m].append(cur[m])
        num, den = momentum * num + (1 - momentum) * reward, momentum * den + (1 - momentum)
        baseline = num / den
        log_prob = sum(d.log_prob(torch.tensor(c)) for d, c in zip(dists, choice))
        opt.zero_grad()
        (-log_prob * (reward - baseline)).backward()
        opt.step()
        trace.append({"step": step, "arch": space.arch_string(arch), "ntk": cur["ntk"],
                      "length_distortion": cur["length_distortion"], "reward": reward, "baseline": baseline})
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    best = [int(lg.argmax()) for lg in logits]
    return space.arch(space.to_genomes(np.asarray([best]))[0]), trace


def finite_measures(vals: dict[str, float], seen: dict[str, list[float]]) -> dict[str, float]:
    """A non-finite value of either measure (a singular NTK is +inf, a NaN) becomes the worst
    seen so far, so that one odd network cannot turn the reward, and with it the policy, into
    NaN. Our choice: As-ViT averages a NaN condition number in as -1 (a good value) and its
    worst-value substitution never fires when both measures run (the module docstring)."""
    out = {}
    for m, worst in (("ntk", max), ("length_distortion", min)):
        v = vals[m]
        if not math.isfinite(v):
            finite = [x for x in seen[m] if math.isfinite(x)]
            v = worst(finite) if finite else (1.0 if m == "ntk" else 0.0)
        out[m] = v
    return out


def width_candidates(hidden: int, growth: list[float]) -> list[int]:
    """As-ViT's proxy widths for the next step (search/grow.py): round(hidden * (1 + r)) for each
    growth rate r, in order, a repeat of the previous one dropped. Python rounds halves to even,
    as the original (also Python) does; from a width of about 11 every candidate widens."""
    out: list[int] = []
    for r in growth:
        w = round(hidden * (1 + r))
        if not out or w != out[-1]:
            out.append(w)
    return out


def scale(space, measures: Measures, seed_arch: Arch, sc: dict, progress: bool) -> list[dict[str, Any]]:
    from scipy.stats import rankdata

    factor = int(sc.get("width_factor", 4))
    growth = [float(r) for r in sc.get("growth", [0.05, 0.10, 0.15, 0.20])]
    stop, cap = float(sc.get("stop_params_m", 80)) * 1e6, float(sc.get("max_params_m", 110)) * 1e6
    hidden = int(sc.get("proxy_width", 8))
    depths = (1, 1, 1, 1)
    family = [_row(space, measures, seed_arch, depths, hidden, factor, "start", 0)]
    bar = _bar(None, "auto-scaling", progress)
    step = 0
    while family[-1]["params"] < stop:
        widths = width_candidates(hidden, growth)
        cands = []  # As-ViT's order: each stage's extra layer with every width (ties keep it)
        for i in range(4):
            d = tuple(x + (j == i) for j, x in enumerate(depths))
            if d[i] > space.max_depth:
                continue
            for w in widths:
                if w * factor > 1024:  # the space's widest C
                    continue
                real = space.with_scale(seed_arch, d, w * factor)
                if float(space.cost(np.asarray([real.genome]))["params"][0]) <= cap:
                    cands.append((d, w))
        if not cands:
            break
        vals = [measures(space.with_scale(seed_arch, d, w), "scaling") for d, w in cands]
        k = np.array([v["ntk"] for v in vals], dtype=float)
        le = np.array([v["length_distortion"] for v in vals], dtype=float)
        # a non-finite measure ranks last on that measure (our choice: see finite_measures)
        k[~np.isfinite(k)] = np.max(k[np.isfinite(k)]) + 1 if np.isfinite(k).any() else 0.0
        le[~np.isfinite(le)] = np.min(le[np.isfinite(le)]) - 1 if np.isfinite(le).any() else 0.0
        rank = rankdata(k, method="min") + rankdata(-le, method="min")
        tied = np.flatnonzero(rank == rank.min())
        if len(tied) > 1:  # the measure that spreads the candidates more decides
            spread = {m: (x.max() - x.min()) / max(abs(x.max()), 1e-12) for m, x in (("ntk", k), ("length_distortion", le))}
            best = tied[np.argmin(k[tied])] if spread["ntk"] >= spread["length_distortion"] else tied[np.argmax(le[tied])]
        else:
            best = tied[0]
        depths, hidden = cands[int(best)]
        step += 1
        family.append(_row(space, measures, seed_arch, depths, hidden, factor, f"step {step}", len(cands)))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(params_m=f"{family[-1]['params_m']:.1f}", refresh=False)
    if bar is not None:
        bar.close()
    return family


def _row(space, measures, seed_arch, depths, hidden, factor, role, candidates) -> dict[str, Any]:
    real = space.with_scale(seed_arch, depths, hidden * factor)
    cost = space.cost(np.asarray([real.genome]))
    vals = measures(space.with_scale(seed_arch, depths, hidden), "scaling")
    return {"role": role, "arch": space.arch_string(real), "arch_id": real.id, "depths": "|".join(map(str, depths)),
            "width": hidden * factor, "proxy_width": hidden, "params": int(cost["params"][0]),
            "params_m": round(float(cost["params"][0]) / 1e6, 3), "macs_g": round(float(cost["macs"][0]) / 1e9, 3),
            "ntk": vals["ntk"], "length_distortion": vals["length_distortion"], "candidates": candidates}


def _csv(rows: list[dict[str, Any]]) -> str:
    import csv
    import io

    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return buf.getvalue()


def _bar(total, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="step", desc=desc, dynamic_ncols=True, file=sys.stderr)


def plot_family(family: list[dict[str, Any]], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    p = [r["params_m"] for r in family]
    m = [r["macs_g"] for r in family]
    ax.plot(p, m, "o-")
    for r in family:
        ax.annotate(r["depths"], (r["params_m"], r["macs_g"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("parameters (M)")
    ax.set_ylabel("GMACs")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
