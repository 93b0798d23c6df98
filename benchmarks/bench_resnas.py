"""Training throughput of ViT-ResNAS's multi-architecture supernet on the micro space.

    python benchmarks/bench_resnas.py [--space vit-resnas-micro] [--batch 128] [--steps 10]

Subnet-images per second over training steps only (forward, backward, AdamW; sampling subnets
and building masks or models are set-up and not timed):

* ``multi-arch k``: the masked supernet, k subnets per pass (example b runs subnet b % k); each
  image trains one subnet, so a step is ``batch`` subnet-images whatever k is, at the largest
  widths (masks, not slices).
* ``sliced``: one subnet per step at its own widths, the compute of a weight-slicing supernet
  step (the subnet extracted as a plain module; extraction is set-up).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's nas, not an installed one


def timed_steps(step, steps: int) -> list[float]:
    out = []
    for i in range(steps + 2):
        prepare = step()
        t = time.perf_counter()
        prepare()
        out.append(time.perf_counter() - t)
    return out[2:]  # the first two warm up allocators and caches


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="vit-resnas-micro")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    import numpy as np
    import torch
    import torch.nn.functional as F

    from nas.spaces import get_space
    from nas.train.samplers import make_sampler

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    space = get_space(a.space)
    r = space.resolution
    x, y = torch.randn(a.batch, 3, r, r), torch.randint(0, space.num_classes, (a.batch,))
    supernet = space.build_supernet().train()
    opt = torch.optim.AdamW(supernet.parameters(), lr=1e-3)
    print(f"{a.space}, batch {a.batch}, {a.threads} threads, median of {a.steps} training steps")
    print(f"{'mode':>14} {'subnets/step':>12} {'step ms':>9} {'subnet-img/s':>13}")
    rows = []
    for k in (1, 2, 4):
        sampler = make_sampler("multi-arch", space, np.random.default_rng(k), k)

        def step():
            supernet.set_active_many([p.arch for p in sampler.sample(10**6)])

            def run():
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(supernet(x), y).backward()
                opt.step()
            return run
        t = float(np.median(timed_steps(step, a.steps)))
        rows.append((f"multi-arch {k}", k, t))
    rng = np.random.default_rng(0)

    def sliced_step():
        net = supernet.extract(space.arch(space.sample(rng, 1)[0])).train()
        sub_opt = torch.optim.AdamW(net.parameters(), lr=1e-3)

        def run():
            sub_opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            sub_opt.step()
        return run
    rows.append(("sliced", 1, float(np.median(timed_steps(sliced_step, a.steps)))))
    for mode, k, t in rows:
        print(f"{mode:>14} {k:>12} {1e3 * t:>9.1f} {a.batch / t:>13.0f}")


if __name__ == "__main__":
    main()
