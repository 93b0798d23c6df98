"""Faithful to the original ElasticViT code (microsoft/Moonlit): its LayerNorm over tokens and
channels jointly, in the standalone net and the supernet."""
import numpy as np
import torch
import torch.nn.functional as F

from conftest import scramble
from nas.nets.elasticvit import TokenChannelLayerNorm
from nas.spaces import get_space


def _joint_ln_by_hand(x, w, b, eps=1e-5):
    # LNSuper: per sample, mean and (biased) variance over all N * C values, then a per-channel affine
    mu = x.mean(dim=(1, 2), keepdim=True)
    var = ((x - mu) ** 2).mean(dim=(1, 2), keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def test_layer_norm_is_joint_over_tokens_and_channels():
    torch.manual_seed(0)
    ln = TokenChannelLayerNorm(8)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.uniform_(-0.5, 0.5)
    x = torch.randn(3, 5, 8) * torch.linspace(0.2, 3, 5)[:, None] + torch.arange(5.0)[:, None]  # tokens differ in scale
    torch.testing.assert_close(ln(x), _joint_ln_by_hand(x, ln.weight, ln.bias), rtol=0, atol=1e-6)
    per_token = F.layer_norm(x, (8,), ln.weight, ln.bias)
    assert (ln(x) - per_token).abs().max() > 0.1  # the per-token norm it replaces is another function
    # the supernet's use: a narrower input reads the prefix of the affine
    torch.testing.assert_close(ln(x[..., :6]), _joint_ln_by_hand(x[..., :6], ln.weight[:6], ln.bias[:6]), rtol=0, atol=1e-6)


def test_every_transformer_norm_of_net_and_supernet_is_the_joint_one():
    space = get_space("elasticvit-tiny")
    torch.manual_seed(0)
    sup = space.build_supernet().eval()
    scramble(sup)
    arch = space.arch(space.sample(np.random.default_rng(3), 1)[0])
    sub = sup.extract(arch)
    for net in (sup, sub):
        norms = [m for n, m in net.named_modules() if n.endswith(".norm")]
        assert norms and all(type(m) is TokenChannelLayerNorm for m in norms)
    # a hook on one attention norm of the extracted net: its output is the joint norm of its input
    seen = {}
    norm = next(m for n, m in sub.named_modules() if n.endswith(".norm"))
    norm.register_forward_hook(lambda _m, inp, out: seen.update(x=inp[0], y=out))
    res = max(space.resolutions)
    with torch.no_grad():
        sub(torch.randn(2, 3, res, res))
    torch.testing.assert_close(seen["y"], _joint_ln_by_hand(seen["x"], norm.weight, norm.bias), rtol=0, atol=1e-5)
