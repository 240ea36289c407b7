"""Train / validation / test splits of encoded interactions, as :class:`SplitData` of Sequences.

Two protocols, both returning every part as a per-user :class:`Sequences` (row = user index):

``leave_last_out`` (S3-Rec / ICLRec): per user, the last event is the test target, the second
last the validation target, the rest is train. ``valid_history = train`` and
``test_history = train + validation event``. Users with fewer than 3 events keep all their events
in train and get no targets (counted in ``params["users_without_targets"]``).

``temporal_split``: one global time cut; events after it are test targets (see its docstring for
cold users and items).

    >>> enc = pl.DataFrame({"user_idx": [1, 1, 1, 1, 2], "item_idx": [1, 2, 3, 2, 4],
    ...                     "timestamp": [1, 2, 3, 4, 1]})
    >>> s = leave_last_out(enc, n_users=2, n_items=4)
    >>> s.train.row(1).tolist(), s.valid_targets.row(1).tolist(), s.test_targets.row(1).tolist()
    ([1, 2], [3], [2])
    >>> s.test_history.row(1).tolist(), s.train.row(2).tolist(), s.test_targets.row(2).tolist()
    ([1, 2, 3], [4], [])

A held-out event is never part of ``train`` or ``valid_history``; the same *item* may appear
there when the user interacted with it earlier (user 1 and item 2 above): that earlier event is
legitimate history.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from recsys.atomic import atomic_dir
from recsys.ingest.schema import ITEM_IDX, TIMESTAMP, USER_IDX, WEIGHT
from recsys.prepare.build import check_encoded, sort_events
from recsys.prepare.sequences import Sequences

PARTS = ("train", "valid_history", "valid_targets", "test_history", "test_targets")


@dataclass(frozen=True)
class SplitData:
    """The inputs and targets of one split; every Sequences has ``n_users + 1`` rows (row 0 empty)."""

    train: Sequences  # what models fit on (row = user index)
    valid_history: Sequences  # input at validation time
    valid_targets: Sequences  # target items at validation
    test_history: Sequences  # input at test time
    test_targets: Sequences
    n_users: int
    n_items: int
    params: dict  # split kind, parameters and event counts, for MLflow
    fingerprint: str  # content fingerprint of the encoded data set

    def save(self, directory: str | Path) -> None:
        """Write one sub-folder per part (Sequences.save) and ``params.json``, atomically.

        A part that is the same object as an earlier one is written once and recorded as an alias.
        """
        final = Path(directory)
        aliases: dict[str, str] = {}  # a part that *is* an earlier one (leave-last-out's valid_history = train)
        with atomic_dir(final) as tmp:
            for i, part in enumerate(PARTS):
                same = next((q for q in PARTS[:i] if getattr(self, q) is getattr(self, part)), None)
                if same is not None:
                    aliases[part] = same
                else:
                    getattr(self, part).save(tmp / part)
            meta = {"n_users": self.n_users, "n_items": self.n_items,
                    "fingerprint": self.fingerprint, "params": self.params, "aliases": aliases}
            (tmp / "params.json").write_text(json.dumps(meta, indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: str | Path, mmap: bool = True) -> SplitData:
        """Read what :meth:`save` wrote (arrays memory-mapped when ``mmap``)."""
        d = Path(directory)
        if not (d / "params.json").is_file():
            raise FileNotFoundError(f"{d} holds no split (params.json missing); run the split step first")
        meta = json.loads((d / "params.json").read_text())
        aliases = meta.get("aliases", {})
        parts = {p: Sequences.load(d / p, mmap=mmap) for p in PARTS if p not in aliases}
        parts.update({p: parts[q] for p, q in aliases.items()})
        return cls(**parts, n_users=int(meta["n_users"]), n_items=int(meta["n_items"]),
                   params=meta["params"], fingerprint=meta["fingerprint"])


_FP_TYPES = {USER_IDX: pl.Int32, TIMESTAMP: pl.Int64, ITEM_IDX: pl.Int32, WEIGHT: pl.Float32}


def fingerprint(encoded: pl.DataFrame) -> str:
    """sha256 (hex) over user_idx, item_idx, timestamp (and weight) sorted by all of them.

    Independent of row order and of integer widths; the ``event`` column is not included.
    """
    cols = [c for c in _FP_TYPES if c in encoded.columns]
    return _hash_sorted(encoded.select([pl.col(c).cast(_FP_TYPES[c]) for c in cols]).sort(cols))


def _hash_sorted(frame: pl.DataFrame) -> str:
    """The fingerprint of a frame already cast and sorted as :func:`fingerprint` does."""
    cols = [c for c in _FP_TYPES if c in frame.columns]
    h = hashlib.sha256(f"recsys-fingerprint-v1 rows={frame.height} cols={cols}".encode())
    for c in cols:
        h.update(np.ascontiguousarray(frame[c].cast(_FP_TYPES[c]).to_numpy()))
    return h.hexdigest()


def _sorted_arrays(encoded: pl.DataFrame, with_fingerprint: bool = True) -> tuple[np.ndarray, np.ndarray,
                                                                                   np.ndarray, str]:
    """users, items, timestamps sorted by (user, time, input order), and the fingerprint ("" without).

    Without (user, timestamp) ties that order is also :func:`fingerprint`'s sort order (item and
    weight never decide), so one sort serves both; with ties the fingerprint sorts on its own.
    """
    ev = sort_events(encoded.select([c for c in (USER_IDX, ITEM_IDX, TIMESTAMP, WEIGHT) if c in encoded.columns]))
    users, items, ts = ev[USER_IDX].to_numpy(), ev[ITEM_IDX].to_numpy(), ev[TIMESTAMP].to_numpy()
    if not with_fingerprint:
        return users, items, ts, ""
    ties = len(users) > 1 and bool(np.any((ts[1:] == ts[:-1]) & (users[1:] == users[:-1])))
    fp = fingerprint(encoded) if ties else _hash_sorted(ev)
    return users, items, ts, fp


class _Parts:
    """Turns boolean masks over the sorted events into per-user Sequences."""

    def __init__(self, users: np.ndarray, items: np.ndarray, ts: np.ndarray, n_users: int, n_items: int):
        self.users, self.items, self.ts = users, items, ts
        self.n_users, self.n_items = n_users, n_items
        # (n_users + 2,) start of every user's events; users are sorted, so a part's row lengths are
        # per-user sums of its mask (no per-part copy of users, sort check or full-length cumsum)
        self.starts = np.concatenate([[0], np.cumsum(np.bincount(users, minlength=n_users + 1))])
        self.nonempty = np.flatnonzero(self.starts[:-1] < self.starts[1:])

    def seqs(self, mask: np.ndarray, lengths: np.ndarray | None = None) -> Sequences:
        """The events under ``mask`` (bool, or sorted event indices when ``lengths`` is given);
        ``lengths`` (n_users + 1,) = per-user counts of those events when already known."""
        if lengths is None:
            lengths = np.zeros(self.n_users + 1, dtype=np.int64)
            if len(self.nonempty):
                lengths[self.nonempty] = np.add.reduceat(mask, self.starts[self.nonempty], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        return Sequences(offsets, self.items[mask].astype(np.int32, copy=False), self.n_items,
                         self.ts[mask].astype(np.int64, copy=False))

    def users_with(self, mask: np.ndarray) -> np.ndarray:
        """(n_users + 1,) bool: user has at least one event in ``mask``."""
        return np.bincount(self.users[mask], minlength=self.n_users + 1) > 0


def leave_last_out(encoded: pl.DataFrame, n_users: int, n_items: int, *, with_fingerprint: bool = True) -> SplitData:
    """Per user: last event -> test target, second last -> validation target, rest -> train.

    Parameters
    ----------
    encoded : (n, ...) frame with ``user_idx``, ``item_idx``, ``timestamp``; order is irrelevant
        (events are sorted by user then time, ties in input order).
    n_users, n_items : sizes of the index spaces.
    with_fingerprint : False leaves ``fingerprint`` empty (the out-of-core path splits a range of users at
        a time and fingerprints the whole set itself).
    """
    check_encoded(encoded, n_users, n_items, "leave_last_out")
    users, items, ts, fp = _sorted_arrays(encoded, with_fingerprint)
    parts = _Parts(users, items, ts, n_users, n_items)
    counts = np.diff(parts.starts)
    # mark each eligible user's last / second-last event by index (no full-length position arrays)
    eligible = (counts >= 3).astype(np.int64)  # (n_users + 1,) 1 = the user gets targets
    ends = parts.starts[1:][eligible == 1]
    test, valid = np.zeros(len(users), dtype=bool), np.zeros(len(users), dtype=bool)
    test[ends - 1] = True
    valid[ends - 2] = True
    train = ~(test | valid)
    # every part's per-user length is known from the counts, so no per-part reduction is needed
    train_s = parts.seqs(train, counts - 2 * eligible)
    params = {
        "split": "leave_last_out", "min_events_for_targets": 3, "n_events": int(len(users)),
        "n_train_events": int(train.sum()), "n_valid_targets": int(valid.sum()),
        "n_test_targets": int(test.sum()),
        "users_without_targets": int(((counts >= 1) & (counts < 3)).sum()),
    }
    # targets by index (one per eligible user, in user order) instead of a full-length mask gather
    return SplitData(train_s, train_s, parts.seqs(ends - 2, eligible), parts.seqs(train | valid, counts - eligible),
                     parts.seqs(ends - 1, eligible), n_users, n_items, params, fp)


def _quantile_time(ts: np.ndarray, q: float) -> int:
    return int(np.quantile(ts, q, method="lower")) if len(ts) else 0


def temporal_split(
    encoded: pl.DataFrame,
    n_users: int,
    n_items: int,
    cut: int | None = None,
    cut_quantile: float = 0.9,
    valid_fraction: float = 0.1,
    *,
    valid_cut: int | None = None,
    train_items: np.ndarray | None = None,
    with_fingerprint: bool = True,
) -> SplitData:
    """Global time cut: events with ``timestamp > cut`` are test targets.

    Parameters
    ----------
    encoded : (n, ...) frame with ``user_idx``, ``item_idx``, ``timestamp``.
    n_users, n_items : sizes of the index spaces.
    cut : epoch seconds; when None it is the ``cut_quantile`` quantile of all timestamps
        (``method="lower"``, so at least that fraction of events is at or before it).
    valid_fraction : in [0, 1); the latest ``valid_fraction`` of the events at or before ``cut``
        (again a "lower" quantile of time, ``valid_cut``) form the validation window.
    valid_cut, train_items, with_fingerprint : for a split computed a range of users at a time (the
        out-of-core path): the global validation cut (epoch s, with ``cut``), the (n_items + 1,) bool
        "item occurs in train" over *all* users (cold-item counts), and False to skip the fingerprint.

    Notes
    -----
    train = events ``<= valid_cut``; validation window = ``(valid_cut, cut]``; test window
    ``> cut``. ``valid_history = train``; ``test_history`` = every event ``<= cut``.

    Cold users: a target event whose user has no history event (none in train for validation,
    none ``<= cut`` for test) is dropped from the targets, since no history-based model can score
    that user; the events are counted in ``params`` (``*_cold_user_events_dropped``).
    Cold items: target events whose item never occurs in train are *kept* (they are honest misses
    for ID-based models) and counted in ``params["*_cold_item_events"]``.
    Accounting: ``n_train_events + n_valid_window_events + n_test_window_events == n_events`` and
    each window = its targets + its dropped cold-user events.
    """
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    if cut is None and not 0.0 < cut_quantile < 1.0:
        raise ValueError(f"cut_quantile must be in (0, 1), got {cut_quantile}; or pass cut=<epoch s>")
    if valid_cut is not None and cut is None:
        raise ValueError("temporal_split: valid_cut needs cut too")
    check_encoded(encoded, n_users, n_items, "temporal_split")
    users, items, ts, fp = _sorted_arrays(encoded, with_fingerprint)
    parts = _Parts(users, items, ts, n_users, n_items)
    cut_s = _quantile_time(ts, cut_quantile) if cut is None else int(cut)
    before = ts <= cut_s
    if valid_cut is None:
        valid_cut = _quantile_time(ts[before], 1.0 - valid_fraction) if valid_fraction > 0 else cut_s
    train = ts <= valid_cut
    vwin, twin = before & ~train, ~before
    valid_t = vwin & parts.users_with(train)[users]
    test_t = twin & parts.users_with(before)[users]
    if train_items is None:
        train_items = np.bincount(items[train], minlength=n_items + 1) > 0
    cold_item = ~train_items[items]
    params = {
        "split": "temporal", "cut": cut_s, "cut_quantile": None if cut is not None else cut_quantile,
        "valid_cut": int(valid_cut), "valid_fraction": valid_fraction, "n_events": int(len(ts)),
        "n_train_events": int(train.sum()), "n_valid_window_events": int(vwin.sum()),
        "n_test_window_events": int(twin.sum()), "n_valid_targets": int(valid_t.sum()),
        "n_test_targets": int(test_t.sum()),
        "valid_cold_user_events_dropped": int((vwin & ~valid_t).sum()),
        "test_cold_user_events_dropped": int((twin & ~test_t).sum()),
        "valid_cold_item_events": int((valid_t & cold_item).sum()),
        "test_cold_item_events": int((test_t & cold_item).sum()),
    }
    train_s = parts.seqs(train)
    return SplitData(train_s, train_s, parts.seqs(valid_t), parts.seqs(before), parts.seqs(test_t),
                     n_users, n_items, params, fp)
