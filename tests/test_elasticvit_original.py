"""Faithful to the original ElasticViT code (microsoft/Moonlit): its LayerNorm over tokens and
channels jointly, its training recipe (sampler bounds, weight decay, defaults), and its
checkpoints, which load into our supernet and give the original model's logits."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import SHARED, nas_cli, scramble
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


def _respects(space, arch, floor) -> list[str]:
    """Where ``arch`` is below ``floor``: resolution, widths, depths, or an active layer's
    micro-choice below the floor's choice in that stage's first layer."""
    v, f = space.values(np.asarray([arch.genome])), space.values(np.asarray([floor.genome]))
    bad = [] if v["res"][0] >= f["res"][0] else ["res"]
    for b, blk in enumerate(space.blocks):
        bad += [f"{blk.name}.width"] if v["width"][0, b] < f["width"][0, b] else []
        bad += [f"{blk.name}.depth"] if v["depth"][0, b] < f["depth"][0, b] else []
        for m, a in v["micro"][b].items():
            if (a[0, : v["depth"][0, b]] < f["micro"][b][m][0, 0]).any():
                bad.append(f"{blk.name}.{m}")
    return bad


def test_complexity_sampler_draws_every_level_above_its_min_arch():
    from nas.train.samplers import ComplexityAware

    space = get_space("elasticvit")
    sampler = ComplexityAware(space, np.random.default_rng(0), 4)
    seen_res = set()
    for k, level in enumerate(sampler.levels):
        sampler.level = k
        floor = sampler.min_arch()
        for pick in sampler.level_picks(0):
            assert _respects(space, pick.arch, floor) == [], (level, space.to_encoding(pick.arch))
            macs = float(space.cost(np.asarray([pick.arch.genome]))["macs"][0]) / 1e6
            assert level <= macs <= level + sampler.window
            seen_res.add(space.input_resolution(pick.arch))
    # the bound binds: unbounded draws in the 300 M window mostly have a resolution below its floor (176)
    sampler.level = sampler.levels.index(300.0)
    floor = sampler.min_arch()
    g = space.sample(np.random.default_rng(1), 20000)
    macs = space.cost(g)["macs"] / 1e6
    inside = g[(macs >= 300) & (macs <= 320)]
    low_res = np.mean(space.values(inside)["res"] < space.values(np.asarray([floor.genome]))["res"][0])
    assert low_res > 0.3


def test_weight_decay_as_the_original():
    """Everything of 2+ dims is decayed (relative-position tables, the V depthwise conv), except
    the first conv and every MBConv; norms and biases are not."""
    from nas.train.trainer import _param_groups

    net = get_space("elasticvit-tiny").build_supernet()
    decay, rest = (set(map(id, g["params"])) for g in _param_groups(net, 0.05))
    names = {n: id(p) for n, p in net.named_parameters()}
    assert not decay & rest and decay | rest == set(names.values())
    for n, i in names.items():
        expected = (n.split(".")[-1] != "bias" and net.get_parameter(n).dim() > 1 and not n.startswith("first_conv")
                    and ".ds." not in n and not n.startswith(("blocks.0.", "blocks.1.", "blocks.2.")))
        assert (i in decay) == expected, n
    t = next(n for n in names if n.endswith("attention_bias"))
    v = next(n for n in names if n.endswith("dw_v.weight"))
    assert names[t] in decay and names[v] in decay


def test_recipe_defaults_are_the_originals_on_elasticvit_and_fast_on_tiny():
    from nas.train.config import TrainConfig

    full = TrainConfig(space="elasticvit", data="fashion-mnist", steps=1).resolved(get_space("elasticvit").train_recipe)
    assert (full.ema, full.agc, full.bn_batches, full.bn_batch, full.search_bn_batches) == (0.99985, 0.1, 129, 96, 65)
    tiny = TrainConfig(space="elasticvit-tiny", data="fashion-mnist", steps=1)
    fast = tiny.resolved(get_space("elasticvit-tiny").train_recipe)
    assert (fast.ema, fast.agc, fast.bn_batches, fast.bn_batch, fast.search_bn_batches) == (0.0, 0.0, 8, 128, 8)
    small = TrainConfig(space="elasticvit", data="fashion-mnist", steps=1, bn_batches=4).resolved(
        get_space("elasticvit").train_recipe)
    assert (small.bn_batches, small.search_bn_batches) == (4, 4)  # smaller only by flag
    one = TrainConfig(space="elasticvit-tiny", data="x", steps=1, teachers=("a:b",)).resolved()
    two = TrainConfig(space="elasticvit-tiny", data="x", steps=1, teachers=("a:b", "c:d")).resolved()
    assert (one.teacher_temperature, two.teacher_temperature) == (1.0, 0.2)  # as teacher_inference


FIXTURE = SHARED / "data" / "elasticvit-original-fixture"


@pytest.mark.skipif(not FIXTURE.exists(), reason="needs ../shared/data/elasticvit-original-fixture (the original's tensors)")
def test_original_checkpoint_converts_and_reproduces_the_originals_logits(tmp_path):
    """The original FusedSuperNet's tensors (fp16, the 355 keys elastic_T1 and elastic_S1 read,
    full supernet shapes) through `nas import-weights`, then the original model's logits."""
    import json

    from safetensors.torch import load_file

    from nas.train.checkpoint import read_checkpoint

    from nas.elastic.elasticvit_original import supernet_state
    from nas.errors import UserError

    space = get_space("elasticvit")
    with pytest.raises(UserError, match="lacks 292"):  # a partial file needs consent
        supernet_state(FIXTURE / "supernet_fp16.safetensors", space)
    out = tmp_path / "imported.safetensors"
    r = nas_cli("import-weights", "--from", "elasticvit-original", str(FIXTURE / "supernet_fp16.safetensors"),
                "--space", "elasticvit", "--out", str(out), "--allow-missing", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["missing"] == 292
    ck = read_checkpoint(out, "cpu", "--supernet", only=("model", "ema"))  # what a search reads
    assert ck["space_fingerprint"] == space.fingerprint and ck["evaluation"] == {"bn_batches": 65, "batch": 96}
    net = space.build_supernet().eval()
    net.load_state_dict(ck["model"])
    inputs, expected = load_file(FIXTURE / "inputs.safetensors"), load_file(FIXTURE / "expected.safetensors")
    torch.set_num_threads(1)
    for case in json.loads((FIXTURE / "cases.json").read_text())["cases"]:
        arch = space.from_encoding(case["encoding"])
        net.set_active(arch)
        with torch.no_grad():
            y = net(inputs[case["name"]])
            y_sub = net.extract(arch)(inputs[case["name"]])  # the standalone layout: qkv rows and tables re-indexed
        torch.testing.assert_close(y, expected[case["name"]], rtol=0, atol=1e-5)
        torch.testing.assert_close(y_sub, expected[case["name"]], rtol=0, atol=1e-5)


def test_import_weights_bad_input(tmp_path):
    from nas.elastic.elasticvit_original import read_original
    from nas.errors import UserError

    bad = tmp_path / "x.pth"
    torch.save({"state_dict": {"first_conv.weight": torch.zeros(1), "oops": 3}}, bad)
    with pytest.raises(UserError, match="'oops' is not a tensor"):
        read_original(bad)
    torch.save({"feature_exactor.9.layers.0.what.weight": torch.zeros(1)}, bad)
    r = nas_cli("import-weights", "--from", "elasticvit-original", str(bad), "--space", "elasticvit", "--out",
                str(tmp_path / "o.safetensors"))
    assert r.returncode == 2 and "not a key of ElasticViT's FusedSuperNet" in r.stderr
    r = nas_cli("import-weights", "--from", "elasticvit-original", str(bad), "--space", "nb201", "--out", str(tmp_path / "o.safetensors"))
    assert r.returncode == 2 and "ElasticViT space" in r.stderr
