"""Weight sharing: a subnet of the supernet computes exactly what its extracted model computes."""
import numpy as np
import pytest
import torch

from nas.elastic.ops import ElasticBatchNorm2d
from conftest import scramble
from nas.spaces import get_space


def _scrambled_supernet(name):
    """A supernet whose every weight and BN statistic is random and O(1), so that a wrong slice
    (a prefix instead of a segment, a wrong crop, a wrong relative-position row) shows."""
    space = get_space(name)
    torch.manual_seed(0)
    net = space.build_supernet().eval()
    scramble(net)
    return space, net


@pytest.mark.parametrize("name, n", [("elasticvit-tiny", 12), ("elasticvit", 2)])
def test_extract_equals_set_active_and_parameters_match(name, n):
    space, net = _scrambled_supernet(name)
    archs = [space.smallest(), space.largest()] + [space.arch(g) for g in space.sample(np.random.default_rng(1), n)]
    if name == "elasticvit":
        archs += [space.presets()[p] for p in ("elastic_T2", "elastic_L1.5")]
    params = space.cost(space.genomes(archs))["params"]
    res = max(space.resolutions)
    x = torch.randn(2 if name == "elasticvit-tiny" else 1, 3, res, res)
    for arch, p in zip(archs, params):
        net.set_active(arch)
        with torch.no_grad():
            y_super = net(x)
            sub = net.extract(arch)
            y_sub = sub(x)
        assert y_super.abs().max() > 0.05  # outputs are not vanishingly small
        torch.testing.assert_close(y_sub, y_super, rtol=0, atol=1e-5)
        assert sum(t.numel() for t in sub.parameters()) == p
        assert not sub.training


def test_subnets_differ_and_share_weights():
    space, net = _scrambled_supernet("elasticvit-tiny")
    x = torch.randn(2, 3, 48, 48)
    a, b = space.smallest(), space.largest()
    net.set_active(a)
    ya = net(x)
    net.set_active(b)
    yb = net(x)
    assert not torch.allclose(ya, yb)
    with torch.no_grad():  # a weight the smallest subnet uses: both subnets see the change
        net.blocks[0][0].dw[0].weight[0].add_(1.0)
    net.set_active(a)
    assert not torch.allclose(net(x), ya)


def test_kernel_centre_crop_and_bn_prefix_updates():
    space, net = _scrambled_supernet("elasticvit-tiny")
    arch = space.smallest()
    sub = net.extract(arch)
    big = net.blocks[1][0].dw[0].weight  # 5x5 kernels in the supernet
    small = sub.blocks[1][0].dw[0].weight
    if small.shape[-1] == 3:
        torch.testing.assert_close(small, big[: small.shape[0], :, 1:4, 1:4])
    bn = ElasticBatchNorm2d(8)
    before = bn.running_mean.clone()
    bn.train()(torch.randn(4, 5, 3, 3) + 3.0)
    assert torch.all(bn.running_mean[:5] != before[:5]) and torch.equal(bn.running_mean[5:], before[5:])


def test_weight_sharing_reaches_every_parameter():
    space = get_space("elasticvit-tiny")
    net = space.build_supernet().train()
    net.set_active(space.largest())
    net(torch.randn(2, 3, 64, 64)).sum().backward()
    unused = [n for n, p in net.named_parameters() if p.grad is None]
    assert unused == []  # the largest subnet trains every weight of the supernet
