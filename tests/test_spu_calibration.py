"""`nas lut spu-calibrate`: SPU's counters parsed from its log, a protocol table derived from
them, and the analytic model compared with the simulator's whole-model counts -- all on output
recorded from a real run (spu 0.9.5 SEMI2K, tests/data/spu/SOURCE.txt), so neither SPU nor jax is
needed here."""
import json

import pytest

from conftest import REPO, nas_cli
from nas.latency.mpc import read_ops
from nas.latency.spu_calibration import derive_table, parse_profile, read_probe

DATA = REPO / "tests" / "data" / "spu"


def test_parse_profile_reads_the_link_line_of_a_real_log():
    got = parse_profile((DATA / "relu-semi2k.log").read_text())
    # ReLU over [1, 4, 65, 65]: msb_a2b (7 actions) + mul_a1b (1): 1,216,800 B = 72 B per element
    assert got["actions"] == 8 and got["bytes"] == 1216800 and got["bytes"] / (4 * 65 * 65) == 72
    assert 0 < got["exec_s"] < 10
    with pytest.raises(ValueError, match="no 'Link details' line"):
        parse_profile("[info] SPU execution completed\n")


def test_the_recorded_probe_regenerates_the_shipped_table_and_the_whole_models():
    header, ops, models = read_probe((DATA / "probe-semi2k-cifar.jsonl").read_text())
    assert header["spu"] == "0.9.5" and len(ops) == 10 and [m["model"] for m in models] == [
        "all-softmax", "all-rs", "all-scal", "mpcvit-mu0.7"]
    rows = {r["op"]: r for r in derive_table(ops)}
    shipped = read_ops(REPO / "predictors" / "mpc-protocols" / "semi2k.csv")
    assert set(rows) == set(shipped)
    for op, cost in shipped.items():  # rounds exactly; bytes within the notes' MiB rounding (1 %)
        assert rows[op]["rounds"] == cost.rounds and rows[op]["rounds_per_log2n"] == cost.rounds_per_log2n, op
        assert rows[op]["per_head"] == int(cost.per_head), op
        assert rows[op]["bytes_per_element"] == pytest.approx(cost.bytes_per_element, rel=0.01, abs=1e-9), op
        assert rows[op]["bytes_per_output"] == pytest.approx(cost.bytes_per_output, abs=1e-9), op
    # softmax: 119 actions at N = 65 and 135 at N = 257 give 63 + 8 ceil(log2 N)
    assert (rows["softmax"]["rounds"], rows["softmax"]["rounds_per_log2n"]) == (63, 8)


def test_spu_calibrate_command_on_recorded_output(tmp_path):
    out = tmp_path / "semi2k.csv"
    r = nas_cli("lut", "spu-calibrate", "--spu-python", "unused", "--from-output",
                str(DATA / "probe-semi2k-cifar.jsonl"), "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    read_ops(out)  # a valid protocol table
    for m in res["models"]:  # the model with the derived table reproduces the simulator exactly
        assert m["model_rounds"] == m["sim_actions"], m
        assert m["model_mib"] == pytest.approx(m["sim_mib"], rel=1e-3), m
    assert [m["sim_actions"] for m in res["models"]] == [1807, 1296, 974, 1300]  # the notes' counts
    bad = nas_cli("lut", "spu-calibrate", "--spu-python", str(tmp_path / "none"), "--out", str(out))
    assert bad.returncode == 2 and "no such file" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
