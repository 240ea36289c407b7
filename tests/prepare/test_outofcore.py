"""The out-of-core and Spark engines prepare exactly what the in-memory path prepares.

Generated logs hold what real ones do: exact duplicates, repeated (user, item) events, timestamp ties inside a
user, bad rows of several kinds, users too short to split (cold), string ids among integer ones. Every engine
must give the same prepared folder: the same report counts, id maps and fingerprint, split arrays byte for byte,
the same rows in ``interactions.parquet`` and the same quarantine.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.config import DataConfig
from recsys.ingest.errors import DataError
from recsys.ingest.readers import ColumnMapping
from recsys.prepare import load_prepared, prepare
from recsys.prepare.build import build_sequences
from recsys.prepare.engines.outofcore import OutOfCoreOptions, prepare_out_of_core
from recsys.prepare.engines.outofcore.write import NpyAppender, kth_smallest
from recsys.prepare.format import all_events

COUNTS = ("rows_read", "accepted", "quarantined", "duplicates_removed", "filtered", "reasons", "n_users", "n_items",
          "n_events", "fingerprint")


def messy_log(n: int = 6000, seed: int = 0, string_ids: bool = True) -> pl.DataFrame:
    """A raw log as strings: duplicates, repeats, ties, bad rows, cold users (1-2 events), a few string ids."""
    rng = np.random.default_rng(seed)
    users = rng.zipf(1.6, n) % 400 + 1  # skewed activity: many users with 1-2 events
    items = rng.zipf(1.4, n) % 150 + 1
    ts = 1_600_000_000 + rng.integers(0, 3000, n)  # coarse time: ties inside a user
    df = pl.DataFrame({"user": users.astype(str), "item": items.astype(str), "timestamp": ts.astype(str),
                       "weight": rng.integers(1, 4, n).astype(np.float64).astype(str)})
    df = pl.concat([df, df.sample(n // 15, seed=seed + 1), df.sample(n // 30, seed=seed + 2)])  # exact copies
    rows = df.rows()
    for k, bad in enumerate([("", "3", "1600000000", "1.0"), ("8", "9", "notatime", "1.0"),
                             ("9", "10", "1600000100", "-2"), ("10", "", "1600000100", "1.0"),
                             ("11", "12", "12", "1.0")]):
        rows[17 * k + 3] = bad
    if string_ids:
        rows[40] = ("user-x", "item-y", "1600000500", "1.0")
        rows[41] = ("user-x", "item-y", "1600000600", "2.0")
    return pl.DataFrame(rows, schema=df.columns, orient="row")


def write_log(df: pl.DataFrame, folder: Path, fmt: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        path = folder / "log.csv"
        df.write_csv(path)
    else:  # Parquet with typed columns where they parse (ids stay strings when some are not integers)
        path = folder / "log.parquet"
        df.with_columns(pl.col("timestamp").cast(pl.Int64, strict=False),
                        pl.col("weight").cast(pl.Float64, strict=False)).write_parquet(path, row_group_size=1000)
    return path


def assert_same_prepared(a: Path, b: Path) -> None:
    ra, rb = json.loads((a / "report.json").read_text()), json.loads((b / "report.json").read_text())
    assert {k: ra[k] for k in COUNTS} == {k: rb[k] for k in COUNTS}
    assert ra["stats"].get("kcore_passes") == rb["stats"].get("kcore_passes")
    for name in ("user_ids.parquet", "item_ids.parquet"):
        assert pl.read_parquet(a / name).equals(pl.read_parquet(b / name)), name
    files = sorted(p.relative_to(a) for p in (a / "split").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in (b / "split").rglob("*") if p.is_file())
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f"{f} differs"
    ia, ib = pl.read_parquet(a / "interactions.parquet"), pl.read_parquet(b / "interactions.parquet")
    assert ia.schema == ib.schema
    assert ia.sort(pl.all()).equals(ib.sort(pl.all()))
    qa, qb = a / "quarantine.parquet", b / "quarantine.parquet"
    assert qa.exists() == qb.exists()
    if qa.exists():
        assert pl.read_parquet(qa).equals(pl.read_parquet(qb))


def run(tmp: Path, name: str, **cfg) -> Path:
    out = tmp / name
    prepare(DataConfig(**cfg), out)
    return out


CASES = [  # (format, split, repeat policy, user_k, item_k)
    ("csv", "leave_last_out", "keep_all", 3, 3),
    ("csv", "temporal", "sum_weight", 0, 0),
    ("parquet", "leave_last_out", "first", 2, 4),
    ("parquet", "temporal", "last", 3, 2),
]


@pytest.mark.parametrize(("fmt", "split", "policy", "user_k", "item_k"), CASES)
def test_out_of_core_prepares_what_memory_prepares(tmp_path, fmt, split, policy, user_k, item_k):
    path = write_log(messy_log(seed=len(fmt) + user_k), tmp_path / "log", fmt)
    common = dict(path=str(path), format=fmt, weight_col="weight", split=split, repeat_policy=policy,
                  user_k=user_k, item_k=item_k, min_length=3)
    mem = run(tmp_path, "memory", **common)
    ooc = run(tmp_path, "ooc", engine="outofcore", partition_rows=500, **common)  # ~13 partitions
    assert json.loads((ooc / "report.json").read_text())["stats"]["partitions"] > 5
    assert_same_prepared(mem, ooc)
    assert not list(tmp_path.glob(".*ooc-work*")), "the scratch folder is removed"
    if split == "leave_last_out":  # what a bundle stores: joined from the split, the same on both engines,
        # and the events of interactions.parquet in time order (ties as the split orders them)
        whole = [all_events(load_prepared(d)) for d in (mem, ooc)]
        rebuilt = build_sequences(pl.read_parquet(mem / "interactions.parquet"), whole[0].n_rows - 1,
                                  whole[0].n_items)
        for s in (whole[1], rebuilt):
            for part in ("offsets", "items", "timestamps"):
                assert np.array_equal(getattr(s, part), getattr(whole[0], part)), part


def test_out_of_core_parquet_in_many_blocks_and_one_partition(tmp_path):
    """Block boundaries (the time unit and id dtype are decided per block) and partition counts do not matter."""
    path = write_log(messy_log(seed=5), tmp_path / "log", "parquet")
    mem = run(tmp_path, "memory", path=str(path), weight_col="weight", user_k=2, item_k=2)
    for parts, block in ((1, 700), (7, 333)):
        dest = tmp_path / f"ooc-{parts}"
        dest.mkdir()
        res = prepare_out_of_core(path, dest, mapping=ColumnMapping(weight="weight"), user_k=2, item_k=2,
                                  min_length=3, options=OutOfCoreOptions(partitions=parts, block_rows=block))
        assert res.report.stats["blocks"] > 5
        (dest / "report.json").write_text(json.dumps({**res.report.as_dict(), "n_users": len(res.users),
                                                      "n_items": len(res.items), "n_events": res.n_events,
                                                      "fingerprint": res.fingerprint}))
        assert_same_prepared(mem, dest)


def test_out_of_core_refuses_a_log_with_too_many_bad_rows(tmp_path):
    df = messy_log(n=300, seed=1).with_columns(
        pl.when(pl.int_range(pl.len()) % 4 == 0).then(pl.lit("x")).otherwise(pl.col("timestamp")).alias("timestamp"))
    path = write_log(df, tmp_path, "csv")
    with pytest.raises(DataError, match=r"log\.csv.*quarantined.*max_bad_fraction"):
        prepare(DataConfig(path=str(path), engine="outofcore", partition_rows=50), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_each_engine_refuses_the_other_kind_of_validated_rows(tmp_path):
    from recsys.ingest.report import IngestReport
    from recsys.prepare.engines import ValidatedParts
    from recsys.prepare.engines.memory import Ingested

    ing = Ingested(pl.DataFrame(), None, None, IngestReport("x"))
    with pytest.raises(ValueError, match="ValidatedParts"):
        prepare(DataConfig(engine="outofcore", path="x.csv"), tmp_path / "o", ingested=ing)
    with pytest.raises(ValueError, match="in-memory engine takes rows read into memory"):
        prepare(DataConfig(path="x.csv"), tmp_path / "o", ingested=ValidatedParts(tmp_path, IngestReport("x")))


def log_folder_runs(tmp_path: Path, configs: dict[str, DataConfig], days: list[pl.DataFrame]) -> dict[str, list[Path]]:
    """The pipeline's incremental log folder, one run a day (the day's file added to ``logs/``, then collect,
    prepare and commit for each config, each in its own working folder); the prepared folders of each config's
    runs. Day 2 comes gzipped."""
    import gzip
    from dataclasses import replace

    from pipelines.ingest_logs import collect, commit

    logs, outs = tmp_path / "logs", {name: [] for name in configs}
    logs.mkdir()
    for d, day in enumerate(days, 1):
        if d == 2:
            (logs / "day2.csv.gz").write_bytes(gzip.compress(day.write_csv().encode()))
        else:
            day.write_csv(logs / f"day{d}.csv")
        for name, config in configs.items():
            config = replace(config, path=str(logs))
            outs[name].append(tmp_path / f"{name}-run{d}")
            prepare(config, outs[name][-1], ingested=collect(config, tmp_path / f"wd-{name}", f"run{d}"))
            commit(tmp_path / f"wd-{name}")
    return outs


@pytest.mark.parametrize("engine", ["outofcore", pytest.param("spark", marks=pytest.mark.slow)])
def test_a_log_folder_prepares_on_every_engine_what_memory_prepares(tmp_path, engine, request):
    if engine == "spark":
        request.getfixturevalue("spark_ok")
    log = messy_log(seed=5)  # string ids and bad rows on day 1, duplicates across days
    days = [log.head(2500), log.slice(2500, 2500), log.slice(5000)]
    extra = {"partition_rows": 400} if engine == "outofcore" else {"spark_master": "local[2]"}
    common = dict(weight_col="weight", min_length=2, user_k=2, item_k=2)
    outs = log_folder_runs(tmp_path, {"memory": DataConfig(**common),
                                      engine: DataConfig(engine=engine, **common, **extra)}, days)
    large = outs[engine]
    for a, b in zip(outs["memory"], large, strict=True):
        assert_same_prepared(a, b)
    report = json.loads((large[-1] / "report.json").read_text())
    assert report["stats"]["new_rows_read"] == days[2].height and report["stats"]["engine"] == engine
    state = json.loads((tmp_path / f"wd-{engine}" / "logs" / "files.json").read_text())
    assert sorted(state["files"]) == ["day1.csv", "day2.csv.gz", "day3.csv"] and len(state["parts"]) == 3
    # rows read = the earlier days' accepted rows (kept as parts) + all of day 3's
    kept = sum(pl.read_parquet(tmp_path / f"wd-{engine}" / "logs" / p).height for p in state["parts"])
    assert kept == report["rows_read"] - report["quarantined"] and report["stats"]["previous_rows"] == (
        kept - (days[2].height - report["quarantined"]))


def test_out_of_core_on_the_built_in_synthetic_set(tmp_path):
    small = dict(synthetic_users=300, synthetic_items=100, synthetic_events=6000)
    mem = run(tmp_path, "memory", **small)
    ooc = run(tmp_path, "ooc", engine="outofcore", partition_rows=1000, **small)
    ra, rb = (json.loads((d / "report.json").read_text()) for d in (mem, ooc))
    assert ra["fingerprint"] == rb["fingerprint"] and ra["n_users"] == rb["n_users"]
    assert (ooc / "items_meta.parquet").exists() and not (ooc / "synthetic.parquet").exists()


def test_cli_split_with_the_out_of_core_engine(tmp_path):
    from typer.testing import CliRunner

    from pipelines.cli import app

    path = write_log(messy_log(n=2000), tmp_path, "csv")
    r = CliRunner().invoke(app, ["data", "split", str(path), "--out", str(tmp_path / "p"), "--engine", "outofcore",
                                 "--partition-rows", "300", "--user-k", "2", "--item-k", "2"])
    assert r.exit_code == 0, r.output
    assert "fingerprint" in r.output
    bad = CliRunner().invoke(app, ["data", "split", str(path), "--out", str(tmp_path / "q"), "--engine", "dask"])
    assert bad.exit_code != 0 and "memory, outofcore, spark" in bad.output


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-2**40, 2**40), min_size=1, max_size=300), st.integers(1, 7), st.data())
def test_kth_smallest_is_exact(values, n_chunks, data):
    arr = np.array(values, dtype=np.int64)
    chunks = np.array_split(arr, n_chunks)
    k = data.draw(st.integers(0, len(arr) - 1))
    assert kth_smallest(lambda: iter(chunks), k) == np.sort(arr)[k]
    upper = data.draw(st.sampled_from(values))
    below = np.sort(arr[arr <= upper])
    j = data.draw(st.integers(0, len(below) - 1))
    assert kth_smallest(lambda: iter(chunks), j, upper=upper) == below[j]


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float32])
def test_npy_appender_writes_what_np_save_writes(tmp_path, dtype):
    arr = np.arange(1000, dtype=dtype)
    w = NpyAppender(tmp_path / "a.npy", dtype)
    for part in np.array_split(arr, 7):
        w.append(part)
    w.close()
    np.save(tmp_path / "b.npy", arr)
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()


# -- Spark (local mode) ----------------------------------------------------------------------------------------

def _spark_available() -> str | None:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed (pip install -e '.[spark]')"
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        return "no Java runtime for Spark (install a JRE 17+, e.g. apt-get install default-jre-headless)"
    return None


@pytest.fixture(scope="module")
def spark_ok():
    why = _spark_available()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the Spark tests: {why}")
        pytest.skip(why)
    yield
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        active.stop()


@pytest.mark.slow
@pytest.mark.parametrize(("fmt", "split", "policy", "user_k", "item_k"), [CASES[0], CASES[3], CASES[1]])
def test_spark_prepares_what_memory_and_out_of_core_prepare(tmp_path, spark_ok, fmt, split, policy, user_k, item_k):
    path = write_log(messy_log(seed=len(fmt) + user_k), tmp_path / "log", fmt)
    common = dict(path=str(path), format=fmt, weight_col="weight", split=split, repeat_policy=policy,
                  user_k=user_k, item_k=item_k, min_length=3)
    mem = run(tmp_path, "memory", **common)
    ooc = run(tmp_path, "ooc", engine="outofcore", partition_rows=500, **common)
    spark = run(tmp_path, "spark", engine="spark", spark_master="local[2]", **common)
    assert json.loads((spark / "report.json").read_text())["stats"]["engine"] == "spark"
    assert_same_prepared(mem, spark)
    assert_same_prepared(ooc, spark)


def test_spark_without_java_says_what_to_install(monkeypatch):
    pytest.importorskip("pyspark")
    from recsys.prepare.engines import spark

    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setattr(spark.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="Java runtime.*default-jre-headless"):
        spark.spark_session()


def test_run_configs_choose_the_engine_and_refuse_unknown_ones():
    from pipelines.config import parse_run_config
    from recsys.config import ConfigError

    cfg = parse_run_config({"data": {"engine": "outofcore", "partition_rows": 1000}, "model": {"name": "popularity"}})
    assert cfg.data.engine == "outofcore" and cfg.data.partition_rows == 1000
    with pytest.raises(ConfigError, match="engine"):
        parse_run_config({"data": {"engine": "dask"}, "model": {"name": "popularity"}})


def test_split_help_names_the_engines():
    from typer.testing import CliRunner

    from pipelines.cli import app

    out = CliRunner().invoke(app, ["data", "split", "--help"], env={"COLUMNS": "200"}).output
    assert "--engine" in out and "outofcore" in out and "--master" in out and "--partition-rows" in out
