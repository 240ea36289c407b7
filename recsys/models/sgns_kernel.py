"""item2vec's skip-gram step fused into one compiled CPU loop (numba), for the default row-update rule.

:func:`~recsys.models.item2vec.skipgram_step` computes a batch with whole-batch tensor ops: it gathers every
(P, D) and (G, K, D) block, writes the score gradients and the deltas out as new tensors, and scatters them.
On CPU that step is memory-bound: about 30 MB of temporaries per 4096-pair batch push the embedding tables
out of cache, and its transcendental functions run one float at a time. :func:`fused_skipgram_step` computes
the same update (the same batched SGNS gradients, summed per distinct row, then row-wise Adagrad with
``decay`` and ``eps``; :mod:`recsys.models.row_updates`) group by group: a group's ``share`` pairs and ``K`` shared
negatives are copied into small buffers, scored and spread back by three small BLAS products, their
``exp`` is a vectorised polynomial, and only the summed (distinct rows, D) gradients are written.

All scores are taken from the weights as they were before the step, as in the tensor step, so the two agree
up to float32 rounding (``tests/models/test_sgns_kernel.py``). The loop releases the GIL, so Hogwild workers
(``Item2VecConfig.workers``) step different batches at once; each thread has its own scratch. The first call
in a process compiles the loop or loads it from numba's on-disk cache (seconds, once); either gives the same bits.
"""

from __future__ import annotations

import threading

import numpy as np
import torch
from numba import njit

from recsys.models.row_updates import RowState

# reassociation (vectorised dot products) and fused multiply-add, but no "no NaN / no inf" assumptions: a non-finite
# score must still reach the loss, which the fit checks every step. No "arcp" (a / b as a * (1 / b)): with it, the
# loop compiled in a process and the same loop loaded from numba's cache rounded differently, so a seed's fit
# depended on whether the cache existed (tests/models/test_sgns_kernel.py); without it, no slower (measured ad hoc)
_FASTMATH = {"reassoc", "contract", "nsz"}


@njit(nogil=True, fastmath=_FASTMATH, cache=True)
def _register(rows, inv, offset, slot, uniq, grad, n):  # pragma: no cover - compiled
    """Map each of ``rows`` to its distinct row's slot (``inv[offset + i]``), zeroing a new slot's gradient."""
    for i in range(rows.shape[0]):
        r = rows[i]
        s = slot[r]
        if s < 0:
            s = n
            slot[r] = s
            uniq[n] = r
            grad[s, :] = 0.0
            n += 1
        inv[offset + i] = s
    return n


@njit(nogil=True, fastmath=_FASTMATH, cache=True)
def _adagrad_rows(weight, acc, uniq, grad, n, slot, lr, decay, eps, last, clock):  # pragma: no cover - compiled
    """Row-wise Adagrad on each distinct row's summed negative gradient; frees the rows' slots. ``clock`` > 0:
    the decay is per step (``decay ** (clock - last[r])``, and ``last[r]`` becomes ``clock``); 0: per update."""
    d = weight.shape[1]
    for j in range(n):
        r = uniq[j]
        g = grad[j]
        ss = np.float32(0.0)
        for t in range(d):
            ss += g[t] * g[t]
        f = np.float32(decay)
        if clock > 0:
            f = np.float32(f ** np.float32(clock - last[r]))
            last[r] = clock
        a = f * acc[r] + ss / np.float32(d)
        acc[r] = a
        scale = np.float32(lr) / (np.sqrt(a) + np.float32(eps))
        w = weight[r]
        for t in range(d):
            w[t] += scale * g[t]
        slot[r] = -1


# Cephes' expf: exp(x) = 2**m * exp(r), x = m ln 2 + r, |r| <= ln(2) / 2 (ln 2 split in two for exactness)
_LOG2E = np.float32(1.4426950408889634)
_LN2_HI, _LN2_LO = np.float32(0.693359375), np.float32(-2.12194440e-4)
_EXP_POLY = tuple(np.float32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                                          1.6666665459e-1, 5.0000001201e-1))


@njit(nogil=True, fastmath=_FASTMATH, cache=True, inline="always")
def _exp_nonpositive(x, out, bits, n):  # pragma: no cover - compiled
    """``out[:n] = exp(x[:n])`` for ``x <= 0`` in float32 (relative error < 1e-7 above -87, about 1e-38 below),
    written so that the loop vectorises (libm's scalar expf does not); NaN stays NaN."""
    scale = bits.view(np.float32)
    c0, c1, c2, c3, c4, c5 = _EXP_POLY
    for j in range(n):
        a = max(x[j], np.float32(-87.0))
        m = np.floor(a * _LOG2E + np.float32(0.5))
        r = a - m * _LN2_HI - m * _LN2_LO
        q = ((((c0 * r + c1) * r + c2) * r + c3) * r + c4) * r + c5
        out[j] = q * r * r + r + np.float32(1.0)
        bits[j] = (np.int32(m) + np.int32(127)) << np.int32(23)  # 2**m as float32 bits
    for j in range(n):
        out[j] *= scale[j]


@njit(nogil=True, fastmath=_FASTMATH, cache=True)
def _step(w_in, w_out, acc_in, acc_out, source, target, neg, share, lr, decay, eps,
          slot_in, slot_out, uniq_in, uniq_out, grad_in, grad_out, inv, last_in, last_out, clock_in,
          clock_out, skip_target, saturate):  # pragma: no cover - compiled
    p = source.shape[0]
    g, k = neg.shape
    d = w_in.shape[1]
    n_in = _register(source, inv, 0, slot_in, uniq_in, grad_in, 0)
    n_out = _register(target, inv, p, slot_out, uniq_out, grad_out, 0)
    n_out = _register(neg.reshape(-1), inv, 2 * p, slot_out, uniq_out, grad_out, n_out)
    one, zero = np.float32(1.0), np.float32(0.0)
    # one group: its pairs' source and target rows, its negatives' rows, the (share, k) negative scores (then
    # their gradients) and the products that spread them back over the rows (BLAS sgemm: a group is 3 small GEMMs)
    ub, vb, nb = np.empty((share, d), np.float32), np.empty((share, d), np.float32), np.empty((k, d), np.float32)
    sm, db, dn = np.empty((share, k), np.float32), np.empty((share, d), np.float32), np.empty((k, d), np.float32)
    # each pair's k + 1 scores in a row: its negatives' and its positive's, negated, so that every term of the loss
    # is -log sigmoid(-s) = max(s, 0) + log(1 + exp(-|s|)), with dloss/ds = sigmoid(s)
    w = k + 1
    sc, xs, es = np.empty(share * w, np.float32), np.empty(share * w, np.float32), np.empty(share * w, np.float32)
    bits = np.empty(share * w, np.int32)
    loss = 0.0
    for gi in range(g):
        lo = gi * share
        m = min(share, p - lo)  # the last group may be short: its missing pairs are rows of 0
        for i in range(m):
            ub[i, :] = w_in[source[lo + i]]
            vb[i, :] = w_out[target[lo + i]]
        ub[m:, :] = zero
        for j in range(k):
            nb[j, :] = w_out[neg[gi, j]]
        np.dot(ub, nb.T, sm)
        for i in range(m):
            s = zero
            for t in range(d):
                s += ub[i, t] * vb[i, t]
            sc[i * w + k] = -s
            for j in range(k):
                sc[i * w + j] = sm[i, j]
            if skip_target:  # a negative that is the pair's target scores -inf: its loss term adds 0 (below)
                for j in range(k):
                    if neg[gi, j] == target[lo + i]:
                        sc[i * w + j] = -np.inf
        n = m * w
        for j in range(n):
            xs[j] = -abs(sc[j])
        _exp_nonpositive(xs, es, bits, n)
        prod, lin = 1.0, zero  # the group's sum of log(1 + e) as the log of one float64 product (each factor <= 2)
        for j in range(n):
            s, e = sc[j], es[j]
            prod *= 1.0 + e
            lin += max(s, zero)
            sc[j] = (one if s >= zero else e) / (one + e)  # sigmoid(s)
            if abs(s) >= saturate:  # word2vec's MAX_EXP rule: a saturated term pushes no row
                sc[j] = zero
        loss += lin + np.log(prod)
        for i in range(m):
            for j in range(k):
                sm[i, j] = sc[i * w + j]
                if skip_target and neg[gi, j] == target[lo + i]:
                    sm[i, j] = zero  # and it pushes no row
        sm[m:, :] = zero
        np.dot(sm, nb, db)  # (share, d): the negatives' part of each source row's gradient
        np.dot(sm.T, ub, dn)  # (k, d): each negative row's gradient, summed over the group's pairs
        for i in range(m):
            gu = grad_in[inv[lo + i]]  # the source row's summed negative gradient
            gv = grad_out[inv[p + lo + i]]
            c = sc[i * w + k]  # -(dloss/ds of the positive) = sigmoid(-s)
            for t in range(d):
                gu[t] += c * vb[i, t] - db[i, t]
                gv[t] += c * ub[i, t]
        base = 2 * p + gi * k
        for j in range(k):
            go = grad_out[inv[base + j]]
            for t in range(d):
                go[t] -= dn[j, t]
    _adagrad_rows(w_in, acc_in, uniq_in, grad_in, n_in, slot_in, lr, decay, eps, last_in, clock_in)
    _adagrad_rows(w_out, acc_out, uniq_out, grad_out, n_out, slot_out, lr, decay, eps, last_out, clock_out)
    return loss


class _Scratch(threading.local):
    """One thread's buffers, grown to the largest batch seen; slot maps hold -1 between steps."""

    arrays: dict | None = None

    def get(self, n_rows: int, d: int, p: int, g: int, k: int) -> dict:
        a = self.arrays
        if a is None or a["slot_in"].shape[0] != n_rows or a["grad_in"].shape[1] != d:
            a = self.arrays = {"slot_in": np.full(n_rows, -1, np.int64), "slot_out": np.full(n_rows, -1, np.int64),
                               "grad_in": np.empty((0, d), np.float32), "grad_out": np.empty((0, d), np.float32)}
        if a["grad_in"].shape[0] < p or a["grad_out"].shape[0] < p + g * k:
            a["grad_in"] = np.empty((p, d), np.float32)
            a["grad_out"] = np.empty((p + g * k, d), np.float32)
            a["uniq_in"] = np.empty(p, np.int64)
            a["uniq_out"] = np.empty(p + g * k, np.int64)
            a["inv"] = np.empty(2 * p + g * k, np.int64)
        return a


_SCRATCH = _Scratch()


def fused_skipgram_step(
    w_in: torch.Tensor, w_out: torch.Tensor, source: torch.Tensor, target: torch.Tensor, neg: torch.Tensor,
    share: int, *, lr: float, state_in: RowState, state_out: RowState, skip_target: bool = False,
    saturate: float = 0.0, **_: object,
) -> float:
    """One skip-gram SGNS step with the ``"adagrad"`` row rule, as :func:`~recsys.models.item2vec.skipgram_step`
    computes it; returns the float64 loss sum.

    Parameters
    ----------
    w_in, w_out : (V, D) float32 contiguous CPU tensors, updated in place.
    source, target : (P,) int64 item indices: ``w_in[source]`` predicts ``w_out[target]``.
    neg : (G, K) int64 negatives, G = ceil(P / share); row g serves pairs ``g*share .. g*share+share-1``.
    share : consecutive pairs that share one row of negatives.
    lr : learning rate of this step.
    state_in, state_out : the weights' :class:`~recsys.models.row_updates.RowState` (accumulator, decay and eps;
        a per-step state's clock advances by one).
    skip_target : a negative equal to its pair's target is left out of the loss and the step (word2vec's rule).
    saturate : > 0: a term whose score has ``|s| >= saturate`` keeps its loss and moves no row (word2vec's MAX_EXP).

    Other keyword arguments of the tensor step (``sparse``, ``cap``, ``rule``) are accepted and ignored: this
    step is the sparse ``"adagrad"`` rule only (:func:`supports` says where it applies).
    """
    if w_in.dtype != torch.float32 or w_in.device.type != "cpu" or not (w_in.is_contiguous() and w_out.is_contiguous()):
        raise ValueError("fused_skipgram_step: needs contiguous float32 CPU weights; use skipgram_step elsewhere")
    if (state_in.decay, state_in.per_step, state_in.eps) != (state_out.decay, state_out.per_step, state_out.eps):
        raise ValueError("fused_skipgram_step: the two RowStates must share one decay (and its per-step mode) and eps")
    src, tgt, ng = (np.ascontiguousarray(t.numpy(), dtype=np.int64) for t in (source, target, neg))
    p, (g, k), d = len(src), ng.shape, w_in.shape[1]
    if g * share < p:
        raise ValueError(f"fused_skipgram_step: {g} rows of negatives serve {g * share} pairs, not {p}")
    s = _SCRATCH.get(w_in.shape[0], d, p, g, k)
    if state_in.per_step:
        last_in, last_out = state_in.last.numpy(), state_out.last.numpy()
        clock_in, clock_out = state_in.tick(), state_out.tick()
    else:
        last_in = last_out = _NO_CLOCK
        clock_in = clock_out = 0
    return float(_step(w_in.numpy(), w_out.numpy(), state_in.acc.numpy(), state_out.acc.numpy(), src, tgt, ng,
                       share, lr, state_in.decay, state_in.eps, s["slot_in"], s["slot_out"], s["uniq_in"],
                       s["uniq_out"], s["grad_in"], s["grad_out"], s["inv"], last_in, last_out, clock_in, clock_out,
                       bool(skip_target), np.float32(saturate if saturate > 0 else np.inf)))


_NO_CLOCK = np.zeros(1, np.int64)  # the per-update decay's stand-in for the rows' last steps (never read)


def supports(device: torch.device, mode: str, rule: str, sparse: bool) -> bool:
    """Whether :func:`fused_skipgram_step` computes this configuration's step: skip-gram, the sparse ``"adagrad"``
    rule, on CPU (accelerators keep the tensor step, which runs asynchronously there)."""
    return device.type == "cpu" and mode == "skipgram" and rule == "adagrad" and sparse
