"""The NAS-Bench-201 space: encodings, the benchmark's own parameter and FLOP counts, the model."""
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
