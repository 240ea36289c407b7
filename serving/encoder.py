"""Request-time user encoders: each model's ``encode_users`` reproduced with numpy alone.

A bundle's ``manifest["encoder"]`` is a JSON spec with a ``kind``; its weights are the bundle's
``encoder_<name>.npy`` files; the model writes both (``Model.export_encoder``). Histories are item
indices of the bundle, oldest first. Kinds:

``none``
    popularity: every history gets the vector ``ones(dim)`` (the items' vectors carry the ranking).
``mean``
    item2vec: ``sum_a decay**a v[item_a] / sum_a decay**a`` over the last ``max_len`` items (null: all),
    ``a`` = 0 for the newest; ``v`` = the encoder's ``item_table`` when it has one (item2vec's input
    vectors under in-out scoring, where the bundle's item vectors are the output vectors), else the
    bundle's item vectors; an empty history gives 0.
``als``
    the exact implicit-ALS user solve with the item factors ``Y`` (the bundle's item vectors) fixed:
    ``(Y'Y + reg I + sum_i (c_i - 1) y_i y_i') x = sum_i c_i y_i``, ``c_i = 1 + alpha * count_i``.
``bpr``
    BPR fold-in (:func:`bpr_fold_in`): gradient steps on the BPR objective from 0 with the item factors
    fixed; the last item column is the bias and the user vector ends with 1.
``pooled``, ``transformer``, ``transformer_bsa``
    the two-tower user towers (:mod:`serving.towers`; ``transformer_bsa`` adds BSARec's frequency filter).
``ensemble``
    ``members`` (a list of member specs, weights prefixed ``m<i>.``) side by side, scaled by
    ``1 / sqrt(members)`` when ``normalize`` (cosine models: each member's vector is unit length).

Any spec may set ``normalize`` (L2-normalise the output). An unknown kind is refused.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from serving.towers import TowerEncoder

ENCODER_KINDS = ("none", "mean", "als", "bpr", "pooled", "transformer", "transformer_bsa", "ensemble")
_CHUNK_EVENTS = 1 << 16  # events per batch step: bounds the (events, dim) temporaries


def segment_sum(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Sum of ``values[offsets[r]:offsets[r + 1]]`` for every row r (0 for empty rows): (R, ...)."""
    out = np.zeros((len(offsets) - 1, *values.shape[1:]), dtype=values.dtype)
    full = np.flatnonzero(np.diff(offsets) > 0)
    if len(full):
        out[full] = np.add.reduceat(values, offsets[:-1][full], axis=0)
    return out


def decayed_mean(vectors: np.ndarray, offsets: np.ndarray, items: np.ndarray, decay: float,
                 max_len: int | None = None, block_events: int = 1 << 18) -> np.ndarray:
    """(R, d) float64 ``sum_a decay**a * vectors[item_a] / sum_a decay**a`` per row of a flat history
    (``items[offsets[r]:offsets[r + 1]]``, oldest first; ``a`` = 0 for the newest item; items ``max_len`` or
    more steps back weigh 0; an empty row gives 0). The one decayed mean: item2vec's ``encode_users`` and the
    served mean encoder both call it. Rows go ``block_events`` events at a time, so memory stays bounded.
    """
    from scipy import sparse  # here, not at import: serving's import stays numpy-only until a mean is encoded

    offsets = np.asarray(offsets, dtype=np.int64)
    out = np.zeros((len(offsets) - 1, vectors.shape[1]), dtype=np.float64)
    r0 = 0
    while r0 < len(offsets) - 1:
        r1 = max(int(np.searchsorted(offsets, offsets[r0] + block_events, side="right")) - 1, r0 + 1)
        r1 = min(r1, len(offsets) - 1)
        local = offsets[r0:r1 + 1] - offsets[r0]
        its = np.asarray(items[offsets[r0]:offsets[r1]], dtype=np.int64)
        age = np.repeat(local[1:], np.diff(local)) - 1 - np.arange(len(its))  # 0 = newest
        w = np.power(float(decay), age, dtype=np.float64)
        if max_len is not None:
            w[age >= int(max_len)] = 0.0
        # the weighted row sums as one sparse (rows x events) product: np.add.reduceat over the rows of an
        # (events, d) array was most of the time an item2vec validation spent encoding users, in a profile
        weights = sparse.csr_matrix((w, np.arange(len(its)), local), shape=(r1 - r0, len(its)))
        num = weights @ np.asarray(vectors[its], dtype=np.float64)
        den = segment_sum(w, local)
        out[r0:r1] = num / np.where(den > 0, den, 1.0)[:, None]
        r0 = r1
    return out


def _rows(offsets: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))


class Encoder:
    """Base: ``encode_batch(offsets, items)`` over flat histories; ``encode(items)`` for one."""

    dim: int

    def __init__(self, spec: Mapping) -> None:
        self.spec = dict(spec)

    def encode(self, items: np.ndarray) -> np.ndarray:
        """(dim,) float32 vector of one history (bundle item indices, oldest first)."""
        items = np.asarray(items, dtype=np.int64)
        return self.encode_batch(np.array([0, len(items)], dtype=np.int64), items)[0]

    def encode_batch(self, offsets: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(R, dim) float32 for the R histories ``items[offsets[r]:offsets[r + 1]]``, in row chunks."""
        offsets, items = np.asarray(offsets, dtype=np.int64), np.asarray(items, dtype=np.int64)
        n, parts, start = len(offsets) - 1, [], 0
        while start < n:  # rows whose events fit in one chunk (at least one row)
            stop = int(np.searchsorted(offsets, offsets[start] + _CHUNK_EVENTS, "right")) - 1
            stop = min(max(stop, start + 1), n)
            sub = offsets[start:stop + 1]
            parts.append(self._encode(sub - sub[0], items[sub[0]:sub[-1]]))
            start = stop
        vecs = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, self.dim), np.float32)
        if self.spec.get("normalize"):
            vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        return vecs

    def _encode(self, offsets: np.ndarray, items: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class NoneEncoder(Encoder):
    def __init__(self, spec: Mapping, dim: int) -> None:
        super().__init__(spec)
        self.dim = dim

    def _encode(self, offsets: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.ones((len(offsets) - 1, self.dim), dtype=np.float32)


class MeanEncoder(Encoder):
    def __init__(self, spec: Mapping, vectors: np.ndarray) -> None:
        super().__init__(spec)
        if not 0.0 < float(spec.get("decay", 1.0)) <= 1.0:
            raise ValueError(f"mean encoder decay must lie in (0, 1]; got {spec.get('decay')}")
        self.vectors, self.dim = vectors, vectors.shape[1]

    def _encode(self, offsets: np.ndarray, items: np.ndarray) -> np.ndarray:
        return decayed_mean(self.vectors, offsets, items, float(self.spec.get("decay", 1.0)), self.spec.get("max_len"))


class ALSEncoder(Encoder):
    def __init__(self, spec: Mapping, factors: np.ndarray) -> None:
        super().__init__(spec)
        self.y = np.asarray(factors, dtype=np.float32)
        self.dim = self.y.shape[1]
        self.yty = (self.y.T @ self.y).astype(np.float64) + float(spec["regularization"]) * np.eye(self.dim)

    def _encode(self, offsets: np.ndarray, items: np.ndarray) -> np.ndarray:
        a = np.repeat(self.yty[None], len(offsets) - 1, axis=0)  # (R, d, d)
        b = np.zeros((len(offsets) - 1, self.dim))
        alpha = float(self.spec["alpha"])
        for r in np.flatnonzero(np.diff(offsets) > 0):
            uniq, count = np.unique(items[offsets[r]:offsets[r + 1]], return_counts=True)
            y, conf = self.y[uniq].astype(np.float64), 1.0 + alpha * count  # confidence 1 + alpha * count
            a[r] += (y.T * (conf - 1.0)) @ y
            b[r] = conf @ y
        return np.linalg.solve(a, b[..., None])[..., 0]


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser over uint64 arrays (wrapping arithmetic)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def bpr_negatives(seed: int, step: int, offsets: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    """(E,) negative items in 1..n_items, one per event: a hash of (seed, step, position in its row, item),
    so a history draws the same negatives alone or in any batch."""
    pos = np.arange(len(items)) - np.repeat(offsets[:-1], np.diff(offsets))
    key = np.uint64(((seed * 1_000_003 + step) * 0x100000001B3) % 2**64)
    x = _mix(_mix(items.astype(np.uint64) + key) ^ pos.astype(np.uint64))
    return (x % np.uint64(n_items)).astype(np.int64) + 1


def bpr_fold_in(items_f: np.ndarray, offsets: np.ndarray, items: np.ndarray, lr: float, reg: float, steps: int,
                seed: int) -> np.ndarray:
    """(R, d - 1) user factors maximising the BPR objective with the item factors ``items_f`` fixed.

    ``items_f`` (n_items + 1, d): factors then the bias column. Each step draws one negative per history
    event (:func:`bpr_negatives`; negatives in the user's history are skipped, as implicit's
    ``verify_negative_samples``) and adds ``lr * (sum_e sigmoid(-x_e) (y_pos - y_neg) - reg * n_u * u)``.
    """
    y, bias = items_f[:, :-1].astype(np.float32), items_f[:, -1].astype(np.float32)
    n_items, rows = len(items_f) - 1, _rows(offsets)
    seen = np.unique(rows * (n_items + 1) + items)  # sorted (row, item) keys of the histories
    n_u = np.diff(offsets).astype(np.float32)[:, None]
    y_pos, b_pos = y[items], bias[items]
    user = np.zeros((len(offsets) - 1, y.shape[1]), dtype=np.float32)
    for step in range(steps):
        neg = bpr_negatives(seed, step, offsets, items, n_items)
        key = rows * (n_items + 1) + neg
        in_hist = seen[np.minimum(np.searchsorted(seen, key), max(len(seen) - 1, 0))] == key if len(items) else key < 0
        diff = y_pos - y[neg]  # (E, d - 1)
        x = np.einsum("ed,ed->e", user[rows], diff) + b_pos - bias[neg]
        w = np.where(in_hist, 0.0, 0.5 * (1.0 - np.tanh(0.5 * x))).astype(np.float32)  # sigmoid(-x), stable
        user += np.float32(lr) * (segment_sum(w[:, None] * diff, offsets) - np.float32(reg) * n_u * user)
    return user


class BPREncoder(Encoder):
    def __init__(self, spec: Mapping, factors: np.ndarray) -> None:
        super().__init__(spec)
        self.f, self.dim = np.asarray(factors, dtype=np.float32), factors.shape[1]

    def _encode(self, offsets: np.ndarray, items: np.ndarray) -> np.ndarray:
        s = self.spec
        user = bpr_fold_in(self.f, offsets, items, float(s["learning_rate"]), float(s["regularization"]),
                           int(s["steps"]), int(s["seed"]))
        return np.concatenate([user, np.ones((len(user), 1), np.float32)], axis=1)


class TowerHistoryEncoder(Encoder):
    def __init__(self, spec: Mapping, weights: Mapping[str, np.ndarray]) -> None:
        super().__init__({**spec, "normalize": False})  # the tower normalises itself
        self.tower = TowerEncoder(spec, weights)
        self.dim = self.tower.dim

    def encode(self, items: np.ndarray) -> np.ndarray:
        items = np.asarray(items, dtype=np.int64)[-self.tower.max_len:]
        return self.tower.encode_padded(items[None] if len(items) else np.zeros((1, 1), np.int64))[0]

    def _encode(self, offsets: np.ndarray, items: np.ndarray) -> np.ndarray:
        out, n = [], len(offsets) - 1
        for a in range(0, n, 256):
            off = offsets[a:a + 257]
            lens = np.minimum(np.diff(off), self.tower.max_len)
            t = max(int(lens.max()) if len(lens) else 1, 1)
            padded = np.zeros((len(lens), t), dtype=np.int64)
            col = np.arange(t)[None, :]
            first = (t - lens)[:, None]
            mask = col >= first
            padded[mask] = items[((off[1:] - lens)[:, None] + col - first)[mask]]
            out.append(self.tower.encode_padded(padded))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


class EnsembleEncoder(Encoder):
    def __init__(self, spec: Mapping, members: list[Encoder]) -> None:
        super().__init__({**spec, "normalize": False})
        self.members, self.scale = members, bool(spec.get("normalize"))
        self.dim = sum(m.dim for m in members)

    def encode(self, items: np.ndarray) -> np.ndarray:
        return self._join([m.encode(items)[None] for m in self.members])[0]

    def _encode(self, offsets: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self._join([m.encode_batch(offsets, items) for m in self.members])

    def _join(self, parts: list[np.ndarray]) -> np.ndarray:
        out = np.concatenate(parts, axis=1)
        return out / np.float32(np.sqrt(len(parts))) if self.scale else out


def build_encoder(spec: Mapping, weights: Mapping[str, np.ndarray], item_vectors: np.ndarray) -> Encoder:
    """The encoder a spec describes, checked against its weights and the bundle's item vectors.

    Raises
    ------
    ValueError
        An unknown ``kind``, a missing field or weight, or a shape that does not fit; the message
        names it.
    """
    enc = _build(spec, weights, item_vectors)
    if enc.dim != item_vectors.shape[1]:
        raise ValueError(f"{spec['kind']} encoder gives {enc.dim}-dim vectors, the bundle's items have "
                         f"{item_vectors.shape[1]}; re-export the bundle")
    return enc


def _build(spec: Mapping, weights: Mapping[str, np.ndarray], item_vectors: np.ndarray) -> Encoder:
    kind = spec.get("kind")
    if kind not in ENCODER_KINDS:
        raise ValueError(f"encoder kind {kind!r} is unknown to this server (it knows {list(ENCODER_KINDS)}); "
                         "upgrade serving or re-export the bundle with a matching recsys version")
    table = weights.get("item_table")
    if table is not None and table.shape[0] != item_vectors.shape[0]:
        raise ValueError(f"{kind} encoder item_table has {table.shape[0]} rows; the bundle has "
                         f"{item_vectors.shape[0]} (items + padding)")
    try:
        if kind == "ensemble":
            return EnsembleEncoder(spec, [
                _build(m, {k[len(f"m{i}."):]: v for k, v in weights.items() if k.startswith(f"m{i}.")}, item_vectors)
                for i, m in enumerate(spec["members"])])
        if kind == "none":
            return NoneEncoder(spec, item_vectors.shape[1])
        if kind == "mean":
            return MeanEncoder(spec, table if table is not None else item_vectors)
        if kind == "als":
            return ALSEncoder(spec, item_vectors)
        if kind == "bpr":
            return BPREncoder(spec, item_vectors)
        return TowerHistoryEncoder(spec, weights)
    except KeyError as exc:
        raise ValueError(f"{kind} encoder spec misses field {exc}; re-export the bundle") from exc
