"""report.html: self-contained (no network), with the front, the presets, hypervolume and provenance;
rendered by headless Chromium without console errors and with every figure decoded."""
import base64
import csv
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from conftest import nas_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run"
    r = nas_cli("search", "--space", "elasticvit", "--device", "pixel6,pixel4", "--objectives", "latency,max:params",
                "--budget", "120", "--population", "20", "--max-latency", "60", "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert f"report: {out / 'report.html'}" in r.stdout  # written at the end of `nas search`
    return out


def test_report_is_self_contained_and_shows_the_front(run):
    page = (run / "report.html").read_text()
    refs = re.findall(r"""(?:src|href)\s*=\s*["']?([^"' >]+)""", page, flags=re.I)
    assert refs and all(r.startswith("data:image/png;base64,") for r in refs)
    assert not re.search(r"<link|@import|url\(|<iframe|<object|https?://", page, flags=re.I)
    # the figures are the PNGs beside the page
    inlined = [base64.b64decode(r.split(",", 1)[1]) for r in refs]
    for name in ("pareto.png", "report-evolution.png", "report-hypervolume.png", "report-histograms.png"):
        assert (run / name).read_bytes() in inlined
    with open(run / "pareto.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows
    for k, r in enumerate(rows):
        assert f"<td>{r['arch_id']}</td>" in page and f"--point {k}</code>" in page
    for preset in ("elastic_T1", "elastic_S1", "elastic_L3"):
        assert f"<td>{preset}</td>" in page
    assert "pixel6:" in page and "licence:" in page  # the tables' provenance


def test_report_hypervolume_is_pymoos_on_normalised_objectives(run):
    from pymoo.indicators.hv import HV
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    recs = [json.loads(ln) for ln in (run / "evals.jsonl").read_text().splitlines()]
    f = np.array([[r["latency_pixel6_ms"], r["latency_pixel4_ms"], -r["params_m"]] for r in recs
                  if r["latency_pixel6_ms"] <= 60 and r["latency_pixel4_ms"] <= 60])
    g = (f - f.min(0)) / np.ptp(f, 0)
    front = g[NonDominatedSorting().do(g, only_non_dominated_front=True)]
    expected = HV(ref_point=np.full(3, 1.1))(front)
    shown = float(re.search(r"Final hypervolume: ([0-9]+\.[0-9]+)", (run / "report.html").read_text()).group(1))
    assert shown == pytest.approx(expected, abs=1e-4)


def test_nas_report_rewrites_it(run):
    (run / "report.html").unlink()
    r = nas_cli("report", str(run), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["report"] == str(run / "report.html") and (run / "report.html").exists()
    r = nas_cli("report", str(run / "nope"))
    assert r.returncode == 2 and "not a run directory" in r.stderr


def _render(page, tmp_path):
    """(data-figures, URLs the page requested, console errors) in headless Chromium."""
    log = tmp_path / "net.json"
    r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
                        "--no-first-run", "--disable-background-networking", "--enable-logging=stderr", "--v=0",
                        f"--log-net-log={log}", "--virtual-time-budget=3000", "--dump-dom", page.as_uri()],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    figures = re.search(r'data-figures="([^"]*)"', r.stdout)
    # requests made for the page (Chromium's own background traffic has no file:// isolation key)
    events = json.loads(log.read_text())["events"]
    urls = {e["params"]["url"] for e in events if "url" in (e.get("params") or {})
            and "file://" in e["params"].get("network_isolation_key", "")}
    console = [ln for ln in r.stderr.splitlines() if "CONSOLE" in ln and ("ERROR" in ln or "Uncaught" in ln)]
    return figures.group(1) if figures else None, urls, console


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed: apt-get install chromium")
def test_report_renders_in_headless_chromium_without_network(run, tmp_path):
    figures, urls, console = _render(run / "report.html", tmp_path)
    assert figures == "4/4" and urls == set() and console == []
    # the check can fail: a page that loads one remote image is caught
    bad = tmp_path / "bad.html"
    bad.write_text((run / "report.html").read_text().replace("<body>", '<body><img src="http://example.invalid/x.png">'))
    figures, urls, _ = _render(bad, tmp_path)
    assert figures == "4/5" and urls == {"http://example.invalid/x.png"}
