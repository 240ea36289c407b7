"""Item side features for the item tower: categorical bags, hashed title n-grams, dense vectors.

:class:`ItemFeatures` holds, for item ids ``0..n_items`` (row 0 = padding, always empty), two
CSR "bags" of integer tokens and an optional dense matrix::

    >>> df = pl.DataFrame({"item_idx": [1, 2], "title": ["Red lipstick", None],
    ...                    "categories": [["Beauty", "Lips"], ["Beauty"]]})
    >>> f = ItemFeatures.from_frame(df, n_items=2, text_buckets=1000)
    >>> f.cat_vocab, f.categories_of(1).tolist(), f.categories_of(2).tolist()
    (['Beauty', 'Lips'], [1, 2], [1])
    >>> len(f.text_of(1)) > 0, len(f.text_of(2))
    (True, 0)

Title tokens (the title and, where the data has them, the tags) are fastText style: every
lower-cased word as ``<w>`` plus the character n-grams of
``<w>`` (lengths ``ngram_min..ngram_max``, shorter than ``<w>`` itself), each hashed with CRC32 into ``1..text_buckets``
(0 = padding). Hashing is stable across processes, so an item never seen in training (or one
added after training, see :meth:`ItemFeatures.encode_new`) still gets title tokens and a vector.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

_WORD = re.compile(r"\w+", re.UNICODE)


def text_tokens(text: str | None, buckets: int, ngram_min: int = 3, ngram_max: int = 5) -> list[int]:
    """Hashed word + character n-gram tokens of ``text``, each in ``1..buckets``."""
    if not text:
        return []
    grams: list[str] = []
    for w in _WORD.findall(text.lower()):
        padded = f"<{w}>"
        grams.append(padded)  # the whole word, bracketed so it differs from its n-gram "red" in "<redo>"
        for n in range(ngram_min, ngram_max + 1):
            grams.extend(padded[i : i + n] for i in range(len(padded) - n + 1) if padded[i : i + n] != padded)
    return [1 + zlib.crc32(g.encode("utf-8")) % buckets for g in grams]


def _bags(rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = np.fromiter((v for r in rows for v in r), dtype=np.int64, count=int(offsets[-1]))
    return offsets, values


def _as_list(cats: object) -> list[str]:
    """Categories given as a list or as one ``|``-separated string (MovieLens genres)."""
    if cats is None:
        return []
    if isinstance(cats, str):
        return [c for c in cats.split("|") if c]
    return [str(c) for c in cats if c is not None]


def _join_title(title: str | None, tags: object) -> str | None:
    """The text whose words are hashed: the title plus the tags, when there are any."""
    words = [title] if title else []
    words += _as_list(tags) if not isinstance(tags, str) else [tags]
    return " ".join(words) or None


def _ngram_texts(frame: pl.DataFrame) -> list[str | None]:
    titles = frame["title"].to_list() if "title" in frame.columns else [None] * frame.height
    tags = frame["tags"].to_list() if "tags" in frame.columns else [None] * frame.height
    return [_join_title(t, g) for t, g in zip(titles, tags, strict=True)]


@dataclass(frozen=True)
class ItemFeatures:
    """Side features of items ``0..n_items`` (row 0 = padding, empty).

    Attributes
    ----------
    n_items : int
    cat_offsets, cat_values : (n_items + 2,) int64 and (n_cat_tokens,) int64 category ids in
        ``1..len(cat_vocab)``; item ``i`` has ``cat_values[cat_offsets[i]:cat_offsets[i + 1]]``.
    text_offsets, text_values : same layout for hashed title tokens in ``1..text_buckets``.
    cat_vocab : category names; id ``c`` is ``cat_vocab[c - 1]``.
    text_buckets, ngram_min, ngram_max : hashing parameters (needed to encode new titles).
    dense : (n_items + 1, k) float32 content vectors (:mod:`recsys.content`), or None.
    dense_source : where ``dense`` came from, so new items get theirs the same way: ``"text:<model>"``
        (a sentence model over title, categories and tags) or ``"vectors:<path>"`` (precomputed); "" without.
    ngrams : whether title n-gram bags are used (False: ``text_values`` stays empty, for new items too).
    """

    n_items: int
    cat_offsets: np.ndarray
    cat_values: np.ndarray
    text_offsets: np.ndarray
    text_values: np.ndarray
    cat_vocab: list[str]
    text_buckets: int
    ngram_min: int = 3
    ngram_max: int = 5
    dense: np.ndarray | None = None
    dense_source: str = ""
    ngrams: bool = True

    def __post_init__(self) -> None:
        for name in ("cat", "text"):
            off = getattr(self, f"{name}_offsets")
            if len(off) != self.n_items + 2 or off[-1] != len(getattr(self, f"{name}_values")):
                raise ValueError(f"ItemFeatures.{name}_offsets must have n_items + 2 = {self.n_items + 2} entries "
                                 f"ending at len({name}_values); got {len(off)} entries")
        if self.dense is not None and self.dense.shape[0] != self.n_items + 1:
            raise ValueError(f"ItemFeatures.dense has {self.dense.shape[0]} rows; it needs n_items + 1 = "
                             f"{self.n_items + 1} (row 0 = padding)")

    @property
    def n_categories(self) -> int:
        return len(self.cat_vocab)

    @property
    def dense_dim(self) -> int:
        return 0 if self.dense is None else int(self.dense.shape[1])

    def categories_of(self, item: int) -> np.ndarray:
        return self.cat_values[self.cat_offsets[item] : self.cat_offsets[item + 1]]

    def text_of(self, item: int) -> np.ndarray:
        return self.text_values[self.text_offsets[item] : self.text_offsets[item + 1]]

    @classmethod
    def from_frame(
        cls,
        frame: pl.DataFrame,
        n_items: int,
        text_buckets: int = 50_000,
        ngram_min: int = 3,
        ngram_max: int = 5,
        dense: np.ndarray | None = None,
        categories: bool = True,
        ngrams: bool = True,
        dense_source: str = "",
    ) -> ItemFeatures:
        """Build from a frame with ``item_idx`` (1..n_items) and optional ``title`` / ``categories`` / ``tags``.

        ``categories`` (the column) is a list column or a ``|``-separated string; ``tags`` a list column
        whose words join the title's n-grams. Items absent from the frame get empty bags. A duplicate or
        out-of-range ``item_idx`` is an error. ``categories`` / ``ngrams`` (the flags) False leave those bags
        out; ``dense`` is (n_items + 1, k) content vectors from ``dense_source``.
        """
        if "item_idx" not in frame.columns:
            raise ValueError(f"item feature frame needs an item_idx column; it has {frame.columns}")
        idx = frame["item_idx"].to_numpy().astype(np.int64)
        bad = idx[(idx < 1) | (idx > n_items)]
        if len(bad):
            raise ValueError(f"item feature frame: item_idx {bad[:5].tolist()} outside 1..{n_items}")
        if len(np.unique(idx)) != len(idx):
            raise ValueError("item feature frame: item_idx must be unique (one row per item)")
        cats = frame["categories"].to_list() if categories and "categories" in frame.columns else [None] * len(idx)
        titles = _ngram_texts(frame) if ngrams else [None] * len(idx)
        vocab = sorted({c for cs in cats for c in _as_list(cs)})
        code = {c: i + 1 for i, c in enumerate(vocab)}
        cat_rows: list[list[int]] = [[] for _ in range(n_items + 1)]
        text_rows: list[list[int]] = [[] for _ in range(n_items + 1)]
        for i, cs, t in zip(idx, cats, titles, strict=True):
            cat_rows[i] = [code[c] for c in _as_list(cs)]
            text_rows[i] = text_tokens(t, text_buckets, ngram_min, ngram_max)
        co, cv = _bags(cat_rows)
        to, tv = _bags(text_rows)
        dense = None if dense is None else np.asarray(dense, dtype=np.float32)
        return cls(n_items, co, cv, to, tv, vocab, text_buckets, ngram_min, ngram_max, dense, dense_source, ngrams)

    def encode_new(self, titles: Iterable[str | None], categories: Iterable[object],
                   tags: Iterable[object] | None = None, dense: np.ndarray | None = None) -> ItemFeatures:
        """Features of new items (ids 1..n in the given order) with this vocabulary and hashing.

        Unknown category names are dropped (their embedding was never trained). ``tags`` join the
        titles' n-grams as in :meth:`from_frame`. ``dense`` (n, k) is required exactly when these
        features have content vectors (compute them from ``dense_source``, see :func:`recsys.content`).
        """
        code = {c: i + 1 for i, c in enumerate(self.cat_vocab)}
        titles, categories = list(titles), list(categories)
        tag_lists = list(tags) if tags is not None else [None] * len(titles)
        cat_rows = [[]] + [[code[c] for c in _as_list(cs) if c in code] for cs in categories]
        texts = [_join_title(t, g) for t, g in zip(titles, tag_lists, strict=True)]
        text_rows = [[]] + ([text_tokens(t, self.text_buckets, self.ngram_min, self.ngram_max) for t in texts]
                            if self.ngrams else [[] for _ in texts])
        if (dense is None) != (self.dense is None):
            raise ValueError("encode_new: pass dense content vectors exactly when the trained features have them "
                             f"(dense_source {self.dense_source!r})")
        if dense is not None:
            dense = np.asarray(dense, dtype=np.float32)
            if dense.shape != (len(titles), self.dense_dim):
                raise ValueError(f"encode_new: dense must be ({len(titles)}, {self.dense_dim}); got {dense.shape}")
            dense = np.concatenate([np.zeros((1, self.dense_dim), np.float32), dense])
        co, cv = _bags(cat_rows)
        to, tv = _bags(text_rows)
        return ItemFeatures(len(titles), co, cv, to, tv, list(self.cat_vocab), self.text_buckets,
                            self.ngram_min, self.ngram_max, dense, self.dense_source, self.ngrams)

    def save(self, directory: str | Path) -> None:
        """Arrays as .npy and the rest as ``features.json`` (no pickle)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for name in ("cat_offsets", "cat_values", "text_offsets", "text_values"):
            np.save(d / f"{name}.npy", getattr(self, name))
        if self.dense is not None:
            np.save(d / "dense.npy", self.dense)
        meta = {"n_items": self.n_items, "cat_vocab": self.cat_vocab, "text_buckets": self.text_buckets,
                "ngram_min": self.ngram_min, "ngram_max": self.ngram_max, "dense_source": self.dense_source,
                "ngrams": self.ngrams}
        (d / "features.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, directory: str | Path) -> ItemFeatures:
        d = Path(directory)
        if not (d / "features.json").is_file():
            raise FileNotFoundError(f"{d} holds no item features (features.json missing)")
        meta = json.loads((d / "features.json").read_text())
        arrays = {n: np.load(d / f"{n}.npy", allow_pickle=False)
                  for n in ("cat_offsets", "cat_values", "text_offsets", "text_values")}
        dense = np.load(d / "dense.npy", allow_pickle=False) if (d / "dense.npy").exists() else None
        return cls(meta["n_items"], **arrays, cat_vocab=meta["cat_vocab"], text_buckets=meta["text_buckets"],
                   ngram_min=meta["ngram_min"], ngram_max=meta["ngram_max"], dense=dense,
                   dense_source=meta.get("dense_source", ""), ngrams=meta.get("ngrams", True))
