"""MPCViT's differentiable search (Zeng et al., ICCV 2023), a designer on the common run directory.

1. **Search**: every head gets a free alpha (init 1, not clamped) and computes
   ``alpha * RSAttn + (1 - alpha) * ScalAttn``; alpha is trained jointly with the weights by the
   trainer's AdamW and schedule, loss ``CE + lambda * sum |alpha|`` (lambda = 1e-5). With
   ``beta_ratio`` (MPCViT+, spaces with GeLU token genes) every layer also gets a per-token beta
   (init 1) mixing GeLU and its linearisation, with the same penalty.
2. **Binarise** for each mu: all alphas of all layers ranked together (ascending); heads with
   rank >= int((1 - mu) * L * H) become RSAttn, the rest ScalAttn (the released code's count:
   3 / 9 / 14 / 20 RSAttn heads of 28 for mu = 0.1 / 0.3 / 0.5 / 0.7). Betas likewise, keeping
   GeLU on L * N - int((1 - R) * L * N) tokens.
3. **Retrain** each binarised network from scratch with the choices frozen, optionally with
   token-level distillation from a softmax teacher (``KL(student, teacher logits) + MSE(final-LN
   tokens) + CE``).

Each mu (and the all-RSAttn and all-ScalAttn endpoints, retrained the same way) becomes one row
of ``evals.jsonl`` with its ``mu``, the retrained network's held-out accuracy and its MPC latency
on every device asked for; pareto.csv keeps the non-dominated rows. The search and every
retraining are runs of the common trainer under ``search/`` and ``retrain-*/`` (checkpoints,
logs, resume): ``nas resume`` continues the phase that was interrupted and skips finished rows.

Alpha and beta are weight-decayed as the released timm optimiser decays them (they have more than
one dimension). Deviations, documented: the recipe's mixup,
cutmix, RandAugment and random erasing are not used (the trainer's crop + flip and label
smoothing are); each phase trains ``steps`` optimiser steps (the paper: 300 search and 600
retraining epochs).
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nas.arch import Arch
from nas.errors import UserError

LASSO = 1e-5  # --lambda-lasso of the released code
DEFAULTS = {"batch_size": 64, "lr": 2e-3, "heldout": 2000, "lambda": LASSO, "endpoints": True}


def parse_mu(text: str) -> list[float]:
    try:
        mus = [float(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--mu {text!r}: give comma-separated ratios such as 0.1,0.3,0.5,0.7") from None
    if not mus:
        raise UserError("--mu is empty; give e.g. 0.1,0.3,0.5,0.7")
    for m in mus:
        if not 0 < m <= 1:
            raise UserError(f"--mu {m:g}: every RSAttn ratio must be in (0, 1]")
    return mus


def rs_count(mu: float, heads: int) -> int:
    """RSAttn heads after binarisation, exactly as the released code counts them."""
    return heads - int((1 - mu) * heads)


def binarise(space, alpha: np.ndarray, mu: float, beta: np.ndarray | None = None, ratio: float | None = None) -> Arch:
    """The architecture of one mu: global top-k of alpha (L, H) -> RSAttn, and of beta (L, N)
    -> GeLU kept. Ties keep the earlier head last (a stable argsort), so the result is fixed."""
    flat = alpha.reshape(-1)
    order = np.argsort(flat, kind="stable")
    choice = np.zeros(flat.size, dtype=int)
    choice[order[flat.size - rs_count(mu, flat.size):]] = 1
    genome = list(choice)
    if space.gelu_tokens:
        lin = np.zeros(space.layers * space.tokens, dtype=int)
        if beta is not None and ratio is not None:
            b = beta.reshape(-1)
            keep = rs_count(ratio, b.size)
            lin[:] = 1
            lin[np.argsort(b, kind="stable")[b.size - keep:]] = 0
        genome += list(lin)
    return space.canonical(genome)


@dataclass
class DesignResult:
    run_dir: Path
    rows: list[dict[str, Any]]
    front: int
    pareto_csv: Path
    seconds: float

    def summary(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "evaluated": len(self.rows), "pareto_size": self.front,
                "pareto_csv": str(self.pareto_csv), "seconds": round(self.seconds, 1), "rows": self.rows}


def check_design(space, design: dict) -> None:
    """Every input check before anything is written."""
    if space.family != "mpcvit":
        raise UserError(f"--strategy mpcvit needs an MPCViT space (e.g. mpcvit-cifar), not {space.name!r}")
    if not design.get("data"):
        raise UserError("--strategy mpcvit trains: give --data (e.g. fashion-mnist) and --steps")
    if not design.get("steps") or int(design["steps"]) < 1:
        raise UserError("--strategy mpcvit needs --steps N (optimiser steps of the search and of each retraining)")
    parse_mu(design.get("mu", ""))
    r = design.get("beta_ratio")
    if r is not None:
        if not space.gelu_tokens:
            raise UserError(f"--beta-ratio needs a space with GeLU token genes (gelu_tokens = true), not {space.name!r}")
        if not 0 < float(r) <= 1:
            raise UserError(f"--beta-ratio {r:g}: the share of GeLU tokens kept must be in (0, 1]")
    if design.get("teacher"):
        _teacher_source(space, Path(design["teacher"]))


def objectives_of(tables) -> list:
    """What the rows are judged by: retrained accuracy against the MPC latency on each device."""
    from nas.objectives import Objective, latency_column

    return [Objective("accuracy", "max", "held-out accuracy (retrained)")] + \
        [Objective(latency_column(t.device), "min", f"latency on {t.device} (ms)") for t in tables]


def run_mpcvit(space, cfg, tables, run_dir: Path, *, progress: bool = True) -> DesignResult:
    from nas.objectives import latency_column
    from nas.runlog import OK, RunLog

    d = {**DEFAULTS, **cfg.design}
    check_design(space, d)
    t0 = time.perf_counter()
    mus = parse_mu(d["mu"])
    ratio = float(d["beta_ratio"]) if d.get("beta_ratio") is not None else None
    alpha, beta = _search(space, cfg, d, run_dir / "search", ratio is not None, progress)
    (run_dir / "alphas.json").write_text(json.dumps({"alpha": alpha.round(6).tolist(),
                                                     **({"beta": beta.round(6).tolist()} if beta is not None else {})}))
    plan = [(f"mu{m:g}", m, binarise(space, alpha, m, beta, ratio)) for m in mus]
    if d["endpoints"]:
        plan += [("all-rs", 1.0, space.parse_arch("all-rs")), ("all-scal", 0.0, space.parse_arch("all-scal"))]
    columns = ["mu", "accuracy", "macs_m", "params_m"] + [latency_column(t.device) for t in tables]
    objectives = objectives_of(tables)
    log = RunLog(run_dir / "evals.jsonl", columns, objectives, [], space.gene_sizes)
    teacher = _load_teacher(space, Path(d["teacher"])) if d.get("teacher") else None
    rows = []
    try:
        seen = set()
        for label, mu, arch in plan:
            if arch.id in seen:  # two settings gave one network: it is trained and logged once
                continue
            seen.add(arch.id)
            if arch.id not in log.index:
                t = time.perf_counter()
                acc = _retrain(space, cfg, d, arch, run_dir / f"retrain-{label}", teacher, progress)
                g = np.asarray([arch.genome])
                cost = space.cost(g)
                vals = [mu, acc, cost["macs"][0] / 1e6, cost["params"][0] / 1e6] + [float(tb.predict(space, g)[0])
                                                                                  for tb in tables]
                log.append([arch.id], g.astype(np.int16), np.asarray([vals], dtype=float), np.array([OK], dtype=np.int8),
                           [None], [time.perf_counter() - t])
            r = log.values[log.index[arch.id]]
            rows.append({"setting": label, "arch_id": arch.id, **{c: float(r[log.col[c]]) for c in columns},
                         "heads": space.decode(arch)["heads"]})
        header, fields = _row_fields(space, log, tables, columns)
        n_front = log.write_pareto(run_dir / "pareto.csv", header, fields)
    finally:
        log.close()
    return DesignResult(run_dir, rows, n_front, run_dir / "pareto.csv", time.perf_counter() - t0)


def _row_fields(space, log, tables, columns):
    devices = ";".join(t.device for t in tables)
    versions = ";".join(t.version for t in tables)

    def fields(row: int, genome: np.ndarray, ident: str) -> dict:
        vals = log.values[row]
        rec: dict[str, Any] = {"arch_id": ident, **{c: float(vals[log.col[c]]) for c in columns}}
        rec.update({"accuracy_estimate": "retrained (mpcvit)", "device": devices, "table_version": versions,
                    "space": space.name})
        rec.update(space.decode(space.arch(genome)))
        return rec

    header = ["arch_id", *columns, "accuracy_estimate", "device", "table_version", "space",
              *space.decode(space.smallest())]
    return header, fields


def _train_config(space, cfg, d: dict, arch_text: str, steps: int):
    from nas.train.config import TrainConfig

    return TrainConfig(space=cfg.space, data=d["data"], arch=arch_text, steps=steps, batch_size=int(d["batch_size"]),
                       lr=float(d["lr"]), heldout=int(d["heldout"]), eval_every=steps, checkpoint_every=max(1, steps // 4),
                       seed=cfg.seed, threads=cfg.threads)


def _trainer(tcfg, out: Path, progress: bool, **kw):
    """A common-trainer run in ``out``: fresh, or resumed from its checkpoint."""
    from nas.runs import write_atomic
    from nas.train.config import TrainConfig
    from nas.train.checkpoint import find_checkpoint
    from nas.train.trainer import Trainer

    if (out / "config.toml").exists() and TrainConfig.from_toml(out / "config.toml") != tcfg:
        raise UserError(f"{out} was trained with other settings; start a new run")
    out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(tcfg, out, progress=progress, **kw)
    if (ckpt := find_checkpoint(out)) is not None:
        trainer.load(ckpt)
    else:
        trainer.truncate_logs()
        write_atomic(out / "config.toml", tcfg.to_toml())
    return trainer


def _search(space, cfg, d: dict, out: Path, with_beta: bool, progress: bool):
    import torch
    import torch.nn.functional as F

    net = space.build(space.parse_arch("all-rs"))
    alphas = net.enable_mixture()
    betas = net.enable_gelu_mixture() if with_beta else []
    lam = float(d["lambda"])

    def loss(model, logits, y, x):
        penalty = sum(a.abs().sum() for a in alphas) + sum(b.abs().sum() for b in betas)
        return F.cross_entropy(logits, y, label_smoothing=0.1) + lam * penalty

    tcfg = _train_config(space, cfg, d, space.decode(space.parse_arch("all-rs"))["encoding"], int(d["steps"]))
    _log(f"search: alpha per head{' and beta per token' if with_beta else ''}, {tcfg.steps} steps -> {out}", progress)
    trainer = _trainer(tcfg, out, progress, net=net, loss=loss)
    trainer.run()
    with torch.no_grad():
        alpha = torch.cat([a.reshape(1, -1) for a in alphas]).cpu().numpy()  # (L, H)
        beta = torch.cat([b.reshape(1, -1) for b in betas]).cpu().numpy() if betas else None  # (L, N)
    return alpha, beta


def _retrain(space, cfg, d: dict, arch: Arch, out: Path, teacher, progress: bool) -> float:
    """Held-out accuracy of ``arch`` trained from scratch (the trainer's final evaluation)."""
    loss = _kd_loss(teacher) if teacher is not None else None
    net = space.build(arch)
    if teacher is not None:
        net.keep_tokens = True
    tcfg = _train_config(space, cfg, d, space.decode(arch)["encoding"], int(d["steps"]))
    _log(f"retrain {space.decode(arch)['heads']} ({tcfg.steps} steps{', token KD' if teacher else ''}) -> {out}",
         progress)
    trainer = _trainer(tcfg, out, progress, net=net, loss=loss)
    trainer.run()
    if not trainer.last_eval:
        trainer.last_eval = trainer.evaluate()
    return float(trainer.last_eval[0]["accuracy"])


def _kd_loss(teacher):
    """The released token-level KD: KL(student || teacher, T = 1) + 1.0 MSE(final-LN tokens) + CE."""
    import torch
    import torch.nn.functional as F

    def loss(model, logits, y, x):
        with torch.no_grad():
            t_tokens = teacher.features(x)
            t_logits = teacher.fc(t_tokens[:, 0])
        s_tokens, model.net.last_tokens = model.net.last_tokens, None  # a graph tensor blocks deepcopy
        kl = F.kl_div(F.log_softmax(logits, -1), F.softmax(t_logits.float(), -1), reduction="batchmean")
        return kl + F.mse_loss(s_tokens.float(), t_tokens.float()) + F.cross_entropy(logits, y)

    return loss


def _teacher_source(space, run: Path) -> tuple[Any, Path]:
    """The trainer config and checkpoint of a `nas train --arch` run of this space."""
    from nas.train.config import TrainConfig
    from nas.train.checkpoint import CHECKPOINT, find_checkpoint

    if not (run / "config.toml").is_file() or find_checkpoint(run, "--teacher") is None:
        raise UserError(f"--teacher {run}: not a finished `nas train` run directory (config.toml and {CHECKPOINT})")
    tcfg = TrainConfig.from_toml(run / "config.toml")
    from nas.spaces import get_space

    if tcfg.arch is None or get_space(tcfg.space).fingerprint != space.fingerprint:
        raise UserError(f"--teacher {run}: train the teacher with `nas train --space {space.name} --arch all-softmax`")
    return tcfg, run / CHECKPOINT


def _load_teacher(space, run: Path):
    from nas.archspec import parse_arch_text
    from nas.train.checkpoint import read_checkpoint

    tcfg, ckpt = _teacher_source(space, run)
    net = space.build(parse_arch_text(space, tcfg.arch))
    state = read_checkpoint(ckpt, "cpu", "--teacher", only=("model",))["model"]
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items()})
    return net.eval().requires_grad_(False)


def _log(msg: str, progress: bool) -> None:
    if progress:
        print(msg, file=sys.stderr)


# ---- the `nas search --strategy mpcvit` / `nas resume` entry ----------------------------------------
def cli(a, run_dir: Path | None = None, cfg=None) -> str:
    """A fresh design from the command line (``cfg`` None) or the resume of ``run_dir``."""
    from contextlib import nullcontext

    from nas.config import SearchConfig
    from nas.latency import load_table
    from nas.runs import locked, new_run_dir
    from nas.spaces import get_space

    if cfg is None:
        if a.supernet or a.objectives not in (None, "accuracy,latency"):
            raise UserError("--strategy mpcvit optimises retrained accuracy and MPC latency: drop --supernet/--objectives")
        design = {"mu": a.mu or "0.1,0.3,0.5,0.7", "data": a.data, "steps": a.steps,
                  **({"teacher": str(Path(a.teacher).resolve())} if a.teacher else {}),
                  **({"beta_ratio": a.beta_ratio} if a.beta_ratio is not None else {})}
        devices = tuple(x.strip() for x in (a.device or "").split(",") if x.strip())
        path = Path(a.space)
        cfg = SearchConfig(space=str(path.resolve()) if a.space.endswith(".toml") and path.exists() else a.space,
                           devices=devices, objectives="accuracy,latency", strategy="mpcvit", budget=1, seed=a.seed,
                           threads=a.threads, design={k: v for k, v in design.items() if v is not None}).validate()
    elif a.budget is not None:
        raise UserError("an MPCViT design has no --budget to change; start a new run")
    space = get_space(cfg.space)
    check_design(space, {**DEFAULTS, **cfg.design})
    tables = [load_table(dev, space) for dev in cfg.devices]
    fingerprints = {"space": space.fingerprint, **{f"table.{t.device}": t.version for t in tables}}
    if cfg.fingerprints and cfg.fingerprints != fingerprints:
        changed = sorted(k for k in set(cfg.fingerprints) | set(fingerprints) if cfg.fingerprints.get(k) != fingerprints.get(k))
        raise UserError(f"cannot resume: {', '.join(changed)} changed since the run started; start a new run")
    cfg = cfg.with_(fingerprints=fingerprints)
    fresh = run_dir is None  # `nas resume` already holds the run's lock
    if fresh:
        run_dir = new_run_dir(cfg, a.out, f"{space.name}-mpcvit")
    with locked(run_dir) if fresh else nullcontext():
        print(f"run directory: {run_dir}  (if interrupted: nas resume {run_dir})", file=sys.stderr)
        res = run_mpcvit(space, cfg, tables, run_dir, progress=not a.no_progress)
    from nas.run_report import write_report

    report = write_report(run_dir)
    if a.json:
        return json.dumps({**res.summary(), "report": str(report)}, indent=2)
    lat = [c for c in res.rows[0] if c.startswith("latency_")] if res.rows else []
    lines = [f"{len(res.rows)} retrained networks in {res.seconds:.0f}s; Pareto front: {res.front} -> {res.pareto_csv}"]
    for r in res.rows:
        lines.append(f"  {r['setting']:>9s} {r['heads']:40s} acc {100 * r['accuracy']:6.2f} %"
                     + "".join(f"  {r[c] / 1000:8.1f} s" for c in lat))
    lines.append(f"report: {report} (figures beside it; export a row with its retrained weights: "
                 f"nas export {run_dir} --point K)")
    return "\n".join(lines)
