"""The NAS-Bench-201 space: encodings, the benchmark's own parameter and FLOP counts, the model."""
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SHARED
from nas.errors import UserError
from nas.spaces import get_space

TRUTH = SHARED / "data" / "nb201" / "nb201_cifar10_test_acc.csv"


@pytest.fixture(scope="module")
def nb201():
    return get_space("nb201")


def test_cost_reproduces_the_benchmarks_extremes(nb201):
    # NATS-Bench / NB201 CIFAR-10: params 0.073306-1.531546 M, FLOPs 7.78305-220.11969 M
    cost = nb201.cost(nb201.from_index(np.arange(nb201.size())))
    assert nb201.size() == 15625
    assert (cost["params"].min(), cost["params"].max()) == (73306, 1531546)
    assert round(cost["macs"].min() / 1e6, 5) == 7.78305 and round(cost["macs"].max() / 1e6, 5) == 220.11969


def test_model_parameters_equal_the_analytic_count(nb201, rng):
    for g in nb201.sample(rng, 12):
        arch = nb201.arch(g)
        model = nb201.build(arch)
        assert sum(p.numel() for p in model.parameters()) == int(nb201.cost(g[None])["params"][0])
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_arch_strings_and_indices_round_trip(nb201, rng):
    g = nb201.from_index(np.arange(nb201.size()))
    assert (nb201.index(g) == np.arange(nb201.size())).all()
    assert len(set(nb201.ids(g))) == nb201.size()  # every cell is its own architecture
    for row in nb201.sample(rng, 50):
        arch = nb201.arch(row)
        assert nb201.from_string(nb201.arch_string(arch)) == arch
    best = nb201.presets()["best-cifar10"]
    assert nb201.arch_string(best) == "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
    assert nb201.parse_arch(int(nb201.index(np.asarray([best.genome]))[0])) == best


def test_the_index_is_the_benchmarks(nb201):
    # NAS-Bench-201 #6111 is the best cell on CIFAR-10 (94.373 %); in a base-5 order of our own it was 11667
    best = nb201.presets()["best-cifar10"]
    assert int(nb201.index(np.asarray([best.genome]))[0]) == 6111
    assert nb201.parse_arch(6111) == best and nb201.parse_arch("6111") == best
    from nas.archspec import parse_arch_text

    assert parse_arch_text(nb201, "6111") == best  # what `--arch 6111` reads
    assert nb201.arch_string(nb201.arch(nb201.from_index(0)[0])) == \
        "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
    with pytest.raises(UserError, match="0..15624"):
        nb201.from_index(15625)


@pytest.mark.skipif(not TRUTH.exists(), reason="needs ../shared/data/nb201")
def test_index_matches_the_benchmarks_rows(nb201):
    import pandas as pd

    df = pd.read_csv(TRUTH)  # row i is NATS-Bench index i
    g = np.stack([nb201.from_string(a).genome for a in df["arch"]])
    assert (nb201.index(g) == df["index"].to_numpy()).all()
    assert (nb201.from_index(df["index"].to_numpy()) == g).all()
    assert int(df["cifar10_test_acc_200ep"].idxmax()) == 6111


def test_a_space_without_an_op_refuses_indices_that_use_it(tmp_path):
    toml = (Path(__file__).resolve().parents[1] / "spaces" / "nb201.toml").read_text()
    toml = toml.replace('name = "nb201"', 'name = "nb201-noskip"').split("[presets]")[0]
    toml = toml.replace('ops = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]',
                        'ops = ["none", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]')
    (tmp_path / "s.toml").write_text(toml)
    sub = get_space(tmp_path / "s.toml")
    g = sub.sample(np.random.default_rng(0), 100)
    full = get_space("nb201")
    names = [[sub.ops[i] for i in row] for row in g]
    same = np.array([[full.ops.index(o) for o in row] for row in names])
    assert (sub.index(g) == full.index(same)).all()  # one cell, one benchmark index, whatever the op order
    assert (sub.from_index(sub.index(g)) == g).all()
    with pytest.raises(UserError, match="uses 'skip_connect'"):
        sub.from_index(0)


@pytest.mark.skipif(not TRUTH.exists(), reason="needs ../shared/data/nb201")
def test_every_ground_truth_string_parses(nb201):
    import pandas as pd

    df = pd.read_csv(TRUTH)
    ids = {nb201.from_string(a).id for a in df["arch"]}
    assert len(ids) == 15625


@pytest.mark.parametrize("text,message", [
    ("|nor_conv_3x3~0|+|none~0|none~1|", "expected 3 nodes"),
    ("|nor_conv_3x3~0|+|none~0|+|none~0|none~1|none~2|", "node 2 needs 2 incoming edge"),
    ("|nor_conv_3x3~1|+|none~0|none~1|+|none~0|none~1|none~2|", "must be 'op~0'"),
    ("|conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", "did you mean 'nor_conv_3x3'"),
    ("nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", "must look like"),
])
def test_bad_arch_strings(nb201, text, message):
    with pytest.raises(UserError, match=message):
        nb201.from_string(text)
