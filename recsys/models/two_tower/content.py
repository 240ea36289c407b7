"""Item features for the item tower from a config: which parts (``TwoTowerConfig.features``) and their content.

    >>> feats, sources = build_item_features(cfg, items_meta, n_items, raw_ids)   # doctest: +SKIP

Parts: ``"categories"`` (category bag), ``"ngrams"`` (hashed title + tag n-grams), ``"text"`` (a sentence
model's vector of title, categories and tags, :mod:`recsys.content`) and ``"vectors"`` (precomputed
vectors from ``cfg.vectors_path``, keyed by raw item id). ``"text"`` and ``"vectors"`` fill the tower's
one dense input, so a config takes at most one of them.

``sources`` says, per item, what its content came from: "text", "categories" (no title or tags: the
text is its category names), "vectors", or "none" (no content at all; serving answers popularity for
such an item and says so). :func:`new_item_features` computes the same for items added after training.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from recsys.content import CachedEncoder, SentenceEncoder, item_texts, read_vectors
from recsys.content.text import NONE
from recsys.models.two_tower.config import TwoTowerConfig
from recsys.models.two_tower.features import ItemFeatures

VECTORS = "vectors"


def _column(frame: pl.DataFrame, name: str) -> list | None:
    return frame[name].to_list() if name in frame.columns else None


def dense_source(cfg: TwoTowerConfig) -> str:
    """``"text:<model>"``, ``"vectors:<path>"`` or "" for the config's dense content input."""
    if "text" in cfg.features:
        return f"text:{cfg.text_model}"
    if VECTORS in cfg.features:
        return f"vectors:{cfg.vectors_path}"
    return ""


def content_vectors(source: str, frame: pl.DataFrame, raw_ids: Sequence, cache_dir: str | Path | None,
                    progress: bool = True) -> tuple[np.ndarray | None, list[str]]:
    """``(vectors (frame.height, k) or None, sources)`` for the rows of ``frame`` (title/categories/tags)."""
    titles = _column(frame, "title") or [None] * frame.height
    texts, sources = item_texts(titles, _column(frame, "categories"), _column(frame, "tags"))
    if source.startswith("text:"):
        enc = CachedEncoder(SentenceEncoder(source[len("text:"):]), cache_dir, progress=progress)
        return enc.encode(texts), sources
    if source.startswith("vectors:"):
        vecs, found = read_vectors(source[len("vectors:"):], list(raw_ids))
        return vecs, [VECTORS if f else NONE for f in found]
    return None, sources


def build_item_features(cfg: TwoTowerConfig, meta: pl.DataFrame | None, n_items: int, raw_ids: Sequence,
                        cache_dir: str | Path | None = None,
                        progress: bool = True) -> tuple[ItemFeatures | None, list[str]]:
    """Features of items ``1..n_items`` (``meta`` keyed by ``item_idx``; ``raw_ids[i - 1]`` = item i's raw id).

    Returns ``(None, [])`` when the config asks for no features or there is nothing to build them from.
    """
    if not cfg.features or (meta is None and VECTORS not in cfg.features):
        return None, []
    full = pl.DataFrame({"item_idx": np.arange(1, n_items + 1, dtype=np.int64)})
    if meta is not None:
        full = full.join(meta.with_columns(pl.col("item_idx").cast(pl.Int64)), on="item_idx", how="left",
                         maintain_order="left")
    source = dense_source(cfg)
    dense, sources = content_vectors(source, full, raw_ids, cache_dir or cfg.content_cache, progress)
    if dense is not None:
        dense = np.concatenate([np.zeros((1, dense.shape[1]), np.float32), dense])
    feats = ItemFeatures.from_frame(full if meta is not None else full.head(0), n_items, cfg.text_buckets,
                                    cfg.ngram_min, cfg.ngram_max, dense=dense,
                                    categories="categories" in cfg.features, ngrams="ngrams" in cfg.features,
                                    dense_source=source)
    return feats, sources


def new_item_features(features: ItemFeatures, catalogue: pl.DataFrame, cache_dir: str | Path | None = None,
                      progress: bool = True) -> tuple[ItemFeatures, list[str]]:
    """Features of the catalogue's items (rows in order; an ``item`` column of raw ids, plus title /
    categories / tags), encoded with the trained ``features``' vocabulary, hashing and content source."""
    if "item" not in catalogue.columns:
        raise ValueError(f"the catalogue needs an 'item' column of raw ids; it has {catalogue.columns}")
    dense, sources = content_vectors(features.dense_source, catalogue, catalogue["item"].to_list(), cache_dir,
                                     progress)
    titles = _column(catalogue, "title") or [None] * catalogue.height
    cats = _column(catalogue, "categories") or [None] * catalogue.height
    new = features.encode_new(titles, cats, _column(catalogue, "tags"), dense if features.dense is not None else None)
    if features.dense is None:  # no dense part: the content is what the bags hold
        sources = [s if s != "text" or features.ngrams else ("categories" if c else NONE)
                   for s, c in zip(sources, cats, strict=True)]
    return new, sources
