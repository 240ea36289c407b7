"""New catalogue items served without retraining: content vectors from the trained item tower.

    >>> export_with_catalogue("out/b2", model, data.items.ids, data.users.ids, all_events(data),
    ...                       "catalogue.csv")                                  # doctest: +SKIP

The catalogue lists items by raw id with their content (``title``, ``categories``, ``tags``; lists or
``|``-separated strings). Items the model already knows keep their trained vectors, bit for bit;
each new item gets the feature-only vector of the trained item tower over its content (the same
text model and hashing as in training) as a candidate, and the matching row of the encoder's item
table, so a history that holds it is encoded as the model would. The bundle is then exported by the
one export path (:func:`recsys.export.bundle.export_model`: index rebuilt, encoder checked) and its
manifest's ``content_only`` lists every new item with what its vector came from: "text",
"categories" (no title or tags), "vectors" (precomputed), or "none" (no content at all: a zero
vector, never retrieved; serving answers popularity for it and says so).

Only models with item features can do this (the two-tower models trained with ``features``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recsys.content.text import NONE
from recsys.ingest.errors import DataError
from recsys.models.base import Model
from recsys.prepare.sequences import Sequences

log = logging.getLogger(__name__)
_LIST_COLUMNS = ("categories", "tags")


def read_catalogue(path: str | Path) -> pl.DataFrame:
    """A catalogue file (.csv, .tsv, .parquet, .jsonl) as ``item`` + title / categories / tags columns."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"catalogue {p} not found")
    try:
        if p.suffix == ".parquet":
            frame = pl.read_parquet(p)
        elif p.suffix in (".jsonl", ".ndjson"):
            frame = pl.read_ndjson(p)
        elif p.suffix in (".csv", ".tsv"):
            frame = pl.read_csv(p, separator="\t" if p.suffix == ".tsv" else ",", infer_schema=False)
        else:
            raise DataError(f"{p}: a catalogue must be .csv, .tsv, .parquet or .jsonl")
    except (pl.exceptions.PolarsError, OSError) as e:
        raise DataError(f"{p}: cannot read the catalogue ({e}); fix the file") from e
    if "item" not in frame.columns:
        raise DataError(f"{p}: a catalogue needs an 'item' column of raw item ids (found {frame.columns})")
    if frame["item"].null_count():
        row = int(np.argmax(frame["item"].is_null().to_numpy()))
        raise DataError(f"{p}: row {row + 1} has no item id; every catalogue row names its item")
    dup = frame.filter(pl.col("item").is_duplicated())["item"].unique().head(3).to_list()
    if dup:
        raise DataError(f"{p}: items {dup} are listed twice; keep one row per item")
    for col in _LIST_COLUMNS:
        if col in frame.columns and frame[col].dtype == pl.String:
            frame = frame.with_columns(pl.col(col).str.split("|").list.eval(pl.element().filter(
                pl.element().str.len_chars() > 0)).alias(col))
    return frame


def _same_kind(ids: pl.Series, known: pl.Series, path: str) -> pl.Series:
    """Catalogue ids in the known ids' type (a CSV reads every id as text)."""
    if known.dtype == ids.dtype:
        return ids
    cast = ids.cast(known.dtype, strict=False)
    if cast.null_count() > ids.null_count():
        bad = ids.filter(cast.is_null() & ids.is_not_null()).head(3).to_list()
        raise DataError(f"{path}: item ids {bad} are not {known.dtype} like the bundle's; fix the catalogue's ids")
    return cast


class ExtendedModel(Model):
    """A fitted model plus new items appended after its own (index ``n + 1`` onwards); read-only."""

    def __init__(self, model: Model, n_known: int, vectors: np.ndarray, tables: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.model, self.n_known = model, n_known
        self.name, self.similarity = model.name, model.similarity
        self._vectors, self._tables = vectors, tables
        self._train = model._train

    def capacity(self) -> int:
        return self.model.capacity()

    def fit(self, *args: Any, **kwargs: Any) -> ExtendedModel:
        raise TypeError("an ExtendedModel only exports; fit the underlying model")

    def save(self, directory: str | Path) -> None:
        raise TypeError("an ExtendedModel only exports; its bundle is what is kept (save the underlying model)")

    @classmethod
    def load(cls, directory: str | Path, device: str = "auto") -> ExtendedModel:
        raise TypeError("an ExtendedModel is not saved; load the underlying model and extend it again")

    def item_vectors(self) -> np.ndarray:
        return np.concatenate([self.model.item_vectors(), self._vectors[1:]])

    def encode_users(self, histories: Sequences) -> np.ndarray:
        items = np.asarray(histories.items)
        if len(items) and int(items.max()) > self.n_known:
            raise ValueError("stored histories can only hold items known at training time")
        return self.model.encode_users(Sequences(histories.offsets, histories.items, self.n_known))

    def export_encoder(self) -> tuple[dict, dict[str, np.ndarray]]:
        spec, weights = self.model.export_encoder()
        weights = dict(weights)
        for key, rows in self._tables.items():
            weights[key] = np.concatenate([weights[key], rows[1:]])
        return spec, weights


def extend_items(model: Model, item_ids: pl.Series, catalogue: pl.DataFrame, cache_dir: str | Path | None = None,
                 source: str = "catalogue") -> tuple[ExtendedModel, pl.DataFrame, list[str]]:
    """``(extended model, new items' catalogue rows, their content sources)`` for the catalogue's unknown items."""
    from recsys.models.two_tower.content import new_item_features

    features = getattr(model, "item_features", None)
    if features is None or not hasattr(model, "encode_new_items"):
        raise ValueError(f"the {model.name} model has no item features, so it cannot give vectors to items it was not "
                         "trained on: train a two-tower model with features (e.g. features = [\"categories\", "
                         "\"text\"]) or retrain with the new items")
    known = pl.Series("item", item_ids)
    ids = _same_kind(catalogue["item"], known, source)
    catalogue = catalogue.with_columns(ids.alias("item"))
    new = catalogue.filter(~pl.col("item").is_in(known.implode()))
    log.info("%s: %d items, %d already in the model (kept as trained), %d new", source, catalogue.height,
             catalogue.height - new.height, new.height)
    if new.height == 0:
        return ExtendedModel(model, len(known), np.zeros((1, 0), np.float32), {}), new, []
    if cache_dir is None:
        cache_dir = getattr(getattr(model, "config", None), "content_cache", None)
    feats, sources = new_item_features(features, new, cache_dir)
    vecs, tables = model.encode_new_items(feats)
    empty = np.flatnonzero(np.array(sources) == NONE) + 1
    vecs[empty] = 0.0
    for rows in tables.values():
        rows[empty] = 0.0
    return ExtendedModel(model, len(known), vecs, tables), new, sources


def export_with_catalogue(dest: str | Path, model: Model, item_ids: Any, user_ids: Any, histories: Sequences,
                          catalogue: str | Path, item_meta: pl.DataFrame | None = None,
                          cache_dir: str | Path | None = None, **kwargs: Any) -> Path:
    """Export ``model`` as :func:`~recsys.export.bundle.export_model` does, plus the catalogue's new items."""
    from recsys.export.bundle import export_model

    known = pl.Series("item", item_ids)
    ext, new, sources = extend_items(model, known, read_catalogue(catalogue), cache_dir, str(catalogue))
    all_ids = pl.concat([known, new["item"]]) if new.height else known
    hist = Sequences(histories.offsets, histories.items, len(all_ids))
    meta_cols = [c for c in ("item", "title", "categories", "tags") if c in new.columns]
    meta = item_meta
    if new.height and len(meta_cols) > 1:
        meta = new.select(meta_cols) if meta is None else pl.concat([meta, new.select(meta_cols)],
                                                                     how="diagonal_relaxed")
    content_only = [[raw, s] for raw, s in zip(new["item"].to_list(), sources, strict=True)]
    return export_model(dest, ext, all_ids, user_ids, histories=hist, item_meta=meta, content_only=content_only,
                        **kwargs)
