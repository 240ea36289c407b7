"""Behaviour unchanged across a refactor: the prepared folders and the published bundle, byte for byte, at two commits.

    python experiments/compare_prepared.py --before 072bb24 --after HEAD
    python experiments/compare_prepared.py --before 072bb24 --after HEAD --sets beauty --no-pipeline

Each commit is checked out in its own git worktree (under ``--work``) and run through its own CLI, so the script
compares what each commit's code writes, not what it imports:

- ``recsys data split`` of every shared data set (``--sets``; the sets of ``experiments/item2vec_common.py``),
  with the pipeline's data settings (minimum length 3, leave-last-out): every file of the prepared folder;
- ``recsys pipeline run`` on the built-in defaults (``--pipeline``, the default) from an empty folder: the run's
  prepared folder and the published bundle (``<publish root>/current``).

Files are compared by SHA-256. A bundle's ``manifest.json`` records the run id, the time it was made and
measured timings (export's search timings, build seconds), which differ between any two runs, so it is compared
as JSON with those keys (``VOLATILE``) left out, and the file hashes it lists are compared as files. The
search the export chose (Annoy, IVF or exact) depends on those timings; when it differs the report says so.
Annoy builds its trees in threads (``AnnConfig.n_jobs``, every core by default), which append nodes in the order
the threads finish, so two builds of the same vectors differ in bytes while holding the same trees: an
``items.ann`` whose bytes differ is compared by its answers, each item's top 10 at the bundle's ``search_k``
(``ANSWER_ITEMS`` items, evenly spaced), and counts as the same only when every answer is.
Results: ``experiments/reports/compare_prepared.{md,json}``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ReportRun  # noqa: E402
from item2vec_common import DATA, SETS  # noqa: E402

from recsys import atomic  # noqa: E402
from recsys.prepare import format as pformat  # noqa: E402
from serving.format import CURRENT, INDEX, MANIFEST  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REPORTS = REPO / "experiments" / "reports"
#: manifest keys that differ between any two runs of the same code: ids, times, measured timings
ANSWER_ITEMS = 20_000  # items whose Annoy answers are compared when the index files differ in bytes
VOLATILE = {"run_id", "created_at", "build_seconds", "us_per_query", "seconds", "encode_us", "timings",
            "load_seconds", "files"}


def worktree(commit: str, work: Path) -> tuple[Path, str]:
    """A detached worktree of ``commit`` under ``work`` (reused when there); its path and full hash."""
    sha = subprocess.run(["git", "rev-parse", commit], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.strip()
    path = work / sha[:12]
    if not (path / ".git").exists():
        shutil.rmtree(path, ignore_errors=True)
        subprocess.run(["git", "worktree", "add", "--detach", "-f", str(path), sha], cwd=REPO, check=True,
                       capture_output=True)
    return path, sha


def recsys(tree: Path, cwd: Path, *args: str) -> float:
    """``python -m pipelines.cli ARGS`` with ``tree``'s code, in ``cwd``; its wall seconds."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env.pop("MLFLOW_TRACKING_URI", None)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=cwd, env=env, capture_output=True,
                         text=True)
    if out.returncode != 0:
        raise SystemExit(f"{tree.name}: recsys {' '.join(args)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return time.perf_counter() - t0


def hashes(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``folder``."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def stable(value: object) -> object:
    """``value`` (a manifest) without the ``VOLATILE`` keys, at any depth."""
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


def diff_keys(a: object, b: object, path: str = "") -> list[str]:
    """The key paths where two JSON values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in diff_keys(a.get(k), b.get(k), f"{path}.{k}" if path else k)]
    return [] if a == b else [path or "(root)"]


def same_answers(a: Path, b: Path, manifest: dict) -> dict:
    """Two Annoy files of a bundle asked the same questions: each of up to :data:`ANSWER_ITEMS` items' top 10 at
    the manifest's ``search_k``; the share of identical answers."""
    from annoy import AnnoyIndex

    indexes = []
    for path in (a, b):
        index = AnnoyIndex(int(manifest["dim"]), manifest["metric"])
        index.load(str(path))
        indexes.append(index)
    n = indexes[0].get_n_items()
    if indexes[1].get_n_items() != n:
        return {"items": n, "asked": 0, "same": 0.0}
    asked = sorted(set(np.linspace(0, n - 1, min(n, ANSWER_ITEMS)).astype(int).tolist()))
    search_k = int(manifest.get("annoy", {}).get("search_k", -1))
    same = sum(indexes[0].get_nns_by_item(i, 10, search_k=search_k) == indexes[1].get_nns_by_item(i, 10,
                                                                                                 search_k=search_k)
               for i in asked)
    return {"items": n, "asked": len(asked), "same": same / max(len(asked), 1)}


def compare(before: Path, after: Path, manifest: bool = False) -> dict:
    """Two folders file by file (``manifest.json`` as JSON without ``VOLATILE`` keys when ``manifest``; an
    ``items.ann`` that differs in bytes by :func:`same_answers`)."""
    ha, hb = hashes(before), hashes(after)
    only = sorted(set(ha) ^ set(hb))
    differ = [f for f in sorted(set(ha) & set(hb)) if ha[f] != hb[f] and not (manifest and f == MANIFEST)]
    res = {"files": len(set(ha) | set(hb)), "identical": sum(ha.get(f) == hb.get(f) for f in ha),
           "differ": differ, "only_one_side": only}
    if manifest:
        ma, mb = (json.loads((d / MANIFEST).read_text()) for d in (before, after))
        res["manifest_differs_at"] = diff_keys(stable(ma), stable(mb))
        if INDEX in differ and not res["manifest_differs_at"]:
            res["index_answers"] = same_answers(before / INDEX, after / INDEX, ma)
            if res["index_answers"]["asked"] and res["index_answers"]["same"] == 1.0:
                differ.remove(INDEX)
        res["manifest_volatile_keys_left_out"] = sorted(VOLATILE)
    res["empty"] = not ha or not hb  # nothing written on a side: never "same"
    res["same"] = not res["empty"] and not differ and not only and not res.get("manifest_differs_at")
    return res


def prepared_folders(root: Path) -> list[Path]:
    """Prepared folders under ``root`` (a ``split`` folder beside a finished report)."""
    return sorted(p.parent for p in root.rglob(pformat.SPLIT) if p.is_dir() and pformat.is_prepared(p.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--before", required=True, help="the commit before the change")
    ap.add_argument("--after", default="HEAD", help="the commit after it (default HEAD)")
    ap.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, of {', '.join(SETS)} ('' = none)")
    ap.add_argument("--no-pipeline", dest="pipeline", action="store_false",
                    help="skip the built-in pipeline run (its prepared folder and bundle)")
    ap.add_argument("--work", type=Path, default=REPO / "bench_runs" / "compare_prepared")
    args = ap.parse_args()
    args.work = args.work.resolve()  # each CLI runs in its own folder: a relative path would land inside it
    names = [s for s in args.sets.split(",") if s]
    bad = [s for s in names if s not in SETS]
    if bad:
        ap.error(f"unknown set(s) {bad}; known: {', '.join(SETS)}")
    args.work.mkdir(parents=True, exist_ok=True)
    run = ReportRun()
    trees = {side: worktree(c, args.work / "trees") for side, c in (("before", args.before), ("after", args.after))}
    out = {side: args.work / "out" / sha[:12] for side, (_, sha) in trees.items()}
    cases: dict[str, dict] = {}
    for name in names:
        rel, fmt, encoding = SETS[name]
        for side, (tree, _) in trees.items():
            dest = out[side] / "sets" / name
            shutil.rmtree(dest, ignore_errors=True)
            dest.parent.mkdir(parents=True, exist_ok=True)
            recsys(tree, dest.parent, "data", "split", str(DATA / rel), "--out", str(dest), "--format", fmt,
                   "--encoding", encoding, "--min-length", "3")
        cases[f"prepared {name}"] = compare(out["before"] / "sets" / name, out["after"] / "sets" / name)
        print(f"prepared {name}: {'same' if cases[f'prepared {name}']['same'] else 'DIFFERENT'}", flush=True)
    if args.pipeline:
        for side, (tree, _) in trees.items():
            wd = out[side] / "pipeline"
            shutil.rmtree(wd, ignore_errors=True)
            wd.mkdir(parents=True)
            recsys(tree, wd, "pipeline", "run")
        folders = {side: prepared_folders(out[side] / "pipeline") for side in trees}
        if [len(f) for f in folders.values()] != [1, 1]:
            raise SystemExit(f"expected one prepared folder per pipeline run, found {folders}")
        cases["pipeline prepared"] = compare(folders["before"][0], folders["after"][0])
        bundles = {side: next((out[side] / "pipeline").rglob(CURRENT)).resolve() for side in trees}
        cases["pipeline bundle"] = compare(bundles["before"], bundles["after"], manifest=True)
        for case in ("pipeline prepared", "pipeline bundle"):
            print(f"{case}: {'same' if cases[case]['same'] else 'DIFFERENT'}", flush=True)
    res = {"before": trees["before"][1][:12], "after": trees["after"][1][:12], **run.finish(), "cases": cases,
           "header": run.header()}
    atomic.write_json(REPORTS / "compare_prepared.json", res)
    atomic.write_text(REPORTS / "compare_prepared.md", markdown(res))
    if not all(c["same"] for c in cases.values()):
        raise SystemExit("some outputs differ: see experiments/reports/compare_prepared.md")


def markdown(res: dict) -> str:
    lines = ["# Prepared folders and published bundle before and after a change", "", *res["header"],
             f"Before {res['before']}, after {res['after']}.", "",
             "Every file compared by SHA-256; the bundle's manifest.json as JSON without the keys that differ "
             "between any two runs (ids, times, timings); an Annoy index whose bytes differ by its answers (threaded "
             "builds append nodes in the order threads finish).", "",
             "| case | files | identical | verdict | differing |", "|---|---:|---:|---|---|"]
    for name, c in res["cases"].items():
        differing = ", ".join(c["differ"] + c["only_one_side"] + [f"manifest {k}" for k in
                                                                   c.get("manifest_differs_at", [])]
                              + (["a side wrote no file"] if c.get("empty") else [])) or "-"
        answers = c.get("index_answers")
        if answers:
            note = (f"{INDEX}: bytes differ, {answers['same']:.4f} of {answers['asked']:,} items' top-10 answers "
                    "identical")
            differing = note if differing == "-" else f"{differing}; {note}"
        lines.append(f"| {name} | {c['files']} | {c['identical']} | {'same' if c['same'] else 'DIFFERENT'} | "
                     f"{differing} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
