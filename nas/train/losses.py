"""Distillation losses for supernet training."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Cross-entropy to a soft target distribution (in-place distillation, teacher KD)."""
    return -(target_probs * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def _f_divergence(logits: torch.Tensor, p: torch.Tensor, alpha: float, iw_clip: float):
    """D_alpha(p || q) for q = softmax(logits), and a surrogate whose gradient is the
    divergence's, with importance weights p/q clipped (AlphaNet, Wang et al., ICML 2021)."""
    q = F.softmax(logits, dim=-1).detach()
    log_q = F.log_softmax(logits, dim=-1)
    ratio = p / q
    if abs(alpha) < 1e-3:  # KL(q || p)
        r = ratio.clamp(0, iw_clip)
        f, base, rho = -r.log(), 0.0, r.log() - 1.0
    elif abs(alpha - 1.0) < 1e-3:  # KL(p || q)
        f, base, rho = ratio * ratio.log(), 0.0, ratio
    else:
        w = ratio.pow(alpha).clamp(0, iw_clip)
        base = 1.0 / alpha / (alpha - 1.0)
        f, rho = w * base, w / alpha + base
    value = (q * (f - base)).sum(-1)
    surrogate = -(q * rho * log_q).sum(-1)
    return value, surrogate


def alpha_divergence(logits: torch.Tensor, target_probs: torch.Tensor, alpha_min: float = -1.0,
                     alpha_max: float = 1.0, iw_clip: float = 5.0) -> torch.Tensor:
    """AlphaNet's adaptive alpha-divergence: per sample, the larger of D_{alpha_min} and
    D_{alpha_max}, so the student is pushed on whichever side (mode-covering or mode-seeking) it
    is worse. ElasticViT uses it for the min subnet (alpha in [-1, 1], clip 5)."""
    v_lo, g_lo = _f_divergence(logits, target_probs, alpha_min, iw_clip)
    v_hi, g_hi = _f_divergence(logits, target_probs, alpha_max, iw_clip)
    pick = (v_lo > v_hi).float()
    return (pick * g_lo + (1 - pick) * g_hi).mean()
