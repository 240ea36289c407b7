"""Build and tune the inverted-file index that :class:`serving.ivf.IvfIndex` searches.

k-means (Lloyd, numpy float32 BLAS) on a sample of the items gives ``nlist`` centroids; every item
is assigned to its nearest centroid, cells of more than 4x the mean size are split by k-means inside
them (a dense region must not make one probe scan thousands of rows), and the vectors are written
cell by cell. ``nprobe`` then grows through 1, 2, 3, 4, 6, 8, 12, ... until recall@10 against exact
top-10, measured on the same sampled user and item queries as the Annoy tuning and through the same
fetch path as serving, reaches the target.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from recsys.export.ann import SCORE_BYTES, banned_row, recall
from serving.ivf import IvfIndex
from serving.search import search_top


@dataclass(frozen=True)
class IvfResult:
    nlist: int
    nprobe: int
    recall_users: float
    recall_items: float
    target_reached: bool
    build_seconds: float
    kmeans_iterations: int
    largest_cell: int
    tried: list

    def to_json(self) -> dict:
        return asdict(self)


def default_nlist(n_items: int) -> int:
    """About 4 * sqrt(n) cells (4,000 for 1M items): cells of ~sqrt(n)/4 items."""
    return int(max(1, min(n_items, round(4 * np.sqrt(n_items)))))


def ivf_vectors(item_vectors: np.ndarray, metric: str) -> np.ndarray:
    """(n_items, d) float32 rows 1.. of ``item_vectors``, L2-normalised for "angular"."""
    x = np.asarray(item_vectors[1:], dtype=np.float32)
    if metric == "angular":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(x)


def assign(x: np.ndarray, centroids: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """(n,) index of the nearest centroid (squared L2) of every row of ``x``; rows go ``chunk`` at a time,
    fewer when that many rows' distances to every centroid would pass 256 MB (10M items in ~12,600 cells)."""
    out = np.empty(len(x), dtype=np.int64)
    half_sq = 0.5 * np.einsum("ij,ij->i", centroids, centroids)
    chunk = max(1, min(chunk, SCORE_BYTES // (4 * len(centroids))))
    for s in range(0, len(x), chunk):
        d = x[s:s + chunk] @ centroids.T  # argmin |x - c|^2 = argmin (|c|^2 / 2 - x.c): one temporary, in place
        np.subtract(half_sq[None, :], d, out=d)
        out[s:s + chunk] = np.argmin(d, axis=1)
    return out


def kmeans(x: np.ndarray, k: int, iterations: int = 10, seed: int = 0) -> np.ndarray:
    """(k, d) float32 centroids by Lloyd's algorithm from k distinct random rows; an empty cell is
    re-seeded with a random row, so every centroid ends up owning points of ``x`` where it can."""
    if not 1 <= k <= len(x):
        raise ValueError(f"k-means needs 1 <= k <= n points; got k={k}, n={len(x)}")
    rng = np.random.default_rng(seed)
    centroids = x[rng.choice(len(x), k, replace=False)].astype(np.float32, copy=True)
    for _ in range(iterations):
        labels = assign(x, centroids)
        counts = np.bincount(labels, minlength=k)
        sums = np.zeros((k, x.shape[1]), dtype=np.float64)
        _column_sums(sums, labels, x)
        full = counts > 0
        centroids[full] = (sums[full] / counts[full, None]).astype(np.float32)
        if not full.all():
            centroids[~full] = x[rng.choice(len(x), int((~full).sum()), replace=False)]
    return centroids


def _column_sums(sums: np.ndarray, labels: np.ndarray, x: np.ndarray) -> None:
    for j in range(x.shape[1]):  # bincount per column: far faster than np.add.at on big inputs
        sums[:, j] = np.bincount(labels, weights=x[:, j], minlength=sums.shape[0])


def split_large_cells(x: np.ndarray, centroids: np.ndarray, labels: np.ndarray, max_cell: int, seed: int = 0
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Cells of more than ``max_cell`` rows split by k-means inside them into cells of about ``max_cell / 2``;
    returns the centroids (new ones appended) and the labels. A query scans its ``nprobe`` nearest cells, so
    one oversized cell (a dense region of the catalogue) sets the slowest queries' cost."""
    counts = np.bincount(labels, minlength=len(centroids))
    big = np.flatnonzero(counts > max_cell)
    if not len(big):
        return centroids, labels
    order = np.argsort(labels, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    labels, extra, next_id = labels.copy(), [], len(centroids)
    for c in big.tolist():
        rows = order[starts[c]:starts[c + 1]]
        parts = int(np.ceil(2 * len(rows) / max_cell))
        sub = kmeans(x[rows], parts, iterations=5, seed=seed + c)
        sub_labels = assign(x[rows], sub)
        ids = np.array([c, *range(next_id, next_id + parts - 1)])
        labels[rows] = ids[sub_labels]
        centroids[c] = sub[0]
        extra.append(sub[1:])
        next_id += parts - 1
    return np.vstack([centroids, *extra]), labels


def build_ivf(item_vectors: np.ndarray, metric: str, nlist: int, nprobe: int = 1, iterations: int = 10,
              train_per_cell: int = 32, seed: int = 0, max_cell_factor: float = 4.0) -> IvfIndex:
    """An :class:`IvfIndex` over items 1..n: k-means on up to ``train_per_cell * nlist`` sampled
    items, then every item assigned to its nearest centroid; cells of more than ``max_cell_factor`` times
    the mean size are split (:func:`split_large_cells`; 0 = never), so ``nlist`` may grow."""
    x = ivf_vectors(item_vectors, metric)
    nlist = max(1, min(nlist, len(x)))
    rng = np.random.default_rng(seed)
    train = x if len(x) <= train_per_cell * nlist else x[np.sort(rng.choice(len(x), train_per_cell * nlist,
                                                                            replace=False))]
    centroids = kmeans(train, nlist, iterations, seed)
    labels = assign(x, centroids)
    if max_cell_factor:
        cap = max(2, int(max_cell_factor * len(x) / nlist))
        for round_ in range(3):  # k-means inside a cell does not promise even parts: split what is still over
            centroids, labels = split_large_cells(x, centroids, labels, cap, seed + round_)
        nlist = len(centroids)
    order = np.argsort(labels, kind="stable")
    offsets = np.zeros(nlist + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(np.bincount(labels, minlength=nlist))
    return IvfIndex(centroids, offsets, (order + 1).astype(np.int32), np.ascontiguousarray(x[order]), nprobe)


def ivf_topk(index: IvfIndex, queries: np.ndarray, nprobe: int, item_vectors: np.ndarray, metric: str, k: int,
             banned: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """Best item indices per query as serving returns them from the IVF index
    (:func:`serving.search.search_top`: more cells while too few survive ``banned[i]``, exact re-scoring)."""
    return [search_top("ivf", item_vectors, q, k, banned_row(banned, i), metric == "angular", ivf=index, nprobe=nprobe)
            for i, q in enumerate(queries)]


def nprobe_steps(nlist: int) -> list[int]:
    """The ``nprobe`` values tuning tries, in order: 1, 2, 3, 4, 6, 8, 12, 16, 24, ... (powers of two and the
    midpoints between them, so the value chosen scans at most ~1.5x the cells the target needs), then nlist."""
    steps, p = [], 1
    while p < nlist:
        steps += [p] if p < 2 else [p, p + p // 2]
        p *= 2
    return sorted({s for s in steps if s < nlist} | {nlist})


def tune_ivf(item_vectors: np.ndarray, metric: str, target: float, probe, nlist: int | None = None,
             seed: int = 0) -> tuple[IvfIndex, IvfResult]:
    """Build the index, then the smallest ``nprobe`` of :func:`nprobe_steps` whose recall reaches ``target``
    on ``probe`` (:class:`recsys.export.ann.Probe`); the index returned carries that ``nprobe``."""
    t0 = time.perf_counter()
    n_items = item_vectors.shape[0] - 1
    iterations = 10
    index = build_ivf(item_vectors, metric, nlist or default_nlist(n_items), iterations=iterations, seed=seed)
    tried, best = [], None
    for nprobe in nprobe_steps(index.nlist):
        ru = recall(probe.u_exact, ivf_topk(index, probe.uq, nprobe, item_vectors, metric, probe.k, probe.u_banned))
        ri = recall(probe.i_exact, ivf_topk(index, probe.iq, nprobe, item_vectors, metric, probe.k, probe.i_banned))
        tried.append({"nprobe": nprobe, "recall_users": ru, "recall_items": ri})
        if best is None or min(ru, ri) > min(best[1], best[2]):
            best = (nprobe, ru, ri)
        if min(ru, ri) >= target:
            break
    nprobe, ru, ri = best
    index.nprobe = nprobe
    sizes = np.diff(index.offsets)
    return index, IvfResult(index.nlist, nprobe, ru, ri, min(ru, ri) >= target, time.perf_counter() - t0, iterations,
                            int(sizes.max()), tried)


__all__ = ["IvfResult", "build_ivf", "default_nlist", "ivf_topk", "kmeans", "nprobe_steps", "split_large_cells",
           "tune_ivf"]
