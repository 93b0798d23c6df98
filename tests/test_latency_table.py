"""Latency tables: the shipped phone tables, exact coverage, vectorised prediction against an
independent walk of nn-Meter's key grammar, and clear errors for bad or incomplete tables."""
import json
import shutil

import numpy as np
import pytest

from conftest import DEVICES, SHARED
from nas.errors import MissingKeysError, UserError
from nas.latency import load_table
from nas.latency.table import LatencyTable, table_path


def nnmeter_keys(enc):
    """The keys nn-Meter's BlockLatencyPredictor (blockwise mode, v3 tables) sums for a 10-tuple
    encoding, written independently of nas/: strides (1, 2, 2, 2, 1, 2, 2), SE in conv stage 2,
    grids halved with floor."""
    res, ch, depths, ratios, kernels, mlp, _heads, _w, _qk, vs = enc
    act, strides, se = "hard_swish", (1, 2, 2, 2, 1, 2, 2), (False, False, True)
    keys = [f"firstconv_{res}_3_{ch[0]}_2_3"]
    hw, cin, ci, ti = res // 2, ch[0], 0, 0
    for s, c in enumerate(ch):
        hw_in, hw_out = hw, hw // strides[s]
        for i in range(depths[s]):
            if s <= 2:
                keys.append(f"conv_{hw_in if i == 0 else hw_out}_{cin if i == 0 else c}_{c}_{ratios[ci]}_"
                            f"{strides[s] if i == 0 else 1}_{act}_{kernels[ci]}_{'se' if se[s] else 'nose'}")
                ci += 1
            else:
                if i == 0:
                    keys.append(f"transds_{hw_in}_{cin}_{c}_{strides[s]}_6")
                keys.append(f"transattn_{hw_out}_{c}_{act}_{vs[ti]}_ln")
                keys.append(f"transffn_{hw_out}_{c}_{mlp[ti]}_{act}_ln")
                ti += 1
        hw, cin = hw_out, c
    keys.append(f"mbpool_{hw}_{ch[-1]}_1984_6_{act}")
    return keys


@pytest.mark.parametrize("device", DEVICES)
def test_every_preset_resolves_and_the_table_covers_the_space(space, device):
    table = load_table(device, space)  # check=True: every key any valid arch needs exists
    assert table.missing_keys(space) == []
    archs = list(space.presets().values())
    lat = table.predict(space, space.genomes(archs))
    assert np.all(lat > 0)
    # latency grows with size: T1 is the fastest release, L3 the slowest
    names = list(space.presets())
    assert names[int(np.argmin(lat))] == "elastic_T1" and names[int(np.argmax(lat))] == "elastic_L3"


@pytest.mark.parametrize("device", ["pixel6", "xiaomi11"])
def test_vectorised_prediction_equals_the_reference_key_walk(space, device, rng):
    table = load_table(device, space)
    genomes = np.concatenate([space.sample(rng, 300), space.genomes(list(space.presets().values()))])
    lat = table.predict(space, genomes)
    for g, ms in zip(genomes, lat):
        enc = space.to_encoding(space.arch(g))
        assert ms == pytest.approx(sum(table.ms[k] for k in nnmeter_keys(enc)), rel=1e-12)
    blocks = table.breakdown(space, space.arch(genomes[0]))
    assert [k for k, _ in blocks] == nnmeter_keys(space.to_encoding(space.arch(genomes[0])))


def test_values_are_the_source_tables_exactly():
    src = SHARED / "data/latency/nnmeter-transformer-lut/pixel6_lut_ln_v3.json"
    if not src.exists():
        pytest.skip(f"shared data not available at {src}")
    from nas.spaces import get_space

    table = load_table("pixel6", get_space("elasticvit"))
    assert table.ms == json.loads(src.read_text())


def _copy_table(tmp_path, space):
    src = table_path("pixel6", space).parent
    dst = tmp_path / "mydev"
    shutil.copytree(src, dst)
    return dst


def test_table_missing_keys_names_them(space, tmp_path):
    dst = _copy_table(tmp_path, space)
    csv = dst / "elasticvit.csv"
    lines = csv.read_text().splitlines(keepends=True)
    dropped = [ln.split(",")[0] for ln in lines if ln.startswith("transffn_7_")]
    csv.write_text("".join(ln for ln in lines if not ln.startswith("transffn_7_")))
    meta = dst / "elasticvit.toml"
    meta.write_text("\n".join(ln for ln in meta.read_text().splitlines() if not ln.startswith("sha256")))
    with pytest.raises(MissingKeysError) as e:
        load_table(str(dst), space)
    # the table holds widths in steps of 8; the space only needs multiples of 16
    assert e.value.keys and set(e.value.keys) <= set(dropped)
    assert "transffn_7_160_2_hard_swish_ln" in e.value.keys
    assert e.value.keys[0] in str(e.value) and "lacks" in str(e.value)
    # without the up-front check, prediction of an affected arch names the missing key too
    table = load_table(str(dst), space, check=False)
    s2 = space.presets()["elastic_S2"]  # 224 px: stage 5 runs at 7x7 tokens
    with pytest.raises(MissingKeysError, match="transffn_7_"):
        table.predict(space, space.genomes([s2]))


def test_malformed_csv_names_file_line_and_field(space, tmp_path):
    dst = _copy_table(tmp_path, space)
    csv = dst / "elasticvit.csv"
    lines = csv.read_text().splitlines()
    lines[5] = lines[5].split(",")[0] + ",fast"
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"elasticvit.csv:6: field 'latency_ms': 'fast' is not a number"):
        LatencyTable.load(dst / "elasticvit.toml")


def test_edited_table_is_detected_by_its_checksum(space, tmp_path):
    dst = _copy_table(tmp_path, space)
    csv = dst / "elasticvit.csv"
    csv.write_text(csv.read_text().replace(",0.466159\n", ",0.5\n"))
    with pytest.raises(UserError, match="sha256"):
        LatencyTable.load(dst / "elasticvit.toml")


def test_unknown_device_suggests_names(space):
    with pytest.raises(UserError, match="did you mean 'pixel6'"):
        load_table("pixel7", space)


def test_table_versions_identify_devices(space):
    versions = {load_table(d, space).version for d in DEVICES}
    assert len(versions) == 4 and all("nnmeter-transformer-lut-v3@" in v for v in versions)
