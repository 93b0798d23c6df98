"""The MPCViT supernet: weight sharing over the per-head attention choices (and GeLU tokens).

A head's choice changes only its nonlinearity, never a shape, so the supernet is the network
itself: ``set_active`` switches the choices, and the generic ``extract`` copies every tensor.
"""
from __future__ import annotations

from nas.elastic.supernet import Supernet
from nas.nets.mpcvit import MpcViTNet


class MpcViTSupernet(MpcViTNet, Supernet):
    """Weight sharing over the per-head choices: every architecture uses every weight."""

    def __init__(self, space):
        super().__init__(space.net_config())
        self.space = space

    def set_active(self, arch) -> None:
        cfg = self.space.net_config(arch)
        self.configure(cfg.attention, cfg.linear_tokens)
