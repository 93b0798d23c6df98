"""Runners score architectures with the expensive metric (a proxy, or supernet accuracy).

``imap(genomes)`` yields ``Scored`` results as they finish, so the loop logs each one at once and
an interruption loses only what was in flight. ``LocalRunner`` works in this process;
``RayRunner`` keeps one resident evaluator per Ray actor. This is the only module of the search
that imports ray, and only inside ``RayRunner`` and ``connect``: LUT-only and local searches
never pay for it.
"""
from __future__ import annotations

import os
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from nas.errors import UserError
from nas.objectives import Evaluator

MAX_KILLS = 3  # an architecture whose worker died this many times while scoring it alone is failed
MAX_RESTARTS = 32  # per actor; an architecture that kills workers uses up at most MAX_KILLS + 1
IN_FLIGHT = 2  # tasks queued per actor: the next one starts without waiting for the driver
STALL_S = 600.0  # no worker ready and nothing answered for this long: the cluster cannot run us


@dataclass(frozen=True)
class Scored:
    index: int  # position in the genomes given to imap
    values: dict[str, float]  # metric column -> value (empty if it failed)
    error: str | None  # "ExceptionType: message" when scoring failed
    seconds: float


def score_one(evaluator: Evaluator, genome: np.ndarray) -> tuple[dict[str, float], str | None, float]:
    t = time.perf_counter()
    try:
        values, error = evaluator.expensive(genome), None
    except Exception as e:  # a failing architecture is a row, not a crashed search
        values, error = {}, f"{type(e).__name__}: {e}"
    return values, error, time.perf_counter() - t


class LocalRunner:
    def __init__(self, evaluator: Evaluator):
        self.evaluator = evaluator

    def start(self, ready: int = 1) -> None:
        pass

    def imap(self, genomes: np.ndarray) -> Iterator[Scored]:
        for i, genome in enumerate(genomes):
            yield Scored(i, *score_one(self.evaluator, genome))

    def close(self) -> None:
        pass


def connect(address: str) -> bool:
    """Join the Ray cluster at ``address`` (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``), or for
    ``local`` the one ``RAY_ADDRESS`` names (``ray job submit`` sets it), else a new local
    instance. Returns whether this call initialised Ray (and so should shut it down)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():
        return False
    given = address
    if address == "local" and os.environ.get("RAY_ADDRESS"):
        address = os.environ["RAY_ADDRESS"]
    if address.startswith(("http://", "https://")):  # what `ray job submit` wants, not ray.init
        raise UserError(f"--ray {address}{' (from RAY_ADDRESS)' if given != address else ''} is a dashboard address: "
                        "give the cluster's HOST:6379, ray://HOST:10001 or auto")
    if address == "local":
        import tempfile

        # its own temp dir (short: Ray's socket paths must fit 107 bytes), and a reaper that stops
        # every process under it if this driver dies without ray.shutdown() (kill -9): Ray's agents
        # (DashboardAgent, RuntimeEnvAgent) would otherwise outlive it
        tmp = tempfile.mkdtemp(prefix="vitnas-ray-")
        ray.init(address="local", include_dashboard=False, _temp_dir=tmp)
        _start_reaper(tmp)
        return True
    if address != "auto":
        _probe(address)  # ray.init retries an unreachable address for minutes
    try:
        ray.init(address=address)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise UserError(f"--ray {address}: cannot join that Ray cluster ({str(e).splitlines()[0]}); "
                        "start one with `ray start --head`, or give its address") from None
    return True


def _start_reaper(tmp: str) -> None:
    import subprocess

    subprocess.Popen([sys.executable, "-c", "import sys; from nas.runners import reap; reap(int(sys.argv[1]), sys.argv[2])",
                      str(os.getpid()), tmp], start_new_session=True, stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True)


def session_pids(tmp: str) -> list[int]:
    """Processes whose command line names ``tmp``: the Ray session started there (raylet, GCS,
    agents and workers all get its session directory as an argument)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if tmp in cmd and "nas.runners import reap" not in cmd:
            out.append(int(d))
    return out


def reap(driver: int, tmp: str, poll_s: float = 0.5) -> None:
    """Wait for ``driver`` to exit, then stop what is left of the Ray session under ``tmp``
    (SIGTERM, then SIGKILL after 5 s) and remove the directory. After a clean ray.shutdown()
    there is nothing left and this only removes the directory."""
    import shutil
    import signal

    while True:
        try:
            os.kill(driver, 0)
        except ProcessLookupError:
            break
        except PermissionError:  # pid reused by another user's process: ours is gone
            break
        time.sleep(poll_s)
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
        pids = session_pids(tmp)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + wait
        while pids and session_pids(tmp) and time.monotonic() < deadline:
            time.sleep(0.1)
    shutil.rmtree(tmp, ignore_errors=True)


def disconnect(owned: bool) -> None:
    """Undo ``connect``: shut Ray down only if that call started or joined it."""
    if owned:
        import ray

        ray.shutdown()


def _probe(address: str) -> None:
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--ray {address}: give auto, HOST:PORT or ray://HOST:PORT (or --ray alone for a local instance)")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise UserError(f"--ray {address}: no Ray cluster answers there ({e.strerror or e}); "
                        "start one with `ray start --head`, or check the address") from None


class _Worker:
    """A Ray actor holding one evaluator, built once from a picklable factory (a config, never
    a torch model): a resident supernet and its data stay loaded across batches."""

    def __init__(self, factory: Callable[[], Evaluator]):
        self.evaluator = factory()

    def ready(self) -> tuple[int, str]:
        import ray

        return os.getpid(), ray.get_runtime_context().get_node_id()

    def score(self, genome: np.ndarray) -> tuple[dict[str, float], str | None, float]:
        return score_one(self.evaluator, genome)

    def placement(self) -> dict:
        """The GPUs Ray gave this actor, as CUDA sees them, and where the evaluator runs."""
        import ray

        gpus = [str(g) for g in ray.get_gpu_ids()]
        cuda = False
        if gpus:
            import torch

            cuda = torch.cuda.is_available()
        return {"gpu_ids": gpus, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
                "device": "cuda" if cuda else "cpu"}


class RayRunner:
    """Scores architectures on a pool of Ray actors, streaming results as they arrive.

    Each actor keeps ``IN_FLIGHT`` tasks queued. When an actor dies, Ray restarts it (rebuilding
    its evaluator). Which of its queued architectures killed it is unknown: the one running, but
    the previous task's reply may also be lost with the process. So they all become *suspects*,
    each re-dispatched alone to an idle actor; a suspect whose worker dies while it runs alone is
    charged, and after ``max_kills`` such deaths it becomes a failed result instead of killing
    more workers. Innocent suspects just succeed.
    """

    def __init__(self, factory: Callable[[], Evaluator], *, address: str = "local", workers: int | None = None,
                 threads: int = 1, gpus: float = 0.0, max_kills: int = MAX_KILLS, in_flight: int = IN_FLIGHT):
        self.factory, self.address, self.workers, self.threads, self.gpus = factory, address, workers, threads, gpus
        self.max_kills, self.in_flight = max_kills, in_flight
        self.actors: list = []
        self.ready: dict[int, tuple[int, str]] = {}  # actor -> (pid, node id), for actors that answer
        self.seen: set[tuple[int, str]] = set()  # every (pid, node id) that ever answered
        self.deaths = 0  # actor deaths seen (each cost its queued tasks a re-dispatch)
        self._pings: dict = {}  # readiness probe ref -> actor
        self._gone: set[int] = set()  # out of restarts
        self._owns_ray = False
        self._last_death = ""

    # ---- the pool ----------------------------------------------------------------------------
    def start(self, ready: int = 1) -> None:
        """Join the cluster, start the actors and wait until ``ready`` of them have built their
        evaluator: a worker that cannot (a file missing on its node) fails here, before a run
        directory is written."""
        if self.actors:
            self._wait_ready(ready)
            return
        self._owns_ray = connect(self.address)
        import ray

        total = ray.cluster_resources()
        gpus = self.gpus
        if gpus and not total.get("GPU"):
            print("warning: the Ray cluster has no GPUs; workers evaluate on CPU", file=sys.stderr)
            gpus = 0.0
        fit = int(total.get("CPU", 1) // self.threads)
        if gpus:
            fit = min(fit, int(total["GPU"] / gpus + 1e-9))
        n = self.workers or max(1, fit)
        if n > fit:
            print(f"warning: {n} workers of {self.threads} CPU{'s' if self.threads > 1 else ''}"
                  f"{f' and {gpus:g} GPU' if gpus else ''} each do not all fit in the cluster now "
                  f"({total.get('CPU', 0):g} CPUs, {total.get('GPU', 0):g} GPUs); the rest wait for resources",
                  file=sys.stderr)
        actor = ray.remote(_Worker).options(num_cpus=self.threads, num_gpus=gpus, max_restarts=MAX_RESTARTS,
                                            max_task_retries=0, scheduling_strategy="SPREAD")
        self.actors = [actor.remote(self.factory) for _ in range(n)]
        for k in range(n):
            self._ping(k)
        self._wait_ready(ready)
        if gpus and self.ready:  # GPUs given (logical ones, say) where CUDA cannot use them: say it once
            k = next(iter(self.ready))
            p = ray.get(self.actors[k].placement.remote())
            if p["device"] == "cpu":
                print(f"warning: Ray gave the workers GPUs ({p['cuda_visible_devices']} on the first) but no CUDA is "
                      "usable there; they evaluate on CPU", file=sys.stderr)

    def placements(self) -> list[dict]:
        """``placement()`` of every ready actor (GPU ids, CUDA_VISIBLE_DEVICES, device)."""
        import ray

        return ray.get([self.actors[k].placement.remote() for k in sorted(self.ready)])

    def _wait_ready(self, n: int) -> None:
        while len(self.ready) < min(n, len(self.actors) - len(self._gone)):
            self._await([])

    def close(self) -> None:
        if not self.actors and not self._owns_ray:
            return
        import ray

        for a in self.actors:
            ray.kill(a, no_restart=True)
        self.actors, self.ready, self._pings = [], {}, {}
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False

    def _ping(self, k: int) -> None:
        self._pings[self.actors[k].ready.remote()] = k

    def _on_ping(self, ref, k: int) -> None:
        import ray
        from ray.exceptions import ActorDiedError, RayActorError

        try:
            self.ready[k] = ray.get(ref)
            self.seen.add(self.ready[k])
        except RayActorError as e:
            if getattr(e, "actor_init_failed", False):
                raise UserError(f"a Ray worker could not set up the evaluator: {_last_line(e)}") from None
            if isinstance(e, ActorDiedError):  # out of restarts: leave it out
                self._gone.add(k)
                if len(self._gone) == len(self.actors):
                    raise RuntimeError(f"every Ray worker died and none can restart ({_last_line(e)}); "
                                       "finished evaluations are in evals.jsonl: `nas resume` the run") from None
            else:  # still restarting
                time.sleep(0.2)
                self._ping(k)

    def _await(self, refs: list) -> list:
        """Wait for one of ``refs`` or a readiness probe; probes are handled here. Only waiting
        for probes alone times out: a task may legitimately take long."""
        import ray

        done, _ = ray.wait(refs + list(self._pings), num_returns=1, timeout=None if refs else STALL_S)
        if not done:
            raise RuntimeError(f"no Ray worker became ready in {STALL_S:.0f}s (the cluster has no room for "
                               f"{self.threads} CPU{'s' if self.threads > 1 else ''} per worker?); "
                               "finished evaluations are in evals.jsonl: `nas resume` the run")
        ref = done[0]
        if ref in self._pings:
            self._on_ping(ref, self._pings.pop(ref))
            return []
        return [ref]

    # ---- scoring -----------------------------------------------------------------------------
    def imap(self, genomes: np.ndarray) -> Iterator[Scored]:
        import ray
        from ray.exceptions import RayError, RayTaskError

        self.start(ready=0)
        todo, suspects = deque(range(len(genomes))), deque()
        kills = [0] * len(genomes)
        flight: dict = {}  # ref -> (actor, index, submitted)
        queued: dict[int, list] = {k: [] for k in range(len(self.actors))}  # actor -> refs, oldest first
        alone: set[int] = set()  # actors running a suspect, with nothing queued behind it

        def submit(k: int, i: int) -> None:
            ref = self.actors[k].score.remote(genomes[i])
            flight[ref] = (k, i, time.perf_counter())
            queued[k].append(ref)

        try:
            while todo or suspects or flight:
                for k in self.ready:
                    if suspects:  # let queues drain: a suspect goes only to an idle actor
                        if not queued[k]:
                            submit(k, suspects.popleft())
                            alone.add(k)
                        continue
                    while todo and k not in alone and len(queued[k]) < self.in_flight:  # keep queues full
                        submit(k, todo.popleft())
                got = self._await(list(flight))
                if not got:
                    continue
                k = flight[got[0]][0]
                try:
                    outcome = [(got[0], ray.get(got[0]))]
                except RayTaskError as e:  # raised outside the scorer's try: still only this architecture
                    outcome = [(got[0], ({}, _last_line(e), 0.0))]
                except RayError as e:  # the actor died, or its node, or it was OOM-killed
                    outcome = self._collect_dead(k, queued[k], e)
                was_alone = k in alone
                alone.discard(k)
                for ref, result in outcome:
                    _, i, t = flight.pop(ref)
                    queued[k].remove(ref)
                    if isinstance(result, tuple):
                        yield Scored(i, *result)
                    elif result == "lost" and was_alone:
                        kills[i] += 1
                        if kills[i] >= self.max_kills:
                            yield Scored(i, {}, f"WorkerDied: the Ray worker died each of the {kills[i]} times it "
                                                f"scored this architecture alone; not retried ({self._last_death})",
                                         time.perf_counter() - t)
                        else:
                            suspects.append(i)
                    elif result == "lost":
                        suspects.append(i)
                    else:  # never answered: it cannot have been running
                        todo.appendleft(i)
        finally:
            for ref in flight:  # the caller stopped early: drop what is still queued
                try:
                    ray.cancel(ref)
                except Exception:  # its actor is gone already
                    pass

    def _collect_dead(self, k: int, refs: list, error: Exception) -> list:
        """Actor ``k`` died: the fate of every task queued on it, oldest first: a result (it
        finished), "lost" (it failed with the actor) or "unanswered"."""
        import ray
        from ray.exceptions import GetTimeoutError, RayError, RayTaskError

        self.deaths += 1
        self.ready.pop(k, None)
        self._last_death = _first_line(error)
        ray.wait(refs, num_returns=len(refs), timeout=30)  # a dead actor fails all of them at once
        out = []
        for ref in refs:
            try:
                out.append((ref, ray.get(ref, timeout=0)))
            except RayTaskError as e:
                out.append((ref, ({}, _last_line(e), 0.0)))
            except GetTimeoutError:
                out.append((ref, "unanswered"))
            except RayError:
                out.append((ref, "lost"))
        self._ping(k)  # queued behind Ray's restart; answers once the new evaluator is built
        return out

    # ---- for tests and benchmarks -----------------------------------------------------------
    def pids(self) -> list[int]:
        """Process ids of the actors that have answered (and not died since)."""
        return [pid for pid, _ in list(self.ready.values())]


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def _last_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[-1][:300] if lines else type(e).__name__
