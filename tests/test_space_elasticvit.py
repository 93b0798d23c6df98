"""The ElasticViT space against its paper code: released models, MACs, parameters, encodings."""
import json

import numpy as np
import pytest

from conftest import ELASTICVIT_MFLOPS, REPO
from nas.errors import UserError


def test_presets_are_the_nine_released_models(space):
    assert set(space.presets()) == set(ELASTICVIT_MFLOPS)


@pytest.mark.parametrize("name", sorted(ELASTICVIT_MFLOPS))
def test_preset_macs_match_published_to_its_last_digit(space, name):
    arch = space.presets()[name]
    macs = space.cost(np.asarray([arch.genome]))["macs"][0] / 1e6
    assert round(macs, 1) == ELASTICVIT_MFLOPS[name], macs  # published to 0.1 M: the code's own numbers, rounded


def test_space_size_matches_reference(space):
    # reference A.1: about 2.2e16 stage-wise subnets counting the non-decreasing width constraint
    assert round(space.size() / 1e16, 1) == 2.2


def test_space_size_is_exact_by_enumeration(tmp_path):
    """size() against a brute-force count: every search vector of a reduced ElasticViT space mapped
    to its canonical genome, distinct genomes counted."""
    import itertools
    import re

    from nas.spaces import get_space

    text = (REPO / "spaces/elasticvit-tiny.toml").read_text()
    text = re.sub(r"^name = .*$", 'name = "elasticvit-enum"', text, flags=re.M)
    text = re.sub(r"^resolutions = .*$", "resolutions = [32, 48]", text, flags=re.M)
    for key in ("expand", "mlp", "kernel"):
        text = re.sub(rf"^{key} = \[.*\]$", f"{key} = [3]" if key == "kernel" else f"{key} = [2]", text, flags=re.M)
    text = re.sub(r"^v_scale = \[.*\]$", "v_scale = [1]", text, flags=re.M)
    path = tmp_path / "elasticvit-enum.toml"
    path.write_text(text)
    small = get_space(str(path))
    sizes = [v.size for v in small.vars]
    assert 1000 < np.prod(sizes) < 200_000
    vectors = np.array(list(itertools.product(*(range(s) for s in sizes))))
    genomes = small.to_genomes(vectors)
    assert small.size() == len(np.unique(genomes, axis=0))


def test_presets_round_trip_through_the_paper_encoding(space):
    toml_specs = space._preset_specs
    for name, arch in space.presets().items():
        assert space.to_encoding(arch) == toml_specs[name]
        assert space.from_encoding(space.to_encoding(arch)) == arch
        assert json.loads(space.decode(arch)["encoding"]) == toml_specs[name]


def test_genome_holds_per_layer_choices(space):
    t2 = space.decode(space.presets()["elastic_T2"])
    assert [t2[f"stage{i}.mlp"] for i in (3, 4, 5, 6)] == ["3", "4", "3", "2"]  # a ratio per stage
    enc = space.to_encoding(space.presets()["elastic_S1"])
    enc[5] = [2, 5, 2, 3, 3, 4, 4, 2]  # stage 3 layers differ: 2 then 5
    arch = space.from_encoding(enc)
    assert space.decode(arch)["stage3.mlp"] == "2|5"
    assert space.to_encoding(arch) == enc


def test_samples_are_valid_canonical_and_stage_wise(space, rng):
    g = space.sample(rng, 2000)
    assert space.violations(g) == []
    assert np.array_equal(space.canonicalize(g), g)  # idempotent
    v = space.values(g)
    assert np.all(np.diff(v["width"], axis=1) >= 0)  # widths never decrease
    for bi, b in enumerate(space.blocks):  # stage-wise: active layers share the stage's choice
        d = v["depth"][:, bi]
        for m, vals in v["micro"][bi].items():
            for i in range(len(g)):
                assert len(set(vals[i, : d[i]])) == 1
    # inactive layers are normalised, so ids dedupe equal networks
    assert len(set(space.ids(g))) == len({row.tobytes() for row in g})


def test_to_genomes_repairs_width_order_and_is_deterministic(space):
    x = np.zeros((1, len(space.vars)), dtype=np.int64)
    j3 = [v.name for v in space.vars].index("stage3.width")
    j4 = [v.name for v in space.vars].index("stage4.width")
    x[0, j3] = 3  # stage 3: 96 wide
    x[0, j4] = 0  # stage 4: 80 < 96 -> widened to 96
    v = space.values(space.to_genomes(x))
    assert v["width"][0, 3] == 96 and v["width"][0, 4] == 96
    assert space.violations(space.to_genomes(x)) == []


def test_canonical_rejects_invalid_genomes(space):
    a = space.presets()["elastic_S1"]
    g = list(a.genome)
    g[0] = 99
    with pytest.raises(UserError, match="gene 'resolution'"):
        space.canonical(g)
    with pytest.raises(UserError, match="genome of 3"):
        space.canonical([0, 0, 0])
    enc = space.to_encoding(a)
    enc[1][4] = 48  # stage 4 narrower than stage 3
    with pytest.raises(UserError):
        space.from_encoding(enc)
    enc = space.to_encoding(a)
    enc[6][0] = 5  # heads must be width / 16
    with pytest.raises(UserError, match="num_heads"):
        space.from_encoding(enc)


def test_smallest_and_largest(space):
    small, large = space.smallest(), space.largest()
    c = space.cost(space.genomes([small, large]))["macs"] / 1e6
    rnd = space.cost(space.sample(np.random.default_rng(1), 500))["macs"] / 1e6
    assert c[0] <= rnd.min() and c[1] >= rnd.max()
    # the smallest subnet is the paper config's min arch of the 200 MFLOPs level (37 MFLOPs, ref. A.3)
    assert space.to_encoding(small) == [128, [16, 16, 16, 48, 80, 144, 160], [1, 2, 2, 1, 1, 1, 1], [1, 3, 3, 3, 3],
                                        [3, 3, 3, 3, 3], [2, 2, 2, 2], [3, 5, 9, 10], [1] * 4, [1] * 4, [2] * 4]
    assert abs(c[0] - 37.4) < 0.1


def test_built_models_have_the_analytic_parameter_count(space, rng):
    import torch

    archs = list(space.presets().values()) + [space.arch(g) for g in space.sample(rng, 6)]
    archs += [space.smallest(), space.largest()]
    params = space.cost(space.genomes(archs))["params"]
    for arch, p in zip(archs, params):
        model = space.build(arch)
        assert sum(t.numel() for t in model.parameters()) == p
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert space.build(space.smallest()).eval()(x).shape == (2, 1000)
