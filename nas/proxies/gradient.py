"""The zero-cost proxies of Abdelfattah et al. ("Zero-Cost Proxies for Lightweight NAS", ICLR 2021),
as their reference code (SamsungLabs/zero-cost-nas) computes them on one labelled mini-batch.

Shared conventions: the model is in train mode (BatchNorm uses batch statistics), the loss is
cross-entropy, and per-layer scores are summed over every Conv/Linear weight. ``synflow`` is
data-free: |W| network, float64, all-ones input of the batch's image shape, BatchNorm in eval
mode -- a freshly initialised BN is then the identity (up to 1/sqrt(1 + 1e-5)), which stands in
for the reference's rebuilding of the network without BN (``bn=False``) on any model.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from nas.proxies import PROXIES
from nas.proxies.common import ProxyData, weighted_layers


def _loss(model: nn.Module, data: ProxyData) -> torch.Tensor:
    model.train()
    return F.cross_entropy(model(data.images), data.labels)


@PROXIES.register("grad_norm")
def grad_norm(model: nn.Module, data: ProxyData) -> float:
    """Sum over Conv/Linear layers of the L2 norm of the loss gradient w.r.t. the layer's weight."""
    model.zero_grad()
    _loss(model, data).backward()
    return float(sum(m.weight.grad.norm() for m in weighted_layers(model) if m.weight.grad is not None))


@PROXIES.register("snip")
def snip(model: nn.Module, data: ProxyData) -> float:
    """SNIP saliency: sum |dL/dW * W| (the gradient w.r.t. a multiplicative mask at 1)."""
    model.zero_grad()
    _loss(model, data).backward()
    return float(sum((m.weight.grad * m.weight.detach()).abs().sum() for m in weighted_layers(model) if m.weight.grad is not None))


@PROXIES.register("grasp")
def grasp(model: nn.Module, data: ProxyData) -> float:
    """GraSP: sum -W * (H g), with g the loss gradient and H the Hessian (double backprop, T = 1)."""
    weights = [m.weight for m in weighted_layers(model)]
    g = torch.autograd.grad(_loss(model, data), weights, allow_unused=True)
    g_f = torch.autograd.grad(_loss(model, data), weights, create_graph=True, allow_unused=True)
    z = sum((a.detach() * b).sum() for a, b in zip(g, g_f) if a is not None and b is not None)
    if not isinstance(z, torch.Tensor) or not z.requires_grad:  # no second-order path: GraSP is undefined
        raise ValueError("grasp: the loss gradient does not depend on the weights (no Hessian-gradient product)")
    hg = torch.autograd.grad(z, weights, allow_unused=True)
    return float(sum((-w.detach() * h).sum() for w, h in zip(weights, hg) if h is not None))


@PROXIES.register("fisher")
def fisher(model: nn.Module, data: ProxyData) -> float:
    """Channel-level Fisher information, weighted as the reference weights it: for every
    Conv/Linear output a, a channel's value 1/2 * mean over the images of (sum over positions of
    a * dL/da)^2 is copied onto every weight of that channel (the reference broadcasts it over
    ``weight.shape[1:]`` so that it can sum per-weight arrays), so it counts in_ch/groups * k * k
    times for a convolution and in_features times for a linear layer. Convolutions put channels
    on axis 1; linear layers on the last axis, with any windows or tokens before it (As-ViT's
    windowed attention runs on (B * windows, tokens, C)) folded into the image's positions (the
    reference, written for (B, C) linear outputs, would take the token axis for channels)."""
    acts: list[tuple[torch.Tensor, bool, int]] = []

    def keep(m, _inp, out):
        out.retain_grad()
        acts.append((out, isinstance(m, nn.Linear), m.weight[0].numel()))

    handles = [m.register_forward_hook(keep) for m in weighted_layers(model)]
    try:
        model.zero_grad()
        _loss(model, data).backward()
    finally:
        for h in handles:
            h.remove()
    b = data.images.shape[0]
    total = 0.0
    for a, linear, weights_per_channel in acts:
        if a.grad is None:
            continue
        prod = (a * a.grad).detach()
        per = prod.reshape(b, -1, prod.shape[-1]).sum(1) if linear else prod.reshape(b, prod.shape[1], -1).sum(2)
        total += weights_per_channel * float((0.5 * per.pow(2).mean(0)).sum())
    return total


@PROXIES.register("jacob_cov")
def jacob_cov(model: nn.Module, data: ProxyData) -> float:
    """Correlation of per-input Jacobians: J_n = d sum(output_n) / d x_n (one backward of the batch
    sum); with eigenvalues l of corrcoef(J), score = -sum(log(l + 1e-5) + 1 / (l + 1e-5))."""
    model.train()
    x = data.images.clone().requires_grad_(True)
    model(x).sum().backward()
    j = x.grad.reshape(len(x), -1).to(torch.float64)
    corr = torch.corrcoef(j)
    if not torch.isfinite(corr).all():
        return float("-inf")  # constant Jacobians: the network ignores its input (e.g. a cut NB201 cell)
    ev = torch.linalg.eigvalsh(corr)
    k = 1e-5
    return float(-(torch.log(ev + k) + 1.0 / (ev + k)).sum())


@PROXIES.register("synflow")
def synflow(model: nn.Module, data: ProxyData) -> float:
    """SynFlow: with every parameter replaced by its absolute value, R = sum of the outputs on an
    all-ones input (batch 1, float64); score = sum over Conv/Linear weights of |W * dR/dW|."""
    model = model.double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    model.zero_grad()
    x = torch.ones((1, *data.images.shape[1:]), dtype=torch.float64)
    model(x).sum().backward()
    return float(sum((m.weight.detach() * m.weight.grad).abs().sum() for m in weighted_layers(model) if m.weight.grad is not None))
