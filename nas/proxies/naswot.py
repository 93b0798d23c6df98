"""NASWOT (Mellor et al., "Neural Architecture Search without Training", ICML 2021).

Definition: run one mini-batch through the untrained network; for every rectified unit, the
binary code c_i(x) = [pre-activation > 0]. With K_H[a, b] = number of units on which inputs a and
b agree (N_A minus the Hamming distance of their codes), the score is log |det K_H|. Higher means
the network separates the inputs into more distinct linear regions at initialisation.

For hybrid nets we take codes at the input of every activation module (ReLU, Hardswish, GELU,
...): for Hardswish and GELU, x > 0 is the boundary of the positive linear piece, the analogue of
ReLU's code. Softmax and sigmoid gates are not rectifiers and are skipped.

Deviation: BatchNorm runs in eval mode (Mellor et al. run train mode), so that an image's code
depends on that image and the weights only, not on the rest of the batch.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from nas.proxies import PROXIES
from nas.proxies.common import ProxyData, rectifiers


@PROXIES.register("naswot")
def naswot(model: nn.Module, data: ProxyData) -> float:
    images = data.images
    n = images.shape[0]
    k = torch.zeros(n, n, dtype=torch.float64)

    def hook(_m, inputs, _out):
        c = (inputs[0].detach().reshape(n, -1) > 0).to(torch.float32)  # (n, units)
        ones = c.sum(1, dtype=torch.float64)
        # agreements = units - hamming = c c^T + (1-c)(1-c)^T, with one matmul instead of two
        k.add_(2 * (c @ c.t()).to(torch.float64) - ones[:, None] - ones[None, :] + c.shape[1])

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, rectifiers())]
    try:
        model.eval()  # BN in eval mode keeps the codes a property of the weights, not of the batch
        with torch.inference_mode():
            model(images)
    finally:
        for h in handles:
            h.remove()
    sign, logdet = torch.linalg.slogdet(k)
    return float(logdet) if sign > 0 else float("-inf")
