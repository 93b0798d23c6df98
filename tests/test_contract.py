"""The contract every search space honours, parametrised over every space that ships (spaces/*.toml).

A new family passes this suite or is not done (as optuna's sampler conformance tests do for its
plug-ins): canonical form is idempotent, ids are stable across loads, the family's string form
round-trips, analytic parameters equal ``sum(numel)`` of the built model, a supernet's extracted
subnet computes what the supernet computes with that subnet active, and every shipped latency
table of the space holds every key an architecture can need.
"""
import numpy as np
import pytest
import torch

from conftest import scramble
from nas.archspec import read_arch_spec
from nas.latency import device_dirs
from nas.latency.table import load_any, table_path
from nas.errors import UserError
from nas.spaces import FAMILIES, SearchSpace, get_space, space_files
from nas.tomldoc import TomlDoc

SPACES = sorted(space_files())
BUILD_LIMIT = 40e6  # parameters: larger models are checked by their family's own tests, not built here


def archs_of(space, n_random=4, n_presets=None):
    rng = np.random.default_rng(7)
    out = [space.smallest(), space.largest()] + [space.arch(g) for g in space.sample(rng, n_random)]
    presets = list(space.presets().values())
    if n_presets is not None and len(presets) > n_presets:  # spread over the list: smallest to largest
        presets = [presets[i] for i in np.linspace(0, len(presets) - 1, n_presets).round().astype(int)]
    return out + presets


def fresh(space):
    """The same TOML read again from scratch, bypassing every cache."""
    return FAMILIES.get(space.family)(TomlDoc(space.path))


def test_every_shipped_space_is_covered():
    assert {"elasticvit", "elasticvit-tiny", "nb201", "asvit", "asvit-tiny", "deepmad-resnet",
            "deepmad-mobilenet", "deepmad-tiny"} <= set(SPACES)


@pytest.mark.parametrize("name", SPACES)
def test_canonical_is_idempotent_and_ids_are_stable(name):
    space = get_space(name)
    archs = archs_of(space, 50)
    g = space.genomes(archs)
    assert (space.canonicalize(g) == g).all()
    again = fresh(space)
    for a in archs:
        assert space.canonical(a.genome) == a and space.canonical(a.genome).id == a.id
        assert again.arch(np.asarray(a.genome)).id == a.id  # the id depends on the definition, not the load
    assert space.ids(g) == [a.id for a in archs]
    assert len(set(space.ids(g))) == len({a.genome for a in archs})


@pytest.mark.parametrize("name", SPACES)
def test_string_form_round_trips(name):
    space = get_space(name)
    for a in archs_of(space, 10):
        d = space.decode(a)
        form = d.get("encoding", d.get("arch"))
        assert isinstance(form, str), f"{name}: decode() gives neither 'encoding' nor 'arch'"
        assert space.parse_arch(read_arch_spec(form)) == a


@pytest.mark.parametrize("name", SPACES)
def test_analytic_params_equal_the_built_model(name):
    space = get_space(name)
    archs = archs_of(space, 2, n_presets=3)
    params = space.cost(space.genomes(archs))["params"]
    built = 0
    for a, p in zip(archs, params):
        if p > BUILD_LIMIT:
            continue
        net = space.build(a)
        assert sum(t.numel() for t in net.parameters()) == p, f"{name}: {a.id}"
        built += 1
    assert built >= 1


SUPERNET_LIMIT = 10e6  # parameters of the largest subnet: larger supernets are tests/test_supernet.py's


@pytest.mark.parametrize("name", SPACES)
def test_extract_equals_supernet_with_arch(name):
    space = get_space(name)
    if type(space).build_supernet is SearchSpace.build_supernet:  # a family without weight sharing
        assert space.build_supernet() is None and space.family in ("nb201", "asvit", "deepmad")
        return
    if space.cost(space.genomes([space.largest()]))["params"][0] > SUPERNET_LIMIT:
        pytest.skip(f"{name}: a {SUPERNET_LIMIT / 1e6:.0f}M+ supernet; its family's own tests check its parity "
                    "at full size (tests/test_supernet.py, tests/test_vit_resnas_supernet.py)")
    net = space.build_supernet().eval()
    torch.manual_seed(0)
    scramble(net)
    for a in archs_of(space, 0)[:2]:  # smallest and largest; tests/test_supernet.py samples many more
        r = space.input_resolution(a)
        x = torch.randn(2, 3, r, r, generator=torch.Generator().manual_seed(1))
        net.set_active(a)
        with torch.no_grad():
            y_super = net(x)
            y_sub = net.extract(a)(x)
        torch.testing.assert_close(y_sub, y_super, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", SPACES)
def test_every_latency_key_of_every_shipped_table_is_present(name):
    space = get_space(name)
    checked = 0
    for device in device_dirs():
        try:
            path = table_path(device, space)
        except UserError:
            continue  # this device has no table for the space
        table = load_any(path)
        if getattr(table, "kind", "blocks") == "blocks" and path.stem != space.name:
            continue  # measured blocks of another space of the family (pixel6/elasticvit.toml for elasticvit-tiny);
            # analytic tables (the MPC devices) serve every space of their family
        assert table.missing_keys(space) == [], f"{device} lacks keys of {name}"
        genomes = space.genomes(archs_of(space))
        assert np.isfinite(table.predict(space, genomes)).all()
        checked += 1
    if name == "elasticvit":
        assert checked == 4  # the four phones
    if space.family == "mpcvit":
        assert checked == 8  # the MPC devices: two protocols x two networks x sequential/batched heads
