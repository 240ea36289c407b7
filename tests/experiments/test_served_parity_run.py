"""experiments/served_parity_run.py: the published model of a pipeline run, offline against served."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pipelines.pipeline import run_pipeline
from pipelines.pipeline_config import load_pipeline_config

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "experiments"))
import served_parity_run  # noqa: E402

CONFIG = """[pipeline]
workdir = "wd"
bundles = "pub"
[data]
synthetic_users = 300
synthetic_items = 120
synthetic_events = 6000
[eval]
max_users = 100
[models.als]
factors = 16
iterations = 4
"""


def test_a_published_als_serves_what_it_scores_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "p.toml").write_text(CONFIG)
    run_pipeline(load_pipeline_config(tmp_path / "p.toml"), echo=lambda _: None)
    res = served_parity_run.parity(tmp_path / "p.toml", tmp_path, 150, seed=1)
    assert res["candidate"] == "als" and res["users"] == 150 and res["search"] == "exact"
    assert res["identical_top10"] == 1.0 and res["ndcg_10_diff"] == pytest.approx(0.0, abs=1e-12)
    assert 0 < res["offline"]["ndcg_10"] == res["served"]["ndcg_10"]
    assert served_parity_run.parity(tmp_path / "p.toml", tmp_path, 150, seed=2)["users"] == 150
    assert "Identical top-10 lists: 1.0000" in served_parity_run.markdown(res, {"command": "x", "commit": "y"})
