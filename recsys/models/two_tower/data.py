"""Training examples (sliding windows or prefixes) and rank-sharded batches.

Sliding windows (``windows = "sliding"``): a training sequence ``s`` of length ``L`` yields
``L - 1`` (input, target) pairs ``s[i] -> s[i+1]``.
They are cut, from the most recent end, into windows of at most ``max_len`` pairs, so every
pair is trained on exactly once and long histories are not truncated::

    >>> tr = Sequences.from_lists([[], [1, 2, 3, 4]], n_items=4)
    >>> inp, tgt = make_windows(tr, max_len=2)
    >>> inp.tolist(), tgt.tolist()
    ([[0, 1], [2, 3]], [[0, 2], [3, 4]])

Windows are left-padded with 0, like ``Sequences.padded``: the last column is the newest item.

Prefixes (``windows = "prefix"``, as RecBole, FMLP-Rec and BSARec train): one example per target,
its up to ``max_len`` preceding items right-aligned, the loss at the last column only. The same
targets as sliding windows, but every one of them is predicted from the newest position, the
position that serves users, at the price of encoding each prefix separately::

    >>> PrefixWindows(tr, max_len=2).batch(np.arange(3))[0].tolist()
    [[0, 1], [1, 2], [2, 3]]
"""

from __future__ import annotations

import math

import numpy as np

from recsys.prepare.sequences import Sequences, item_counts


def target_events(train: Sequences) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flat index, row, position within the row) of every target event: every event but a row's first."""
    users = train.row_index()
    pos = np.arange(train.n_events, dtype=np.int64) - train.offsets[users]
    t_idx = np.flatnonzero(pos >= 1)
    return t_idx, users[t_idx], pos[t_idx]


def make_windows(train: Sequences, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets), each (n_windows, max_len) int64, left-padded with 0 (target 0 = no loss)."""
    t_idx, t_user, _ = target_events(train)
    if len(t_idx) == 0:
        empty = np.zeros((0, max_len), dtype=np.int64)
        return empty, empty
    from_end = (train.offsets[t_user + 1] - 1) - t_idx  # 0 for the last target of the row
    window = from_end // max_len  # windows numbered from the newest
    new = np.concatenate([[True], (np.diff(t_user) != 0) | (np.diff(window) != 0)])
    starts = np.flatnonzero(new)
    offsets = np.concatenate([starts, [len(t_idx)]]).astype(np.int64)
    items = np.asarray(train.items)
    inputs = Sequences(offsets, items[t_idx - 1], train.n_items).padded(max_len).astype(np.int64)
    targets = Sequences(offsets, items[t_idx], train.n_items).padded(max_len).astype(np.int64)
    return inputs, targets


class _Lengths:
    """(n,) example lengths computed for the indices asked for (``lengths[idx]``), never stored whole."""

    def __init__(self, n: int, fn) -> None:
        self._n, self._fn = n, fn

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, idx) -> np.ndarray:
        return self._fn(np.arange(self._n)[idx] if isinstance(idx, slice) else np.asarray(idx, dtype=np.int64))

    def tolist(self) -> list[int]:
        return self[np.arange(self._n)].tolist()


def _gather_padded(items: np.ndarray, first_event: np.ndarray, count: np.ndarray, max_len: int,
                   shift: int = 0) -> np.ndarray:
    """(b, max_len) int64: events ``first_event + shift .. + count - 1`` of each example, right-aligned."""
    out = np.zeros((len(first_event), max_len), dtype=np.int64)
    col = np.arange(max_len)[None, :]
    first = (max_len - count)[:, None]
    mask = col >= first
    src = first_event[:, None] + shift + (col - first)
    out[mask] = items[src[mask]]
    return out


class SlidingWindows:
    """Training examples as sliding windows: every position of a window predicts its next item.

    Only each window's first target event and length are kept ((n_windows,) int64 each); a batch reads its
    items from ``train.items``, so a memory-mapped split is never loaded whole. The windows and their order are
    :func:`make_windows`' (rows in order, each cut from its newest event into windows of ``max_len`` targets).
    """

    def __init__(self, train: Sequences, max_len: int) -> None:
        off = np.asarray(train.offsets)
        n_targets = np.maximum(np.diff(off) - 1, 0)  # (n_rows,)
        rows = np.flatnonzero(n_targets)
        nt = n_targets[rows]
        n_win = -(-nt // max_len)  # windows per row; the oldest holds the remainder
        first_size = nt - (n_win - 1) * max_len
        row_of = np.repeat(np.arange(len(rows)), n_win)
        k = np.arange(len(row_of)) - np.repeat(np.cumsum(n_win) - n_win, n_win)  # window number within its row
        self.start = off[rows][row_of] + 1 + np.where(k == 0, 0, first_size[row_of] + (k - 1) * max_len)
        self.count = np.where(k == 0, first_size[row_of], max_len)
        self.items, self.max_len = train.items, max_len
        self.lengths = self.count  # (n,) targets per window

    def __len__(self) -> int:
        return len(self.start)

    def batch(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets) (b, max_len) int64 of windows ``idx``."""
        start, count = self.start[idx], self.count[idx]
        return (_gather_padded(self.items, start, count, self.max_len, shift=-1),
                _gather_padded(self.items, start, count, self.max_len))

    @property
    def targets(self) -> np.ndarray:
        """(n, max_len) every window's targets (small data and tests: this materialises them all)."""
        return self.batch(np.arange(len(self)))[1]


class PrefixWindows:
    """One example per target: its right-aligned history of up to ``max_len`` items.

    Targets are numbered row by row (every event but a row's first); an example's event is found from the
    per-row target counts ((n_rows,) arrays), and its items are read per batch from ``train.items``, so memory
    is O(rows) plus the batch and a memory-mapped split is never loaded whole.
    """

    def __init__(self, train: Sequences, max_len: int) -> None:
        off = np.asarray(train.offsets)
        per_row = np.maximum(np.diff(off) - 1, 0)
        rows = np.flatnonzero(per_row)
        self._tstart = np.concatenate([[0], np.cumsum(per_row[rows])]).astype(np.int64)  # first target of each row
        self._ev0 = off[rows].astype(np.int64)  # first event of each row with targets
        self.items, self.max_len = train.items, max_len
        self.lengths = _Lengths(len(self), lambda idx: np.minimum(self._events(idx)[1], self.max_len))

    def __len__(self) -> int:
        return int(self._tstart[-1])

    def _events(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(flat event index, position within its row) of targets ``idx``."""
        r = np.searchsorted(self._tstart, idx, side="right") - 1
        pos = idx - self._tstart[r] + 1
        return self._ev0[r] + pos, pos

    def batch(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets) (b, max_len) int64 of examples ``idx``; targets are 0 but in the last column."""
        t, pos = self._events(np.asarray(idx, dtype=np.int64))
        inputs = _gather_padded(self.items, t - np.minimum(pos, self.max_len), np.minimum(pos, self.max_len),
                                self.max_len)
        targets = np.zeros_like(inputs)
        targets[:, -1] = self.items[t]
        return inputs, targets


def training_windows(train: Sequences, max_len: int, kind: str) -> SlidingWindows | PrefixWindows:
    """The training examples of ``kind`` (``TwoTowerConfig.windows``)."""
    return PrefixWindows(train, max_len) if kind == "prefix" else SlidingWindows(train, max_len)


def epoch_span(n_windows: int, epoch: int, epoch_examples: int = 0) -> tuple[int, int, int]:
    """``(pass, start, stop)``: ``epoch`` trains on positions ``start:stop`` of pass ``pass``'s permutation.

    ``epoch_examples`` 0 (or at least ``n_windows``): every epoch is a whole pass. Otherwise each pass is cut into
    ``ceil(n_windows / epoch_examples)`` consecutive epochs of at most ``epoch_examples`` windows, so on a log too
    large for one pass to fit a time budget, the budget, validation and checkpoints still come every slice; the
    epochs of one pass together see every window once.
    """
    if epoch_examples <= 0 or epoch_examples >= n_windows:
        return epoch, 0, n_windows
    p, j = divmod(epoch - 1, math.ceil(n_windows / epoch_examples))
    return p + 1, j * epoch_examples, min((j + 1) * epoch_examples, n_windows)


def epoch_steps(n_windows: int, batch_size: int, epochs: int, epoch_examples: int = 0) -> int:
    """Optimiser steps of ``epochs`` epochs (the learning-rate schedule's length)."""
    spans = (epoch_span(n_windows, e, epoch_examples) for e in range(1, epochs + 1))
    return sum(math.ceil((stop - start) / batch_size) for _, start, stop in spans)


def epoch_batches(n_windows: int, batch_size: int, seed: int, epoch: int, rank: int = 0,
                  world_size: int = 1, lengths: np.ndarray | None = None, epoch_examples: int = 0
                  ) -> list[np.ndarray]:
    """This rank's window indices for every step of ``epoch``.

    One permutation per (seed, pass), identical on every rank; the epoch takes its span of it
    (:func:`epoch_span`: the whole pass unless ``epoch_examples``). Each global batch of
    ``batch_size`` windows is split round-robin (``batch[rank::world_size]``), so the union over
    ranks of one step is exactly the batch a single process would train on. With ``lengths``
    (n_windows,), windows are grouped by length inside pools of 50 batches and the batch order is
    shuffled again, so batches can be trimmed to their longest window (far less padding).
    """
    pass_, start, stop = epoch_span(n_windows, epoch, epoch_examples)
    rng = np.random.default_rng([seed, pass_])
    # the same order as rng.permutation(n_windows), in 4 bytes a window instead of 8
    order = rng.permutation(np.arange(n_windows, dtype=np.int32 if n_windows < 2**31 else np.int64))[start:stop]
    if lengths is not None:
        pool = 50 * batch_size
        order = np.concatenate([c[np.argsort(lengths[c], kind="stable")]
                                for c in np.split(order, range(pool, len(order), pool))])
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    if lengths is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return [b[rank::world_size] for b in batches]


def trim_padding(inputs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop the leading columns whose input is padding in every row (left-padded windows, (b, T))."""
    used = np.flatnonzero((inputs > 0).any(axis=0))
    first = int(used[0]) if len(used) else targets.shape[1] - 1
    return inputs[:, first:], targets[:, first:]


def target_counts(train: Sequences) -> np.ndarray:
    """(n_items + 1,) float64 count of each item as a training target (every event but a row's first)."""
    off = np.asarray(train.offsets)
    firsts = np.asarray(train.items)[off[:-1][np.diff(off) > 0]]
    counts = item_counts(train.items, train.n_items) - np.bincount(firsts, minlength=train.n_items + 1)
    return counts.astype(np.float64)
