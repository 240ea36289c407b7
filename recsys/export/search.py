"""Build every candidate index a bundle can serve from, measure each, and choose one.

Annoy is built up to ``AnnConfig.annoy_max_items`` items (above, only when asked for by
``search="annoy"``); the IVF index from ``AnnConfig.ivf_min_items`` items on, and always when Annoy is
not built; exact scoring needs no index but is a candidate only up to ``AnnConfig.exact_max_items``.
All are measured on one :class:`~recsys.export.ann.Probe`: recall@10 against exact top-10 and mean
microseconds per user query through :func:`serving.search.search_top`, the code serving runs
(candidates, then exact re-scoring).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from annoy import AnnoyIndex

from recsys.export.ann import (
    AnnConfig,
    AnnResult,
    Probe,
    SearchOption,
    ann_topk,
    banned_row,
    choose_search,
    sample_queries,
    time_per_query,
    tune_index,
)
from recsys.export.ivf import IvfResult, ivf_topk, tune_ivf
from serving.ivf import IvfIndex
from serving.search import search_top


@dataclass
class SearchIndexes:
    """What :func:`build_search` made: the tuned indexes, every option measured, the choice."""

    annoy: AnnoyIndex | None  # None above AnnConfig.annoy_max_items
    annoy_result: AnnResult | None
    ivf: IvfIndex | None
    ivf_result: IvfResult | None
    options: dict[str, SearchOption]
    search: str

    def manifest_options(self) -> dict:
        return {m: {"recall_at_10": round(o.recall, 4), "target_reached": o.reached,
                    "us_per_query": round(o.us_per_query, 1)} for m, o in self.options.items()}


def build_search(item_vectors: np.ndarray, user_vectors: np.ndarray, metric: str, cfg: AnnConfig,
                 seen: sp.csr_matrix | None = None) -> SearchIndexes:
    """Tune Annoy and/or IVF (by catalogue size), time each option on the same queries, choose."""
    probe = sample_queries(item_vectors, user_vectors, metric, cfg, seen)
    n_items = item_vectors.shape[0] - 1
    timed = probe.uq[: min(len(probe.uq), 200)]
    banned = probe.u_banned[: len(timed)] if probe.u_banned is not None else None
    options: dict[str, SearchOption] = {}
    annoy, ares = None, None
    if n_items <= cfg.annoy_max_items or cfg.search == "annoy":
        annoy, ares = tune_index(item_vectors, user_vectors, metric, cfg, seen, probe=probe)
        options["annoy"] = SearchOption(min(ares.recall_users, ares.recall_items), ares.target_reached,
                                        _per_query(lambda q, b: ann_topk(annoy, q, ares.search_k, item_vectors,
                                                                         metric, probe.k, b), timed, banned))
    ivf, ires = None, None
    if (cfg.ivf_min_items and n_items >= cfg.ivf_min_items) or cfg.search == "ivf" or annoy is None:
        ivf, ires = tune_ivf(item_vectors, metric, cfg.target_recall, probe, cfg.ivf_nlist, cfg.seed)
        options["ivf"] = SearchOption(min(ires.recall_users, ires.recall_items), ires.target_reached,
                                      _per_query(lambda q, b: ivf_topk(ivf, q, ires.nprobe, item_vectors, metric,
                                                                       probe.k, b), timed, banned))
    if n_items <= cfg.exact_max_items or cfg.search == "exact":
        norms = np.maximum(np.linalg.norm(item_vectors, axis=1), 1e-12) if metric == "angular" else None
        options["exact"] = SearchOption(1.0, True, _per_query(
            lambda q, b: search_top("exact", item_vectors, q[0], probe.k, banned_row(b, 0), metric == "angular",
                                    norms=norms), timed, banned))
    return SearchIndexes(annoy, ares, ivf, ires, options, choose_search(options, cfg))


def _per_query(topk, queries: np.ndarray, banned: list[np.ndarray] | None) -> float:
    """Mean microseconds of one-query ``topk(queries[i:i+1], banned[i:i+1])`` calls."""
    def one(i: int) -> object:
        return topk(queries[i:i + 1], None if banned is None else banned[i:i + 1])
    return time_per_query(one, np.arange(len(queries)))


__all__ = ["Probe", "SearchIndexes", "build_search"]
