"""Candidate search and exact re-scoring: the one implementation serving runs and export measures.

:func:`candidates` returns at least ``k`` item indices that are not banned (fewer only when the
catalogue runs out): Annoy over-fetches ``k + #banned`` and doubles until ``k`` survive; IVF scans more
cells while too few survive; exact scoring takes the best ``k`` of every item. :func:`best` then
re-scores the candidates exactly and keeps the best ``k``, ties by item index. Export tunes and times
every search through :func:`search_top`, so the recall in a bundle's manifest is the recall served.

Work per query is bounded whatever the size of the banned set (a user's seen items, ``exclude``): an
index search never fetches more than :data:`MAX_FETCH` candidates, and a query whose exclusions leave
fewer than ``k`` of them is answered by exact scoring, one pass over the catalogue (``n_items x dim``
multiply-adds) plus ``O(#banned)`` to ban. Exact scoring is never worse in recall, so the bound costs
nothing in quality; it only caps the time a heavy user's query can take.
"""

from __future__ import annotations

import numpy as np
from annoy import AnnoyIndex

from serving.format import effective_search_k
from serving.ivf import IvfIndex

MAX_FETCH = 4096  # most candidates an index search fetches for one query; past it, exact scoring


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
    """Non-banned item indices from Annoy (Annoy id j = item index j + 1): at least ``k`` unless that would
    take more than :data:`MAX_FETCH` results or the catalogue runs out."""
    cap = min(index.get_n_items(), MAX_FETCH)
    n = min(k + len(banned), cap)
    while True:
        got = index.get_nns_by_vector(query, n, search_k=effective_search_k(search_k, n_trees, n))
        keep = drop(np.asarray(got, dtype=np.int64) + 1, banned)
        if len(keep) >= k or n >= cap:
            return keep
        n = min(max(2 * n, n + k), cap)


def ivf_candidates(ivf: IvfIndex, query: np.ndarray, k: int, banned: np.ndarray, nprobe: int | None = None
                   ) -> np.ndarray:
    """Non-banned item indices from the IVF cells (at most :data:`MAX_FETCH` fetched); scans more cells while
    fewer than ``k`` survive."""
    n, nprobe = min(k + len(banned), len(ivf.items), MAX_FETCH), nprobe or ivf.nprobe
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


def candidates(search: str, item_vectors: np.ndarray, query: np.ndarray, k: int, banned: np.ndarray, angular: bool,
               annoy: AnnoyIndex | None = None, search_k: int = -1, ivf: IvfIndex | None = None,
               nprobe: int | None = None, norms: np.ndarray | None = None) -> np.ndarray:
    """At least ``k`` non-banned candidates from ``search`` ("annoy", "ivf", "exact") within the bound: when
    the exclusions need more than :data:`MAX_FETCH` index results, or leave fewer than ``k`` of them, every
    item is scored (by cosine for ``angular``; ``norms``: the item norms, when the caller keeps them)."""
    if search != "exact" and k + len(banned) <= MAX_FETCH:
        if search == "annoy":
            cands = annoy_candidates(annoy, query, k, banned, search_k, annoy.get_n_trees())
        else:
            cands = ivf_candidates(ivf, query, k, banned, nprobe)
        if len(cands) >= k or len(cands) >= len(item_vectors) - 1 - len(banned):
            return cands
    if angular and norms is None:
        norms = np.maximum(np.linalg.norm(item_vectors, axis=1), 1e-12)
    return exact_candidates(item_vectors, query, k, banned, norms if angular else None)


def search_top(search: str, item_vectors: np.ndarray, query: np.ndarray, k: int, banned: np.ndarray, angular: bool,
               annoy: AnnoyIndex | None = None, search_k: int = -1, ivf: IvfIndex | None = None,
               nprobe: int | None = None, norms: np.ndarray | None = None) -> np.ndarray:
    """What serving returns for one query: the :func:`candidates` of ``search``, re-scored."""
    cands = candidates(search, item_vectors, query, k, banned, angular, annoy, search_k, ivf, nprobe, norms)
    return best(item_vectors, query, cands, k, angular)[0]


__all__ = ["MAX_FETCH", "annoy_candidates", "best", "candidates", "drop", "exact_candidates", "ivf_candidates",
           "scores_of", "search_top"]
