"""The two-tower user towers in numpy (pooled and causal Transformer), for serving without torch.

Weights are the torch user tower's ``state_dict`` entries under their own names plus ``item_table``
(the item tower's vector of every item, side features folded in at export), so
:class:`TowerEncoder` reproduces ``TwoTower.encode_users`` to float32 round-off. A history is
right-aligned as the torch tower sees it: the newest item always has position ``max_len - 1``, and
padding is masked out of attention, so encoding ``(B, t)`` without padding equals encoding the
left-padded ``(B, max_len)``. Only the newest position's output is computed in the last block.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def _erf(x: np.ndarray) -> np.ndarray:
    """Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), so GELU matches torch's exact erf form; in place
    on temporaries (this is most of the FFN's elementwise work)."""
    a = np.abs(x)
    t = 0.3275911 * a
    t += 1.0
    np.reciprocal(t, out=t)
    poly = 1.061405429 * t
    for c in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        poly += c
        poly *= t
    np.multiply(a, a, out=a)
    np.negative(a, out=a)
    np.exp(a, out=a)
    poly *= a
    np.subtract(1.0, poly, out=poly)
    return np.copysign(poly, x, out=poly)


def _gelu(x: np.ndarray) -> np.ndarray:
    e = _erf(x * np.float32(1.0 / np.sqrt(2.0)))
    e += 1.0
    e *= x
    e *= 0.5
    return e


def _ln(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    d = np.float32(1.0 / x.shape[-1])
    xc = x - np.add.reduce(x, axis=-1, keepdims=True) * d
    var = np.add.reduce(xc * xc, axis=-1, keepdims=True) * d
    var += eps
    xc /= np.sqrt(var, out=var)
    xc *= w
    xc += b
    return xc


def _softmax(z: np.ndarray) -> np.ndarray:
    top = np.max(z, axis=-1, keepdims=True)
    e = np.exp(z - np.where(np.isfinite(top), top, 0.0))  # rows of all -inf give 0 / 0, cleaned by the caller
    with np.errstate(invalid="ignore"):
        return e / e.sum(-1, keepdims=True)


def _softmax_inplace(z: np.ndarray) -> np.ndarray:
    """Softmax of rows that each hold a finite value (every query sees itself), overwriting ``z``."""
    z -= np.max(z, axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= np.add.reduce(z, axis=-1, keepdims=True)
    return z


def required_weights(spec: Mapping) -> list[str]:
    """Weight names a tower spec needs (the loader checks they are all in the bundle)."""
    names = ["item_table", "norm.weight", "norm.bias"] if spec["kind"] == "pooled" else ["item_table", "pos.weight"]
    bsa = spec["kind"] == "transformer_bsa"
    if spec["kind"] == "pooled":
        names += ["mlp.0.weight", "mlp.3.weight"]
        if spec["pooling"] == "attention":
            names += ["score.0.weight", "score.2.weight", "recency"]
    else:
        for i in range(int(spec["n_layers"])):
            names += [f"blocks.{i}.{n}.weight" for n in ("ln1", "qkv", "proj", "ln2", "ffn.0", "ffn.3")]
            names += [f"blocks.{i}.beta"] if bsa else []
        names += ["ln_f.weight", "ln_f.bias"] + (["lowpass"] if bsa else [])
    return names


class TowerEncoder:
    """Pooled or Transformer user tower over item-index histories, numpy float32.

    Parameters
    ----------
    spec : ``{"kind": "pooled" | "transformer" | "transformer_bsa", "pooling", "dim", "max_len", "n_layers",
        "n_heads", "normalize"}``; ``"transformer_bsa"`` (a Transformer with BSARec's frequency filter, its own
        kind so that a server too old to know the filter refuses the bundle) also needs ``"bsa_alpha"``.
    weights : name -> array (see the module docstring).
    """

    def __init__(self, spec: Mapping, weights: Mapping[str, np.ndarray]) -> None:
        missing = [n for n in required_weights(spec) if n not in weights]
        if missing:
            raise ValueError(f"{spec['kind']} encoder misses weights {missing[:5]}; re-export the bundle")
        self.spec = dict(spec)
        self.w = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}
        self.max_len = int(spec["max_len"])
        # (out, in) torch layout -> (in, out) once, so every product is x @ W
        self.wt = {k[: -len(".weight")]: v.T.copy() for k, v in self.w.items()
                   if k.endswith(".weight") and v.ndim == 2 and k not in ("pos.weight",)}
        # additive causal masks (0 / -inf) by history length, for unpadded requests
        tril = np.tril(np.ones((self.max_len, self.max_len), dtype=bool))
        self._causal = np.where(tril, np.float32(0.0), np.float32(-np.inf))
        self._slices: dict[tuple, tuple] = {}  # the last block's query and key/value columns, split once
        if spec["kind"] != "pooled":
            name, d = f"blocks.{int(spec['n_layers']) - 1}.qkv", self.w["item_table"].shape[1]
            bias = self.w.get(f"{name}.bias")
            for a, b in ((0, d), (d, 3 * d)):
                self._slices[(name, a, b)] = (np.ascontiguousarray(self.wt[name][:, a:b]),
                                              None if bias is None else bias[a:b].copy())

    @property
    def dim(self) -> int:
        return int(self.w["item_table"].shape[1])

    def encode_padded(self, padded: np.ndarray) -> np.ndarray:
        """(B, T) item indices, left-padded with 0, T <= max_len -> (B, dim) float32 user vectors."""
        padded = np.asarray(padded, dtype=np.int64)[:, -self.max_len:]
        x = self.w["item_table"][padded]  # (B, T, D)
        valid = padded > 0
        out = self._pooled(x, valid) if self.spec["kind"] == "pooled" else self._transformer(x, valid)
        if self.spec.get("normalize"):
            out = out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
        return out.astype(np.float32)

    def _lin(self, x: np.ndarray, name: str) -> np.ndarray:
        y = x @ self.wt[name]
        bias = self.w.get(f"{name}.bias")
        return y + bias if bias is not None else y

    def _lin_cols(self, x: np.ndarray, name: str, a: int, b: int) -> np.ndarray:
        """Output columns ``a:b`` of the linear layer ``name`` alone (contiguous weight slices made at load)."""
        w, bias = self._slices[(name, a, b)]
        y = x @ w
        return y + bias if bias is not None else y

    @staticmethod
    def _visible(valid: np.ndarray) -> np.ndarray:
        t = valid.shape[1]
        tril = np.tril(np.ones((t, t), dtype=bool))
        return (tril[None] & valid[:, None, :]) | np.eye(t, dtype=bool)[None]  # as user_tower.causal_mask

    def _pooled(self, x: np.ndarray, valid: np.ndarray) -> np.ndarray:
        t = x.shape[1]
        visible = valid  # the last query sees every valid item (causal mask row T - 1)
        if self.spec["pooling"] == "attention":
            score = self._lin(np.tanh(self._lin(x, "score.0")), "score.2")[..., 0]  # (B, T)
            gap = np.clip(t - 1 - np.arange(t), 0, self.max_len - 1)
            logits = score + self.w["recency"][gap][None]
        else:
            logits = np.zeros(visible.shape, dtype=np.float32)
        w = _softmax(np.where(visible, logits, -np.inf))
        w = np.where(visible.any(-1, keepdims=True), np.nan_to_num(w), 0.0).astype(np.float32)
        pooled = np.einsum("bt,btd->bd", w, x)  # (B, D)
        h = _ln(pooled, self.w["norm.weight"], self.w["norm.bias"])
        return pooled + self._lin(_gelu(self._lin(h, "mlp.0")), "mlp.3")

    def _filter(self, z: np.ndarray, beta: np.ndarray, last: bool) -> np.ndarray:
        """``recsys.models.two_tower.user_tower.frequency_filter`` of ``z`` (B, T, D), padding already 0: the
        right-aligned window's low frequencies plus beta**2 times the rest; the newest position alone if ``last``."""
        t = z.shape[1]
        rows = self.w["lowpass"][-1:, -t:] if last else self.w["lowpass"][-t:, -t:]
        low = np.einsum("st,btd->bsd", rows, z)
        zz = z[:, -1:] if last else z
        return low + beta * beta * (zz - low)

    def _transformer(self, x: np.ndarray, valid: np.ndarray) -> np.ndarray:
        b, t, d = x.shape
        heads, hd = int(self.spec["n_heads"]), d // int(self.spec["n_heads"])
        pos = self.w["pos.weight"][self.max_len - t:]
        h = x * np.float32(np.sqrt(d)) + pos[None]
        dense = bool(valid.all())  # no padding (one request): an additive causal mask, no masked rows
        if dense:
            add = self._causal[self.max_len - t:, self.max_len - t:]  # (T, T), the same lower triangle
        else:
            h *= valid[..., None]
            mask = self._visible(valid)[:, None]  # (B, 1, T, T)
        n_layers = int(self.spec["n_layers"])
        scale = np.float32(1.0 / np.sqrt(hd))
        alpha = float(self.spec["bsa_alpha"]) if self.spec["kind"] == "transformer_bsa" else 0.0
        for i in range(n_layers):
            p, last = f"blocks.{i}", i == n_layers - 1
            x1 = _ln(h, self.w[f"{p}.ln1.weight"], self.w[f"{p}.ln1.bias"])
            filt = self._filter(x1 if dense else x1 * valid[..., None], self.w[f"{p}.beta"], last) if alpha else None
            if last:  # the user vector is the newest position's output: its query alone in the last block
                q = self._lin_cols(x1[:, -1:], f"{p}.qkv", 0, d)
                kv = self._lin_cols(x1, f"{p}.qkv", d, 3 * d)
                k, v, h = kv[..., :d], kv[..., d:], h[:, -1:]
            else:
                qkv = self._lin(x1, f"{p}.qkv")
                q, k, v = qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:]
            q, k, v = (z.reshape(b, -1, heads, hd).transpose(0, 2, 1, 3) for z in (q, k, v))
            scores = q @ k.transpose(0, 1, 3, 2)  # (B, H, Tq, T)
            scores *= scale
            if dense:
                scores += add[-1:] if last else add
                att = _softmax_inplace(scores) @ v
            else:
                att = _softmax(np.where(mask[:, :, -1:] if last else mask, scores, -np.inf)) @ v
            mixed = self._lin(att.transpose(0, 2, 1, 3).reshape(b, -1, d), f"{p}.proj")
            if filt is not None:
                mixed = np.float32(alpha) * filt + np.float32(1.0 - alpha) * mixed
            h = h + mixed
            f = _ln(h, self.w[f"{p}.ln2.weight"], self.w[f"{p}.ln2.bias"])
            h = h + self._lin(_gelu(self._lin(f, f"{p}.ffn.0")), f"{p}.ffn.3")
        return _ln(h, self.w["ln_f.weight"], self.w["ln_f.bias"])[:, -1]
