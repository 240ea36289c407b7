"""Request-time history encoders: a JSON spec plus plain weight arrays, numpy only.

Specs (``manifest["encoder"]``)::

    {"type": "mean", "decay": 0.9, "max_len": 50, "normalize": false}
        user = sum_j decay**j * v[item_j] / sum_j decay**j, j = 0 for the most recent item.
        ``v`` is the weight ``item_table`` (n_items + 1, d) when the bundle carries one,
        else the bundle's item vectors. decay = 1.0 is the plain mean.
    {"type": "mean_linear", ..., "activation": "none" | "relu" | "tanh"}
        the "mean" above, then ``act(h @ W + b)`` with weights ``W`` (d_in, d) and ``b`` (d,).

``normalize`` L2-normalises the output (cosine models).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

ENCODER_TYPES = ("mean", "mean_linear")
_ACTIVATIONS = {"none": lambda x: x, "relu": lambda x: np.maximum(x, 0.0), "tanh": np.tanh}
DEFAULT_SPEC = {"type": "mean", "decay": 1.0, "max_len": 50, "normalize": False}


def validate_spec(spec: Mapping, weights: Mapping[str, np.ndarray], n_items: int, dim: int) -> dict:
    """Check a spec and its weights against the bundle shape; return the spec with defaults filled.

    Raises
    ------
    ValueError
        Naming the field or weight that is wrong and the shape it must have.
    """
    full = {**DEFAULT_SPEC, "activation": "none", **dict(spec)}
    if full["type"] not in ENCODER_TYPES:
        raise ValueError(f"encoder type {full['type']!r} is unknown; use one of {ENCODER_TYPES}")
    if not 0.0 < float(full["decay"]) <= 1.0:
        raise ValueError(f"encoder decay must lie in (0, 1]; got {full['decay']}")
    if full["max_len"] is not None and int(full["max_len"]) < 1:
        raise ValueError(f"encoder max_len must be >= 1 or null; got {full['max_len']}")
    if full["activation"] not in _ACTIVATIONS:
        raise ValueError(f"encoder activation {full['activation']!r} is unknown; use one of {list(_ACTIVATIONS)}")
    d_in = dim
    table = weights.get("item_table")
    if table is not None:
        if table.ndim != 2 or table.shape[0] != n_items + 1:
            raise ValueError(f"encoder weight item_table must be ({n_items + 1}, d_in); got {table.shape}")
        d_in = table.shape[1]
    if full["type"] == "mean_linear":
        w, b = weights.get("W"), weights.get("b")
        if w is None or b is None:
            raise ValueError("encoder type mean_linear needs weights 'W' (d_in, d) and 'b' (d,)")
        if w.shape != (d_in, dim) or b.shape != (dim,):
            raise ValueError(f"encoder W must be ({d_in}, {dim}) and b ({dim},); got {w.shape} and {b.shape}")
    elif table is None and dim != d_in:
        raise ValueError("a mean encoder without item_table must produce item-vector dims")
    return full


class HistoryEncoder:
    """Encode one history (item indices, oldest first) into a (d,) float32 query vector.

    Parameters
    ----------
    spec : validated spec (see the module docstring).
    item_vectors : (n_items + 1, d) the bundle's item vectors (used when there is no ``item_table``).
    weights : name -> array, the bundle's ``encoder_<name>.npy`` files.
    """

    def __init__(self, spec: Mapping, item_vectors: np.ndarray, weights: Mapping[str, np.ndarray]) -> None:
        self.spec = dict(spec)
        self.table = weights.get("item_table", item_vectors)
        self.w, self.b = weights.get("W"), weights.get("b")
        self.act = _ACTIVATIONS[self.spec.get("activation", "none")]

    def encode(self, items: np.ndarray) -> np.ndarray:
        """(d,) float32 vector of a history of item indices (oldest first, unknowns already removed)."""
        items = np.asarray(items, dtype=np.int64)
        max_len = self.spec.get("max_len")
        if max_len is not None:
            items = items[-int(max_len):]
        # weight decay**j with j = 0 for the most recent item, so recent items count most
        w = float(self.spec.get("decay", 1.0)) ** np.arange(len(items) - 1, -1, -1, dtype=np.float64)
        h = (w[:, None] * np.asarray(self.table[items], dtype=np.float64)).sum(0) / w.sum()
        if self.spec["type"] == "mean_linear":
            h = self.act(h @ self.w + self.b)
        if self.spec.get("normalize"):
            h = h / max(np.linalg.norm(h), 1e-12)
        return h.astype(np.float32)
