"""Retrieval losses as pure functions over tensors, plus the streaming item-frequency estimator.

Shapes: ``N`` query rows (positions with a next item), ``D`` the vector width, ``V = n_items + 1``
catalogue rows (row 0 = padding), ``M`` sampled candidates.

Sampled softmax with logQ correction (Yi et al., RecSys 2019): the candidates of a batch are the
batch's own target items (+ optional uniform negatives), drawn far more often for popular items,
so each candidate's logit is corrected by ``- log E[#times it is in the candidate set]``. Accidental
hits (a candidate equal to the row's own target, other than its label column) are masked out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def similarity_logits(users: torch.Tensor, items: torch.Tensor, similarity: str, temperature: float) -> torch.Tensor:
    """(N, D) x (M, D) -> (N, M) logits ``sim / temperature``; cosine L2-normalises both sides."""
    if similarity == "cosine":
        users, items = F.normalize(users, dim=-1), F.normalize(items, dim=-1)
    return (users @ items.T).float() / temperature


def full_softmax_loss(
    users: torch.Tensor, items: torch.Tensor, targets: torch.Tensor,
    similarity: str = "dot", temperature: float = 1.0,
) -> torch.Tensor:
    """Summed cross-entropy over the whole catalogue.

    users (N, D), items (V, D) with row 0 = padding (never a candidate), targets (N,) in 1..V-1.
    """
    logits = similarity_logits(users, items, similarity, temperature)
    logits[:, 0] = float("-inf")
    return F.cross_entropy(logits, targets, reduction="sum")


def sampled_softmax_logits(
    users: torch.Tensor, cands: torch.Tensor, cand_ids: torch.Tensor, log_q: torch.Tensor | None,
    labels: torch.Tensor, similarity: str = "dot", temperature: float = 1.0,
) -> torch.Tensor:
    """logQ-corrected, accidental-hit-masked logits (N, M).

    users (N, D); cands (M, D) candidate vectors with ids cand_ids (M,); log_q (M,) log expected
    count of each candidate in the candidate set (None = no correction); labels (N,) the column of
    each row's positive. Column j != labels[i] with ``cand_ids[j] == cand_ids[labels[i]]`` is -inf.
    """
    logits = similarity_logits(users, cands, similarity, temperature)
    if log_q is not None:
        logits = logits - log_q.float()[None, :]
    target_ids = cand_ids[labels]  # (N,)
    hit = cand_ids[None, :] == target_ids[:, None]  # (N, M)
    hit[torch.arange(len(labels), device=labels.device), labels] = False
    return logits.masked_fill(hit, float("-inf"))


def sampled_softmax_loss(
    users: torch.Tensor, cands: torch.Tensor, cand_ids: torch.Tensor, log_q: torch.Tensor | None,
    labels: torch.Tensor, similarity: str = "dot", temperature: float = 1.0,
) -> torch.Tensor:
    """Summed cross-entropy of :func:`sampled_softmax_logits` against ``labels``."""
    logits = sampled_softmax_logits(users, cands, cand_ids, log_q, labels, similarity, temperature)
    return F.cross_entropy(logits, labels, reduction="sum")


def mixture_log_q(cand_ids: torch.Tensor, item_prob: torch.Tensor, n_in_batch: int, n_uniform: int,
                  n_items: int) -> torch.Tensor:
    """log of the expected count of each candidate: ``n_in_batch * p(item) + n_uniform / n_items``.

    cand_ids (M,); item_prob (V,) probability that one in-batch target is that item (sums to 1).
    """
    expected = n_in_batch * item_prob[cand_ids] + n_uniform / max(n_items, 1)
    return torch.log(expected.clamp_min(1e-12))


class StreamingFrequency:
    """Streaming item-frequency estimate (Yi et al. 2019, Algorithm 2), hashed into ``n_buckets``.

    For each item seen at step ``t``: ``B[h] <- (1 - alpha) B[h] + alpha (t - A[h])``, ``A[h] <- t``;
    ``1 / B[h]`` estimates how often per step the item occurs, i.e. its expected count in a batch.
    """

    def __init__(self, n_buckets: int, alpha: float = 0.05, device: torch.device | None = None) -> None:
        self.n_buckets, self.alpha = n_buckets, alpha
        self.last = torch.zeros(n_buckets, dtype=torch.float64, device=device)  # A
        self.gap = torch.full((n_buckets,), float(n_buckets), dtype=torch.float64, device=device)  # B, prior = rare

    def update(self, ids: torch.Tensor, step: int) -> None:
        """Record the items of batch ``step`` (1-based); repeats within a batch count once."""
        h = torch.unique(ids) % self.n_buckets
        seen = self.last[h] > 0
        new_gap = (1 - self.alpha) * self.gap[h] + self.alpha * (step - self.last[h])
        self.gap[h] = torch.where(seen, new_gap, self.gap[h])
        self.last[h] = float(step)

    def log_expected_count(self, ids: torch.Tensor) -> torch.Tensor:
        """(M,) log of the estimated per-batch count ``1 / B`` of ``ids``."""
        return -torch.log(self.gap[ids % self.n_buckets].clamp_min(1e-6)).float()

    def state(self) -> dict[str, torch.Tensor]:
        return {"last": self.last, "gap": self.gap}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.last.copy_(state["last"])
        self.gap.copy_(state["gap"])
