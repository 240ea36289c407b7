"""One suite over every candidate search a bundle can serve from (Annoy, IVF, exact), as the model contract has
one over the models: each mode answers the same questions the same way, and its top-k is the exact top-k up to
the recall export measured for it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from support import clustered

from recsys.export import AnnConfig, export_bundle
from recsys.export.ann import exact_topk, recall
from serving import Recommender

MODES = ("annoy", "ivf", "exact")
N_ITEMS, N_USERS = 1500, 200


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray, object, dict]:
    items, users, seen = clustered(N_ITEMS, N_USERS, seed=4)
    cfg = AnnConfig(sample=150, ivf_min_items=1000, ivf_nlist=32, n_trees=20, search_k_factors=(4, 16))
    path = export_bundle(tmp_path_factory.mktemp("modes") / "b", items, users, np.arange(1, N_ITEMS + 1),
                         np.arange(1, N_USERS + 1), seen, None, "dot", "modes", target_recall=0.9, ann=cfg)
    manifest = json.loads((path / "manifest.json").read_text())
    assert set(manifest["search_options"]) == set(MODES)  # the bundle can serve from each of them
    return path, items, users, seen, manifest


def _recall_floor(manifest: dict, mode: str) -> float:
    """The recall@10 export measured for ``mode`` on sampled users and items (exact: 1), less a margin for
    other queries."""
    return 1.0 if mode == "exact" else manifest["search_options"][mode]["recall_at_10"] - 0.1


@pytest.mark.parametrize("mode", MODES)
def test_top_k_is_the_exact_top_k_up_to_the_measured_recall_and_never_a_seen_item(bundle, mode: str) -> None:
    path, items, users, seen, manifest = bundle
    rec = Recommender.load(path, search=mode)
    us = np.arange(1, N_USERS + 1, 3)
    banned = [seen.indices[seen.indptr[u]:seen.indptr[u + 1]] for u in us]
    got = []
    for u, b in zip(us, banned, strict=True):
        r = rec.recommend(int(u), k=10, exclude_seen=True)
        assert len(r.items) == 10 == len(set(r.items)) and r.source == "model"
        assert not set(r.items) & set(b.tolist())
        assert r.scores == sorted(r.scores, reverse=True)
        got.append(np.asarray(r.items))
    assert recall(exact_topk(users[us], items, "dot", banned=banned), got) >= _recall_floor(manifest, mode)


@pytest.mark.parametrize("mode", MODES)
def test_exclude_allow_and_exhausted_candidates_answer_alike_in_every_mode(bundle, mode: str) -> None:
    path, items, users, _, _ = bundle
    rec = Recommender.load(path, search=mode)
    best = rec.recommend(7, k=10, exclude_seen=False).items
    again = rec.recommend(7, k=10, exclude_seen=False, exclude=best[:3]).items
    assert not set(again) & set(best[:3])
    allowed = list(range(100, 140))
    only = rec.recommend(7, k=5, exclude_seen=False, allow=allowed)
    assert set(only.items) <= set(allowed)  # the exact best of the allowed items, whatever the mode
    assert only.items == (np.argsort(-(items[allowed] @ users[7]))[:5] + 100).tolist()
    rest = rec.recommend(7, k=10, exclude_seen=False, exclude=list(range(1, N_ITEMS - 3)))
    assert sorted(rest.items) == list(range(N_ITEMS - 3, N_ITEMS + 1))  # every remaining item, however found


@pytest.mark.parametrize("mode", MODES)
def test_similar_items_and_histories_leave_the_query_item_out(bundle, mode: str) -> None:
    path, items, _, _, manifest = bundle
    rec = Recommender.load(path, search=mode)
    hits = []
    for item in range(1, N_ITEMS + 1, 50):
        r = rec.similar_items(item, k=10)
        assert item not in r.items and len(r.items) == 10
        hits.append(np.asarray(r.items))
    queries = items[np.arange(1, N_ITEMS + 1, 50)]
    want = exact_topk(queries, items, "dot", banned=[[i] for i in range(1, N_ITEMS + 1, 50)])
    assert recall(want, hits) >= _recall_floor(manifest, mode)
    h = rec.recommend_for_history([3, 9], k=10)
    assert h.source == "history" and not {3, 9} & set(h.items)


def test_a_catalogue_over_annoy_max_items_is_exported_without_annoy_and_served_from_ivf(tmp_path) -> None:
    items, users, seen = clustered(N_ITEMS, N_USERS, seed=5)
    cfg = AnnConfig(sample=150, ivf_nlist=32, annoy_max_items=N_ITEMS - 1, exact_max_items=N_ITEMS - 1)
    path = export_bundle(tmp_path / "big", items, users, np.arange(1, N_ITEMS + 1), np.arange(1, N_USERS + 1), seen,
                         None, "dot", "big", target_recall=0.9, ann=cfg)
    manifest = json.loads((path / "manifest.json").read_text())
    assert not (path / "items.ann").exists() and "items.ann" not in manifest["files"]
    assert manifest["annoy"] is None and manifest["search"] == "ivf" and set(manifest["search_options"]) == {"ivf"}
    assert manifest["recall_at_10"]["index"] == "ivf"
    assert manifest["recall_at_10"]["users"] == manifest["ivf"]["recall_users"] >= 0.9
    rec = Recommender.load(path)  # verified: every listed file checks out
    assert rec.search == "ivf" and rec.bundle.index is None
    us = np.arange(1, N_USERS + 1, 3)
    banned = [seen.indices[seen.indptr[u]:seen.indptr[u + 1]] for u in us]
    got = [np.asarray(rec.recommend(int(u), k=10).items) for u in us]
    assert recall(exact_topk(users[us], items, "dot", banned=banned), got) >= manifest["recall_at_10"]["users"] - 0.1
    assert Recommender.load(path, search="exact").recommend(3, k=10).items == exact_topk(
        users[3:4], items, "dot", banned=banned[1:2])[0].tolist()
    with pytest.raises(ValueError, match="no Annoy index.*use 'ivf' or 'exact'"):
        Recommender.load(path, search="annoy")
    # a manifest that claims Annoy without listing its file is refused by name
    manifest["search"], manifest["annoy"] = "annoy", {"n_trees": 10, "search_k": 100}
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(Exception, match="does not list items.ann"):
        Recommender.load(path, verify=False)
