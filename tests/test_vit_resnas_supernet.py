"""The ViT-ResNAS supernet: masked multi-architecture passes, extraction, warm-up re-sorting, the
multi-arch sampler and one tiny Fashion-MNIST run through the trainer."""
import copy
import csv

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nas.data import FASHION_MNIST_DIR
from nas.spaces import get_space

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def space():
    return get_space("vit-resnas-micro")


@pytest.fixture(scope="module")
def supernet(space):
    torch.manual_seed(0)
    return space.build_supernet()


def _archs(space):
    return [space.smallest(), space.largest()] + [space.arch(g) for g in space.sample(np.random.default_rng(3), 3)]


def test_extract_equals_the_masked_supernet(space, supernet):
    x = torch.randn(3, 3, 28, 28)
    for arch in _archs(space):
        supernet.eval().set_active(arch)
        with torch.no_grad():
            assert torch.allclose(supernet(x), supernet.extract(arch).eval()(x), atol=1e-5)


def test_k_subnets_in_one_pass_are_interleaved(space, supernet):
    archs = _archs(space)[:3]
    x = torch.randn(7, 3, 32, 32)
    supernet.eval().set_active_many(archs)
    with torch.no_grad():
        y = supernet(x)
        for i, arch in enumerate(archs):  # example b runs subnet b % k
            assert torch.allclose(y[i::3], supernet.extract(arch).eval()(x[i::3]), atol=1e-5)


def test_masked_channels_get_no_gradient_from_the_subnets_that_mask_them(space, supernet):
    net = copy.deepcopy(supernet).train()
    small, large = space.smallest(), space.largest()
    net.set_active_many([small, large])
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))

    def grads(part):  # gradient of the batch-mean loss restricted to one subnet's examples
        net.zero_grad()
        per = F.cross_entropy(net(x), y, reduction="none")
        (per[part::2].sum() / len(x)).backward()
        return {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}  # not the patch head

    g_small, g_large = grads(0), grads(1)
    vs = space.values(space.genomes([small]))
    block = "stages.2.blocks.0"
    e3, mlp, heads = int(vs[2]["embed"][0]), int(vs[2]["mlp"][0, 0]), int(vs[2]["heads"][0, 0])
    d = space.stages[2].head_dims[0]
    a_max = space.stages[2].heads[-1] * d
    masked = {  # parameter -> the slice the small subnet masks
        f"{block}.fc1.weight": (slice(mlp, None),), f"{block}.fc2.weight": (slice(None), slice(mlp, None)),
        f"{block}.qkv.weight": (slice(2 * a_max + heads * d, None),),  # V rows of the masked heads
        f"{block}.proj.weight": (slice(None), slice(heads * d, None)),
        "head.weight": (slice(None), slice(e3, None)), "stages.2.reduce.pos_embed": (..., slice(e3, None)),
    }
    for name, idx in masked.items():
        assert g_small[name][idx].abs().max() == 0, name  # exactly zero, not merely small
        assert g_large[name][idx].abs().max() > 0, name  # the other subnet does train them
    assert g_small[f"{block}.fc1.weight"][:mlp].abs().max() > 0  # and the small one trains its own


def test_one_subnet_step_equals_a_plain_step_of_the_extracted_subnet(space, supernet):
    arch = space.arch(space.sample(np.random.default_rng(5), 1)[0])
    net = copy.deepcopy(supernet).train()
    net.set_active_many([arch])
    sub = net.extract(arch).train()
    x, y = torch.randn(6, 3, 32, 32), torch.randint(0, 10, (6,))
    # SGD, not Adam: Adam's first step is lr * sign(grad), which turns the analytically zero
    # gradient of the K bias (softmax is shift-invariant) into +-lr noise in both models alike
    opts = [torch.optim.SGD(m.parameters(), lr=0.5, momentum=0.9, weight_decay=0.05) for m in (net, sub)]
    losses = []
    for m, opt in zip((net, sub), opts):
        loss = F.cross_entropy(m(x), y)
        loss.backward()
        losses.append(float(loss.detach()))
    for opt in opts:
        opt.step()
    assert abs(losses[0] - losses[1]) < 1e-5
    after = net.extract(arch).state_dict()
    for k, v in sub.state_dict().items():
        assert torch.allclose(after[k], v, atol=1e-5), k
    assert not torch.allclose(after["head.weight"], supernet.extract(arch).state_dict()["head.weight"])  # it moved


def test_rewiring_sorts_by_importance_without_changing_the_function(space, supernet):
    net = copy.deepcopy(supernet).eval()
    block = net.stages[1].blocks["0"]
    with torch.no_grad():
        block.fc1.weight.mul_(torch.rand(block.fc1.weight.shape[0], 1) * 2)  # make an order to restore
    opt = torch.optim.AdamW(net.parameters())
    F.cross_entropy(net(torch.randn(2, 3, 32, 32)), torch.tensor([1, 2])).backward()
    opt.step()
    ema = copy.deepcopy(net)
    net.set_active(space.largest())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = net(x)
    moment = opt.state[block.fc1.weight]["exp_avg"].clone()
    head, unit = block.importance_order()
    assert not torch.equal(unit, torch.arange(len(unit)))
    net.rewire(opt, follow=[ema])
    with torch.no_grad():
        assert torch.allclose(net(x), before, atol=1e-5)
        ema.set_active(space.largest())
        assert torch.allclose(ema(x), before, atol=1e-5)
    assert torch.equal(block.importance_order()[1], torch.arange(len(unit)))
    assert torch.equal(opt.state[block.fc1.weight]["exp_avg"], moment[unit])


def test_multi_arch_sampler_warm_up_and_balanced_choices(space):
    from nas.train.samplers import make_sampler

    s = make_sampler("multi-arch", space, np.random.default_rng(0), 3)
    assert s.warmup == 0 and not s.rewire_after(0)  # the micro space trains every choice from the start
    g = space.genomes([p.arch for p in s.sample(0)])
    assert len(set(g[:, space.g_embed[0]])) == 3  # 3 choices, 3 subnets: a permutation, all distinct
    tiny = get_space("vit-resnas-tiny")  # warm-up over 30 epochs, as the original
    t = make_sampler("multi-arch", tiny, np.random.default_rng(0), 8)
    assert all(p.arch == tiny.largest() for p in t.sample(0))  # epoch 0: the largest choices only
    mlp = tiny.g_mlp[0][0]  # 7 MLP choices: 1 + floor(15 * 6 / 30) = 4 enabled at epoch 15
    assert set(tiny.genomes([p.arch for p in t.sample(15)])[:, mlp]) == {3, 4, 5, 6}
    assert t.rewire_after(30) and not t.rewire_after(31)


needs_fmnist = pytest.mark.skipif(not FASHION_MNIST_DIR.exists(),
                                  reason=f"Fashion-MNIST not installed at {FASHION_MNIST_DIR} (apt-get install dataset-fashion-mnist)")


@needs_fmnist
def test_multi_arch_training_on_fashion_mnist(tmp_path):
    from nas.train.config import TrainConfig
    from nas.train.trainer import Trainer

    cfg = TrainConfig(space="vit-resnas-micro", data="fashion-mnist", sampler="multi-arch", subnets=2, steps=20,
                      batch_size=32, lr=3e-3, heldout=256, eval_random=0, bn_batches=1, checkpoint_every=20,
                      warmup_steps=2)
    (tmp_path / "run").mkdir()
    result = Trainer(cfg, tmp_path / "run", progress=False).run()
    assert result["step"] == 20 and result["skipped_steps"] == 0
    steps = list(csv.DictReader((tmp_path / "run" / "steps.csv").open()))
    assert len(steps) == 40 and {r["role"] for r in steps} == {"multi"}  # 2 subnets per step, one pass
    assert len({r["arch_id"] for r in steps}) > 2  # a new pair of subnets every step
    first = np.mean([float(r["loss"]) for r in steps[:8]])
    last = np.mean([float(r["loss"]) for r in steps[-8:]])
    assert last < first - 0.2  # it learns (from ln 10 = 2.30)
    acc = {r["role"]: r["accuracy"] for r in result["evaluation"]}
    assert min(acc.values()) > 0.2  # 10 classes: chance is 0.1


def test_patch_token_mixup_targets_follow_the_pixels():
    from nas.train import token_mix

    torch.manual_seed(1)
    x = torch.stack([torch.full((3, 32, 32), float(i)) for i in range(4)])  # image i is all i
    y = torch.tensor([0, 1, 2, 3])
    for _ in range(20):  # until the 1/2 switch fires
        xm, target, labels = token_mix.mix(x, y, 2, 10)
        if not torch.equal(xm, x):
            break
    regions = xm.unfold(2, 16, 16).unfold(3, 16, 16)[:, 0].reshape(4, 4, -1)  # (B, 2 x 2 regions, pixels)
    assert torch.equal(regions.amin(-1), regions.amax(-1))  # whole regions move, never parts
    assert torch.equal(regions[..., 0].long(), labels)  # each patch label is the label of its pixels
    share = (labels != y[:, None]).float().mean(1)
    assert torch.allclose(target[torch.arange(4), y], 1 - share)  # cls target: area-weighted labels
    assert torch.allclose(target.sum(1), torch.ones(4))
    per = token_mix.loss(torch.zeros(4, 10), torch.zeros(4, 4, 10), target, labels, 0.0)
    assert torch.allclose(per, torch.full((4,), 2 * np.log(10)), atol=1e-5)


def test_supernet_patch_head_extracts_into_a_model_with_one(space, supernet):
    arch = space.largest()
    supernet.eval().set_active(arch)
    net = space.build(arch, patch_head=True).eval()
    net.load_state_dict(supernet.sub_state_dict(net.state_dict()))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        cls, patches = supernet(x, patches=True)
        cls2, patches2 = net.forward_with_patches(x)
    assert torch.allclose(cls, cls2, atol=1e-5) and torch.allclose(patches, patches2, atol=1e-5)


def test_drop_path_from_the_space_rises_over_the_blocks(tmp_path):
    from nas.resources import data_dir

    path = tmp_path / "dp.toml"
    path.write_text((data_dir("spaces") / "vit-resnas-micro.toml").read_text()
                    .replace('name = "vit-resnas-micro"', 'name = "dp"').replace("warmup_epochs = 0", "warmup_epochs = 0\ndrop_path = 0.4"))
    net = get_space(path).build_supernet()
    rates = [b.drop_path for st in net.stages for b in st.blocks.values()]
    assert rates[0] == 0 and rates[-1] == pytest.approx(0.4) and rates == sorted(rates)
    x = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(net.train()(x), net(x))  # stochastic depth while training
        assert torch.equal(net.eval()(x), net(x))
    assert get_space("vit-resnas-tiny").train_recipe["drop_path"] == 0.2  # the original's --drop-path


def test_multi_arch_needs_a_masked_supernet_and_mixup_needs_multi_arch(tmp_path):
    from conftest import nas_cli

    r = nas_cli("train", "--space", "elasticvit-tiny", "--data", "fashion-mnist", "--sampler", "multi-arch",
                "--steps", "1", "--out", str(tmp_path / "a"))
    if "not installed" in r.stderr or "does not exist" in r.stderr:
        pytest.skip("Fashion-MNIST not installed")
    assert r.returncode == 2 and "needs a masked supernet (the vit-resnas family)" in r.stderr
    r = nas_cli("train", "--space", "vit-resnas-micro", "--data", "fashion-mnist", "--patch-mixup", "--steps", "1",
                "--out", str(tmp_path / "b"))
    assert r.returncode == 2 and "--patch-mixup trains ViT-ResNAS's patch head: it needs --sampler multi-arch" in r.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # nothing half-written
