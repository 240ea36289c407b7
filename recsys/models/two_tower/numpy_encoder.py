"""The user towers re-implemented in numpy, for serving without torch (this module imports numpy only).

:func:`recsys.models.two_tower.export.export_user_encoder` writes ``encoder.json`` (the spec) and one
``.npy`` per weight (the tower's ``state_dict`` names, plus ``item_table`` = the item tower's
vectors used as history inputs). :class:`NumpyUserEncoder` reads them and reproduces
``TwoTower.encode_users`` to float32 round-off::

    enc = NumpyUserEncoder.load("export/user_encoder")
    vecs = enc.encode(padded)        # padded: (B, max_len) int item ids, left-padded with 0 -> (B, dim)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _erf(x: np.ndarray) -> np.ndarray:
    """Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), so GELU matches torch's exact erf form."""
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return s * (1.0 - poly * np.exp(-a * a))


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / np.sqrt(2.0)))


def _ln(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _softmax(z: np.ndarray) -> np.ndarray:
    top = np.max(z, axis=-1, keepdims=True)
    e = np.exp(z - np.where(np.isfinite(top), top, 0.0))  # rows of all -inf give 0 / 0, cleaned by the caller
    with np.errstate(invalid="ignore"):
        return e / e.sum(-1, keepdims=True)


class NumpyUserEncoder:
    """Pooled or Transformer user tower over item-id histories, numpy only; an ensemble's encoder
    (``kind = "ensemble"``) holds one per member and puts their vectors side by side."""

    def __init__(self, spec: dict, weights: dict[str, np.ndarray],
                 members: list[NumpyUserEncoder] | None = None) -> None:
        if spec.get("kind") not in ("pooled", "transformer", "ensemble"):
            raise ValueError(f"encoder kind must be 'pooled', 'transformer' or 'ensemble'; got {spec.get('kind')!r}")
        if (spec["kind"] == "ensemble") != bool(members):
            raise ValueError("an 'ensemble' encoder needs its member encoders, and only it has them")
        self.spec, self.w, self.members = spec, weights, members or []

    @classmethod
    def load(cls, directory: str | Path) -> NumpyUserEncoder:
        d = Path(directory)
        if not (d / "encoder.json").is_file():
            raise FileNotFoundError(f"{d} holds no exported user encoder (encoder.json missing)")
        spec = json.loads((d / "encoder.json").read_text())
        if spec.get("kind") == "ensemble":
            return cls(spec, {}, [cls.load(d / f"member_{i}") for i in range(int(spec["members"]))])
        weights = {name: np.load(d / f"{name}.npy", allow_pickle=False) for name in spec["weights"]}
        return cls(spec, weights)

    def encode(self, padded: np.ndarray) -> np.ndarray:
        """(B, max_len) int item ids, left-padded with 0 -> (B, dim) float32 user vectors."""
        padded = np.asarray(padded, dtype=np.int64)
        if self.members:  # the members' vectors side by side, as TwoTowerEnsemble.encode_users
            out = np.concatenate([m.encode(padded) for m in self.members], axis=1)
            return out / np.float32(np.sqrt(len(self.members))) if self.spec["similarity"] == "cosine" else out
        x = self.w["item_table"][padded].astype(np.float64)  # (B, T, D)
        valid = padded > 0
        out = self._transformer(x, valid) if self.spec["kind"] == "transformer" else self._pooled(x, valid)
        if self.spec["similarity"] == "cosine":
            out = out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
        return out.astype(np.float32)

    def _lin(self, x: np.ndarray, name: str) -> np.ndarray:
        y = x @ self.w[f"{name}.weight"].T
        return y + self.w[f"{name}.bias"] if f"{name}.bias" in self.w else y

    def _visible(self, valid: np.ndarray) -> np.ndarray:
        t = valid.shape[1]
        tril = np.tril(np.ones((t, t), dtype=bool))
        return (tril[None] & valid[:, None, :]) | np.eye(t, dtype=bool)[None]  # as user_tower.causal_mask

    def _pooled(self, x: np.ndarray, valid: np.ndarray) -> np.ndarray:
        t = x.shape[1]
        visible = (self._visible(valid) & valid[:, None, :])[:, -1]  # (B, T): only the last query is needed
        if self.spec["pooling"] == "attention":
            score = self._lin(np.tanh(self._lin(x, "score.0")), "score.2")[..., 0]  # (B, T)
            gap = np.clip(t - 1 - np.arange(t), 0, self.spec["max_len"] - 1)
            logits = score + self.w["recency"][gap][None]
        else:
            logits = np.zeros(visible.shape)
        w = _softmax(np.where(visible, logits, -np.inf))
        w = np.where(visible.any(-1, keepdims=True), np.nan_to_num(w), 0.0)
        pooled = (w[..., None] * x).sum(1)  # (B, D)
        h = _ln(pooled, self.w["norm.weight"], self.w["norm.bias"])
        return pooled + self._lin(_gelu(self._lin(h, "mlp.0")), "mlp.3")

    def _transformer(self, x: np.ndarray, valid: np.ndarray) -> np.ndarray:
        b, t, d = x.shape
        heads = self.spec["n_heads"]
        pos = self.w["pos.weight"][self.spec["max_len"] - t :]
        h = (x * np.sqrt(d) + pos[None]) * valid[..., None]
        mask = self._visible(valid)[:, None]  # (B, 1, T, T)
        for i in range(self.spec["n_layers"]):
            p = f"blocks.{i}"
            qkv = self._lin(_ln(h, self.w[f"{p}.ln1.weight"], self.w[f"{p}.ln1.bias"]), f"{p}.qkv")
            q, k, v = (z.reshape(b, t, heads, d // heads).transpose(0, 2, 1, 3) for z in np.split(qkv, 3, axis=-1))
            att = _softmax(np.where(mask, q @ k.transpose(0, 1, 3, 2) / np.sqrt(d // heads), -np.inf)) @ v
            h = h + self._lin(att.transpose(0, 2, 1, 3).reshape(b, t, d), f"{p}.proj")
            f = _ln(h, self.w[f"{p}.ln2.weight"], self.w[f"{p}.ln2.bias"])
            h = h + self._lin(_gelu(self._lin(f, f"{p}.ffn.0")), f"{p}.ffn.3")
        return _ln(h, self.w["ln_f.weight"], self.w["ln_f.bias"])[:, -1]
