"""Wall time and peak memory of every pipeline step, each step in its own process.

    python experiments/bench_pipeline.py experiments/pipelines/beauty.toml experiments/pipelines/synthetic_10m.toml

Each config runs in a fresh working folder (under ``bench_runs/``, gitignored) as
``recsys pipeline run --only STEP`` for STEP in order, so every step's figures are its own: wall
time (including the ~3-5 s of interpreter and library start-up) and peak RSS from ``wait4``.
Results go to ``experiments/reports/bench_pipeline.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import harness  # same folder

from recsys import atomic

STEPS = ("ingest", "train", "evaluate", "export", "gate", "publish")
REPO = Path(__file__).resolve().parents[1]


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
            "peak_rss_gb": round(usage.ru_maxrss / 2**20, 3), "exit_code": code}


def bench(config: Path, root: Path) -> list[dict]:
    cwd = root / config.stem
    shutil.rmtree(cwd, ignore_errors=True)
    cwd.mkdir(parents=True)
    rows = []
    for step in STEPS:
        row = run_step(config.resolve(), step, cwd)
        print(f"{config.stem:<16} {step:<9} {row['seconds']:8.1f} s  peak RSS {row['peak_rss_gb']:.2f} GB"
              f"  exit {row['exit_code']}", flush=True)
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
    args = ap.parse_args()
    run = harness.ReportRun()
    results = {c.stem: bench(c, args.root) for c in args.configs}
    meta = run.finish()
    args.out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(args.out / "bench_pipeline.json", json.dumps({"meta": meta, "configs": results}, indent=2))
    lines = ["# Pipeline steps: wall time and peak RSS (one process per step)", "", *harness.header_lines(meta),
             "| config | step | seconds | peak RSS (GB) | exit |", "| --- | --- | ---: | ---: | ---: |"]
    for name, rows in results.items():
        lines += [f"| {name} | {r['step']} | {r['seconds']:.1f} | {r['peak_rss_gb']:.2f} | {r['exit_code']} |"
                  for r in rows]
        lines.append(f"| {name} | **total** | {sum(r['seconds'] for r in rows):.1f} | "
                     f"{max(r['peak_rss_gb'] for r in rows):.2f} | |")
    atomic.write_text(args.out / "bench_pipeline.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
