"""Exact scoring of users against every item, in batches that never materialise users x items at once: the one
exact top-k of the library (serving keeps its own numpy one, :mod:`serving.search`: it imports nothing from
``recsys``)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
import torch

#: the most bytes of float32 scores one batch of :func:`masked_scores` holds (users per batch are capped to fit)
SCORE_BYTES = 2**30


def topk_batched(
    user_vecs: np.ndarray,
    item_vecs: np.ndarray,
    k: int,
    exclude: sp.csr_matrix | None = None,
    device: torch.device | None = None,
    batch_size: int = 1024,
    ineligible: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` items per user by dot product, with padding item 0 and ``exclude`` masked.

    Parameters
    ----------
    user_vecs : (n_users, d) float.
    item_vecs : (n_items + 1, d) float; row 0 is the padding item and never returned.
    k : number of items per user; capped at the number of real items.
    exclude : optional (n_users, n_items + 1) sparse; nonzero entries are never returned.
    device : torch device for the matrix products (default CPU).
    batch_size : users scored per batch.
    ineligible : optional (n_items + 1,) bool: items never returned to anyone.

    Returns
    -------
    ids : (n_users, k) int64 item indices, best first.
    scores : (n_users, k) float32 scores; ``-inf`` where fewer than ``k`` items were eligible.
    """
    k = min(k, item_vecs.shape[0] - 1)
    ids = np.zeros((user_vecs.shape[0], k), dtype=np.int64)
    scores = np.zeros((user_vecs.shape[0], k), dtype=np.float32)
    for start, stop, s in masked_scores(user_vecs, item_vecs, exclude, device, batch_size, ineligible):
        top_s, top_i = torch.topk(s, k, dim=1)
        ids[start:stop] = top_i.cpu().numpy()
        scores[start:stop] = top_s.float().cpu().numpy()
    return ids, scores


def masked_scores(
    user_vecs: np.ndarray,
    item_vecs: np.ndarray,
    exclude: sp.csr_matrix | None = None,
    device: torch.device | None = None,
    batch_size: int = 1024,
    ineligible: np.ndarray | None = None,
    rows: np.ndarray | None = None,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Dot-product scores of ``batch_size`` users at a time against every item, masked: the one exact scoring
    of the library (:func:`topk_batched`, the evaluator's ranks and export's exact top-k all use it).

    Parameters
    ----------
    user_vecs, item_vecs, exclude, device, batch_size, ineligible : as in :func:`topk_batched`; ``batch_size`` is
        lowered where ``batch_size`` x items scores would pass ``SCORE_BYTES`` (1 GiB; 268 users at 1M items).
    rows : optional user rows to score, in this order (default: all of ``user_vecs``); ``exclude`` is
        indexed by the same rows.

    Yields
    ------
    (start, stop, scores) : positions ``start:stop`` of the scored rows and their (B, n_items + 1) scores,
        ``-inf`` at the padding column 0, at ``exclude``'s nonzeros and at ``ineligible`` items.
    """
    device = device or torch.device("cpu")
    rows = np.arange(user_vecs.shape[0]) if rows is None else np.asarray(rows)
    # large catalogues: fewer users at once, so a batch's scores (and the evaluator's comparisons) stay bounded
    batch_size = max(1, min(batch_size, SCORE_BYTES // (4 * item_vecs.shape[0])))
    items_t = torch.as_tensor(np.ascontiguousarray(item_vecs, dtype=np.float32), device=device)
    never = None if ineligible is None else torch.as_tensor(np.flatnonzero(ineligible), device=device)
    for start in range(0, len(rows), batch_size):
        batch = rows[start:start + batch_size]
        u = torch.as_tensor(np.ascontiguousarray(user_vecs[batch], dtype=np.float32), device=device)
        s = u @ items_t.T  # (B, n_items + 1)
        mask_scores(s, exclude[batch] if exclude is not None else None)
        if never is not None:
            s[:, never] = -torch.inf
        yield start, start + len(batch), s


def mask_scores(scores: torch.Tensor, exclude: sp.csr_matrix | None) -> torch.Tensor:
    """Set padding column 0 and the nonzeros of ``exclude`` (B, n_items + 1) to ``-inf`` in place."""
    scores[:, 0] = -torch.inf
    if exclude is not None and exclude.nnz:
        coo = exclude.tocoo()
        r = torch.as_tensor(coo.row, dtype=torch.long, device=scores.device)
        c = torch.as_tensor(coo.col, dtype=torch.long, device=scores.device)
        scores[r, c] = -torch.inf
    return scores
