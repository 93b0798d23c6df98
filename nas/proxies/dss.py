"""TF-TAS's DSS-indicator (Zhou et al., "Training-free Transformer Architecture Search", CVPR
2022; decemberzhou/TF_TAS ``lib/training_free/indicators/dss.py``), a ViT-specific proxy.

The network is linearised as for SynFlow (every parameter -> |W|, all-ones input, float64, norms
as at initialisation) and R = sum of the outputs is back-propagated. For the linear layers of
multi-head self-attention (qkv and the output projection) the score is *synaptic diversity*,
||dR/dW||_* ||W||_* (nuclear norms); for every other Conv/Linear layer (MLPs, patch embedding,
head, MBConvs of hybrids) *synaptic saliency*, sum |dR/dW * W|. DSS is the sum.
Attention layers are the Linear layers inside a module whose class name contains "Attention"
(our nets and timm's) or inside ``nn.MultiheadAttention``.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from nas.proxies import PROXIES
from nas.proxies.common import ProxyData, weighted_layers


def attention_linears(model: nn.Module) -> set[int]:
    ids: set[int] = set()
    for m in model.modules():
        if "Attention" in type(m).__name__ or isinstance(m, nn.MultiheadAttention):
            ids.update(id(x) for x in m.modules() if isinstance(x, nn.Linear))
    return ids


@PROXIES.register("dss")
def dss(model: nn.Module, data: ProxyData) -> float:
    model = model.double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    model.zero_grad()
    model(torch.ones((1, *data.images.shape[1:]), dtype=torch.float64)).sum().backward()
    attn = attention_linears(model)
    total = 0.0
    for m in weighted_layers(model):
        w, g = m.weight, m.weight.grad
        if g is None:
            continue
        if id(m) in attn:
            total += float(torch.linalg.matrix_norm(g, "nuc") * torch.linalg.matrix_norm(w.detach(), "nuc"))
        else:
            total += float((w.detach() * g).abs().sum())
    return total
