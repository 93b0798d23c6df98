"""Patch-token mixup for ViT-ResNAS training (the original's SwitchTokenMix, simplified).

With probability 1/2 per batch, every image takes a random share of its final-stage patch
regions (the input split into the last token grid, one region per patch token) from its
neighbour in the batch. The cls token then learns the area-weighted mix of the two labels and
the patch head learns each region's own label; the loss is CE(cls) + mean CE(patch tokens). The
original also shifts the region grid; here regions are aligned to the tokens.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

SWITCH_PROB = 0.5  # the original's switch_prob


def mix(x: torch.Tensor, y: torch.Tensor, grid: int, classes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images, cls target probabilities (B, classes), patch labels (B, grid * grid)); uses
    torch's global generator (seeded per step by the trainer)."""
    B, _, H, W = x.shape
    if H % grid or W % grid:
        raise ValueError(f"a {H}x{W} input does not split into {grid}x{grid} patch regions")
    onehot = F.one_hot(y, classes).float()
    labels = y[:, None].expand(B, grid * grid)
    if float(torch.rand(())) >= SWITCH_PROB:
        return x, onehot, labels
    partner = torch.roll(torch.arange(B, device=x.device), 1)
    share = torch.rand(B, 1, device=x.device)
    take = torch.rand(B, grid * grid, device=x.device) < share  # (B, regions): from the partner
    pixels = take.view(B, 1, grid, grid).repeat_interleave(H // grid, 2).repeat_interleave(W // grid, 3)
    frac = take.float().mean(1, keepdim=True)
    return (torch.where(pixels, x[partner], x), (1 - frac) * onehot + frac * onehot[partner],
            torch.where(take, y[partner][:, None], labels))


def loss(cls_logits: torch.Tensor, patch_logits: torch.Tensor, target: torch.Tensor, labels: torch.Tensor,
         smoothing: float) -> torch.Tensor:
    """Per-example CE(cls, mixed target) + mean CE over patch tokens, with label smoothing."""
    classes = cls_logits.shape[-1]
    target = target * (1 - smoothing) + smoothing / classes
    cls = -(target * F.log_softmax(cls_logits, -1)).sum(-1)
    patch = F.cross_entropy(patch_logits.flatten(0, 1), labels.flatten(), label_smoothing=smoothing,
                            reduction="none").view(labels.shape).mean(1)
    return cls + patch
