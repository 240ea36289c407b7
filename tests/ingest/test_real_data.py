"""Readers against the real data sets in ../shared/data: counts equal the SOURCE.md figures exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import _require

from recsys.ingest.readers import read_interactions

pytestmark = pytest.mark.data


def _read(shared_data: Path, rel: str):
    res = read_interactions(_require(shared_data / rel))
    res.report.check()
    return res


def _counts(frame: pl.DataFrame) -> tuple[int, int, int]:
    return frame.height, frame["user"].n_unique(), frame["item"].n_unique()


def _meta(items_meta: pl.DataFrame, item: int) -> dict:
    return items_meta.filter(pl.col("item") == item).row(0, named=True)


@pytest.mark.parametrize(
    ("rel", "fmt", "expected"),
    [
        ("ml-100k/u.data", "ml-100k", (100_000, 943, 1_682)),
        ("ml-latest-small/ratings.csv", "ml-latest-small", (100_836, 610, 9_724)),
        ("ml-1m/ratings.sample-100k.dat", "ml-1m", (100_000, 5_958, 3_312)),
        ("iclrec-amazon/Beauty.txt", "seq", (198_502, 22_363, 12_101)),
        ("sasrec/Video.txt", "seq", (287_107, 31_013, 23_715)),
    ],
)
def test_counts_match_source_md_and_nothing_quarantined(shared_data, rel, fmt, expected):
    res = _read(shared_data, rel)
    assert res.report.stats["format"] == fmt
    assert _counts(res.frame) == expected
    assert res.quarantine.height == 0 and res.report.quarantined == 0
    assert res.report.rows_read == res.report.accepted == expected[0]
    assert res.frame.schema == pl.Schema({"user": pl.Int64, "item": pl.Int64, "timestamp": pl.Int64,
                                          "weight": pl.Float32, "event": pl.String})


def test_ml100k_ratings_titles_genres_users(shared_data):
    res = _read(shared_data, "ml-100k/u.data")
    assert res.frame.row(0) == (196, 242, 881250949, 3.0, None)  # first line of u.data
    assert sorted(res.frame["weight"].unique().to_list()) == [1.0, 2.0, 3.0, 4.0, 5.0]
    meta = res.items_meta
    assert meta.height == 1_682 and meta["item"].to_list() == list(range(1, 1_683))
    assert _meta(meta, 1) == {"item": 1, "title": "Toy Story (1995)", "categories": ["Animation", "Children's",
                                                                                      "Comedy"]}
    assert _meta(meta, 2)["categories"] == ["Action", "Adventure", "Thriller"]
    assert _meta(meta, 543)["title"] == "Misérables, Les (1995)"  # latin-1 decoded
    assert res.users_meta.height == 943
    assert res.users_meta.row(0) == (1, 24, "M", "technician", "85711")


def test_latest_small_crlf_quotes_and_empty_genres(shared_data):
    res = _read(shared_data, "ml-latest-small/ratings.csv")
    assert res.frame.row(0) == (1, 1, 964982703, 4.0, None)
    assert res.frame["weight"].min() == 0.5 and res.frame["weight"].max() == 5.0
    meta = res.items_meta
    assert meta.height == 9_742
    assert _meta(meta, 11) == {"item": 11, "title": "American President, The (1995)",
                               "categories": ["Comedy", "Drama", "Romance"], "tags": ["politics", "president"]}
    assert _meta(meta, 1)["tags"] == ["pixar", "fun"]  # tags.csv, distinct and lower-cased
    assert (meta["tags"].list.len() > 0).sum() == 1_572
    assert _meta(meta, 114335)["categories"] == []  # "(no genres listed)"
    assert not meta["title"].str.ends_with("\r").any()
    assert set(res.frame["item"].unique().to_list()) <= set(meta["item"].to_list())


def test_ml1m_sample_rating_histogram_time_range_and_metadata(shared_data):
    res = _read(shared_data, "ml-1m/ratings.sample-100k.dat")
    hist = dict(res.frame["weight"].value_counts().sort("weight").iter_rows())
    assert hist == {1.0: 5_598, 2.0: 10_686, 3.0: 26_233, 4.0: 34_913, 5.0: 22_570}
    assert (res.frame["timestamp"].min(), res.frame["timestamp"].max()) == (956704519, 1046368462)
    assert res.frame.row(0) == (5488, 488, 959821507, 3.0, None)
    meta = res.items_meta
    assert meta.height == 3_883 and res.users_meta.height == 6_040
    assert _meta(meta, 1)["categories"] == ["Animation", "Children's", "Comedy"]
    assert _meta(meta, 73)["title"] == "Misérables, Les (1995)"
    assert set(res.frame["item"].unique().to_list()) <= set(meta["item"].to_list())


def test_beauty_keeps_file_order_per_user(shared_data):
    path = _require(shared_data / "iclrec-amazon" / "Beauty.txt")
    res = _read(shared_data, "iclrec-amazon/Beauty.txt")
    assert res.report.stats["layout"] == "lines"
    lines = path.read_text().splitlines()
    frame = res.frame.sort(["user", "timestamp"])
    for line in (lines[0], lines[1234], lines[-1]):
        user, *items = (int(t) for t in line.split())
        assert frame.filter(pl.col("user") == user)["item"].to_list() == items
    assert np.all(np.diff(res.frame["timestamp"].to_numpy()) == 1)  # synthetic positions 1..n in file order


def test_video_pairs_layout_and_order(shared_data):
    res = _read(shared_data, "sasrec/Video.txt")
    assert res.report.stats["layout"] == "pairs"
    assert res.frame.head(3).select("user", "item").rows() == [(1, 6393), (1, 13504), (1, 14087)]
    assert res.frame["user"].min() == 1 and res.frame["user"].max() == 31_013
    assert res.frame["item"].min() == 1 and res.frame["item"].max() == 23_715
