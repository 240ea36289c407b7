"""Batched full-ranking evaluation: the same code for validation during training and for test.

Scores are dot products of user and item vectors, computed one batch of users at a time
with torch (CPU or GPU), so a users x items matrix is never materialised. For each
(user, target) pair the rank is ``1 + #eligible items scoring strictly higher + #other
eligible items scoring equal`` (pessimistic ties, see :mod:`recsys.evaluation.metrics`),
counted in the batch without sorting. Eligible = every real item except, when
``protocol.exclude_history``, the user's history items.

A target that also occurs in the history is masked like every other history item, so it is a
miss at every K (rank ``inf``), as in the S3-Rec / ICLRec protocol. Leaving only that item
unmasked would leak which history item is the target. Such targets are counted in
``n_masked_targets``; use ``exclude_history=False`` to evaluate repeat consumption.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recsys.evaluation import metrics as M
from recsys.models.base import Model
from recsys.prepare.sequences import Sequences
from recsys.scoring import masked_scores


@dataclass(frozen=True)
class EvalProtocol:
    """How a result was obtained; travels with the metrics (``as_dict`` for MLflow params).

    Attributes
    ----------
    split : split kind that produced the targets, e.g. ``"leave_last_out"`` or ``"time_cut"``.
    ks : cut-offs for HR / recall / NDCG / coverage / popularity.
    exclude_history : mask each user's history items from the ranking.
    mrr_cutoff : MRR counts 0 beyond this rank; None = full-rank MRR.
    fingerprint : identifies the data / split (e.g. a hash written by the data step).
    """

    split: str = "leave_last_out"
    ks: tuple[int, ...] = (10, 20)
    exclude_history: bool = True
    mrr_cutoff: int | None = None
    fingerprint: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.ks or any(int(k) < 1 for k in self.ks):
            raise ValueError(f"EvalProtocol.ks must be positive cut-offs such as (10, 20); got {self.ks!r}")
        if self.mrr_cutoff is not None and self.mrr_cutoff < 1:
            raise ValueError(f"EvalProtocol.mrr_cutoff must be >= 1 or None; got {self.mrr_cutoff}")

    def as_dict(self) -> dict[str, str | int | bool]:
        """Flat ``eval_*`` parameters for experiment tracking."""
        out: dict[str, str | int | bool] = {
            "eval_split": self.split,
            "eval_ks": ",".join(str(k) for k in self.ks),
            "eval_exclude_history": self.exclude_history,
            "eval_mrr_cutoff": "none" if self.mrr_cutoff is None else self.mrr_cutoff,
            "eval_fingerprint": self.fingerprint,
        }
        out.update({f"eval_{k}": v for k, v in self.extra.items()})
        return out


def evaluate(
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    histories: Sequences,
    targets: Sequences,
    protocol: EvalProtocol | None = None,
    device: torch.device | None = None,
    item_popularity: np.ndarray | None = None,
    batch_size: int = 512,
    ineligible: np.ndarray | None = None,
) -> dict[str, float]:
    """Full-ranking metrics of dot-product scores.

    Parameters
    ----------
    user_vectors : (histories.n_rows, d) float; row r scores user r.
    item_vectors : (n_items + 1, d) float; row 0 is padding and never ranked.
    histories : per-user items to exclude (and the default popularity counts).
    targets : per-user held-out items, same rows as ``histories``; rows without one are skipped.
    protocol : cut-offs and exclusion (default :class:`EvalProtocol`).
    device : torch device for the products (default CPU); scoring is fp32 for exact ranks.
    item_popularity : (n_items + 1,) popularity per item; default = item counts in ``histories``.
    batch_size : users scored per batch; memory is about batch_size x n_items floats.
    ineligible : optional (n_items + 1,) bool: items never ranked for anyone (e.g. items a served bundle
        does not know); a target among them is a miss, counted in ``n_masked_targets``.

    Returns
    -------
    dict with ``hr_K``, ``recall_K``, ``ndcg_K``, ``coverage_K``, ``popularity_K`` for every K,
    ``mrr``, each per-user metric's standard error over users as ``<metric>_se`` (``ndcg_10_se``, ``mrr_se``:
    :func:`recsys.evaluation.metrics.standard_error`), ``n_users`` (evaluated), ``n_skipped`` (real users
    without a target) and
    ``n_masked_targets`` (targets that were history items, hence masked misses).
    """
    protocol = protocol or EvalProtocol()
    _check_inputs(user_vectors, item_vectors, histories, targets)
    n_items = item_vectors.shape[0] - 1
    tgt = targets.to_csr()  # binary: a target item listed twice for a user counts once
    exclude = histories.to_csr() if protocol.exclude_history else None
    n_t = np.diff(tgt.indptr)
    n_t[0] = 0  # row 0 is the padding user
    users = np.flatnonzero(n_t > 0)
    ranks, lists = _rank_all(user_vectors, item_vectors, users, tgt, exclude,
                             max(protocol.ks), device or torch.device("cpu"), batch_size, ineligible)
    tr = M.TargetRanks(ranks, np.concatenate([[0], np.cumsum(n_t[users])]).astype(np.int64))
    pop = item_popularity if item_popularity is not None else np.bincount(histories.items, minlength=n_items + 1)
    out: dict[str, float] = {}
    for k in protocol.ks:
        for name, per_user in (("hr", M.hit_rate_per_user), ("recall", M.recall_per_user),
                               ("ndcg", M.ndcg_per_user)):
            values = per_user(tr, k)
            out[f"{name}_{k}"] = float(values.mean()) if len(values) else float("nan")
            out[f"{name}_{k}_se"] = M.standard_error(values)
        out[f"coverage_{k}"] = M.coverage(lists, n_items, k)
        out[f"popularity_{k}"] = M.mean_popularity(lists, pop, k)
    rr = M.mrr_per_user(tr, protocol.mrr_cutoff)
    out["mrr"] = float(rr.mean()) if len(rr) else float("nan")
    out["mrr_se"] = M.standard_error(rr)
    out["n_users"] = float(len(users))
    out["n_skipped"] = float(targets.n_rows - 1 - len(users))
    out["n_masked_targets"] = float(np.isinf(ranks).sum())
    return out


def evaluate_model(
    model: Model,
    histories: Sequences,
    targets: Sequences,
    protocol: EvalProtocol | None = None,
    **kwargs: Any,
) -> dict[str, float]:
    """:func:`evaluate` with ``model.encode_users(histories)`` and ``model.item_vectors()``; the model's
    :meth:`~recsys.models.base.Model.ineligible_items` are never ranked (besides any ``ineligible`` given)."""
    own = model.ineligible_items()
    if own is not None:
        given = kwargs.get("ineligible")
        kwargs["ineligible"] = own if given is None else (own | np.asarray(given, dtype=bool))
    return evaluate(model.encode_users(histories), model.item_vectors(), histories, targets, protocol, **kwargs)


def make_validator(
    valid_history: Sequences,
    valid_targets: Sequences,
    protocol: EvalProtocol | None = None,
    prefix: str = "val_",
    **kwargs: Any,
) -> Callable[[Model], dict[str, float]]:
    """A :data:`recsys.models.base.Validator`: ``model -> {prefix + metric: value}``."""

    def validate(model: Model) -> dict[str, float]:
        res = evaluate_model(model, valid_history, valid_targets, protocol, **kwargs)
        return {prefix + k: v for k, v in res.items()}

    return validate


def _check_inputs(user_vectors: np.ndarray, item_vectors: np.ndarray, hist: Sequences, tgt: Sequences) -> None:
    if user_vectors.ndim != 2 or item_vectors.ndim != 2 or user_vectors.shape[1] != item_vectors.shape[1]:
        raise ValueError(
            f"user vectors {user_vectors.shape} and item vectors {item_vectors.shape} must be 2-D with the same width"
        )
    if not (user_vectors.shape[0] == hist.n_rows == tgt.n_rows):
        raise ValueError(
            f"rows differ: user vectors {user_vectors.shape[0]}, histories {hist.n_rows}, targets {tgt.n_rows}; "
            "pass histories and targets of the same split (row = user index)"
        )
    if item_vectors.shape[0] != tgt.n_items + 1 or hist.n_items != tgt.n_items:
        raise ValueError(
            f"item vectors have {item_vectors.shape[0]} rows but histories/targets have n_items "
            f"{hist.n_items}/{tgt.n_items}; item vectors need n_items + 1 rows (row 0 = padding)"
        )
    for name, arr in (("user", user_vectors), ("item", item_vectors)):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} vectors contain NaN/inf; the model diverged (lower the learning rate)")


def _rank_all(
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    users: np.ndarray,
    tgt: sp.csr_matrix,
    exclude: sp.csr_matrix | None,
    k: int,
    device: torch.device,
    batch_size: int,
    ineligible: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Ranks of every target of ``users`` (in user order) and their top-``k`` lists (-1 = empty)."""
    k = min(k, item_vectors.shape[0] - 1)
    ranks, lists = [], np.full((len(users), k), -1, dtype=np.int64)
    for start, stop, s in masked_scores(user_vectors, item_vectors, exclude, device, batch_size, ineligible,
                                        rows=users):
        ranks.append(_batch_ranks(s, tgt[users[start:stop]], max(s.shape[0], 1)))
        top_s, top_i = torch.topk(s, k, dim=1)
        top_i[torch.isneginf(top_s)] = -1  # fewer than k eligible items
        lists[start:stop] = top_i.cpu().numpy()
    return (np.concatenate(ranks) if ranks else np.zeros(0)), lists


def _batch_ranks(s: torch.Tensor, tgt: sp.csr_matrix, chunk: int) -> np.ndarray:
    """Pessimistic 1-based rank of each target (CSR order) within the masked scores ``s`` (B, n).

    A masked target (score ``-inf``) gets rank ``inf``: it is not eligible, so never a hit,
    whatever K (a finite rank would count as a hit once K exceeds the catalogue).
    """
    coo_rows = np.repeat(np.arange(tgt.shape[0]), np.diff(tgt.indptr))
    r = torch.as_tensor(coo_rows, dtype=torch.long, device=s.device)
    c = torch.as_tensor(tgt.indices.astype(np.int64), device=s.device)
    out = np.empty(len(coo_rows), dtype=np.float64)
    one_each = len(coo_rows) == s.shape[0]  # one target per row (leave-last-out): no row copies needed
    for a in range(0, len(coo_rows), chunk):  # (P, n) comparisons, P <= chunk pairs at a time
        rr, cc = r[a : a + chunk], c[a : a + chunk]
        row_s = s[a : a + chunk] if one_each else s[rr]  # (P, n)
        t = row_s.gather(1, cc[:, None])  # (P, 1) target score
        # pessimistic: every other eligible item scoring >= the target is ahead of it
        # counts the target itself, so this is already 1-based; an int32 sum (n < 2**31) is faster than int64
        rank = (row_s >= t).sum(1, dtype=torch.int32).double()
        out[a : a + chunk] = torch.where(torch.isneginf(t[:, 0]), torch.inf, rank).cpu().numpy()
    return out
