"""Training-free proxies: rank correlation on NAS-Bench-201 against published values, and cost.

    python benchmarks/bench_proxies.py correlation [--n 1000] [--out DIR]   # resumable with --out
    python benchmarks/bench_proxies.py throughput [--n 5]
    python benchmarks/bench_proxies.py grasp-pool
    python benchmarks/bench_proxies.py asvit

1. ``correlation``: scores N NB201 architectures (sampled with seed 0) with each proxy on the
   shipped CIFAR-10 mini-batch (20 real test images) and prints Spearman and Kendall against the
   benchmark's 200-epoch CIFAR-10 test accuracy (../shared/data/nb201), next to the published
   values (Abdelfattah et al., ICLR 2021, over all 15,625 cells, batch 64 training images).
2. ``throughput``: milliseconds per architecture for each proxy on nb201 (32 px), elasticvit-tiny
   (resized to the arch's 32-64 px), asvit-tiny (64 px) and elasticvit (224 px batch, the arch's
   own resolution); a proxy that cannot run on a space's models says why.
3. ``grasp-pool``: GraSP on NB201's all-pooling cell with the shipped average pooling (a fixed
   depthwise sum) against ``nn.AvgPool2d(count_include_pad=False)``: seconds each, and the values.
4. ``asvit``: `nas search --space asvit-tiny --strategy asvit` end to end in a fresh process (64 px,
   100 REINFORCE steps, scaling to 5 M parameters): wall time and peak RSS.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRUTH = REPO.parent / "shared" / "data" / "nb201" / "nb201_cifar10_test_acc.csv"
PUBLISHED = {"synflow": 0.737, "jacob_cov": 0.731, "snip": 0.596, "grad_norm": 0.594, "grasp": 0.514, "fisher": 0.360,
             "naswot": 0.78, "params": 0.75, "macs": 0.75}
PUBLISHED_SRC = {"naswot": "Mellor et al. 2021, batch 128", "params": "EZNAS note", "macs": "EZNAS note"}
CORR_PROXIES = "synflow,jacob_cov,snip,grad_norm,grasp,fisher,naswot,zen,dss,params,macs"


def correlation(n: int, out: Path | None, proxies: str) -> None:
    from nas.proxy_report import ProxyReportConfig, parse_proxy_list, run_report
    from nas.runs import write_atomic

    if not TRUTH.exists():
        sys.exit(f"needs the NB201 ground truth at {TRUTH}")
    cfg = ProxyReportConfig(space="nb201", n=n, proxies=parse_proxy_list(proxies), seed=0, threads=2,
                            truth=str(TRUTH)).validate()
    out = out or Path(tempfile.mkdtemp(prefix="bench-proxies-"))
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "config.toml").exists():
        write_atomic(out / "config.toml", cfg.to_toml())
    t = time.perf_counter()
    rep = run_report(cfg, out, progress=True)
    print(f"NB201 CIFAR-10: {n} architectures (seed 0), proxies on 20 real CIFAR-10 test images; "
          f"{time.perf_counter() - t:.0f} s this run; report in {out}")
    print(f"{'proxy':>18} {'spearman':>9} {'kendall':>8} {'published rho':>14}  gap")
    for c in rep.correlations:
        pub = PUBLISHED.get(c["proxy"])
        gap = f"{c['spearman'] - pub:+.3f}" if pub is not None else ""
        src = f"  ({PUBLISHED_SRC[c['proxy']]})" if c["proxy"] in PUBLISHED_SRC else ""
        print(f"{c['proxy']:>18} {c['spearman']:>9.3f} {c['kendall']:>8.3f} {pub if pub is not None else '-':>14}  {gap}{src}")


def throughput(n: int, spaces: list[str]) -> None:
    import numpy as np

    from nas.proxies import proxy_names
    from nas.scorers import ProxyScorer
    from nas.spaces import get_space

    for name in spaces:
        space = get_space(name)
        genomes = space.sample(np.random.default_rng(0), n)
        print(f"{name}: ms per architecture (mean of {n} sampled archs, 2 threads, fresh model each)")
        for p in proxy_names():
            if name == "elasticvit" and p == "linear_regions":
                print(f"{p:>18} {'(skipped: 3,000 forwards at up to 256 px)':>10}")
                continue
            sc = ProxyScorer(space, p, 0, 2)
            try:
                sc(genomes[0])  # warm-up: imports, batch loading, kernel caches
            except Exception as e:  # in a search this is a failed row; here, a line that says why
                print(f"{p:>18} {'fails':>10}  {type(e).__name__}: {str(e)[:70]}")
                continue
            t = time.perf_counter()
            for g in genomes:
                sc(g)
            print(f"{p:>18} {1e3 * (time.perf_counter() - t) / n:>10.1f}")


def grasp_pool(repeats: int = 3) -> None:
    import numpy as np
    import torch.nn as nn

    import nas.nets.nb201 as nb201_nets
    from nas.archspec import parse_arch_text
    from nas.scorers import ProxyScorer
    from nas.spaces import get_space

    space = get_space("nb201")
    cell = "|avg_pool_3x3~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|avg_pool_3x3~0|avg_pool_3x3~1|avg_pool_3x3~2|"
    genome = np.asarray(parse_arch_text(space, cell).genome)
    shipped = nb201_nets.AvgPool3x3
    print(f"GraSP on the all-pooling NB201 cell, 2 threads, median of {repeats} after a warm-up")
    values = {}
    for name, pool in (("depthwise sum (shipped)", shipped),
                       ("nn.AvgPool2d(count_include_pad=False)", lambda: nn.AvgPool2d(3, 1, 1, count_include_pad=False))):
        nb201_nets.AvgPool3x3 = pool  # make_op looks the class up at build time
        try:
            sc = ProxyScorer(space, "grasp", 0, 2)
            sc(genome)
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                values[name] = sc(genome)[sc.column]
                times.append(time.perf_counter() - t)
        finally:
            nb201_nets.AvgPool3x3 = shipped
        values[name + " s"] = sorted(times)[len(times) // 2]
        print(f"{name:>40}  {values[name + ' s']:8.3f} s   grasp = {values[name]:.6g}")
    a, b = (values[k + " s"] for k in ("nn.AvgPool2d(count_include_pad=False)", "depthwise sum (shipped)"))
    print(f"{'factor':>40}  {a / b:8.1f}x")


def asvit_end_to_end() -> None:
    import resource
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "nas.cli", "search", "--space", "asvit-tiny", "--strategy", "asvit",
               "--out", f"{tmp}/run", "--no-progress"]
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
        wall = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    print(f"`nas search --space asvit-tiny --strategy asvit` (fresh process): {wall:.0f} s wall, {rss:.2f} GB peak RSS")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["correlation", "throughput", "grasp-pool", "asvit"])
    ap.add_argument("--n", type=int)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--proxies", default=CORR_PROXIES)
    ap.add_argument("--spaces", default="nb201,elasticvit-tiny,asvit-tiny,elasticvit", help="throughput: spaces to time")
    a = ap.parse_args()
    if a.what == "correlation":
        correlation(a.n or 1000, a.out, a.proxies)
    elif a.what == "grasp-pool":
        grasp_pool()
    elif a.what == "asvit":
        asvit_end_to_end()
    else:
        throughput(a.n or 5, a.spaces.split(","))


if __name__ == "__main__":
    main()
