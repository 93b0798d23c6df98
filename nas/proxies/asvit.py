"""As-ViT's two complexity measures (Chen et al., "Auto-scaling Vision Transformers without
Training", ICLR 2022; VITA-Group/AsViT ``lib/procedures``), usable on any model.

* ``ntk`` -- trainability, lower is better. Model in train mode, norms kept. For every image n of
  the batch, J_n = d sum(f(x_n)) / d theta over every parameter whose name contains "weight",
  f the pooled features in front of the classifier (As-ViT: the pooled tokens before the final
  LayerNorm). Theta = J J^T; score = lambda_max / lambda_min. Per-sample gradients come from
  one vectorised pass (``torch.func.vmap``) when samples are independent. A singular kernel (a network that ignores its input) scores +inf.
* ``length_distortion`` -- expressivity, higher is better. All norms off (LayerNorm -> Identity,
  BatchNorm in eval mode = identity at initialisation). A unit circle x(t) = U [cos t, sin t] in
  a random 2-D plane of the input space (U orthonormal, seeded) is sampled at 10 points
  t = linspace(0, 2 pi, 10) (As-ViT duplicates the end point; so do we); score = sum over the
  points of ||d f(x(t)) / dt||_2, the output curve's Riemann length without dt. As-ViT takes one
  backward per output coordinate; one forward-mode JVP per point gives the same derivative.

As-ViT averages both over 5 re-initialised copies; a caller that wants that scores 5 seeds
(``ProxyScorer(..., repeats=5)``, the As-ViT strategy does).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from nas.proxies import PROXIES
from nas.proxies.common import ProxyData, feature_jacobian, norms_off, pooled_features

CURVE_POINTS = 10


@PROXIES.register("ntk")
def ntk(model: nn.Module, data: ProxyData) -> float:
    model.train()
    names = [name for name, p in model.named_parameters() if "weight" in name and p.requires_grad]
    j = feature_jacobian(model, data.images, names).to(torch.float64)
    ev = torch.linalg.eigvalsh(j @ j.t())
    if not torch.isfinite(ev).all():
        raise ValueError("NTK has non-finite entries")
    if ev[0] <= 0:
        return math.inf
    return float((ev[-1] / ev[0]).detach())


@PROXIES.register("length_distortion")
def length_distortion(model: nn.Module, data: ProxyData) -> float:
    model.train()
    norms_off(model)
    shape = data.images.shape[1:]
    u, _ = torch.linalg.qr(torch.randn(math.prod(shape), 2, generator=data.generator(11), dtype=torch.float64))
    u = u.to(torch.float32)
    t = torch.linspace(0.0, 2 * math.pi, CURVE_POINTS)

    def curve(theta: torch.Tensor) -> torch.Tensor:  # (P,) angles -> (P, D) features
        x = (u @ torch.stack([theta.cos(), theta.sin()])).t().reshape(len(theta), *shape)
        return pooled_features(model, x)

    try:
        _, speed = torch.func.jvp(curve, (t,), (torch.ones_like(t),))
    except (RuntimeError, NotImplementedError):  # an op without forward-mode AD: double-backward JVP
        _, speed = torch.autograd.functional.jvp(curve, t, torch.ones_like(t))
    return float(speed.detach().norm(dim=1).sum())
