"""The Supernet base: activation of a subnet and extraction into the space's standalone model.

Extraction is generic: the supernet mirrors the standalone model's module names, so every
tensor of ``space.build(arch).state_dict()`` has a counterpart here that is sliced to shape
(prefix in every dim, centre crop of conv kernels). A module whose parameters are laid out
differently (the fused q/k/v projection, the relative-position table) provides
``extract_tensor(name, tensor, shape)``.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from nas.arch import Arch


class Supernet(nn.Module):
    space = None  # the SearchSpace this supernet serves

    def set_active(self, arch: Arch) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def extract(self, arch: Arch) -> nn.Module:
        """A standalone model of ``arch`` with this supernet's weights (and BN statistics)."""
        net = self.space.build(arch)
        net.load_state_dict(self.sub_state_dict(net.state_dict()), strict=True)
        return net.train(self.training)

    @torch.no_grad()
    def sub_state_dict(self, target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        owners = {}
        for mname, module in self.named_modules():
            for pname, _ in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
                owners[f"{mname}.{pname}" if mname else pname] = (module, pname)
        mine = self.state_dict()
        out = {}
        for key, want in target.items():
            if key not in mine:
                raise KeyError(f"supernet has no tensor {key!r} for the standalone model")
            module, pname = owners[key]
            hook = getattr(module, "extract_tensor", None)
            sliced = hook(pname, mine[key], tuple(want.shape)) if hook else None
            out[key] = (sliced if sliced is not None else slice_to(mine[key], tuple(want.shape))).clone()
        return out


def slice_to(t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Prefix slice to ``shape``; the last two dims of a 4D conv weight are centre-cropped."""
    if t.dim() == 0:
        return t
    if t.dim() != len(shape) or any(s > m for s, m in zip(shape, t.shape)):
        raise ValueError(f"cannot slice {tuple(t.shape)} to {shape}")
    if t.dim() == 4:
        from nas.elastic.ops import centre

        return centre(t[: shape[0], : shape[1]], shape[2])
    return t[tuple(slice(0, s) for s in shape)]
