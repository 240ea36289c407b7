"""Popularity, ALS and BPR on Amazon Beauty with the S3-Rec / ICLRec protocol.

Protocol: leave-last-out per user (last item = test target, second last = validation target),
test history = train + validation item, full ranking over all items, history excluded.
ALS and BPR are tuned on validation NDCG@10 over a small grid; the best of each family is
then scored on test. Popularity and the reference figures of an independent run of this
protocol are reported side by side, with ratios.

    python experiments/beauty_baselines.py            # full grid (tens of minutes on 2 busy cores)
    python experiments/beauty_baselines.py --quick    # smoke run: 3000 users, one config each

Writes ``experiments/reports/beauty_baselines{,_quick}.{json,md}``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import harness  # same folder
import polars as pl

from recsys import atomic
from recsys.config import to_dict
from recsys.evaluation.evaluator import EvalProtocol, evaluate_model
from recsys.ingest.schema import ITEM_IDX, TIMESTAMP, USER_IDX
from recsys.models.base import Model
from recsys.models.implicit_models import ALS, BPR, ALSConfig, BPRConfig
from recsys.models.popularity import Popularity
from recsys.prepare.split import SplitData, leave_last_out

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "iclrec-amazon" / "Beauty.txt"
REPORTS = Path(__file__).resolve().parent / "reports"
#: test NDCG@10 from an independent run of the same protocol (given with the task)
REFERENCE_NDCG10 = {"popularity": 0.0055, "als": 0.029}
GRIDS = {
    "als": (ALS, ALSConfig, {"factors": (64, 128), "regularization": (3.0, 10.0, 30.0), "alpha": (5.0, 10.0, 20.0),
                             "iterations": (15,)}),
    "bpr": (BPR, BPRConfig, {"factors": (64, 128), "learning_rate": (0.05, 0.1), "regularization": (0.001, 0.01),
                             "iterations": (200,), "fold_in_steps": (200,)}),
}
QUICK_GRIDS = {
    "als": (ALS, ALSConfig, {"factors": (32,), "regularization": (10.0,), "alpha": (10.0,), "iterations": (5,)}),
    "bpr": (BPR, BPRConfig, {"factors": (32,), "learning_rate": (0.05,), "iterations": (20,), "fold_in_steps": (50,)}),
}
METRICS = ("hr_10", "ndcg_10", "hr_20", "ndcg_20")


def read_beauty(path: Path, max_users: int | None = None) -> tuple[pl.DataFrame, int, int]:
    """``user i1 i2 ...`` lines (1-based dense ids, time order) -> encoded events, n_users, n_items.

    The timestamp is the event's position in the file, so sorting by (user, time) keeps file order.
    """
    lines = path.read_text().splitlines()[:max_users]
    tokens = pl.DataFrame({"t": lines}).select(pl.col("t").str.split(" "))
    events = tokens.select(
        pl.col("t").list.first().cast(pl.Int32).alias(USER_IDX), pl.col("t").list.slice(1).alias(ITEM_IDX)
    ).explode(ITEM_IDX)
    position = pl.int_range(pl.len(), dtype=pl.Int64).alias(TIMESTAMP)
    events = events.with_columns(pl.col(ITEM_IDX).cast(pl.Int32), position)
    return events, int(events[USER_IDX].max()), int(events[ITEM_IDX].max())


def read_pairs(path: Path, max_users: int | None = None) -> tuple[pl.DataFrame, int, int]:
    """``user item`` lines, grouped by user in time order (the SASRec Games file, ``sasrec/Video.txt``; 1-based dense
    ids) -> encoded events, n_users, n_items, as :func:`read_beauty` gives them (the timestamp is the line's position).
    With ``max_users`` only users ``1..max_users`` are kept."""
    frame = pl.read_csv(path, separator=" ", has_header=False, new_columns=[USER_IDX, ITEM_IDX],
                        schema_overrides={USER_IDX: pl.Int32, ITEM_IDX: pl.Int32})
    events = frame.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias(TIMESTAMP))
    if max_users is not None:
        events = events.filter(pl.col(USER_IDX) <= max_users)
    return events, int(events[USER_IDX].max()), int(events[ITEM_IDX].max())


def fit_and_validate(model: Model, split: SplitData, protocol: EvalProtocol) -> tuple[dict[str, float], dict]:
    t0 = time.perf_counter()
    model.fit(split.train)
    t1 = time.perf_counter()
    val = evaluate_model(model, split.valid_history, split.valid_targets, protocol)
    return val, {"fit_s": t1 - t0, "val_eval_s": time.perf_counter() - t1}


def test_scores(model: Model, split: SplitData, protocol: EvalProtocol) -> tuple[dict[str, float], float]:
    t0 = time.perf_counter()
    res = evaluate_model(model, split.test_history, split.test_targets, protocol)
    return res, time.perf_counter() - t0


def tune(family: str, grid: tuple, split: SplitData, protocol: EvalProtocol, threads: int) -> tuple[dict, list]:
    """Fit every grid point, keep the best by validation NDCG@10 and score it on test."""
    cls, cfg_cls, axes = grid
    rows, best, best_model = [], None, None
    for values in itertools.product(*axes.values()):
        params = dict(zip(axes, values, strict=True))
        config = cfg_cls(**params, num_threads=threads, validate_every=0)
        model = cls(config, "cpu")
        val, times = fit_and_validate(model, split, protocol)
        row = {"model": family, **params, "val_ndcg_10": val["ndcg_10"], "val_hr_10": val["hr_10"], **times}
        rows.append(row)
        print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
        if best is None or val["ndcg_10"] > best["val_ndcg_10"]:
            best, best_model = row, model
    test, test_s = test_scores(best_model, split, protocol)
    result = {"model": family, "config": to_dict(best_model.config), "val_ndcg_10": best["val_ndcg_10"],
              "fit_s": best["fit_s"], "test_eval_s": test_s, **{f"test_{m}": test[m] for m in METRICS}}
    return result, rows


def popularity(split: SplitData, protocol: EvalProtocol) -> dict:
    model = Popularity()
    val, times = fit_and_validate(model, split, protocol)
    test, test_s = test_scores(model, split, protocol)
    return {"model": "popularity", "config": to_dict(model.config), "val_ndcg_10": val["ndcg_10"],
            "fit_s": times["fit_s"], "test_eval_s": test_s, **{f"test_{m}": test[m] for m in METRICS}}


def markdown(report: dict) -> str:
    lines = [f"# Beauty baselines ({report['mode']})", "", *harness.header_lines(report["meta"]),
             f"Data: {report['data']}  ", f"Protocol: {report['protocol']}", "",
             "| model | val NDCG@10 | test HR@10 | test NDCG@10 | test HR@20 | test NDCG@20 | NDCG@10 / popularity "
             "| NDCG@10 / reference | fit s | test eval s |", "|" + " --- |" * 10]
    pop = report["results"][0]["test_ndcg_10"]
    for r in report["results"]:
        ref = REFERENCE_NDCG10.get(r["model"]) if report["mode"] == "full" else None  # full data set only
        ref_ratio = f"{r['test_ndcg_10'] / ref:.2f} (ref {ref})" if ref else "-"
        lines.append(f"| {r['model']} | {r['val_ndcg_10']:.4f} | {r['test_hr_10']:.4f} | {r['test_ndcg_10']:.4f} | "
                     f"{r['test_hr_20']:.4f} | {r['test_ndcg_20']:.4f} | {r['test_ndcg_10'] / pop:.2f} | {ref_ratio} | "
                     f"{r['fit_s']:.1f} | {r['test_eval_s']:.1f} |")
    lines += ["", "Best configs:", ""] + [f"- {r['model']}: `{json.dumps(r['config'])}`" for r in report["results"]]
    lines += ["", f"Grid ({len(report['grid'])} fits, wall {report['grid_wall_s']:.0f} s):", "",
              "| model | params | val NDCG@10 | fit s |", "| --- | --- | --- | --- |"]
    for g in report["grid"]:
        params = {k: v for k, v in g.items() if k not in ("model", "val_ndcg_10", "val_hr_10", "fit_s", "val_eval_s")}
        lines.append(f"| {g['model']} | `{json.dumps(params)}` | {g['val_ndcg_10']:.4f} | {g['fit_s']:.1f} |")
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    atomic.write_text(path, text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Beauty.txt (S3-Rec/ICLRec format)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 3000 users, one config per model")
    ap.add_argument("--threads", type=int, default=0, help="implicit threads (0 = every core)")
    ap.add_argument("--out", type=Path, default=REPORTS, help="report folder")
    args = ap.parse_args()
    run = harness.ReportRun()
    if not args.data.is_file():
        raise SystemExit(f"{args.data} not found; pass --data /path/to/Beauty.txt (see shared/data/README.md)")
    events, n_users, n_items = read_beauty(args.data, 3000 if args.quick else None)
    split = leave_last_out(events, n_users, n_items)
    protocol = EvalProtocol(split="leave_last_out", ks=(10, 20), exclude_history=True, fingerprint=split.fingerprint)
    t0 = time.perf_counter()
    results, grid = [popularity(split, protocol)], []
    for family, spec in (QUICK_GRIDS if args.quick else GRIDS).items():
        best, rows = tune(family, spec, split, protocol, args.threads)
        results.append(best)
        grid += rows
    run.meta["seeds"] = sorted({r["config"]["seed"] for r in results if "seed" in r["config"]})
    report = {
        "mode": "quick" if args.quick else "full", "meta": run.finish(),
        "data": f"{args.data.name}: {events.height} events, {n_users} users, {n_items} items",
        "protocol": json.dumps(protocol.as_dict()), "results": results, "grid": grid,
        "grid_wall_s": time.perf_counter() - t0, "reference_test_ndcg_10": REFERENCE_NDCG10,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "beauty_baselines_quick" if args.quick else "beauty_baselines"
    write_atomic(args.out / f"{stem}.json", json.dumps(report, indent=2, sort_keys=True))
    write_atomic(args.out / f"{stem}.md", markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
