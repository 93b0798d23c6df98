"""MPCViT's differentiable search (`nas search --strategy mpcvit`): binarisation, inputs, and a
tiny real run with distillation and resume."""
import csv
import json

import numpy as np
import pytest

from conftest import nas_cli
from nas.data import FASHION_MNIST_DIR
from nas.search.mpcvit import binarise, rs_count
from nas.spaces import get_space

TINY = """
family = "mpcvit"
name = "mpcvit-tiny-test"
resolution = 8
patch = 4
in_chans = 3
num_classes = 10
layers = 2
heads = 2
dim = 8
mlp_ratio = 2
gelu_tokens = true
"""
needs_fmnist = pytest.mark.skipif(not FASHION_MNIST_DIR.exists(), reason="Fashion-MNIST not installed")


def test_rs_count_is_the_released_codes():
    assert [rs_count(m, 28) for m in (0.1, 0.3, 0.5, 0.7)] == [3, 9, 14, 20]  # README: 3 / 9 / 14 / 20
    assert rs_count(1.0, 28) == 28


def test_binarisation_is_global_top_k():
    space = get_space("mpcvit-cifar")
    alpha = np.linspace(0, 1, 28).reshape(7, 4)  # increasing: the last layers rank highest
    arch = binarise(space, alpha, 0.3)
    heads = space.decode(arch)["heads"].split(",")
    assert heads == ["0000"] * 4 + ["0001", "1111", "1111"]  # whole layers become ScalAttn
    alpha[0, 0] = 5.0
    assert space.decode(binarise(space, alpha, 0.1))["heads"].split(",")[0] == "1000"


def test_beta_keeps_the_top_tokens(tmp_path):
    p = tmp_path / "t.toml"
    p.write_text(TINY)
    space = get_space(p)
    beta = np.arange(10, dtype=float).reshape(2, 5)  # 5 tokens per layer; the second layer ranks higher
    arch = binarise(space, np.ones((2, 2)), 1.0, beta, 0.3)  # keep GeLU on 10 - int(7.0) = 3 tokens
    lin = space.linear_tokens(np.asarray([arch.genome]))[0]
    assert lin[0].all() and lin[1].tolist() == [True, True, False, False, False]


@pytest.mark.parametrize("extra, message", [
    (["--mu", "0.5,1.5"], "--mu 1.5: every RSAttn ratio must be in (0, 1]"),
    (["--mu", "0"], "--mu 0: every RSAttn ratio must be in (0, 1]"),
    (["--mu", "0.5", "--beta-ratio", "0.5"], "--beta-ratio needs a space with GeLU token genes"),
    (["--mu", "0.5", "--teacher", "nowhere"], "not a finished `nas train` run directory"),
])
def test_bad_design_input_is_one_line_exit_2(tmp_path, extra, message):
    r = nas_cli("search", "--space", "mpcvit-mini", "--strategy", "mpcvit", "--data", "fashion-mnist", "--steps", "2",
                "--device", "mpc-semi2k-wan", *extra, cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert not list(tmp_path.iterdir())  # nothing written


def test_designer_flags_need_the_designer(tmp_path):
    r = nas_cli("search", "--space", "mpcvit-mini", "--device", "mpc-semi2k-wan", "--mu", "0.5", cwd=tmp_path)
    assert r.returncode == 2 and "are for --strategy mpcvit" in r.stderr
    r = nas_cli("search", "--space", "nb201", "--strategy", "mpcvit", "--data", "fashion-mnist", "--steps", "2",
                cwd=tmp_path)
    assert r.returncode == 2 and "needs an MPCViT space" in r.stderr


@needs_fmnist
def test_tiny_design_with_teacher_and_resume(tmp_path):
    space_file = tmp_path / "t.toml"
    space_file.write_text(TINY)
    teacher = tmp_path / "teacher"
    r = nas_cli("train", "--space", str(space_file), "--arch", "all-softmax", "--data", "fashion-mnist", "--steps", "3",
                "--batch-size", "16", "--heldout", "200", "--bn-batches", "1", "--out", str(teacher), "--no-progress")
    assert r.returncode == 0, r.stderr
    run = tmp_path / "run"
    args = ["search", "--space", str(space_file), "--strategy", "mpcvit", "--mu", "0.5", "--data", "fashion-mnist",
            "--steps", "3", "--beta-ratio", "0.6", "--teacher", str(teacher), "--device", "mpc-semi2k-wan,mpc-semi2k-lan",
            "--no-progress", "--json"]
    r = nas_cli(*args, "--out", str(run))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    settings = {row["setting"]: row for row in out["rows"]}
    assert set(settings) == {"mu0.5", "all-rs", "all-scal"}
    assert settings["mu0.5"]["heads"].count("1") == 2  # 4 - int(0.5 * 4) RSAttn heads
    assert settings["all-scal"]["mu"] == 0 and settings["all-rs"]["mu"] == 1
    assert all(0 <= row["accuracy"] <= 1 and row["latency_mpc-semi2k-wan_ms"] > 0 for row in out["rows"])
    alphas = json.loads((run / "alphas.json").read_text())
    assert np.asarray(alphas["alpha"]).shape == (2, 2) and np.asarray(alphas["beta"]).shape == (2, 5)
    assert {p.name for p in run.iterdir()} >= {"search", "retrain-mu0.5", "retrain-all-rs", "evals.jsonl", "pareto.csv"}
    log = (run / "evals.jsonl").read_text()
    assert len(log.splitlines()) == 3 and '"mu":0.5' in log
    front = list(csv.DictReader((run / "pareto.csv").open()))
    assert front and {r["arch_id"] for r in front} <= {row["arch_id"] for row in out["rows"]}
    # accuracy is maximised, latency minimised: the all-ScalAttn network is never dominated on latency
    assert settings["all-scal"]["arch_id"] in {r["arch_id"] for r in front}
    r = nas_cli("resume", str(run), "--no-progress", "--json")
    assert r.returncode == 0, r.stderr
    assert (run / "evals.jsonl").read_text() == log  # nothing retrained
    page = (run / "report.html").read_text()  # the report, as a search writes it
    assert page.count("data:image/png;base64,") == 4 and "MPCViT" in page and "retrain-mu0.5/" in page
    # an exported row carries the weights the run retrained it to: its held-out accuracy is the row's
    k = next(i for i, row in enumerate(front) if row["arch_id"] == settings["mu0.5"]["arch_id"]) \
        if settings["mu0.5"]["arch_id"] in {row["arch_id"] for row in front} else 0
    r = nas_cli("export", str(run), "--point", str(k), "--format", "torch", "--out", str(tmp_path / "exp"), "--json")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["weights"] == "trained" and rec["max_abs_err_torch"] == 0
    import timm

    import nas.export  # noqa: F401  (registers vitnas_<family>)
    from nas.data import load_data
    from nas.train.bn import accuracy

    model = timm.create_model("vitnas_mpcvit", pretrained_cfg_overlay=dict(file=str(tmp_path / "exp" / "model.safetensors")))
    data = load_data("fashion-mnist", heldout=2000, seed=0)  # the retraining's held-out split (DEFAULTS)
    acc, _ = accuracy(model.eval(), ((data.normalise(x), y) for x, y in data.raw_batches(data.heldout, 512)))
    row = next(row for row in out["rows"] if row["arch_id"] == front[k]["arch_id"])
    assert acc == pytest.approx(row["accuracy"], abs=1e-9)


def test_alpha_and_beta_are_weight_decayed_as_the_released_optimiser_does():
    """timm's optimiser (the released code's) decays every parameter of two or more dimensions:
    the 4-D alpha and the 3-D beta too; the trainer's rule for this family otherwise decays only
    Linear weights."""
    from nas.train.trainer import _param_groups

    space = get_space("mpcvit-mini")
    net = space.build(space.presets()["all-rs"])
    alphas, betas = net.enable_mixture(), net.enable_gelu_mixture()
    decay, rest = _param_groups(net, 0.06)
    ids = {id(p) for p in decay["params"]}
    assert all(id(a) in ids for a in alphas) and all(id(b) in ids for b in betas)
    assert decay["weight_decay"] == 0.06 and not any(id(a) in {id(p) for p in rest["params"]} for a in alphas)
    assert all(p.dim() > 1 for p in decay["params"])  # biases and norms stay undecayed
