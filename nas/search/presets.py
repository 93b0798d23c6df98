"""Named configurations of a search strategy: the published searches, reproducible by name.

``--strategy evolution --preset resnas`` is ViT-ResNAS's search (Liao et al. 2021,
``evo_search.py``; reference B.4): 500 random subnets, then 19 iterations of 75 mutations (each
gene redrawn with probability 0.3) and 75 uniform crossovers of parents from the top 75 of
everything evaluated so far, about 3,350 evaluations, duplicates rejected, MACs in [0.975 C, C]
(C = ``--max-macs``, default the space's ``[search] max_macs``).

``--preset elasticvit`` is ElasticViT's ``search_subnet_via_flops.py`` (reference A.4): 512
random subnets, 39 iterations of 128 mutations and 128 crossovers from the top 256; a variable
mutates with probability 0.2 (0.4 for depths) and becomes a random choice with probability 0.45,
else its smallest; crossover takes each kind of variable (resolution, widths, depths, each micro
choice) from one random parent; MACs in [T, T + 20] M (T = ``--min-macs``, or ``--max-macs`` - 20).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from nas.errors import UserError
from nas.registry import did_you_mean

PRESETS: dict[str, dict[str, Any]] = {
    "resnas": dict(strategy="evolution", population=500, iterations=20, parents=75, mutations=75, crossovers=75,
                   mutation_prob=0.3),
    "elasticvit": dict(strategy="evolution", population=512, iterations=40, parents=256, mutations=128, crossovers=128,
                       mutation_prob=0.2, depth_mutation_prob=0.4, random_redraw=0.45, crossover="grouped"),
}
ELASTICVIT_WINDOW = 20.0  # M MACs: [T, T + 2 * bound] with bound = 10
RESNAS_LOWER = 0.975  # resource_lower_bound_factor


def get_preset(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise did_you_mean(name, PRESETS, "search preset")
    return PRESETS[name]


def preset_defaults(name: str) -> dict[str, int]:
    """What a preset changes in the search's settings: the initial population and the budget."""
    p = get_preset(name)
    return {"population": p["population"], "budget": p["population"] + (p["iterations"] - 1) * (p["mutations"] + p["crossovers"])}


def preset_options(name: str, strategy: str) -> dict[str, Any]:
    """Keyword arguments of the strategy's constructor."""
    p = get_preset(name)
    if strategy != p["strategy"]:
        raise UserError(f"--preset {name} configures --strategy {p['strategy']}, not {strategy}")
    return {k: v for k, v in p.items() if k not in ("strategy", "population", "iterations")}


def apply_preset(cfg, space):
    """The search config with the preset's constraint window filled in (what config.toml records)."""
    if cfg.preset is None:
        return cfg
    preset_options(cfg.preset, cfg.strategy)
    lo, hi = cfg.min_macs, cfg.max_macs
    if cfg.preset == "resnas":
        if hi is None:
            hi = (getattr(space, "search_defaults", None) or {}).get("max_macs")
            if hi is None:
                raise UserError(f"--preset resnas needs --max-macs (space {space.name!r} has no [search] max_macs)")
        lo = RESNAS_LOWER * hi if lo is None else lo
    else:
        if lo is None and hi is None:
            raise UserError("--preset elasticvit needs a target: --min-macs T (the window is [T, T + 20] M MACs)")
        lo = hi - ELASTICVIT_WINDOW if lo is None else lo
        hi = lo + ELASTICVIT_WINDOW if hi is None else hi
    return dataclasses.replace(cfg, min_macs=float(lo), max_macs=float(hi))
