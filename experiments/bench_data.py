"""Data-layer benchmark: synthetic Parquet logs -> ingest -> dedupe + k-core -> IdMap -> split -> saved sequences.

Each (size, implementation) runs in a fresh subprocess, so its peak RSS (``ru_maxrss`` of that
process) is its own. The polars/numpy data layer (``recsys.ingest`` and ``recsys.prepare``) is compared with a plain
pandas implementation of the same steps, measured in the same run, and the ratios are printed.

    python experiments/bench_data.py              # 10M and 50M events, pandas too (each run has a timeout)
    python experiments/bench_data.py --quick      # 1M events, smoke run
    python experiments/bench_data.py --csv 20     # a 20M-row CSV log, plain and gzip-compressed

``--csv N`` writes N million synthetic events as one CSV log (``user,item,timestamp,weight,event``) and
a gzip copy of it (level 6), then reads each with ``recsys.ingest.readers.read_interactions`` in a fresh
subprocess (the gzip file is decompressed as a stream): rows/s and peak RSS of both, and their ratios
(report ``experiments/reports/bench_data_csv.{json,md}``).

Synthetic data is cached under ``bench_data/`` at the repository root (gitignored); results go to
``experiments/reports/bench_data.{json,md}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "experiments"))

import harness  # noqa: E402

from recsys import atomic  # noqa: E402
from recsys.sources.synthetic import SyntheticConfig, write  # noqa: E402

REPORTS = REPO / "experiments" / "reports"
USER_K = ITEM_K = 5


def synthetic_config(n_events: int) -> SyntheticConfig:
    """About 50 events per user and 1 item per 200 events (min 20k items), fixed seed."""
    return SyntheticConfig(n_users=max(n_events // 50, 1), n_items=max(n_events // 200, 20_000),
                           n_events=n_events, n_categories=50, seed=2024)


def ensure_data(n_events: int, root: Path) -> tuple[Path, float | None]:
    """Generate (or reuse the cached) data set; returns its folder and the generation seconds (None if cached)."""
    cfg = synthetic_config(n_events)
    folder = root / f"synthetic-{n_events // 1_000_000}M"
    manifest = folder / "manifest.json"
    if manifest.is_file() and json.loads(manifest.read_text())["config"] == json.loads(json.dumps(asdict(cfg))):
        return folder, None
    t0 = time.perf_counter()
    write(cfg, folder, progress=True, overwrite=True)
    return folder, time.perf_counter() - t0


# -- workers (run in a child process) -----------------------------------------------------------

def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _cpu_s() -> float:
    """User + system CPU seconds of this process (all threads): less sensitive to other load than wall time."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class _Timer:
    def __init__(self) -> None:
        self.steps: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.peak_mb: dict[str, float] = {}
        self._t, self._c = time.perf_counter(), _cpu_s()

    def lap(self, name: str) -> None:
        now, cpu = time.perf_counter(), _cpu_s()
        self.steps[name], self._t = now - self._t, now
        self.cpu[name], self._c = cpu - self._c, cpu
        self.peak_mb[name] = _rss_mb()


def _polars_ingest(data: Path):
    """Per part file: recsys.ingest.readers.read_interactions when it exists, else Parquet scan + validate_frame."""
    import polars as pl

    parts = sorted((data / "interactions").glob("part-*.parquet"))
    try:  # the readers module may land after this script; fall back to the validation layer alone
        from recsys.ingest.readers import ColumnMapping, read_interactions
    except ImportError:
        from recsys.ingest.validation import validate_frame

        raw = pl.scan_parquet(parts).with_row_index("row", offset=1).collect()
        v = validate_frame(raw, str(data / "interactions"), timestamp_unit="s")
        return v.frame.rechunk(), "polars.scan_parquet + recsys.ingest.validation.validate_frame"
    mapping = ColumnMapping(weight="weight", event="event")
    frames = [read_interactions(p, fmt="parquet", mapping=mapping, timestamp_unit="s").frame for p in parts]
    # one contiguous frame: later to_numpy() calls are zero-copy instead of gathering ~40 chunks a part
    return pl.concat(frames, rechunk=True), "recsys.ingest.readers.read_interactions per part file, rechunked"


def run_polars(data: Path, out: Path) -> dict:
    from recsys.ingest.report import IngestReport
    from recsys.prepare.filters import dedupe, kcore
    from recsys.prepare.idmap import IdMap, encode_interactions
    from recsys.prepare.split import leave_last_out

    t = _Timer()
    frame, how = _polars_ingest(data)
    n_read = frame.height
    t.lap("ingest")
    report = IngestReport(source=str(data))
    frame = dedupe(frame, report=report)
    t.lap("dedupe")
    frame = kcore(frame, USER_K, ITEM_K, report=report)
    t.lap("kcore")
    users, items = IdMap.fit(frame["user"]), IdMap.fit(frame["item"])
    encoded = encode_interactions(frame, users, items)
    del frame
    t.lap("idmap")
    split = leave_last_out(encoded, len(users), len(items))
    t.lap("split")
    fp = split.fingerprint
    split.save(out / "split")
    users.save(out / "users.parquet")
    items.save(out / "items.parquet")
    t.lap("save")
    report.check()
    return {"ingest": how, "rows_read": n_read, "rows_kept": encoded.height, "n_users": len(users),
            "n_items": len(items), "n_test_targets": split.params["n_test_targets"], "fingerprint": fp, **_result(t)}


def run_pandas(data: Path, out: Path) -> dict:
    """The same steps in plain pandas: read, validate, drop_duplicates, k-core loop, factorize, sort, split."""
    import numpy as np
    import pandas as pd

    t = _Timer()
    df = pd.read_parquet(data / "interactions")
    df = df[df[["user", "item", "timestamp"]].notna().all(axis=1) & (df["timestamp"] >= 631_152_000)
            & (df["weight"] >= 0)]
    n_read = len(df)
    t.lap("ingest")
    df = df.drop_duplicates()
    t.lap("dedupe")
    while True:
        ok = ((df.groupby("user")["user"].transform("size") >= USER_K)
              & (df.groupby("item")["item"].transform("size") >= ITEM_K))
        if ok.all():
            break
        df = df[ok]
    t.lap("kcore")
    user_codes, user_ids = pd.factorize(df["user"], sort=True)
    item_codes, item_ids = pd.factorize(df["item"], sort=True)
    enc = pd.DataFrame({"user_idx": user_codes.astype(np.int32) + 1, "item_idx": item_codes.astype(np.int32) + 1,
                        "timestamp": df["timestamp"].to_numpy()})
    del df
    t.lap("idmap")
    enc = enc.sort_values(["user_idx", "timestamp"], kind="stable")
    from_end = enc.groupby("user_idx").cumcount(ascending=False).to_numpy()
    size = enc.groupby("user_idx")["user_idx"].transform("size").to_numpy()
    test, valid = (size >= 3) & (from_end == 0), (size >= 3) & (from_end == 1)
    t.lap("split")
    n_rows = len(user_ids) + 1
    u, i, ts = enc["user_idx"].to_numpy(), enc["item_idx"].to_numpy(), enc["timestamp"].to_numpy()
    train = ~(test | valid)
    parts = {"train": train, "valid_history": train, "valid_targets": valid, "test_history": ~test,
             "test_targets": test}  # the same five parts SplitData.save writes
    for name, mask in parts.items():
        part = out / "split" / name
        part.mkdir(parents=True, exist_ok=True)
        np.save(part / "items.npy", i[mask])
        np.save(part / "timestamps.npy", ts[mask])
        np.save(part / "offsets.npy", np.concatenate([[0], np.cumsum(np.bincount(u[mask], minlength=n_rows))]))
    pd.DataFrame({"id": user_ids}).to_parquet(out / "users.parquet")
    pd.DataFrame({"id": item_ids}).to_parquet(out / "items.parquet")
    t.lap("save")
    return {"ingest": "pandas.read_parquet + null/bounds filter", "rows_read": n_read, "rows_kept": len(enc),
            "n_users": len(user_ids), "n_items": len(item_ids), "n_test_targets": int(test.sum()), **_result(t)}


def _result(t: _Timer) -> dict:
    return {"steps_s": t.steps, "total_s": sum(t.steps.values()), "cpu_s": sum(t.cpu.values()),
            "steps_cpu_s": t.cpu, "peak_rss_mb": _rss_mb(),
            "peak_rss_mb_after_step": t.peak_mb}


def run_csv(data: Path, out: Path) -> dict:
    """Read one CSV log (plain or compressed) through the public reader; the rows it accepted and the cost."""
    from recsys.ingest.readers import ColumnMapping, read_interactions

    t = _Timer()
    res = read_interactions(data, mapping=ColumnMapping(weight="weight", event="event"))
    t.lap("read")
    r = res.report
    return {"rows_read": r.rows_read, "accepted": r.accepted, "quarantined": r.quarantined,
            "compression": r.stats.get("compression"), "file_mb": data.stat().st_size / 2**20, **_result(t)}


class _Monitor:
    """Samples, once a second in a thread, the RSS of this process and its children (Spark's JVM) and the disk
    used under ``dirs``; keeps the peaks."""

    def __init__(self, dirs: list[Path]) -> None:
        import threading

        self.dirs, self.peak_tree_mb, self.peak_disk_mb = dirs, 0.0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _disk_mb(self) -> float:
        total = 0
        for d in self.dirs:
            for root, _, files in os.walk(d):
                for f in files:
                    with contextlib.suppress(OSError):
                        total += os.stat(os.path.join(root, f)).st_blocks * 512
        return total / 2**20

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.wait(1.0):
            rss = 0
            for p in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    rss += p.memory_info().rss
            self.peak_tree_mb = max(self.peak_tree_mb, rss / 2**20)
            self.peak_disk_mb = max(self.peak_disk_mb, self._disk_mb())

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {"peak_tree_rss_mb": self.peak_tree_mb, "peak_disk_mb": self.peak_disk_mb,
                "output_mb": self._disk_mb()}


def _engine_run(data: Path, out: Path, engine: str) -> dict:
    """The out-of-core or Spark engine on the same steps as run_polars: dedupe, k-core(5,5), ids, leave-last-out."""
    import shutil

    from recsys.ingest.readers import ColumnMapping

    work = out.parent / f"{out.name}-work"
    shutil.rmtree(work, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    mon = _Monitor([work, out])
    t = _Timer()
    kwargs = dict(mapping=ColumnMapping(weight="weight", event="event"), user_k=USER_K, item_k=ITEM_K, min_length=1)
    if engine == "outofcore":
        from recsys.prepare.engines.outofcore import OutOfCoreOptions, prepare_out_of_core

        res = prepare_out_of_core(data / "interactions", out, **kwargs, options=OutOfCoreOptions(work_dir=str(work)))
    else:
        from recsys.prepare.engines.spark import prepare_spark

        res = prepare_spark(data / "interactions", out, **kwargs, work_dir=str(work))
    t.lap("total")
    disk = mon.stop()
    r = res.report
    return {"ingest": f"recsys.prepare.engines.{engine}", "rows_read": r.rows_read, "rows_kept": res.n_events,
            "n_users": len(res.users), "n_items": len(res.items), "n_test_targets": res.split_params["n_test_targets"],
            "fingerprint": res.fingerprint, "partitions": r.stats.get("partitions"), "engine_steps_s": res.steps_s,
            **disk, **_result(t)}


def run_outofcore(data: Path, out: Path) -> dict:
    return _engine_run(data, out, "outofcore")


def run_spark(data: Path, out: Path) -> dict:
    return _engine_run(data, out, "spark")


def run_polars_fp(data: Path, out: Path) -> dict:
    """run_polars plus the fingerprint (to check the engines agree) and the disk monitor."""
    mon = _Monitor([out])
    result = run_polars(data, out)
    return {**result, **mon.stop()}


WORKERS = {"polars": run_polars, "pandas": run_pandas, "csv": run_csv, "outofcore": run_outofcore,
           "spark": run_spark, "polars_fp": run_polars_fp}


# -- driver -------------------------------------------------------------------------------------

def run_child(impl: str, data: Path, out: Path, timeout: float) -> dict:
    """Run one worker in a fresh interpreter; its last stdout line is the JSON result."""
    cmd = [sys.executable, __file__, "--worker", impl, "--data", str(data), "--out", str(out)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"impl": impl, "skipped": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"impl": impl, "skipped": f"exit code {proc.returncode}: {' | '.join(tail)}"}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"impl": impl, "wall_s": time.perf_counter() - t0, **result}


def bench_size(n_events: int, args: argparse.Namespace) -> dict:
    import shutil

    data, gen_s = ensure_data(n_events, args.cache)
    row: dict = {"n_events": n_events, "generate_s": gen_s, "data": str(data.relative_to(REPO))
                 if data.is_relative_to(REPO) else str(data)}
    for impl in ("polars", "pandas"):
        if impl == "pandas" and n_events > args.pandas_max_events:
            row[impl] = {"impl": impl, "skipped": f"{n_events:,} events > --pandas-max-events "
                         f"{args.pandas_max_events:,} (pandas needs several times the polars memory)"}
            continue
        out = args.cache / f"out-{impl}-{n_events // 1_000_000}M"
        shutil.rmtree(out, ignore_errors=True)
        row[impl] = run_child(impl, data, out, args.timeout)
        shutil.rmtree(out, ignore_errors=True)
        print(f"{n_events:>12,} {impl:7s} " + _line(row[impl]), flush=True)
    p, q = row["polars"], row.get("pandas", {})
    if "total_s" in p and "total_s" in q:
        row["speedup_pandas_over_polars"] = q["total_s"] / p["total_s"]
        row["cpu_ratio_pandas_over_polars"] = q["cpu_s"] / p["cpu_s"]
        row["rss_ratio_pandas_over_polars"] = q["peak_rss_mb"] / p["peak_rss_mb"]
        print(f"{'':>12} ratio   pandas/polars wall time {row['speedup_pandas_over_polars']:.2f}x, CPU time "
              f"{row['cpu_ratio_pandas_over_polars']:.2f}x, peak RSS {row['rss_ratio_pandas_over_polars']:.2f}x",
              flush=True)
    return row


def ensure_csv(n_events: int, root: Path) -> tuple[Path, Path, dict]:
    """The synthetic data set as one CSV log and its gzip copy (cached); returns (csv, csv.gz, timings)."""
    import gzip
    import shutil

    import polars as pl

    data, _ = ensure_data(n_events, root)
    plain, packed = root / f"log-{n_events // 1_000_000}M.csv", root / f"log-{n_events // 1_000_000}M.csv.gz"
    timings: dict = {}
    if not plain.is_file():
        t0 = time.perf_counter()
        with atomic.atomic_path(plain) as tmp:
            pl.scan_parquet(sorted((data / "interactions").glob("part-*.parquet"))).select(
                "user", "item", "timestamp", "weight", "event").sink_csv(tmp)
        timings["write_csv_s"] = time.perf_counter() - t0
    if not packed.is_file():
        t0 = time.perf_counter()
        with atomic.atomic_path(packed) as tmp, plain.open("rb") as src, gzip.open(tmp, "wb", compresslevel=6) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        timings["gzip_s"] = time.perf_counter() - t0
    return plain, packed, timings


def bench_csv(n_events: int, args: argparse.Namespace) -> dict:
    plain, packed, timings = ensure_csv(n_events, args.cache)
    row: dict = {"n_events": n_events, **timings}
    for name, path in (("plain", plain), ("gzip", packed)):
        row[name] = run_child("csv", path, args.cache, args.timeout)
        r = row[name]
        if "skipped" not in r:
            r["rows_per_s"] = r["rows_read"] / r["total_s"]
        print(f"{n_events:>12,} csv {name:5s} " + (f"skipped: {r['skipped']}" if "skipped" in r else
              f"{r['total_s']:.1f} s, {r['rows_per_s'] / 1e6:.2f} M rows/s, peak RSS {r['peak_rss_mb'] / 1024:.2f} GB, "
              f"file {r['file_mb']:.0f} MB"), flush=True)
    p, g = row["plain"], row["gzip"]
    if "total_s" in p and "total_s" in g:
        row["gzip_over_plain"] = {"wall": g["total_s"] / p["total_s"], "cpu": g["cpu_s"] / p["cpu_s"],
                                  "peak_rss": g["peak_rss_mb"] / p["peak_rss_mb"],
                                  "file_size": g["file_mb"] / p["file_mb"]}
    return row


def _meta(args: argparse.Namespace, **extra: str) -> dict:
    """The run's facts (experiments/harness.py: command, commit, machine, load, wall time) plus ``extra``."""
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {**args.run.finish(), "python": platform.python_version(), "ram_gb": round(ram), **extra}


def _header(meta: dict) -> list[str]:
    ram = f"; {meta['ram_gb']} GB RAM" if "ram_gb" in meta else ""
    return [*harness.header_lines(meta), f"Python {meta['python']}{ram}.", ""]


def legacy_meta(meta: dict) -> dict:
    """A report's ``meta`` from before the harness, in the harness's keys: its ``loadavg`` was taken at start."""
    out = {k: v for k, v in meta.items() if k != "loadavg"}
    if "loadavg" in meta:
        out["loadavg_start"] = meta["loadavg"]
    return out


def write_csv_report(row: dict, args: argparse.Namespace, meta: dict | None = None) -> None:
    meta = meta or _meta(args)
    _atomic(REPORTS / "bench_data_csv.json", json.dumps({"meta": meta, "row": row}, indent=2))
    lines = ["# Reading a CSV log, plain and gzip-compressed", "", *_header(meta),
             f"{row['n_events']:,} synthetic events as one CSV (`user,item,timestamp,weight,event`), read by "
             "`recsys.ingest.readers.read_interactions` (validation and quarantine included) in a fresh subprocess; "
             "peak RSS = its ru_maxrss. The gzip file is decompressed as a stream into a temporary plain copy "
             "(1 MiB buffer), which the CSV reader then reads.", "",
             "| file | size MB | rows read | accepted | seconds | CPU s | M rows/s | peak RSS GB |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name in ("plain", "gzip"):
        r = row[name]
        if "skipped" in r:
            lines.append(f"| {name} | skipped: {r['skipped']} |||||||")
            continue
        lines.append(f"| {name} | {r['file_mb']:.0f} | {r['rows_read']:,} | {r['accepted']:,} | {r['total_s']:.1f} | "
                     f"{r['cpu_s']:.1f} | {r['rows_per_s'] / 1e6:.2f} | {r['peak_rss_mb'] / 1024:.2f} |")
    if "gzip_over_plain" in row:
        x = row["gzip_over_plain"]
        lines += ["", f"gzip / plain: wall time {x['wall']:.2f}x, CPU time {x['cpu']:.2f}x, peak RSS "
                  f"{x['peak_rss']:.2f}x, file size {x['file_size']:.2f}x."]
    _atomic(REPORTS / "bench_data_csv.md", "\n".join(lines) + "\n")


def _line(r: dict) -> str:
    if "skipped" in r:
        return f"skipped: {r['skipped']}"
    steps = " ".join(f"{k} {v:.1f}" for k, v in r["steps_s"].items())
    return (f"total {r['total_s']:.1f} s, CPU {r['cpu_s']:.1f} s ({r['rows_read'] / r['total_s'] / 1e6:.2f} M ev/s), "
            f"peak RSS {r['peak_rss_mb'] / 1024:.2f} GB; {steps}")


def write_reports(rows: list[dict], args: argparse.Namespace) -> None:
    meta = _meta(args, pipeline="ingest -> dedupe -> kcore(5,5) -> IdMap fit+encode -> leave_last_out -> save")
    REPORTS.mkdir(parents=True, exist_ok=True)
    name = "bench_data_quick" if args.quick else "bench_data"
    _atomic(REPORTS / f"{name}.json", json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [f"# Data-layer benchmark ({'quick' if args.quick else 'full'})", "",
             *_header(meta),
             f"Pipeline: {meta['pipeline']}. Each run in a fresh subprocess; peak RSS = its ru_maxrss.", "",
             "Step columns are wall seconds.", "",
             "| events | impl | total s | CPU s | M events/s | peak RSS GB | ingest | dedupe | kcore | idmap | split "
             "| save |", "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        for impl in ("polars", "pandas"):
            r = row.get(impl, {})
            if "skipped" in r:
                lines.append(f"| {row['n_events']:,} | {impl} | skipped: {r['skipped']} ||||||||||")
            elif r:
                st = r["steps_s"]
                lines.append(f"| {row['n_events']:,} | {impl} | {r['total_s']:.1f} | {r['cpu_s']:.1f} | "
                             f"{r['rows_read'] / r['total_s'] / 1e6:.2f} | {r['peak_rss_mb'] / 1024:.2f} | "
                             + " | ".join(f"{st[k]:.1f}" for k in ("ingest", "dedupe", "kcore", "idmap", "split",
                                                                     "save")) + " |")
    lines += ["", "| events | generate s | pandas/polars wall | pandas/polars CPU | pandas/polars peak RSS |",
              "| ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        g = f"{row['generate_s']:.1f}" if row["generate_s"] is not None else "cached"
        ratios = [row.get(f"{k}_pandas_over_polars") for k in ("speedup", "cpu_ratio", "rss_ratio")]
        lines.append(f"| {row['n_events']:,} | {g} | " + " | ".join(f"{x:.2f}x" if x else "n/a" for x in ratios) + " |")
    lines += ["", "Notes:", "",
              "- The synthetic parts are grouped by user and time-ordered within a user (how `write` streams them);",
              "  both implementations sort such input faster than a globally time-ordered log.",
              "- Wall times depend on the other jobs on this shared machine (see the load average); CPU seconds",
              "  (user + system of the child process) are the steadier basis for the ratios.",
              "- pandas dedupe is `drop_duplicates()` over all five columns; the polars side hashes the key columns",
              "  and checks only hash collisions exactly (recsys.prepare.filters.dedupe)."]
    _atomic(REPORTS / f"{name}.md", "\n".join(lines) + "\n")


def bench_engines(n_events: int, impls: list[str], args: argparse.Namespace) -> dict:
    """One size through several implementations, each in a fresh subprocess; out folders removed after."""
    import shutil

    data, gen_s = ensure_data(n_events, args.cache)
    row: dict = {"n_events": n_events, "generate_s": gen_s,
                 "data_mb": sum(p.stat().st_size for p in (data / "interactions").glob("*.parquet")) / 2**20}
    for impl in impls:
        if impl in ("polars_fp", "polars") and n_events > args.memory_max_events:
            row[impl] = {"impl": impl, "skipped": f"{n_events:,} events > --memory-max-events "
                         f"{args.memory_max_events:,}: the in-memory path needs ~10 GB per 100M events here"}
        else:
            out = args.cache / f"out-{impl}-{n_events // 1_000_000}M"
            shutil.rmtree(out, ignore_errors=True)
            row[impl] = run_child(impl, data, out, args.timeout)
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(out.parent / f"{out.name}-work", ignore_errors=True)
        print(f"{n_events:>14,} {impl:9s} " + _line(row[impl]), flush=True)
    fps = {impl: row[impl].get("fingerprint") for impl in impls if "fingerprint" in row[impl]}
    row["fingerprints_agree"] = len(set(fps.values())) == 1 if len(fps) > 1 else None
    base = row.get("polars_fp", {})
    for impl in impls:
        r = row[impl]
        if impl != "polars_fp" and "total_s" in r and "total_s" in base:
            row[f"{impl}_over_memory"] = {"wall": r["total_s"] / base["total_s"],
                                          "peak_rss": r["peak_rss_mb"] / base["peak_rss_mb"]}
    return row


def write_engine_report(rows: list[dict], args: argparse.Namespace, name: str, title: str,
                        meta: dict | None = None) -> None:
    meta = meta or _meta(args, pipeline="read + validate -> dedupe -> kcore(5,5) -> IdMap fit+encode -> "
                                        "leave_last_out -> save")
    _atomic(REPORTS / f"{name}.json", json.dumps({"meta": meta, "rows": rows}, indent=2))
    labels = {"polars_fp": "memory (polars)", "outofcore": "out-of-core", "spark": "Spark local[*]"}
    lines = [f"# {title}", "", *_header(meta),
             f"Pipeline: {meta['pipeline']}. Synthetic logs (`bench_data.synthetic_config`: ~50 events per user), "
             "Parquet parts. Each run in a fresh subprocess. Peak RSS = ru_maxrss of the Python process; tree RSS = "
             "the peak, sampled each second, of it and its children (Spark's JVM); disk = the peak, sampled each "
             "second, of the scratch folder plus the output folder.", "",
             "| events | engine | wall s | CPU s | M events/s | peak RSS GB | peak tree RSS GB | peak disk GB | "
             "output GB | partitions |", "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        for impl, label in labels.items():
            r = row.get(impl)
            if r is None:
                continue
            if "skipped" in r:
                lines.append(f"| {row['n_events']:,} | {label} | skipped: {r['skipped']} ||||||||")
                continue
            lines.append(f"| {row['n_events']:,} | {label} | {r['total_s']:.1f} | {r['cpu_s']:.1f} | "
                         f"{r['rows_read'] / r['total_s'] / 1e6:.2f} | {r['peak_rss_mb'] / 1024:.2f} | "
                         f"{r.get('peak_tree_rss_mb', 0) / 1024:.2f} | {r.get('peak_disk_mb', 0) / 1024:.2f} | "
                         f"{r.get('output_mb', 0) / 1024:.2f} | {r.get('partitions') or ''} |")
    lines += ["", "| events | log on disk GB | same fingerprint | engine / memory wall | engine / memory peak RSS |",
              "| ---: | ---: | --- | --- | --- |"]
    for row in rows:
        ratios = "; ".join(f"{labels[k]} {row[f'{k}_over_memory']['wall']:.2f}x" for k in ("outofcore", "spark")
                           if f"{k}_over_memory" in row) or "n/a"
        rss = "; ".join(f"{labels[k]} {row[f'{k}_over_memory']['peak_rss']:.2f}x" for k in ("outofcore", "spark")
                        if f"{k}_over_memory" in row) or "n/a"
        lines.append(f"| {row['n_events']:,} | {row['data_mb'] / 1024:.2f} | {row['fingerprints_agree']} | {ratios} "
                     f"| {rss} |")
    ooc = [(row["n_events"], row["outofcore"]) for row in rows if "total_s" in row.get("outofcore", {})]
    if len(ooc) > 1:
        lines += ["", "Out-of-core per 100M events: " + ", ".join(
            f"{n / 1e6:.0f}M: {r['total_s'] / (n / 1e8):.0f} s" for n, r in ooc) + "."]
    steps = [(row["n_events"], k, row[k]["engine_steps_s"]) for row in rows for k in ("outofcore", "spark")
             if row.get(k, {}).get("engine_steps_s")]
    if steps:
        lines += ["", "Out-of-core steps (wall s):", ""]
        lines += [f"- {n:,} {labels[k]}: " + ", ".join(f"{s} {v:.0f}" for s, v in st.items()) for n, k, st in steps]
    _atomic(REPORTS / f"{name}.md", "\n".join(lines + [""] + args.notes) + "\n")


def _atomic(path: Path, text: str) -> None:
    atomic.write_text(path, text)


ENGINE_NOTES = {
    "bench_data_outofcore": [
        "Notes:", "",
        "- Peak memory of the out-of-core engine is set by its partition size (5M accepted rows, the default) and",
        "  one count per user and item, not by the log size; disk holds the partitions, the buckets and the",
        "  output at once at worst.",
        "- The synthetic parts are grouped by user and time-ordered within a user; the in-memory path sorts",
        "  such input faster than a globally time-ordered log, the out-of-core path regroups it either way.",
    ],
    "bench_data_spark": [
        "Notes:", "",
        "- Spark runs in local mode on this machine's cores: it is slower than polars here. What it buys is the",
        "  same job (`recsys data split --engine spark --master <url>`) on a cluster, next to the lakehouse",
        "  that holds the logs, with the same prepared folder as the result (same fingerprint above).",
        "- The split and the `.npy` assembly run on the Spark driver, streaming one bucket of users at a time.",
    ],
}


def rewrite(name: str, args: argparse.Namespace) -> None:
    """Regenerate ``name``'s Markdown from its JSON, through the harness's header."""
    saved = json.loads((REPORTS / f"{name}.json").read_text())
    meta = legacy_meta(saved["meta"])
    if name == "bench_data_csv":
        _atomic(REPORTS / f"{name}.json", json.dumps({**saved, "meta": meta}, indent=2))
        write_csv_report(saved["row"], args, meta)
        return
    base = "bench_data_spark" if name.startswith("bench_data_spark") else "bench_data_outofcore"
    title = "Spark local mode vs polars" if base == "bench_data_spark" else "Out-of-core preparation"
    args.notes = ENGINE_NOTES[base]
    write_engine_report(saved["rows"], args, name, title, meta)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1M events only (smoke run)")
    ap.add_argument("--sizes", type=float, nargs="+", default=[10, 50], help="millions of events (default 10 50)")
    ap.add_argument("--pandas-max-events", type=int, default=50_000_000,
                    help="largest size the pandas reference runs on (default 50M; it needs ~8 GB there)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per child run (default 900)")
    ap.add_argument("--cache", type=Path, default=REPO / "bench_data", help="synthetic data cache (gitignored)")
    ap.add_argument("--csv", type=float, metavar="N", help="instead: N million events as a CSV log, plain vs gzip")
    ap.add_argument("--outofcore", type=float, nargs="+", metavar="N",
                    help="instead: the out-of-core engine on N million events each, the in-memory path beside it "
                         "up to --memory-max-events (report bench_data_outofcore)")
    ap.add_argument("--spark", type=float, metavar="N",
                    help="instead: Spark local mode vs the in-memory path vs out-of-core on N million events "
                         "(report bench_data_spark)")
    ap.add_argument("--report-name", default="", help="write the --outofcore/--spark report under this name instead")
    ap.add_argument("--memory-max-events", type=int, default=100_000_000,
                    help="largest size the in-memory path runs on in --outofcore (default 100M)")
    ap.add_argument("--rewrite", metavar="REPORT", help="measure nothing: regenerate REPORT's Markdown from its JSON "
                    "(bench_data_csv, or a --outofcore / --spark report)")
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args.data, args.out)))
        return
    if args.rewrite:
        rewrite(args.rewrite, args)
        return
    args.run = harness.ReportRun()
    if args.csv:
        write_csv_report(bench_csv(int(args.csv * 1_000_000), args), args)
        print(f"wrote {REPORTS / 'bench_data_csv'}.{{json,md}}")
        return
    if args.outofcore or args.spark:
        if args.outofcore:
            impls, name, title = ["polars_fp", "outofcore"], "bench_data_outofcore", "Out-of-core preparation"
            sizes = [int(x * 1_000_000) for x in args.outofcore]
        else:
            impls, name, title = ["polars_fp", "outofcore", "spark"], "bench_data_spark", "Spark local mode vs polars"
            sizes = [int(args.spark * 1_000_000)]
        args.notes = ENGINE_NOTES[name]
        name = args.report_name or name
        rows = []
        for n in sizes:
            rows.append(bench_engines(n, impls, args))
            write_engine_report(rows, args, name, title)  # after every size: a long run keeps what it measured
        print(f"wrote {REPORTS / name}.{{json,md}}")
        return
    sizes = [1_000_000] if args.quick else [int(s * 1_000_000) for s in args.sizes]
    rows = [bench_size(n, args) for n in sizes]
    write_reports(rows, args)
    print(f"wrote {REPORTS / ('bench_data_quick' if args.quick else 'bench_data')}.{{json,md}}")


if __name__ == "__main__":
    main()
