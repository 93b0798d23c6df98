"""`nas proxies`: score N sampled architectures with several proxies and show how far to trust them.

Writes ``<run>/scores.jsonl`` (one line per architecture, appended as each finishes, so an
interrupted report resumes where it stopped), ``proxies.csv`` (one row per architecture: id,
decoded genes, every proxy, the ensemble, accuracy when known, errors), and, when accuracy is
known (``--supernet`` or ``--truth``), ``correlations.csv`` and ``correlations.png``: each proxy's
Spearman and Kendall rank correlation with accuracy, so users see when a proxy misleads them.
A proxy that fails on an architecture leaves NaN in its cell and the error in ``errors``.
"""
from __future__ import annotations

import csv
import io
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nas.config import dataclass_from_toml, dataclass_to_toml
from nas.errors import UserError
from nas.runs import write_atomic

DEFAULT_PROXIES = ("params", "macs", "grad_norm", "snip", "fisher", "jacob_cov", "synflow", "naswot", "zen", "ntk",
                   "length_distortion", "dss")


@dataclass(frozen=True)
class ProxyReportConfig:
    space: str
    n: int = 50
    proxies: tuple[str, ...] = DEFAULT_PROXIES
    seed: int = 0
    threads: int = 2
    ensemble: str = "ranksum"
    supernet: str | None = None
    truth: str | None = None  # CSV[:COLUMN] with an `arch` column

    def validate(self) -> "ProxyReportConfig":
        from nas.proxies import check_proxies
        from nas.proxies.ensemble import METHODS

        if self.n < 2:
            raise UserError(f"--n must be at least 2 architectures, got {self.n}")
        if self.threads < 1:
            raise UserError(f"--threads must be at least 1, got {self.threads}")
        if not self.proxies:
            raise UserError("--proxies is empty")
        check_proxies(list(self.proxies))
        if self.ensemble not in METHODS:
            from nas.registry import did_you_mean

            raise did_you_mean(self.ensemble, METHODS, "ensemble method")
        if self.supernet and self.truth:
            raise UserError("give --supernet or --truth, not both: one accuracy per report")
        if self.truth:
            path = self.truth.rpartition(":")[0] if ":" in self.truth and not Path(self.truth).exists() else self.truth
            if not Path(path).is_file():
                raise UserError(f"--truth {path}: no such file")
        if self.supernet:
            from nas.scorers import resolve_checkpoint

            resolve_checkpoint(self.supernet)
        return self

    def absolute(self) -> "ProxyReportConfig":
        """Paths made absolute, so that the report resumes from any directory."""
        import dataclasses

        def fix(p: str | None) -> str | None:
            if p is None:
                return None
            head, sep, col = p.rpartition(":") if ":" in p and not Path(p).exists() else (p, "", "")
            return str(Path(head).resolve()) + sep + col if Path(head).exists() else p

        space = str(Path(self.space).resolve()) if self.space.endswith(".toml") and Path(self.space).exists() else self.space
        return dataclasses.replace(self, space=space, supernet=fix(self.supernet), truth=fix(self.truth))

    def to_toml(self) -> str:
        return dataclass_to_toml(self, "`nas proxies`; `nas proxies --out` on this directory")

    @classmethod
    def from_toml(cls, path: Path) -> "ProxyReportConfig":
        return dataclass_from_toml(cls, path, "nas proxies", tuples=("proxies",))


def parse_proxy_list(spec: str) -> tuple[str, ...]:
    from nas.proxies import proxy_names

    if spec.strip() == "all":
        return tuple(proxy_names())
    return tuple(t.strip() for t in spec.split(",") if t.strip())


def sample_unique(space, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    seen: dict[str, np.ndarray] = {}
    for _ in range(1000):
        for row, ident in zip(g := space.sample(rng, 2 * n), space.ids(g)):
            seen.setdefault(ident, row)
            if len(seen) == n:
                return np.stack(list(seen.values()))
    raise UserError(f"space {space.name!r} has fewer than {n} distinct architectures reachable by sampling")


def read_truth(spec: str, space) -> tuple[dict[str, float], str]:
    """``FILE[:COLUMN]`` -> {arch id: accuracy}; the arch column is parsed by the space."""
    import pandas as pd

    path, _, column = spec.rpartition(":") if ":" in spec and not Path(spec).exists() else (spec, "", "")
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise UserError(f"--truth {path}: no such file") from None
    except Exception as e:
        raise UserError(f"--truth {path}: not a CSV ({e})") from None
    if "arch" not in df.columns:
        raise UserError(f"--truth {path}: needs an 'arch' column (columns: {', '.join(df.columns)})")
    if not column:
        numeric = [c for c in df.columns if c != "arch" and pd.api.types.is_float_dtype(df[c])]
        if len(numeric) != 1:
            found = f"candidates: {', '.join(numeric)}" if numeric else "no column of decimals"
            raise UserError(f"--truth {path}: say which column is the accuracy, as {path}:COLUMN ({found})")
        column = numeric[0]
    if column not in df.columns:
        from nas.registry import did_you_mean

        raise did_you_mean(column, [c for c in df.columns if c != "arch"], f"column of {path}")
    out = {}
    for line, (arch, acc) in enumerate(zip(df["arch"], df[column]), start=2):
        try:
            ident = space.parse_arch(arch).id
        except UserError as e:
            raise UserError(f"--truth {path}, line {line}, field arch: {e}") from None
        try:
            out[ident] = float(acc)
        except (TypeError, ValueError):
            raise UserError(f"--truth {path}, line {line}, field {column}: {acc!r} is not a number") from None
    return out, column


@dataclass
class ProxyReport:
    run_dir: Path
    ids: list[str]
    scores: dict[str, np.ndarray]
    ensemble: np.ndarray
    accuracy: np.ndarray | None
    correlations: list[dict[str, Any]]
    failed: int

    def summary(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "architectures": len(self.ids), "failed_scores": self.failed,
                "proxies_csv": str(self.run_dir / "proxies.csv"),
                "correlations": self.correlations}


@dataclass
class Prepared:
    """Everything of a report that can fail on user input, checked before anything is written."""

    space: Any
    truth: dict[str, float] | None
    truth_col: str | None
    supernet: Any


def prepare_report(cfg: ProxyReportConfig) -> Prepared:
    from nas.scorers import SupernetScorer
    from nas.spaces import get_space

    space = get_space(cfg.space)
    truth, truth_col = (read_truth(cfg.truth, space) if cfg.truth else (None, None))
    sup = SupernetScorer(space, cfg.supernet, cfg.threads) if cfg.supernet else None
    if sup is not None:
        sup.check()
    return Prepared(space, truth, truth_col, sup)


def run_report(cfg: ProxyReportConfig, run_dir: Path, *, progress: bool = True, prepared: Prepared | None = None) -> ProxyReport:
    from nas.proxies import proxy_goal
    from nas.proxies.ensemble import aggregate, correlation
    from nas.scorers import ProxyScorer

    p = prepared or prepare_report(cfg)
    space, truth, truth_col, sup = p.space, p.truth, p.truth_col, p.supernet
    scorers = {p: ProxyScorer(space, p, cfg.seed, cfg.threads) for p in cfg.proxies}
    genomes = sample_unique(space, cfg.n, cfg.seed)
    ids = space.ids(genomes)
    log_path = run_dir / "scores.jsonl"
    done = _read_done(log_path)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(ids), initial=sum(i in done for i in ids), unit="arch", desc="proxies",
                   dynamic_ncols=True, file=sys.stderr)
    with log_path.open("a", encoding="utf-8") as log:
        for ident, g in zip(ids, genomes):
            if ident in done:
                continue
            rec: dict[str, Any] = {"id": ident, "scores": {}, "errors": {}}
            for p, sc in scorers.items():
                try:
                    rec["scores"][p] = sc(g)[sc.column]
                except Exception as e:  # a proxy failing on one model is a cell, not a crashed report
                    rec["scores"][p] = None
                    rec["errors"][p] = f"{type(e).__name__}: {e}"
            if sup is not None:
                rec["accuracy"] = sup(g)["accuracy"]
            log.write(json.dumps(rec) + "\n")
            log.flush()
            done[ident] = rec
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    recs = [done[i] for i in ids]
    scores = {p: np.array([np.nan if r["scores"].get(p) is None else r["scores"][p] for r in recs], dtype=np.float64)
              for p in cfg.proxies}
    goals = {p: proxy_goal(p) for p in cfg.proxies}
    ens = aggregate(scores, goals, cfg.ensemble)
    if truth is not None:
        acc = np.array([truth.get(i, np.nan) for i in ids])
    elif sup is not None:
        acc = np.array([r.get("accuracy", np.nan) for r in recs], dtype=np.float64)
    else:
        acc = None
    corr = []
    if acc is not None:
        for p in (*cfg.proxies, f"ensemble_{cfg.ensemble}"):
            v, goal = (scores[p], goals[p]) if p in scores else (ens, "max")
            rho, tau, n = correlation(v, acc, goal)
            corr.append({"proxy": p, "goal": goal, "spearman": rho, "kendall": tau, "n": n})
    failed = sum(len(r["errors"]) for r in recs)
    _write_csv(run_dir / "proxies.csv", space, genomes, ids, scores, ens, cfg.ensemble, acc,
               truth_col or ("supernet_accuracy" if sup else None), recs)
    if corr:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=["proxy", "goal", "spearman", "kendall", "n"], lineterminator="\n")
        w.writeheader()
        w.writerows(corr)
        write_atomic(run_dir / "correlations.csv", buf.getvalue())
        plot_correlations(scores, goals, acc, corr, run_dir / "correlations.png",
                          f"{space.name}: {len(ids)} architectures, seed {cfg.seed}")
    return ProxyReport(run_dir, ids, scores, ens, acc, corr, failed)


def _read_done(path: Path) -> dict[str, dict]:
    from nas.runs import read_records

    done: dict[str, dict] = {}
    for rec in read_records(path, "scores"):
        if "id" not in rec or "scores" not in rec:
            raise UserError(f"{path}: a record without 'id' and 'scores'; is this a `nas proxies` report?")
        done[rec["id"]] = rec
    return done


def _write_csv(path, space, genomes, ids, scores, ens, method, acc, acc_col, recs) -> None:
    header = ["arch_id", *scores, f"ensemble_{method}"] + ([acc_col] if acc is not None else []) + ["errors"]
    decoded = [space.decode(space.arch(g)) for g in genomes]
    header += list(decoded[0]) if decoded else []
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for k, ident in enumerate(ids):
        row = [ident, *(_fmt(scores[p][k]) for p in scores), _fmt(ens[k])]
        if acc is not None:
            row.append(_fmt(acc[k]))
        row.append("; ".join(f"{p}: {e}" for p, e in recs[k]["errors"].items()))
        row += list(decoded[k].values())
        w.writerow(row)
    write_atomic(path, buf.getvalue())


def _fmt(v: float) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.8g}"


def plot_correlations(scores, goals, acc, corr, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(scores)
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    by = {c["proxy"]: c for c in corr}
    for ax, p in zip(axes.flat, names):
        v = scores[p]
        ok = np.isfinite(v) & np.isfinite(acc)
        x = v[ok]
        if p in ("synflow", "dss", "params", "macs", "ntk") and (x > 0).all() and x.size:
            ax.set_xscale("log")
        ax.scatter(x, acc[ok], s=6, alpha=0.6)
        c = by[p]
        ax.set_title(f"{p} ({c['goal']}): rho {c['spearman']:.2f}, tau {c['kendall']:.2f}", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.supylabel("accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_table(corr: list[dict[str, Any]]) -> str:
    lines = [f"{'proxy':>22} {'goal':>4} {'spearman':>9} {'kendall':>8} {'n':>6}"]
    for c in corr:
        lines.append(f"{c['proxy']:>22} {c['goal']:>4} {c['spearman']:>9.3f} {c['kendall']:>8.3f} {c['n']:>6}")
    return "\n".join(lines)
