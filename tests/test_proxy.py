"""The NASWOT proxy on real images, and a failing proxy becoming a failed row."""
import json

import numpy as np
import pytest
import torch

from conftest import run_search
from nas.errors import UserError
from nas.scorers import ProxyScorer
from nas.proxies import PROXIES, get_proxy, proxy_names
from nas.proxies.batch import imagenet_samples
from nas.proxies.common import ProxyData


def test_shipped_batch_is_real_imagenet():
    x, y = imagenet_samples()
    assert x.shape == (20, 3, 224, 224) and y.tolist()[:3] == [243, 559, 438]
    assert abs(float(x.mean())) < 1.0 and 0.5 < float(x.std()) < 1.5  # normalised real photos
    assert len({round(float(x[i].mean()), 4) for i in range(20)}) == 20  # 20 different pictures


def test_naswot_is_deterministic_and_separates_architectures(space):
    score = ProxyScorer(space, "naswot", seed=0, threads=1)
    g = space.genomes([space.presets()["elastic_T1"], space.presets()["elastic_S2"]])
    a = [score(row)["proxy_naswot"] for row in g]
    assert a == [score(row)["proxy_naswot"] for row in g]
    assert a[0] != a[1] and all(np.isfinite(a))
    assert ProxyScorer(space, "naswot", seed=1, threads=1)(g[0])["proxy_naswot"] != a[0]


def test_naswot_definition_on_a_relu_net():
    # two inputs with identical codes in every unit -> singular kernel (-inf); distinct codes -> finite
    net = torch.nn.Sequential(torch.nn.Linear(2, 3, bias=False), torch.nn.ReLU())
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(3, 2))
    naswot = get_proxy("naswot")
    y = torch.zeros(2, dtype=torch.long)
    same = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert naswot(net, ProxyData(same, y, 3)) == float("-inf")
    diff = torch.tensor([[1.0, -2.0], [-3.0, 4.0]])
    # codes (1,0,0) and (0,1,0) over N_A = 3 units: K = [[3, 1], [1, 3]] -> log det = log 8
    assert naswot(net, ProxyData(diff, y, 3)) == pytest.approx(np.log(8.0))


def test_unknown_proxy():
    assert "naswot" in proxy_names()
    with pytest.raises(UserError, match="did you mean 'naswot'"):
        get_proxy("naswt")


def test_failing_proxy_is_a_failed_row_and_the_search_goes_on(tmp_path, monkeypatch):
    def flaky(model, images, labels=None):
        if model.cfg.res <= 176:
            raise RuntimeError("cannot score small inputs")
        return float(model.cfg.widths[-1])

    monkeypatch.setitem(PROXIES._items, "flaky", flaky)
    run = run_search(tmp_path / "r", objectives="flaky,latency", budget=12, population=6, threads=1)
    recs = [json.loads(ln) for ln in (run / "evals.jsonl").read_text().splitlines()]
    failed = [r for r in recs if r["status"] == "failed"]
    assert len(recs) == 12 and failed
    assert all("cannot score small inputs" in r["error"] and r["proxy_flaky"] is None for r in failed)
    rows = (run / "pareto.csv").read_text().splitlines()[1:]
    assert rows and not any(r["id"] in "".join(rows) for r in failed)


def test_expensive_metrics_skip_infeasible_architectures(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setitem(PROXIES._items, "count", lambda model, images, labels=None: calls.append(1) or 1.0)
    # random search still proposes infeasible architectures (the other strategies redraw them first)
    run = run_search(tmp_path / "r", objectives="count,latency", budget=20, population=10, max_latency=15.0,
                     strategy="random")
    recs = [json.loads(ln) for ln in (run / "evals.jsonl").read_text().splitlines()]
    skipped = [r for r in recs if r["status"] == "skipped-infeasible"]
    assert skipped and all(r["latency_pixel6_ms"] > 15 for r in skipped)
    assert len(calls) == 20 - len(skipped)
