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

import numpy as np

from recsys.data.sequences import Sequences


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


class SlidingWindows:
    """Training examples as sliding windows: every position of a window predicts its next item."""

    def __init__(self, train: Sequences, max_len: int) -> None:
        self.inputs, self.targets = make_windows(train, max_len)
        self.lengths = (self.targets > 0).sum(axis=1)  # (n,) targets per window

    def __len__(self) -> int:
        return len(self.inputs)

    def batch(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets) (b, max_len) int64 of windows ``idx``."""
        return self.inputs[idx], self.targets[idx]


class PrefixWindows:
    """One example per target: its right-aligned history of up to ``max_len`` items; built per batch,
    so memory is one index per target, not ``max_len`` of them."""

    def __init__(self, train: Sequences, max_len: int) -> None:
        self.t_idx, _, pos = target_events(train)
        self.lengths = np.minimum(pos, max_len)  # (n,) history items per example
        self.items = np.asarray(train.items).astype(np.int64)
        self.max_len = max_len

    def __len__(self) -> int:
        return len(self.t_idx)

    def batch(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets) (b, max_len) int64 of examples ``idx``; targets are 0 but in the last column."""
        t = self.t_idx[idx]
        col = np.arange(-self.max_len, 0)[None, :]
        src = t[:, None] + col  # (b, max_len) flat index of each history slot
        inputs = np.where(col >= -self.lengths[idx][:, None], self.items[np.maximum(src, 0)], 0)
        targets = np.zeros_like(inputs)
        targets[:, -1] = self.items[t]
        return inputs, targets


def training_windows(train: Sequences, max_len: int, kind: str) -> SlidingWindows | PrefixWindows:
    """The training examples of ``kind`` (``TwoTowerConfig.windows``)."""
    return PrefixWindows(train, max_len) if kind == "prefix" else SlidingWindows(train, max_len)


def epoch_batches(n_windows: int, batch_size: int, seed: int, epoch: int, rank: int = 0,
                  world_size: int = 1, lengths: np.ndarray | None = None) -> list[np.ndarray]:
    """This rank's window indices for every step of ``epoch``.

    One permutation per (seed, epoch), identical on every rank; each global batch of
    ``batch_size`` windows is split round-robin (``batch[rank::world_size]``), so the union over
    ranks of one step is exactly the batch a single process would train on. With ``lengths``
    (n_windows,), windows are grouped by length inside pools of 50 batches and the batch order is
    shuffled again, so batches can be trimmed to their longest window (far less padding).
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n_windows)
    if lengths is not None:
        pool = 50 * batch_size
        order = np.concatenate([c[np.argsort(lengths[c], kind="stable")]
                                for c in np.split(order, range(pool, n_windows, pool))])
    batches = [order[s : s + batch_size] for s in range(0, n_windows, batch_size)]
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
    items = np.asarray(train.items)[target_events(train)[0]]
    return np.bincount(items, minlength=train.n_items + 1).astype(np.float64)
