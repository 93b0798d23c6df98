"""``report.html``: one self-contained page per run (``nas search`` writes it at the end, ``nas
report RUN_DIR`` at any time), read from the run directory alone.

Self-contained means no network: every figure is a matplotlib PNG inlined as a data URI (the same
PNGs stay beside the page, ``report-*.png``, for papers), styles are inline, and nothing is
linked. Shown: the front for every pair of objectives (per device and jointly), with the space's
presets (the published models) on the same axes; how the front evolved over the evaluations;
hypervolume against evaluations (pymoo's indicator, objectives normalised to [0, 1] over the
run's feasible evaluations, reference point 1.1 in each); histograms of the objectives; the
Pareto table with decoded genes and export commands; and the provenance of every table and
checkpoint the numbers come from.
"""
from __future__ import annotations

import base64
import html
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nas.errors import UserError
from nas.objectives import Constraint, Evaluator, Objective

EVOLUTION_STEPS = (0.1, 0.25, 0.5, 1.0)  # shares of the evaluations at which the front is drawn
HV_POINTS = 40  # checkpoints of the hypervolume curve
FRONT_CHUNK = 1024  # evaluations added to the front at a time


@dataclass
class RunData:
    """The numbers of a run, read-only from its files; duck-types the parts of ``RunLog`` that
    ``nas.report.plot_front`` reads (``values``, ``col``, ``front``, ``feasible``)."""

    run_dir: Path
    cfg: Any
    space: Any
    tables: list
    objectives: list[Objective]
    constraints: list[Constraint]
    columns: list[str]
    values: np.ndarray  # (n, len(columns)), NaN where not measured
    status: np.ndarray  # (n,) bool: status ok
    front: np.ndarray  # row numbers
    kind: str = ""  # what made the run, for the title: "nsga2, seed 0", "DeepMAD design (mp), seed 0"
    notes: list[str] | None = None  # what the page should say about how this kind of run is drawn
    presets: dict[str, dict[str, float]] | None = None  # a designer's own metrics of the space's presets

    @property
    def col(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.columns)}

    def minimised(self, rows: np.ndarray) -> np.ndarray:
        cols = [self.col[o.column] for o in self.objectives]
        return self.values[rows][:, cols] * np.array([o.sign for o in self.objectives])

    def feasible(self, rows: np.ndarray) -> np.ndarray:
        ok = self.status[rows] & np.all(np.isfinite(self.minimised(rows)), axis=1)
        for c in self.constraints:
            ok &= c.violation(self.values[rows, self.col[c.column]]) <= 0
        return ok


def load_run(run_dir: Path) -> RunData:
    """A run's data, read from its files alone: a `nas search` run (objectives, constraints and
    tables rebuilt from its config.toml) or a designer's (`nas design`, `--strategy mpcvit`,
    `--strategy asvit`), each with the objectives it was judged by."""
    from nas.runs import run_config, run_space

    run_dir = Path(run_dir)
    raw = run_config(run_dir)
    space = run_space(run_dir, raw)
    if "max_flops" in raw:
        return _load_deepmad(run_dir, space)
    if raw.get("strategy") == "asvit":
        return _load_asvit(run_dir, space)
    from nas.config import SearchConfig
    from nas.latency import load_table

    cfg = SearchConfig.from_toml(run_dir / "config.toml")
    tables = [load_table(d, space, check=False) for d in cfg.devices]
    if cfg.strategy == "mpcvit":
        from nas.search.mpcvit import objectives_of

        return _from_evals(run_dir, cfg, space, tables, objectives_of(tables), [], f"MPCViT, seed {cfg.seed}")
    from nas.objectives import parse_objectives
    from nas.proxies import proxy_names
    from nas.search.loop import constraints_of
    import nas.metrics as tm

    devices = [t.device for t in tables]
    named = tm.available(cfg.metrics)
    objectives, _ = parse_objectives(cfg.objectives, devices, proxy_names(), supernet=cfg.supernet is not None,
                                     metrics=named)
    constraints = constraints_of(cfg, devices, list(named))
    return _from_evals(run_dir, cfg, space, tables, objectives, constraints, f"{cfg.strategy}, seed {cfg.seed}")


def _from_evals(run_dir: Path, cfg, space, tables, objectives, constraints, kind: str,
                evals: list[dict] | None = None, notes: tuple[str, ...] = (), presets=None) -> RunData:
    from nas.runs import evaluations

    evals = evaluations(run_dir) if evals is None else evals
    columns = list(dict.fromkeys(Evaluator(space, tables).columns + [o.column for o in objectives]
                                 + [c.column for c in constraints]))
    values = np.array([[np.nan if r.get(c) is None else float(r[c]) for c in columns] for r in evals],
                      dtype=float).reshape(len(evals), len(columns))
    status = np.array([r.get("status", "ok") == "ok" for r in evals], dtype=bool)
    data = RunData(run_dir, cfg, space, tables, objectives, constraints, columns, values, status, np.empty(0, int),
                   kind, list(notes), presets)
    data.front = fronts_at(data, [len(evals)])[0]
    return data


def _load_deepmad(run_dir: Path, space) -> RunData:
    """`nas design`: one objective (the DeepMAD score) under hard budgets. The figures show the
    candidates it scored against the budgeted FLOPs and parameters, with the released
    structures scored by the same formula; pareto.csv holds the design itself."""
    from nas.design.deepmad import DesignConfig, preset_columns, report_objectives, run_constraints

    cfg = DesignConfig.from_toml(run_dir / "config.toml")
    note = ("The design maximises the score alone; the figures draw it against the budgeted FLOPs and parameters "
            "(their trade-off among the candidates scored), and the table below is the design (pareto.csv).")
    return _from_evals(run_dir, cfg, space, [], report_objectives(), run_constraints(cfg.budgets(space)),
                       f"DeepMAD design ({cfg.solver}), seed {cfg.seed}", notes=(note,),
                       presets=preset_columns(space, cfg.objective()))


def _load_asvit(run_dir: Path, space) -> RunData:
    """`--strategy asvit`: the topologies the seed search measured (one size, so comparable) on
    As-ViT's two measures; the scaled family (family.csv) is the run's result."""
    from nas.config import SearchConfig
    from nas.objectives import parse_objectives
    from nas.proxies import proxy_names
    from nas.runs import evaluations

    cfg = SearchConfig.from_toml(run_dir / "config.toml")
    objectives, _ = parse_objectives(cfg.objectives, [], proxy_names())
    evals = []
    for r in evaluations(run_dir, "measures.jsonl", ("id", "role")):
        if r["role"] == "topology":  # measures.jsonl names the measures, evals.jsonl their proxy columns
            r = {**r, **{o.column: r.get(o.column.removeprefix("proxy_")) for o in objectives}}
            evals.append({**r, "status": "ok" if all(r[o.column] is not None for o in objectives) else "failed"})
    note = ("Drawn: the topologies the seed search measured, in the order measured; the result is the scaled "
            "family below (family.csv, family.png).")
    return _from_evals(run_dir, cfg, space, [], objectives, [], f"As-ViT, seed {cfg.seed}", evals, (note,))


def fronts_at(data: RunData, ks) -> list[np.ndarray]:
    """Rows of the Pareto front of the feasible evaluations among the first k, for each k of
    the increasing ``ks``; built incrementally (the front so far plus the next chunk, as the run
    log does), so a run of 10^5 evaluations never sorts them all at once."""
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    out, front, done = [], np.empty(0, dtype=np.int64), 0
    for k in ks:
        k = min(int(k), len(data.values))  # a run with no evaluations (yet) has an empty front
        for start in range(done, k, FRONT_CHUNK):
            rows = np.arange(start, min(k, start + FRONT_CHUNK))
            cand = np.concatenate([front, rows[data.feasible(rows)]])
            if len(cand):
                front = np.sort(cand[NonDominatedSorting().do(data.minimised(cand), only_non_dominated_front=True)])
        done = max(done, k)
        out.append(front)
    return out


def hypervolume_curve(data: RunData) -> tuple[np.ndarray, np.ndarray]:
    """(evaluations, hypervolume) at up to HV_POINTS checkpoints: pymoo's HV of the front so far,
    objectives (minimised) normalised to [0, 1] over the run's feasible evaluations, reference 1.1."""
    from pymoo.indicators.hv import HV

    n = len(data.values)
    feas = np.flatnonzero(data.feasible(np.arange(n))) if n else np.empty(0, int)
    if not len(feas):
        return np.empty(0), np.empty(0)
    f = data.minimised(feas)
    lo, span = f.min(axis=0), np.ptp(f, axis=0)
    span[span == 0] = 1.0
    hv = HV(ref_point=np.full(len(data.objectives), 1.1))
    ks = np.unique(np.linspace(1, n, min(n, HV_POINTS)).round().astype(int))
    out = [float(hv((data.minimised(fr) - lo) / span)) if len(fr) else 0.0 for fr in fronts_at(data, ks)]
    return ks, np.asarray(out)


def preset_metrics(data: RunData) -> dict[str, dict[str, float]]:
    """The cheap metrics (MACs, parameters, latency on the run's devices) of the space's presets;
    a preset a table cannot price keeps its other metrics."""
    if data.presets is not None:
        return data.presets
    presets = data.space.presets()
    out: dict[str, dict[str, float]] = {}
    for name, arch in presets.items():
        g = np.asarray([arch.genome])
        cost = data.space.cost(g)
        known = {"macs_m": float(cost["macs"][0]) / 1e6, "params_m": float(cost["params"][0]) / 1e6}
        for t in data.tables:
            try:
                known[f"latency_{t.device}_ms"] = float(t.predict(data.space, g)[0])
            except UserError:
                pass
        out[name] = known
    return out


# ---- figures ------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    _plt().close(fig)
    tmp.replace(path)
    return path


def plot_evolution(data: RunData, path: Path) -> Path:
    plt = _plt()
    i, j = _pair(data.objectives)
    oi, oj = data.objectives[i], data.objectives[j]
    fig, ax = plt.subplots(figsize=(5.6, 4.4))
    n = len(data.values)
    ks = [max(1, int(round(share * n))) for share in EVOLUTION_STEPS]
    colors = plt.cm.viridis(np.linspace(0.15, 0.85, len(EVOLUTION_STEPS)))
    for k, fr, color in zip(ks, fronts_at(data, ks), colors):
        if not len(fr):
            continue
        v = data.values[fr][:, [data.col[oi.column], data.col[oj.column]]]
        order = np.argsort(v[:, 0])
        ax.plot(v[order, 0], v[order, 1], "-o", ms=3, lw=1, color=color, label=f"after {k} evaluations")
    ax.set_xlabel(oi.label)
    ax.set_ylabel(oj.label)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.set_title("the front over the search", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_hypervolume(ks: np.ndarray, hv: np.ndarray, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    ax.plot(ks, hv, "-", c="C3")
    ax.set_xlabel("evaluations")
    ax.set_ylabel("hypervolume (normalised, ref. 1.1)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_histograms(data: RunData, path: Path) -> Path:
    plt = _plt()
    m = len(data.objectives)
    fig, axes = plt.subplots(1, m, figsize=(3.6 * m, 3.0), squeeze=False)
    feas = data.feasible(np.arange(len(data.values))) if len(data.values) else np.zeros(0, bool)
    for ax, o in zip(axes[0], data.objectives):
        v = data.values[feas, data.col[o.column]]
        ax.hist(v[np.isfinite(v)], bins=30, color="#888888")
        if len(data.front):
            for x in data.values[data.front, data.col[o.column]]:
                ax.axvline(x, c="C3", lw=0.5, alpha=0.6)
        ax.set_xlabel(o.label, fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("evaluations")
    fig.tight_layout()
    return _save(fig, path)


def _pair(objectives: list[Objective]) -> tuple[int, int]:
    if len(objectives) < 2:
        return 0, 0
    mins = [k for k, o in enumerate(objectives) if o.goal == "min"]
    maxs = [k for k, o in enumerate(objectives) if o.goal == "max"]
    return (mins[0], maxs[0]) if mins and maxs else (0, 1)


# ---- the page -----------------------------------------------------------------------------------
def write_report(run_dir: Path) -> Path:
    """Draw every figure (PNG beside the page) and write ``report.html`` atomically."""
    from nas.report import plot_front
    from nas.runs import pareto_rows, write_atomic

    data = load_run(run_dir)
    run_dir = data.run_dir
    presets = preset_metrics(data)
    title = f"{data.space.name}: {data.kind}, {len(data.values)} evaluations"
    ks, hv = hypervolume_curve(data)
    figures = [
        ("The Pareto front, every pair of objectives (stars and dashed lines: the space's presets)",
         plot_front(data, data.objectives, run_dir / "pareto.png", title=title, presets=presets)),
        ("How the front evolved over the evaluations", plot_evolution(data, run_dir / "report-evolution.png")),
        ("Hypervolume against evaluations", plot_hypervolume(ks, hv, run_dir / "report-hypervolume.png")),
        ("Objectives over all feasible evaluations (red: the front)", plot_histograms(data, run_dir / "report-histograms.png")),
    ]
    if (run_dir / "family.png").exists():  # As-ViT's scaled family, drawn by the run itself
        figures.append(("The scaled family (family.png)", run_dir / "family.png"))
    rows = pareto_rows(run_dir) if (run_dir / "pareto.csv").exists() else []
    exports = _exports(run_dir)
    body = [f"<h1>{_e(title)}</h1>", _summary(data, hv), *(f"<p>{_e(n)}</p>" for n in data.notes or ()),
            *(_figure(c, p) for c, p in figures), _pareto_table(data, rows, exports), _family_table(run_dir),
            _presets_table(data, presets), _provenance(data, rows)]
    page = _PAGE.format(title=_e(title), body="\n".join(body), when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    path = run_dir / "report.html"
    write_atomic(path, page)
    return path


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return _e(v)


def _figure(caption: str, path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(caption)} <span class=file>({_e(path.name)})</span></figcaption></figure>")


def _summary(data: RunData, hv: np.ndarray) -> str:
    n = len(data.values)
    feas = int(data.feasible(np.arange(n)).sum()) if n else 0
    objs = ", ".join(f"{o.label} ({'min' if o.goal == 'min' else 'max'})" for o in data.objectives)
    cons = ", ".join(str(c) for c in data.constraints) or "none"
    hv_txt = f"{hv[-1]:.4f}" if len(hv) else "n/a"
    return (f"<p>{n} architectures evaluated ({feas} feasible, {int((~data.status).sum())} failed or skipped); "
            f"Pareto front: {len(data.front)}. Objectives: {_e(objs)}. Constraints: {_e(cons)}. "
            f"Final hypervolume: {hv_txt}.</p>")


def _exports(run_dir: Path) -> dict[str, dict]:
    path = run_dir / "exports.jsonl"
    out: dict[str, dict] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
                out[rec["arch_id"]] = rec
            except (ValueError, KeyError, TypeError):
                continue  # a torn line of an export being written
    return out


def _pareto_table(data: RunData, rows: list[dict], exports: dict[str, dict]) -> str:
    if not rows:
        return "<h2>Pareto points</h2><p>The front is empty.</p>"
    header = list(rows[0])
    genes = header[header.index("space") + 1:] if "space" in header else []
    metrics = [c for c in header if c in data.columns]
    th = "".join(f"<th>{_e(c)}</th>" for c in ["point", "arch_id", *metrics, *genes, "export"])
    body = []
    for k, r in enumerate(rows):
        ex = exports.get(r["arch_id"])
        done = ""
        if ex:
            onnx = "" if ex.get("max_abs_err_onnx") is None else f", onnx {ex['max_abs_err_onnx']:.2g}"
            done = f"<br><small>exported: torch err {ex['max_abs_err_torch']:.2g}{onnx}</small>"
        cells = [str(k), r["arch_id"], *(r[c] for c in metrics), *(r[g] for g in genes)]
        body.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells)
                    + f"<td><code>nas export {_e(data.run_dir)} --point {k}</code>{done}</td></tr>")
    return f"<h2>Pareto points</h2><div class=scroll><table><tr>{th}</tr>{''.join(body)}</table></div>"


def _family_table(run_dir: Path) -> str:
    path = run_dir / "family.csv"
    if not path.exists():
        return ""
    import csv

    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return ""
    th = "".join(f"<th>{_e(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in r.values()) + "</tr>" for r in rows)
    return f"<h2>The scaled family (family.csv)</h2><div class=scroll><table><tr>{th}</tr>{body}</table></div>"


def _presets_table(data: RunData, presets: dict[str, dict[str, float]]) -> str:
    if not presets:
        return "<h2>Presets</h2><p>This space defines no published models.</p>"
    cols = list(dict.fromkeys(c for p in presets.values() for c in p))
    th = "".join(f"<th>{_e(c)}</th>" for c in ["preset", *cols])
    body = "".join("<tr>" + f"<td>{_e(n)}</td>" + "".join(f"<td>{_fmt(p.get(c, float('nan')))}</td>" for c in cols)
                   + "</tr>" for n, p in presets.items())
    return (f"<h2>Presets (published models of {_e(data.space.name)})</h2><p>Analytic cost and table latency; their "
            f"accuracy estimate is not computed by the search.</p><table><tr>{th}</tr>{body}</table>")


def _provenance(data: RunData, rows: list[dict]) -> str:
    sp = data.space
    items = [f"space <code>{_e(sp.name)}</code> ({_e(sp.path)}), fingerprint {_e(sp.fingerprint)}; source: {_e(sp.source)}"]
    for t in data.tables:
        prov = t.meta.get("provenance", {})
        items.append(f"latency table <code>{_e(t.device)}</code>: {_e(t.version)} ({_e(t.path)}); "
                     f"source: {_e(prov.get('source', 'measured with nas lut build'))}; licence: {_e(prov.get('licence', ''))}")
    if getattr(data.cfg, "supernet", None):
        items.append(f"supernet checkpoint {_e(data.cfg.supernet)}, sha256[:16] "
                     f"{_e(data.cfg.fingerprints.get('supernet', '?'))}")
    if rows and "accuracy_estimate" in rows[0]:
        items.append(f"accuracy estimate: {_e(rows[0]['accuracy_estimate'])}")
    from nas.runs import sha256_16

    for sub in sorted(data.run_dir.glob("retrain-*/checkpoint.safetensors")):  # a designer's retrained networks
        items.append(f"retrained network {_e(sub.parent.name)}/: checkpoint sha256[:16] {_e(sha256_16(sub))}")
    items.append(f"evaluations: {_e(data.run_dir / 'evals.jsonl')}; settings: {_e(data.run_dir / 'config.toml')}")
    return "<h2>Provenance</h2><ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


# The page checks its own figures once loaded (data-figures="decoded/total" on <html>), so a
# headless browser can tell that every figure rendered.
_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }}
figure {{ margin: 1.5em 0; }} img {{ max-width: 100%; }} figcaption {{ color: #555; }} .file {{ color: #999; }}
table {{ border-collapse: collapse; font-size: 12px; }} td, th {{ border: 1px solid #ddd; padding: 2px 6px; }}
th {{ background: #f4f4f4; }} .scroll {{ overflow-x: auto; }} code {{ font-size: 11px; }}
</style></head>
<body>
{body}
<p class=file>written by vitnas at {when}; self-contained (no network).</p>
<script>
window.addEventListener("load", function () {{
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++;
  document.documentElement.setAttribute("data-figures", ok + "/" + imgs.length);
}});
</script>
</body></html>
"""
