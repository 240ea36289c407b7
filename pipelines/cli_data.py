"""`recsys data ...`: ingest, stats, split, sequences, generate, download."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import typer

from pipelines.config import DataConfig
from recsys import atomic
from recsys.prepare import format as pformat

app = typer.Typer(help="Read, validate, split and sequence interaction logs; generate or download data sets.",
                  no_args_is_help=True)

FORMAT_HELP = ("auto (by file name), csv, tsv, parquet, ml-100k, ml-1m, ml-latest-small, "
               "seq-per-user (`user i1 i2 ...`), seq-pairs (`user item` per line); gzip, zstd and bz2 files "
               "(events.csv.gz) are decompressed first, whatever the format")


def fail(message: str, code: int = 2) -> None:
    """Print a one-paragraph error (no traceback) and exit with ``code``."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _data_config(path: Path | None, fmt: str, user_col: str, item_col: str, timestamp_col: str,
                 encoding: str, max_bad_fraction: float, **extra: object) -> DataConfig:
    return DataConfig(name=path.stem if path else "synthetic", path=str(path) if path else "", format=fmt,
                      user_col=user_col, item_col=item_col, timestamp_col=timestamp_col, encoding=encoding,
                      max_bad_fraction=max_bad_fraction, **extra)  # type: ignore[arg-type]


PathArg = typer.Argument(None, help="Interaction log; omit for the built-in synthetic data set.")
FmtOpt = typer.Option("auto", "--format", help=FORMAT_HELP)
UserOpt = typer.Option("user", help="Column holding the user id (CSV/TSV/Parquet).")
ItemOpt = typer.Option("item", help="Column holding the item id.")
TsOpt = typer.Option("timestamp", help="Column holding the time: epoch s, epoch ms or ISO-8601.")
EncOpt = typer.Option("utf8", help="Text encoding of CSV/TSV files (e.g. latin-1).")
BadOpt = typer.Option(0.05, help="Fail when more than this fraction of rows is quarantined.")


@app.command()
def ingest(
    path: Path = PathArg,
    out: Path = typer.Option(Path("runs/ingest"), help="Output folder."),
    fmt: str = FmtOpt, user_col: str = UserOpt, item_col: str = ItemOpt, timestamp_col: str = TsOpt,
    encoding: str = EncOpt, max_bad_fraction: float = BadOpt,
    repeat_policy: str = typer.Option("keep_all", help="Repeated (user, item): keep_all, first, last, sum_weight."),
    max_id_len: int = typer.Option(256, min=1, help="Quarantine user/item ids longer than this (serving's limit)."),
) -> None:
    """Read and validate a log, drop exact duplicates; write interactions.parquet, quarantine.parquet, report.json."""
    from recsys.prepare.engines.memory import ingest as run_ingest

    cfg = _data_config(path, fmt, user_col, item_col, timestamp_col, encoding, max_bad_fraction,
                       repeat_policy=repeat_policy, max_id_len=max_id_len)
    try:
        ing = run_ingest(cfg)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    out.mkdir(parents=True, exist_ok=True)
    _atomic_parquet(ing.frame, out / pformat.INTERACTIONS)
    if ing.quarantine is not None and ing.quarantine.height:
        _atomic_parquet(ing.quarantine, out / pformat.QUARANTINE)
    if ing.items_meta is not None:
        _atomic_parquet(ing.items_meta, out / pformat.ITEMS_META)
    atomic.write_json(out / pformat.REPORT, ing.report.as_dict())
    typer.echo(ing.report.summary())
    typer.echo(f"wrote {out / pformat.INTERACTIONS} ({ing.frame.height:,} rows)")


def _atomic_parquet(frame: pl.DataFrame, path: Path) -> None:
    with atomic.atomic_path(path) as tmp:
        frame.write_parquet(tmp)


@app.command()
def stats(
    path: Path = PathArg, fmt: str = FmtOpt, user_col: str = UserOpt, item_col: str = ItemOpt,
    timestamp_col: str = TsOpt, encoding: str = EncOpt, max_bad_fraction: float = BadOpt,
) -> None:
    """Print counts, sparsity, sequence-length percentiles and the time range of a log."""
    from recsys.prepare.engines.memory import ingest as run_ingest

    cfg = _data_config(path, fmt, user_col, item_col, timestamp_col, encoding, max_bad_fraction)
    try:
        ing = run_ingest(cfg)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    typer.echo(format_stats(ing.frame))
    typer.echo(ing.report.summary())


def format_stats(frame: pl.DataFrame) -> str:
    """Human-readable summary of a raw interaction frame."""
    n_users, n_items = frame["user"].n_unique(), frame["item"].n_unique()
    lengths = frame.group_by("user").len()["len"].to_numpy()
    pct = np.percentile(lengths, [5, 50, 95]) if len(lengths) else [0, 0, 0]
    ts = frame["timestamp"]
    lines = [
        f"events      {frame.height:,}",
        f"users       {n_users:,}",
        f"items       {n_items:,}",
        f"density     {frame.height / max(n_users * n_items, 1):.6f}",
        f"per user    p5 {pct[0]:.0f}  median {pct[1]:.0f}  p95 {pct[2]:.0f}",
    ]
    if frame.height:
        lines.append(f"time        {_iso(ts.min())} .. {_iso(ts.max())}")
    return "\n".join(lines)


def _iso(t: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(int(t), tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


@app.command()
def split(
    path: Path = PathArg,
    out: Path = typer.Option(Path("runs/prepared"), help="Prepared data folder to write."),
    kind: str = typer.Option("leave_last_out", help="leave_last_out or temporal."),
    cut_quantile: float = typer.Option(0.9, help="temporal: the time cut as a quantile of all timestamps."),
    user_k: int = typer.Option(0, help="k-core: minimum events per user (0 = off)."),
    item_k: int = typer.Option(0, help="k-core: minimum events per item (0 = off)."),
    min_length: int = typer.Option(3, help="Drop users with fewer events."),
    fmt: str = FmtOpt, user_col: str = UserOpt, item_col: str = ItemOpt, timestamp_col: str = TsOpt,
    encoding: str = EncOpt, max_bad_fraction: float = BadOpt,
    id_maps_from: Path = typer.Option(None, help="Earlier prepared folder whose id maps are extended (stable ids)."),
    engine: str = typer.Option("memory", help="memory (the whole log in RAM), outofcore (hash partitions on disk: "
                               "logs larger than memory) or spark (a PySpark job; needs `pip install recsys[spark]` "
                               "and Java). All three write the same prepared folder."),
    partition_rows: int = typer.Option(5_000_000, help="outofcore: rows per partition; peak memory follows it "
                                       "(about 1 GB per 5M)."),
    work_dir: Path = typer.Option(None, help="outofcore/spark: scratch folder (a few times the log's size); "
                                  "default beside --out."),
    master: str = typer.Option("local[*]", help="spark: master URL; local mode by default, a cluster's URL "
                               "(spark://host:7077, yarn) runs the same job there."),
) -> None:
    """Ingest -> clean (k-core, min length) -> IdMap -> split; writes a prepared data folder."""
    from recsys.prepare import prepare

    cfg = _data_config(path, fmt, user_col, item_col, timestamp_col, encoding, max_bad_fraction, split=kind,
                       cut_quantile=cut_quantile, user_k=user_k, item_k=item_k, min_length=min_length,
                       engine=engine, partition_rows=partition_rows, work_dir=str(work_dir or ""),
                       spark_master=master)
    if engine not in ("memory", "outofcore", "spark"):
        fail(f"--engine {engine!r} is not one of memory, outofcore, spark")
    try:
        prep = prepare(cfg, out, id_maps_from=id_maps_from)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    s = prep.split
    typer.echo(f"{len(prep.users):,} users, {len(prep.items):,} items, split {kind}: train {s.train.n_events:,} "
               f"events, {s.valid_targets.n_events:,} validation and {s.test_targets.n_events:,} test targets")
    typer.echo(f"fingerprint {s.fingerprint}; wrote {out}")


@app.command()
def sequences(
    prepared: Path = typer.Argument(..., help="Prepared data folder (from `recsys data split`)."),
    out: Path = typer.Option(Path("runs/sequences"), help="Folder for offsets.npy / items.npy / meta.json."),
    session_gap: int = typer.Option(0, help="Split a user's events into sessions after this many idle seconds."),
    drop_repeats: bool = typer.Option(False, help="Drop consecutive repeats of the same item."),
    max_len: int = typer.Option(0, help="Keep only the most recent N events per row (0 = all)."),
) -> None:
    """Per-user (or per-session) time-ordered sequences of all events, memory-mappable."""
    from recsys.prepare.build import build_sequences

    try:
        encoded = pformat.read_interactions(prepared)
        report = pformat.read_report(prepared)
    except FileNotFoundError as exc:
        fail(f"{prepared} is not a prepared data folder ({exc.filename} missing); run `recsys data split` first")
    seqs = build_sequences(encoded, report["n_users"], report["n_items"], session_gap=session_gap or None,
                           drop_consecutive_repeats=drop_repeats, max_len=max_len or None)
    seqs.save(out)
    lengths = seqs.lengths()[seqs.lengths() > 0]
    typer.echo(f"{len(lengths):,} sequences, {seqs.n_events:,} events, median length "
               f"{np.median(lengths) if len(lengths) else 0:.0f}; wrote {out}")


@app.command()
def generate(
    out: Path = typer.Option(Path("data/synthetic"), help="Folder for interactions/part-*.parquet + items.parquet."),
    users: int = typer.Option(100_000, help="Number of users."),
    items: int = typer.Option(20_000, help="Number of items."),
    events: int = typer.Option(10_000_000, help="Number of events (written in chunks; 100M is fine)."),
    seed: int = typer.Option(42, help="Random seed (same seed -> same data)."),
) -> None:
    """Write a synthetic log with planted tastes and sequential dynamics (Parquet parts)."""
    from recsys.sources.synthetic import SyntheticConfig, write

    write(SyntheticConfig(n_users=users, n_items=items, n_events=events, seed=seed), out, progress=True)
    typer.echo(f"wrote {events:,} events to {out}")


@app.command()
def download(
    name: str = typer.Argument(..., help="ml-100k, ml-1m or ml-latest-small."),
    cache_dir: Path = typer.Option(Path("data/cache"), help="Where archives are kept and extracted."),
    url: str = typer.Option(None, help="Override the publisher URL (mirrors, tests)."),
) -> None:
    """Download a MovieLens data set from its publisher, check its sha256 and extract it into the cache."""
    from recsys.sources.download import download as fetch

    try:
        path = fetch(name, cache_dir, url=url)
    except (ValueError, OSError) as exc:
        fail(str(exc))
    typer.echo(f"{name} ready at {path}")
