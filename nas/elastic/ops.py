"""Elastic leaf layers. Each holds the weights of its largest configuration; a parent module
sets ``active_out`` (and ``active_kernel`` for depthwise convs) before the forward pass, and
the input width comes from the tensor. Slices are prefixes, except kernels (centre crop, as
ElasticViT's MBConv takes the centre 3x3 of a 5x5)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def centre(w: torch.Tensor, k: int) -> torch.Tensor:
    """The centre k x k of a (..., K, K) kernel."""
    K = w.shape[-1]
    if k == K:
        return w
    o = (K - k) // 2
    return w[..., o:o + k, o:o + k]


class ElasticConv2d(nn.Conv2d):
    """Dense or depthwise (``depthwise=True``: out = in channels) convolution."""

    def __init__(self, max_in: int, max_out: int, max_kernel: int = 1, stride: int = 1, bias: bool = False,
                 depthwise: bool = False):
        super().__init__(max_in, max_out, max_kernel, stride, max_kernel // 2,
                         groups=max_in if depthwise else 1, bias=bias)
        self.depthwise = depthwise
        self.active_out = max_out
        self.active_kernel = max_kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cin, k = x.shape[1], self.active_kernel
        if self.depthwise:
            w, b, groups = self.weight[:cin], (self.bias[:cin] if self.bias is not None else None), cin
        else:
            w = self.weight[: self.active_out, :cin]
            b, groups = (self.bias[: self.active_out] if self.bias is not None else None), 1
        return F.conv2d(x, centre(w, k), b, self.stride, k // 2, 1, groups)


class ElasticLinear(nn.Linear):
    def __init__(self, max_in: int, max_out: int, bias: bool = True):
        super().__init__(max_in, max_out, bias)
        self.active_out = max_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.bias[: self.active_out] if self.bias is not None else None
        return F.linear(x, self.weight[: self.active_out, : x.shape[-1]], b)


class _ElasticBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the first C channels; running statistics are updated in place on the
    buffer prefix, so recalibrating a subnet touches only its own channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        else:
            factor = 0.0
        use_batch = self.training or not self.track_running_stats
        return F.batch_norm(x, self.running_mean[:c], self.running_var[:c], self.weight[:c], self.bias[:c],
                            use_batch, factor, self.eps)


class ElasticBatchNorm2d(_ElasticBatchNorm):
    def _check_input_dim(self, x):
        if x.dim() != 4:
            raise ValueError(f"expected 4D input, got {x.dim()}D")


class ElasticBatchNorm1d(_ElasticBatchNorm):
    def _check_input_dim(self, x):
        if x.dim() not in (2, 3):
            raise ValueError(f"expected 2D or 3D input, got {x.dim()}D")
