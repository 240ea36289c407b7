"""experiments/defaults.py's pieces: the worst-ratio choice with its margin, and fits shared across encode-time
candidates (scored on one fit, the same as a fit of their own)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
import defaults  # noqa: E402
from support import clustered_split  # noqa: E402


def _cell(v: float) -> dict:
    return {"ndcg_10": v}


def test_the_highest_worst_ratio_wins_only_beyond_the_margin() -> None:
    scores = {"default": {"a": _cell(0.10), "b": _cell(0.050)},   # ratios 1.0, 0.5
              "x": {"a": _cell(0.08), "b": _cell(0.100)},         # ratios 0.8, 1.0 -> worst 0.8
              "y": {"a": _cell(0.09), "b": _cell(0.060)}}         # ratios 0.9, 0.6
    chosen, ratios = defaults.choose(scores)
    assert chosen == "x" and ratios["default"] == {"a": 1.0, "b": 0.5} and ratios["y"]["a"] == pytest.approx(0.9)
    near = {"default": {"a": _cell(0.100)}, "x": {"a": _cell(0.1005)}}  # 0.995 vs 1.0: within the margin
    assert defaults.choose(near)[0] == "default"


def test_encode_time_candidates_share_the_default_fit_and_score_as_their_own_fit() -> None:
    split = clustered_split(n_users=300)
    fast = {"epochs": 2, "dim": 16, "batch_size": 512}
    fits: dict = {}
    base = defaults.fit_score("item2vec", fast, split, fits=fits)
    decay = defaults.fit_score("item2vec", {**fast, "user_decay": 1.0}, split, fits=fits)
    inin = defaults.fit_score("item2vec", {**fast, "scoring": "in-in"}, split, fits=fits)
    assert len(fits) == 1 and base["fit_s"] == decay["fit_s"] == inin["fit_s"]
    assert defaults.fit_score("item2vec", fast, split, fits=fits) == base  # the encode setting is put back
    own = defaults.fit_score("item2vec", {**fast, "user_decay": 1.0}, split)  # a fit of its own
    assert own["ndcg_10"] == decay["ndcg_10"] and own["hr_10"] == decay["hr_10"]
    assert decay["ndcg_10"] != base["ndcg_10"] or inin["ndcg_10"] != base["ndcg_10"]  # settings were applied
