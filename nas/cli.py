"""The ``nas`` command. Input errors print one line and exit 2; ``--debug`` shows tracebacks."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from nas.config import DEFAULT_OBJECTIVES, SearchConfig, default_objectives
from nas.errors import UserError
from nas.train.config import TrainConfig

EXAMPLES = {
    "search": """examples:
  nas search --space elasticvit --device pixel6
  nas search --space elasticvit --device pixel6,pixel4 --objectives naswot,latency --budget 500
  nas search --space elasticvit --device pixel6 --objectives latency,max:params --max-latency 20 --budget 100000
  nas search --space my_space.toml --device ./my_tables/ --strategy optuna-tpe --seed 3 --json
  nas search --space elasticvit-tiny --supernet runs/<train run>/ --objectives accuracy,macs --budget 100""",
    "train": """examples:
  nas train --space elasticvit-tiny --data fashion-mnist --steps 600 --batch-size 64
  nas train --space elasticvit-tiny --data fashion-mnist:/data/fmnist --sampler elasticvit --epochs 2
  nas train --space elasticvit-tiny --data cifar10:/data/cifar-10-batches-py --sampler sandwich --ema 0.999 --epochs 5
  nas train --resume runs/20261124-train-elasticvit-tiny-fashion-mnist-1a2b3c""",
    "resume": """examples:
  nas resume runs/20261124-elasticvit-pixel6-a1b2c3
  nas resume runs/20261124-elasticvit-pixel6-a1b2c3 --budget 1000   # extend a finished run""",
    "latency": """examples:
  nas latency --space elasticvit --device pixel6 --arch elastic_S1 --json
  nas latency --space elasticvit --arch elastic_M                    # every device with a table
  nas latency --space elasticvit --device pixel6 --arch '[192, [16,24,40,64,96,192,272], ...]' --blocks""",
    "spaces": "examples:\n  nas spaces\n  nas spaces --json",
    "devices": "examples:\n  nas devices\n  nas devices --json",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="nas", description="Neural-architecture search for vision transformers and CNN/ViT hybrids.",
                formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog="run `nas <command> --help` for a command's options and examples")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def cmd(name: str, help_: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_, description=help_, epilog=EXAMPLES.get(name),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        c.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")
        return c

    s = cmd("search", "search a space for the Pareto front of accuracy estimate vs. latency/cost")
    s.add_argument("--space", required=True, help="space name (see `nas spaces`) or path to a space TOML")
    s.add_argument("--device", help="device(s) with latency tables, comma-separated (see `nas devices`)")
    s.add_argument("--objectives", default=None,
                   help="comma-separated: latency, latency:<device>, macs, params, accuracy (needs --supernet), "
                        f"or a proxy such as naswot (default: {DEFAULT_OBJECTIVES}; accuracy,latency with "
                        "--supernet; macs instead of latency without --device)")
    s.add_argument("--supernet", metavar="CKPT", help="a `nas train` checkpoint or run directory: accuracy comes from it")
    s.add_argument("--strategy", default=SearchConfig.strategy, help="nsga2 (pymoo), optuna-nsga2, optuna-tpe, evolution, random")
    s.add_argument("--budget", type=int, default=SearchConfig.budget,
                   help=f"architectures to evaluate (default {SearchConfig.budget}: minutes on 2 cores with naswot)")
    s.add_argument("--population", type=int, default=SearchConfig.population,
                   help=f"population / batch size (default {SearchConfig.population})")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--max-latency", type=float, metavar="MS", help="constraint: latency on every device <= MS")
    s.add_argument("--max-macs", type=float, metavar="M", help="constraint: MACs <= M millions")
    s.add_argument("--max-params", type=float, metavar="M", help="constraint: parameters <= M millions")
    s.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1),
                   help="torch threads for proxy evaluation (recorded: scores depend on it)")
    s.add_argument("--out", type=Path, help="run directory (default runs/<date>-<space>-<device>-<id>)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("--json", action="store_true", help="print a JSON summary on stdout")

    t = cmd("train", "train a weight-sharing supernet on real data")
    t.add_argument("--space", help="space name or TOML path (its family must have a supernet)")
    t.add_argument("--data", help="fashion-mnist[:DIR], cifar10:DIR, cifar100:DIR or imagefolder:DIR[:SIZE]")
    t.add_argument("--sampler", default=TrainConfig.sampler, help="uniform, sandwich (default), complexity, elasticvit")
    n = t.add_mutually_exclusive_group()
    n.add_argument("--steps", type=int, help="optimiser steps")
    n.add_argument("--epochs", type=float, help="epochs over the training split")
    t.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    t.add_argument("--lr", type=float, default=TrainConfig.lr, help=f"peak AdamW learning rate (default {TrainConfig.lr})")
    t.add_argument("--subnets", type=int, help="subnets per step (default: 4; 2 for uniform)")
    t.add_argument("--alpha-div", action=argparse.BooleanOptionalAction, default=None,
                   help="in-place distillation with alpha-divergence (default: on for complexity/elasticvit)")
    t.add_argument("--teacher", action="append", default=[], metavar="NAME:CKPT",
                   help="timm model and its checkpoint; repeat for an ensemble (their mean replaces the labels)")
    t.add_argument("--ema", type=float, metavar="DECAY", help="keep an EMA of the weights; evaluation uses it")
    t.add_argument("--agc", type=float, metavar="FACTOR", help="adaptive gradient clipping (ElasticViT: 0.1)")
    t.add_argument("--accumulate", type=int, default=1, help="micro-batches per optimiser step")
    t.add_argument("--heldout", type=int, default=TrainConfig.heldout, help="training images held out for search")
    t.add_argument("--eval-every", type=int, help="steps between evaluations (default: each epoch and the end)")
    t.add_argument("--checkpoint-every", type=int, default=TrainConfig.checkpoint_every)
    t.add_argument("--max-bad-steps", type=int, default=TrainConfig.max_bad_steps,
                   help="stop after this many non-finite losses in a row (default 10)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    t.add_argument("--out", type=Path, help="run directory (default runs/<date>-train-<space>-<data>-<id>)")
    t.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a training run from its checkpoint")
    t.add_argument("--no-progress", action="store_true")
    t.add_argument("--json", action="store_true")

    r = cmd("resume", "continue an interrupted search without recomputing finished evaluations")
    r.add_argument("run_dir", type=Path)
    r.add_argument("--budget", type=int, help="raise the budget of the run")
    r.add_argument("--no-progress", action="store_true")
    r.add_argument("--json", action="store_true")

    la = cmd("latency", "MACs, parameters and predicted latency of one architecture")
    la.add_argument("--space", required=True)
    la.add_argument("--device", help="device(s), comma-separated (default: every device with a table for the space)")
    la.add_argument("--arch", required=True, help="a preset name, JSON (the family's encoding or {gene: value}), or @file.json")
    la.add_argument("--blocks", action="store_true", help="also list every table entry summed")
    la.add_argument("--json", action="store_true")

    sp = cmd("spaces", "list the search spaces that ship with vitnas")
    sp.add_argument("--json", action="store_true")
    dv = cmd("devices", "list the devices with latency tables, with provenance")
    dv.add_argument("--json", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        out = COMMANDS[args.command](args)
    except UserError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
    if out is not None:
        print(out)


def _devices(text: str | None) -> tuple[str, ...]:
    return tuple(d.strip() for d in (text or "").split(",") if d.strip())


def cmd_search(a: argparse.Namespace) -> str | None:
    from nas.runs import locked, new_run_dir
    from nas.search.loop import prepare

    devices = _devices(a.device)
    cfg = SearchConfig(space=a.space, devices=devices,
                       objectives=a.objectives or default_objectives(a.supernet is not None, bool(devices)),
                       strategy=a.strategy, budget=a.budget, population=a.population, seed=a.seed,
                       max_latency=a.max_latency, max_macs=a.max_macs, max_params=a.max_params, threads=a.threads,
                       supernet=a.supernet)
    session = prepare(cfg)  # every input check happens before anything is written
    run_dir = new_run_dir(session.cfg, a.out, session.label)
    with locked(run_dir):
        return _run(session, run_dir, a)


def cmd_resume(a: argparse.Namespace) -> str | None:
    from nas.runs import locked, write_atomic
    from nas.search.loop import prepare

    if not a.run_dir.is_dir():
        raise UserError(f"{a.run_dir} is not a directory")
    with locked(a.run_dir):
        cfg = SearchConfig.from_toml(a.run_dir / "config.toml")
        if a.budget is not None:
            log = a.run_dir / "evals.jsonl"
            done = log.read_bytes().count(b"\n") if log.exists() else 0
            if a.budget < done:
                raise UserError(f"--budget {a.budget} is below the {done} evaluations already in {log}")
            cfg = cfg.with_(budget=a.budget)
        session = prepare(cfg)
        if a.budget is not None:
            write_atomic(a.run_dir / "config.toml", session.cfg.to_toml())
        return _run(session, a.run_dir, a)


def _run(session, run_dir: Path, a: argparse.Namespace) -> str | None:
    from nas.search.loop import run

    print(f"run directory: {run_dir}  (if interrupted: nas resume {run_dir})", file=sys.stderr)
    result = run(session, run_dir, progress=not a.no_progress)
    if a.json:
        return json.dumps(result.summary(), indent=2)
    lines = [f"evaluated {result.evaluated} architectures in {result.seconds:.1f}s ({result.failed} failed)",
             f"Pareto front: {result.front} architectures -> {result.pareto_csv}"]
    if result.plot:
        lines.append(f"plot: {result.plot}")
    return "\n".join(lines)


def cmd_train(a: argparse.Namespace) -> str | None:
    from contextlib import nullcontext

    from nas.runs import locked, new_run_dir
    from nas.train.trainer import CHECKPOINT, Trainer

    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if a.resume is not None:
        if not a.resume.is_dir():
            raise UserError(f"--resume {a.resume} is not a directory")
        out = a.resume
        cfg = TrainConfig.from_toml(out / "config.toml")
        trainer = Trainer(cfg, out, progress=not a.no_progress)
        if (out / CHECKPOINT).exists():
            trainer.load(out / CHECKPOINT)
        else:
            trainer.truncate_logs()  # killed before the first checkpoint: start over
        if rank == 0:
            print(f"resuming {out} at step {trainer.step} of {trainer.total}", file=sys.stderr)
    else:
        if not a.space or not a.data:
            raise UserError("nas train needs --space and --data (or --resume RUN_DIR)")
        if a.steps is None and a.epochs is None:
            raise UserError("give --steps or --epochs")
        if world > 1 and a.out is None:
            raise UserError("under torchrun, give every rank the same --out")
        cfg = TrainConfig(space=a.space, data=a.data, sampler=a.sampler, subnets=a.subnets, steps=a.steps,
                          epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, alpha_div=a.alpha_div,
                          teachers=tuple(a.teacher), ema=a.ema, agc=a.agc, accumulate=a.accumulate, heldout=a.heldout,
                          eval_every=a.eval_every, checkpoint_every=a.checkpoint_every, max_bad_steps=a.max_bad_steps,
                          seed=a.seed, threads=a.threads)
        trainer = Trainer(cfg, Path("."), progress=not a.no_progress)  # checks everything before writing
        if rank == 0:
            out = new_run_dir(trainer.cfg, a.out, f"train-{trainer.space.name}-{a.data.split(':')[0]}")
            print(f"run directory: {out}  (if interrupted: nas train --resume {out})", file=sys.stderr)
        else:
            out = a.out
        trainer.out = out
    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # rank 0 has created the run directory
    with locked(out) if rank == 0 else nullcontext():
        result = trainer.run()
    if rank != 0:
        return None
    if a.json:
        return json.dumps(result, indent=2)
    skipped = f" ({result['skipped_steps']} skipped: non-finite loss)" if result["skipped_steps"] else ""
    lines = [f"trained {result['step']}/{result['total']} steps in {result['seconds']:.0f}s{skipped}; "
             f"checkpoint: {result['checkpoint']}"]
    for e in result["evaluation"]:
        lines.append(f"  {e['role']:9s} {e['macs_m']:7.2f} M MACs  {e['resolution']:4d} px  held-out accuracy {100 * e['accuracy']:.2f} %")
    return "\n".join(lines)


def _read_arch_spec(text: str) -> Any:
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as e:
            raise UserError(f"--arch {text}: {e.strerror}") from None
    stripped = text.strip()
    if stripped[:1] in "[{":
        try:
            return json.loads(stripped)
        except json.JSONDecodeError as e:
            raise UserError(f"--arch is not valid JSON: {e}") from None
    return stripped


def cmd_latency(a: argparse.Namespace) -> str:
    from nas.latency import device_dirs, load_table, table_path
    from nas.spaces import get_space

    space = get_space(a.space)
    arch = space.parse_arch(_read_arch_spec(a.arch))
    devices = _devices(a.device)
    if not devices:
        devices = tuple(d for d in device_dirs() if _has_table(table_path, d, space))
    tables = [load_table(d, space, check=False) for d in devices]
    import numpy as np

    cost = space.cost(np.asarray([arch.genome]))
    latency = {t.device: float(t.predict(space, np.asarray([arch.genome]))[0]) for t in tables}
    out: dict[str, Any] = {
        "space": space.name,
        "arch": a.arch if isinstance(_read_arch_spec(a.arch), str) else None,
        "arch_id": arch.id,
        "macs_m": float(cost["macs"][0]) / 1e6,
        "params_m": float(cost["params"][0]) / 1e6,
        "latency_ms": latency,
        "table_version": {t.device: t.version for t in tables},
        "decoded": space.decode(arch),
    }
    if a.blocks:
        out["blocks"] = {t.device: [{"key": k, "ms": v} for k, v in t.breakdown(space, arch)] for t in tables}
    if a.json:
        return json.dumps(out, indent=2)
    lines = [f"{out['arch'] or arch.id} ({space.name}): {out['macs_m']:.1f} M MACs, {out['params_m']:.2f} M params"]
    lines += [f"  {d:10s} {ms:8.2f} ms   ({out['table_version'][d]})" for d, ms in latency.items()]
    if a.blocks:
        for d, blocks in out["blocks"].items():
            lines.append(f"  blocks on {d}:")
            lines += [f"    {b['key']:48s} {b['ms']:8.3f}" for b in blocks]
    return "\n".join(lines)


def _has_table(table_path, device: str, space) -> bool:
    try:
        table_path(device, space)
        return True
    except UserError:
        return False


def cmd_spaces(a: argparse.Namespace) -> str:
    from nas.spaces import get_space, space_files

    rows = []
    for name in space_files():
        s = get_space(name)
        d = s.describe()
        d["size"] = s.size() if hasattr(s, "size") else None
        rows.append(d)
    if a.json:
        return json.dumps(rows, indent=2)
    out = []
    for d in rows:
        out.append(f"{d['name']:16s} {d['family']:12s} {d['size']:.2e} archs, {d['genes']} genes, "
                   f"{d['search_vars']} search vars  {d['description']}")
        if d["presets"]:
            out.append(f"{'':16s} presets: {', '.join(d['presets'])}")
    return "\n".join(out)


def cmd_devices(a: argparse.Namespace) -> str:
    from nas.latency import device_dirs
    from nas.latency.table import LatencyTable

    rows = []
    for device, folder in device_dirs().items():
        for meta in sorted(folder.glob("*.toml")):
            t = LatencyTable.load(meta)
            prov = t.meta.get("provenance", {})
            rows.append({"device": device, "family": t.family, "description": t.meta.get("description", ""),
                         "entries": len(t.ms), "version": t.version, "grid_rounding": t.grid_rounding,
                         "source": prov.get("source", ""), "licence": prov.get("licence", ""), "path": str(meta)})
    if a.json:
        return json.dumps(rows, indent=2)
    return "\n".join(f"{r['device']:10s} {r['family']:12s} {r['entries']:6d} blocks  {r['description']}\n"
                     f"{'':10s} {r['version']}  licence: {r['licence']}" for r in rows)


COMMANDS = {"search": cmd_search, "resume": cmd_resume, "train": cmd_train, "latency": cmd_latency,
            "spaces": cmd_spaces, "devices": cmd_devices}

if __name__ == "__main__":
    main()
