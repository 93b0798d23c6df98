"""Training-free accuracy proxies: ``score = proxy(model, images, labels)``, one registry.

Proxy modules import torch; this package does not, so the search core can list proxy names
without paying for torch. A proxy is registered by its module on import; ``get_proxy`` imports
the module of a built-in proxy on first use. Scores are deterministic for a seed: the evaluator
seeds the weight init and the batch is fixed real data.
"""
from __future__ import annotations

import importlib
from typing import Callable

from nas.registry import Registry, did_you_mean

PROXIES: Registry[Callable] = Registry("proxy")
BUILTIN = {"naswot": "nas.proxies.naswot"}  # name -> module that registers it


def proxy_names() -> list[str]:
    return sorted(set(BUILTIN) | set(PROXIES.names()))


def get_proxy(name: str) -> Callable:
    if name not in PROXIES:
        if name not in BUILTIN:
            raise did_you_mean(name, proxy_names(), "proxy")
        importlib.import_module(BUILTIN[name])
    return PROXIES.get(name)
