"""Crash safety: kill -9 at any point, then `nas resume`, gives the uninterrupted run's result
without recomputing what was finished."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, nas_cli, run_search
from nas.errors import UserError

LUT_ARGS = ["--space", "elasticvit", "--device", "pixel6,pixel4", "--objectives", "latency:pixel6,max:params",
            "--max-latency", "40", "--strategy", "nsga2", "--population", "50", "--seed", "3", "--no-progress"]


def _start(args, out):
    return subprocess.Popen([sys.executable, "-m", "nas.cli", "search", *args, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})


def _kill_after(proc, log, lines):
    """SIGKILL once ``log`` has ``lines`` lines. No deadline (a loaded machine is only slower;
    pytest-timeout bounds the test): the search finishing first is the failure."""
    while True:
        if log.exists() and log.read_bytes().count(b"\n") >= lines:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        if proc.poll() is not None:
            pytest.fail(f"search ended before it could be killed: {proc.stderr.read()}")
        time.sleep(0.005)


def _evaluated_ids(run):
    return [json.loads(ln)["id"] for ln in (run / "evals.jsonl").read_text().splitlines()]


def test_kill9_then_resume_equals_uninterrupted_lut_search(tmp_path):
    budget = ["--budget", "10000"]
    full = nas_cli("search", *LUT_ARGS, *budget, "--out", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr
    proc = _start(LUT_ARGS + budget, tmp_path / "killed")
    _kill_after(proc, tmp_path / "killed" / "evals.jsonl", 3000)
    before = _evaluated_ids(tmp_path / "killed")
    assert 3000 <= len(before) < 10000
    res = nas_cli("resume", str(tmp_path / "killed"), "--no-progress")
    assert res.returncode == 0, res.stderr
    after = _evaluated_ids(tmp_path / "killed")
    assert after[: len(before)] == before  # finished work kept, nothing recomputed
    assert len(after) == len(set(after)) == 10000
    assert after == _evaluated_ids(tmp_path / "full")  # the same trajectory
    assert (tmp_path / "killed" / "pareto.csv").read_bytes() == (tmp_path / "full" / "pareto.csv").read_bytes()


def test_kill9_during_proxy_evaluation_keeps_finished_architectures(tmp_path):
    """With the default accuracy proxy each architecture is logged as soon as it is scored, so a
    kill inside a batch loses only the architecture being scored."""
    args = ["--space", "elasticvit-tiny", "--budget", "44", "--population", "40", "--threads", "1", "--no-progress"]
    full = nas_cli("search", *args, "--out", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr
    proc = _start(args, tmp_path / "killed")
    _kill_after(proc, tmp_path / "killed" / "evals.jsonl", 3)  # inside the first batch of 40 (seconds of work left)
    before = _evaluated_ids(tmp_path / "killed")
    assert 3 <= len(before) < 40
    res = nas_cli("resume", str(tmp_path / "killed"), "--no-progress", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["evaluated"] == 44
    after = _evaluated_ids(tmp_path / "killed")
    assert after[: len(before)] == before and after == _evaluated_ids(tmp_path / "full")
    assert (tmp_path / "killed" / "pareto.csv").read_bytes() == (tmp_path / "full" / "pareto.csv").read_bytes()
    rec = json.loads((tmp_path / "full" / "evals.jsonl").read_text().splitlines()[0])
    assert rec["status"] == "ok" and rec["proxy_naswot"] > 0


def test_torn_last_line_is_dropped_and_recomputed(tmp_path):
    run = run_search(tmp_path / "r", budget=200)
    log = run / "evals.jsonl"
    full = log.read_text()
    lines = full.splitlines(keepends=True)
    log.write_text("".join(lines[:120]) + lines[120][: len(lines[120]) // 2])  # a write cut by kill -9
    res = nas_cli("resume", str(run), "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "dropped an incomplete last line" in res.stderr
    assert _records(log.read_text()) == _records(full)


def _records(text):
    """Log records without their timing field, which differs between runs."""
    return [{k: v for k, v in json.loads(ln).items() if k != "seconds"} for ln in text.splitlines()]


def test_corrupt_middle_line_is_an_error_naming_the_line(tmp_path):
    run = run_search(tmp_path / "r", budget=50)
    log = run / "evals.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    lines[10] = '{"id": "x"}\n'
    log.write_text("".join(lines))
    res = nas_cli("resume", str(run))
    assert res.returncode == 2 and "evals.jsonl:11: corrupt evaluation record" in res.stderr
    assert len(res.stderr.strip().splitlines()) <= 2  # the run-directory note and one error line


@pytest.mark.parametrize("strategy", ["nsga2", "optuna-nsga2", "optuna-tpe", "evolution", "random"])
def test_every_strategy_replays_a_cut_log_exactly(tmp_path, strategy):
    """A log cut inside a batch (what kill -9 leaves) resumes into the uninterrupted result."""
    budget = 90 if strategy == "optuna-tpe" else 157
    full = run_search(tmp_path / "full", strategy=strategy, budget=budget, max_latency=30.0)
    cut = run_search(tmp_path / "cut", strategy=strategy, budget=budget, max_latency=30.0)
    log = cut / "evals.jsonl"
    log.write_text("".join(log.read_text().splitlines(keepends=True)[:73]))
    res = nas_cli("resume", str(cut), "--no-progress")
    assert res.returncode == 0, res.stderr
    assert _evaluated_ids(cut) == _evaluated_ids(full)
    assert (cut / "pareto.csv").read_bytes() == (full / "pareto.csv").read_bytes()


def test_resume_extends_budget_and_refuses_changed_tables(tmp_path):
    run = run_search(tmp_path / "r", budget=110)  # ends inside a batch of 20
    res = nas_cli("resume", str(run), "--budget", "157", "--no-progress", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["evaluated"] == 157
    ref = run_search(tmp_path / "ref", budget=157)
    assert (run / "pareto.csv").read_bytes() == (ref / "pareto.csv").read_bytes()
    cfg = (run / "config.toml").read_text()
    (run / "config.toml").write_text(cfg.replace('space = "', 'space = "x'))
    assert nas_cli("resume", str(run)).returncode == 2
    (run / "config.toml").write_text(cfg.replace("@", "@0"))  # a table version that is not the shipped one
    res = nas_cli("resume", str(run))
    assert res.returncode == 2 and "changed since the run started" in res.stderr


def test_resume_of_a_missing_run(tmp_path):
    res = nas_cli("resume", str(tmp_path / "nope"))
    assert res.returncode == 2 and "not a directory" in res.stderr
    (tmp_path / "empty").mkdir()
    res = nas_cli("resume", str(tmp_path / "empty"))
    assert res.returncode == 2 and "config.toml does not exist" in res.stderr


def test_config_round_trips(tmp_path):
    from nas.config import SearchConfig

    cfg = SearchConfig(space="elasticvit", devices=("pixel6", "pixel1"), max_latency=12.5, fingerprints={"space": "ab"})
    p = tmp_path / "c.toml"
    p.write_text(cfg.to_toml())
    assert SearchConfig.from_toml(p) == cfg
    p.write_text("colour = 'red'\n" + cfg.to_toml())
    with pytest.raises(UserError, match="unknown field"):
        SearchConfig.from_toml(p)
