"""How a batch's gradient rows move the embedding rows they touch (item2vec's hand-written SGD).

A batch of skip-gram pairs touches a popular item's row many times. Plain batched SGD *sums* those
gradients, so the row's step grows with its count in the batch, where word2vec (one pair at a time)
takes many small steps that each shrink the next; the sum overshoots and popular rows diverge. The
rules here bound every row's step whatever its count:

* ``"adagrad"``: row-wise Adagrad (as PyTorch-BigGraph trains its embeddings): each row keeps one
  accumulator ``G += mean_d(g_d ** 2)`` of its *summed* batch gradient ``g`` and moves by
  ``-lr * g / sqrt(G)``. Since ``G >= |g|**2 / D``, no step is longer than ``lr * sqrt(D)``, for any
  number of repeats; rows that keep receiving large gradients slow down on their own. With
  :class:`RowState` ``decay`` b < 1 the accumulator is ``G = b * G + mean_d(g_d ** 2)`` at each of the
  row's updates: still ``G >= |g|**2 / D`` (the same bound), but it forgets old gradients, so a row
  updated thousands of times (a popular item on a large log) keeps moving (RMSprop-like). With a
  :class:`RowState` clock (``per_step``) the accumulator decays by ``b`` at every training *step*, the
  row's or not: ``G = b ** (t - t_last) * G + mean_d(g_d ** 2)`` at its update at step ``t``, which is what a
  dense RMSprop computes for a row whose gradient is 0 between its updates; a rarely drawn row then
  forgets at the pace of the clock rather than of its own draws (the same bound).
* ``"mean"``: count-normalised (``nn.Embedding(scale_grad_by_freq=True)``, Spark's SPARK-24666 fix):
  a row moves by ``lr`` times the mean of its gradients in the batch, never their sum.
* ``"capped"``: the earlier rule, kept to measure against: a row repeated ``k > cap`` times moves by
  ``cap / k`` of its summed gradient, so its step still grows ``cap``-fold (0 = the plain sum).

Updates stay float32 on every device (no autocast: bf16 rounding would swallow steps much smaller than
the weights). :func:`row_coefficients` gives the per-occurrence factor that is folded into the score
gradients before they meet the ``(., D)`` vectors; :func:`apply_rows` adds the resulting deltas, and
:class:`RowState` holds what the Adagrad rule keeps between steps.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Literal

import torch

UpdateRule = Literal["adagrad", "mean", "capped"]
UPDATE_RULES = ("adagrad", "mean", "capped")
#: Adagrad's default floor under the accumulator's square root (a row whose gradients are all 0 stays put)
ADAGRAD_EPS = 1e-10


def row_coefficients(rule: UpdateRule, rows: torch.Tensor, n_rows: int, lr: float, cap: int, dtype: torch.dtype,
                     per_row: int = 1) -> torch.Tensor:
    """(P,) factor of each gradient row before :func:`apply_rows`.

    Parameters
    ----------
    rule : the update rule (see the module docstring).
    rows : (P,) int64 row of each gradient.
    n_rows : rows of the weight matrix.
    lr : learning rate of this step.
    cap : repeats a row may sum before it is damped (``"capped"`` only; 0 = plain sum).
    dtype : dtype of the result.
    per_row : gradients each occurrence already sums (a shared negative serves ``per_row`` pairs).

    Returns
    -------
    (P,) tensor: ``-lr / k`` (``"mean"``, k = count of the row x ``per_row``), ``-lr * min(1, cap / k)``
    (``"capped"``) or ``-1`` (``"adagrad"``: the step size comes from the accumulator in :func:`apply_rows`).
    """
    if rule == "adagrad":
        return torch.full(rows.shape, -1.0, dtype=dtype, device=rows.device)
    if rule == "capped" and not cap:
        return torch.full(rows.shape, -lr, dtype=dtype, device=rows.device)
    k = (torch.bincount(rows, minlength=n_rows).index_select(0, rows) * per_row).to(dtype)  # (P,) repeats of each row
    if rule == "mean":
        return -lr / k
    return (-lr * cap) / k.clamp_min(cap)


class RowState:
    """What the ``"adagrad"`` rule keeps per weight matrix: the (V,) float32 accumulator of each row, and a (V,)
    int64 scratch map per thread that groups a batch's repeated rows in O(batch) (no sort; Hogwild workers
    each get their own). With ``last`` and ``clock`` (``per_step``), the decay is applied per training step:
    ``clock`` (a (1,) int64 tensor) counts the steps, ``last`` (V,) int64 holds the step of each row's last
    update; both are updated in place, so a state rebuilt from the same tensors (next epoch) carries on.
    ``eps`` (> 0) is the floor under the accumulator's square root: a row moves by ``lr * g / (sqrt(G) + eps)``,
    so a row whose recent gradients are much smaller than ``eps`` takes an SGD-like step ``lr * g / eps``; any
    ``eps`` keeps the bound ``lr * sqrt(D)``."""

    def __init__(self, acc: torch.Tensor, decay: float = 1.0, last: torch.Tensor | None = None,
                 clock: torch.Tensor | None = None, eps: float = ADAGRAD_EPS) -> None:
        if (last is None) != (clock is None):
            raise ValueError("RowState: per-step decay needs both last (V,) and clock (1,), or neither")
        if not eps > 0:
            raise ValueError(f"RowState: eps must be > 0 (a row with zero gradients would divide 0 by 0), got {eps}")
        self.acc = acc  # (V,) float32, updated in place
        self.decay = decay  # factor on a row's accumulator at each of its updates, or each step (1 = Adagrad)
        self.eps = eps
        self.last, self.clock = last, clock
        self._local = threading.local()

    @property
    def per_step(self) -> bool:
        """Whether the accumulators decay at every step (True) or at each of the row's own updates."""
        return self.clock is not None

    @classmethod
    def zeros(cls, n_rows: int, device: torch.device | str = "cpu", decay: float = 1.0,
              per_step: bool = False, eps: float = ADAGRAD_EPS) -> RowState:
        """A fresh state: every accumulator 0 (per step: the clock at 0 and every row last updated at step 0)."""
        acc = torch.zeros(n_rows, dtype=torch.float32, device=device)
        if not per_step:
            return cls(acc, decay, eps=eps)
        return cls(acc, decay, torch.zeros(n_rows, dtype=torch.int64, device=device),
                   torch.zeros(1, dtype=torch.int64, device=device), eps=eps)

    def tick(self) -> int:
        """Advance the clock by one step and return it (per-step decay only)."""
        if self.clock is None:
            raise ValueError("RowState.tick: this state decays per update (no clock)")
        self.clock += 1
        return int(self.clock)

    def group(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(uniq, inverse)`` with ``rows == uniq[inverse]`` and distinct ``uniq`` (in no particular order)."""
        slots = getattr(self._local, "slots", None)
        if slots is None:
            slots = self._local.slots = torch.empty(self.acc.shape, dtype=torch.int64, device=self.acc.device)
        pos = torch.arange(len(rows), device=rows.device)
        slots.index_put_((rows,), pos)  # a repeated row keeps one of its positions, whichever: all read the same
        rep = slots.index_select(0, rows)  # (P,) the position that represents each occurrence's row
        first = rep == pos
        compact = torch.cumsum(first, 0) - 1  # (P,) slot of each representative among the distinct rows
        return rows[first], compact.index_select(0, rep)


def apply_rows(weight: torch.Tensor, parts: Sequence[tuple[torch.Tensor, torch.Tensor]], *, rule: UpdateRule,
               lr: float, state: RowState | None = None, sparse: bool = True) -> None:
    """Add each part's (P, D) deltas (already multiplied by :func:`row_coefficients`) to ``weight[rows]``.

    Parameters
    ----------
    weight : (V, D) float32, updated in place.
    parts : ``(rows (P,), delta (P, D))`` pairs; repeated rows, within and across parts, are summed.
    rule : the update rule; under ``"adagrad"`` the summed delta of each distinct row is ``-g`` (its negative
        gradient), the row's accumulator decays (``state.decay``, per update or per step) and grows by
        ``mean_d(g_d ** 2)``, and the row moves by ``lr * (-g) / (sqrt(accumulator) + state.eps)``; a per-step
        state's clock advances by one per call.
    lr : learning rate of this step (``"adagrad"`` only; the other rules folded it into the deltas).
    state : the weight's :class:`RowState` (``"adagrad"`` only).
    sparse : touch only the given rows; otherwise the update is first materialised as a dense (V, D)
        tensor, as a dense embedding gradient would be (kept to measure the difference).
    """
    if rule != "adagrad":
        for rows, delta in parts:
            _add_rows(weight, rows, delta.to(weight.dtype), sparse)
        return
    if state is None:
        raise ValueError("apply_rows: the adagrad rule needs the weight's RowState (accumulator)")
    uniq, inverse = state.group(torch.cat([rows for rows, _ in parts]) if len(parts) > 1 else parts[0][0])
    d = weight.shape[1]
    summed = torch.zeros(len(uniq), d, dtype=weight.dtype, device=weight.device)  # (U, D) = -g per distinct row
    # one CPU thread (Hogwild workers, num_threads=1): index_add_ adds whole rows; with several threads its
    # repeated-index path is slow (_add_rows), so scatter_add_ there and on accelerators
    serial = weight.device.type == "cpu" and torch.get_num_threads() == 1
    start = 0
    for rows, delta in parts:
        part = inverse[start : start + len(rows)]
        if serial:
            summed.index_add_(0, part, delta.to(weight.dtype))
        else:
            summed.scatter_add_(0, part[:, None].expand(-1, d), delta.to(weight.dtype))
        start += len(rows)
    acc = state.acc.index_select(0, uniq)
    if state.per_step:
        state.clock += 1  # on the weights' device: no host sync on an accelerator
        age = (state.clock - state.last.index_select(0, uniq)).to(acc.dtype)  # (U,) steps since each row's update
        acc.mul_(age.mul_(math.log(state.decay)).exp_())  # decay ** age, with no host scalar to copy over
        state.last.index_copy_(0, uniq, state.clock.expand(len(uniq)))
    elif state.decay != 1.0:
        acc.mul_(state.decay)
    acc.add_(torch.linalg.vector_norm(summed, dim=1).square_().div_(d))  # (U,)
    state.acc.index_copy_(0, uniq, acc)
    step = summed.mul_((lr / (acc.sqrt_() + state.eps))[:, None])
    if sparse:  # distinct rows: index_add_ needs no sorted scatter here
        weight.index_add_(0, uniq, step)
    else:
        _add_rows(weight, uniq, step, sparse)


def _add_rows(weight: torch.Tensor, rows: torch.Tensor, delta: torch.Tensor, sparse: bool) -> None:
    """``weight[rows] += delta`` with repeated rows summed."""
    # an expanded index takes torch's sorted scatter path; index_add_ with several CPU threads is up
    # to 100x slower on repeated rows (measured: 16k rows x 64, 2 threads: 28-43 ms vs 0.3-0.5 ms)
    index = rows[:, None].expand(-1, weight.shape[1])
    if sparse:
        weight.scatter_add_(0, index, delta)
    else:
        weight.add_(torch.zeros_like(weight).scatter_add_(0, index, delta))
