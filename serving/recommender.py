"""Top-k lookups over a bundle: an index proposes candidates, stored vectors score them exactly.

The candidate search is the bundle's measured choice (manifest "search"): Annoy, the IVF index
(:mod:`serving.ivf`, large catalogues) or exact scoring of every item.

    >>> rec = Recommender.load("bundles_root")          # doctest: +SKIP
    >>> rec.recommend("user-17", k=3)                   # doctest: +SKIP
    Recommendation(items=['b', 'q', 'x'], scores=[2.1, 1.9, 1.7], source='model', meta=None, unknown=[])

Every answer says which path produced it (``source``): "model" (the user's stored vector, encoded
from their stored history at export), "fresh" (a known user's stored history plus the recent events
sent with the request, encoded now by the model's own encoder), "history" (an anonymous history,
encoded the same way) or "popularity" (cold start). The encoder is the model's (:mod:`serving.encoder`),
so a served history ranks as the model ranked it offline.
Results carry raw ids only. Exclusions (seen items, ``exclude``) are honoured by over-fetching
``k + #excluded`` candidates from the index and doubling until ``k`` survive, up to
:data:`serving.search.MAX_FETCH` candidates; past that the query is scored exactly over every item, so
a user with a very long history costs at most one pass over the catalogue (:mod:`serving.search`, the
same code export measures recall and speed with).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from serving import format as fmt
from serving.loader import Bundle, load_bundle
from serving.search import MAX_FETCH, best, candidates, drop


@dataclass(frozen=True)
class Recommendation:
    """One answer: raw item ids best first, their scores, which path answered, metadata when present.

    ``unknown`` lists ids in the request (history or similar_items query) that the bundle does not know.
    ``note`` (JSON key present only when set) explains an answer about an item added after training:
    where its vector came from, or why popularity answered instead.
    """

    items: list
    scores: list[float]
    source: str
    meta: list | None = None
    unknown: list = field(default_factory=list)
    note: str | None = None

    def to_json(self) -> dict:
        """The answer as the HTTP API returns it.

        Returns
        -------
        dict : ``items``, ``scores``, ``source``, ``meta`` and ``unknown``, and ``note`` when there is one.
        """
        out = {"items": self.items, "scores": self.scores, "source": self.source, "meta": self.meta,
               "unknown": self.unknown}
        return out if self.note is None else {**out, "note": self.note}


class Recommender:
    """Answers lookups from one loaded bundle; thread-safe for reads (nothing mutates after load)."""

    def __init__(self, bundle: Bundle, search: str | None = None) -> None:
        self.bundle = bundle
        self.manifest = bundle.manifest
        self.n_items = bundle.manifest["counts"]["items"]
        self.angular = bundle.manifest["metric"] == "angular"
        self.search = search or bundle.manifest.get("search", "annoy")
        if self.search not in fmt.SEARCH_MODES:
            raise ValueError(f"search must be one of {fmt.SEARCH_MODES}; got {self.search!r}")
        if self.search == "ivf" and bundle.ivf is None:
            raise ValueError(f"search='ivf' but {bundle.path} has no IVF index (exported below "
                             "AnnConfig.ivf_min_items items); use 'annoy' or 'exact', or re-export with the IVF index")
        if self.search == "annoy" and bundle.index is None:
            raise ValueError(f"search='annoy' but {bundle.path} has no Annoy index (exported above "
                             "AnnConfig.annoy_max_items items); use 'ivf' or 'exact'")
        self._search_k = int((bundle.manifest.get("annoy") or {}).get("search_k", -1))
        # items added after training (manifest "content_only"): what each vector came from; "none" = no vector
        added = (bundle.manifest.get("content_only") or {}).get("items", [])
        idx = bundle.items.lookup([raw for raw, _ in added]) if added else np.zeros(0, np.int64)
        self._added = {int(i): src for i, (_, src) in zip(idx, added, strict=True)}
        self._no_vector = np.array(sorted(i for i, src in self._added.items() if src == "none"), np.int64)
        # items never a candidate: those without a vector and those the model learnt nothing for
        self._never = np.union1d(self._no_vector, np.asarray(bundle.manifest.get(fmt.NEVER_CANDIDATES) or [],
                                                              dtype=np.int64))
        # a lookup that does not say leaves seen items out as the bundle was decided (the pipeline chooses per log)
        self.exclude_seen = bool(bundle.manifest.get(fmt.EXCLUDE_SEEN, True))

    @classmethod
    def load(cls, path: str | Path, verify: bool = True, search: str | None = None) -> Recommender:
        """Load a bundle.

        Parameters
        ----------
        path : a bundle folder, or a publish root (its ``current`` bundle is loaded).
        verify : check every file against the SHA-256 the manifest lists (off: faster, for trusted copies).
        search : the candidate search, ``"annoy"``, ``"ivf"`` or ``"exact"``; default: the one export chose
            by measurement (manifest ``search``).

        Returns
        -------
        Recommender : ready to answer lookups.

        Raises
        ------
        BundleError : a missing or altered file, an unknown format version, a manifest that disagrees with
            the arrays; the message names the bundle and the file.
        ValueError : ``search`` is not one of the three, or is ``"ivf"`` for a bundle without an IVF index.
        """
        return cls(load_bundle(path, verify=verify), search)

    @property
    def path(self) -> Path:
        return self.bundle.path

    # -- public lookups ---------------------------------------------------------------------
    def recommend(self, user_id: object, k: int = 10, exclude_seen: bool | None = None, exclude: Iterable = (),
                  allow: Iterable | None = None, history: Iterable | None = None) -> Recommendation:
        """Top-``k`` items for a user.

        A known user without recent events is answered from the stored vector ("model"); with them, the
        stored history plus the events is encoded now ("fresh"). An unknown user is answered from
        ``history`` alone ("history") or, without one, by popularity ("popularity").

        Parameters
        ----------
        user_id : the raw user id (as in the logs; int-like strings match int ids).
        k : how many items, 1..100000.
        exclude_seen : never return the stored history's or ``history``'s items; ``None``: the bundle's
            ``exclude_seen`` (chosen on validation by the pipeline; true for bundles without it).
        exclude : raw item ids never to return.
        allow : when given, only these raw item ids may be returned.
        history : the user's recent events not in the bundle (raw item ids, oldest first).

        Returns
        -------
        Recommendation : raw item ids best first, their scores, the path that answered (``source``), item
            metadata, and the ids of ``history`` the bundle does not know (``unknown``; they are ignored).

        Raises
        ------
        RequestError : ``k`` is not an integer in 1..100000. (An id the bundle does not know is no error: an
            unknown user gets popularity or its ``history``'s answer, an unknown item id is ignored.)
        """
        k = _check_k(k)
        exclude_seen = self.exclude_seen if exclude_seen is None else exclude_seen
        user = int(self.bundle.users.lookup([user_id])[0])
        if user == 0:
            if history is not None:
                return self.recommend_for_history(history, k, exclude_seen, exclude=exclude, allow=allow)
            return self._popular(k, self._ids(exclude), self._allowed(allow))
        known, unknown = self._lookup_items(history or ())
        banned = self._ids(exclude)
        if exclude_seen:  # duplicates are harmless to np.isin, so no union
            banned = np.concatenate([banned, self.bundle.seen(user), known])
        if len(known):
            query = self.bundle.encoder.encode(np.concatenate([self.bundle.history(user), known]))
            source = "fresh"
        else:
            query, source = np.asarray(self.bundle.user_vectors[user], dtype=np.float32), "model"
        rec = self._answer(query, k, banned, self._allowed(allow), source)
        return Recommendation(rec.items, rec.scores, rec.source, rec.meta, unknown)

    def recommend_for_history(self, item_ids: Iterable, k: int = 10, exclude_seen: bool | None = None,
                              exclude: Iterable = (), allow: Iterable | None = None) -> Recommendation:
        """Top-``k`` items for an anonymous history, encoded now as the model encodes histories.

        Parameters
        ----------
        item_ids : raw item ids, oldest first.
        k, exclude_seen, exclude, allow : as in :meth:`recommend` (``exclude_seen`` leaves out ``item_ids``).

        Returns
        -------
        Recommendation : ``source`` "history", or "popularity" when no id is known; unknown ids are listed
            in ``unknown`` and otherwise ignored.

        Raises
        ------
        RequestError : as in :meth:`recommend`.
        """
        k = _check_k(k)
        exclude_seen = self.exclude_seen if exclude_seen is None else exclude_seen
        known, unknown = self._lookup_items(item_ids)
        banned = self._ids(exclude)
        if exclude_seen:
            banned = np.union1d(banned, known)
        note = None
        if len(known) and len(self._no_vector) and np.isin(known, self._no_vector).all():
            note = (f"the history holds only items added without content (no title, tags or categories): "
                    f"{self.bundle.items.raw(known)[:3]}; popular items instead")
        if not len(known) or note is not None:
            rec = self._popular(k, banned, self._allowed(allow))
        else:
            rec = self._answer(self.bundle.encoder.encode(known), k, banned, self._allowed(allow), "history")
        return Recommendation(rec.items, rec.scores, rec.source, rec.meta, unknown, note)

    def similar_items(self, item_id: object, k: int = 10) -> Recommendation:
        """The ``k`` items nearest to ``item_id`` (itself left out).

        The query is the item's row of :attr:`Bundle.input_vectors`: its vector, or under a mean encoder with
        its own table (item2vec in-out scoring) its input vector against the others' output vectors, i.e.
        the items a history of this one item would get.

        Parameters
        ----------
        item_id : a raw item id.
        k : how many items, 1..100000.

        Returns
        -------
        Recommendation : ``source`` "model"; "popularity" (with ``unknown`` = [item_id]) for an unknown item,
            or for an item added after training without content (with a ``note`` saying so).

        Raises
        ------
        RequestError : ``k`` is not an integer in 1..100000.
        """
        k = _check_k(k)
        item = int(self.bundle.items.lookup([item_id])[0])
        if item == 0:
            rec = self._popular(k, np.zeros(0, np.int64), None)
            return Recommendation(rec.items, rec.scores, rec.source, rec.meta, [item_id])
        source = self._added.get(item)
        if source == "none":
            rec = self._popular(k, np.array([item]), None)
            return Recommendation(rec.items, rec.scores, rec.source, rec.meta, [],
                                  f"item {item_id!r} was added without content (no title, tags or categories) and "
                                  "has no interactions: popular items instead")
        query = np.asarray(self.bundle.input_vectors[item], dtype=np.float32)
        rec = self._answer(query, k, np.array([item]), None, "model")
        if source is None:
            return rec
        what = {"categories": "its categories (it has no title or tags)"}.get(source, f"its {source}")
        return Recommendation(rec.items, rec.scores, rec.source, rec.meta, [],
                              f"item {item_id!r} was added after training: its vector comes from {what} alone")

    def calibrate_encoder(self, samples: int = 16, recent: int = 20, seed: int = 0) -> tuple[int, float]:
        """Time the bundle's encoder on stored histories plus recent events (the shape of a known user's
        request-time lookup); :meth:`expected_us` then prices encoding from it.

        Parameters
        ----------
        samples : stored histories timed.
        recent : request-time events added to each.
        seed : which users are sampled.

        Returns
        -------
        (events, us) : events per timed history, and the median microseconds of encoding one.
        """
        import time

        rng = np.random.default_rng(seed)
        n_users = len(self.bundle.history_indptr) - 1
        users = rng.integers(1, n_users, samples) if n_users > 1 else np.zeros(samples, np.int64)
        extra = rng.integers(1, self.n_items + 1, recent)
        hists = [np.concatenate([self.bundle.history(int(u)), extra]) for u in users]
        self.bundle.encoder.encode(hists[0])  # first call pays one-off costs
        times = []
        for h in hists:
            t = time.perf_counter()
            self.bundle.encoder.encode(h)
            times.append((time.perf_counter() - t) * 1e6)
        self._encode_cost = (max(int(np.median([len(h) for h in hists])), 1), float(np.median(times)))
        return self._encode_cost

    def expected_us(self, user_id: object | None, k: int = 10, n_recent: int = 0) -> float | None:
        """Microseconds a lookup should take (the HTTP server runs lookups priced at 2 ms or less inline).

        Parameters
        ----------
        user_id : a raw user id; None for an anonymous history, or ``similar_items``.
        k : items asked for.
        n_recent : request-time events to encode with the history.

        Returns
        -------
        float or None : the bundle's search as export timed it per query (a user whose seen items push the query
            past :data:`~serving.search.MAX_FETCH` priced as exact scoring), plus encoding the history
            (:meth:`calibrate_encoder`'s time, scaled by the history's length past the calibrated one); None
            when a part is unknown (not timed or not calibrated).
        """
        options = self.manifest.get("search_options") or {}
        search, n_events = self.search, n_recent
        if user_id is not None:
            user = int(self.bundle.users.lookup([user_id])[0])
            if user and k + len(self.bundle.seen(user)) + n_recent > MAX_FETCH:
                search = "exact"
            if user and n_recent:
                n_events += len(self.bundle.history(user))
        measured = (options.get(search) or {}).get("us_per_query")
        if measured is None:
            return None
        if not n_events:
            return float(measured)
        cost = getattr(self, "_encode_cost", None)
        if cost is None:
            return None
        return float(measured) + cost[1] * max(1.0, n_events / cost[0])

    def recommend_batch(self, user_ids: Iterable, k: int = 10,
                        exclude_seen: bool | None = None) -> list[Recommendation]:
        """:meth:`recommend` for each user, in order.

        Parameters
        ----------
        user_ids : raw user ids.
        k, exclude_seen : as in :meth:`recommend`.

        Returns
        -------
        list[Recommendation] : one per user id.
        """
        return [self.recommend(u, k, exclude_seen) for u in user_ids]

    # -- internals -------------------------------------------------------------------------
    def _lookup_items(self, raws: Iterable) -> tuple[np.ndarray, list]:
        """(item indices of the known ids in order, the unknown raw ids)."""
        raws = list(raws)
        idx = self.bundle.items.lookup(raws)
        return idx[idx > 0], [r for r, i in zip(raws, idx, strict=True) if i == 0]

    def _ids(self, raws: Iterable) -> np.ndarray:
        raws = list(raws)
        if not raws:
            return np.zeros(0, np.int64)
        idx = self.bundle.items.lookup(raws)
        return np.unique(idx[idx > 0])

    def _allowed(self, allow: Iterable | None) -> np.ndarray | None:
        return None if allow is None else self._ids(allow)

    def _answer(self, query: np.ndarray, k: int, banned: np.ndarray, allowed: np.ndarray | None,
                source: str) -> Recommendation:
        b = self.bundle
        if len(self._never):  # no content (added items) or nothing learnt (untrained items): never a candidate
            banned = np.concatenate([banned, self._never])
        if allowed is not None:  # a whitelist is scored exactly: no ANN recall loss, cost O(|allow| d)
            cands = drop(allowed, banned)
        else:
            cands = candidates(self.search, b.item_vectors, query, k, banned, self.angular, b.index, self._search_k,
                               b.ivf, norms=self._item_norms() if self.angular else None)
        ids, scores = best(b.item_vectors, query, cands, k, self.angular)
        return self._result(ids, scores, source)

    def _item_norms(self) -> np.ndarray:
        if not hasattr(self, "_norms"):
            self._norms = np.maximum(np.linalg.norm(self.bundle.item_vectors, axis=1), 1e-12)
        return self._norms

    def _popular(self, k: int, banned: np.ndarray, allowed: np.ndarray | None) -> Recommendation:
        pop = self.bundle.popular
        if allowed is not None:
            pop = allowed[np.lexsort((allowed, -self.bundle.popularity[allowed]))]
        keep = drop(pop, banned)[:k]
        return self._result(keep, self.bundle.popularity[keep], "popularity")

    def _result(self, idx: np.ndarray, scores: np.ndarray, source: str) -> Recommendation:
        meta = None if self.bundle.meta is None else [self.bundle.meta[i - 1] for i in idx.tolist()]
        return Recommendation(self.bundle.items.raw(idx), [float(s) for s in scores], source, meta)


def _check_k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= int(k) <= 100_000:
        raise fmt.RequestError(f"k must be an integer in 1..100000; got {k!r}")
    return int(k)


__all__ = ["Recommendation", "Recommender"]
