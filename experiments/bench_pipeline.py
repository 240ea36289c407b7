"""Wall time, peak memory and disk of every pipeline step, each step in its own process.

    python experiments/bench_pipeline.py experiments/pipelines/beauty.toml experiments/pipelines/synthetic_10m.toml
    python experiments/bench_pipeline.py experiments/pipelines/synthetic_scale.toml --log-sizes 1,10,100 \
        --report-name bench_pipeline_scale

Each config runs in a fresh working folder (under ``bench_runs/``, gitignored) as
``recsys pipeline run --only STEP`` for STEP in order, so every step's figures are its own: wall
time (including the ~3-5 s of interpreter and library start-up), peak RSS from ``wait4`` and the
working folder's size on disk after the step (bundles and MLflow store included).

``--log-sizes`` (millions of events): for each size a synthetic log folder (``recsys.sources.synthetic``:
50 events per user, 100 per item, at most 1M items; Parquet parts of ~5M events, generated once and
kept under ``bench_data/``) becomes the config's ``[data] path`` (written into a copy of the config in
the working folder), so one config runs at every size and the report gives each step's slope: seconds
per million events between consecutive sizes.
Results go to ``experiments/reports/<report-name>.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import harness  # same folder

from recsys import atomic
from recsys.sources.synthetic import SyntheticConfig, write

STEPS = ("ingest", "train", "evaluate", "export", "gate", "publish")
REPO = Path(__file__).resolve().parents[1]


def log_config(n_events: int) -> SyntheticConfig:
    """The synthetic log of ``n_events``: 50 events per user, 100 per item (at most 1M items), fixed seed."""
    return SyntheticConfig(n_users=max(n_events // 50, 1), n_items=min(max(n_events // 100, 1000), 1_000_000),
                           n_events=n_events, n_categories=50, seed=2026)


def ensure_log(n_events: int, root: Path) -> tuple[Path, float | None]:
    """The log folder (``interactions/`` of :func:`recsys.sources.synthetic.write`), generated unless cached with
    the same config; returns it and the generation seconds (None when cached)."""
    cfg = log_config(n_events)
    folder = root / f"pipeline-log-{n_events / 1e6:g}M"
    manifest = folder / "manifest.json"
    if manifest.is_file() and json.loads(manifest.read_text())["config"] == json.loads(json.dumps(asdict(cfg))):
        return folder / "interactions", None
    t0 = time.perf_counter()
    write(cfg, folder, progress=False, overwrite=True)
    return folder / "interactions", round(time.perf_counter() - t0, 1)


def with_log(config: Path, log: Path, dest: Path) -> Path:
    """A copy of ``config`` at ``dest`` whose ``[data]`` table reads the log folder ``log``."""
    text = config.read_text()
    if "\n[data]\n" not in f"\n{text}" or re.search(r"(?m)^path\s*=", text.split("[data]", 1)[1].split("\n[", 1)[0]):
        raise SystemExit(f"{config}: --log-sizes needs a [data] table without a path (the benchmark sets it)")
    dest.write_text(text.replace("[data]\n", f"[data]\npath = {json.dumps(str(log))}\n", 1))
    return dest


def disk_gb(folder: Path) -> float:
    """Bytes under ``folder`` (files only; hard links counted once), in GB."""
    seen, total = set(), 0
    for p in folder.rglob("*"):
        try:
            st = p.lstat()
        except FileNotFoundError:
            continue
        if p.is_file() and not p.is_symlink() and (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return round(total / 1e9, 3)


def run_step(config: Path, step: str, cwd: Path) -> dict:
    """One ``--only STEP`` process; returns its wall seconds, peak RSS (GB) and exit code."""
    t0 = time.perf_counter()
    log = open(cwd / f"{step}.out", "w")  # noqa: SIM115 - closed below, after the child exits
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "pipeline", "run", "-c", str(config),
                             "--only", step, "--no-samples"], cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
    log.close()
    code = os.waitstatus_to_exitcode(status)
    return {"step": step, "seconds": round(time.perf_counter() - t0, 2),
            "peak_rss_gb": round(usage.ru_maxrss / 2**20, 3), "disk_gb": disk_gb(cwd), "exit_code": code,
            "commit": harness.commit_now()}


LINE = re.compile(r"^(?P<name>\S+)\s+(?P<step>\w+)\s+(?P<seconds>[\d.]+) s  peak RSS (?P<rss>[\d.]+) GB  "
                  r"disk (?P<disk>[\d.]+) GB  exit (?P<exit>-?\d+)$")


def prior_rows(log: Path, name: str, before: str, commit: str) -> list[dict]:
    """The rows of ``name``'s steps before ``before`` as an earlier invocation printed them (its console log)."""
    rows = {}
    for line in log.read_text().splitlines():
        m = LINE.match(line)
        if m and m["name"] == name and m["step"] in STEPS[:STEPS.index(before)]:
            rows[m["step"]] = {"step": m["step"], "seconds": float(m["seconds"]), "peak_rss_gb": float(m["rss"]),
                               "disk_gb": float(m["disk"]), "exit_code": int(m["exit"]), "commit": commit,
                               "source": f"console log of an earlier invocation ({log.name})"}
    missing = [s for s in STEPS[:STEPS.index(before)] if s not in rows]
    if missing:
        raise SystemExit(f"{log} has no line for {name} step(s) {missing}; cannot resume from {before}")
    return [rows[s] for s in STEPS[:STEPS.index(before)]]


def bench(config: Path, root: Path, name: str | None = None, log: Path | None = None,
          resume: tuple[str, list[dict]] | None = None) -> list[dict]:
    """Every step of ``config`` in a fresh folder; with ``resume`` = (step, earlier rows), the steps from that
    one on in the existing folder (the pipeline run resumes there; the steps from it on are redone)."""
    name = name or config.stem
    cwd = root / name
    if resume is None:
        shutil.rmtree(cwd, ignore_errors=True)
        cwd.mkdir(parents=True)
    if log is not None:
        config = with_log(config, log, cwd / config.name) if resume is None else cwd / config.name
    rows = [] if resume is None else list(resume[1])
    if resume is not None:
        for marker in (cwd / "runs").rglob("*.done"):  # redo the steps from `resume` on
            if marker.stem in STEPS[STEPS.index(resume[0]):]:
                marker.unlink()
    for step in STEPS[len(rows):]:
        row = run_step(config.resolve(), step, cwd)
        print(f"{name:<16} {step:<9} {row['seconds']:8.1f} s  peak RSS {row['peak_rss_gb']:.2f} GB"
              f"  disk {row['disk_gb']:.2f} GB  exit {row['exit_code']}", flush=True)
        rows.append(row)
        if row["exit_code"] != 0:
            print(f"  step failed; see {cwd / (step + '.out')}", flush=True)
            break
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("configs", nargs="+", type=Path, help="pipeline TOML files")
    ap.add_argument("--root", type=Path, default=REPO / "bench_runs", help="working folders (deleted first)")
    ap.add_argument("--out", type=Path, default=REPO / "experiments" / "reports", help="report folder")
    ap.add_argument("--log-sizes", default="", help="comma list of millions of events: run each config on a "
                    "synthetic log folder of each size (see above)")
    ap.add_argument("--cache", type=Path, default=REPO / "bench_data", help="where --log-sizes logs are kept")
    ap.add_argument("--report-name", default="bench_pipeline", help="report file stem (default bench_pipeline)")
    ap.add_argument("--resume-from", choices=STEPS[1:], help="with --log-sizes: for the sizes named by --resume, rerun "
                    "this step and the later ones in the existing working folder; the earlier steps' rows come "
                    "from --prior-log")
    ap.add_argument("--resume", default="", help="comma list of the sizes (millions of events) to resume; the other "
                    "sizes' rows are kept from the last report")
    ap.add_argument("--prior-log", type=Path, help="the console log of the invocation being resumed")
    ap.add_argument("--prior-commit", default="", help="the commit that invocation ran at")
    args = ap.parse_args()
    run = harness.ReportRun()
    results, logs = {}, {}
    sizes = [int(float(x) * 1_000_000) for x in args.log_sizes.split(",") if x.strip()]
    resumed = {int(float(x) * 1_000_000) for x in args.resume.split(",") if x.strip()}
    if args.resume_from:
        last = json.loads((args.out / f"{args.report_name}.json").read_text())
        kept, kept_logs = last["configs"], last.get("logs", {})
        for rows in kept.values():
            for r in rows:
                r.setdefault("commit", last["meta"]["commit"])
    for c in args.configs:
        if not sizes:
            results[c.stem] = bench(c, args.root)
            continue
        for n in sizes:
            log, gen_s = ensure_log(n, args.cache)
            name = f"{c.stem}-{n / 1e6:g}M"
            if args.resume_from and n not in resumed:
                results[name], logs[name] = kept[name], kept_logs[name]
                continue
            logs[name] = {"events": n, **{k: v for k, v in asdict(log_config(n)).items()
                                         if k in ("n_users", "n_items", "seed")}, "generate_s": gen_s}
            print(f"{name}: log {log} ({'cached' if gen_s is None else f'generated in {gen_s} s'})", flush=True)
            resume = None
            if args.resume_from:
                resume = (args.resume_from, prior_rows(args.prior_log, name, args.resume_from, args.prior_commit))
            results[name] = bench(c, args.root, name, log, resume)
            write_report(args, run.meta, results, logs)  # after every size: a long run keeps what finished
    write_report(args, run.finish(), results, logs)


def write_report(args: argparse.Namespace, meta: dict, results: dict, logs: dict) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / args.report_name
    atomic.write_text(stem.with_suffix(".json"), json.dumps({"meta": meta, "configs": results, "logs": logs},
                                                           indent=2))
    lines = ["# Pipeline steps: wall time, peak RSS and disk (one process per step)", "", *harness.header_lines(meta),
             "| config | step | seconds | peak RSS (GB) | disk after (GB) | exit | commit |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for name, rows in results.items():
        lines += [f"| {name} | {r['step']} | {r['seconds']:.1f} | {r['peak_rss_gb']:.2f} | "
                  f"{r.get('disk_gb', float('nan')):.2f} | {r['exit_code']} | {r.get('commit', meta['commit'])}"
                  f"{' (a)' if r.get('source') else ''} |" for r in rows]
        lines.append(f"| {name} | **total** | {sum(r['seconds'] for r in rows):.1f} | "
                     f"{max(r['peak_rss_gb'] for r in rows):.2f} | | | |")
    sources = sorted({r["source"] for rows in results.values() for r in rows if r.get("source")})
    if sources:
        lines += ["", "(a) Not rerun by this invocation (`--resume-from`): the row as the " + "; ".join(sources)
                  + " printed it; that log is kept beside this report."]
    if logs:
        lines += ["", "Logs (synthetic, `recsys.sources.synthetic`; generation not counted in the steps):", ""]
        lines += [f"- {name}: {v['events']:,} events, {v['n_users']:,} users, {v['n_items']:,} items, seed "
                  f"{v['seed']}" + ("" if v["generate_s"] is None else f", generated in {v['generate_s']} s")
                  for name, v in logs.items()]
        lines += ["", *slopes(results, logs)]
    atomic.write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


def slopes(results: dict, logs: dict) -> list[str]:
    """Seconds per million events of every step between consecutive sizes (the marginal cost of more events)."""
    done = [n for n in logs if n in results and all(r["exit_code"] == 0 for r in results[n])
            and len(results[n]) == len(STEPS)]
    if len(done) < 2:
        return []
    out = ["Slope between sizes: extra seconds per extra million events, per step (and peak RSS).", "",
           "| from | to | " + " | ".join(STEPS) + " | total | peak RSS GB per extra 1M events |",
           "| --- | --- |" + " ---: |" * (len(STEPS) + 2)]
    for a, b in zip(done, done[1:], strict=False):
        dm = (logs[b]["events"] - logs[a]["events"]) / 1e6
        per = [(rb["seconds"] - ra["seconds"]) / dm for ra, rb in zip(results[a], results[b], strict=True)]
        rss = (max(r["peak_rss_gb"] for r in results[b]) - max(r["peak_rss_gb"] for r in results[a])) / dm
        out.append(f"| {a} | {b} | " + " | ".join(f"{x:.2f}" for x in per) + f" | {sum(per):.2f} | {rss:.4f} |")
    return out


if __name__ == "__main__":
    main()
