"""Build the Annoy item index and tune it until its top-10 matches exact scoring.

Fidelity is measured, not assumed: recall@10 of Annoy against exact top-10 over a sample of
user vectors (``recommend``) and of item vectors (``similar_items``, the item itself left out).
``n_trees`` doubles and ``search_k`` grows until the lower of the two recalls reaches the
target, within a budget of trees, search_k and build seconds; the best setting found is kept
(and flagged) when the budget runs out first.

On large catalogues an inverted-file index (:mod:`recsys.export.ivf`) is tuned on the same
queries. Then the bundle's candidate search is chosen by measurement (``choose_search``): among
"exact" (every item scored; only up to ``exact_max_items``), "annoy" and "ivf", the fastest per
query that reached the target recall, or the best recall when none did.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp
from annoy import AnnoyIndex

from recsys.scoring import topk_batched
from serving.format import SEARCH_K_FOR
from serving.search import search_top

K = 10
SCORE_BYTES = 2**28  # a batch of query x item scores is kept near this size (256 MB)


@dataclass(frozen=True)
class AnnConfig:
    """Tuning budget. ``n_trees=None`` starts from 10 and doubles up to ``max_trees``."""

    target_recall: float = 0.98  # recall@10 against exact scoring that a search must reach, in (0, 1]
    n_trees: int | None = None  # Annoy trees; None: 10, doubled until the target or max_trees
    max_trees: int = 160  # the most trees tried (index size and build time grow with them)
    search_k_factors: tuple[int, ...] = (1, 2, 4, 8, 16)  # search_k tried per tree count: factor x trees x 10
    max_build_seconds: float = 600.0  # stop tuning once this much time went to building and measuring
    sample: int = 500  # users and items whose exact top-10 the recall is measured against
    seed: int = 0  # the sampled queries and Annoy's build
    n_jobs: int = -1  # Annoy build threads; -1 = every core
    search: str = "auto"  # "auto" | "annoy" | "exact" | "ivf": the candidate search serving uses
    exact_max_items: int = 200_000  # "auto" may pick exact scoring only up to this catalogue size
    ivf_min_items: int = 50_000  # build the IVF index from this catalogue size on (0 = never)
    ivf_nlist: int | None = None  # None: about 4 * sqrt(n_items) cells
    # Annoy is tuned and stored only up to this catalogue size (unless search = "annoy"): its index grows with
    # items x trees (a note: the 100M-event pipeline's export of 1M items x 128 dims passed 12 GB RSS while it
    # was tuned) and at 1M items it was the slowest index (bench_serving.md); above it the bundle serves from IVF
    annoy_max_items: int = 500_000


@dataclass(frozen=True)
class AnnResult:
    n_trees: int
    search_k: int
    recall_users: float
    recall_items: float
    target_reached: bool
    build_seconds: float
    tried: list

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SearchOption:
    """One candidate search as measured at export: recall@10 (min of users and items), whether it
    reached the target, and mean wall microseconds per user query through the serving fetch path."""

    recall: float
    reached: bool
    us_per_query: float


def choose_search(options: dict[str, SearchOption], cfg: AnnConfig) -> str:
    """The serving candidate search (see the module docstring); ``cfg.search`` other than "auto" wins."""
    if cfg.search != "auto":
        if cfg.search not in options:
            raise ValueError(f"AnnConfig.search={cfg.search!r} but that index was not built (have {sorted(options)})")
        return cfg.search
    reached = {m: o for m, o in options.items() if o.reached}
    if reached:
        return min(reached, key=lambda m: reached[m].us_per_query)
    return max(options, key=lambda m: options[m].recall)


def time_per_query(fn, queries: np.ndarray) -> float:
    """Mean wall microseconds of ``fn(q)`` over ``queries`` (after one untimed warm-up call)."""
    if not len(queries):
        return 0.0
    fn(queries[0])
    t0 = time.perf_counter()
    for q in queries:
        fn(q)
    return 1e6 * (time.perf_counter() - t0) / len(queries)


def build_index(item_vectors: np.ndarray, metric: str, n_trees: int, seed: int = 0, n_jobs: int = -1) -> AnnoyIndex:
    """Annoy index over rows 1..n of ``item_vectors`` (n_items + 1, d); Annoy id j = item index j + 1."""
    index = AnnoyIndex(item_vectors.shape[1], metric)
    index.set_seed(seed)
    for j, v in enumerate(np.asarray(item_vectors[1:], dtype=np.float32)):
        index.add_item(j, v)
    index.build(n_trees, n_jobs=n_jobs)
    return index


def exact_topk(queries: np.ndarray, item_vectors: np.ndarray, metric: str, k: int = K,
               banned: list[np.ndarray] | None = None, batch: int = 256) -> np.ndarray:
    """(n, k) exact best item indices (1-based) per query (:func:`recsys.scoring.topk_batched`, over the
    L2-normalised items under ``"angular"``); ``banned[i]`` items never returned for query i. At most
    ``batch`` queries are scored at once, fewer on large catalogues so a batch's scores stay near 256 MB."""
    items = np.asarray(item_vectors, dtype=np.float32)
    batch = max(1, min(batch, SCORE_BYTES // (4 * items.shape[0])))
    if metric == "angular":
        items = items / np.maximum(np.linalg.norm(items, axis=1, keepdims=True), 1e-12)
    exclude = None
    if banned is not None:
        rows = [np.asarray(b, dtype=np.int64) for b in banned]
        indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
        indices = np.concatenate(rows) if indptr[-1] else np.zeros(0, np.int64)
        exclude = sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr),
                                shape=(len(queries), items.shape[0]))
    return topk_batched(np.asarray(queries, dtype=np.float32), items, k, exclude, batch_size=batch)[0]


def ann_topk(index: AnnoyIndex, queries: np.ndarray, search_k: int, item_vectors: np.ndarray, metric: str,
             k: int = K, banned: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """Best item indices (1-based) per query as serving returns them from Annoy
    (:func:`serving.search.search_top`: over-fetch past ``banned[i]``, exact re-scoring)."""
    return [search_top("annoy", item_vectors, q, k, banned_row(banned, i), metric == "angular", annoy=index,
                       search_k=search_k) for i, q in enumerate(queries)]


def banned_row(banned: list[np.ndarray] | None, i: int) -> np.ndarray:
    """(n,) int64 item indices banned for query ``i`` (none when ``banned`` is None)."""
    return np.asarray(banned[i], dtype=np.int64) if banned is not None else np.zeros(0, np.int64)


def recall(exact: np.ndarray, approx: list[np.ndarray]) -> float:
    """Mean |exact ∩ approx| / k over queries."""
    if not len(exact):
        return 1.0
    hits = [len(np.intersect1d(e, a)) for e, a in zip(exact, approx, strict=True)]
    return float(np.sum(hits) / exact.size)


def _sample(vectors: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``n`` nonzero rows (1..) of ``vectors``: (rows (m,), vectors (m, d))."""
    rows = np.arange(1, vectors.shape[0])
    rows = rows[np.any(np.asarray(vectors[1:]) != 0, axis=1)]
    rows = np.sort(rng.choice(rows, size=min(n, len(rows)), replace=False)) if len(rows) else rows
    return rows, np.asarray(vectors[rows], dtype=np.float32)


@dataclass
class Probe:
    """Sampled queries with their exact top-k: user vectors with their seen items banned, item
    vectors with the item itself banned. Every index is tuned and timed on the same probe."""

    k: int
    uq: np.ndarray
    u_banned: list[np.ndarray] | None
    u_exact: np.ndarray
    iq: np.ndarray
    i_banned: list[np.ndarray]
    i_exact: np.ndarray


def sample_queries(item_vectors: np.ndarray, user_vectors: np.ndarray, metric: str, cfg: AnnConfig,
                   seen: sp.csr_matrix | None = None) -> Probe:
    """Up to ``cfg.sample`` user and item queries; users keep at least k eligible items."""
    rng = np.random.default_rng(cfg.seed)
    n_items = item_vectors.shape[0] - 1
    k = min(K, max(n_items - 1, 1))
    urows, uq = _sample(user_vectors, cfg.sample, rng)
    irows, iq = _sample(item_vectors, cfg.sample, rng)
    if seen is not None:  # keep k eligible items per user
        ok = np.diff(seen.indptr)[urows] <= n_items - k
        urows, uq = urows[ok], uq[ok]
    u_banned = [seen.indices[seen.indptr[u]:seen.indptr[u + 1]] for u in urows] if seen is not None else None
    i_banned = [np.array([r]) for r in irows]
    return Probe(k, uq, u_banned, exact_topk(uq, item_vectors, metric, k, banned=u_banned), iq, i_banned,
                 exact_topk(iq, item_vectors, metric, k, banned=i_banned))


def tune_index(item_vectors: np.ndarray, user_vectors: np.ndarray, metric: str, cfg: AnnConfig,
               seen: sp.csr_matrix | None = None, probe: Probe | None = None) -> tuple[AnnoyIndex, AnnResult]:
    """Build and tune the index; returns the chosen (built) index and what was measured.

    User queries exclude each user's ``seen`` items (n_users + 1, n_items + 1) exactly as
    ``recommend`` does, so the recorded recall is the recall serving delivers.
    """
    p = probe or sample_queries(item_vectors, user_vectors, metric, cfg, seen)
    trees = [cfg.n_trees] if cfg.n_trees else [t for t in (10, 20, 40, 80, 160, 320, 640) if t <= cfg.max_trees]
    t0, best, tried = time.perf_counter(), None, []
    for n_trees in trees:
        index = build_index(item_vectors, metric, n_trees, cfg.seed, cfg.n_jobs)
        for f in cfg.search_k_factors:
            search_k = n_trees * SEARCH_K_FOR * f
            ru = recall(p.u_exact, ann_topk(index, p.uq, search_k, item_vectors, metric, p.k, banned=p.u_banned))
            ri = recall(p.i_exact, ann_topk(index, p.iq, search_k, item_vectors, metric, p.k, banned=p.i_banned))
            tried.append({"n_trees": n_trees, "search_k": search_k, "recall_users": ru, "recall_items": ri})
            if best is None or min(ru, ri) > min(best[3], best[4]):
                best = (index, n_trees, search_k, ru, ri)
            if min(ru, ri) >= cfg.target_recall:
                break
        if min(best[3], best[4]) >= cfg.target_recall or time.perf_counter() - t0 > cfg.max_build_seconds:
            break
    index, n_trees, search_k, ru, ri = best
    seconds = time.perf_counter() - t0
    return index, AnnResult(n_trees, search_k, ru, ri, min(ru, ri) >= cfg.target_recall, seconds, tried)
