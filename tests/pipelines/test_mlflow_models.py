"""MLflow as its users expect: the champion is a pyfunc model (loadable, servable by `mlflow models serve`),
a trained model is recoverable from `runs:/<id>/model`, final metrics stay apart from per-epoch series,
and the comparison table fits a terminal. Against the sqlite default and a real `mlflow server`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from support import free_port, mlflow_server, run_config

from pipelines import compare, tracking
from pipelines.pipeline import run_pipeline
from pipelines.pipeline_config import load_pipeline_config
from pipelines.train import evaluate_run_model, export_run_model, train_run
from serving import Recommender

PIPELINE = textwrap.dedent("""
    [pipeline]
    workdir = "wd"
    bundles = "pub"
    [data]
    synthetic_users = 300
    synthetic_items = 120
    synthetic_events = 6000
    [models.als]
    factors = 16
    iterations = 4
""")


def _requests(rec: Recommender) -> pd.DataFrame:
    users = [str(u) for u in rec.bundle.users.ids[:3]]
    items = [str(i) for i in rec.bundle.items.ids[:6]]
    return pd.DataFrame([
        {"user_id": users[0], "history": None, "k": 5},  # stored vector
        {"user_id": users[1], "history": items[:2], "k": 4},  # a known user's recent events
        {"user_id": None, "history": items[2:5], "k": 3},  # anonymous history
        {"user_id": "nobody", "history": None, "k": 2},  # cold start: popularity
    ])


def _expected(rec: Recommender, df: pd.DataFrame) -> list[dict]:
    out = []
    for r in df.to_dict(orient="records"):
        hist = r["history"] if isinstance(r["history"], list) else None
        res = (rec.recommend(r["user_id"], r["k"], history=hist) if r["user_id"] is not None
               else rec.recommend_for_history(hist, r["k"]))
        out.append({"items": [str(i) for i in res.items], "scores": res.scores, "source": res.source})
    return out


def _rows(frame: pd.DataFrame) -> list[dict]:
    return [{"items": list(map(str, r["items"])), "scores": [float(s) for s in r["scores"]], "source": r["source"]}
            for r in frame.to_dict(orient="records")]


def _same(got: list[dict], want: list[dict]) -> None:
    assert [g["items"] for g in got] == [w["items"] for w in want]
    assert [g["source"] for g in got] == [w["source"] for w in want]
    for g, w in zip(got, want, strict=True):
        assert g["scores"] == pytest.approx(w["scores"], rel=1e-6)


def _publish_and_load_champion(tmp_path: Path) -> tuple[Recommender, pd.DataFrame, list[dict]]:
    (tmp_path / "p.toml").write_text(PIPELINE)
    run_pipeline(load_pipeline_config(tmp_path / "p.toml"), echo=lambda _: None)
    rec = Recommender.load(tmp_path / "pub")
    df = _requests(rec)
    model = mlflow.pyfunc.load_model("models:/recsys@champion")
    got = _rows(model.predict(df))
    _same(got, _expected(rec, df))
    return rec, df, got


@pytest.mark.slow
def test_the_champion_is_a_pyfunc_model_that_mlflow_models_serve_answers_from_a_cron_line(sqlite_store: Path) -> None:
    rec, df, got = _publish_and_load_champion(sqlite_store)
    version = MlflowClient().get_model_version_by_alias("recsys", "champion")
    info = mlflow.models.get_model_info("models:/recsys@champion")
    assert {c["name"] for c in info.signature.inputs.to_dict()} == {"user_id", "history", "k"}
    assert version.source.startswith("models:/m-")  # a logged pyfunc model, not a bare folder of files
    reqs = (Path(mlflow.artifacts.download_artifacts("models:/recsys@champion")) / "requirements.txt").read_text()
    assert "recsys==" in reqs

    port = free_port()
    # as a cron line runs it: the environment's binary called by path, PATH without the environment's bin
    # (`mlflow models serve` starts `uvicorn` from PATH; `recsys serve-model` puts the environment first)
    env = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "serve-model", "--host", "127.0.0.1",
                             "--port", str(port)],
                            cwd=sqlite_store, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        import httpx

        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow models serve exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.time() < deadline, "mlflow models serve did not come up"
            time.sleep(0.5)
        records = json.loads(df.to_json(orient="records"))
        resp = httpx.post(f"http://127.0.0.1:{port}/invocations", json={"dataframe_records": records}, timeout=30)
        assert resp.status_code == 200, resp.text
        _same(_rows(pd.DataFrame(resp.json()["predictions"])), got)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_the_champion_loads_from_a_real_mlflow_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with mlflow_server(tmp_path) as (uri, _store):
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        _publish_and_load_champion(tmp_path)
        assert not (tmp_path / "mlruns.db").exists()
        # a trained model comes back from the server alone and scores what its run logged
        result = train_run(run_config({"name": "als", "factors": 8, "iterations": 3}), tmp_path / "runs")
        again = evaluate_run_model(f"runs:/{result.run_id}/model", tmp_path / "elsewhere")
        assert again["ndcg_10"] == pytest.approx(result.test["ndcg_10"], abs=1e-7)


def test_a_model_comes_back_from_its_run_with_the_metrics_it_logged(sqlite_store: Path) -> None:
    result = train_run(run_config({"name": "item2vec", "dim": 8, "epochs": 2, "window": 2}), sqlite_store / "runs")
    uri = f"runs:/{result.run_id}/model"
    client = MlflowClient(tracking.tracking_uri())
    run = client.get_run(result.run_id)
    assert run.data.tags["model_uri"] == uri
    # a fresh folder: the model files come from MLflow, the data is rebuilt from the logged config
    again = evaluate_run_model(uri, sqlite_store / "elsewhere")
    for k in ("hr_10", "ndcg_10", "hr_5", "ndcg_5"):
        assert again[k] == pytest.approx(run.data.metrics[f"test_{k}"], abs=1e-7)
    bundle = export_run_model(uri, sqlite_store / "bundle", sqlite_store / "elsewhere")
    rec = Recommender.load(bundle)
    assert rec.manifest["model"] == "item2vec" and rec.manifest["run_id"] == result.run_id
    (sqlite_store / "catalogue.csv").write_text("item,title\n999999,a new item\n")
    with pytest.raises(ValueError, match="item2vec model has no item features, so it cannot give vectors"):
        export_run_model(uri, sqlite_store / "bundle2", sqlite_store / "elsewhere", sqlite_store / "catalogue.csv")
    with pytest.raises(ValueError, match="cannot download"):
        evaluate_run_model("runs:/0123456789abcdef/model", sqlite_store / "elsewhere")


def test_final_metrics_stay_apart_from_the_per_epoch_series(sqlite_store: Path) -> None:
    result = train_run(run_config({"name": "als", "factors": 8, "iterations": 3}), sqlite_store / "runs")
    client = MlflowClient(tracking.tracking_uri())
    run = client.get_run(result.run_id)
    final = client.get_metric_history(result.run_id, "val_ndcg_10")
    assert len(final) == 1 and final[0].value == pytest.approx(result.val["ndcg_10"])
    epochs = client.get_metric_history(result.run_id, "epoch_val_ndcg_10")
    assert sorted(m.step for m in epochs) == [1, 2, 3]
    assert not any(k.endswith(("n_users", "n_skipped", "n_masked_targets")) for k in run.data.metrics)
    assert int(run.data.tags["test_n_users"]) > 0  # counters are tags


def test_the_compare_table_fits_a_terminal_and_the_files_keep_everything(sqlite_store: Path) -> None:
    for i, (factors, reg) in enumerate([(4, 0.01), (8, 0.1), (16, 0.05)]):
        train_run(run_config({"name": "als", "factors": factors, "regularization": reg, "iterations": 2},
                       experiment="cmp", name=f"als-with-a-long-descriptive-run-name-{i}"), sqlite_store / "runs")
    (sqlite_store / "p.toml").write_text(PIPELINE.replace('workdir = "wd"', 'workdir = "wd"\nexperiment = "cmp"'))
    run_pipeline(load_pipeline_config(sqlite_store / "p.toml"), echo=lambda _: None)
    c = compare.compare("cmp", "test_ndcg_10")
    text = compare.to_text(c)
    assert max(len(line) for line in text.splitlines()) <= 120
    assert "pipeline-" not in text  # parent runs only on request
    assert "factors" in text.splitlines()[0] and "seed" not in text.splitlines()[0]
    values = [float(r["test_ndcg_10"]) for r in c.rows]
    assert values == sorted(values, reverse=True)
    with_parent = compare.compare("cmp", "test_ndcg_10", include_pipeline=True)
    assert len(with_parent.rows) == len(c.rows) + 1
    paths = compare.write_reports(c, sqlite_store / "reports", "cmp", "test_ndcg_10")
    assert {p.name for p in paths} == {"cmp.csv", "cmp.md", "cmp_val_curves.png", "cmp_test_metrics.png",
                                       "cmp_training_curves.png"}
    header = (sqlite_store / "reports" / "cmp.csv").read_text().splitlines()[0]
    assert "run.seed" in header and "model.factors" in header  # the files keep equal params too
