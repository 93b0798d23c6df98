"""Ray runner: scoring throughput with 1 vs 2 actors, and the driver's overhead per evaluation.

    python benchmarks/bench_ray.py [--n N] [--quick]

1. Throughput on an evaluation-bound workload: naswot on elasticvit-tiny, one torch thread per
   actor, N architectures through LocalRunner (this process) and RayRunner with 1 and 2 actors
   on a local Ray instance: evaluations/s and scaling efficiency (rate with 2 actors / twice
   the rate with 1).
2. Overhead: a trivial expensive metric (a sum over the genome, ~2 us) through RayRunner.imap
   (wall time and driver CPU time per evaluation) and through a whole nsga2 search (local vs
   Ray: the difference is what Ray adds per evaluation). A LUT-only search has no expensive
   metric, so it never starts Ray: its cheap metrics stay vectorised in the driver (see
   bench_search.py), and Ray adds nothing to it. The driver CPU of the 1-actor imap is split by
   cProfile into Ray's own calls (functions in the ray package: task submission, ray.wait,
   ray.get) and the rest (our dispatch loop), applied as shares to the unprofiled CPU time.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from nas.config import SearchConfig  # noqa: E402
from nas.objectives import Evaluator  # noqa: E402
from nas.runners import LocalRunner, RayRunner  # noqa: E402
from nas.search.loop import evaluator_for, prepare, run  # noqa: E402

NASWOT = SearchConfig(space="elasticvit-tiny", objectives="naswot,macs", threads=1, seed=0)


class TrivialScorer:
    """Stands in for an accuracy estimate that costs nothing: what is left is the runner."""
    column = "proxy_naswot"

    def describe(self) -> str:
        return "trivial"

    def __call__(self, genome: np.ndarray) -> dict[str, float]:
        return {self.column: float(np.asarray(genome).sum())}


def trivial_evaluator(cfg: SearchConfig) -> Evaluator:  # pickled by value: defined in __main__
    ev = evaluator_for(cfg)
    ev.scorer = TrivialScorer()
    return ev


def drain(runner, genomes: np.ndarray) -> tuple[float, float]:
    """(wall s, driver CPU s) to score every genome."""
    t, c = time.perf_counter(), time.process_time()
    n = sum(1 for _ in runner.imap(genomes))
    assert n == len(genomes)
    return time.perf_counter() - t, time.process_time() - c


def profiled_ray_share(runner, genomes: np.ndarray) -> float:
    """Share of the driver's profiled time spent inside the ray package."""
    import cProfile
    import pstats

    import ray

    prof = cProfile.Profile()
    prof.runcall(drain, runner, genomes)
    stats = pstats.Stats(prof).stats
    root = str(Path(ray.__file__).parent)
    total = sum(v[2] for v in stats.values())  # tottime: each function's own time, no double counting
    in_ray = 0.0
    for (file, _, name), (_, _, tt, _, callers) in stats.items():
        if file.startswith(root) or (file == "~" and "ray." in name):  # ray's Python, or its compiled _raylet
            in_ray += tt
        elif file == "~":  # another builtin: charged to its callers, pro rata
            in_ray += sum(c[2] for (cfile, _, _), c in callers.items() if cfile.startswith(root))
    return in_ray / total


def ray_runner(factory, workers: int) -> RayRunner:
    r = RayRunner(factory, address="local", workers=workers, threads=1)
    r.start(ready=workers)
    return r


def throughput(n: int) -> None:
    space = prepare(NASWOT).space
    genomes = space.sample(np.random.default_rng(1), n + 8)
    warm, timed = genomes[:8], genomes[8:]
    print(f"throughput: naswot on elasticvit-tiny, {n} architectures, 1 torch thread per worker")
    print(f"{'runner':>16s} {'evals/s':>9s} {'ms/eval':>8s} {'efficiency':>10s}")
    local = LocalRunner(evaluator_for(NASWOT))
    drain(local, warm)
    wall, _ = drain(local, timed)
    print(f"{'local':>16s} {n / wall:9.1f} {1e3 * wall / n:8.1f} {'':>10s}")
    rates = {}
    for workers in (1, 2):
        r = ray_runner(partial(evaluator_for, NASWOT), workers)
        drain(r, warm)
        wall, _ = drain(r, timed)
        r.close()
        rates[workers] = n / wall
        eff = f"{100 * rates[workers] / (workers * rates[1]):9.0f}%"
        print(f"{f'ray, {workers} worker' + 's' * (workers > 1):>16s} {rates[workers]:9.1f} {1e3 * wall / n:8.1f} {eff:>10s}")
    return rates


def overhead(n: int, budget: int) -> None:
    space = prepare(NASWOT).space
    genomes = space.sample(np.random.default_rng(2), n)
    print(f"\noverhead: a trivial expensive metric, {n} architectures through imap")
    print(f"{'runner':>16s} {'us/eval wall':>13s} {'us/eval driver CPU':>19s}")
    local = LocalRunner(trivial_evaluator(NASWOT))
    wall, cpu = drain(local, genomes)
    print(f"{'local':>16s} {1e6 * wall / n:13.1f} {1e6 * cpu / n:19.1f}")
    per_eval = {}
    for workers in (1, 2):
        r = ray_runner(partial(trivial_evaluator, NASWOT), workers)
        drain(r, genomes[:50])
        wall, cpu = drain(r, genomes)
        per_eval[workers] = 1e6 * wall / n
        if workers == 1:
            ray_share = profiled_ray_share(r, genomes)
        r.close()
        print(f"{f'ray, {workers} worker' + 's' * (workers > 1):>16s} {1e6 * wall / n:13.1f} {1e6 * cpu / n:19.1f}")
        if workers == 1:
            one_cpu = cpu
    print(f"driver CPU, 1 worker, split by cProfile: Ray's own calls {100 * ray_share:.0f} % "
          f"({1e6 * one_cpu * ray_share / n:.0f} us/eval), the runner's dispatch loop {100 * (1 - ray_share):.0f} % "
          f"({1e6 * one_cpu * (1 - ray_share) / n:.0f} us/eval)")

    print(f"\nwhole nsga2 search with the trivial metric, budget {budget}, population 100")
    print(f"{'runner':>16s} {'wall s':>7s} {'us/eval':>8s} {'added by Ray':>13s}")
    cfg = NASWOT.with_(budget=budget, population=100)
    base = None
    for name, make in (("local", lambda: LocalRunner(trivial_evaluator(cfg))),
                       ("ray, 1 worker", lambda: ray_runner(partial(trivial_evaluator, cfg), 1))):
        session = prepare(cfg)
        runner = make()
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            res = run(session, Path(d), progress=False, plot=False, runner=runner)
            wall = time.perf_counter() - t
        per = 1e6 * wall / res.evaluated
        base = base if base is not None else per
        added = f"{per - base:12.1f}" if name != "local" else ""
        print(f"{name:>16s} {wall:7.2f} {per:8.1f} {added:>13s}")
    return per_eval


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=240, help="architectures for the throughput part")
    p.add_argument("--quick", action="store_true", help="small sizes, to check the script runs")
    p.add_argument("--no-head", action="store_true", help="skip the `ray start --head` job cluster part")
    a = p.parse_args()
    import ray

    def measure(title: str, **init):
        ray.init(log_to_driver=False, **init)
        try:
            print(f"{title}: {ray.cluster_resources().get('CPU', 0):g} CPUs (machine: {os.cpu_count()} cores)\n")
            return throughput(24 if a.quick else a.n), overhead(200 if a.quick else 4000, 300 if a.quick else 3000)
        finally:
            ray.shutdown()

    t0, o0 = measure("in-process local Ray instance", num_cpus=os.cpu_count(), include_dashboard=False)
    if a.no_head:
        return
    with job_cluster() as address:
        t1, o1 = measure(f"\njob cluster: `ray start --head` at {address} with the dashboard", address=address)
    print("\njob cluster / in-process cluster")
    for w in (1, 2):
        print(f"  {w} worker{'s' * (w > 1)}: throughput ratio {t1[w] / t0[w]:.2f}, imap overhead per evaluation ratio "
              f"{o1[w] / o0[w]:.2f}")


@contextmanager
def job_cluster():
    """A head as `ray start --head --block` starts it (dashboard and Jobs API on), on loopback, in
    its own temp dir; stopped by its own pids afterwards."""
    import shutil
    import signal
    import socket
    import subprocess
    import sys
    import urllib.request

    from nas.runners import session_pids

    def free() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    tmp, port, dash = tempfile.mkdtemp(prefix="vb-", dir="/tmp"), free(), free()
    ray_bin = Path(sys.executable).parent / "ray"
    proc = subprocess.Popen([str(ray_bin), "start", "--head", "--block", "--port", str(port), "--num-cpus",
                             str(os.cpu_count()), "--include-dashboard=true", "--dashboard-host", "127.0.0.1",
                             "--dashboard-port", str(dash), "--temp-dir", tmp, "--disable-usage-stats"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{dash}/api/version", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("ray start --head failed")
                time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
        for pid in session_pids(tmp):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
