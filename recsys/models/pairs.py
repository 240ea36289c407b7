"""Vectorised (centre, context) pair sampling for item2vec, streamed in bounded chunks.

Pairs come from the flat :class:`~recsys.prepare.sequences.Sequences` arrays without a Python
loop per event. Every epoch draws fresh frequency subsampling and fresh dynamic windows::

    >>> s = Sequences.from_lists([[], [1, 2, 3]], n_items=3)
    >>> sampler = PairSampler(s, window=1, window_kind="fixed")
    >>> [(p.centre.tolist(), p.context.tolist()) for p in sampler.epoch(np.random.default_rng(0))]
    [([1, 2, 2, 3], [2, 1, 3, 2])]

Window kinds (``w`` = ``window``):

* ``"fixed"``: contexts are the items at distance ``1..w`` on either side, within the row.
* ``"dynamic"``: as word2vec, each centre draws ``b ~ U{1..w}`` and uses distance ``1..b``.
* ``"session"``: every other item of the row (the original item2vec: a row is a set).

Windows are taken over the *kept* items after subsampling (as word2vec does), so dropping a
frequent item brings farther items into the window.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Literal, NamedTuple, TypeVar

import numpy as np

from recsys.prepare.sequences import Sequences

T = TypeVar("T")
WindowKind = Literal["fixed", "dynamic", "session"]
WINDOW_KINDS = ("fixed", "dynamic", "session")


def keep_probabilities(counts: np.ndarray, t: float) -> np.ndarray:
    """word2vec / gensim subsampling keep probability per item, (n_items + 1,) float64.

    ``p_keep = (sqrt(f / t) + 1) * t / f`` capped at 1, with ``f = count / total``; ``t = 0``
    keeps everything. Items that never occur get 1 (they are never drawn anyway).
    """
    counts = np.asarray(counts, dtype=np.float64)
    if t < 0:
        raise ValueError(f"subsample threshold must be >= 0 (0 = off), got {t}")
    if t == 0 or counts.sum() == 0:
        return np.ones_like(counts)
    f = counts / counts.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        p = (np.sqrt(f / t) + 1.0) * t / f
    return np.where(counts > 0, np.minimum(p, 1.0), 1.0)


def negative_distribution(counts: np.ndarray, alpha: float) -> np.ndarray:
    """Noise distribution ``count^alpha`` over items that occur, (n_items + 1,) float64 summing to 1.

    ``alpha = 0`` is uniform over the items seen in training, a negative ``alpha`` favours rare
    items. Padding and unseen items (count 0) get probability 0 for every ``alpha``.
    """
    counts = np.asarray(counts, dtype=np.float64)
    seen = counts > 0
    if not seen.any():
        raise ValueError("cannot build a negative distribution: no item occurs in the training data")
    w = np.zeros_like(counts)
    w[seen] = counts[seen] ** alpha
    return w / w.sum()


class PairChunk(NamedTuple):
    """Pairs of a run of consecutive centre events, sorted by centre (unless the sampler's ``sort`` is off).

    ``group`` (P,) int64 numbers the centre events (unique within the epoch, increasing), so
    sorted pairs of one centre are contiguous; ``centre`` / ``context`` (P,) int64 item indices;
    ``start`` / ``stop`` the fraction of the epoch's events done before / after this chunk.
    """

    group: np.ndarray
    centre: np.ndarray
    context: np.ndarray
    start: float
    stop: float


class AliasSampler:
    """O(1) draws from a discrete distribution (Walker / Vose alias method).

    Parameters
    ----------
    probs : (n,) non-negative weights (normalised internally).
    """

    def __init__(self, probs: np.ndarray) -> None:
        p = np.asarray(probs, dtype=np.float64)
        if p.ndim != 1 or len(p) == 0 or p.min() < 0 or not np.isfinite(p).all() or p.sum() <= 0:
            raise ValueError("AliasSampler needs a 1-D array of finite non-negative weights with a positive sum")
        n = len(p)
        scaled = p * n / p.sum()
        self.prob = np.ones(n, dtype=np.float64)
        self.alias = np.arange(n, dtype=np.int64)
        small = [i for i in range(n) if scaled[i] < 1.0]  # O(n) set-up once per fit; draws are vectorised
        large = [i for i in range(n) if scaled[i] >= 1.0]
        while small and large:
            s, g = small.pop(), large.pop()
            self.prob[s], self.alias[s] = scaled[s], g
            scaled[g] -= 1.0 - scaled[s]
            (small if scaled[g] < 1.0 else large).append(g)
        # leftovers keep prob 1 (numerical round-off only)

    def sample(self, size: int | tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        """Draw ``size`` indices, int64."""
        k = rng.integers(0, len(self.prob), size=size)
        return np.where(rng.random(size=size) < self.prob[k], k, self.alias[k])


class PairSampler:
    """Streams (centre, context) item pairs of ``seqs`` in chunks of bounded size.

    Parameters
    ----------
    seqs : training sequences (row = user or session).
    window : maximum distance for ``"fixed"`` / ``"dynamic"`` windows (ignored by ``"session"``).
    window_kind : ``"fixed"``, ``"dynamic"`` or ``"session"``.
    keep_prob : (n_items + 1,) subsampling keep probability per item, or None (keep all).
    chunk_events : rows are processed in groups of about this many events.
    max_pairs : upper bound on the pairs yielded at once (one centre's pairs are never split).
    sort : yield pairs sorted by centre event (CBOW needs it; skip-gram shuffles anyway).
    """

    def __init__(
        self,
        seqs: Sequences,
        window: int = 5,
        window_kind: WindowKind = "dynamic",
        keep_prob: np.ndarray | None = None,
        chunk_events: int = 1 << 18,
        max_pairs: int = 1 << 22,
        sort: bool = True,
    ) -> None:
        if window_kind not in WINDOW_KINDS:
            raise ValueError(f"window_kind must be one of {list(WINDOW_KINDS)}, got {window_kind!r}")
        if window < 1 and window_kind != "session":
            raise ValueError(f"window must be >= 1, got {window}")
        self.seqs, self.window, self.kind = seqs, int(window), window_kind
        self.keep_prob = keep_prob
        self.chunk_events, self.max_pairs, self.sort = int(chunk_events), int(max_pairs), sort

    def epoch(self, rng: np.random.Generator) -> Iterator[PairChunk]:
        """One pass over the data as :class:`PairChunk` s of at most ``max_pairs`` pairs each."""
        base, off = 0, np.asarray(self.seqs.offsets)
        total = max(int(off[-1]), 1)
        for r0, r1 in self._row_chunks():
            items, lens = self.subsample(r0, r1, rng)
            n, first, span = max(len(items), 1), int(off[r0]), int(off[r1] - off[r0])
            for lo, hi, (group, c, x) in self._chunk_pairs(items, lens, rng):
                # progress counts original (pre-subsampling) events, interpolated over the chunk
                yield PairChunk(group + base, c, x, (first + span * lo / n) / total, (first + span * hi / n) / total)
            base += len(items)

    # -- internals ----------------------------------------------------------------------------
    def _row_chunks(self) -> Iterator[tuple[int, int]]:
        """Consecutive row ranges of about ``chunk_events`` events (a long row forms its own)."""
        off = np.asarray(self.seqs.offsets)
        r0, n_rows = 0, self.seqs.n_rows
        while r0 < n_rows:
            r1 = int(np.searchsorted(off, off[r0] + self.chunk_events, side="right")) - 1
            r1 = min(max(r1, r0 + 1), n_rows)
            yield r0, r1
            r0 = r1

    def subsample(self, r0: int, r1: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Items of rows ``r0..r1 - 1`` after subsampling, (kept,) int64, and each row's kept length."""
        off = np.asarray(self.seqs.offsets)
        items = np.asarray(self.seqs.items[off[r0] : off[r1]], dtype=np.int64)
        lens = np.diff(off[r0 : r1 + 1])
        if self.keep_prob is not None:
            keep = rng.random(len(items)) < self.keep_prob[items]
            row = np.repeat(np.arange(r1 - r0), lens)
            items, lens = items[keep], np.bincount(row[keep], minlength=r1 - r0)
        return items, lens

    def _chunk_pairs(
        self, items: np.ndarray, lens: np.ndarray, rng: np.random.Generator
    ) -> Iterator[tuple[int, int, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
        """Pairs of the kept events of one row chunk, per range ``lo..hi`` of centre events."""
        n = len(items)
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        start = np.repeat(starts, lens)  # (n,) first event of each event's row
        end = start + np.repeat(lens, lens)  # (n,) one past its row's last event
        pos = np.arange(n) - start
        if self.kind == "session":
            b = end - start - 1  # every other event of the row
            count = end - start - 1
        else:
            b = rng.integers(1, self.window + 1, size=n) if self.kind == "dynamic" else np.full(n, self.window)
            count = np.minimum(b, pos) + np.minimum(b, end - 1 - np.arange(n))
        # cut the centres into ranges of at most max_pairs pairs (a single centre is never split)
        csum = np.cumsum(count)
        lo = 0
        while lo < n:
            done = csum[lo - 1] if lo else 0
            hi = max(int(np.searchsorted(csum, done + self.max_pairs, side="right")), lo + 1)
            centres = np.arange(lo, hi)
            ctx = self._session(centres, start, end) if self.kind == "session" else self._window(centres, b, start, end)
            yield lo, hi, (ctx[0], items[ctx[0]], items[ctx[1]])
            lo = hi

    def _window(
        self, centres: np.ndarray, b: np.ndarray, start: np.ndarray, end: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Event index pairs (centre, context) at distance <= b[centre], sorted by centre if ``sort``."""
        cs, xs = [], []
        for d in range(1, self.window + 1):  # a loop over distances, vectorised over events
            ok = b[centres] >= d
            left = centres[ok & (centres - d >= start[centres])]
            right = centres[ok & (centres + d < end[centres])]
            cs += [left, right]
            xs += [left - d, right + d]
        c, x = np.concatenate(cs), np.concatenate(xs)
        if not self.sort:
            return c, x
        order = np.argsort(c, kind="stable")
        return c[order], x[order]

    @staticmethod
    def _session(centres: np.ndarray, start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Event index pairs (centre, every other event of its row), sorted by centre."""
        length = end[centres] - start[centres]
        c = np.repeat(centres, length)
        # position j of centre c's block points at start[c] + (j - block start)
        block = np.repeat(np.cumsum(length) - length, length)
        x = np.repeat(start[centres], length) + np.arange(len(c)) - block
        keep = x != c
        return c[keep], x[keep]


def cbow_batches(
    group: np.ndarray, centre: np.ndarray, context: np.ndarray, batch_size: int, rng: np.random.Generator
) -> Iterator[tuple[tuple[np.ndarray, np.ndarray, np.ndarray], float]]:
    """Batches of whole centre groups (pairs sorted by ``group``) in random order, ~``batch_size`` pairs.

    Yields ``((local, centres, contexts), fraction of the pairs done)``: ``centres`` (G,) one item
    per group, ``contexts`` (P,) and ``local`` (P,) the batch-local group (0..G-1) of each context.
    """
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    order = rng.permutation(len(starts))
    sizes = np.diff(np.r_[starts, len(group)])[order]
    ends = np.cumsum(sizes)  # (G,) end of each shuffled group in the reordered pairs
    # pair j of shuffled group g comes from starts[g] + (j - (ends[g] - sizes[g]))
    idx = np.repeat(starts[order] - (ends - sizes), sizes) + np.arange(len(group))
    g0 = 0
    while g0 < len(order):
        a = int(ends[g0 - 1]) if g0 else 0
        g1 = max(int(np.searchsorted(ends, a + batch_size, side="right")), g0 + 1)
        local = np.repeat(np.arange(g1 - g0), sizes[g0:g1])
        yield (local, centre[starts[order[g0:g1]]], context[idx[a : ends[g1 - 1]]]), ends[g1 - 1] / len(group)
        g0 = g1


def prefetch(items: Iterable[T], depth: int = 4) -> Iterator[T]:
    """Iterate ``items`` in a background thread, at most ``depth`` ahead of the consumer.

    Exceptions in the producer are re-raised in the consumer; leaving the loop early stops
    the producer (it never blocks forever on a full queue).
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop, done = threading.Event(), object()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(done)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(exc)

    thread = threading.Thread(target=work, name="item2vec-batches", daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


R = TypeVar("R")


def run_threads(items: Iterator[T], fn: Callable[[T], R], workers: int) -> list[R]:
    """``fn`` over ``items`` by ``workers`` threads at once, lock-free on the work itself (Hogwild).

    Each thread takes the next item under a lock (so ``items`` may be a generator holding an RNG)
    and runs ``fn`` on it outside the lock; torch ops release the GIL, so the steps overlap. The
    results come back in completion order. The first exception stops the other threads (after
    their current item) and is re-raised here.
    """
    lock, stop = threading.Lock(), threading.Event()
    results: list[R] = []
    errors: list[BaseException] = []

    def work() -> None:
        while not stop.is_set():
            try:
                with lock:
                    item = next(items, None)
                if item is None:
                    return
                out = fn(item)
            except BaseException as exc:  # re-raised by the caller
                errors.append(exc)
                stop.set()
                return
            with lock:
                results.append(out)

    threads = [threading.Thread(target=work, name=f"item2vec-worker-{i}", daemon=True) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results
