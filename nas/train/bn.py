"""Evaluating a subnet of a supernet: recalibrate BatchNorm statistics, then measure accuracy."""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Reset every BatchNorm's running statistics and re-estimate them as the plain average over
    ``batches`` (momentum None), with the model in train mode; the model is left in eval mode.
    Shared supernet statistics belong to whichever subnet ran last, so every evaluation does this."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:  # LayerNorm-only networks (MPCViT): there is nothing to re-estimate, skip the passes
        model.eval()
        return
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for x in batches:
        model(x)
    for m, mom in zip(bns, saved):
        m.momentum = mom
    model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, float]:
    """(top-1 accuracy, mean cross-entropy) of ``model`` in eval mode."""
    model.eval()
    correct = total = 0
    loss = 0.0
    for x, y in batches:
        logits = model(x)
        correct += int((logits.argmax(-1) == y).sum())
        loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        total += len(y)
    return correct / max(total, 1), loss / max(total, 1)
