"""MLflow tracking: params, metrics and artifacts round-trip through the client (sqlite and a real server)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from support import mlflow_server, run_config

from pipelines import compare, tracking
from pipelines.train import train_run
from recsys.config import ConfigError


def _check_run(client: MlflowClient, run_id: str, result) -> None:
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    p = run.data.params
    assert p["model.name"] == "als" and p["model.factors"] == "8" and p["data.name"] == "tiny"
    assert p["eval_ks"] == "5,10" and p["run.seed"] == "3"
    m = run.data.metrics
    assert m["test_ndcg_10"] == pytest.approx(result.test["ndcg_10"])
    assert m["val_hr_5"] == pytest.approx(result.val["hr_5"])
    assert 0.0 <= m["test_hr_10"] <= 1.0
    t = run.data.tags
    assert len(t["data_fingerprint"]) >= 16 and t["data_fingerprint"] == p["eval_fingerprint"]
    assert t["data_name"] == "tiny" and t["device"] == "cpu" and len(t["git_commit"]) >= 7
    assert t["version.torch"].startswith("2.") and "version.mlflow" in t
    names = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.json", "metrics.json", "embedding_map.png"} <= names
    history = client.get_metric_history(run_id, "epoch_val_ndcg_10")  # validated after every ALS iteration
    assert sorted(h.step for h in history) == [1, 2, 3]
    assert len(client.get_metric_history(run_id, "val_ndcg_10")) == 1  # the final figure, apart from the series
    assert "model/recsys_run.json" in {a.path for a in client.list_artifacts(run_id, "model")}
    assert {h.step for h in client.get_metric_history(run_id, "train_epoch_seconds")} == {1, 2, 3}


def test_train_run_round_trips_through_sqlite_store(sqlite_store: Path) -> None:
    result = train_run(run_config({"name": "als", "factors": 8, "iterations": 3}), sqlite_store / "runs")
    assert (sqlite_store / "mlruns.db").is_file()
    client = MlflowClient(tracking_uri=tracking.tracking_uri())
    _check_run(client, result.run_id, result)
    local = client.download_artifacts(result.run_id, "metrics.json", str(sqlite_store))
    assert Path(local).read_text().count("ndcg_10") >= 2


def test_a_bad_config_is_refused_before_any_run_is_logged(sqlite_store: Path) -> None:
    with pytest.raises(ConfigError, match="no_such_key"):
        train_run(run_config({"name": "als", "no_such_key": 1}), sqlite_store / "runs")
    client = MlflowClient(tracking_uri=tracking.tracking_uri())
    exp = client.get_experiment_by_name("t")
    assert exp is None or not client.search_runs([exp.experiment_id])


def test_failing_run_ends_failed_with_the_error(sqlite_store: Path) -> None:
    from recsys.models.base import NaNLossError

    diverging = {"name": "item2vec", "dim": 8, "epochs": 1, "lr": 1e30, "min_lr": 0.0, "max_backoffs": 0}
    with pytest.raises(NaNLossError, match="item2vec diverged"):
        train_run(run_config(diverging), sqlite_store / "runs")
    client = MlflowClient(tracking_uri=tracking.tracking_uri())
    exp = client.get_experiment_by_name("t")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FAILED"
    assert runs[0].data.tags["error"].startswith("NaNLossError: item2vec diverged")


def test_train_run_echoes_a_progress_line_per_epoch(sqlite_store: Path) -> None:
    lines: list[str] = []
    train_run(run_config({"name": "item2vec", "dim": 8, "epochs": 2, "batch_size": 512}), sqlite_store / "runs",
              echo=lines.append)
    assert [line.split()[:3] for line in lines] == [["[item2vec]", "epoch", "1/2"], ["[item2vec]", "epoch", "2/2"]]
    assert all("loss " in line and "val_ndcg_10 " in line and "s/epoch" in line for line in lines)
    assert "at most" in lines[0] and lines[1].endswith("at most 0 s left")


def test_compare_lists_differing_params_and_writes_reports(sqlite_store: Path) -> None:
    for factors in (4, 8):
        cfg = run_config({"name": "als", "factors": factors, "iterations": 2}, experiment="cmp", name=f"f{factors}")
        train_run(cfg, sqlite_store / "runs")
    c = compare.compare("cmp", "test_ndcg_10")
    assert len(c.rows) == 2
    assert "model.factors" in c.columns and "run.seed" not in c.columns and "run.seed" in c.all_columns
    values = [float(r["test_ndcg_10"]) for r in c.rows]
    assert values == sorted(values, reverse=True)
    paths = compare.write_reports(c, sqlite_store / "reports", "cmp", "test_ndcg_10")
    suffixes = {p.suffix for p in paths}
    assert {".csv", ".md", ".png"} <= suffixes
    assert "model.factors" in (sqlite_store / "reports" / "cmp.md").read_text()
    with pytest.raises(ValueError, match="no experiment named"):
        compare.compare("nope")


@pytest.mark.slow
def test_train_run_against_a_real_mlflow_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with mlflow_server(tmp_path) as (uri, store):
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        result = train_run(run_config({"name": "als", "factors": 8, "iterations": 3}), tmp_path / "runs")
        _check_run(MlflowClient(tracking_uri=uri), result.run_id, result)
        assert not (tmp_path / "mlruns.db").exists()  # nothing went to the embedded store
        assert any((store / "artifacts").rglob("metrics.json"))


