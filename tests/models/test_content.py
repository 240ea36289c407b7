"""Item content: texts and their fallback chain, the text-vector cache, precomputed vectors, fusion choices."""

from __future__ import annotations

import hashlib
import importlib.util

import numpy as np
import polars as pl
import pytest

from recsys.config import ConfigError
from recsys.content import CachedEncoder, item_texts, read_vectors
from recsys.ingest.errors import DataError
from recsys.models.two_tower import TwoTower, TwoTowerConfig, TwoTowerEnsemble, TwoTowerEnsembleConfig
from recsys.models.two_tower.content import build_item_features
from recsys.prepare.sequences import Sequences


class CountingEncoder:
    """A deterministic fake sentence model: 8-d vectors from the text's hash; records every text it embeds."""

    name = "fake/counting-model"

    def __init__(self) -> None:
        self.seen: list[str] = []

    def encode(self, texts: list[str]) -> np.ndarray:
        self.seen += texts
        return np.stack([np.frombuffer(hashlib.sha256(t.encode()).digest()[:8], np.uint8).astype(np.float32) / 255
                         for t in texts])


def test_item_texts_fall_back_from_title_to_categories_to_none() -> None:
    texts, sources = item_texts(["Heat (1995)", None, "  ", None], [["Action", "Crime"], "Drama|War", [], None],
                                [[], None, ["heist"], None])
    assert texts == ["Heat (1995). Action, Crime", "Drama, War", "heist", ""]
    assert sources == ["text", "categories", "text", "none"]
    with pytest.raises(ValueError, match="2 titles but 1 categories"):
        item_texts(["a", "b"], [["x"]])


def test_text_cache_is_reused_and_invalidated_on_text_change(tmp_path) -> None:
    texts = ["Heat (1995). Action", "Toy Story (1995). Animation", "", "Heat (1995). Action"]
    enc = CountingEncoder()
    first = CachedEncoder(enc, tmp_path, progress=False).encode(texts)
    assert sorted(enc.seen) == sorted({"Heat (1995). Action", "Toy Story (1995). Animation"})  # empty text never sent
    assert first.shape == (4, 8) and not first[2].any() and np.array_equal(first[0], first[3])
    assert (tmp_path / "fake_counting-model" / "keys.npy").is_file()

    enc2 = CountingEncoder()  # a new process: everything comes from the cache
    cached = CachedEncoder(enc2, tmp_path, progress=False)
    again = cached.encode(texts)
    assert enc2.seen == [] and cached.computed == 0 and cached.reused == 2
    np.testing.assert_array_equal(again, first)

    changed = ["Heat (1995). Action, Crime", *texts[1:]]  # one title edited: only it is embedded again
    out = cached.encode(changed)
    assert enc2.seen == ["Heat (1995). Action, Crime"] and cached.computed == 1 and cached.reused == 2
    np.testing.assert_array_equal(out[1], first[1])
    assert not np.array_equal(out[0], first[0])
    np.testing.assert_array_equal(out[0], CountingEncoder().encode(["Heat (1995). Action, Crime"])[0])

    other = CountingEncoder()
    other.name = "fake/another-model"  # another model: its own cache, nothing shared
    CachedEncoder(other, tmp_path, progress=False).encode(texts[:1])
    assert other.seen == texts[:1]


def test_precomputed_vectors_parquet_and_npy(tmp_path) -> None:
    vecs = np.arange(12, dtype=np.float32).reshape(3, 4)
    pl.DataFrame({"item": ["a", "b", "c"], "emb": vecs.tolist()}).write_parquet(tmp_path / "v.parquet")
    got, found = read_vectors(tmp_path / "v.parquet", ["c", "z", "a"])
    np.testing.assert_array_equal(got, [vecs[2], np.zeros(4), vecs[0]])
    assert found.tolist() == [True, False, True]

    np.save(tmp_path / "m.npy", vecs)
    with pytest.raises(DataError, match=r"m.items.npy beside it"):
        read_vectors(tmp_path / "m.npy", [1])
    np.save(tmp_path / "m.items.npy", np.array([10, 20, 30]))
    got, found = read_vectors(tmp_path / "m.npy", [20, 40])
    np.testing.assert_array_equal(got[0], vecs[1])
    assert found.tolist() == [True, False]

    pl.DataFrame({"item": ["a", "a"], "vector": [[1.0], [2.0]]}).write_parquet(tmp_path / "dup.parquet")
    with pytest.raises(DataError, match="item 'a' has two vectors"):
        read_vectors(tmp_path / "dup.parquet", ["a"])
    nan = pl.DataFrame({"item": ["a", "b"], "vector": [[1.0, 2.0], [float("nan"), 0.0]]})
    nan.write_parquet(tmp_path / "n.parquet")
    with pytest.raises(DataError, match="item 'b' .* NaN"):
        read_vectors(tmp_path / "n.parquet", ["a"])
    pl.DataFrame({"item": ["a", "b"], "vector": [[1.0, 2.0], [1.0]]}).write_parquet(tmp_path / "r.parquet")
    with pytest.raises(DataError, match="row 1 of column 'vector'"):
        read_vectors(tmp_path / "r.parquet", ["a"])


# -- features from a config, and the fusion choices ------------------------------------------------------------
N = 30


def _data(tmp_path):
    """Users stay in one of 3 clusters; items 1..N, cluster = (i - 1) % 3; items 25..30 never trained."""
    rng = np.random.default_rng(0)
    cluster = (np.arange(N + 1) - 1) % 3
    warm = [np.flatnonzero((cluster == c) & (np.arange(N + 1) >= 1) & (np.arange(N + 1) <= 24)) for c in range(3)]
    rows = [[]] + [rng.choice(warm[u % 3], size=8).tolist() for u in range(90)]
    meta = pl.DataFrame({"item_idx": np.arange(1, N + 1),
                         "title": [f"{['red', 'green', 'blue'][cluster[i]]} thing {i}" for i in range(1, N + 1)],
                         "categories": [[f"c{cluster[i]}"] for i in range(1, N + 1)]})
    vecs = np.eye(3, dtype=np.float32)[cluster[1:]] + 0.01 * rng.normal(size=(N, 3)).astype(np.float32)
    pl.DataFrame({"item": [f"i{i}" for i in range(1, N + 1)], "vector": vecs.tolist()}).write_parquet(
        tmp_path / "vecs.parquet")
    return Sequences.from_lists(rows, n_items=N), meta, [f"i{i}" for i in range(1, N + 1)], cluster


TINY = {"dim": 8, "max_len": 8, "n_layers": 1, "dropout": 0.0, "epochs": 8, "batch_size": 16, "lr": 1e-2,
        "warmup_steps": 2, "user_tower": "pooled", "pooling": "mean"}


def test_config_features_build_the_item_tower_inputs(tmp_path) -> None:
    train, meta, raw, _ = _data(tmp_path)
    assert build_item_features(TwoTowerConfig(features=()), meta, N, raw) == (None, [])
    cfg = TwoTowerConfig(features=("vectors",), vectors_path=str(tmp_path / "vecs.parquet"))
    feats, sources = build_item_features(cfg, meta, N, raw)
    assert feats.dense.shape == (N + 1, 3) and not feats.dense[0].any() and feats.dense_source.startswith("vectors:")
    assert feats.n_categories == 0 and len(feats.text_values) == 0 and sources == ["vectors"] * N
    feats, _ = build_item_features(TwoTowerConfig(features=("categories",)), meta, N, raw)
    assert feats.n_categories == 3 and len(feats.text_values) == 0 and feats.dense is None
    for bad in ({"features": ("colour",)}, {"features": ("vectors",)}, {"features": ("text", "vectors"),
                                                                          "vectors_path": "x.parquet"}):
        with pytest.raises(ConfigError, match="features"):
            TwoTowerConfig(**bad)
    with pytest.raises(ValueError, match="two_tower_ensemble"):
        TwoTower(TwoTowerConfig(**TINY, fusion="model"), "cpu", feats).fit(train)
    with pytest.raises(ValueError, match="content-only item tower\\) needs item features"):
        TwoTower(TwoTowerConfig(**TINY, item_id=False), "cpu").fit(train)


def test_model_level_fusion_scores_cold_items_by_content_alone(tmp_path) -> None:
    train, meta, raw, cluster = _data(tmp_path)
    cfg = TwoTowerEnsembleConfig(**TINY, features=("vectors",), vectors_path=str(tmp_path / "vecs.parquet"),
                                 fusion="model", members=2, parallel=False)
    feats, _ = build_item_features(cfg, meta, N, raw)
    model = TwoTowerEnsemble(cfg, "cpu", feats).fit(train)
    assert model.members[0].item_features is None and not model.members[1].net["item"].id_emb
    vecs = model.item_vectors()
    cold = np.arange(25, N + 1)
    assert not vecs[cold, :8].any()  # the ID half of a never-trained item is zero: content alone scores it
    assert vecs[cold, 8:].any(axis=1).all()
    users = model.user_vectors()
    # a cold item is ranked by content: users of its cluster score it above the other clusters' users
    for i in cold:
        same = users[1:][np.arange(90) % 3 == cluster[i]] @ vecs[i]
        other = users[1:][np.arange(90) % 3 != cluster[i]] @ vecs[i]
        assert same.mean() > other.mean()
    with pytest.raises(ConfigError, match="members = 2"):
        TwoTowerEnsembleConfig(features=("categories",), fusion="model", members=3)


def test_feature_level_concat_and_content_only_towers_train(tmp_path) -> None:
    train, meta, raw, _ = _data(tmp_path)
    for over in ({"fusion": "concat"}, {"item_id": False}, {"id_dropout": 0.5}):
        cfg = TwoTowerConfig(**TINY, features=("categories", "ngrams"), **over)
        feats, _ = build_item_features(cfg, meta, N, raw)
        model = TwoTower(cfg, "cpu", feats).fit(train)
        assert np.isfinite(model.item_vectors()).all() and model.history[-1]["loss"] < model.history[0]["loss"]
        assert (model.net["item"].id_emb is None) == (not cfg.item_id)


@pytest.mark.skipif(importlib.util.find_spec("sentence_transformers") is None,
                    reason='needs the content extra: pip install "recsys[content]" (CI installs it)')
def test_packaged_sentence_model_embeds_offline(tmp_path, monkeypatch) -> None:
    from recsys.content import SentenceEncoder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = CachedEncoder(SentenceEncoder(), tmp_path, progress=False)
    v = enc.encode(["Toy Story (1995). Animation, Children, Comedy", "Toy Story 2 (1999). Animation, Comedy",
                    "Heat (1995). Action, Crime, Thriller", ""])
    assert v.shape == (4, 384) and not v[3].any()
    np.testing.assert_allclose(np.linalg.norm(v[:3], axis=1), 1.0, rtol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2  # the two Toy Story films are far closer than Toy Story and Heat
    assert enc.computed == 3 and (tmp_path / "all-MiniLM-L6-v2" / "vectors.npy").is_file()
