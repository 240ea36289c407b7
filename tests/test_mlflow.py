"""MLflow tracking: params, metrics and artifacts round-trip through the client (sqlite and a real server)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from pipelines import compare, tracking
from pipelines.config import parse_run_config
from pipelines.train import train_run
from recsys.config import ConfigError

SMALL = {"name": "tiny", "synthetic_users": 200, "synthetic_items": 80, "synthetic_events": 4000}


def _cfg(model: dict, experiment: str = "t", name: str = "") -> object:
    raw = {"run": {"experiment": experiment, "name": name or model["name"], "seed": 3},
           "data": SMALL, "model": model, "eval": {"ks": [5, 10]}}
    return parse_run_config(raw, source="test")


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
    result = train_run(_cfg({"name": "als", "factors": 8, "iterations": 3}), sqlite_store / "runs")
    assert (sqlite_store / "mlruns.db").is_file()
    client = MlflowClient(tracking_uri=tracking.tracking_uri())
    _check_run(client, result.run_id, result)
    local = client.download_artifacts(result.run_id, "metrics.json", str(sqlite_store))
    assert Path(local).read_text().count("ndcg_10") >= 2


def test_a_bad_config_is_refused_before_any_run_is_logged(sqlite_store: Path) -> None:
    with pytest.raises(ConfigError, match="no_such_key"):
        train_run(_cfg({"name": "als", "no_such_key": 1}), sqlite_store / "runs")
    client = MlflowClient(tracking_uri=tracking.tracking_uri())
    exp = client.get_experiment_by_name("t")
    assert exp is None or not client.search_runs([exp.experiment_id])


def test_failing_run_ends_failed_with_the_error(sqlite_store: Path) -> None:
    from recsys.models.base import NaNLossError

    diverging = {"name": "item2vec", "dim": 8, "epochs": 1, "lr": 1e30, "min_lr": 0.0, "max_backoffs": 0}
    with pytest.raises(NaNLossError, match="item2vec diverged"):
        train_run(_cfg(diverging), sqlite_store / "runs")
    client = MlflowClient(tracking_uri=tracking.tracking_uri())
    exp = client.get_experiment_by_name("t")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FAILED"
    assert runs[0].data.tags["error"].startswith("NaNLossError: item2vec diverged")


def test_train_run_echoes_a_progress_line_per_epoch(sqlite_store: Path) -> None:
    lines: list[str] = []
    train_run(_cfg({"name": "item2vec", "dim": 8, "epochs": 2, "batch_size": 512}), sqlite_store / "runs",
              echo=lines.append)
    assert [line.split()[:3] for line in lines] == [["[item2vec]", "epoch", "1/2"], ["[item2vec]", "epoch", "2/2"]]
    assert all("loss " in line and "val_ndcg_10 " in line and "s/epoch" in line for line in lines)
    assert "at most" in lines[0] and lines[1].endswith("at most 0 s left")


def test_compare_lists_differing_params_and_writes_reports(sqlite_store: Path) -> None:
    for factors in (4, 8):
        train_run(_cfg({"name": "als", "factors": factors, "iterations": 2}, experiment="cmp", name=f"f{factors}"),
                  sqlite_store / "runs")
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(tmp_path: Path):
    """A real `mlflow server` on 127.0.0.1 (sqlite backend, proxied artifacts); yields (uri, store folder)."""
    port = _free_port()
    store = tmp_path / "server"
    store.mkdir()
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{store / 'server.db'}", "--artifacts-destination",
           (store / "artifacts").as_uri(), "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=store,
                            env={**os.environ, "MLFLOW_TRACKING_URI": ""})
    uri = f"http://127.0.0.1:{port}"
    try:
        _wait_for(uri, proc)
        yield uri, store
    finally:
        mlflow.end_run()
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_train_run_against_a_real_mlflow_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with mlflow_server(tmp_path) as (uri, store):
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        result = train_run(_cfg({"name": "als", "factors": 8, "iterations": 3}), tmp_path / "runs")
        _check_run(MlflowClient(tracking_uri=uri), result.run_id, result)
        assert not (tmp_path / "mlruns.db").exists()  # nothing went to the embedded store
        assert any((store / "artifacts").rglob("metrics.json"))


def _wait_for(uri: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"mlflow server at {uri} did not come up in {timeout} s")
