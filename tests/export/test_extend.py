"""New catalogue items served without retraining: an extended bundle serves them and the old items identically."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from recsys.export import export_model
from recsys.export.extend import export_with_catalogue, read_catalogue
from recsys.ingest.errors import DataError
from recsys.models.popularity import Popularity
from recsys.models.two_tower import TwoTower, TwoTowerConfig, TwoTowerEnsemble, TwoTowerEnsembleConfig
from recsys.models.two_tower.content import build_item_features
from recsys.prepare.sequences import Sequences
from serving import Recommender

N = 30
COLOURS = ["red", "green", "blue"]


def _train_data():
    """90 users, each in one of 3 colour clusters; items 1..N with cluster (i - 1) % 3, titles and categories."""
    rng = np.random.default_rng(0)
    cluster = (np.arange(N + 1) - 1) % 3
    items = [np.flatnonzero((cluster == c) & (np.arange(N + 1) >= 1)) for c in range(3)]
    rows = [[]] + [rng.choice(items[u % 3], size=8).tolist() for u in range(90)]
    meta = pl.DataFrame({"item_idx": np.arange(1, N + 1),
                         "title": [f"{COLOURS[cluster[i]]} thing {i}" for i in range(1, N + 1)],
                         "categories": [[f"cat-{COLOURS[cluster[i]]}"] for i in range(1, N + 1)]})
    return Sequences.from_lists(rows, n_items=N), meta


RAW_ITEMS = [f"i{i}" for i in range(1, N + 1)]
RAW_USERS = [f"u{u}" for u in range(1, 91)]
CFG = {"dim": 8, "max_len": 8, "n_layers": 1, "dropout": 0.0, "epochs": 12, "batch_size": 16, "lr": 1e-2,
       "warmup_steps": 2, "user_tower": "transformer", "features": ("categories", "ngrams"), "id_dropout": 0.5}


def _catalogue(path):
    pl.DataFrame({
        "item": ["i3", "n-red", "n-blue", "n-cat", "n-empty"],  # i3 is known: kept as trained
        "title": ["renamed", "red thing new", "blue thing new", None, None],
        "categories": ["cat-red", "cat-red", "cat-blue", "cat-green", None],
    }).write_csv(path)
    return path


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("extend")
    train, meta = _train_data()
    cfg = TwoTowerConfig(**CFG)
    feats, _ = build_item_features(cfg, meta, N, RAW_ITEMS)
    model = TwoTower(cfg, "cpu", feats).fit(train)
    old = export_model(tmp / "old", model, RAW_ITEMS, RAW_USERS, histories=train)
    new = export_with_catalogue(tmp / "new", model, RAW_ITEMS, RAW_USERS, train, _catalogue(tmp / "catalogue.csv"))
    return model, old, new


def test_manifest_records_the_content_only_items(bundles) -> None:
    _, _, new = bundles
    rec = Recommender.load(new, search="exact")
    co = rec.manifest["content_only"]
    assert co["count"] == 4 and co["sources"] == {"text": 2, "categories": 1, "none": 1}
    assert co["items"] == [["n-red", "text"], ["n-blue", "text"], ["n-cat", "categories"], ["n-empty", "none"]]
    assert rec.manifest["counts"]["items"] == N + 4 and rec.manifest["encoder_check"]["users"] > 0


def test_old_items_and_users_are_served_identically(bundles) -> None:
    _, old, new = bundles
    a, b = Recommender.load(old, search="exact"), Recommender.load(new, search="exact")
    np.testing.assert_array_equal(b.bundle.item_vectors[: N + 1], a.bundle.item_vectors)
    np.testing.assert_array_equal(b.bundle.user_vectors, a.bundle.user_vectors)
    for user in RAW_USERS[:20]:
        ra = a.recommend(user, k=10)
        rb = b.recommend(user, k=10, allow=RAW_ITEMS)  # the same candidates: the same answer
        assert (ra.items, ra.source) == (rb.items, rb.source)
        # the same vectors; the score matmul over a larger catalogue may round the last bit differently (BLAS blocking)
        np.testing.assert_allclose(rb.scores, ra.scores, rtol=1e-6, atol=1e-6)
        full = b.recommend(user, k=N + 4)  # new items slot in by score among the old ones
        assert [i for i in full.items if i in RAW_ITEMS][:10] == ra.items
        hist = ["i1", "i4"]
        ha, hb = a.recommend(user, k=5, history=hist), b.recommend(user, k=5, history=hist, allow=RAW_ITEMS)
        assert ha.items == hb.items and np.allclose(ha.scores, hb.scores, atol=1e-6)


def test_new_items_are_served_from_their_content(bundles) -> None:
    model, _, new = bundles
    rec = Recommender.load(new, search="exact")
    feats = model.item_features.encode_new(["red thing new"], [["cat-red"]])
    want = model.encode_item_features(feats)[1]
    got = rec.bundle.item_vectors[rec.bundle.items.lookup(["n-red"])[0]]
    np.testing.assert_allclose(got, want, atol=1e-6)  # served = the trained item tower on its content
    sim = rec.similar_items("n-red", k=5)
    assert sim.source == "model" and "its text alone" in sim.note
    reds = [i for i in sim.items if i.startswith("i")]
    assert sum((int(i[1:]) - 1) % 3 == 0 for i in reds) >= len(reds) - 1  # neighbours from its colour cluster
    red_users = [u for j, u in enumerate(RAW_USERS) if j % 3 == 0]
    blue_users = [u for j, u in enumerate(RAW_USERS) if j % 3 == 2]
    uv = rec.bundle.user_vectors[rec.bundle.users.lookup(red_users + blue_users)]
    scores = uv @ got
    assert scores[: len(red_users)].mean() > scores[len(red_users):].mean()  # its cluster's users rank it higher
    hist = rec.recommend_for_history(["n-red"], k=5)  # a history holding a new item is encoded by the model
    assert hist.source == "history" and hist.unknown == [] and len(hist.items) == 5
    assert rec.similar_items("n-cat", k=3).note.endswith("its categories (it has no title or tags) alone")


def test_item_without_content_falls_back_to_popularity_and_says_so(bundles) -> None:
    _, _, new = bundles
    rec = Recommender.load(new, search="exact")
    sim = rec.similar_items("n-empty", k=5)
    assert sim.source == "popularity" and "without content" in sim.note and "n-empty" not in sim.items
    assert sim.to_json()["note"] == sim.note
    assert "note" not in rec.recommend("u1", k=3).to_json()  # ordinary answers keep their shape
    only = rec.recommend_for_history(["n-empty"], k=4)
    assert only.source == "popularity" and "only items added without content" in only.note
    for user in RAW_USERS[:10]:  # a vectorless item is never a candidate
        assert "n-empty" not in rec.recommend(user, k=N + 4).items


def test_model_level_fusion_bundle_extends_too(tmp_path) -> None:
    train, meta = _train_data()
    cfg = TwoTowerEnsembleConfig(**{**CFG, "id_dropout": 0.0, "user_tower": "pooled"}, fusion="model", members=2,
                                 parallel=False)
    feats, _ = build_item_features(cfg, meta, N, RAW_ITEMS)
    model = TwoTowerEnsemble(cfg, "cpu", feats).fit(train)
    path = export_with_catalogue(tmp_path / "b", model, RAW_ITEMS, RAW_USERS, train, _catalogue(tmp_path / "c.csv"))
    rec = Recommender.load(path, search="exact")
    vec = rec.bundle.item_vectors[rec.bundle.items.lookup(["n-red"])[0]]
    assert not vec[:8].any() and vec[8:].any()  # the ID tower's half is zero: content alone
    assert rec.recommend_for_history(["n-red", "i1"], k=3).source == "history"


def test_catalogue_errors_name_the_file_and_fix(tmp_path) -> None:
    train, _ = _train_data()
    pop = Popularity().fit(train)
    cat = _catalogue(tmp_path / "c.csv")
    with pytest.raises(ValueError, match="no item features, so it cannot give vectors"):
        export_with_catalogue(tmp_path / "b", pop, RAW_ITEMS, RAW_USERS, train, cat)
    pl.DataFrame({"id": ["a"], "title": ["x"]}).write_csv(tmp_path / "noid.csv")
    with pytest.raises(DataError, match=r"noid.csv: a catalogue needs an 'item' column"):
        read_catalogue(tmp_path / "noid.csv")
    pl.DataFrame({"item": ["a", "a"]}).write_csv(tmp_path / "dup.csv")
    with pytest.raises(DataError, match=r"items \['a'\] are listed twice"):
        read_catalogue(tmp_path / "dup.csv")
    (tmp_path / "c.xlsx").write_text("x")
    with pytest.raises(DataError, match="must be .csv, .tsv, .parquet or .jsonl"):
        read_catalogue(tmp_path / "c.xlsx")
    cats = read_catalogue(cat)
    assert cats["categories"].to_list()[0] == ["cat-red"] and cats["categories"].to_list()[4] is None
