"""The shipped nightly pipeline on logs nobody tuned it for: what it publishes, against the best tuned result.

    python experiments/unseen_data.py                       # every set, both runs (hours on 2 cores)
    python experiments/unseen_data.py --sets ml-100k --merge

For every data set in ``../shared/data`` (the sets of ``experiments/item2vec_common.py``), in a fresh working
folder under ``--root``, with ``experiments/pipelines/nightly.toml`` copied there unchanged (its ``[data]``
reads the CSV files dropped into ``logs/incoming/``):

1. **first run, empty workdir**: the log's first 95% of events (by time; for the sequence files, which carry
   no timestamps, by position within each user's sequence, so every user's history grows) is dropped in as one
   CSV file (``user,item,timestamp``) and ``recsys pipeline run`` trains, gates and publishes;
2. **second run, the log grown by 5%**: the remaining events are dropped in as a second file and the pipeline
   runs again, warm-started from the champion (``pipeline.warm_start``). This run's log is the whole data set,
   as the tuned results below were measured on, so its published model is the one compared with them.

Each run is its own process: wall time and peak RSS come from ``wait4``. The published model is
``champion.json``'s; its test NDCG@10 / HR@10 are the pipeline's offline test metrics of that model
(``evaluation.json``) and its served metrics through the bundle (``gate.json``). The best tuned result known
on each set is read from the committed reports (``beauty_two_tower.json``, ``beauty_baselines.json``,
``bench_item2vec.json``: the highest mean test NDCG@10 of any model there, on the same file, the same data
steps and protocol: minimum length 3, leave-last-out, full ranking, history excluded).

Targets (issue #30): published test NDCG@10 >= 0.9 x the best tuned result, first run <= 45 min, second <= 15 min.
Results go to ``experiments/reports/unseen_data.{md,json}`` (``--merge`` keeps the sets not rerun).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

from recsys import atomic
from serving.format import MANIFEST

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ReportRun, commit_now, header_lines  # noqa: E402
from item2vec_common import DATA, SETS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REPORTS = REPO / "experiments" / "reports"
NIGHTLY = REPO / "experiments" / "pipelines" / "nightly.toml"
GROWTH = 0.05
TARGET_RATIO, FIRST_MAX_MIN, SECOND_MAX_MIN = 0.9, 45.0, 15.0


def log_parts(name: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The set's events as ``user,item,timestamp`` rows, split into the first 95% (by time) and the rest.

    The sequence files (no timestamps; the reader numbers each user's events 1..n) get as timestamp the event's
    position as a fraction of its user's sequence, (p - 1/2) / n of ~3 years in Unix seconds from 2017: order
    within a user is kept, and the newest 5% is the end of every user's history, not the whole of a few."""
    from pipelines.config import DataConfig
    from recsys.prepare.engines.memory import ingest

    rel, fmt, encoding = SETS[name]
    path = DATA / rel
    if not path.is_file():
        raise SystemExit(f"{path} not found: the data sets live in ../shared/data (or set RECSYS_SHARED_DATA)")
    frame = ingest(DataConfig(name=name, path=str(path), format=fmt, encoding=encoding, min_length=3)).frame
    frame = frame.select("user", "item", "timestamp")
    if fmt.startswith("seq"):
        # position p of n -> (p - 1/2) / n of ~3 years from 2017 (plausible Unix seconds): newest rows spread over users
        n = pl.col("timestamp").max().over("user")
        frame = frame.with_columns((1_500_000_000 + (2 * pl.col("timestamp") - 1) * 50_000_000 // n).alias("timestamp"))
    frame = frame.with_row_index("_row").sort("timestamp", "user", "_row").drop("_row")
    n_base = math.ceil(frame.height * (1 - GROWTH))
    return frame.head(n_base), frame.slice(n_base)


def run_pipeline(cwd: Path, tag: str) -> dict:
    """``recsys pipeline run -c nightly.toml`` in ``cwd``; its output goes to ``<tag>.out`` and this terminal."""
    t0 = time.perf_counter()
    with open(cwd / f"{tag}.out", "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "pipeline", "run", "-c", "nightly.toml",
                                 "--no-samples"], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            out.write(line)
            out.flush()
            print(f"[{cwd.name} {tag}] {line}", end="", flush=True)
        _, status, usage = os.wait4(proc.pid, 0)
    return {"exit_code": os.waitstatus_to_exitcode(status), "minutes": round((time.perf_counter() - t0) / 60, 2),
            "peak_rss_gb": round(usage.ru_maxrss / 2**20, 3)}


def run_results(cwd: Path) -> dict:
    """What the newest run trained and what is published after it."""
    folder = cwd / "runs" / "pipeline-nightly" / "runs"
    runs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")) if folder.is_dir() else []
    if not runs:
        raise SystemExit(f"{cwd}: no pipeline run folder found; see the .out files there")
    run = runs[-1]
    ev = json.loads((run / "evaluation.json").read_text()) if (run / "evaluation.json").is_file() else {}
    gate = json.loads((run / "gate.json").read_text()) if (run / "gate.json").is_file() else {}
    models = {label: {"model": info["model"], "val": info["val"], "test": info["test"],
                      "seconds": info.get("seconds"), "stop_reason": info.get("stop_reason", "")}
              for label, info in ev.get("models", {}).items()}
    champ_file = cwd / "runs" / "pipeline-nightly" / "champion.json"
    champ = json.loads(champ_file.read_text()) if champ_file.is_file() else {}
    published = published_label = None
    if champ:
        manifest = json.loads((cwd / champ["bundle"] / MANIFEST).read_text())  # relative to the workdir
        published = manifest["model"]
        published_label = published.split(":")[0]
    out = {"run_id": run.name, "candidate": ev.get("candidate"), "reason": ev.get("reason"), "models": models,
           "gate": {k: v for k, v in gate.items() if k not in ("candidate_metrics", "champion_metrics")},
           "candidate_served": gate.get("candidate_metrics"), "champion_served": gate.get("champion_metrics"),
           "published": published, "published_from_this_run": champ.get("run_id") == run.name}
    # the published model's test metrics on this run's split: offline when it was trained by this run, else
    # (the gate kept an earlier champion) as served through its bundle on this run's test split
    if out["published_from_this_run"] and published_label in models:
        out["published_test"] = models[published_label]["test"]
    elif gate.get("champion_metrics"):
        out["published_test"] = gate["champion_metrics"]
    return out


def best_known(name: str) -> dict:
    """The highest mean test NDCG@10 any committed report holds on this set, with its source."""
    best = {"ndcg_10": 0.0, "hr_10": 0.0, "source": "none"}
    if name == "beauty":
        for stem in ("beauty_two_tower", "beauty_baselines"):
            path = REPORTS / f"{stem}.json"
            if path.is_file():
                for model, row in json.loads(path.read_text()).get("models", {}).items():
                    test = row.get("test", {})
                    if test.get("ndcg_10", 0) > best["ndcg_10"]:
                        best = {"ndcg_10": test["ndcg_10"], "hr_10": test.get("hr_10", 0),
                                "source": f"{stem}.md: {model}"}
    path = REPORTS / "bench_item2vec.json"
    sets = json.loads(path.read_text()).get("sets", {}) if path.is_file() else {}
    for config, runs in sets.get(name, {}).get("runs", {}).items():
        ndcg = sum(r["ndcg_10"] for r in runs) / len(runs)
        if ndcg > best["ndcg_10"]:
            best = {"ndcg_10": ndcg, "hr_10": sum(r["hr_10"] for r in runs) / len(runs),
                    "source": f"bench_item2vec.md: item2vec {config} ({len(runs)} seeds)"}
    return best


def recover_first(cwd: Path) -> dict:
    """The first run's row when the harness stopped after it (``--continue``): its wall time from the run's
    start (its id) to its ``ended.json``, without the interpreter's start-up; its peak RSS is unknown."""
    import datetime as dt

    runs = sorted(p for p in (cwd / "runs" / "pipeline-nightly" / "runs").iterdir() if p.is_dir())
    first = runs[0]
    start = dt.datetime.strptime(first.name, "%Y%m%dT%H%M%S%fZ").replace(tzinfo=dt.UTC)
    end = dt.datetime.fromisoformat(json.loads((first / "ended.json").read_text())["at"].replace("Z", "+00:00"))
    return {"minutes": round((end - start).total_seconds() / 60, 2), "peak_rss_gb": None, "exit_code": 0,
            "commit": run_commit(cwd, first),
            "recovered": "wall time from the run folder (run start to ended.json); peak RSS not measured"}


def run_commit(cwd: Path, run: Path) -> str:
    """The commit a pipeline run's models were trained at: the ``git_commit`` tag of its MLflow runs."""
    import sqlite3

    ids = [json.loads(m.read_text()).get("run_id") for m in sorted(run.glob("train-*.done"))]
    with sqlite3.connect(cwd / "mlruns.db") as db:
        for run_id in filter(None, ids):
            row = db.execute("SELECT value FROM tags WHERE run_uuid = ? AND key = 'git_commit'", (run_id,)).fetchone()
            if row:
                return row[0][:7]
    return "unknown"


def run_set(name: str, root: Path, resume: bool = False) -> dict:
    cwd = root / name
    if resume and (cwd / "first.out").is_file() and not (cwd / "second.out").is_file():
        # the events not in the file the first run read: each user's events after the prefix it holds
        base = pl.read_csv(cwd / "logs" / "incoming" / "events-1.csv", schema_overrides={"user": pl.String})
        held = base.group_by("user").len("held")
        full = pl.concat(log_parts(name)).with_columns(pl.col("user").cast(pl.String))
        full = full.with_columns(pl.int_range(1, pl.len() + 1).over("user", order_by="timestamp").alias("pos"))
        growth = (full.join(held, on="user", how="left").filter(pl.col("pos") > pl.col("held").fill_null(0))
                  .select("user", "item", "timestamp"))
        run = ReportRun()
        result = {"set": name, "meta": run.meta,
                  "started": "(continued)", "events": base.height + growth.height,
                  "first_events": base.height, "growth_events": growth.height,
                  "first": {**recover_first(cwd), **run_results(cwd)}}
        return second_run(name, cwd, growth, result, run)
    run = ReportRun()
    shutil.rmtree(cwd, ignore_errors=True)
    (cwd / "logs" / "incoming").mkdir(parents=True)
    base, growth = log_parts(name)
    result = {"set": name, "meta": run.meta, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "events": base.height + growth.height, "first_events": base.height, "growth_events": growth.height}
    base.write_csv(cwd / "logs" / "incoming" / "events-1.csv")
    shutil.copy(NIGHTLY, cwd / "nightly.toml")  # before each run: the config as shipped at that run's commit
    result["first"] = {"commit": commit_now(), **run_pipeline(cwd, "first"), **run_results(cwd)}
    return second_run(name, cwd, growth, result, run)


def second_run(name: str, cwd: Path, growth: pl.DataFrame, result: dict, run: ReportRun) -> dict:
    growth.write_csv(cwd / "logs" / "incoming" / "events-2.csv")
    shutil.copy(NIGHTLY, cwd / "nightly.toml")
    result["second"] = {"commit": commit_now(), **run_pipeline(cwd, "second"), **run_results(cwd)}
    result["best_known"] = best_known(name)
    run.finish()
    return result


def _f(x: object, fmt: str = ".4f") -> str:
    return "-" if x is None else format(x, fmt)


def with_meta(results: dict, machine: str) -> dict:
    """``results`` with each set's ``meta`` (:class:`ReportRun`'s); a set run before the harness gets one from
    what it recorded: its command (where it did), the commit of its first pipeline run, ``machine`` (the report's)
    and the load average at its start."""
    for r in results.values():
        if "meta" not in r:
            meta = {"command": r.pop("command", None), "commit": r["first"]["commit"], "machine": machine,
                    "loadavg_start": r.pop("loadavg_at_start", None)}
            r["meta"] = {k: v for k, v in meta.items() if v is not None}
    return results


def write_report(results: dict) -> None:
    atomic.write_json(REPORTS / "unseen_data.json", {"sets": results})
    lines = ["# The shipped nightly pipeline on logs it was not tuned on", "",
             "One run of this script per set (`python experiments/unseen_data.py --sets NAME --merge`; each names "
             "its command, commit and machine under Runs below); each pipeline run's row names the commit it ran "
             "at. Config: `experiments/pipelines/nightly.toml`, unchanged.",
             "", f"First run: empty workdir, the log's first {1 - GROWTH:.0%} of events. Second run: the log grown "
             f"by {GROWTH:.0%} to the whole set, warm-started from the champion. Published = the champion after the "
             "run; its test metrics are on that run's split (offline when that run trained it, else as served "
             "through its bundle). Best tuned = the highest mean test NDCG@10 in a committed report on the whole "
             "set. Targets: second run's published NDCG@10 >= "
             f"{TARGET_RATIO} x best tuned, first run <= {FIRST_MAX_MIN:.0f} min, second <= {SECOND_MAX_MIN:.0f} min.",
             "", "| set | commit | events | run | published | test NDCG@10 | test HR@10 | served NDCG@10 | minutes | "
             "peak RSS GB | exit | best tuned NDCG@10 | ratio | targets met |",
             "| --- | --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for name, r in results.items():
        best = r["best_known"]
        for tag, limit in (("first", FIRST_MAX_MIN), ("second", SECOND_MAX_MIN)):
            run = r.get(tag)
            if not run:
                continue
            test = run.get("published_test") or {}
            ratio = test.get("ndcg_10", 0) / best["ndcg_10"] if best["ndcg_10"] else None
            served = (run.get("candidate_served") or {}).get("ndcg_10") if run.get("published_from_this_run") else \
                (run.get("champion_served") or {}).get("ndcg_10")
            met = [f"time {'yes' if run['minutes'] <= limit else 'NO'}"]
            if tag == "second":
                met.append(f"quality {'yes' if ratio is not None and ratio >= TARGET_RATIO else 'NO'}")
            events = r["first_events"] if tag == "first" else r["events"]
            lines.append(f"| {name} | {run['commit']} | {events:,} | {tag} | {run.get('published')} | "
                         f"{_f(test.get('ndcg_10'))} | {_f(test.get('hr_10'))} | {_f(served)} | "
                         f"{run['minutes']:.1f} | {_f(run['peak_rss_gb'], '.2f')} | {run['exit_code']} | "
                         f"{best['ndcg_10']:.4f} | {_f(ratio, '.3f')} | {', '.join(met)} |")
    best = "; ".join(f"{n}: {r['best_known']['ndcg_10']:.4f} ({r['best_known']['source']})" for n, r in results.items())
    lines += ["", f"Best tuned results: {best}", "",
              "## Every model each run trained (pipeline validation / test NDCG@10, fit seconds, why it stopped)", "",
              "Val SE: the standard error over validation users of that model's validation NDCG@10 ('-': a run "
              "from before it was recorded). Candidate: the model the run chose on validation, and why.", "",
              "| set | run | model | val NDCG@10 | val SE | test NDCG@10 | test HR@10 | fit s | stop |",
              "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for name, r in results.items():
        for tag in ("first", "second"):
            for label, m in (r.get(tag) or {}).get("models", {}).items():
                lines.append(f"| {name} | {tag} | {label} ({m['model']}) | {m['val']['ndcg_10']:.4f} | "
                             f"{_f(m['val'].get('ndcg_10_se'))} | {m['test']['ndcg_10']:.4f} | "
                             f"{m['test']['hr_10']:.4f} | {_f(m['seconds'], '.0f')} | {m['stop_reason'] or '-'} |")
    lines += ["", "| set | run | candidate | why |", "| --- | --- | --- | --- |"]
    for name, r in results.items():
        for tag in ("first", "second"):
            run = r.get(tag) or {}
            if run:
                lines.append(f"| {name} | {tag} | {run.get('candidate')} | "
                             f"{run.get('reason') or 'highest validation NDCG@10 (before the one-SE rule)'} |")
    recovered = [f"{n} {tag}" for n, r in results.items() for tag in ("first", "second")
                 if (r.get(tag) or {}).get("recovered")]
    if recovered:
        lines += ["", "Runs whose harness stopped after them (`--continue` ran the rest): "
                  + ", ".join(recovered) + ": their wall time is from the run folder (run start to "
                  "`ended.json`, without the few seconds of interpreter start-up); peak RSS was not measured."]
    lines += ["", "## Runs, one per set", "", "Other work on the machine slows the time-budgeted Transformer: the "
              "load average at each run's start and end says how much there was.", ""]
    for n, r in results.items():
        command, _, facts, _ = header_lines(r["meta"])
        lines.append(f"- {n}: {command}. {facts}")
    lines.append("")
    atomic.write_text(REPORTS / "unseen_data.md", "\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, of {', '.join(SETS)}")
    ap.add_argument("--root", type=Path, default=REPO / "bench_runs" / "unseen",
                    help="working folders, one per set (deleted first)")
    ap.add_argument("--merge", action="store_true", help="keep the sets of the existing report not rerun")
    ap.add_argument("--rewrite", action="store_true", help="only rewrite the report: a recovered first run's "
                    "commit read again from its MLflow runs (the sets' folders under --root)")
    ap.add_argument("--continue", dest="resume", action="store_true",
                    help="a set whose first run finished (the harness stopped after it): run only the second")
    args = ap.parse_args()
    names = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = [n for n in names if n not in SETS]
    if unknown:
        ap.error(f"unknown set(s) {unknown}; known: {', '.join(SETS)}")
    old = json.loads((REPORTS / "unseen_data.json").read_text()) if (args.merge or args.rewrite) and \
        (REPORTS / "unseen_data.json").is_file() else {}
    results = with_meta(dict(old.get("sets", {})), old.get("machine", "not recorded"))
    if args.rewrite:
        for name, r in results.items():
            folder = args.root / name / "runs" / "pipeline-nightly" / "runs"
            if (r.get("first") or {}).get("recovered") and folder.is_dir():
                r["first"]["commit"] = run_commit(args.root / name, min(p for p in folder.iterdir() if p.is_dir()))
        write_report(results)
        return
    for name in names:
        results[name] = run_set(name, args.root, args.resume)
        write_report(results)  # after every set: a long run that stops keeps what finished
        print(f"{name}: written to {REPORTS / 'unseen_data.md'}", flush=True)


if __name__ == "__main__":
    main()
