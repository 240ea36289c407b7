"""serving.Recommender over small exported bundles: exactness, filters, fallbacks, refusing bad bundles."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import DIM, N_ITEMS, N_USERS, exact, make_bundle

from recsys.export import publish
from serving import BundleError, Recommender
from serving.format import IdLookup, sha256_file


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> tuple[Path, dict]:
    return make_bundle(tmp_path_factory.mktemp("b") / "bundle")


@pytest.fixture(scope="module")
def rec(bundle) -> Recommender:
    return Recommender.load(bundle[0], search="annoy")  # the tiny catalogue alone would pick exact scoring


def test_exact_search_mode_agrees_with_annoy(rec, bundle):
    exact_rec = Recommender.load(bundle[0])
    assert exact_rec.search == "exact" and rec.search == "annoy"
    for u in range(101, 101 + N_USERS):
        assert exact_rec.recommend(u, k=10).items == rec.recommend(u, k=10).items
    assert exact_rec.similar_items("i7", k=5).items == rec.similar_items("i7", k=5).items
    assert len(exact_rec.recommend(102, k=1000).items) == N_ITEMS - 8
    with pytest.raises(ValueError, match="search must be one of"):
        Recommender.load(bundle[0], search="faiss")


def test_recommend_equals_exact_topk_with_seen_excluded(rec, bundle):
    _, a = bundle
    for u in range(1, N_USERS + 1):
        got = rec.recommend(100 + u, k=10)
        assert got.source == "model"
        assert got.items == exact(a["users"][u], a["items"], 10, banned=a["seen"][u])
        assert np.allclose(got.scores, np.sort(a["items"][[int(i[1:]) for i in got.items]] @ a["users"][u])[::-1],
                           rtol=1e-5)


def test_seen_items_come_back_without_exclude_seen(rec, bundle):
    _, a = bundle
    got = rec.recommend(101, k=10, exclude_seen=False)
    assert got.items == exact(a["users"][1], a["items"], 10)


def test_exclude_and_allow_filters(rec, bundle):
    _, a = bundle
    first = rec.recommend(101, k=5).items
    got = rec.recommend(101, k=5, exclude=first[:3] + ["not-an-item"])
    assert got.items == exact(a["users"][1], a["items"], 5, banned=a["seen"][1] + [int(i[1:]) for i in first[:3]])
    allow = ["i1", "i2", "i3", "i4", f"i{a['seen'][1][0]}", "nope"]
    got = rec.recommend(101, k=10, allow=allow)
    assert set(got.items) == {"i1", "i2", "i3", "i4"} - {f"i{j}" for j in a["seen"][1]}
    assert got.scores == sorted(got.scores, reverse=True)


def test_overfetch_returns_every_remaining_item(rec):
    everything = [f"i{j}" for j in range(1, N_ITEMS + 1)]
    got = rec.recommend(102, k=10, exclude=everything[:-7])  # 7 left, some of them seen
    assert 0 < len(got.items) <= 7 and set(got.items) <= set(everything[-7:])
    assert len(rec.recommend(102, k=1000).items) == N_ITEMS - 8


def test_unknown_user_gets_popularity_then_history(rec, bundle):
    _, a = bundle
    counts = np.bincount(np.concatenate(a["seen"][1:]), minlength=N_ITEMS + 1)
    pop = rec.recommend("stranger", k=5)
    assert pop.source == "popularity"
    assert pop.scores == sorted(counts[1:].tolist(), reverse=True)[:5]
    hist = rec.recommend("stranger", k=5, history=["i5", "i9", "ghost"])
    assert hist.source == "history" and hist.unknown == ["ghost"]
    query = (a["items"][5] + a["items"][9]) / 2
    assert hist.items == exact(query, a["items"], 5, banned=[5, 9])


def test_history_of_only_unknown_items_falls_back(rec):
    got = rec.recommend_for_history(["x", "y"], k=3)
    assert got.source == "popularity" and got.unknown == ["x", "y"] and len(got.items) == 3


def test_similar_items_leave_the_item_out(rec, bundle):
    _, a = bundle
    got = rec.similar_items("i7", k=5)
    assert got.source == "model" and "i7" not in got.items
    assert got.items == exact(a["items"][7], a["items"], 5, banned=[7])
    unknown = rec.similar_items("nope", k=2)
    assert unknown.source == "popularity" and unknown.unknown == ["nope"]


def test_batch_matches_single_and_results_hold_raw_ids(rec):
    batch = rec.recommend_batch([101, "102", 999], k=4)
    assert [b.items for b in batch] == [rec.recommend(u, k=4).items for u in (101, 102, 999)]
    assert [b.source for b in batch] == ["model", "model", "popularity"]
    assert all(isinstance(i, str) for b in batch for i in b.items)
    with pytest.raises(ValueError, match="k must be"):
        rec.recommend(101, k=0)


def test_angular_bundle_scores_are_cosines(tmp_path):
    path, a = make_bundle(tmp_path / "cos", metric="cosine")
    unit = a["items"] / np.maximum(np.linalg.norm(a["items"], axis=1, keepdims=True), 1e-12)
    for search in ("annoy", "exact"):
        rec = Recommender.load(path, search=search)
        assert rec.manifest["metric"] == "angular"
        got = rec.similar_items("i3", k=3)
        assert got.items == exact(unit[3], unit, 3, banned=[3])
        assert np.allclose(got.scores, [unit[int(i[1:])] @ unit[3] for i in got.items], atol=1e-5)


def test_item_metadata_is_returned(tmp_path):
    meta = {"i1": {"title": "One", "categories": ["a"]}}
    path, _ = make_bundle(tmp_path / "m", item_meta=meta)
    got = Recommender.load(path).recommend_for_history(["i2"], k=N_ITEMS)
    assert got.meta[got.items.index("i1")] == {"title": "One", "categories": ["a"]}
    assert got.meta[got.items.index("i3")] is None


# -- refusing bad bundles ---------------------------------------------------------------------
def _rewrite_manifest(path: Path, name: str) -> None:
    m = json.loads((path / "manifest.json").read_text())
    m["files"][name] = {"sha256": sha256_file(path / name), "bytes": (path / name).stat().st_size}
    (path / "manifest.json").write_text(json.dumps(m))


def test_flipped_byte_is_refused(tmp_path):
    path, _ = make_bundle(tmp_path / "c")
    raw = bytearray((path / "items.ann").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (path / "items.ann").write_bytes(bytes(raw))
    with pytest.raises(BundleError, match=r"items\.ann fails its sha256"):
        Recommender.load(path)


def test_missing_file_and_wrong_dim_are_refused(tmp_path):
    path, a = make_bundle(tmp_path / "d")
    np.save(path / "user_vectors.npy", np.zeros((N_USERS + 1, DIM + 1), np.float32))
    _rewrite_manifest(path, "user_vectors.npy")
    with pytest.raises(BundleError, match=r"user_vectors\.npy is \(41, 17\)"):
        Recommender.load(path)
    (path / "seen.npz").unlink()
    with pytest.raises(BundleError, match=r"seen\.npz is missing"):
        Recommender.load(path)
    with pytest.raises(BundleError, match="neither a bundle"):
        Recommender.load(tmp_path)


def test_load_through_publish_root(tmp_path, bundle):
    path, _ = make_bundle(tmp_path / "p")
    publish(tmp_path / "root", path)
    assert Recommender.load(tmp_path / "root").recommend(101).items == Recommender.load(bundle[0]).recommend(101).items


def test_serving_imports_stay_light():
    code = ("import sys, serving, serving.http; heavy = [m for m in ('torch', 'mlflow', 'polars', 'recsys') "
            "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert res.returncode == 0, res.stdout + res.stderr


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(-(2**62), 2**62), min_size=1, max_size=30, unique=True), st.data())
def test_id_lookup_roundtrip(ids, data):
    lookup = IdLookup(np.asarray(ids, dtype=np.int64))
    idx = np.arange(1, len(ids) + 1)
    assert lookup.lookup(lookup.raw(idx)).tolist() == idx.tolist()
    assert lookup.lookup([str(i) for i in ids]).tolist() == idx.tolist()
    stranger = data.draw(st.integers(-(2**62), 2**62).filter(lambda x: x not in ids))
    assert lookup.lookup([stranger, "abc", None, 2**70, True]).tolist() == [0] * 5


def test_work_per_query_is_bounded_however_long_the_exclusions(rec, bundle, monkeypatch):
    """Past MAX_FETCH the index is not asked for more; the query is scored exactly, with the same answer."""
    import serving.search as search

    monkeypatch.setattr(search, "MAX_FETCH", 40)
    asked: list[int] = []
    index = rec.bundle.index

    class Counting:
        def __getattr__(self, name):
            return getattr(index, name)

        def get_nns_by_vector(self, query, n, search_k=-1):
            asked.append(n)
            return index.get_nns_by_vector(query, n, search_k=search_k)

    monkeypatch.setattr(rec.bundle, "index", Counting())
    items = bundle[1]["items"]
    heavy = [f"i{j}" for j in range(1, 121)]  # 120 exclusions > MAX_FETCH: exact scoring, no index call
    got = rec.recommend_for_history(["i150"], k=10, exclude=heavy)
    assert asked == [] and got.items == exact(items[150], items, 10, banned=[*range(1, 121), 150])
    light = rec.recommend_for_history(["i150"], k=10, exclude=heavy[:5])  # within the bound: the index answers
    assert asked and max(asked) <= 40
    assert light.items == exact(items[150], items, 10, banned=[1, 2, 3, 4, 5, 150])


def test_the_decayed_mean_by_hand_and_in_blocks() -> None:
    """``serving.encoder.decayed_mean``: the one decayed mean (item2vec's encoder and the served one)."""
    from serving.encoder import decayed_mean

    vectors = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    offsets, items = np.array([0, 3, 3, 4]), np.array([1, 2, 3, 2])  # rows: [1, 2, 3], [], [2]
    got = decayed_mean(vectors, offsets, items, decay=0.5)
    # row 0: weights 0.25, 0.5, 1 (newest last) -> (0.25*[1,0] + 0.5*[0,1] + [1,1]) / 1.75
    assert np.allclose(got, [[1.25 / 1.75, 1.5 / 1.75], [0.0, 0.0], [0.0, 1.0]])
    assert np.allclose(decayed_mean(vectors, offsets, items, 0.5, max_len=2), [[1 / 1.5, 1.5 / 1.5], [0, 0], [0, 1]])
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 9, 300)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    items = rng.integers(1, 4, offsets[-1])
    assert np.allclose(decayed_mean(vectors, offsets, items, 0.7, block_events=5),
                       decayed_mean(vectors, offsets, items, 0.7))
