"""Ray cluster jobs for real: a head started with `ray start --head --block` on loopback (its own
ports and temp dir, logical GPUs, the dashboard and its Jobs API), searches submitted with
`ray job submit` and `JobSubmissionClient`, GPU placement, and a killed local driver that leaves no
Ray process behind. Multi-node behaviour stays on ray.cluster_utils.Cluster (tests/test_ray.py)."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from functools import partial
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # every socket on 127.0.0.1

from conftest import REPO, nas_cli  # noqa: E402
from nas.runners import session_pids  # noqa: E402

pytest.importorskip("ray.dashboard", reason="the Jobs API needs ray[default] (the `cluster` extra)")

BIN = Path(sys.executable).parent
SEARCH = ["search", "--space", "elasticvit-tiny", "--objectives", "naswot,macs", "--budget", "24", "--population", "8",
          "--seed", "2", "--threads", "1"]
ON_RAY = ["--ray", "--workers", "2"]  # in a job, --ray alone joins the cluster in RAY_ADDRESS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    # the head's PATH starts with this environment's bin, so a job's `nas` is this checkout's
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def head():
    """One head for the module: 4 logical CPUs, 2 logical GPUs, the dashboard on a free loopback port.
    Torn down by stopping the --block process and then every process under its temp dir."""
    tmp = tempfile.mkdtemp(prefix="vr-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    port, dash = _free_port(), _free_port()
    proc = subprocess.Popen([str(BIN / "ray"), "start", "--head", "--block", "--port", str(port), "--num-cpus", "4",
                             "--num-gpus", "2", "--include-dashboard=true", "--dashboard-host", "127.0.0.1",
                             "--dashboard-port", str(dash), "--temp-dir", tmp, "--disable-usage-stats"],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    while True:  # no deadline: a loaded machine is only slower (pytest-timeout catches a hang)
        assert proc.poll() is None, proc.stdout.read()
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    yield {"address": f"127.0.0.1:{port}", "url": url, "tmp": tmp}
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=5)  # `ray start --block` stops its processes in order, slowly; the rest below
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    for pid in session_pids(tmp):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "run"
    r = nas_cli(*SEARCH, "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    return out


def _wait(client, job: str) -> str:
    from ray.job_submission import JobStatus

    while (status := client.get_job_status(job)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        time.sleep(0.5)
    return status


def test_ray_job_submit_runs_a_search_equal_to_the_local_one(head, local, tmp_path):
    out = tmp_path / "job"
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "note.txt").write_text("the job's working directory: uploaded to the cluster\n")
    r = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", head["url"], "--working-dir", str(wd), "--",
                        "nas", *SEARCH, *ON_RAY, "--out", str(out)], capture_output=True, text=True, env=_env(),
                       timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "succeeded" in r.stdout.lower()
    assert "evaluated 24 architectures" in r.stdout  # the job's own output, streamed back
    assert "search:" in r.stdout and "24/24" in r.stdout  # the progress bar's lines reach the job log
    assert (out / "pareto.csv").read_bytes() == (local / "pareto.csv").read_bytes()
    cfg = (out / "config.toml").read_text()
    assert 'ray = "local"' in cfg  # a resume joins the cluster in RAY_ADDRESS again, as the job did


def test_a_stopped_job_resumes_as_a_new_job_without_recomputing(head, local, tmp_path):
    """Through the Python JobSubmissionClient this time."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(head["url"])
    out = tmp_path / "run"
    job = client.submit_job(entrypoint=" ".join(["nas", *SEARCH, *ON_RAY, "--out", str(out), "--no-progress"]))
    log = out / "evals.jsonl"
    while not (log.exists() and log.read_bytes().count(b"\n") >= 6):
        assert client.get_job_status(job) in {JobStatus.PENDING, JobStatus.RUNNING}, client.get_job_logs(job)[-3000:]
        time.sleep(0.05)
    client.stop_job(job)  # the driver is killed: SIGTERM, then SIGKILL
    assert _wait(client, job) == JobStatus.STOPPED
    before = [json.loads(ln)["id"] for ln in log.read_text().splitlines()]
    assert 6 <= len(before) < 24
    again = client.submit_job(entrypoint=f"nas resume {out} --ray --no-progress --json")
    assert _wait(client, again) == JobStatus.SUCCEEDED, client.get_job_logs(again)[-3000:]
    after = [json.loads(ln)["id"] for ln in log.read_text().splitlines()]
    assert after[: len(before)] == before and len(after) == len(set(after)) == 24  # nothing recomputed
    assert (out / "pareto.csv").read_bytes() == (local / "pareto.csv").read_bytes()


def test_half_a_gpu_per_worker_places_two_actors_per_gpu(head, capfd):
    """Logical GPUs: Ray gives each actor its GPU in CUDA_VISIBLE_DEVICES; with no CUDA here the
    evaluator runs on CPU and the driver warns once."""
    from nas.config import SearchConfig
    from nas.runners import RayRunner
    from nas.search.loop import evaluator_for, prepare

    cfg = prepare(SearchConfig(space="elasticvit-tiny", objectives="naswot,macs", threads=1)).cfg
    runner = RayRunner(partial(evaluator_for, cfg), address=head["address"], workers=4, threads=1, gpus=0.5)
    try:
        runner.start(ready=4)
        places = runner.placements()
    finally:
        runner.close()
    assert len(places) == 4
    per_gpu: dict[str, int] = {}
    for p in places:
        assert p["cuda_visible_devices"] == ",".join(p["gpu_ids"]) and len(p["gpu_ids"]) == 1
        per_gpu[p["gpu_ids"][0]] = per_gpu.get(p["gpu_ids"][0], 0) + 1
        assert p["device"] == "cpu"  # logical GPUs, no CUDA: the evaluator stays on CPU
    assert sorted(per_gpu.values()) == [2, 2]
    err = capfd.readouterr().err
    assert err.count("no CUDA is usable") == 1  # one warning for the pool, not one per actor


def test_a_killed_local_driver_leaves_no_ray_process(tmp_path):
    """`--ray` alone starts a local Ray; kill -9 of the driver must not leave its raylet, GCS,
    DashboardAgent or RuntimeEnvAgent running: the reaper stops them."""
    short = Path(tempfile.mkdtemp(prefix="vk-", dir="/tmp"))
    try:
        out = tmp_path / "run"
        proc = subprocess.Popen([sys.executable, "-m", "nas.cli", *SEARCH[:5], "--budget", "400", "--population", "8",
                                 "--threads", "1", "--ray", "--workers", "1", "--out", str(out), "--no-progress"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env={**_env(), "TMPDIR": str(short)})
        log = out / "evals.jsonl"
        while not (log.exists() and log.read_bytes().count(b"\n") >= 2):
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            time.sleep(0.05)
        sessions = [str(p) for p in short.iterdir() if p.name.startswith("vitnas-ray-")]
        assert len(sessions) == 1 and session_pids(sessions[0])  # the local Ray runs under its own dir
        names = {Path(os.readlink(f"/proc/{pid}/exe")).name for pid in session_pids(sessions[0])
                 if os.path.exists(f"/proc/{pid}/exe")}
        assert names  # raylet, gcs_server, python agents and workers
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        while session_pids(sessions[0]) or Path(sessions[0]).exists():  # pytest-timeout bounds a reaper that fails
            time.sleep(0.2)
    finally:
        for d in short.glob("vitnas-ray-*"):
            for pid in session_pids(str(d)):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(short, ignore_errors=True)


def test_train_and_tune_run_on_the_job_cluster(head, tmp_path):
    from nas.data import FASHION_MNIST_DIR

    if not FASHION_MNIST_DIR.exists():
        pytest.skip("Fashion-MNIST not installed: apt-get install dataset-fashion-mnist")
    args = ["--space", "elasticvit-tiny", "--data", "fashion-mnist", "--steps", "1", "--batch-size", "16", "--heldout",
            "200", "--bn-batches", "1", "--threads", "1", "--no-progress", "--json"]
    r = nas_cli("train", *args, "--ray", head["address"], "--workers", "2", "--out", str(tmp_path / "train"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["step"] == 1
    r = nas_cli("tune", *args[:-2], "--ray", head["address"], "--lr", "1e-3", "--search", "grid",
                "--out", str(tmp_path / "tune"), "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(json.loads(r.stdout)["trials"]) == 1


def test_a_user_error_inside_a_ray_train_worker_is_one_line(head, tmp_path):
    """The worker, not the driver, finds that the loss stays non-finite (a TrainingError, a UserError):
    it must reach the user as one line with exit 2, not as Ray Train's WorkerGroupError traceback."""
    from nas.data import FASHION_MNIST_DIR

    if not FASHION_MNIST_DIR.exists():
        pytest.skip("Fashion-MNIST not installed: apt-get install dataset-fashion-mnist")
    r = nas_cli("train", "--space", "elasticvit-tiny", "--data", "fashion-mnist", "--steps", "4", "--batch-size", "16",
                "--heldout", "200", "--bn-batches", "1", "--threads", "1", "--no-progress", "--lr", "1e30",
                "--max-bad-steps", "1",
                "--ray", head["address"], "--workers", "1", "--out", str(tmp_path / "bad"))
    assert r.returncode == 2, r.stderr[-3000:]
    assert r.stderr.strip().splitlines()[-1].startswith("error: the loss was not finite for 1 steps in a row")
    assert "Traceback" not in r.stderr and "WorkerGroupError" not in r.stderr
