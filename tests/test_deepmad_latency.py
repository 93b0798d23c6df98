"""DeepMAD latency tables: a signature-keyed table of measured layers plus per-kind models on
analytic features (nas/latency/layers.py), built by `nas lut build` on this machine."""
import json

import numpy as np
import pytest

from conftest import nas_cli
from nas.latency.build import build_table
from nas.latency.measure import Protocol
from nas.latency.table import LatencyTable
from nas.spaces import get_space

FAST = Protocol(repeats=5, warmup=1, warmup_ms=0, min_sample_ms=0.2, retries=0, passes=1)


def _genomes(space, n=300):
    fixed = [a.genome for a in (*space.presets().values(), *space.seeds().values())]
    return np.concatenate([np.asarray(fixed, dtype=np.int64).reshape(-1, len(space.genes)),
                           space.sample(np.random.default_rng(3), n)])


@pytest.mark.parametrize("name", ["deepmad-resnet", "deepmad-mobilenet", "deepmad-tiny"])
def test_the_layer_census_covers_every_mac_and_its_keys_round_trip(name):
    """Each layer counted once, at its own side: the layers' analytic MACs sum to the space's."""
    space = get_space(name)
    g = _genomes(space)
    c = space.latency_layers(g)
    macs = (space.layer_features(c.kind, c.sig)[..., 0] / 2 * c.count).sum(1)
    np.testing.assert_allclose(macs, space.cost(g)["macs"], rtol=1e-12)
    for kind, sig in zip(c.kind[:20].ravel(), c.sig[:20].reshape(-1, 6)):
        key = space.layer_key(int(kind), sig)
        assert space.layer_key(*space.parse_layer_key(key)) == key


@pytest.mark.parametrize("name", ["deepmad-tiny", "deepmad-mobilenet"])
def test_the_layer_blocks_are_the_networks_layers(name):
    """The blocks a table measures, counted as the census counts them, hold exactly the
    network's parameters (so they are its layers, projections and SE included)."""
    import torch

    from nas.nets.blocks import build_block

    space = get_space(name)
    for genome in _genomes(space, 3)[-3:]:
        arch = space.arch(genome)
        c = space.latency_layers(np.asarray([arch.genome]))
        total = sum(int(n) * sum(p.numel() for p in build_block(space.layer_spec(int(k), s)).parameters())
                    for k, s, n in zip(c.kind[0], c.sig[0], c.count[0]) if n > 0)
        with torch.device("meta"):
            assert total == sum(p.numel() for p in space.build(arch).parameters())


def test_lut_build_predicts_measured_layers_exactly_and_the_rest_by_its_model(tmp_path):
    space = get_space("deepmad-tiny")
    r = build_table(space, "local-cpu", FAST, out=tmp_path / "cpu", max_blocks=40, progress=False)
    assert r.measured == 40 and r.fitted > 1000
    table = LatencyTable.load(r.table)
    model = table.meta["model"]
    assert set(model) == set(space.layer_kinds)
    assert "predict every layer outside the table" in table.meta["provenance"]["fitted"]
    rows, sources = {}, {}  # the CSV: measured layers and the universe's fitted ones
    for line in (tmp_path / "cpu" / "deepmad-tiny.csv").read_text().splitlines()[1:]:
        key, ms, _, source = line.split(",")
        rows[key], sources[key] = float(ms), source
    assert list(sources.values()).count("measured") == 40
    g = space.sample(np.random.default_rng(11), 400)
    pred = table.predict(space, g)
    seen = set()
    for genome, p in zip(g[:40], pred[:40]):  # one at a time, by hand, against the vectorised batch
        c = space.latency_layers(genome[None, :])
        feats = space.layer_features(c.kind, c.sig)[0]
        total = 0.0
        for j in range(c.kind.shape[1]):
            key = space.layer_key(int(c.kind[0, j]), c.sig[0, j])
            if key in rows:
                ms = rows[key]
                seen.add(sources[key])
            else:
                ms = max(float(np.dot(model[space.layer_kinds[c.kind[0, j]]]["coef"], feats[j])), 0.0)
                seen.add("model")
            total += ms * c.count[0, j]
        assert p == pytest.approx(total, rel=1e-9)
    assert seen == {"measured", "fitted", "model"}
    # a network far outside the universe (widest, deepest) still gets a latency, from the model
    assert np.isfinite(table.predict(space, np.asarray([space.largest().genome]))).all()
    arch = space.arch(g[0])
    rows = table.block_rows(space, arch)
    assert {row["source"] for row in rows} <= {"measured", "model"}
    assert sum(row["ms"] for row in rows) == pytest.approx(pred[0], rel=1e-9)
    res = nas_cli("latency", "--space", "deepmad-tiny", "--device", str(tmp_path / "cpu"), "--arch",
                  json.dumps(space.structure(arch)), "--blocks", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert [b["key"] for b in next(iter(out["blocks"].values()))] == [row["key"] for row in rows]


def test_a_table_without_a_kinds_model_names_what_it_cannot_predict(tmp_path):
    space = get_space("deepmad-tiny")
    r = build_table(space, "local-cpu", FAST, out=tmp_path / "cpu", max_blocks=40, progress=False)
    text = r.table.read_text()
    cut = text.index("[model.deepmad_head]")
    end = text.find("\n[", cut + 1)
    r.table.write_text(text[:cut] + (text[end + 1:] if end > 0 else ""))
    table = LatencyTable.load(r.table)
    assert table.missing_keys(space) == ["deepmad_head (any layer not in the table: it has no fitted model for this kind)"]
    from nas.errors import MissingKeysError

    g = np.asarray([space.largest().genome])
    g[0, space._col(f"b{space.n_blocks}.out")] = 254  # 255 channels: off the solver's grid, in no table row
    with pytest.raises(MissingKeysError, match="deepmad_head:c255-h0-n10-r1"):
        table.predict(space, g)
