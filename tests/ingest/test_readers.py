"""Readers and validation on small hand-made files: formats, dispatch, metadata, quarantine output."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.ingest.errors import DataError
from recsys.ingest.movielens import ML100K_GENRES
from recsys.ingest.readers import ColumnMapping, detect_format, read_interactions
from recsys.ingest.seqfile import seq_raw, sniff_layout
from recsys.ingest.timeparse import epoch_seconds
from recsys.ingest.validation import validate_frame, write_quarantine

T0 = 1_600_000_000


def _lines(*texts: str) -> pl.DataFrame:
    return pl.DataFrame({"row": list(range(1, len(texts) + 1)), "line": list(texts)})


@pytest.mark.parametrize(("name", "header", "fmt"), [
    ("u.data", "", "ml-100k"), ("ratings.dat", "", "ml-1m"), ("ratings.sample-100k.dat", "", "ml-1m"),
    ("ratings.csv", "userId,movieId,rating,timestamp", "ml-latest-small"), ("ratings.csv", "user,item", "csv"),
    ("log.parquet", "", "parquet"), ("x.tsv", "", "tsv"), ("Beauty.txt", "", "seq"),
])
def test_detect_format(tmp_path, name, header, fmt):
    p = tmp_path / name
    p.write_text(header + "\n")
    assert detect_format(p) == fmt


def test_parquet_typed_columns_datetime_and_mapping(tmp_path):
    p = tmp_path / "log.parquet"
    when = [dt.datetime(2020, 9, 13, 12, 26, 40), dt.datetime(2020, 9, 13, 12, 26, 41)]
    frame = pl.DataFrame({"uid": [5, 6], "sku": ["a", "b"], "at": when, "qty": [2, 3], "kind": ["view", "buy"]})
    frame.write_parquet(p)
    res = read_interactions(p, mapping=ColumnMapping(user="uid", item="sku", timestamp="at", weight="qty",
                                                     event="kind"))
    assert res.frame.rows() == [(5, "a", T0, 2.0, "view"), (6, "b", T0 + 1, 3.0, "buy")]
    assert res.report.stats["timestamp_unit"] == "datetime"


def test_csv_without_timestamp_uses_file_order(tmp_path):
    p = tmp_path / "clicks.csv"
    p.write_text("user,item\nb,x\na,y\nb,z\n")
    res = read_interactions(p, mapping=ColumnMapping(timestamp=None))
    assert res.frame.select("user", "item", "timestamp").rows() == [("b", "x", 2), ("a", "y", 3), ("b", "z", 4)]
    assert res.report.stats["timestamp_unit"] == "position"


def test_latest_small_default_mapping_and_format_aliases(tmp_path):
    p = tmp_path / "ratings.csv"
    p.write_bytes(b"userId,movieId,rating,timestamp\r\n1,31,2.5,1260759144\r\n1,1029,3.0,1260759179\r\n")
    (tmp_path / "movies.csv").write_bytes(b'movieId,title,genres\r\n31,"Dangerous Minds, The (1995)",Drama\r\n'
                                          b"1029,Dumbo (1941),(no genres listed)\r\n")
    for mapping in (None, ColumnMapping()):  # the pipeline passes the default mapping explicitly
        res = read_interactions(p, mapping=mapping)
        assert res.frame.rows() == [(1, 31, 1260759144, 2.5, None), (1, 1029, 1260759179, 3.0, None)]
    assert res.items_meta.rows() == [(31, "Dangerous Minds, The (1995)", ["Drama"], []), (1029, "Dumbo (1941)", [], [])]
    seq = tmp_path / "s.txt"
    seq.write_text("1 2 3\n")
    assert read_interactions(seq, fmt="seq-per-user").frame.height == 2


def test_latest_small_tags_join_the_item_metadata(tmp_path):
    p = tmp_path / "ratings.csv"
    p.write_bytes(b"userId,movieId,rating,timestamp\r\n1,31,2.5,1260759144\r\n1,1029,3.0,1260759179\r\n")
    (tmp_path / "movies.csv").write_bytes(b"movieId,title,genres\r\n31,Heat (1995),Action|Crime\r\n"
                                          b"1029,Dumbo (1941),Animation\r\n")
    (tmp_path / "tags.csv").write_bytes(b"userId,movieId,tag,timestamp\r\n2,31,Heist,1\r\n3,31, heist ,2\r\n"
                                        b"3,31,Pacino,3\r\n4,999,orphan,4\r\n5,31,  ,5\r\n")
    meta = read_interactions(p).items_meta
    assert meta.columns == ["item", "title", "categories", "tags"]
    # distinct, trimmed, lower-cased, in order of first use; blank tags dropped; an untagged movie gets []
    assert meta.rows() == [(31, "Heat (1995)", ["Action", "Crime"], ["heist", "pacino"]),
                           (1029, "Dumbo (1941)", ["Animation"], [])]
    (tmp_path / "tags.csv").write_bytes(b"userId,movieId,tag,timestamp\r\n2,x31,Heist,1\r\n")
    with pytest.raises(DataError, match=r"tags.csv: line 2 has a non-integer id 'x31'"):
        read_interactions(p)


def test_ml100k_metadata_latin1_and_genre_flags(tmp_path):
    (tmp_path / "u.data").write_text("1\t2\t5\t881250949\n2\t2\t1\t881250950\n")
    flags = ["0"] * 19
    flags[ML100K_GENRES.index("Drama")] = flags[ML100K_GENRES.index("War")] = "1"
    (tmp_path / "u.item").write_bytes("2|Caf\xe9 (1995)|01-Jan-1995||http://x|".encode("latin-1")
                                      + "|".join(flags).encode() + b"\n")
    (tmp_path / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    res = read_interactions(tmp_path / "u.data")
    assert res.items_meta.rows() == [(2, "Café (1995)", ["Drama", "War"])]
    assert res.users_meta["age"].to_list() == [24, 53] and res.frame["weight"].to_list() == [5.0, 1.0]


def test_ml1m_metadata_bad_line_is_an_error(tmp_path):
    (tmp_path / "ratings.dat").write_text("1::2::5::978300760\n")
    (tmp_path / "movies.dat").write_text("2::Jumanji (1995)::Adventure|Fantasy\n3::broken line\n")
    with pytest.raises(DataError, match=r"movies.dat: line 2 \(wrong field count"):
        read_interactions(tmp_path / "ratings.dat")
    (tmp_path / "movies.dat").write_text("2::Jumanji (1995)::Adventure|Fantasy\n")
    res = read_interactions(tmp_path / "ratings.dat")
    assert res.items_meta.rows() == [(2, "Jumanji (1995)", ["Adventure", "Fantasy"])] and res.users_meta is None


def test_seq_raw_positions_and_sniff():
    assert sniff_layout(_lines("1 5", "1 6", "", "2 5")) == "pairs"
    assert sniff_layout(_lines("1 5 6", "2 5")) == "lines"
    raw = seq_raw(_lines("9  4\t5 ", "9 6"), "lines")
    assert raw.select("user", "item", "timestamp", "row").rows() == [("9", "4", 1, 1), ("9", "5", 2, 1),
                                                                     ("9", "6", 3, 2)]
    with pytest.raises(ValueError, match="layout"):
        seq_raw(_lines("1 2"), "columns")


@pytest.mark.parametrize(("values", "unit", "expected"), [
    (["1600000000", " 1600000001 ", "1600000002.9"], "auto", ("s", [T0, T0 + 1, T0 + 2])),
    (["1600000000000", "1600000000999", "-1"], "auto", ("ms", [T0, T0, -1])),
    (["1600000000", "2020-09-13T12:26:40Z", ""], "auto", ("s", [T0, T0, None])),
    (["2020-09-13", "nope"], "auto", ("iso", [T0 - 44800, None])),
    (["1600000000"], "iso", ("iso", [None])),
    (["1600000000000"], "s", ("s", [T0 * 1000])),
])
def test_epoch_seconds(values, unit, expected):
    raw = pl.DataFrame({"t": values})
    expr, resolved = epoch_seconds(raw, "t", unit, "f")
    assert (resolved, raw.select(expr)["t"].to_list()) == expected


def test_epoch_seconds_numeric_columns():
    raw = pl.DataFrame({"i": [T0 * 1000], "f": [T0 + 0.5]})
    assert raw.select(epoch_seconds(raw, "i", "auto", "f")[0]).item() == T0
    assert raw.select(epoch_seconds(raw, "f", "auto", "f")[0]).item() == T0
    with pytest.raises(ValueError, match="timestamp_unit='days'"):
        epoch_seconds(raw, "i", "days", "f")


def test_validate_frame_order_of_reasons_and_layout():
    raw = pl.DataFrame({"user": ["", "u", "u", "u"], "item": ["i", "i", "i", "i"],
                        "timestamp": ["bad", "bad", "1", str(T0)], "weight": ["x", "1", "1", "-2"],
                        "row": [1, 2, 3, 4], "_reason": [None, None, None, None]})
    v = validate_frame(raw, "f", timestamp_unit="s")
    # the first failing check wins: id before timestamp before weight
    assert v.quarantine.select("row", "reason").rows() == [(1, "empty id"), (2, "unparsable timestamp"),
                                                          (3, "implausible timestamp"), (4, "bad weight")]
    assert v.frame.height == 0 and v.report.rows_read == 4
    assert v.quarantine.columns == ["user", "item", "timestamp", "weight", "row", "reason", "source"]
    with pytest.raises(ValueError, match="id_dtype"):
        validate_frame(raw, "f", id_dtype="float")


def test_write_quarantine_is_atomic_and_roundtrips(tmp_path):
    frame = pl.DataFrame({"user": ["a"], "row": [3], "reason": ["empty id"], "source": ["f"]})
    target = tmp_path / "deep" / "q.parquet"
    assert write_quarantine(frame, target) == target
    assert pl.read_parquet(target).equals(frame)
    assert sorted(p.name for p in target.parent.iterdir()) == ["q.parquet"]  # no temp file left behind


def test_quarantine_path_written_even_when_read_succeeds(tmp_path: Path):
    p = tmp_path / "x.csv"
    p.write_text("user,item,timestamp\n" + "".join(f"u,i{i},{T0}\n" for i in range(30)) + ",i,1600000000\n")
    q = tmp_path / "x.quarantine.parquet"
    res = read_interactions(p, quarantine_path=q)
    assert res.frame.height == 30 and pl.read_parquet(q)["row"].to_list() == [32]


def _log_text() -> str:
    rows = [f"u{i % 7},i{i % 11},{1_600_000_000 + i}" for i in range(200)] + ["u1,,not-a-time"]
    return "\n".join(["user,item,timestamp", *rows]) + "\n"


def _compress(kind: str, data: bytes) -> bytes:
    import bz2
    import gzip

    import zstandard

    return {"gzip": gzip.compress, "bz2": bz2.compress,
            "zstd": lambda b: zstandard.ZstdCompressor().compress(b)}[kind](data)


@pytest.mark.parametrize(("kind", "name"), [("gzip", "events.csv.gz"), ("zstd", "events.csv.zst"),
                                            ("bz2", "events.csv.bz2"), ("gzip", "events.log")])
def test_compressed_logs_read_like_the_plain_file(tmp_path: Path, kind: str, name: str) -> None:
    plain = tmp_path / "events.csv"
    plain.write_text(_log_text())
    packed = tmp_path / name
    packed.write_bytes(_compress(kind, plain.read_bytes()))
    want = read_interactions(plain)
    got = read_interactions(packed, fmt="auto" if name != "events.log" else "csv")  # the magic bytes decide
    assert got.frame.equals(want.frame)
    assert (got.report.rows_read, got.report.accepted, got.report.quarantined) == (201, 200, 1)
    assert got.report.source == str(packed) and got.report.stats["compression"] == kind
    assert got.quarantine["row"].to_list() == want.quarantine["row"].to_list() == [202]  # file line numbers


@pytest.mark.parametrize("kind", ["gzip", "zstd", "bz2"])
def test_a_truncated_archive_is_an_error_that_names_the_file(tmp_path: Path, kind: str) -> None:
    data = _compress(kind, _log_text().encode() * 50)
    p = tmp_path / ("events.csv." + {"gzip": "gz", "zstd": "zst", "bz2": "bz2"}[kind])
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=rf"{p.name}: the {kind} archive is truncated or damaged"):
        read_interactions(p)


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_a_full_disk_while_decompressing_names_the_disk_not_the_archive(tmp_path: Path, kind: str,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The plain copy is written through /dev/full (every write fails with ENOSPC): an OSError that names the
    folder and says the archive is fine, not a DataError about a damaged archive."""
    import contextlib
    import errno
    import os

    from recsys.ingest import compression

    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full (Linux) to make every write fail with ENOSPC")
    full = tmp_path / "full"
    full.mkdir()
    (full / "events.csv").symlink_to("/dev/full")
    monkeypatch.setattr(compression.tempfile, "TemporaryDirectory",
                        lambda **_: contextlib.nullcontext(str(full)))
    p = tmp_path / ("events.csv." + {"gzip": "gz", "zstd": "zst"}[kind])
    p.write_bytes(_compress(kind, _log_text().encode() * 50))
    with pytest.raises(OSError, match=rf"cannot write the decompressed copy of .*{p.name} in {full} .*MiB free on "
                       r"that disk\): the archive is fine\. Free space there, or point TMPDIR") as err:
        read_interactions(p)
    assert err.value.errno == errno.ENOSPC and not isinstance(err.value, DataError)


def test_errors_inside_a_compressed_file_name_the_archive(tmp_path: Path) -> None:
    import gzip

    p = tmp_path / "events.csv.gz"
    p.write_bytes(gzip.compress(b"uid,iid,ts\n1,2,3\n"))
    with pytest.raises(DataError, match=r"events\.csv\.gz \(decompressed\): column\(s\) \['user', 'item'"):
        read_interactions(p)


_IDS = st.sampled_from(["u1", "u2", "7", "8", "007", "", " ", '"q,1"', '"multi\nline"', '""""', "x"])
_TIMES = {"s": st.sampled_from(["1600000000", "1600000077", "2020-01-02", "", "x", '"multi\n"']),
          "ms": st.sampled_from(["1600000000123", "1600000077000", "2020-01-02", "", "x", '"multi\n"'])}


@st.composite
def _csv_rows(draw) -> list[list[str]]:
    """Rows of 0-4 fields (user, item, timestamp, extra); one time unit a file, as real logs have."""
    unit = draw(st.sampled_from(["s", "ms"]))
    row = st.tuples(_IDS, _IDS, _TIMES[unit], _IDS, st.integers(0, 4)).map(lambda r: list(r[:r[4]]))
    return draw(st.lists(row, min_size=1, max_size=40))


@settings(max_examples=60, deadline=None)
@given(rows=_csv_rows(), block=st.integers(1, 200))
def test_a_csv_read_in_blocks_equals_the_csv_read_whole(tmp_path_factory, rows, block) -> None:
    """Blocks of whole records (never split inside quotes) give the same rows, reasons, line numbers and report."""
    # (blocks of 1..200 bytes: most records get a block of their own)
    import recsys.ingest.delimited as delimited

    p = tmp_path_factory.mktemp("blocks") / "log.csv"
    p.write_text("user,item,timestamp\n" + "".join(",".join(r) + "\n" for r in rows))
    whole = read_interactions(p, max_bad_fraction=1.0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(delimited, "BLOCK_BYTES", block)
        parts = read_interactions(p, max_bad_fraction=1.0)
    assert parts.frame.equals(whole.frame)
    # the raw text of a blank or ragged line is kept unless its block holds a multi-line record
    assert parts.quarantine.drop("line").equals(whole.quarantine.drop("line"))
    a, b = parts.report.as_dict(), whole.report.as_dict()
    a["stats"].pop("blocks", None)
    assert a == b
