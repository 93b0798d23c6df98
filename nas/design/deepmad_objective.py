"""The DeepMAD program's objective and constraints, exactly as TinyNAS v2 computes them (vectorised).

Source: alibaba/lightweight-neural-architecture-search @ 8ccaf88 (``tinynas/scores/compute_deepmad.py``,
``models/cnnnet.py`` get_stage_info / get_efficient_score, the blocks' get_deepmad_forward /
get_width, ``strategy/strategy.py``). With blocks in network order (stem, every inner block, head):

* block term t: 1/2 log of its layers' fan-in widths, c_in^a1 k^(2 a2) per conv (a depthwise conv
  counts k^2 only): stem 1/2 log(3 k^2); K1KXK1 1/2 log(c_in btn^2 k^2); K1DWSEK1 1/2 log(c_in k^2 btn);
  head 1/2 log(c_in). (The paper writes the same without the 1/2: ``form="paper"``.)
* stages end before every stride-2 block but the stem, and at the end: 5 for these spaces. Stage j
  entropy H_j = [log C_j + log(R_j^2)] * sum of t over every block before its end, with C_j, R_j
  the width and side there, sides computed with integer halving from the *scoring* resolution
  (224 in the code, whatever the input size) and, a quirk of the code, every K1DWSEK1 block
  reporting side 1 (its SE module's ``get_output_resolution`` returns 1), so stages that end in one
  add no resolution term. ``corrected=True`` uses the true sides at the network's own resolution.
* entropy = sum_j alpha_j H_j; score = entropy - beta exp(std(L)) over the super-blocks' depths,
  where for K1KXK1 the code drops the first two super-blocks before taking std.
* effectiveness rho_j = L_j / exp(sum log w / L_j) over the prefix up to stage j (L_j conv layers,
  w a block's product of fan-in widths); the constraint is max_j rho_j <= rho0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nas.spaces.deepmad import DeepMADSpace


@dataclass(frozen=True)
class Objective:
    """How a structure is scored: ``form`` "code" (1/2 log, the default) or "paper" (log);
    ``corrected`` scores at the network's own resolution with true K1DWSEK1 sides."""

    form: str = "code"
    corrected: bool = False

    def __post_init__(self):
        if self.form not in ("code", "paper"):
            raise ValueError(f"entropy form must be 'code' or 'paper', got {self.form!r}")


def evaluate(space: DeepMADSpace, genomes: np.ndarray, objective: Objective = Objective()) -> dict[str, np.ndarray]:
    """Score breakdown of each genome: score, entropy, penalty, rho, rho_per_stage (n, stages),
    entropy_per_stage, plus the analytic cost (flops, params, params_backbone, macs, layers)."""
    s = space.values(np.asarray(genomes))
    n, nb = s.out.shape
    half = 0.5 if objective.form == "code" else 1.0
    c, o, b = s.cin.astype(float), s.out.astype(float), s.btn.astype(float)
    k, L = s.k.astype(float), s.L
    k0 = float(space.stem_kernel)
    log = np.log
    if space.block == "K1KXK1":
        t_first, t_rest = log(c) + 2 * log(b) + 2 * log(k), log(o) + 2 * log(b) + 2 * log(k)
    else:
        t_first, t_rest = log(c) + 2 * log(k) + log(b), log(o) + 2 * log(k) + log(b)
    # log width of each super-block (sum of its inner blocks) and its conv-layer count
    w_block = t_first + (L - 1) * t_rest
    w_stem = np.full(n, log(3.0) + 2 * log(k0))
    layers_block = 3 * L
    res = s.res if objective.corrected else np.full(n, space.score_resolution)
    side = res // 2  # after the stem (integer halving, as get_output_resolution does)
    # a stage ends before each stride-2 super-block (rows may differ in their stride pattern)
    cum_t = w_stem * half
    cum_w = w_stem.copy()
    cum_layers = np.ones(n)
    stage_ent, stage_rho = [], []
    width = s.stem.astype(float)
    sides = side.astype(float)
    for j in range(nb):
        ends_here = s.stride[:, j] == 2  # a stage ends before this block
        stage_ent.append(np.where(ends_here, (log(width) + log(np.maximum(sides, 1e-300) ** 2)) * cum_t, np.nan))
        stage_rho.append(np.where(ends_here, np.exp(log(cum_layers) - cum_w / cum_layers), np.nan))
        cum_t = cum_t + half * w_block[:, j]
        cum_w = cum_w + w_block[:, j]
        cum_layers = cum_layers + layers_block[:, j]
        width = o[:, j]
        if space.block == "K1DWSEK1" and not objective.corrected:
            sides = np.ones(n)
        else:
            sides = np.floor(sides / s.stride[:, j])
    if s.head is not None:
        cum_t = cum_t + half * log(o[:, -1])
        cum_w = cum_w + log(o[:, -1])
        cum_layers = cum_layers + 1
        width = s.head.astype(float)
    stage_ent.append((log(width) + log(np.maximum(sides, 1e-300) ** 2)) * cum_t)
    stage_rho.append(np.exp(log(cum_layers) - cum_w / cum_layers))
    ent = _compact(np.stack(stage_ent, axis=1), len(space.alpha))
    rho = _compact(np.stack(stage_rho, axis=1), len(space.alpha))
    entropy = (ent * np.asarray(space.alpha)).sum(1)
    depths = L[:, 2:] if space.block == "K1KXK1" else L
    penalty = space.rules["depth_penalty"] * np.exp(depths.std(axis=1))
    cost = space.cost(genomes)
    return {"score": entropy - penalty, "entropy": entropy, "penalty": penalty, "rho": rho.max(1),
            "rho_per_stage": rho, "entropy_per_stage": ent, **cost}


def _compact(per_slot: np.ndarray, stages: int) -> np.ndarray:
    """(n, blocks + 1) with NaN where no stage ends -> (n, stages), keeping row order."""
    mask = ~np.isnan(per_slot)
    if not (mask.sum(1) == stages).all():
        raise ValueError("a structure does not have the space's number of stages")
    return per_slot[mask].reshape(len(per_slot), stages)
