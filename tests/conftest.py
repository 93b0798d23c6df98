import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# Published MFLOPs (MACs) of the released ElasticViT models, re-derived from microsoft/Moonlit's
# compute_flops (shared/reference/elasticvit_resnas.md, A.2).
ELASTICVIT_MFLOPS = {
    "elastic_T1": 62.9, "elastic_T2": 120.0, "elastic_S1": 217.6, "elastic_S2": 318.5, "elastic_M": 415.6,
    "elastic_L1": 517.1, "elastic_L1.5": 618.8, "elastic_L2": 704.1, "elastic_L3": 815.4,
}
DEVICES = ("pixel1", "pixel4", "pixel6", "xiaomi11")


@pytest.fixture(scope="session")
def space():
    from nas.spaces import get_space

    return get_space("elasticvit")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A tiny elasticvit-tiny supernet trained on Fashion-MNIST (25 steps, EMA): the one every
    supernet test shares (tests/test_search_supernet.py, tests/test_export.py). Its evaluations, and
    the searches that use it, recalibrate BN on 2 batches of 128 (the checkpoint says so)."""
    from nas.data import FASHION_MNIST_DIR

    if not FASHION_MNIST_DIR.exists():
        pytest.skip("Fashion-MNIST not installed: apt-get install dataset-fashion-mnist")
    out = tmp_path_factory.mktemp("train") / "run"
    r = nas_cli("train", "--space", "elasticvit-tiny", "--data", "fashion-mnist", "--steps", "25", "--batch-size", "32",
                "--heldout", "600", "--ema", "0.8", "--bn-batches", "2", "--threads", "2", "--out", str(out),
                "--no-progress", "--json")
    assert r.returncode == 0, r.stderr
    return out


def write_csv(path, header, rows):
    """A CSV file of ``header`` and ``rows`` (test inputs: measurements, tables); returns ``path``."""
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def run_search(out: Path, **overrides):
    """An in-process search (as `nas search` runs it); returns the run directory."""
    from nas.config import SearchConfig
    from nas.runs import new_run_dir
    from nas.search.loop import prepare, run

    fields = dict(space="elasticvit", devices=("pixel6",), objectives="latency,max:params", budget=300, population=20, seed=0)
    fields.update(overrides)
    session = prepare(SearchConfig(**fields))
    run_dir = new_run_dir(session.cfg, out, session.label)
    run(session, run_dir, progress=False, plot=False)
    return run_dir


def nas_cli(*args, cwd=None, timeout=600):
    """Run the `nas` command in a subprocess; returns CompletedProcess."""
    import subprocess

    return subprocess.run([sys.executable, "-m", "nas.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)})


def scramble(net) -> None:
    """Every weight and BN statistic random and O(1), so a wrong slice (a prefix instead of a
    segment, a wrong crop, a wrong relative-position row) shows in a supernet's outputs."""
    import torch

    with torch.no_grad():
        for n, p in net.named_parameters():
            if p.dim() > 1:
                p.normal_(0, p[0].numel() ** -0.5)
            else:
                p.uniform_(0.5, 1.5) if n.endswith("weight") else p.uniform_(-0.1, 0.1)
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)


class Planted:
    """What a malicious data or checkpoint file holds: unpickling it calls a function of its
    choosing (here it creates ``marker``), which a safe loader must refuse to do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))
