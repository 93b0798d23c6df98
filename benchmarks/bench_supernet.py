"""The cost of weight sharing, and memory of supernet training and resident evaluation.

    python benchmarks/bench_supernet.py [--space elasticvit-tiny] [--batch 64] [--subnets 8]

1. For sampled subnets (plus the smallest and the largest): the time of one training step
   (forward, backward, AdamW) of the subnet inside the supernet vs the same subnet extracted as
   a plain module; the ratio (target <= 1.2) and images/s.
2. Peak RSS of supernet training (sandwich, 4 subnets per step) and of evaluating many subnets
   with one resident supernet (BN recalibration + held-out accuracy), each in a fresh process,
   at two counts of subnets: memory must not grow with the number of subnets.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def step_time(model, x, y, repeat: int = 5) -> float:
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times = []
    for _ in range(repeat + 2):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return sorted(times[2:])[len(times[2:]) // 2]  # median after warm-up


def sharing(space_name: str, batch: int, n: int) -> None:
    import numpy as np
    import torch

    from nas.spaces import get_space

    space = get_space(space_name)
    torch.manual_seed(0)
    supernet = space.build_supernet().train()
    res = max(space.resolutions)
    x, y = torch.randn(batch, 3, res, res), torch.randint(0, space.num_classes, (batch,))
    archs = [("smallest", space.smallest()), ("largest", space.largest())] + [
        ("random", space.arch(g)) for g in space.sample(np.random.default_rng(0), n)]
    print(f"{space_name}, batch {batch}, {torch.get_num_threads()} threads: one training step (median of 5)")
    print(f"{'subnet':>9} {'M MACs':>8} {'px':>4} {'supernet ms':>12} {'extracted ms':>13} {'ratio':>6} {'img/s':>7}")
    ratios = []
    for role, arch in archs:
        supernet.set_active(arch)
        t_super = step_time(supernet, x, y)
        t_plain = step_time(supernet.extract(arch).train(), x, y)
        ratios.append(t_super / t_plain)
        macs = float(space.cost(space.genomes([arch]))["macs"][0]) / 1e6
        print(f"{role:>9} {macs:>8.2f} {space.decode(arch)['resolution']:>4} {t_super * 1e3:>12.1f} {t_plain * 1e3:>13.1f} "
              f"{t_super / t_plain:>6.2f} {batch / t_super:>7.0f}")
    print(f"ratio: median {sorted(ratios)[len(ratios) // 2]:.2f}, max {max(ratios):.2f} (target <= 1.2)")


def probe_train(steps: int, out: str) -> None:
    import resource

    from nas.train.config import TrainConfig
    from nas.train.trainer import Trainer

    cfg = TrainConfig(space="elasticvit-tiny", data="fashion-mnist", steps=steps + 2, batch_size=64, heldout=1000,
                      eval_every=10**9, eval_random=0, checkpoint_every=10**9)
    trainer = Trainer(cfg, Path(out), progress=False)  # set-up (data, supernet, optimiser): not timed
    for _ in range(2):  # warm-up steps (allocator, first-call kernels): not timed
        trainer.train_step(trainer.step // trainer.steps_per_epoch)
    t = time.perf_counter()
    for _ in range(steps):  # steady state: training steps only, no evaluation, checkpoint or plot
        trainer.train_step(trainer.step // trainer.steps_per_epoch)
    wall = time.perf_counter() - t
    print(json.dumps({"steps": steps, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "img_per_s": steps * 64 * 4 / wall}))


def probe_eval(ckpt: str, n: int) -> None:
    import resource

    import numpy as np

    from nas.scorers import SupernetScorer
    from nas.spaces import get_space

    space = get_space("elasticvit-tiny")
    scorer = SupernetScorer(space, ckpt, threads=2)
    genomes = space.sample(np.random.default_rng(0), n + 1)
    scorer(genomes[0])  # loads the checkpoint and data once (lazily): set-up, not timed
    genomes = genomes[1:]
    t = time.perf_counter()
    for g in genomes:  # steady state: one resident supernet, BN recalibration + held-out accuracy per subnet
        scorer(g)
    print(json.dumps({"subnets": n, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "s_per_subnet": (time.perf_counter() - t) / n}))


def child(*args) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--space", default="elasticvit-tiny")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--subnets", type=int, default=6)
    p.add_argument("--probe", nargs="+", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.probe:
        {"train": lambda: probe_train(int(a.probe[1]), a.probe[2]),
         "eval": lambda: probe_eval(a.probe[1], int(a.probe[2]))}[a.probe[0]]()
        return
    import torch

    torch.set_num_threads(2)
    sharing(a.space, a.batch, a.subnets)
    with tempfile.TemporaryDirectory() as tmp:
        print("\npeak memory, fresh process each (elasticvit-tiny, Fashion-MNIST, batch 64, sandwich x4)")
        for steps in (10, 40):
            r = child("--probe", "train", str(steps), tmp)
            print(f"  training {steps:>3} steps: peak RSS {r['peak_rss_mb']:.0f} MB, {r['img_per_s']:.0f} subnet-images/s")
        ckpt = Path(tmp) / "checkpoint.safetensors"
        from nas.train.config import TrainConfig
        from nas.train.trainer import Trainer

        Trainer(TrainConfig(space="elasticvit-tiny", data="fashion-mnist", steps=2, batch_size=32, heldout=1000,
                            eval_random=0), Path(tmp), progress=False).run()
        for n in (10, 80, 160):
            r = child("--probe", "eval", str(ckpt), str(n))
            print(f"  evaluating {n:>3} subnets with one resident supernet: peak RSS {r['peak_rss_mb']:.0f} MB, "
                  f"{r['s_per_subnet']:.2f} s per subnet (BN recalibration 8x128 + 1,000 held-out images)")


if __name__ == "__main__":
    main()
