"""Experiment tracking and data exports: `nas search --optuna-storage` mirrors every evaluation as
an optuna trial; `nas evals` writes every evaluation as CSV/Parquet with pareto.csv's schema."""
import csv
import json

import numpy as np
import pytest

from conftest import nas_cli

SEARCH = ["--space", "elasticvit", "--device", "pixel6", "--objectives", "latency,max:params", "--max-latency", "25",
          "--population", "10", "--no-progress"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("track")
    r = nas_cli("search", *SEARCH, "--budget", "30", "--out", str(d / "run"), "--optuna-storage", f"sqlite:///{d / 's.db'}")
    assert r.returncode == 0, r.stderr
    return d / "run"


def _records(run):
    return [json.loads(ln) for ln in (run / "evals.jsonl").read_text().splitlines()]


def test_load_study_reads_back_every_trial_and_value(run):
    import optuna

    study = optuna.load_study(study_name="run", storage=f"sqlite:///{run.parent / 's.db'}")
    recs = _records(run)
    assert [d.name for d in study.directions] == ["MINIMIZE", "MAXIMIZE"]
    assert len(study.trials) == len(recs) == 30
    by_order = {t.user_attrs["order"]: t for t in study.trials}
    for rec in recs:
        t = by_order[rec["n"]]
        assert t.values == [rec["latency_pixel6_ms"], rec["params_m"]]
        assert t.user_attrs["arch_id"] == rec["id"] and t.user_attrs["run_id"] == "run"
        assert t.user_attrs["genome"] == rec["genome"] and t.user_attrs["arch"]["encoding"]
        assert t.constraints == {"latency_pixel6_ms <= 25": pytest.approx(rec["latency_pixel6_ms"] - 25)}
    # optuna's own feasible front is the run's pareto.csv
    with open(run / "pareto.csv", newline="") as f:
        front = {r["arch_id"] for r in csv.DictReader(f)}
    assert {t.user_attrs["arch_id"] for t in study.best_trials} == front


def test_a_resumed_run_mirrors_only_what_is_new(run, tmp_path):
    import optuna

    r = nas_cli("resume", str(run), "--budget", "40", "--no-progress")
    assert r.returncode == 0, r.stderr
    study = optuna.load_study(study_name="run", storage=f"sqlite:///{run.parent / 's.db'}")
    assert sorted(t.user_attrs["order"] for t in study.trials) == list(range(40))


def test_a_journal_storage_and_bad_urls(tmp_path):
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    r = nas_cli("search", *SEARCH, "--budget", "10", "--out", str(tmp_path / "j"), "--optuna-storage",
                f"journal:{tmp_path / 'j.log'}")
    assert r.returncode == 0, r.stderr
    study = optuna.load_study(study_name="j", storage=JournalStorage(JournalFileBackend(str(tmp_path / "j.log"))))
    assert len(study.trials) == 10
    for url, msg in (("mysql://x", "give sqlite:///PATH or journal:PATH"), (f"journal:{tmp_path}/no/j.log", "does not exist")):
        r = nas_cli("search", *SEARCH, "--budget", "10", "--out", str(tmp_path / "bad"), "--optuna-storage", url)
        assert r.returncode == 2 and msg in r.stderr and not (tmp_path / "bad").exists()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_evals_export_has_pareto_csvs_schema_and_every_evaluation(run, fmt, tmp_path):
    import pandas as pd

    out = tmp_path / f"e.{fmt}"
    r = nas_cli("evals", str(run), "--format", fmt, "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
    with open(run / "pareto.csv", newline="") as f:
        reader = csv.DictReader(f)
        front = list(reader)
        header = reader.fieldnames
    assert list(df.columns) == ["run_id", "order", *header, "status", "error"]
    recs = _records(run)
    assert len(df) == len(recs) == json.loads(r.stdout)["rows"]
    assert df["order"].tolist() == [r["n"] for r in recs] and df["arch_id"].tolist() == [r["id"] for r in recs]
    assert set(df["run_id"]) == {run.name} and set(df["status"]) == {"ok"}
    assert df["latency_pixel6_ms"].dtype == np.float64 and df["order"].dtype == np.int64
    np.testing.assert_array_equal(df["params_m"].to_numpy(), [r["params_m"] for r in recs])
    # every Pareto row is the same row in the export (pareto.csv rounds to 6 significant digits)
    rows = df.set_index("arch_id")
    for p in front:
        e = rows.loc[p["arch_id"]]
        for c in header[1:]:
            if c in ("latency_pixel6_ms", "latency_pixel4_ms", "params_m", "macs_m"):
                assert float(e[c]) == pytest.approx(float(p[c]), rel=1e-5)
            else:
                assert str(e[c]) == p[c], c


def test_evals_bad_input(run, tmp_path):
    r = nas_cli("evals", str(run), "--format", "xlsx")
    assert r.returncode == 2 and "unknown --format 'xlsx'" in r.stderr
    (tmp_path / "f").write_text("")
    r = nas_cli("evals", str(run), "--out", str(tmp_path / "f" / "e.csv"))
    assert r.returncode == 2 and "cannot write there" in r.stderr
