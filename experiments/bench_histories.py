"""Every user's whole history, as export and the gate read it: rebuilt from ``interactions.parquet`` (the way
before) against joined from the memory-mapped leave-last-out split (``recsys.prepare.format.all_events`` now);
and the user x item matrix ALS and BPR fit on: built in one pass (before) against ``Sequences.to_csr`` now,
chunk by chunk.

    python experiments/bench_histories.py                       # 10M synthetic events
    python experiments/bench_histories.py --events 1000000      # a smaller set

The synthetic set (``--events`` events, 1 user per 100 events, 1 item per 500) is prepared once into
``bench_runs/histories-<events>/`` (gitignored; the out-of-core engine). Each way then runs ``--repeats`` times,
alternating, each in its own process: wall seconds and peak RSS (its ``VmHWM``) of the process, whose baseline
(interpreter, numpy, polars, the prepared folder's id maps) is measured too, as a process that loads the folder
and stops. Both ways must give the same sequences (checked: a hash of offsets, items and timestamps). Results go
to ``experiments/reports/bench_histories.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import harness  # same folder

from recsys import atomic

REPO = Path(__file__).resolve().parents[1]
REPORTS = REPO / "experiments" / "reports"

WAYS = {
    "load only (baseline)": "pass",
    "rebuilt from interactions.parquet": "from recsys.prepare.build import build_sequences\n"
                                         "from recsys.prepare.format import read_interactions\n"
                                         "s = build_sequences(read_interactions(d.directory), d.split.n_users, "
                                         "d.split.n_items)",
    "joined from the split (all_events)": "from recsys.prepare.format import all_events\ns = all_events(d)",
    "train matrix in one pass (before)": "import scipy.sparse as sp\nt = d.split.train\n"
                                         "m = sp.csr_matrix((np.ones(t.n_events, np.float32), t.items.astype(np.int64),"
                                         " t.offsets.copy()), shape=(t.n_rows, t.n_items + 1))\nm.sum_duplicates()",
    "train matrix chunk by chunk (to_csr)": "m = d.split.train.to_csr(binary=False)",
}
HISTORIES = ("rebuilt from interactions.parquet", "joined from the split (all_events)")
MATRICES = ("train matrix in one pass (before)", "train matrix chunk by chunk (to_csr)")
CHILD = """
import hashlib, sys
import numpy as np
from recsys.prepare.format import load_prepared
d = load_prepared(sys.argv[1])
{body}
h = hashlib.sha256()
if {check} == "histories":
    for a in (s.offsets, s.items, s.timestamps):
        h.update(np.ascontiguousarray(a).tobytes())
elif {check} == "matrix":
    for a in (m.indptr.astype(np.int64), m.indices.astype(np.int64), m.data):
        h.update(np.ascontiguousarray(a).tobytes())
# this process's own peak (VmHWM starts again at exec; wait4's ru_maxrss would carry the parent's over)
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(h.hexdigest()[:16], int(hwm.split()[1]))
"""


def prepared(events: int, root: Path) -> Path:
    """The synthetic set of ``events`` events, prepared once (out of core) under ``root``."""
    from recsys.prepare import DataConfig, prepare
    from recsys.prepare.format import is_prepared

    out = root / f"histories-{events}"
    if not is_prepared(out):
        prepare(DataConfig(name=f"synthetic-{events}", synthetic_users=max(1, events // 100),
                           synthetic_items=max(1, events // 500), synthetic_events=events, engine="outofcore"), out)
    return out


def measure(folder: Path, way: str) -> dict:
    check = "histories" if way in HISTORIES else "matrix" if way in MATRICES else "none"
    code = CHILD.format(body=WAYS[way], check=repr(check))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    out = proc.stdout.read().split() if proc.stdout else []
    if proc.wait() != 0 or len(out) != 2:
        raise SystemExit(f"{way}: the child failed")
    return {"seconds": round(time.perf_counter() - t0, 2), "peak_rss_gb": round(int(out[1]) / 2**20, 3),
            "hash": out[0]}


def markdown(res: dict) -> str:
    lines = ["# Histories and the training matrix at scale: before and now", "",
             *harness.header_lines(res["meta"]),
             f"Synthetic set: {res['events']:,} events, {res['users']:,} users, {res['items']:,} items (out-of-core "
             f"engine, leave-last-out). Each way {res['repeats']} times, alternating, each in its own process; "
             "median seconds and peak RSS of the process (interpreter start-up and the folder's load included: "
             "the baseline row is that alone).", "",
             "| way | seconds (median) | peak RSS GB (median) | over the baseline GB |", "|---|---:|---:|---:|"]
    base = res["ways"]["load only (baseline)"]["peak_rss_gb"]
    for way, r in res["ways"].items():
        lines.append(f"| {way} | {r['seconds']:.2f} | {r['peak_rss_gb']:.3f} | {r['peak_rss_gb'] - base:.3f} |")
    lines.append("")
    for (old_way, new_way), what, same in ((HISTORIES, "Joined / rebuilt", res["same"]),
                                           (MATRICES, "Chunked / one pass", res.get("same_matrix"))):
        if new_way in res["ways"]:
            old, new = res["ways"][old_way], res["ways"][new_way]
            lines.append(f"{what}: {(new['peak_rss_gb'] - base) / (old['peak_rss_gb'] - base):.2f}x the memory "
                         f"over the baseline, {new['seconds'] / old['seconds']:.2f}x the seconds; the same result: "
                         f"{same}.")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--root", type=Path, default=REPO / "bench_runs")
    args = ap.parse_args()
    run = harness.ReportRun()
    folder = prepared(args.events, args.root)
    from recsys.prepare.format import load_prepared

    split = load_prepared(folder).split
    runs: dict[str, list[dict]] = {w: [] for w in WAYS}
    for r in range(args.repeats):
        for way in WAYS if r % 2 == 0 else reversed(WAYS):
            runs[way].append(measure(folder, way))
            print(f"round {r + 1} {way}: {runs[way][-1]}", flush=True)
    ways = {w: {"seconds": statistics.median(x["seconds"] for x in rs),
                "peak_rss_gb": statistics.median(x["peak_rss_gb"] for x in rs), "runs": rs} for w, rs in runs.items()}
    hashes = {x["hash"] for w in HISTORIES for x in runs[w]}
    matrix_hashes = {x["hash"] for w in MATRICES for x in runs[w]}
    res = {"meta": run.finish(), "events": split.params["n_events"], "users": split.n_users, "items": split.n_items,
           "repeats": args.repeats, "ways": ways, "same": len(hashes) == 1, "same_matrix": len(matrix_hashes) == 1}
    atomic.write_text(REPORTS / "bench_histories.json", json.dumps(res, indent=1) + "\n")
    atomic.write_text(REPORTS / "bench_histories.md", markdown(res))
    print(markdown(res))
    if not (res["same"] and res["same_matrix"]):
        raise SystemExit("two ways of building the same thing gave different results")


if __name__ == "__main__":
    main()
