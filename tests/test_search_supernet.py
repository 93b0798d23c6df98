"""`nas search --supernet`: the accuracy objective comes from a trained supernet, kept resident."""
import csv
import json

import pytest

from conftest import nas_cli
from nas.data import FASHION_MNIST_DIR
from nas.train.checkpoint import CHECKPOINT, read_checkpoint

pytestmark = pytest.mark.skipif(not FASHION_MNIST_DIR.exists(),
                                reason="Fashion-MNIST not installed: apt-get install dataset-fashion-mnist")


def test_search_front_accuracy_comes_from_the_supernet(trained, tmp_path):
    r = nas_cli("search", "--space", "elasticvit-tiny", "--supernet", str(trained), "--budget", "10",
                "--population", "5", "--out", str(tmp_path / "s"), "--no-progress", "--json")
    assert r.returncode == 0, r.stderr
    with open(tmp_path / "s" / "pareto.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and list(rows[0])[1:3] == ["accuracy", "macs_m"]  # default objectives: accuracy,macs
    assert rows[0]["accuracy_estimate"].startswith("supernet:checkpoint.safetensors (EMA weights")
    assert "600 held-out images of fashion-mnist" in rows[0]["accuracy_estimate"]
    accs = [float(r["accuracy"]) for r in rows]
    # trained: the front's best is well above chance (10 classes); its smallest subnets, after the
    # fixture's 25 steps, may still sit at chance
    assert all(0 <= a <= 1 for a in accs) and max(accs) > 0.2
    # the same number, recomputed independently on the extracted standalone model
    from nas.data import load_data
    from nas.spaces import get_space
    from nas.train.bn import accuracy, recalibrate_bn

    space = get_space("elasticvit-tiny")
    ck = read_checkpoint(trained / CHECKPOINT)
    supernet = space.build_supernet()
    supernet.load_state_dict({k[len("module."):]: v for k, v in ck["ema"].items()})  # the EMA weights
    data = load_data("fashion-mnist", heldout=600, seed=0)
    arch = space.from_encoding(json.loads(rows[0]["encoding"]))
    net = supernet.extract(arch)
    assert "2x128 training images" in rows[0]["accuracy_estimate"]  # the checkpoint's search count
    calib = [data.normalise(x) for x, _ in data.raw_batches(data.train, 128, shuffle_seed=[0, 10**6], stop=2)]
    recalibrate_bn(net, calib)
    acc, _ = accuracy(net, [(data.normalise(x), y) for x, y in data.raw_batches(data.heldout, 512)])
    assert acc == pytest.approx(float(rows[0]["accuracy"]), abs=2e-3)


def test_search_with_supernet_and_latency_needs_a_covering_table(trained, tmp_path):
    r = nas_cli("search", "--space", "elasticvit-tiny", "--supernet", str(trained), "--device", "pixel6",
                "--out", str(tmp_path / "s"))
    assert r.returncode == 2 and "lacks" in r.stderr  # the phone tables hold no 32-64 px blocks
    assert not (tmp_path / "s").exists()


def test_supernet_errors(trained, tmp_path):
    r = nas_cli("search", "--space", "elasticvit-tiny", "--objectives", "accuracy,macs", cwd=tmp_path)
    assert r.returncode == 2 and "needs a trained supernet" in r.stderr
    r = nas_cli("search", "--space", "elasticvit", "--supernet", str(trained), "--device", "pixel6", cwd=tmp_path)
    assert r.returncode == 2 and "trained on space 'elasticvit-tiny'" in r.stderr
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    r = nas_cli("search", "--space", "elasticvit-tiny", "--supernet", str(tmp_path / "junk.pt"), cwd=tmp_path)
    assert r.returncode == 2 and "not a vitnas checkpoint" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.pt"]
