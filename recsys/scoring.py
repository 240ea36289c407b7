"""Batched top-k over dot-product scores that never materialises users x items at once."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch


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
    device = device or torch.device("cpu")
    n_users = user_vecs.shape[0]
    k = min(k, item_vecs.shape[0] - 1)
    items_t = torch.as_tensor(np.ascontiguousarray(item_vecs, dtype=np.float32), device=device)
    never = None if ineligible is None else torch.as_tensor(np.flatnonzero(ineligible), device=device)
    ids = np.zeros((n_users, k), dtype=np.int64)
    scores = np.zeros((n_users, k), dtype=np.float32)
    for start in range(0, n_users, batch_size):
        stop = min(start + batch_size, n_users)
        u = torch.as_tensor(np.ascontiguousarray(user_vecs[start:stop], dtype=np.float32), device=device)
        s = u @ items_t.T  # (B, n_items + 1)
        mask_scores(s, exclude[start:stop] if exclude is not None else None)
        if never is not None:
            s[:, never] = -torch.inf
        top_s, top_i = torch.topk(s, k, dim=1)
        ids[start:stop] = top_i.cpu().numpy()
        scores[start:stop] = top_s.float().cpu().numpy()
    return ids, scores


def mask_scores(scores: torch.Tensor, exclude: sp.csr_matrix | None) -> torch.Tensor:
    """Set padding column 0 and the nonzeros of ``exclude`` (B, n_items + 1) to ``-inf`` in place."""
    scores[:, 0] = -torch.inf
    if exclude is not None and exclude.nnz:
        coo = exclude.tocoo()
        r = torch.as_tensor(coo.row, dtype=torch.long, device=scores.device)
        c = torch.as_tensor(coo.col, dtype=torch.long, device=scores.device)
        scores[r, c] = -torch.inf
    return scores
