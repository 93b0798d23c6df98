"""Supernet training on Ray: data-parallel training with Ray Train, hyperparameter sweeps with Ray Tune.

The second and last module that imports ray (the search's is nas/runners.py, whose ``connect``
this one shares), and only inside its functions.

* ``train``: a ``TorchTrainer`` whose workers each run the one trainer (trainer.py). Ray Train
  starts the process group (gloo on CPU, NCCL on GPU) and sets RANK / WORLD_SIZE / LOCAL_RANK as
  torchrun does, so the trainer shards the data and lets rank 0 write the run directory exactly
  as under torchrun. Checkpoints are the trainer's own ``checkpoint.safetensors`` in the run directory
  (which every worker must see: one node, or a shared filesystem); when a worker dies, Ray Train
  restarts the group up to ``MAX_FAILURES`` times and every worker resumes from that checkpoint.
* ``tune``: a Ray Tune sweep over trainer hyperparameters (lr, sampler, subnets per step); each
  trial is a single-process trainer in its own run directory (usable as ``--supernet``) reporting
  the held-out accuracy of the smallest and the largest subnet after each evaluation. Grid,
  random, or optuna's multi-objective sampler through ``OptunaSearch`` (both accuracies maximised).
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import itertools
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from nas.errors import UserError
from nas.runners import connect
from nas.train.config import TrainConfig

MAX_FAILURES = 3  # worker-group restarts (each resumes from the last checkpoint) before the run fails
PG_TIMEOUT_S = 7200  # the other ranks wait in a barrier while rank 0 evaluates
METRICS = ("accuracy_smallest", "accuracy_largest")


# ---- Ray Train ---------------------------------------------------------------------------------
def train(cfg: TrainConfig, out: Path) -> dict:
    """Train ``cfg`` (``cfg.workers`` resolved) on Ray; ``out`` already holds config.toml and,
    on a resume, the checkpoint. Returns rank 0's summary (what ``Trainer.run`` returns)."""
    owns = connect(cfg.ray)
    try:
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer

        gpus = cfg.gpus_per_worker or 0.0
        trainer = TorchTrainer(
            _train_worker, train_loop_config={"cfg": cfg, "out": str(out.resolve())},
            torch_config=TorchConfig(backend="nccl" if gpus else "gloo", timeout_s=PG_TIMEOUT_S),
            scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=bool(gpus),
                                         resources_per_worker={"CPU": cfg.threads, **({"GPU": gpus} if gpus else {})}),
            run_config=RunConfig(name="ray-train", storage_path=str(out.resolve()),
                                 failure_config=FailureConfig(max_failures=MAX_FAILURES)))
        try:
            result = trainer.fit()
        except Exception as e:  # a worker's UserError arrives wrapped; unwrap it so it stays one line
            cause = _root_cause(e)
            if isinstance(cause, UserError):
                raise cause from None
            raise
        if "user_error" in result.metrics:
            raise UserError(result.metrics["user_error"])
        return json.loads(result.metrics["summary"])
    finally:
        if owns:
            import ray

            ray.shutdown()


def workers_for(cfg: TrainConfig) -> int:
    """``--workers``, else as many as the cluster fits (``connect`` first)."""
    import ray

    if cfg.workers:
        return cfg.workers
    total = ray.cluster_resources()
    n = int(total.get("CPU", 1) // cfg.threads)
    if cfg.gpus_per_worker:
        n = min(n, int(total.get("GPU", 0) / cfg.gpus_per_worker + 1e-9))
    if n < 1:
        raise UserError(f"the Ray cluster has no room for one worker of {cfg.threads} CPUs"
                        f"{f' and {cfg.gpus_per_worker:g} GPU' if cfg.gpus_per_worker else ''}")
    return n


def _train_worker(config: dict) -> None:
    import ray.train

    from nas.train.checkpoint import find_checkpoint
    from nas.train.trainer import Trainer

    out = Path(config["out"])
    trainer = Trainer(config["cfg"], out, progress=False)  # joins the process group Ray Train made
    if (ckpt := find_checkpoint(out)) is not None:  # `nas train --resume`, or Ray Train restarting us after a failure
        trainer.load(ckpt)
    else:
        trainer.truncate_logs()  # a failure before the first checkpoint: start over
    try:
        result = trainer.run()
        metrics = {"summary": json.dumps(result), "step": result["step"]}
    except UserError as e:  # e.g. non-finite losses, agreed by every rank: a restart would only repeat it,
        metrics = {"user_error": str(e), "step": trainer.step}  # so it is reported as the result, not raised
    if trainer.rank != 0:
        ray.train.report(metrics)
        return
    # Ray Train keeps only metrics that come with a checkpoint; the real one (checkpoint.safetensors) stays
    # in the run directory, this one holds just the result (the summary, or the worker's UserError)
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "result.json").write_text(json.dumps(metrics))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def _root_cause(e: BaseException) -> BaseException:
    seen = set()
    while id(e) not in seen:
        seen.add(id(e))
        nxt = getattr(e, "cause", None) or e.__cause__ or getattr(e, "error", None)
        if nxt is None and getattr(e, "worker_failures", None):  # Ray Train's WorkerGroupError: rank -> error
            nxt = next(iter(e.worker_failures.values()))
        if not isinstance(nxt, BaseException):
            break
        e = nxt
    return e


# ---- Ray Tune ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LogRange:
    """``--lr 1e-4:1e-2``: log-uniform between the two (random and optuna searches)."""
    low: float
    high: float


def check_sweep(base: TrainConfig, space: dict[str, Any], search: str, samples: int) -> None:
    """Every combination the sweep can run is a valid TrainConfig: fail before anything starts."""
    if search not in ("grid", "random", "optuna"):
        from nas.registry import did_you_mean

        raise did_you_mean(search, ["grid", "random", "optuna"], "search")
    if samples < 1:
        raise UserError(f"--samples must be at least 1, got {samples}")
    for name, v in space.items():
        if isinstance(v, LogRange):
            if search == "grid":
                raise UserError(f"--{name} {v.low:g}:{v.high:g} is a range: use --search random or optuna, "
                                "or list values for a grid")
            if not 0 < v.low < v.high:
                raise UserError(f"--{name} {v.low:g}:{v.high:g}: give 0 < LOW < HIGH")
    lists = {k: (v if isinstance(v, list) else [v.low, v.high]) for k, v in space.items()}
    for combo in itertools.product(*lists.values()):
        dataclasses.replace(base, **dict(zip(lists, combo))).resolved().validate()


def tune(base: TrainConfig, space: dict[str, Any], out: Path, *, search: str = "grid", samples: int = 1,
         gpus_per_trial: float = 0.0) -> list[dict]:
    """Run the sweep; write ``out/tune.csv`` (one row per trial, ``pareto`` marking the trials
    no other beats on both accuracies); return its rows."""
    check_sweep(base, space, search, samples)
    owns = connect(base.ray or "local")
    try:
        from ray import tune as rt

        def dim(v):
            if isinstance(v, LogRange):
                return rt.loguniform(v.low, v.high)
            return rt.grid_search(v) if search == "grid" else rt.choice(v)

        alg = None
        if search == "optuna":
            import optuna
            from ray.tune.search.optuna import OptunaSearch

            # metric and mode lists make optuna's study multi-objective (NSGA-II sampler by default for
            # several objectives); Tune itself gets neither, as Ray documents for this case
            alg = OptunaSearch(metric=list(METRICS), mode=["max"] * len(METRICS),
                               sampler=optuna.samplers.NSGAIISampler(seed=base.seed), seed=base.seed)
        trainable = rt.with_resources(rt.with_parameters(_trial, base=base),
                                      {"cpu": base.threads, "gpu": gpus_per_trial})
        tuner = rt.Tuner(trainable, param_space={k: dim(v) for k, v in space.items()},
                         tune_config=rt.TuneConfig(search_alg=alg, num_samples=samples),
                         run_config=rt.RunConfig(name="tune", storage_path=str(out.resolve()), verbose=0))
        with contextlib.redirect_stdout(sys.stderr):  # Tune's tables: stdout is for our summary (--json)
            grid = tuner.fit()
        rows = []
        for r in grid:
            row = {"trial": (r.metrics or {}).get("trial_id") or Path(r.path).name, **{k: r.config.get(k) for k in space},
                   **{m: (r.metrics or {}).get(m) for m in METRICS}, "step": (r.metrics or {}).get("step"),
                   "error": _first_line(r.error) if r.error else "", "run_dir": r.path}
            rows.append(row)
    finally:
        if owns:
            import ray

            ray.shutdown()
    _mark_pareto(rows)
    rows.sort(key=lambda r: r["trial"])
    with (out / "tune.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return rows


def _trial(config: dict, base: TrainConfig) -> None:
    from ray import tune as rt

    from nas.runs import write_atomic
    from nas.train.trainer import Trainer

    cfg = dataclasses.replace(base, **config, ray=None, workers=None, gpus_per_worker=None)
    out = Path(rt.get_context().get_trial_dir())
    out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, out, progress=False)  # sets torch's threads: Ray reuses worker processes
    write_atomic(out / "config.toml", trainer.cfg.to_toml())  # a `nas train` run directory (recipe resolved)
    every = cfg.eval_every or trainer.steps_per_epoch  # when the trainer evaluates: report each time
    while trainer.step < trainer.total:
        trainer.run(stop_at=min((trainer.step // every + 1) * every, trainer.total))
        acc = {e["role"]: e["accuracy"] for e in trainer.last_eval}
        rt.report({"accuracy_smallest": acc["smallest"], "accuracy_largest": acc["largest"], "step": trainer.step})


def _mark_pareto(rows: list[dict]) -> None:
    import numpy as np
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    for r in rows:
        r["pareto"] = False
    done = [r for r in rows if all(r[m] is not None for m in METRICS)]
    if done:
        f = -np.array([[r[m] for m in METRICS] for r in done], dtype=float)  # maximised metrics
        for i in NonDominatedSorting().do(f, only_non_dominated_front=True):
            done[int(i)]["pareto"] = True


def _first_line(e) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def parse_values(flag: str, text: str, kind) -> list | LogRange:
    """``a,b,c`` -> [a, b, c]; ``lo:hi`` -> LogRange (numbers only)."""
    try:
        if ":" in text and kind is float:
            lo, hi = (float(t) for t in text.split(":"))
            return LogRange(lo, hi)
        values = [kind(t.strip()) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"{flag} {text!r}: give comma-separated values{' or LOW:HIGH' if kind is float else ''}") from None
    if not values:
        raise UserError(f"{flag} is empty")
    return values

