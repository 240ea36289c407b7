"""A corpus of malformed files, built in tmp_path: each gets its specific error or quarantine reason."""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest

from recsys.ingest.errors import REASONS, DataError
from recsys.ingest.readers import ColumnMapping, read_interactions
from recsys.ingest.validation import TimeBounds

HEADER = "user,item,timestamp\n"
T0 = 1_600_000_000  # 2020-09-13


def _write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf8")
    return p


def _good_rows(n: int, start: int = 0) -> str:
    return "".join(f"u{i % 7},i{i % 11},{T0 + i}\n" for i in range(start, start + n))


def _read(path: Path, **kw):
    res = read_interactions(path, **kw)
    rep = res.report
    assert rep.rows_read == rep.accepted + rep.quarantined + rep.duplicates_removed
    assert rep.accepted == res.frame.height and rep.quarantined == res.quarantine.height
    assert sum(rep.reasons.values()) == rep.quarantined
    assert set(rep.reasons) <= set(REASONS)
    return res


def _reasons(res) -> dict[int, str]:
    return dict(res.quarantine.select("row", "reason").iter_rows())


def _data_error(path: Path, *needles: str, **kw) -> str:
    with pytest.raises(DataError) as info:
        read_interactions(path, **kw)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg  # one paragraph that names the file
    err = info.value  # no chained polars/unicode traceback under ours
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"
    return msg


# -- file-level problems: a DataError that says what to do --------------------------------------------

def test_missing_file(tmp_path):
    _data_error(tmp_path / "nope.csv", "no such file", "Check the path")


def test_directory_instead_of_file(tmp_path):
    _data_error(tmp_path, "is a directory")


def test_empty_file(tmp_path):
    _data_error(_write(tmp_path, "empty.csv", ""), "empty (0 bytes)")


def test_header_only(tmp_path):
    _data_error(_write(tmp_path, "header.csv", HEADER), "no data rows")


def test_missing_column_names_found_and_expected(tmp_path):
    p = _write(tmp_path, "cols.csv", "user,product,ts\nu1,i1,1600000000\n")
    _data_error(p, "['item', 'timestamp'] not found", "['user', 'product', 'ts']", "item='item'",
                "ColumnMapping(")
    res = _read(p, mapping=ColumnMapping(item="product", timestamp="ts"))
    assert res.frame.row(0) == ("u1", "i1", T0, 1.0, None)


def test_wrong_encoding_latin1_bytes_read_as_utf8(tmp_path):
    p = _write(tmp_path, "latin.csv", (HEADER + "u1,i1,1600000000\nrené,café,1600000001\n").encode("latin-1"))
    _data_error(p, "not valid UTF-8", "line 3", "encoding='latin-1'")
    res = _read(p, encoding="latin-1")
    assert res.frame["user"].to_list() == ["u1", "rené"] and res.frame["item"][1] == "café"


def test_a_non_utf8_csv_is_decoded_block_by_block_as_the_utf8_file_is_read(tmp_path):
    """A latin-1 log is streamed (many blocks, none holding the whole file) and gives the rows of the same log
    saved as UTF-8; a byte the encoding cannot decode is an error that names the line it is on or after."""
    from recsys.ingest.delimited import delimited_raw

    rows = "".join(f"usér{i},café{i % 7},{1600000000 + i}\n" for i in range(400))
    latin = _write(tmp_path, "latin.csv", (HEADER + rows).encode("latin-1"))
    utf8 = _write(tmp_path, "utf8.csv", (HEADER + rows).encode("utf-8"))
    blocks = list(delimited_raw(latin, ",", ColumnMapping(), "latin-1", block_bytes=512))
    assert len(blocks) > 10 and max(b.height for b in blocks) < 400
    streamed = pl.concat(blocks)
    assert streamed.equals(pl.concat(list(delimited_raw(utf8, ",", ColumnMapping(), "utf8", block_bytes=512))))
    assert streamed["user"][399] == "usér399" and streamed["row"][399] == 401  # file line numbers
    assert read_interactions(latin, encoding="latin-1").frame.equals(read_interactions(utf8).frame)
    bad = _write(tmp_path, "bad.csv", (HEADER + rows).encode("latin-1"))
    with pytest.raises(DataError, match=r"bad\.csv: cannot be decoded as ascii \(ordinal not in range\(128\), on "
                                        r"or after line 2\)"):
        read_interactions(bad, encoding="ascii")


def test_unknown_encoding_name(tmp_path):
    p = _write(tmp_path, "x.csv", HEADER + _good_rows(3))
    with pytest.raises(DataError, match="encoding='klingon' is unknown"):
        read_interactions(p, encoding="klingon")


def test_wrong_separator_is_named(tmp_path):
    p = _write(tmp_path, "semi.csv", "user;item;timestamp\nu1;i1;1600000000\n")
    _data_error(p, "not found", "['user;item;timestamp']", "separator=';'")
    assert _read(p, separator=";").frame.height == 1


def test_binary_garbage_as_csv_and_as_parquet(tmp_path):
    garbage = bytes(range(256)) * 8
    _data_error(_write(tmp_path, "garbage.csv", garbage), "binary file", "NUL bytes")
    _data_error(_write(tmp_path, "garbage.parquet", garbage), "not a Parquet file", "b'PAR1'")


def test_unknown_extension_and_format(tmp_path):
    p = _write(tmp_path, "log.xyz", HEADER + _good_rows(2))
    _data_error(p, "cannot tell the format", "fmt=")
    with pytest.raises(ValueError, match="fmt='excel' is unknown"):
        read_interactions(p, fmt="excel")
    assert _read(p, fmt="csv").frame.height == 2


def test_float_ids_in_parquet_are_refused(tmp_path):
    p = tmp_path / "float.parquet"
    pl.DataFrame({"user": [1.0, 2.0], "item": [1, 2], "timestamp": [T0, T0]}).write_parquet(p)
    _data_error(p, "column 'user' has dtype Float64", "Cast the column")


# -- row-level problems: quarantined with a reason and the source line number ---------------------------

def test_null_user_and_item_in_parquet(tmp_path):
    p = tmp_path / "nulls.parquet"
    pl.DataFrame({"user": [1, None, 3] + [4] * 40, "item": [10, 11, None] + [12] * 40,
                  "timestamp": [T0] * 43}).write_parquet(p)
    res = _read(p)
    assert _reasons(res) == {2: "null user", 3: "null item"}
    assert res.frame.schema["user"] == pl.Int64 and res.frame.height == 41
    assert res.quarantine["source"].to_list() == [str(p)] * 2


def test_empty_ids_blank_and_whitespace(tmp_path):
    p = _write(tmp_path, "ids.csv", HEADER + " ,i1,1600000000\nu2,   ,1600000000\n" + _good_rows(40))
    res = _read(p)
    assert _reasons(res) == {2: "empty id", 3: "empty id"}
    assert res.quarantine.filter(pl.col("row") == 3)["item"].to_list() == ["   "]  # raw value kept


def test_unparsable_and_missing_timestamps(tmp_path):
    p = _write(tmp_path, "ts.csv", HEADER + "u1,i1,yesterday\nu1,i2,\nu1,i3,2020-02-30\n" + _good_rows(60))
    res = _read(p)
    assert _reasons(res) == {2: "unparsable timestamp", 3: "missing timestamp", 4: "unparsable timestamp"}
    assert res.quarantine.filter(pl.col("row") == 2)["timestamp"].to_list() == ["yesterday"]


def test_implausible_timestamps_and_configurable_bounds(tmp_path):
    p = _write(tmp_path, "old.csv", HEADER + "u1,i1,315532800\nu1,i2,99999999999\n" + _good_rows(40))
    res = _read(p)  # 1980-01-01 and the year 5138
    assert _reasons(res) == {2: "implausible timestamp", 3: "implausible timestamp"}
    loose = _read(p, bounds=TimeBounds(min_ts=0, max_ts=10**11))
    assert loose.quarantine.height == 0 and loose.frame["timestamp"][0] == 315532800


def test_milliseconds_auto_detected_and_wrong_explicit_unit(tmp_path):
    p = _write(tmp_path, "ms.csv", HEADER + "".join(f"u{i},i{i},{(T0 + i) * 1000 + 999}\n" for i in range(20)))
    res = _read(p)
    assert res.report.stats["timestamp_unit"] == "ms"
    assert res.frame["timestamp"].to_list() == [T0 + i for i in range(20)]  # floored to seconds
    _data_error(p, "implausible timestamp", "try timestamp_unit='ms'", timestamp_unit="s")
    secs = _write(tmp_path, "s.csv", HEADER + _good_rows(20))
    assert _read(secs).report.stats["timestamp_unit"] == "s"


def test_minority_seconds_in_a_milliseconds_file_are_flagged(tmp_path):
    rows = "".join(f"u{i},i{i},{(T0 + i) * 1000}\n" for i in range(30)) + f"u9,i9,{T0}\n"
    res = _read(_write(tmp_path, "mixed.csv", HEADER + rows))
    assert _reasons(res) == {32: "implausible timestamp"}  # read as ms it is 1970


def test_iso_timestamps(tmp_path):
    rows = ["2020-09-13", "2020-09-13 12:26:40", "2020-09-13T12:26:40Z", "2020-09-13T14:26:40.75+02:00"]
    p = _write(tmp_path, "iso.csv", HEADER + "".join(f"u1,i{k},{t}\n" for k, t in enumerate(rows)))
    res = _read(p)
    assert res.frame["timestamp"].to_list() == [T0 - 44800, T0, T0, T0]
    assert _read(p, timestamp_unit="iso").frame.height == 4


def test_weights_non_numeric_negative_nan_missing(tmp_path):
    body = "u1,i1,1600000000,abc\nu1,i2,1600000000,-1\nu1,i3,1600000000,nan\nu1,i4,1600000000,\n"
    p = _write(tmp_path, "w.csv", "user,item,timestamp,rating\n" + body +
               "".join(f"u{i},i{i},{T0},2.5\n" for i in range(80)))
    res = _read(p, mapping=ColumnMapping(weight="rating"))
    assert _reasons(res) == {2: "wrong type", 3: "bad weight", 4: "bad weight", 5: "missing weight"}
    assert res.frame["weight"].dtype == pl.Float32 and res.frame["weight"].unique().to_list() == [2.5]


def test_ragged_rows_and_blank_lines(tmp_path):
    body = "u1,i1\nu2,i2,1600000000,extra\n\n" + '"u,3",i3,1600000000\n'
    res = _read(_write(tmp_path, "ragged.csv", HEADER + body + _good_rows(80)))
    assert _reasons(res) == {2: "wrong field count", 3: "wrong field count", 4: "blank line"}
    assert res.quarantine.filter(pl.col("row") == 3)["line"].to_list() == ["u2,i2,1600000000,extra"]
    assert res.frame["user"][0] == "u,3"  # a quoted separator is not a ragged row


def test_mostly_bad_file_over_max_bad_fraction(tmp_path):
    body = "".join(f"u{i},,{T0}\n" for i in range(8)) + _good_rows(2)
    p = _write(tmp_path, "bad.csv", HEADER + body)
    q = tmp_path / "out" / "bad.quarantine.parquet"
    msg = _data_error(p, "8 of 10 rows (80.0%)", "max_bad_fraction=5.0%", "'empty id': 8", "row 2 (empty id",
                      "row 6 (empty id", str(q), quarantine_path=q)
    assert "row 7 (" not in msg  # only the first 5 bad rows are listed
    assert pl.read_parquet(q)["reason"].to_list() == ["empty id"] * 8
    assert _read(p, max_bad_fraction=0.9).frame.height == 2


def test_duplicate_rows_counted_when_dedupe_runs(tmp_path):
    p = _write(tmp_path, "dup.csv", HEADER + "u1,i1,1600000000\nu1,i1,1600000000\nu1,i1,1600000001\n" * 2)
    res = _read(p, dedupe=True)
    rep = res.report
    assert (rep.rows_read, rep.accepted, rep.duplicates_removed, rep.quarantined) == (6, 2, 4, 0)
    assert _read(p).frame.height == 6  # no dedupe unless asked


def test_integer_ids_required(tmp_path):
    p = _write(tmp_path, "ids.csv", HEADER + "1,10,1600000000\nx7,11,1600000000\n" + _good_rows(0))
    res = _read(p, id_dtype="int", max_bad_fraction=0.5)
    assert _reasons(res) == {3: "wrong type"} and res.frame.schema["user"] == pl.Int64
    assert _read(p).frame.schema["user"] == pl.String  # auto keeps strings when one id is not an integer
    assert _read(p, id_dtype="str").frame["item"].to_list() == ["10", "11"]


def test_leading_zero_ids_stay_strings(tmp_path):
    res = _read(_write(tmp_path, "z.csv", HEADER + "007,1,1600000000\n7,1,1600000000\n"))
    assert res.frame["user"].to_list() == ["007", "7"]  # Int64 would merge two users


def test_utf8_bom_and_crlf_header(tmp_path):
    res = _read(_write(tmp_path, "bom.csv", ("\ufeff" + HEADER + _good_rows(3)).replace("\n", "\r\n")))
    assert res.frame.height == 3 and res.frame["timestamp"].to_list() == [T0, T0 + 1, T0 + 2]


def test_tsv_with_event_column(tmp_path):
    p = _write(tmp_path, "ev.tsv", "user\titem\ttimestamp\tkind\nu1\ti1\t1600000000\tclick\nu1\ti2\t1600000001\t \n")
    res = _read(p, mapping=ColumnMapping(event="kind"))
    assert res.frame["event"].to_list() == ["click", None]


# -- sequence files --------------------------------------------------------------------------------

def test_sequence_file_blank_line_and_user_without_items(tmp_path):
    p = _write(tmp_path, "seq.txt", "1 5 6 7\n\n2\n3 8  9\n" + "".join(f"{u} 1 2 3\n" for u in range(4, 60)))
    res = _read(p)
    assert res.report.stats["layout"] == "lines"
    assert _reasons(res) == {2: "blank line", 3: "no items"}
    assert res.report.rows_read == 3 + 2 + 2 + 56 * 3  # events + one record per line without events
    user3 = res.frame.filter(pl.col("user") == 3)
    assert user3["item"].to_list() == [8, 9] and user3["timestamp"].to_list() == [4, 5]


def test_pairs_file_with_ragged_line(tmp_path):
    p = _write(tmp_path, "pairs.txt", "".join(f"{u} {i}\n" for u in range(1, 30) for i in (4, 2)) + "30 1 2\n")
    res = _read(p, fmt="seq-pairs")
    assert _reasons(res) == {59: "wrong field count"}
    assert res.quarantine["line"].to_list() == ["30 1 2"]
    assert read_interactions(p).report.stats["layout"] == "lines"  # sniffed: not every line is a pair


def test_movielens_u_data_with_a_ragged_line(tmp_path):
    rows = "".join(f"{u}\t{u + 1}\t4\t881250949\n" for u in range(1, 40))
    res = _read(_write(tmp_path, "u.data", rows + "7\t8\t3\n"))
    assert res.report.stats["format"] == "ml-100k" and _reasons(res) == {40: "wrong field count"}
    assert res.items_meta is None  # no u.item beside it
    assert math.isclose(res.frame["weight"].sum(), 4.0 * 39)


GOOD = "u1,i1,1600000000\nu2,i2,1600000001\nu3,i3,1600000002\n"


def _gzip(b: bytes) -> bytes:
    import gzip

    return gzip.compress(b)


def _zstd(b: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(b)


def _bz2(b: bytes) -> bytes:
    import bz2

    return bz2.compress(b)


def _plain(text: bytes, pack=None, cut: int = 0):
    """A case's file bytes: ``text`` + ``extra`` good rows, compressed by ``pack``, less ``cut`` final bytes."""
    def build(extra: bytes) -> bytes:
        data = text + extra
        data = pack(data) if pack else data
        return data[:-cut] if cut else data
    return build


H = b"user,item,timestamp\n"
G = GOOD.encode()
# (name, file name, bytes(extra good rows), read_interactions kwargs,
#  expected: DataError text, or (accepted, {row: reason}, duplicates removed))
CORPUS = [
    ("extra field on the first data row", "log.csv", _plain(H + b"u0,i0,1600000000,EXTRA\n" + G), {},
     (3, {2: "wrong field count"}, 0)),
    ("missing field", "log.csv", _plain(H + G + b"u4,i4\n"), {}, (3, {5: "wrong field count"}, 0)),
    ("duplicated header name", "log.csv", _plain(b"user,item,item,timestamp\n" + G), {},
     "duplicated column name(s) ['item']"),
    ("empty header name", "log.csv", _plain(b"user,item,timestamp,\n" + G), {},
     "empty column name(s) at position(s) [4]"),
    ("2 MB id", "log.csv", _plain(H + G + b"u" * 2_000_000 + b",i9,1600000009\n"), {}, (3, {5: "id too long"}, 0)),
    ("id over a configured limit", "log.csv", _plain(H + G + b"u1234567890,i9,1600000009\n"), {"max_id_len": 10},
     (3, {5: "id too long"}, 0)),
    ("NUL inside one id", "log.csv", _plain(H + G + b"u\x009,i9,1600000009\n"), {},
     (3, {5: "control character in id"}, 0)),
    ("quoted newline in an id", "log.csv", _plain(H + b'"u1",i1,1600000000\n"u\n2",i2,1600000001\n'), {},
     (1, {3: "control character in id"}, 0)),
    ("ragged rows after a quoted field spanning lines", "log.csv",
     _plain(H + b'u1,"i\n1",1600000000\nu2,i2,1600000001\nu3,i3,1600000002,EXTRA\nu4,i4,1600000003\nu5,i5\n'),
     {"id_dtype": "str"}, (2, {2: "control character in id", 5: "wrong field count", 7: "wrong field count"}, 0)),
    ("gzip by name", "log.csv.gz", _plain(H + G, _gzip), {}, (3, {}, 0)),
    ("zstd by name", "log.csv.zst", _plain(H + G, _zstd), {}, (3, {}, 0)),
    ("bz2 by name", "log.csv.bz2", _plain(H + G, _bz2), {}, (3, {}, 0)),
    ("gzip with a bad row", "log.csv.gz", _plain(H + G + b"u4,,1600000003\n", _gzip), {}, (3, {5: "empty id"}, 0)),
    ("gzip named .log, format given", "events.log", _plain(H + G, _gzip), {"fmt": "csv"}, (3, {}, 0)),
    ("truncated gzip", "log.csv.gz", _plain(H + G * 50, _gzip, cut=20), {}, "the gzip archive is truncated"),
    ("truncated zstd", "log.csv.zst", _plain(H + G * 50, _zstd, cut=6), {}, "the zstd archive is truncated"),
    ("binary file named .csv", "log.csv", _plain(b"\x00\x01\x02\x03" * 200), {}, "binary file"),
    ("duplicate rows, deduplicated", "log.csv", _plain(H + G + b"u2,i2,1600000001\n"), {"dedupe": True},
     (3, {}, 1)),
]
CASE_IDS = [c[0] for c in CORPUS]


@pytest.mark.parametrize(("name", "filename", "build", "kw", "expected"), CORPUS, ids=CASE_IDS)
def test_malformed_log_corpus(tmp_path, name, filename, build, kw, expected) -> None:
    p = tmp_path / filename
    p.write_bytes(build(b""))
    if isinstance(expected, str):
        _data_error(p, expected, **kw)
        return
    res = read_interactions(p, max_bad_fraction=0.9, **kw)
    accepted, reasons, duplicates = expected
    r = res.report
    assert r.rows_read == r.accepted + r.quarantined + r.duplicates_removed
    assert (r.accepted, _reasons(res), r.duplicates_removed) == (accepted, reasons, duplicates), r.summary()


EXTRA_USERS = 40


def _extra_rows() -> bytes:
    """Rows every user of which survives the pipeline's k-core: 40 users x 8 of 30 items."""
    return "".join(f"x{u},y{(u * 7 + j) % 30},{T0 + 100 + u * 10 + j}\n"
                   for u in range(EXTRA_USERS) for j in range(8)).encode()


@pytest.mark.parametrize(("name", "filename", "build", "kw", "expected"), CORPUS, ids=CASE_IDS)
def test_the_corpus_through_the_pipeline_ingest(tmp_path, monkeypatch, name, filename, build, kw, expected) -> None:
    """Each case as the pipeline's log (plus enough good rows to train on): a read error, or any quarantined
    row under pipeline.max_bad_fraction = 0, stops the run with exit code 3; with 0.5 quarantined rows pass."""
    from pipelines.pipeline import run_pipeline
    from pipelines.pipeline_config import load_pipeline_config
    from pipelines.runstate import ExitCode, PipelineExit

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / filename).write_bytes(build(_extra_rows()))
    # the pipeline's [data] names for the reader options (it always removes exact duplicates)
    options = "".join(f"{ {'fmt': 'format'}.get(k, k)} = {json.dumps(v)}\n" for k, v in kw.items()
                      if k in ("fmt", "max_id_len"))

    def ingest(threshold: float):
        cfg = tmp_path / f"p{threshold}.toml"
        cfg.write_text(f'[pipeline]\nworkdir = "wd{threshold}"\nbundles = "pub"\nmax_bad_fraction = {threshold}\n'
                       f'[data]\npath = "{filename}"\nmax_bad_fraction = 0.9\nmin_length = 1\n{options}'
                       '[models.pop]\nname = "popularity"\n')
        return run_pipeline(load_pipeline_config(cfg), only="ingest", echo=lambda _: None)

    if isinstance(expected, str):
        with pytest.raises(PipelineExit) as err:
            ingest(0.5)
        assert err.value.code == ExitCode.DATA_CHECK_FAILED and expected in str(err.value)
        return
    accepted, reasons, duplicates = expected
    extra = EXTRA_USERS * 8
    if reasons:
        with pytest.raises(PipelineExit) as err:
            ingest(0.0)
        assert err.value.code == ExitCode.DATA_CHECK_FAILED and "quarantined" in str(err.value)
    done = ingest(0.5).run.info("ingest")
    assert (done["accepted"], done["quarantined"]) == (accepted + extra, len(reasons))
    assert done["rows_read"] == done["accepted"] + done["quarantined"] + duplicates


def test_after_a_quoted_field_that_spans_lines_ragged_records_are_still_caught(tmp_path) -> None:
    """The issue's case: a later ragged row used to be cut and accepted, and row numbers drifted."""
    p = tmp_path / "log.csv"
    p.write_text('user,item,timestamp\nu1,"i\n1",1600000000\nu2,i2,1600000001\nu3,i3,1600000002,EXTRA\n'
                 "u4,i4,1600000003\nu5,i5\n")
    res = read_interactions(p, max_bad_fraction=0.9, id_dtype="str")
    assert _reasons(res) == {2: "control character in id", 5: "wrong field count", 7: "wrong field count"}
    assert res.frame["user"].to_list() == ["u2", "u4"]  # line numbers are the file's: u4 is on line 6
