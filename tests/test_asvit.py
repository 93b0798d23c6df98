"""As-ViT: the space and its published numbers, the complexity measures, seed search + scaling."""
import csv
import json

import numpy as np
import pytest
import torch

from conftest import nas_cli
from nas.data import FASHION_MNIST_DIR
from nas.errors import UserError
from nas.spaces import get_space

SMALL = """family = "asvit"
name = "asvit-ci"
resolution = 224
proxy_resolution = 32
num_classes = 1000
[scaling]
repeats = 1
stop_params_m = 3
max_params_m = 4.5
"""


@pytest.fixture(scope="module")
def asvit():
    return get_space("asvit")


def test_space_size_and_published_large_model(asvit):
    assert asvit.size() == 4_556_250  # 5*3^3 kernels x 3*3*2 splits x 5^4 ratios x 3 head counts
    large = asvit.presets()["asvit-large"]
    assert asvit.arch_string(large) == "8,2,3,5|4,1,2,2|4,1,4,5|4,1,6,2|32,180"
    cost = asvit.cost(asvit.genomes([large]))
    # 87.58 M parameters for this exact model (reference note; paper: ~88 M); ~22.4 GMACs at 224 px
    assert cost["params"][0] == 87_580_820
    assert sum(p.numel() for p in asvit.build(large).parameters()) == 87_580_820
    assert 22.0e9 < cost["macs"][0] < 22.8e9


def test_model_matches_analytic_params_and_runs(asvit, rng):
    for g in asvit.sample(rng, 6):
        arch = asvit.arch(g)
        # 9: a proxy width the heads do not divide (attention in heads * (9 // heads) channels)
        for scaled in (arch, asvit.with_scale(arch, (1, 2, 1, 1), 9), asvit.with_scale(arch, (2, 1, 3, 1), 48)):
            model = asvit.build(scaled, 64)
            assert sum(p.numel() for p in model.parameters()) == int(asvit.cost(np.asarray([scaled.genome]))["params"][0])
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 1000)
        assert model.forward_pooled(torch.randn(2, 3, 64, 64)).shape == (2, 384)


def test_progressive_retokenisation_keeps_parameters_and_quarters_tokens(asvit):
    model = asvit.build(asvit.presets()["seed"], 64)
    n = sum(p.numel() for p in model.parameters())
    x = torch.randn(2, 3, 64, 64)
    assert model.forward_features(x).shape == (2, 2, 2, 256)
    model.set_coarse_tokens(True)
    assert model.forward_features(x).shape == (2, 1, 1, 256) and model(x).shape == (2, 1000)
    assert sum(p.numel() for p in model.parameters()) == n
    model.set_coarse_tokens(False)
    assert model.forward_features(x).shape == (2, 2, 2, 256)
    with pytest.raises(ValueError, match="divisible by 64"):
        asvit.build(asvit.presets()["seed"], 96).set_coarse_tokens(True)


def test_arch_strings(asvit):
    seed = asvit.presets()["seed"]
    assert asvit.from_string(asvit.arch_string(seed)) == seed
    scaled = asvit.with_scale(seed, (3, 2, 4, 1), 64)
    assert asvit.arch_string(scaled) == "8,2,3,3|4,1,2,2|4,1,4,4|4,1,6,1|32,64"
    assert asvit.parse_arch("8,2,3,3|4,1,2,2|4,1,4,4|4,1,6,1|32,64") == scaled
    for bad, msg in [("8,2,3|4,1,2|4,1,4|32", "expected 4 stages"), ("8,2,3|4,1,2|4,1,4|4,2,6|32", "stage4.split"),
                     ("8,2,x|4,1,2|4,1,4|4,1,6|32", "integer"), ("8,2,3|4,1,2|4,1,4|4,1,6|32,64", "'K,S,E|...|H'"),
                     ("8,2,3,1|4,1,2,1|4,1,4,1|4,1,6,1|64,4", "narrower than the 8 heads")]:
        with pytest.raises(UserError, match=msg):
            asvit.from_string(bad)


def test_seed_search_and_scaling_grow_monotonically_and_resume(tmp_path):
    space_file = tmp_path / "asvit-ci.toml"
    space_file.write_text(SMALL)
    out = tmp_path / "run"
    args = ["search", "--space", str(space_file), "--strategy", "asvit", "--budget", "12", "--seed", "1",
            "--out", str(out), "--no-progress", "--json"]
    r = nas_cli(*args)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    rows = list(csv.DictReader((out / "family.csv").open()))
    params = [float(x["params_m"]) for x in rows]
    macs = [float(x["macs_g"]) for x in rows]
    assert len(rows) >= 3 and params == sorted(params) and macs == sorted(macs) and len(set(params)) == len(params)
    assert params[-1] >= 3 and params[-1] <= 4.5 and params[-2] < 3  # stops once the target is reached
    depths = [sum(map(int, x["depths"].split("|"))) for x in rows]
    assert depths == list(range(4, 4 + len(rows)))  # one layer per step
    assert summary["seed"].count("|") == 4 and summary["final"] == rows[-1]["arch"]
    assert len(list(csv.DictReader((out / "reinforce.csv").open()))) == 12
    family = (out / "family.csv").read_text()
    page = (out / "report.html").read_text()  # the report: the seed search's measures, the family table
    assert page.count("data:image/png;base64,") == 5 and "The scaled family (family.csv)" in page
    assert all(f"<td>{row['arch']}</td>" in page for row in rows)
    # resume after a crash that lost the last measurements: the same family, only those re-measured
    lines = (out / "measures.jsonl").read_text().splitlines()
    half = len(lines) // 2
    (out / "measures.jsonl").write_text("\n".join(lines[:half]) + "\n" + lines[half][:15])  # torn mid-write
    (out / "family.csv").unlink()
    r = nas_cli("resume", str(out), "--no-progress", "--json")
    assert r.returncode == 0, r.stderr
    assert (out / "family.csv").read_text() == family
    assert json.loads(r.stdout)["measured"] == len(lines) - half
    assert all(json.loads(x) for x in (out / "measures.jsonl").read_text().splitlines())
    # (the resume replays the seed search's decisions from the seed and re-measures half the
    # networks: the same family again is the from-scratch determinism check too)


def test_nsga2_over_the_two_measures(tmp_path):
    space_file = tmp_path / "asvit-ci.toml"
    space_file.write_text(SMALL)
    r = nas_cli("search", "--space", str(space_file), "--objectives", "ntk,length_distortion", "--budget", "10",
                "--population", "5", "--out", str(tmp_path / "r"), "--no-progress")
    assert r.returncode == 0, r.stderr
    header = (tmp_path / "r" / "pareto.csv").read_text().splitlines()[0].split(",")
    assert header[1:3] == ["proxy_ntk", "proxy_length_distortion"]
    evals = [json.loads(x) for x in (tmp_path / "r" / "evals.jsonl").read_text().splitlines()]
    assert len(evals) == 10 and all(e["status"] == "ok" for e in evals)
    pts = {e["id"]: (e["proxy_ntk"], -e["proxy_length_distortion"]) for e in evals}  # both minimised
    assert all(np.isfinite(v).all() for v in pts.values()) and len(set(pts.values())) > 1

    def dominated(p):
        return any(q[0] <= p[0] and q[1] <= p[1] and q != p for q in pts.values())

    front = {r["arch_id"] for r in csv.DictReader((tmp_path / "r" / "pareto.csv").open())}
    assert front == {i for i, p in pts.items() if not dominated(p)}  # exactly the non-dominated ones


def test_asvit_strategy_bad_input(tmp_path):
    r = nas_cli("search", "--space", "nb201", "--strategy", "asvit", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "needs an As-ViT space" in r.stderr
    r = nas_cli("search", "--space", "asvit", "--strategy", "asvit", "--device", "pixel6", "--out", str(tmp_path / "y"))
    assert r.returncode == 2 and "drop --device" in r.stderr


FMNIST = pytest.mark.skipif(not FASHION_MNIST_DIR.exists(),
                            reason="Fashion-MNIST not installed: apt-get install dataset-fashion-mnist")


@FMNIST
def test_train_one_asvit_network_with_progressive_retokenisation(tmp_path):
    out = tmp_path / "t"
    r = nas_cli("train", "--space", "asvit-tiny", "--arch", "seed", "--data", "fashion-mnist", "--steps", "6",
                "--batch-size", "16", "--heldout", "200", "--bn-batches", "1", "--retokenize", "0.5", "--checkpoint-every", "3",
                "--out", str(out), "--no-progress", "--json")
    assert r.returncode == 0, r.stderr
    steps = list(csv.DictReader((out / "steps.csv").open()))
    assert [s["tokens"] for s in steps] == ["coarse"] * 3 + ["fine"] * 3
    assert {s["role"] for s in steps} == {"network"}
    ev = json.loads(r.stdout)["evaluation"]
    assert [e["role"] for e in ev] == ["network"] and 0.0 <= ev[0]["accuracy"] <= 1.0 and ev[0]["resolution"] == 64


@FMNIST
def test_retokenize_bad_input(tmp_path):
    for args, msg in [(["--space", "elasticvit-tiny", "--retokenize", "0.5"], "needs --arch"),
                      (["--space", "asvit-tiny", "--arch", "seed", "--retokenize", "1.5"], "in (0, 1)"),
                      (["--space", "asvit-tiny", "--arch", "sed"], "did you mean 'seed'")]:
        r = nas_cli("train", *args, "--data", "fashion-mnist", "--steps", "3", "--out", str(tmp_path / "x"))
        assert r.returncode == 2 and msg in r.stderr, (args, r.stderr)


def test_non_finite_measures_cannot_break_the_policy_or_the_scaling():
    """A singular NTK (+inf) or a NaN length distortion counts as the worst seen (As-ViT's "bad")."""
    import math

    from nas.search.asvit import finite_measures, reinforce, scale

    space = get_space("asvit-tiny")
    calls = []

    def measures(arch, role):  # synthetic values: every third network is "bad"
        calls.append(arch.id)
        h = int(arch.id[-6:], 16)
        if len(calls) % 3 == 0:
            return {"ntk": math.inf, "length_distortion": math.nan}
        return {"ntk": 10.0 + h % 97, "length_distortion": 1.0 + h % 89}

    seed_arch, trace = reinforce(space, measures, 0, 30, space.scaling, False)
    assert len(trace) == 30 and all(math.isfinite(t["reward"]) and math.isfinite(t["baseline"]) for t in trace)
    family = scale(space, measures, seed_arch, space.scaling, False)
    assert len(family) > 2 and [r["params"] for r in family] == sorted(r["params"] for r in family)
    assert finite_measures({"ntk": math.inf, "length_distortion": math.nan},
                           {"ntk": [3.0, 5.0], "length_distortion": [2.0, 1.0]}) == {"ntk": 5.0, "length_distortion": 1.0}


def test_width_candidates_are_the_originals_and_reach_asvit_large():
    """search/grow.py: round(h * (1 + r)) for r in 5/10/15/20 %, Python's rounding, repeats dropped."""
    from nas.search.asvit import width_candidates

    growth = [0.05, 0.10, 0.15, 0.20]
    assert width_candidates(8, growth) == [8, 9, 10]  # 8.4, 8.8, 9.2, 9.6
    assert width_candidates(10, growth) == [10, 11, 12]  # 10.5 rounds to even
    assert width_candidates(11, growth) == [12, 13]  # from here every step widens
    assert width_candidates(45, growth) == [47, 50, 52, 54]
    reach = {8}
    for _ in range(10):  # As-ViT Large (depths 5,2,5,2) is 10 steps from [1,1,1,1]
        reach = {w for h in reach for w in width_candidates(h, growth)}
    assert 45 in reach  # proxy width 45 = C 180 / 4, As-ViT Large's width


def test_scaling_steps_take_the_original_width_candidates():
    from nas.search.asvit import scale, width_candidates

    space = get_space("asvit")  # the 80 M target: a long family

    def measures(arch, role):  # deterministic synthetic values, so only the rule is under test
        h = int(arch.id[-6:], 16)
        return {"ntk": 10.0 + h % 97, "length_distortion": 1.0 + h % 89}

    family = scale(space, measures, space.presets()["seed"], space.scaling, False)
    assert len(family) > 8 and family[0]["proxy_width"] == 8
    for prev, row in zip(family, family[1:]):
        assert row["proxy_width"] in width_candidates(prev["proxy_width"], space.scaling["growth"])
        assert row["width"] == 4 * row["proxy_width"]
