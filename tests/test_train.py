"""Supernet training on real Fashion-MNIST: it learns, resumes bit-exactly, survives NaN, and
its samplers do what the papers say."""
import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
import time

import numpy as np
import pytest
import torch

from conftest import REPO, Planted, nas_cli
from nas.data import FASHION_MNIST_DIR
from nas.spaces import get_space
from nas.train.config import TrainConfig
from nas.train.losses import alpha_divergence, soft_cross_entropy
from nas.train.samplers import make_sampler
from nas.train.checkpoint import CHECKPOINT, read_checkpoint
from nas.train.trainer import Trainer, TrainingError

needs_fmnist = pytest.mark.skipif(not FASHION_MNIST_DIR.exists(),
                                  reason="Fashion-MNIST not installed: apt-get install dataset-fashion-mnist")


def small(**kw):
    base = dict(space="elasticvit-tiny", data="fashion-mnist", sampler="sandwich", steps=12, batch_size=16, heldout=500,
                bn_batches=2, eval_random=1, checkpoint_every=4, threads=1, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@needs_fmnist
def test_supernet_learns_fashion_mnist(tmp_path):
    """60 steps of 64 images (3,840 images, about 30 s on 2 cores; the sandwich of the largest and
    the smallest subnet only): both are far above chance (10 %) on the held-out split (0.71 / 0.55 seen)."""
    cfg = small(steps=60, batch_size=64, heldout=2000, bn_batches=4, threads=2, lr=3e-3, subnets=2)
    result = Trainer(cfg, tmp_path, progress=False).run()
    acc = {e["role"]: e["accuracy"] for e in result["evaluation"]}
    assert acc["smallest"] > 0.45 and acc["largest"] > 0.45, acc
    steps = rows(tmp_path / "steps.csv")
    assert {r["role"] for r in steps} == {"largest", "smallest"}
    first = np.mean([float(r["loss"]) for r in steps if int(r["step"]) <= 10])
    last = np.mean([float(r["loss"]) for r in steps if int(r["step"]) > 50])
    assert last < first - 0.5  # the loss falls
    assert (tmp_path / "train.png").read_bytes()[:4] == b"\x89PNG"


@needs_fmnist
def test_resume_is_bit_exact(tmp_path):
    # 800 training images: 50 steps per epoch, banks re-scored every 12 steps, at the resume step too
    cfg = small(sampler="elasticvit", ema=0.9, heldout=59200, steps=28, checkpoint_every=12, eval_images=512)
    full = Trainer(cfg, tmp_path / "full", progress=False)
    assert full.steps_per_epoch == 50
    (tmp_path / "full").mkdir()
    full.run()
    assert sum(len(b) for b in full.sampler.banks) > 0
    (tmp_path / "cut").mkdir()
    Trainer(cfg, tmp_path / "cut", progress=False).run(stop_at=15)  # interrupted after step 15; checkpoint at 12
    resumed = Trainer(cfg, tmp_path / "cut", progress=False)
    resumed.load(tmp_path / "cut" / CHECKPOINT)
    assert resumed.step == 12
    resumed.run()
    a, b = full.supernet.state_dict(), resumed.supernet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(x, y) for x, y in zip(full.ema.state_dict().values(), resumed.ema.state_dict().values()))
    assert full.sampler.state_dict() == resumed.sampler.state_dict()
    assert (tmp_path / "full" / "steps.csv").read_text() == (tmp_path / "cut" / "steps.csv").read_text()


@needs_fmnist
def test_kill9_and_cli_resume(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--space", "elasticvit-tiny", "--data", "fashion-mnist", "--steps", "12", "--batch-size", "16",
            "--heldout", "500", "--bn-batches", "1", "--checkpoint-every", "4", "--threads", "1", "--out", str(out),
            "--no-progress"]
    ref = nas_cli(*args[:-3], "--out", str(tmp_path / "ref"), "--no-progress", "--json")
    assert ref.returncode == 0, ref.stderr
    proc = subprocess.Popen([sys.executable, "-m", "nas.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    while not (out / CHECKPOINT).exists() and proc.poll() is None:  # no deadline: a loaded machine is only slower
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL  # killed, not finished on its own
    killed_at = read_checkpoint(out / CHECKPOINT)["step"]
    assert 0 < killed_at < 12  # the kill landed mid-training: the resume has steps left to do
    res = nas_cli("train", "--resume", str(out), "--no-progress", "--json")
    assert res.returncode == 0, res.stderr
    assert f"resuming {out} at step {killed_at} of 12" in res.stderr
    a = read_checkpoint(out / CHECKPOINT)["model"]
    b = read_checkpoint(tmp_path / "ref" / CHECKPOINT)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda out: [{k: v for k, v in e.items() if k != "seconds"} for e in json.loads(out)["evaluation"]]  # noqa: E731
    assert strip(res.stdout) == strip(ref.stdout)


@needs_fmnist
def test_non_finite_loss_stops_with_checkpoint_intact(tmp_path, monkeypatch):
    cfg = small(steps=40, max_bad_steps=3)
    trainer = Trainer(cfg, tmp_path, progress=False)
    normalise = trainer.data.normalise

    def poisoned(images):  # from step 6 on, every batch is NaN
        x = normalise(images)
        return x * float("nan") if trainer.step >= 6 else x

    monkeypatch.setattr(trainer.data, "normalise", poisoned)
    with pytest.raises(TrainingError, match="not finite for 3 steps in a row"):
        trainer.run()
    ck = read_checkpoint(tmp_path / CHECKPOINT)
    assert ck["step"] == 4  # the last scheduled checkpoint before the bad steps
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    skipped = [r for r in rows(tmp_path / "steps.csv") if r["skipped"] == "1"]
    assert {int(r["step"]) for r in skipped} == {7, 8, 9}


@needs_fmnist
def test_one_bad_batch_is_skipped_and_leaves_no_trace(tmp_path, monkeypatch):
    cfg = small(steps=10, sampler="elasticvit", checkpoint_every=10)
    trainer = Trainer(cfg, tmp_path, progress=False)
    normalise = trainer.data.normalise
    monkeypatch.setattr(trainer.data, "normalise",
                        lambda images: normalise(images) * (float("inf") if trainer.step == 5 else 1.0))
    result = trainer.run()
    assert result["skipped_steps"] == 1 and result["step"] == 10
    ck = read_checkpoint(tmp_path / CHECKPOINT)
    bad = [k for k, v in ck["model"].items() if v.is_floating_point() and not torch.isfinite(v).all()]
    assert bad == []  # parameters and BN statistics
    assert all(np.isfinite(score) for bank in trainer.sampler.banks for _, score in bank)


@needs_fmnist
def test_resume_before_the_first_checkpoint_starts_over(tmp_path):
    out = tmp_path / "run"
    r = nas_cli("train", "--space", "elasticvit-tiny", "--data", "fashion-mnist", "--steps", "3", "--batch-size", "16",
                "--heldout", "200", "--bn-batches", "1", "--threads", "1", "--checkpoint-every", "100", "--out", str(out),
                "--no-progress")
    assert r.returncode == 0, r.stderr
    (out / CHECKPOINT).unlink()  # as if killed before any checkpoint
    r = nas_cli("train", "--resume", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert [int(x["step"]) for x in rows(out / "steps.csv")] == [1] * 4 + [2] * 4 + [3] * 4


def test_complexity_sampler_walks_one_level_at_a_time():
    space = get_space("elasticvit-tiny")
    s = make_sampler("complexity", space, np.random.default_rng(0), 4)
    levels, last = [], None
    for _ in range(60):
        picks = s.sample(0)
        level = s.levels.index(s.info()["level"])
        if last is not None:
            assert abs(level - last) <= 1
        levels.append(level)
        last = level
        macs = space.cost(space.genomes([p.arch for p in picks]))["macs"] / 1e6
        lo, hi = s.levels[level], s.levels[level] + s.window
        assert all(lo <= m <= hi for m, p in zip(macs, picks) if p.role == "level")
        assert [p.role for p in picks] == ["level"] * 3 + ["min"] and picks[-1].target == "mean"
    assert len(set(levels)) > 2


def test_elasticvit_min_archs_follow_the_paper():
    space = get_space("elasticvit")
    s = make_sampler("complexity", space, np.random.default_rng(0), 4)
    macs = {}
    for k, level in enumerate(s.levels):
        s.level = k
        macs[level] = round(float(space.cost(space.genomes([s.min_arch()]))["macs"][0]) / 1e6)
    # levels <= 220 use the 37 M MACs min arch, <= 420 the 160 M one, larger levels the 289 M one
    assert macs == {100: 37, 200: 37, 300: 160, 400: 160, 500: 289, 700: 289, 900: 289, 1200: 289}


def test_performance_aware_banks_and_preference():
    space = get_space("elasticvit-tiny")
    s = make_sampler("elasticvit", space, np.random.default_rng(0), 4)
    cap = s.capacity(s.level)
    for i in range(cap + 5):  # later subnets score better and push out the worst
        s.observe(s.level_picks(0)[0], float(i))
    bank = s.banks[s.level]
    assert len(bank) == cap and min(score for _, score in bank) >= 3.0  # 0, 1 and 2 were pushed out
    s.rate_start = 1.0  # always exploit once the bank is half full
    picks = s.level_picks(0)
    assert {p.role for p in picks} == {"bank"}
    state = s.state_dict()
    t = make_sampler("elasticvit", space, np.random.default_rng(5), 4)
    t.load_state_dict(state)
    assert t.state_dict() == state
    # the preference keeps the candidate whose transformer stages are wider and shallower
    enc = space.to_encoding(space.smallest())
    wide = json.loads(json.dumps(enc))
    wide[1][3:] = [48, 64, 80, 96]  # widest transformer stages, depth 1 each
    wide[6] = [3, 4, 5, 6]
    deep = json.loads(json.dumps(enc))
    deep[2][3:] = [2, 2, 2, 2]  # narrowest transformer stages, depth 2 each
    for key in (5, 6, 7, 8, 9):
        deep[key] = [deep[key][0]] * 8
    deep[6] = [2, 2, 3, 3, 4, 4, 4, 4]  # heads = width / 16
    s.level = 0
    pref = s.preference([space.from_encoding(deep), space.from_encoding(wide)])
    assert int(np.argmin(pref)) == 1, pref


def test_alpha_divergence_definition():
    torch.manual_seed(0)
    target = torch.softmax(torch.randn(8, 10), -1)
    logits = torch.randn(8, 10, requires_grad=True)
    at_target = torch.log(target).requires_grad_(True)  # a student that already matches: no gradient
    grad = torch.autograd.grad(alpha_divergence(at_target, target), at_target)[0]
    assert grad.abs().max() < 1e-6
    grad = torch.autograd.grad(alpha_divergence(logits, target), logits)[0]
    assert grad.abs().max() > 1e-3
    # with alpha = 1 the surrogate's gradient is KL(p || q)'s gradient, i.e. soft cross-entropy's
    from nas.train.losses import _f_divergence

    _, surrogate = _f_divergence(logits, target, 1.0, iw_clip=1e9)
    g1 = torch.autograd.grad(surrogate.mean(), logits)[0]
    g2 = torch.autograd.grad(soft_cross_entropy(logits, target), logits)[0]
    torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-6)


@needs_fmnist
def test_train_cli_errors_write_nothing(tmp_path):
    for args, msg in [(["--space", "elasticvit-tiny", "--data", "fashion-mnist"], "give --steps or --epochs"),
                      (["--space", "elasticvit-tiny", "--data", "fashion-mnst", "--steps", "5"], "did you mean 'fashion-mnist'"),
                      (["--space", "elasticvit", "--data", "fashion-mnist", "--steps", "5"], "1000-class head"),
                      (["--space", "elasticvit-tiny", "--data", "fashion-mnist", "--steps", "5", "--sampler", "sandwitch"],
                       "did you mean 'sandwich'"),
                      (["--space", "elasticvit-tiny", "--data", "fashion-mnist", "--steps", "5", "--teacher", "resnet18"],
                       "NAME:CHECKPOINT")]:
        r = nas_cli("train", *args, cwd=tmp_path)
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert list(tmp_path.iterdir()) == []


@needs_fmnist
def test_teacher_predictions_replace_labels(tmp_path):
    import timm

    teacher = timm.create_model("resnet10t", num_classes=10)
    torch.save(teacher.state_dict(), tmp_path / "t.pth")
    cfg = small(steps=2, teachers=(f"resnet10t:{tmp_path / 't.pth'}",), eval_random=0)
    tr = Trainer(cfg, tmp_path, progress=False)
    x = tr.data.normalise(tr.data.train.images[:4])
    probs = tr._teacher_probs(x)
    assert probs.shape == (4, 10) and torch.allclose(probs.sum(-1), torch.ones(4))
    # ElasticViT's compute_dist_loss: one teacher gets 0.5 label CE + 0.5 KD, an ensemble KD alone
    logits, y = torch.randn(4, 10), torch.tensor([0, 1, 2, 3])
    ce = torch.nn.functional.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
    torch.testing.assert_close(tr._label_loss(logits, y, probs), 0.5 * ce + 0.5 * soft_cross_entropy(logits, probs))
    tr.teachers = tr.teachers * 2
    torch.testing.assert_close(tr._label_loss(logits, y, probs), soft_cross_entropy(logits, probs))
    tr.teachers = tr.teachers[:1]
    import nas.train.trainer as trainer_mod

    seen = []  # every target the label-role losses are given during training
    real = trainer_mod.soft_cross_entropy

    def spy(logits, target):
        if tr._last[0].target == "label":  # (in-place distillation targets go through it too)
            seen.append((target.detach().clone(), tr._teacher_probs(tr._last[1]).detach().clone()))
        return real(logits, target)

    orig_forward = tr._forward

    def remember(pick, x):
        tr._last = (pick, x)
        return orig_forward(pick, x)

    tr._forward, trainer_mod.soft_cross_entropy = remember, spy
    try:
        tr.run()
    finally:
        trainer_mod.soft_cross_entropy = real
    assert seen
    for target, teacher in seen:  # the teacher's soft predictions, not one-hot labels
        assert target.dtype.is_floating_point and target.dim() == 2
        torch.testing.assert_close(target, teacher)
        assert (target.max(-1).values < 1).all()


@needs_fmnist
def test_ddp_with_torchrun_on_cpu(tmp_path):
    """Two ranks (gloo, one thread each): the data is sharded, the same subnets are drawn on every
    rank, rank 0 writes the run directory and the checkpoint."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = Path(sys.executable).parent / "torchrun"  # the running environment's, wherever it lives
    cmd = [str(torchrun) if torchrun.exists() else "torchrun", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), "-m", "nas.cli", "train", "--space", "elasticvit-tiny", "--data", "fashion-mnist",
           "--steps", "8", "--batch-size", "16", "--heldout", "500", "--bn-batches", "1", "--threads", "1",
           "--out", str(tmp_path / "run"),
           "--no-progress", "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout[r.stdout.index("{"):])
    assert out["step"] == 8 and len(out["evaluation"]) == 4
    ck = read_checkpoint(tmp_path / "run" / CHECKPOINT)
    assert ck["step"] == 8
    steps = rows(tmp_path / "run" / "steps.csv")
    assert len({r["step"] for r in steps}) == 8  # one log, written by rank 0


def test_a_planted_checkpoint_is_refused_and_runs_nothing(tmp_path):
    from nas.errors import UserError
    from nas.scorers import resolve_checkpoint
    from nas.train.checkpoint import convert_legacy

    marker = tmp_path / "pwned"
    run = tmp_path / "old"
    run.mkdir()
    bad = run / "checkpoint.pt"
    torch.save({"format": 1, "model": {}, "space_fingerprint": "x", "sampler": Planted(marker)}, bad)
    for what in (bad, run):  # the file itself or a run directory holding only it
        with pytest.raises(UserError, match="pickle format, which is no longer read"):
            read_checkpoint(resolve_checkpoint(str(what)), "cpu", "--supernet")
        r = nas_cli("search", "--space", "elasticvit-tiny", "--supernet", str(what), "--budget", "4",
                    "--out", str(tmp_path / "run"), "--no-progress")
        assert r.returncode == 2 and "nas convert-checkpoint" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    r = nas_cli("train", "--resume", str(run), "--no-progress")  # not a silent fresh start either
    assert r.returncode == 2
    with pytest.raises(UserError, match="refusing to unpickle it: it holds objects other than tensors"):
        convert_legacy(bad)  # conversion reads with weights_only=True
    assert not marker.exists() and not (run / CHECKPOINT).exists()
    torch.load(bad, weights_only=False)  # the same file through an unrestricted load does run code
    assert marker.exists()


def test_checkpoint_state_round_trips_exactly(tmp_path):
    """Tensors bit for bit (bf16 and views of one storage included), int-keyed dicts, tuples, NaN."""
    base = torch.randn(6, 4)
    state = {"model": {"w": base, "w_t": base.t(), "half": base[:3], "b": torch.randn(3).to(torch.bfloat16),
                       "n": torch.tensor(7)},
             "optimizer": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(2)}},
                           "param_groups": [{"betas": (0.9, 0.999), "params": [0], "lr": float("nan")}]},
             "sampler": {"banks": [[[1, 2], 0.5]], "$odd": 1}, "step": 12, "ema": None}
    from nas.train.checkpoint import write_checkpoint

    write_checkpoint(tmp_path / CHECKPOINT, state)
    back = read_checkpoint(tmp_path / CHECKPOINT)
    for k, t in state["model"].items():
        assert back["model"][k].dtype == t.dtype and torch.equal(back["model"][k], t)
    assert list(back["optimizer"]["state"]) == [0]  # an int key, as torch's optimizer needs it
    assert torch.equal(back["optimizer"]["state"][0]["exp_avg"], state["optimizer"]["state"][0]["exp_avg"])
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert np.isnan(back["optimizer"]["param_groups"][0]["lr"])
    assert back["sampler"] == state["sampler"] and back["step"] == 12 and back["ema"] is None
    only = read_checkpoint(tmp_path / CHECKPOINT, only=("model",))
    assert only["optimizer"] is None and torch.equal(only["model"]["w"], base)
    from safetensors.torch import load_file

    assert torch.equal(load_file(tmp_path / CHECKPOINT)["model.w"], base)  # plain safetensors for other tools
    (tmp_path / "junk").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json")
    from nas.errors import UserError

    with pytest.raises(UserError, match="not a vitnas checkpoint"):
        read_checkpoint(tmp_path / "junk")


@needs_fmnist
def test_a_legacy_checkpoint_converts_and_resumes(tmp_path):
    """A vitnas 0.1 checkpoint.pt (tensors and plain data) becomes a checkpoint.safetensors that
    resumes to the same weights as an uninterrupted run."""
    from nas.train.checkpoint import LEGACY

    cfg = small(steps=4, checkpoint_every=2, eval_random=0)
    (tmp_path / "full").mkdir()
    full = Trainer(cfg, tmp_path / "full", progress=False)
    full.run()
    (tmp_path / "cut").mkdir()
    cut = Trainer(cfg, tmp_path / "cut", progress=False)
    (tmp_path / "cut" / "config.toml").write_text(cut.cfg.to_toml())  # as `nas train` writes it
    cut.run(stop_at=2)
    state = read_checkpoint(tmp_path / "cut" / CHECKPOINT)
    (tmp_path / "cut" / CHECKPOINT).unlink()
    torch.save(dict(state, format=1), tmp_path / "cut" / LEGACY)  # as vitnas 0.1 wrote it
    r = nas_cli("convert-checkpoint", str(tmp_path / "cut"))
    assert r.returncode == 0 and str(tmp_path / "cut" / CHECKPOINT) in r.stdout, r.stderr
    r = nas_cli("train", "--resume", str(tmp_path / "cut"), "--no-progress")
    assert r.returncode == 0 and "at step 2 of 4" in r.stderr, r.stderr
    a, b = full.supernet.state_dict(), read_checkpoint(tmp_path / "cut" / CHECKPOINT)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
