"""The ``nas`` command. Input errors print one line and exit 2; ``--debug`` shows tracebacks."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from nas.config import DEFAULT_OBJECTIVES, SearchConfig
from nas.errors import UserError

EXAMPLES = {
    "search": """examples:
  nas search --space elasticvit --device pixel6
  nas search --space elasticvit --device pixel6,pixel4 --objectives naswot,latency --budget 500
  nas search --space elasticvit --device pixel6 --objectives latency,max:params --max-latency 20 --budget 100000
  nas search --space my_space.toml --device ./my_tables/ --strategy optuna-tpe --seed 3 --json""",
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
    s.add_argument("--device", required=True, help="device(s) with latency tables, comma-separated (see `nas devices`)")
    s.add_argument("--objectives", default=None,
                   help="comma-separated: latency, latency:<device>, macs, params, or a proxy such as naswot "
                        f"(default: {DEFAULT_OBJECTIVES})")
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

    cfg = SearchConfig(space=a.space, devices=_devices(a.device), objectives=a.objectives or DEFAULT_OBJECTIVES,
                       strategy=a.strategy, budget=a.budget, population=a.population, seed=a.seed,
                       max_latency=a.max_latency, max_macs=a.max_macs, max_params=a.max_params, threads=a.threads)
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


COMMANDS = {"search": cmd_search, "resume": cmd_resume, "latency": cmd_latency, "spaces": cmd_spaces,
            "devices": cmd_devices}

if __name__ == "__main__":
    main()
