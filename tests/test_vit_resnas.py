"""The ViT-ResNAS family against the original repository's networks: MACs, parameters, the
network_def input format, the skip rule, the reference network, and the torch model."""
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import nas_cli
from nas.errors import UserError
from nas.spaces import get_space

DATA = json.loads((Path(__file__).parent / "data" / "vit_resnas" / "networks.json").read_text())


@pytest.fixture(scope="module")
def tiny():
    return get_space("vit-resnas-tiny")


@pytest.fixture(scope="module")
def small():
    return get_space("vit-resnas-small")


@pytest.fixture(scope="module")
def micro():
    return get_space("vit-resnas-micro")


@pytest.mark.parametrize("name", sorted(DATA["published"]))
def test_every_published_network_within_0_1_percent(name):
    space = get_space(DATA["space"][name])
    arch = space.parse_arch(DATA["networks"][name]["network_def"])
    cost = space.cost(np.asarray([arch.genome]))
    macs_g, params_m = DATA["published"][name]
    assert abs(cost["macs"][0] / 1e9 / macs_g - 1) < 1e-3
    assert abs(cost["params_with_patch_head"][0] / 1e6 / params_m - 1) < 1e-3
    # the deployed model has no patch head: one Linear(E, classes) less
    e = DATA["networks"][name]["network_def"][-1][1]
    assert cost["params_with_patch_head"][0] - cost["params"][0] == e * 1000 + 1000


def test_presets_and_reference_are_the_published_networks(tiny, small):
    nets = DATA["networks"]
    assert tiny.presets()["vit-resnas-tiny"] == tiny.parse_arch(nets["ViT-ResNAS-Tiny"]["network_def"])
    assert small.presets()["vit-resnas-small"] == small.parse_arch(nets["ViT-ResNAS-Small"]["network_def"])
    assert small.presets()["vit-resnas-medium"] == small.parse_arch(nets["ViT-ResNAS-Medium"]["network_def"])
    ref = tiny.parse_arch("vit-res-tiny")
    assert ref == tiny.parse_arch(nets["ViT-Res-Tiny"]["network_def"]) and tiny.is_reference(ref)
    assert "vit-res-tiny" not in tiny.presets()  # never seeded into or returned by a search


def test_supernet_definition_is_the_largest_network(tiny, small):
    for space, key in ((tiny, "sr_tiny_mh"), (small, "sr_small_mh")):
        assert space.parse_arch(DATA["largest_network_def"][key]) == space.largest()


def test_space_sizes_and_ranges_match_the_reference(tiny, small, rng):
    assert 1.8e28 < tiny.size() < 2.0e28 and 4.1e32 < small.size() < 4.3e32  # reference B.2
    for space, (lo, hi) in ((tiny, (0.75, 3.50)), (small, (1.47, 6.26))):
        macs = [space.cost(np.asarray([a.genome]))["macs"][0] / 1e9 for a in (space.smallest(), space.largest())]
        assert round(macs[0], 2) == lo and round(macs[1], 2) == hi


def test_deleted_and_exists_zero_forms_are_the_same_network(tiny):
    deleted = DATA["networks"]["ViT-ResNAS-Tiny"]["network_def"]
    arch = tiny.parse_arch(deleted)
    full = tiny.to_network_def(arch)
    assert len(full) == len(deleted) + 2  # stages 1 and 3 each had one deleted block
    assert [b[3] for b in full if b[0] == 1][:6] == [1, 1, 1, 1, 1, 0]  # deleted = the stage's last skippable slot
    assert tiny.parse_arch(full) == arch
    assert tiny.parse_arch(json.loads(tiny.decode(arch)["encoding"])) == arch


def test_network_def_in_the_original_scripts_tuple_syntax(tiny):
    nd = DATA["networks"]["ViT-ResNAS-Tiny"]["network_def"]
    text = str(json.loads(json.dumps(nd), object_hook=None)).replace("[", "(").replace("]", ")")
    assert tiny.parse_arch(text) == tiny.presets()["vit-resnas-tiny"]
    with pytest.raises(UserError, match="network_def: not a Python tuple literal"):
        tiny.parse_arch("((4, 176), (1,")


def test_samples_are_canonical_and_follow_the_skip_rule(micro, rng):
    g = micro.sample(rng, 500)
    assert micro.violations(g) == [] and np.array_equal(micro.canonicalize(g), g)
    for a in (micro.arch(row) for row in g[:50]):
        assert micro.parse_arch(json.loads(micro.decode(a)["encoding"])) == a


def test_skip_rule_of_runs_of_skippable_blocks(tmp_path):
    text = (Path(__file__).parents[1] / "spaces" / "vit-resnas-micro.toml").read_text()
    path = tmp_path / "runs.toml"
    path.write_text(text.replace('name = "vit-resnas-micro"', 'name = "runs"').replace('"BSB"', '"BSS"', 1))
    space = get_space(path)
    g = space.sample(np.random.default_rng(0), 400)
    e1, e2 = space.g_exists[0][1], space.g_exists[0][2]
    assert not ((g[:, e1] == 0) & (g[:, e2] == 1)).any()  # a skipped slot skips the rest of its run
    assert ((g[:, e1] == 1) & (g[:, e2] == 0)).any()
    nd = space.to_network_def(space.largest())
    nd[2][3] = 0  # slot 1 off, slot 2 on
    with pytest.raises(UserError, match=r"network_def\[3\]: field exists: .*skip rule"):
        space.parse_arch(nd)


@pytest.mark.parametrize("edit, message", [
    (lambda nd: nd[1][1].__setitem__(1, 7), r"network_def\[1\]: field heads: 7 is not one of \[3, 4, 5, 6\]"),
    (lambda nd: nd[2][2].__setitem__(1, 700), r"network_def\[2\]: field mlp: 700 is not one of"),
    (lambda nd: nd[0].__setitem__(1, 180), r"network_def\[0\]: field E: stage 1 embed 180 is not one of"),
    (lambda nd: nd[1].__setitem__(3, 0), r"network_def\[1\]: field exists: stage 1 block 0 cannot be skipped"),
    (lambda nd: nd.insert(3, nd.pop(6)), r"network_def\[4\]: field E: 176 differs from stage 2's embed 352"),
    (lambda nd: [b[1].__setitem__(2, 64) for b in nd[1:6]], r"stage 1 head_dim 64 is used only by the reference network"),
    (lambda nd: nd[2][1].__setitem__(2, 64), r"network_def\[2\]: field head_dim: 64 differs from 32"),
    (lambda nd: nd[-1].__setitem__(2, 10), r"field classes: space 'vit-resnas-tiny' has 1000 classes"),
])
def test_bad_network_def_names_block_and_field(tiny, edit, message):
    nd = json.loads(json.dumps(DATA["networks"]["ViT-ResNAS-Tiny"]["network_def"]))
    edit(nd)
    with pytest.raises(UserError, match=message):
        tiny.parse_arch(nd)


def test_cli_latency_prints_costs_and_encoding_and_rejects_bad_input(tmp_path):
    r = nas_cli("latency", "--space", "vit-resnas-tiny", "--arch", "vit-res-tiny", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert abs(out["macs_m"] - 1794.4) < 1 and abs(out["params_m_with_patch_head"] - 42.782) < 0.05
    assert out["params_m"] < out["params_m_with_patch_head"]
    assert json.loads(out["decoded"]["encoding"])[1] == [1, [192, 3, 64], [192, 768], 1]
    nd = DATA["networks"]["ViT-ResNAS-Tiny"]["network_def"]
    bad = json.dumps([nd[0], [1, [176, 9, 32], [176, 704], 1]] + nd[2:])
    r = nas_cli("latency", "--space", "vit-resnas-tiny", "--arch", bad)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["error: network_def[1]: field heads: 9 is not one of [3, 4, 5, 6]"]


def test_model_parameters_equal_the_analytic_count(micro, tiny, small, rng):
    import torch

    archs = [(micro, a) for a in [micro.smallest(), micro.largest()] + [micro.arch(g) for g in micro.sample(rng, 2)]]
    archs += [(tiny, tiny.parse_arch("vit-res-tiny")), (small, small.presets()["vit-resnas-medium"])]
    for space, arch in archs:
        cost = space.cost(np.asarray([arch.genome]))
        for patch_head, key in ((False, "params"), (True, "params_with_patch_head")):
            with torch.device("meta"):  # shapes only: the 224 px models need no memory or initialisation
                net = space.build(arch, patch_head=patch_head)
            assert sum(p.numel() for p in net.parameters()) == cost[key][0]


def test_micro_model_runs_on_fashion_mnist_sized_input(micro):
    import torch

    net = micro.build(micro.largest(), patch_head=True)
    logits, patches = net.forward_with_patches(torch.randn(2, 3, 28, 28))
    assert logits.shape == (2, 10) and patches.shape == (2, 4, 10)  # the last stage's 2 x 2 patch tokens


def test_latency_blocks_sum_to_the_network(micro, tiny):
    """Built from their keys alone, an architecture's blocks hold exactly the network's parameters
    and do exactly its FLOPs (so a measured table misses no layer)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from nas.latency.fit import block_features
    from nas.latency.table import space_blocks
    from nas.nets.blocks import build_block

    specs = space_blocks(micro, "ceil")
    assert len(specs) == 3 + 2 * 9 + 3 * 27 + 3  # embeds, SR pairs, (embed, heads, mlp) per stage, heads
    rng = np.random.default_rng(0)
    for arch in [micro.smallest(), micro.largest(), micro.arch(micro.sample(rng, 1)[0])]:
        g = np.asarray([arch.genome])
        keys = [s.key(*[micro.genes[i].choices[arch.genome[i]] for i in s.factors])
                for s in micro.latency_slots("ceil") if s.present(g)[0]]
        assert len(keys) == 2 + 2 + int(sum(v["exists"].sum() for v in micro.values(g)))
        feats = block_features({k: specs[k] for k in set(keys)})
        net = micro.build(arch).eval()
        flops = FlopCounterMode(display=False)
        with torch.inference_mode(), flops:
            net(torch.randn(1, 3, 32, 32))
        assert sum(feats[k][0] for k in keys) == flops.get_total_flops()
        assert sum(sum(p.numel() for p in build_block(specs[k]).parameters()) for k in keys) == \
            sum(p.numel() for p in net.parameters())
    ref = tiny.parse_arch("vit-res-tiny")  # the reference network's head_dim 64 has its own keys
    ref_keys = [s.key(*[tiny.genes[i].choices[ref.genome[i]] for i in s.factors])
                for s in tiny.latency_slots("ceil") if s.present(np.asarray([ref.genome]))[0]]
    assert "resnas_block_257_192_3_64_768" in ref_keys and set(ref_keys) <= set(space_blocks(tiny, "ceil"))
