"""IVF candidate search: k-means, the index against exact scoring, tuning, the bundle round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from support import clustered

from recsys.export import AnnConfig, export_bundle
from recsys.export.ann import exact_topk, recall, sample_queries
from recsys.export.ivf import assign, build_ivf, default_nlist, kmeans, nprobe_steps, split_large_cells, tune_ivf
from serving import BundleError, Recommender
from serving.ivf import IvfIndex


def test_kmeans_recovers_separated_blobs():
    rng = np.random.default_rng(3)
    centres = np.array([[10, 0], [0, 10], [-10, -10]], dtype=np.float32)
    x = (centres[np.repeat(np.arange(3), 200)] + 0.1 * rng.normal(size=(600, 2))).astype(np.float32)
    got = kmeans(x, 3, iterations=10, seed=0)
    # every true centre has a centroid within 0.05 (Lloyd from 3 distinct random rows of 3 tight blobs)
    dist = np.linalg.norm(got[:, None, :] - centres[None], axis=2)
    assert sorted(dist.argmin(0).tolist()) == [0, 1, 2] and dist.min(0).max() < 0.05
    labels = assign(x, got)
    assert len(set(labels[:200].tolist())) == 1 and len(set(labels.tolist())) == 3
    with pytest.raises(ValueError, match="1 <= k <= n"):
        kmeans(x[:2], 3)


def test_index_layout_and_full_probe_equals_exact():
    items, users, _ = clustered(500, 20)
    index = build_ivf(items, "dot", nlist=16)
    assert index.nlist == 16 and index.offsets[-1] == 500
    assert sorted(index.items.tolist()) == list(range(1, 501))  # every item in exactly one cell
    for c in range(16):  # each row sits in its nearest cell, vectors match the item's
        rows = slice(index.offsets[c], index.offsets[c + 1])
        assert np.all(assign(index.vectors[rows], index.centroids) == c)
        np.testing.assert_array_equal(index.vectors[rows], items[index.items[rows]])
    for q in users[1:]:  # scanning every cell is exact scoring, best first
        assert index.search(q, 10, nprobe=16).tolist() == (np.argsort(-(items[1:] @ q))[:10] + 1).tolist()
    assert len(index.search(users[1], 10, nprobe=1)) <= 10


def test_angular_index_ranks_by_cosine():
    items = np.array([[0, 0], [10, 0.5], [1, 0.8], [0, 1]], dtype=np.float32)
    index = build_ivf(items, "angular", nlist=1)
    assert index.search(np.array([1.0, 1.0], np.float32), 1).tolist() == [2]  # largest cosine, not largest dot
    assert build_ivf(items, "dot", nlist=1).search(np.array([1.0, 1.0], np.float32), 1).tolist() == [1]


def test_bad_index_arrays_are_refused():
    c, v = np.zeros((2, 3), np.float32), np.zeros((4, 3), np.float32)
    items = np.arange(1, 5)
    with pytest.raises(ValueError, match="offsets"):
        IvfIndex(c, np.array([0, 3, 2]), items, v, 1)
    with pytest.raises(ValueError, match="nprobe"):
        IvfIndex(c, np.array([0, 2, 4]), items, v, 3)
    with pytest.raises(ValueError, match="disagree"):
        IvfIndex(c, np.array([0, 2, 4]), items, v[:, :2], 1)


def test_tuning_grows_nprobe_by_half_steps_until_the_target():
    items, users, seen = clustered(3000, 300)
    cfg = AnnConfig(sample=200)
    probe = sample_queries(items, users, "dot", cfg, seen)
    index, res = tune_ivf(items, "dot", 0.95, probe, nlist=64)
    assert nprobe_steps(40) == [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 40] and nprobe_steps(1) == [1]
    assert [t["nprobe"] for t in res.tried] == nprobe_steps(index.nlist)[:len(res.tried)]
    ok = [min(t["recall_users"], t["recall_items"]) >= 0.95 for t in res.tried]
    assert res.target_reached and ok[-1] and not any(ok[:-1])
    assert index.nprobe == res.nprobe < 64  # the clusters make a few cells enough
    assert default_nlist(1_000_000) == 4000 and default_nlist(10) == 10


def test_oversized_cells_are_split_so_none_is_far_over_the_mean():
    rng = np.random.default_rng(5)
    x = np.vstack([rng.normal(size=(2400, 8)) * 0.3 + 3.0, rng.normal(size=(600, 8)) * 4.0]).astype(np.float32)
    centroids = x[[0, 2400, 2401]].copy()  # one centroid in the dense blob: its cell takes 2400+ rows
    labels = assign(x, centroids)
    new_c, new_l = split_large_cells(x, centroids.copy(), labels, max_cell=500)
    sizes = np.bincount(new_l, minlength=len(new_c))
    assert np.bincount(labels).max() >= 2400 and len(new_c) > 3 and sizes.sum() == 3000
    before = np.bincount(labels)
    assert len(new_c) == 3 + sum(int(np.ceil(2 * c / 500)) - 1 for c in before if c > 500)  # parts of ~max_cell / 2
    assert sizes.max() < before.max() / 3  # k-means inside the cell does not promise parts under the cap ...
    for seed in (1, 2):  # ... so build_ivf splits again what is still over (three rounds)
        new_c, new_l = split_large_cells(x, new_c, new_l, max_cell=500, seed=seed)
    assert np.bincount(new_l).max() <= 500
    assert np.array_equal(new_l[labels != 0], labels[labels != 0])  # the other cells keep their rows
    # build_ivf splits until every cell is within the cap, and probing every cell is still exact search
    items, _, _ = clustered(3000, 10)
    index = build_ivf(items, "dot", nlist=30, max_cell_factor=1.5)
    cells = np.diff(index.offsets)
    assert cells.max() <= int(1.5 * 3000 / 30) and index.nlist > 30 and cells.sum() == 3000
    assert sorted(index.items.tolist()) == list(range(1, 3001))
    assert np.diff(build_ivf(items, "dot", nlist=30, max_cell_factor=0).offsets).max() > int(1.5 * 3000 / 30)
    q = rng.normal(size=items.shape[1]).astype(np.float32)
    best = set((np.argsort(-(items[1:] @ q))[:10] + 1).tolist())
    assert set(index.search(q, 10, nprobe=index.nlist).tolist()) == best


def test_bundle_with_ivf_serves_what_it_measured(tmp_path):
    items, users, seen = clustered(3000, 300)
    cfg = AnnConfig(sample=200, ivf_min_items=1000, ivf_nlist=64, n_trees=10, search_k_factors=(1,))
    path = export_bundle(tmp_path / "b", items, users, np.arange(1, 3001), np.arange(1, 301), seen, None, "dot",
                         "clustered", target_recall=0.95, ann=cfg)
    m = json.loads((path / "manifest.json").read_text())
    assert m["ivf"]["nlist"] >= 64 and m["ivf"]["target_reached"]  # oversized cells may have been split
    assert {"ivf_centroids.npy", "ivf_offsets.npy", "ivf_items.npy", "ivf_vectors.npy"} <= set(m["files"])
    assert set(m["search_options"]) == {"annoy", "ivf", "exact"}
    assert m["search"] in m["search_options"] and m["search_options"][m["search"]]["target_reached"]
    rec = Recommender.load(path, search="ivf")
    # fresh users: served recall is close to the recorded one; seen items are never returned
    rng = np.random.default_rng(9)
    us = rng.integers(1, 301, 100)
    banned = [seen.indices[seen.indptr[u]:seen.indptr[u + 1]] for u in us]
    got = [np.asarray(rec.recommend(int(u), k=10).items) for u in us]
    assert all(not set(g.tolist()) & set(b.tolist()) for g, b in zip(got, banned, strict=True))
    assert recall(exact_topk(users[us], items, "dot", banned=banned), got) >= m["ivf"]["recall_users"] - 0.05
    # excluding most of the catalogue makes the search scan more cells until k items survive
    best = rec.recommend(1, k=10).items
    many = rec.recommend(1, k=10, exclude=list(range(1, 2996))).items
    assert len(many) == 5 and not set(many) & set(best)


def test_ivf_search_needs_an_ivf_bundle(tmp_path):
    items, users, seen = clustered(300, 20)
    path = export_bundle(tmp_path / "b", items, users, np.arange(1, 301), np.arange(1, 21), seen, None, "dot",
                         "small", ann=AnnConfig(n_trees=5, search_k_factors=(1,)))
    assert json.loads((path / "manifest.json").read_text())["ivf"] is None
    with pytest.raises(ValueError, match="has no IVF index"):
        Recommender.load(path, search="ivf")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["search"] = "ivf"
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match='search is "ivf" but has no ivf section'):
        Recommender.load(path)
