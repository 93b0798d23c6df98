"""Distributed scoring on a real Ray cluster (a head and a worker node on loopback, 1 CPU each):
the same front as a local search, re-dispatch after a killed actor, an architecture that keeps
killing workers becomes a failed row, and `nas resume` of a killed `--ray` driver."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import pytest

# before ray is imported anywhere: no usage reporting, no token file, every socket on loopback
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from conftest import REPO, nas_cli  # noqa: E402

# naswot on the tiny space: ~50 ms an architecture, so the whole file stays short. Batches of 16
# keep every actor's queue full for most of a batch, so a kill lands on an actor with work queued.
SEARCH = dict(space="elasticvit-tiny", devices=(), objectives="naswot,macs", budget=40, population=16, seed=1, threads=1)
CLI_ARGS = ["--space", "elasticvit-tiny", "--objectives", "naswot,macs", "--budget", "40", "--population", "16",
            "--seed", "1", "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    yield c
    c.shutdown()


def _search(out, runner=None, **overrides):
    """An in-process search as `nas search` runs it; returns (run dir, runner)."""
    from nas.config import SearchConfig
    from nas.runs import new_run_dir
    from nas.search.loop import make_runner, prepare, run

    session = prepare(SearchConfig(**{**SEARCH, **overrides}))
    runner = runner(session) if runner else make_runner(session)
    run_dir = new_run_dir(session.cfg, out, session.label)
    run(session, run_dir, progress=False, plot=False, runner=runner)
    return run_dir, runner


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    run_dir, _ = _search(tmp_path_factory.mktemp("local") / "run")
    return run_dir


def _records(run_dir):
    return [json.loads(ln) for ln in (run_dir / "evals.jsonl").read_text().splitlines()]


def _ids(run_dir):
    return [r["id"] for r in _records(run_dir)]


def test_two_worker_search_on_two_nodes_equals_local_search(cluster, local, tmp_path):
    run_dir, runner = _search(tmp_path / "ray", ray=cluster.address, workers=2)
    assert len({node for _, node in runner.seen}) == 2  # an actor on each node
    assert sorted(_ids(run_dir)) == sorted(_ids(local))  # arrival order may differ ...
    assert (run_dir / "pareto.csv").read_bytes() == (local / "pareto.csv").read_bytes()  # ... the front does not
    assert all(r["status"] == "ok" and r["proxy_naswot"] > 0 for r in _records(run_dir))


def test_killed_actor_is_restarted_and_its_architectures_redispatched(cluster, local, tmp_path):
    from nas.search.loop import make_runner

    made = []
    thread = threading.Thread(target=_search, args=(tmp_path / "ray",),
                              kwargs=dict(runner=lambda s: made.append(make_runner(s)) or made[0],
                                          ray=cluster.address, workers=2))
    thread.start()
    log = tmp_path / "ray" / "evals.jsonl"
    while not (log.exists() and log.read_bytes().count(b"\n") >= 5 and made and made[0].pids()):
        assert thread.is_alive(), "search ended before an actor could be killed"  # no deadline: pytest-timeout
        time.sleep(0.005)
    os.kill(made[0].pids()[0], signal.SIGKILL)  # mid-batch: the actor has architectures queued
    thread.join(timeout=300)
    assert not thread.is_alive()
    runner = made[0]
    assert runner.deaths == 1  # the kill was seen while the run went on
    ids = _ids(tmp_path / "ray")
    assert len(ids) == len(set(ids)) == SEARCH["budget"]  # each architecture exactly once
    assert all(r["status"] == "ok" for r in _records(tmp_path / "ray"))
    assert (tmp_path / "ray" / "pareto.csv").read_bytes() == (local / "pareto.csv").read_bytes()


def test_lost_node_keeps_received_results_and_the_run_completes(cluster, tmp_path):
    """A third node joins, gets an actor, and dies mid-run: its actor has no room to restart
    (the other nodes are busy), so the remaining two finish the search. (A longer search than the
    others: the lost node's worker process may finish a few tasks before it notices.)"""
    from nas.search.loop import make_runner

    node = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    made = []
    thread = threading.Thread(target=_search, args=(tmp_path / "ray",),
                              kwargs=dict(runner=lambda s: made.append(make_runner(s)) or made[0],
                                          ray=cluster.address, workers=3, budget=160))
    thread.start()
    log = tmp_path / "ray" / "evals.jsonl"
    while not (log.exists() and log.read_bytes().count(b"\n") >= 5 and made and len(made[0].ready) == 3):
        assert thread.is_alive(), "search ended before the node could be removed"
        time.sleep(0.005)
    cluster.remove_node(node, allow_graceful=False)
    received = log.read_text()
    thread.join(timeout=300)
    assert not thread.is_alive() and made[0].deaths == 1
    assert log.read_text().startswith(received)  # what arrived before the loss is kept as it was
    ids = _ids(tmp_path / "ray")
    assert len(ids) == len(set(ids)) == 160
    assert all(r["status"] == "ok" for r in _records(tmp_path / "ray"))


def _sabotaged_evaluator(cfg, kills: str, raises: str):
    """The real evaluator, except that scoring ``kills`` ends the worker process (as a segfault
    or the OOM killer would) and scoring ``raises`` raises."""
    from nas.objectives import Evaluator
    from nas.search.loop import evaluator_for

    ev = evaluator_for(cfg)

    def expensive(genome):
        arch = ev.space.arch(genome).id
        if arch == kills:
            os._exit(1)
        if arch == raises:
            raise ValueError("cannot score this one")
        return Evaluator.expensive(ev, genome)

    ev.expensive = expensive
    return ev


def test_architecture_that_keeps_killing_workers_becomes_a_failed_row(cluster, local, tmp_path):
    import ray.cloudpickle

    from nas.runners import MAX_KILLS, RayRunner

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import the tests
    kills, raises = _ids(local)[0], _ids(local)[5]  # both asked in the first batch
    run_dir, runner = _search(
        tmp_path / "ray", ray=cluster.address, workers=2,
        runner=lambda s: RayRunner(partial(_sabotaged_evaluator, s.cfg, kills, raises), address=cluster.address,
                                   workers=2, threads=1))
    recs = {r["id"]: r for r in _records(run_dir)}
    assert len(recs) == len(_records(run_dir)) == SEARCH["budget"]
    assert recs[kills]["status"] == "failed"
    assert recs[kills]["error"].startswith(f"WorkerDied: the Ray worker died each of the {MAX_KILLS} times it "
                                           "scored this architecture alone; not retried")
    assert recs[raises]["status"] == "failed" and recs[raises]["error"] == "ValueError: cannot score this one"
    # the first death takes down the architecture queued behind it too: both are retried alone, and
    # only the culprit kills again; a Python exception costs no worker
    assert runner.deaths == 1 + MAX_KILLS
    assert all(r["status"] == "ok" for i, r in recs.items() if i not in (kills, raises))
    assert kills not in (run_dir / "pareto.csv").read_text()


def test_killed_ray_driver_resumes_without_recomputing(cluster, local, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "nas.cli", "search", *CLI_ARGS, "--ray", cluster.address,
                             "--workers", "2", "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    log = out / "evals.jsonl"
    while not (log.exists() and log.read_bytes().count(b"\n") >= 10):
        assert proc.poll() is None, f"search ended before it could be killed: {proc.stderr.read()}"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _ids(out)
    assert 10 <= len(before) < SEARCH["budget"]
    assert f'ray = "{cluster.address}"' in (out / "config.toml").read_text()
    res = nas_cli("resume", str(out), "--no-progress", "--json")  # on the cluster the run was started on
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["evaluated"] == SEARCH["budget"]
    after = _ids(out)
    assert after[: len(before)] == before  # finished work kept, not recomputed
    assert len(after) == len(set(after)) and sorted(after) == sorted(_ids(local))
    assert (out / "pareto.csv").read_bytes() == (local / "pareto.csv").read_bytes()


def test_ray_input_errors_are_one_line_and_write_nothing(tmp_path):
    for args, message in [(["--ray", "127.0.0.1:1"], "--ray 127.0.0.1:1: no Ray cluster answers there"),
                          (["--ray", "nonsense"], "--ray nonsense: give auto, HOST:PORT"),
                          (["--ray", "--workers", "0"], "--workers must be at least 1"),
                          (["--workers", "2"], "--workers and --gpus-per-worker need --ray")]:
        res = nas_cli("search", *CLI_ARGS, *args, "--out", str(tmp_path / "run"))
        assert res.returncode == 2 and res.stderr.startswith("error: "), res.stderr
        assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "run").exists()


def test_lut_only_search_never_starts_ray(tmp_path):
    """Nothing expensive to score: the vectorised cheap metrics stay in the driver, so even an
    unreachable address is never contacted."""
    args = ["search", "--space", "elasticvit", "--device", "pixel6", "--objectives", "latency,max:params",
            "--budget", "200", "--ray", "127.0.0.1:1", "--out", str(tmp_path / "run"), "--no-progress", "--json"]
    code = f"import sys; from nas.cli import main; main({args!r}); print('ray' in sys.modules, 'torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 0, res.stderr
    assert "--ray is not used" in res.stderr
    summary, imported = res.stdout.rsplit("\n", 2)[0], res.stdout.rsplit("\n", 2)[1]
    assert json.loads(summary)["evaluated"] == 200 and imported == "False False"


# ---- Ray Train and Ray Tune -----------------------------------------------------------------------
from nas.data import FASHION_MNIST_DIR  # noqa: E402

needs_fmnist = pytest.mark.skipif(not FASHION_MNIST_DIR.exists(),
                                  reason="Fashion-MNIST not installed: apt-get install dataset-fashion-mnist")
TRAIN_ARGS = ["--space", "elasticvit-tiny", "--data", "fashion-mnist", "--steps", "6", "--batch-size", "16",
              "--heldout", "300", "--bn-batches", "1", "--threads", "1", "--checkpoint-every", "3"]


@needs_fmnist
def test_ray_train_runs_the_common_trainer_as_ddp_over_two_nodes(cluster, tmp_path):
    import torch

    from nas.train.checkpoint import CHECKPOINT, read_checkpoint
    from nas.train.config import TrainConfig

    out = tmp_path / "run"
    res = nas_cli("train", *TRAIN_ARGS, "--ray", cluster.address, "--workers", "2", "--out", str(out), "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout)
    assert summary["step"] == 6 and {e["role"] for e in summary["evaluation"]} == {"smallest", "largest", "random"}
    cfg = TrainConfig.from_toml(out / "config.toml")
    assert cfg.workers == 2 and cfg.ray == cluster.address  # a resume trains with the same world size
    ck = read_checkpoint(out / CHECKPOINT)
    assert ck["step"] == 6
    steps = (out / "steps.csv").read_text().splitlines()[1:]
    assert sorted({int(r.split(",")[0]) for r in steps}) == list(range(1, 7))  # one log, by rank 0
    # the same two ranks under torchrun train the very same weights: Ray Train only launches the trainer
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = Path(sys.executable).parent / "torchrun"  # the running environment's, wherever it lives
    r = subprocess.run([str(torchrun) if torchrun.exists() else "torchrun", "--nproc_per_node", "2", "--master_addr",
                        "127.0.0.1", "--master_port", str(port), "-m", "nas.cli", "train", *TRAIN_ARGS,
                        "--out", str(tmp_path / "torchrun"), "--no-progress", "--json"],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr[-2000:]
    ref = read_checkpoint(tmp_path / "torchrun" / CHECKPOINT)
    assert ck["model"].keys() == ref["model"].keys()
    assert all(torch.equal(ck["model"][k], ref["model"][k]) for k in ref["model"])


@needs_fmnist
def test_tune_sweep_with_optuna_multi_objective(tmp_path):
    from nas.train.config import TrainConfig

    out = tmp_path / "sweep"
    res = nas_cli("tune", "--space", "elasticvit-tiny", "--data", "fashion-mnist", "--steps", "4", "--eval-every", "2",
                  "--batch-size", "16", "--heldout", "300", "--bn-batches", "1", "--lr", "1e-4:1e-2",
                  "--sampler", "sandwich,uniform",
                  "--search", "optuna", "--samples", "2", "--out", str(out), "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    trials = json.loads(res.stdout)["trials"]
    assert len(trials) == 2 and not any(t["error"] for t in trials)
    for t in trials:
        assert t["step"] == 4 and 0 <= t["accuracy_smallest"] <= 1 and 0 <= t["accuracy_largest"] <= 1
        cfg = TrainConfig.from_toml(Path(t["run_dir"]) / "config.toml")  # each trial is a `nas train` run
        assert (cfg.lr, cfg.sampler) == (t["lr"], t["sampler"]) and 1e-4 <= cfg.lr <= 1e-2
        assert cfg.bn_batches == 1  # the sweep's fixed settings reach every trial
        evals = (Path(t["run_dir"]) / "evals.csv").read_text().splitlines()[1:]
        assert sorted({int(r.split(",")[0]) for r in evals}) == [2, 4]  # evaluated (and reported) twice
    acc = [(t["accuracy_smallest"], t["accuracy_largest"]) for t in trials]
    beaten = [any(o[0] >= a[0] and o[1] >= a[1] and o != a for o in acc) for a in acc]
    assert [t["pareto"] for t in trials] == [not b for b in beaten]
    assert (out / "tune.csv").read_text().count("\n") == 3


def test_tune_input_errors_are_one_line(tmp_path):
    base = ["tune", "--space", "elasticvit-tiny", "--data", "fashion-mnist", "--steps", "2", "--out", str(tmp_path / "s")]
    for args, message in [(["--lr", "1e-4:1e-2"], "is a range: use --search random or optuna"),
                          (["--search", "bayes"], "unknown search 'bayes'"),
                          (["--subnets", "1,4"], "--subnets must be at least 2 for sandwich"),
                          (["--lr", "fast"], "--lr 'fast': give comma-separated values")]:
        res = nas_cli(*base, *args)
        assert res.returncode == 2 and res.stderr.startswith("error: ") and message in res.stderr, res.stderr
        assert not (tmp_path / "s").exists()
