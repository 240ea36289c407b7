"""MovieLens files (ml-100k, ml-1m, ml-latest-small): ratings as raw frames, movies and users as metadata.

Use :func:`recsys.ingest.readers.read_interactions` (``fmt="auto"`` knows the file names); it
validates what the raw parsers here return. Ratings become ``weight``; the metadata frames are::

    items_meta  item Int64, title String, categories List[String]   (genres, in the source's order)
                + tags List[String] for latest-small (``tags.csv``: each movie's distinct tags, lower-cased,
                in order of first use; empty for a movie nobody tagged)
    users_meta  user Int64, then the demographic columns of the source (strings, age Int64)

Layouts (no headers, except latest-small's CSVs):

- ml-100k ``u.data``  ``user \\t item \\t rating \\t timestamp``; ``u.item`` ``|``-separated, latin-1,
  ``id|title|release|video release|IMDb URL|`` + 19 genre flags (order of ``u.genre``);
  ``u.user`` ``id|age|gender|occupation|zip``.
- ml-1m ``ratings.dat`` ``user::item::rating::timestamp``; ``movies.dat`` ``id::title::A|B``
  (latin-1); ``users.dat`` ``id::gender::age::occupation::zip`` (age and occupation are codes).
- latest-small ``ratings.csv`` ``userId,movieId,rating,timestamp``; ``movies.csv``
  ``movieId,title,genres`` (quoted titles, CRLF; ``(no genres listed)`` -> empty list);
  ``tags.csv`` ``userId,movieId,tag,timestamp`` (optional).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from recsys.ingest.errors import READER_REASON, DataError
from recsys.ingest.schema import ITEM, TIMESTAMP, USER, WEIGHT
from recsys.ingest.text import check_file, polars_errors, read_lines, split_fields

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
TITLE, CATEGORIES, TAGS = "title", "categories", "tags"
_RATING_FIELDS = (USER, ITEM, WEIGHT, TIMESTAMP)
NO_GENRES = "(no genres listed)"


def ratings_raw(path: Path, sep: str, encoding: str = "latin-1") -> pl.DataFrame:
    """``u.data`` (``sep="\\t"``) or ``ratings.dat`` (``sep="::"``) as raw string fields + row + _reason."""
    return split_fields(read_lines(path, encoding), sep, _RATING_FIELDS)


def _metadata_fields(path: Path, sep: str, names: Sequence[str]) -> pl.DataFrame:
    """Split a metadata file; a malformed line is an error (metadata is not quarantined)."""
    fields = split_fields(read_lines(check_file(path), "latin-1"), sep, names)
    bad = fields.filter(pl.col(READER_REASON).is_not_null())
    if bad.height:
        row = bad.row(0, named=True)
        raise DataError(f"{path}: line {row['row']} ({row[READER_REASON]}, {len(names)} '{sep}'-separated fields "
                        f"expected): {row['line']!r}. Restore the original MovieLens file.")
    return fields


def _int_ids(frame: pl.DataFrame, col: str, path: Path) -> pl.Expr:
    ids = frame[col].str.strip_chars().cast(pl.Int64, strict=False)
    if ids.null_count():
        bad = frame.filter(ids.is_null()).row(0, named=True)
        raise DataError(f"{path}: line {bad['row']} has a non-integer id {bad[col]!r}; restore the original file.")
    return ids


def ml100k_items(path: Path) -> pl.DataFrame:
    """``u.item`` -> (n_movies, 3) item, title, categories (genre names whose flag is 1)."""
    flags = [f"g{i}" for i in range(len(ML100K_GENRES))]
    f = _metadata_fields(path, "|", ["id", TITLE, "release", "video", "url", *flags])
    genres = pl.concat_list([pl.when(pl.col(g) == "1").then(pl.lit(name)) for g, name in zip(flags, ML100K_GENRES,
                                                                                             strict=True)])
    return f.select(_int_ids(f, "id", path).alias(ITEM), pl.col(TITLE), genres.list.drop_nulls().alias(CATEGORIES))


def ml100k_users(path: Path) -> pl.DataFrame:
    """``u.user`` -> (n_users, 5) user, age, gender, occupation, zip."""
    f = _metadata_fields(path, "|", ["id", "age", "gender", "occupation", "zip"])
    return f.select(_int_ids(f, "id", path).alias(USER), pl.col("age").cast(pl.Int64, strict=False),
                    "gender", "occupation", "zip")


def ml1m_items(path: Path) -> pl.DataFrame:
    """``movies.dat`` -> (n_movies, 3) item, title, categories."""
    f = _metadata_fields(path, "::", ["id", TITLE, "genres"])
    return f.select(_int_ids(f, "id", path).alias(ITEM), pl.col(TITLE),
                    pl.col("genres").str.split("|").alias(CATEGORIES))


def ml1m_users(path: Path) -> pl.DataFrame:
    """``users.dat`` -> (n_users, 5) user, gender, age (code), occupation (code), zip."""
    f = _metadata_fields(path, "::", ["id", "gender", "age", "occupation", "zip"])
    return f.select(_int_ids(f, "id", path).alias(USER), "gender", pl.col("age").cast(pl.Int64, strict=False),
                    "occupation", "zip")


def latest_small_items(path: Path) -> pl.DataFrame:
    """``movies.csv`` -> (n_movies, 3) item, title, categories (empty for ``(no genres listed)``)."""
    check_file(path)
    with polars_errors(path, "MovieLens movies.csv"):
        f = pl.read_csv(path, schema={"movieId": pl.String, TITLE: pl.String, "genres": pl.String})
    f = f.with_row_index("row", offset=2)
    genres = pl.when(pl.col("genres") == NO_GENRES).then(pl.lit(None)).otherwise(pl.col("genres"))
    return f.select(_int_ids(f, "movieId", path).alias(ITEM), pl.col(TITLE),
                    genres.str.split("|").fill_null(pl.lit([], pl.List(pl.String))).alias(CATEGORIES))


def latest_small_tags(path: Path) -> pl.DataFrame:
    """``tags.csv`` -> item, tags: each movie's distinct tags (stripped, lower-cased), in order of first use."""
    check_file(path)
    with polars_errors(path, "MovieLens tags.csv"):
        f = pl.read_csv(path, schema={"userId": pl.String, "movieId": pl.String, "tag": pl.String,
                                      "timestamp": pl.String})
    f = f.with_row_index("row", offset=2)
    tag = pl.col("tag").str.strip_chars().str.to_lowercase()
    f = f.with_columns(_int_ids(f, "movieId", path).alias(ITEM), tag.alias(TAGS))
    f = f.filter(pl.col(TAGS).str.len_chars() > 0)
    return f.group_by(ITEM, maintain_order=True).agg(pl.col(TAGS).unique(maintain_order=True))


def _with_tags(items: pl.DataFrame, directory: Path) -> pl.DataFrame:
    """latest-small: add the ``tags`` list column from ``tags.csv`` beside ``movies.csv`` (empty lists without it)."""
    empty = pl.lit([], pl.List(pl.String))
    if not (directory / "tags.csv").is_file():
        return items.with_columns(empty.alias(TAGS))
    tags = latest_small_tags(directory / "tags.csv")
    return items.join(tags, on=ITEM, how="left", maintain_order="left").with_columns(pl.col(TAGS).fill_null(empty))


_META = {
    "ml-100k": (("u.item", ml100k_items), ("u.user", ml100k_users)),
    "ml-1m": (("movies.dat", ml1m_items), ("users.dat", ml1m_users)),
    "ml-latest-small": (("movies.csv", latest_small_items), None),
}


def metadata(fmt: str, directory: Path) -> tuple[pl.DataFrame | None, pl.DataFrame | None]:
    """(items_meta, users_meta) from the files beside the ratings; None for a file that is absent."""
    out: list[pl.DataFrame | None] = []
    for entry in _META[fmt]:
        if entry is None or not (directory / entry[0]).is_file():
            out.append(None)
        else:
            out.append(entry[1](directory / entry[0]))
    if fmt == "ml-latest-small" and out[0] is not None:
        out[0] = _with_tags(out[0], directory)
    return out[0], out[1]
