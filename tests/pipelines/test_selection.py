"""The pipeline's choice among trained models: the one-standard-error rule (pipelines.selection)."""

from __future__ import annotations

import pytest

from pipelines.pipeline_config import parse_pipeline_config
from pipelines.selection import choose
from recsys.config import ConfigError
from recsys.models.registry import build_model


def info(val: float, se: float | None, capacity: int) -> dict:
    v = {"ndcg_10": val} if se is None else {"ndcg_10": val, "ndcg_10_se": se}
    return {"val": v, "capacity": capacity}


def test_a_simpler_model_within_one_se_is_chosen() -> None:
    trained = {"transformer": info(0.0835, 0.0090, 4), "item2vec": info(0.0783, 0.0088, 1),
               "als": info(0.0348, 0.0055, 2)}
    c = choose(trained, "ndcg_10", 1.0)
    assert c.label == "item2vec"  # 0.0783 >= 0.0835 - 0.0090 = 0.0745
    assert "within 1 SE" in c.reason and "transformer" in c.reason


def test_a_lead_larger_than_the_se_keeps_the_best() -> None:
    trained = {"transformer": info(0.0817, 0.0089, 4), "item2vec": info(0.0716, 0.0083, 1)}
    assert choose(trained, "ndcg_10", 1.0).label == "transformer"  # 0.0716 < 0.0728
    assert choose(trained, "ndcg_10", 2.0).label == "item2vec"  # 0.0716 >= 0.0639


def test_among_level_models_the_lowest_capacity_then_the_highest_metric() -> None:
    trained = {"a": info(0.100, 0.010, 3), "b": info(0.095, 0.004, 2), "c": info(0.093, 0.004, 2),
               "d": info(0.085, 0.004, 0)}
    assert choose(trained, "ndcg_10", 1.0).label == "b"  # d is below 0.090; b and c tie on capacity


def test_zero_se_or_no_recorded_se_takes_the_highest() -> None:
    trained = {"transformer": info(0.0835, 0.0090, 4), "item2vec": info(0.0783, 0.0088, 1)}
    assert choose(trained, "ndcg_10", 0.0).label == "transformer"
    old = {"transformer": info(0.0835, None, 4), "item2vec": info(0.0783, None, 1)}
    assert choose(old, "ndcg_10", 1.0).label == "transformer"
    nan = {"transformer": info(0.0835, float("nan"), 4), "item2vec": info(0.0783, 0.0, 1)}
    assert choose(nan, "ndcg_10", 1.0).label == "transformer"
    with pytest.raises(ValueError, match="no trained model"):
        choose({}, "ndcg_10", 1.0)


def test_capacity_order_of_the_models() -> None:
    order = [build_model("popularity", {}), build_model("item2vec", {}), build_model("als", {}),
             build_model("two_tower", {"user_tower": "pooled"}), build_model("two_tower", {}),
             build_model("two_tower_ensemble", {})]
    assert [m.capacity() for m in order] == [0, 1, 2, 3, 4, 5]
    assert build_model("bpr", {}).capacity() == 2


def test_select_within_se_is_validated() -> None:
    raw = {"models": {"popularity": {}}, "pipeline": {"select_within_se": -1}}
    with pytest.raises(ConfigError, match="select_within_se must be a number of standard errors >= 0"):
        parse_pipeline_config(raw, source="p.toml")
    raw["pipeline"]["select_within_se"] = 0.5
    assert parse_pipeline_config(raw, source="p.toml").pipeline.select_within_se == 0.5
