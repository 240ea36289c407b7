"""Inverted-file (IVF) candidate search over a bundle's items: numpy only.

Items are grouped into ``nlist`` k-means cells at export (:mod:`recsys.export.ivf`); each cell's
vectors are stored contiguously (``ivf_vectors.npy``, cell order) with their item indices
(``ivf_items.npy``) and the cell boundaries (``ivf_offsets.npy``). A query scores the ``nlist``
centroids, scans the ``nprobe`` best cells exactly and returns the best items found there. The cost
is one (nlist, d) product plus about ``nprobe * n / nlist`` item scores, against ``n`` for exact
scoring; the recall that ``nprobe`` buys is measured at export and written to the manifest.

For the "angular" metric the stored vectors and centroids are L2-normalised, so the scan ranks by
cosine; for "dot" they are raw and cells are probed by centroid inner product.
"""

from __future__ import annotations

import numpy as np


class IvfIndex:
    """Cells of item vectors with their centroids; ``search`` returns candidate item indices.

    Parameters
    ----------
    centroids : (nlist, d) float32.
    offsets : (nlist + 1,) int64, cell c holds rows ``offsets[c]:offsets[c + 1]``.
    items : (n,) int32/int64 item index (1-based) of each stored row.
    vectors : (n, d) float32, rows in cell order.
    nprobe : cells scanned per query (the tuned value from the manifest).
    """

    def __init__(self, centroids: np.ndarray, offsets: np.ndarray, items: np.ndarray, vectors: np.ndarray,
                 nprobe: int) -> None:
        nlist, n = centroids.shape[0], items.shape[0]
        if centroids.ndim != 2 or vectors.shape != (n, centroids.shape[1]):
            raise ValueError(f"IVF arrays disagree: centroids {centroids.shape}, vectors {vectors.shape}, items ({n},)")
        if offsets.shape != (nlist + 1,) or offsets[0] != 0 or offsets[-1] != n or np.any(np.diff(offsets) < 0):
            raise ValueError(f"IVF offsets must be (nlist + 1,) = ({nlist + 1},) non-decreasing from 0 to {n}")
        if not 1 <= nprobe <= nlist:
            raise ValueError(f"nprobe must be in 1..nlist={nlist}; got {nprobe}")
        self.centroids, self.offsets, self.items, self.vectors = centroids, offsets, items, vectors
        self.nprobe = int(nprobe)
        self.nlist = nlist
        self._starts, self._ends = offsets[:-1].tolist(), offsets[1:].tolist()

    def search(self, query: np.ndarray, n: int, nprobe: int | None = None) -> np.ndarray:
        """Up to ``n`` item indices, best first, from the ``nprobe`` cells nearest ``query``."""
        nprobe = min(nprobe or self.nprobe, self.nlist)
        cell_scores = self.centroids @ query
        cells = np.argpartition(-cell_scores, nprobe - 1)[:nprobe] if nprobe < self.nlist else np.arange(self.nlist)
        spans = [(self._starts[c], self._ends[c]) for c in cells.tolist()]
        # one product per cell over its contiguous rows: no gather copy of the candidate vectors
        scores = np.concatenate([self.vectors[a:b] @ query for a, b in spans])
        ids = np.concatenate([self.items[a:b] for a, b in spans])
        if len(ids) > n:
            top = np.argpartition(-scores, n - 1)[:n]
            ids, scores = ids[top], scores[top]
        return ids[np.argsort(-scores, kind="stable")].astype(np.int64)


__all__ = ["IvfIndex"]
