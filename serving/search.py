"""Candidate search and exact re-scoring: the one implementation serving runs and export measures.

Each ``*_candidates`` returns at least ``k`` item indices that are not banned (fewer only when the
catalogue runs out): Annoy over-fetches ``k + #banned`` and doubles until ``k`` survive; IVF scans more
cells while too few survive; exact scoring takes the best ``k`` of every item. :func:`best` then
re-scores the candidates exactly and keeps the best ``k``, ties by item index. Export tunes and times
every search through :func:`search_top`, so the recall in a bundle's manifest is the recall served.
"""

from __future__ import annotations

import numpy as np
from annoy import AnnoyIndex

from serving.format import effective_search_k
from serving.ivf import IvfIndex


def drop(ids: np.ndarray, banned: np.ndarray) -> np.ndarray:
    """``ids`` without the ``banned`` ones, order kept; a set for the usual few hundred ids (np.isin
    sorts both arrays and costs ~10x more at these sizes)."""
    if not len(banned):
        return ids
    if len(banned) > 512:
        return ids[~np.isin(ids, banned)]
    bset = set(banned.tolist())
    return ids[np.fromiter((i not in bset for i in ids.tolist()), dtype=bool, count=len(ids))]


def annoy_candidates(index: AnnoyIndex, query: np.ndarray, k: int, banned: np.ndarray, search_k: int,
                     n_trees: int) -> np.ndarray:
    """At least ``k`` non-banned item indices from Annoy (Annoy id j = item index j + 1)."""
    n_items = index.get_n_items()
    n = min(k + len(banned), n_items)
    while True:
        got = index.get_nns_by_vector(query, n, search_k=effective_search_k(search_k, n_trees, n))
        keep = drop(np.asarray(got, dtype=np.int64) + 1, banned)
        if len(keep) >= k or n >= n_items:
            return keep
        n = min(max(2 * n, n + k), n_items)


def ivf_candidates(ivf: IvfIndex, query: np.ndarray, k: int, banned: np.ndarray, nprobe: int | None = None
                   ) -> np.ndarray:
    """At least ``k`` non-banned item indices from the IVF cells; scans more cells while too few survive."""
    n, nprobe = min(k + len(banned), len(ivf.items)), nprobe or ivf.nprobe
    while True:
        keep = drop(ivf.search(query, n, nprobe), banned)
        if len(keep) >= k or nprobe >= ivf.nlist:
            return keep
        nprobe = min(2 * nprobe, ivf.nlist)


def exact_candidates(item_vectors: np.ndarray, query: np.ndarray, k: int, banned: np.ndarray,
                     norms: np.ndarray | None = None) -> np.ndarray:
    """The best ``k`` non-banned item indices by scoring every item (``norms``: cosine, "angular")."""
    scores = np.asarray(item_vectors @ query)  # (n_items + 1,)
    if norms is not None:
        scores = scores / norms
    scores[0] = -np.inf
    scores[banned] = -np.inf
    top = np.argpartition(-scores, min(k, len(scores) - 1) - 1)[:k]
    return top[np.isfinite(scores[top])]


def scores_of(item_vectors: np.ndarray, query: np.ndarray, cands: np.ndarray, angular: bool) -> np.ndarray:
    """(len(cands),) float32 exact scores: dot product, or cosine for "angular"."""
    vecs = np.asarray(item_vectors[cands], dtype=np.float32)  # (n, d)
    scores = vecs @ query
    if angular:
        scores = scores / np.maximum(np.linalg.norm(vecs, axis=1) * np.linalg.norm(query), 1e-12)
    return scores.astype(np.float32)


def best(item_vectors: np.ndarray, query: np.ndarray, cands: np.ndarray, k: int, angular: bool
         ) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of ``cands`` by exact score, best first, ties by item index: (ids, scores)."""
    scores = scores_of(item_vectors, query, cands, angular)
    order = np.lexsort((cands, -scores))[:k]
    return cands[order], scores[order]


def search_top(search: str, item_vectors: np.ndarray, query: np.ndarray, k: int, banned: np.ndarray, angular: bool,
               annoy: AnnoyIndex | None = None, search_k: int = -1, ivf: IvfIndex | None = None,
               nprobe: int | None = None, norms: np.ndarray | None = None) -> np.ndarray:
    """What serving returns for one query: the candidates of ``search`` ("annoy", "ivf", "exact"), re-scored."""
    if search == "annoy":
        cands = annoy_candidates(annoy, query, k, banned, search_k, annoy.get_n_trees())
    elif search == "ivf":
        cands = ivf_candidates(ivf, query, k, banned, nprobe)
    else:
        cands = exact_candidates(item_vectors, query, k, banned, norms)
    return best(item_vectors, query, cands, k, angular)[0]


__all__ = ["annoy_candidates", "best", "drop", "exact_candidates", "ivf_candidates", "scores_of", "search_top"]
