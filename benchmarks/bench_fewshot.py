"""Few-shot latency (`nas lut fit`): leave one shipped device out, fit it from N of its own
measurements using only the other devices, score it on everything else.

    python benchmarks/bench_fewshot.py [--seeds 5] [--n 10,20,50,100] [--json FILE]
    python benchmarks/bench_fewshot.py --space elasticvit-tiny --fit A.csv --score B.csv [--table DIR]

The second form scores a fit from real measurements (`nas lut sample` files: fit on A, score on
the architectures of B not in A), next to a block table's raw sums and its `nas lut validate`
correction fitted on the same A networks.

NB201: for each of the 23 shipped devices, N architectures drawn at random (per seed) from the
15,625 cells are its "measurements" (its shipped whole-network latencies); the model sees the
other 22 devices and the analytic features; it is scored on the 15,625 - N cells it did not see.
ElasticViT: each of the four phones held out in turn; its "measurements" are its own block
table's sums over 2,000 sampled subnets (N of them to fit, the rest to score), the features the
other three phones' sums and the analytic ones.

Per method (auto: the one `nas lut fit` writes by default; ridge, single = the best single other
device rescaled, flops = log-linear in MACs), per N: median over devices of the mean over seeds of
Spearman and of the share within +/-10 %, and how many devices reach the issue's targets
(Spearman >= 0.95 and >= 80 % within +/-10 %) on the seed-mean. Fitting and scoring only; the
tables are loaded once before.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nas.latency import fewshot as fs  # noqa: E402
from nas.spaces import get_space  # noqa: E402

METHODS = ("auto", "ridge", "single", "flops")


def evaluate(space, genomes, truths: dict[str, np.ndarray], refs: dict, ns, seeds) -> dict:
    """truths: device -> ms of every genome; refs: the reference devices (each held out in turn)."""
    names_all, x_all = fs.all_features(space, genomes, refs)
    out: dict = {}
    for dev, y in truths.items():
        keep = [i for i, n in enumerate(names_all) if n != f"ref:{dev}"]
        names, x = [names_all[i] for i in keep], x_all[:, keep]
        for n in ns:
            for seed in range(seeds):
                idx = np.random.default_rng(1000 * seed + n).choice(len(y), n, replace=False)
                rest = np.setdiff1d(np.arange(len(y)), idx)
                auto, cv = fs.fit(names, x[idx], y[idx], "auto", seed)
                for m in METHODS:
                    model = auto if m == "auto" else fs.FITTERS[m](names, x[idx], np.log(y[idx]))
                    s = fs.scores(np.exp(model.predict_log(x[rest])), y[rest])
                    rec = out.setdefault(dev, {}).setdefault(str(n), {}).setdefault(m, [])
                    rec.append(s | ({"chose": auto.method} if m == "auto" else {}))
    return out


def summarise(res: dict, ns) -> dict:
    table = {}
    for n in ns:
        for m in METHODS:
            rho = np.array([np.mean([r["spearman"] for r in res[d][str(n)][m]]) for d in res])
            w10 = np.array([np.mean([r["within_10pct"] for r in res[d][str(n)][m]]) for d in res])
            table[f"{m}@{n}"] = {"spearman_median": float(np.median(rho)), "within10_median": float(np.median(w10)),
                                 "spearman_min": float(rho.min()), "within10_min": float(w10.min()),
                                 "devices_meeting_targets": int(((rho >= 0.95) & (w10 >= 0.80)).sum()),
                                 "devices": len(rho)}
    return table


def print_table(title: str, table: dict, ns) -> None:
    print(f"\n{title}")
    print(f"{'method':8s} {'N':>4s} {'rho med':>8s} {'rho min':>8s} {'±10% med':>9s} {'±10% min':>9s} {'targets met':>12s}")
    for n in ns:
        for m in METHODS:
            t = table[f"{m}@{n}"]
            print(f"{m:8s} {n:4d} {t['spearman_median']:8.3f} {t['spearman_min']:8.3f} {100 * t['within10_median']:8.1f}% "
                  f"{100 * t['within10_min']:8.1f}% {t['devices_meeting_targets']:6d}/{t['devices']}")


def per_device(res: dict, n: int, m: str = "auto") -> None:
    print(f"\nper device at N = {n} ({m}; seed means; chosen methods)")
    for d in sorted(res):
        r = res[d][str(n)][m]
        chose = ",".join(sorted({x.get("chose", m) for x in r}))
        print(f"  {d:16s} rho {np.mean([x['spearman'] for x in r]):.3f}  ±10% {100 * np.mean([x['within_10pct'] for x in r]):5.1f}%"
              f"  MAPE {np.mean([x['mape_pct'] for x in r]):5.1f}%  ({chose})")


def measured(space_name: str, fit_csv: Path, score_csv: Path, table: str | None) -> None:
    from nas.latency import load_table
    from nas.latency.validate import fit_correction

    sp = get_space(space_name)
    gtr, ytr = fs.read_measured(fit_csv, sp)
    gev, yev = fs.read_measured(score_csv, sp)
    keep = np.array([i not in set(sp.ids(gtr)) for i in sp.ids(gev)])
    gev, yev = gev[keep], yev[keep]
    refs = fs.reference_devices(sp)
    names, xtr = fs.all_features(sp, gtr, refs)
    xev = fs.feature_matrix(sp, gev, names, refs)
    model, cv = fs.fit(names, xtr, ytr)
    print(f"{space_name}: fit on {len(ytr)} measured networks, scored on {len(yev)} others; reference devices: "
          f"{', '.join(refs) or 'none (analytic features only)'}")
    print(f"{'predictor':44s} {'MAPE':>7s} {'±10%':>6s} {'rho':>6s}")

    def row(label, pred):
        s = fs.scores(pred, yev)
        print(f"{label:44s} {s['mape_pct']:6.2f}% {100 * s['within_10pct']:5.1f}% {s['spearman']:6.3f}")

    for m in ("auto", *[m for m in fs.FITTERS if m in cv]):
        mod = model if m == "auto" else fs.FITTERS[m](names, xtr, np.log(ytr))
        row(f"few-shot {m}" + (f" (kept {model.method}; CV MAPE {cv[model.method]['mape_pct']:.2f}%)" if m == "auto" else ""),
            np.exp(mod.predict_log(xev)))
    if table:
        t = load_table(table, sp)
        s_tr, n_tr = t.compiled(sp).sums(gtr, count=True)
        s_ev, n_ev = t.compiled(sp).sums(gev, count=True)
        row(f"block table ({t.entries} blocks), raw sums", s_ev)
        row("block table + correction on the same networks", fit_correction(s_tr, n_tr, ytr).apply(s_ev, n_ev))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--n", default="10,20,50,100")
    ap.add_argument("--subnets", type=int, default=2000, help="elasticvit subnets per phone (default 2000)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--space", default="elasticvit-tiny", help="with --fit/--score")
    ap.add_argument("--fit", type=Path, help="measured arch,ms file to fit on")
    ap.add_argument("--score", type=Path, help="measured arch,ms file to score on")
    ap.add_argument("--table", help="a block table of the same device to compare with")
    a = ap.parse_args()
    if a.fit or a.score:
        return measured(a.space, a.fit, a.score, a.table)
    ns = [int(v) for v in a.n.split(",")]
    report = {}

    nb = get_space("nb201")
    refs = fs.reference_devices(nb)
    g = nb.from_index(np.arange(nb.size()))
    truths = {d: t.predict(nb, g) for d, t in refs.items()}
    t0 = time.perf_counter()
    res = evaluate(nb, g, truths, refs, ns, a.seeds)
    report["nb201"] = {"summary": summarise(res, ns), "seconds": time.perf_counter() - t0}
    print_table(f"NB201, 23 devices left out in turn, {a.seeds} seeds, scored on the 15,625 - N unseen cells "
                f"({report['nb201']['seconds']:.1f} s)", report["nb201"]["summary"], ns)
    per_device(res, 20)

    ev = get_space("elasticvit")
    refs = fs.reference_devices(ev)
    g = ev.sample(np.random.default_rng(0), a.subnets)
    truths = {d: t.predict(ev, g) for d, t in refs.items()}
    t0 = time.perf_counter()
    res_ev = evaluate(ev, g, truths, refs, ns, a.seeds)
    report["elasticvit"] = {"summary": summarise(res_ev, ns), "seconds": time.perf_counter() - t0}
    print_table(f"ElasticViT, 4 phones left out in turn ({a.subnets} subnets: N to fit, the rest to score), "
                f"{a.seeds} seeds ({report['elasticvit']['seconds']:.1f} s)", report["elasticvit"]["summary"], ns)
    per_device(res_ev, 20)
    if a.json:
        a.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
