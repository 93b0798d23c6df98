"""Training-free accuracy proxies: one registry, ``score = proxy(model, data)``.

Proxy modules import torch; this package does not, so the search core can list proxy names and
directions without paying for torch. ``BUILTIN`` describes every proxy that ships (name, the
module that registers it, whether higher or lower is better, a one-line definition); a module
registers its functions in ``PROXIES`` on import. ``params`` and ``macs`` are *analytic*: they
come from the space's cost model, not from a forward pass.

Scores are deterministic for a seed: the scorer seeds the weight initialisation and the batch is
fixed real data (or, for proxies that want noise, noise drawn from a seeded generator).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from nas.registry import Registry, did_you_mean

PROXIES: Registry[Callable] = Registry("proxy")


@dataclass(frozen=True)
class ProxyInfo:
    name: str
    module: str  # registers the function; "" for analytic proxies
    goal: str  # "max" | "min": which direction predicts higher accuracy
    summary: str
    source: str


_G, _A = "nas.proxies.gradient", "nas.proxies.asvit"
BUILTIN: dict[str, ProxyInfo] = {p.name: p for p in (
    ProxyInfo("params", "", "max", "parameter count (analytic)", "baseline"),
    ProxyInfo("macs", "", "max", "multiply-accumulates (analytic)", "baseline"),
    ProxyInfo("grad_norm", _G, "max", "sum over layers of ||dL/dW||_2 on one labelled batch",
              "Abdelfattah et al., ICLR 2021"),
    ProxyInfo("snip", _G, "max", "sum |dL/dW * W| (connection sensitivity)", "Lee et al., ICLR 2019"),
    ProxyInfo("grasp", _G, "max", "sum -W * (H g), a Hessian-gradient product", "Wang et al., ICLR 2020"),
    ProxyInfo("fisher", _G, "max", "sum over channels of 1/2 mean_n (sum_hw act * dL/dact)^2, each channel times its weight count", "Turner et al., ICLR 2020"),
    ProxyInfo("jacob_cov", _G, "max", "-sum log(l + k) + 1/(l + k) over eigenvalues l of the input-Jacobian correlation",
              "Mellor et al. (NASWOT v1), 2020"),
    ProxyInfo("synflow", _G, "max", "sum |W * dR/dW|, R = sum of outputs of the |W| network on an all-ones input",
              "Tanaka et al., NeurIPS 2020"),
    ProxyInfo("naswot", "nas.proxies.naswot", "max", "log |det K| of the rectifier-code agreement kernel",
              "Mellor et al., ICML 2021"),
    ProxyInfo("zen", "nas.proxies.zen", "max", "log E||f(x) - f(x + 0.01 e)||_1 + sum_BN log sqrt(mean running_var)",
              "Lin et al., ICCV 2021"),
    ProxyInfo("ntk", _A, "min", "condition number of the empirical NTK of the pooled features (trainability)",
              "Chen et al., ICLR 2022 (As-ViT); TE-NAS"),
    ProxyInfo("length_distortion", _A, "max", "length of the output curve of a unit input circle, norms off (expressivity)",
              "Chen et al., ICLR 2022 (As-ViT)"),
    ProxyInfo("linear_regions", "nas.proxies.tenas", "max", "distinct rectifier patterns over 3,000 random inputs",
              "Chen et al., ICLR 2021 (TE-NAS)"),
    ProxyInfo("dss", "nas.proxies.dss", "max", "attention: ||dR/dW||_* ||W||_*; other layers: sum |dR/dW * W| (|W| net, ones input)",
              "Zhou et al., CVPR 2022 (TF-TAS)"),
)}
ANALYTIC = {"params": "params", "macs": "macs"}  # proxy -> SearchSpace.cost key


def proxy_names() -> list[str]:
    return sorted(set(BUILTIN) | set(PROXIES.names()))


def proxy_goal(name: str) -> str:
    info = BUILTIN.get(name)
    return info.goal if info else getattr(PROXIES.get(name), "goal", "max")


def check_proxies(names: list[str]) -> list[str]:
    """Validate a list of proxy names (each unknown one gets a "did you mean"); no duplicates."""
    known = proxy_names()
    for n in names:
        if n not in known:
            raise did_you_mean(n, known, "proxy")
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        from nas.errors import UserError

        raise UserError(f"proxy {dup!r} listed twice")
    return names


def get_proxy(name: str) -> Callable:
    if name in ANALYTIC:
        raise ValueError(f"proxy {name!r} is analytic: read it from SearchSpace.cost")
    if name not in PROXIES:
        if name not in BUILTIN:
            raise did_you_mean(name, proxy_names(), "proxy")
        importlib.import_module(BUILTIN[name].module)
    return PROXIES.get(name)
