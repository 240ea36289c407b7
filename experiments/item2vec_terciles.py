"""Where item2vec and gensim differ: validation NDCG@10 by the popularity of the item to predict.

Each set's validation users are sorted by their target item's count in the training split and cut into three
equal groups (rare, middle, popular targets; ties in the sort keep the users' order). Both sides are fitted at
the library default (:class:`Item2VecConfig`, ``--ours`` overrides ours alone: a candidate rule) with the same
threads, and each group is scored by :func:`recsys.evaluation.evaluate_model` on the validation split only.
A gap that sits in one group names the rows to work on (rare items' rows, or popular ones').

    python experiments/item2vec_terciles.py                                       # the three sets, seed 0
    python experiments/item2vec_terciles.py --sets synthetic --synthetic-events 5000000 --seeds 2
    python experiments/item2vec_terciles.py --ours '{"adagrad_eps": 0.003}' --report-name item2vec_terciles_eps
    python experiments/item2vec_terciles.py --rewrite                             # the Markdown from the JSON
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import harness  # noqa: E402
from item2vec_common import fit, load_set, scores, sentences  # noqa: E402

from recsys import atomic  # noqa: E402
from recsys.models.item2vec import Item2VecConfig  # noqa: E402
from recsys.prepare.sequences import Sequences, item_counts  # noqa: E402

REPORTS = Path(__file__).resolve().parent / "reports"
GROUPS = ("rare", "middle", "popular")


def tercile_rows(train: Sequences, targets: Sequences) -> list[np.ndarray]:
    """The validation rows that have a target, in three equal groups by their (first) target's training count,
    rarest first; a stable sort, so users with equally common targets keep their order."""
    counts = item_counts(train.items, train.n_items)
    has = np.flatnonzero(np.diff(targets.offsets) > 0)
    first = targets.items[targets.offsets[has]]
    return [has[g] for g in np.array_split(np.argsort(counts[first], kind="stable"), len(GROUPS))]


def score_groups(model: object, hist: Sequences, targets: Sequences, groups: list[np.ndarray]) -> dict[str, float]:
    """NDCG@10 over all rows and over each group."""
    out = {"all": scores(model, hist, targets)["ndcg_10"]}
    for name, rows in zip(GROUPS, groups, strict=True):
        out[name] = scores(model, hist.take(rows), targets.take(rows))["ndcg_10"]
    return out


def run_set(name: str, seeds: int, workers: int, ours_kw: dict, synthetic_events: int) -> dict:
    split = load_set(name, synthetic_events)
    groups = tercile_rows(split.train, split.valid_targets)
    counts = item_counts(split.train.items, split.train.n_items)
    first = split.valid_targets.items[split.valid_targets.offsets[:-1].clip(max=len(split.valid_targets.items) - 1)]
    res: dict = {"rows": [len(g) for g in groups],
                 "rows_without_target": split.valid_targets.n_rows - sum(map(len, groups)),
                 "median_target_count": [float(np.median(counts[first[g]])) for g in groups],
                 "fits": {"ours": [], "gensim": []}}
    sents = sentences(split.train)
    for seed in range(seeds):
        cfg = Item2VecConfig(seed=seed)
        for side, c in (("ours", dataclasses.replace(cfg, **ours_kw)), ("gensim", cfg)):
            model, sec = fit(side, split.train, c, sents, workers)
            got = {"seed": seed, "fit_s": round(sec, 1),
                   **score_groups(model, split.valid_history, split.valid_targets, groups)}
            res["fits"][side].append(got)
            print(f"  {name} {side} {got}", flush=True)
    return res


def _cell(fits: list[dict], key: str) -> str:
    xs = [f[key] for f in fits]
    return f"{statistics.mean(xs):.4f}" + (f" ± {statistics.stdev(xs):.4f}" if len(xs) > 1 else "")


def write_report(res: dict, name: str) -> None:
    atomic.write_text(REPORTS / f"{name}.json", json.dumps(res, indent=1) + "\n")
    seeds = res["seeds"]
    lines = ["# item2vec and gensim by the popularity of the item to predict (validation)", "",
             *harness.header_lines(res["meta"]),
             f"Both sides at the library default (`Item2VecConfig()`), {res['workers']} threads each; ours with "
             f"{res['ours'] or 'no overrides'}. Validation NDCG@10, "
             + (f"mean ± sd over {seeds} seeds." if seeds > 1 else "one seed (0)."), "",
             "Validation users sorted by their target item's training count and cut into three equal groups; "
             "each set's first row gives the median training count of each group's targets.", "",
             "| set | side | all | rare | middle | popular |", "|---|---|---|---|---|---|"]
    for set_name, s in res["sets"].items():
        med = s["median_target_count"]
        label = set_name + (f" ({res['synthetic_events']:,} events)" if set_name == "synthetic" else "")
        lines.append(f"| {label} | targets' median count | | {med[0]:g} | {med[1]:g} | {med[2]:g} |")
        for side in ("ours", "gensim"):
            lines.append(f"| {label} | {side} | " + " | ".join(_cell(s["fits"][side], k) for k in ("all", *GROUPS))
                         + " |")
        ratio = [statistics.mean(f[k] for f in s["fits"]["ours"]) / statistics.mean(f[k] for f in s["fits"]["gensim"])
                 for k in ("all", *GROUPS)]
        lines.append(f"| {label} | ours / gensim | " + " | ".join(f"{r:.3f}" for r in ratio) + " |")
    lines += ["", "Rows per group, rows without a validation target (not grouped), per-fit figures and fit seconds are "
              "in the JSON.", ""]
    atomic.write_text(REPORTS / f"{name}.md", "\n".join(lines))
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="beauty,ml-1m-sample,synthetic", help="comma-separated data sets")
    ap.add_argument("--synthetic-events", type=int, default=1_000_000)
    ap.add_argument("--seeds", type=int, default=1, help="seeds 0, 1, ... per side and set")
    ap.add_argument("--workers", type=int, default=2, help="training threads of each side")
    ap.add_argument("--ours", default="{}", help="JSON object of Item2VecConfig overrides for our side only")
    ap.add_argument("--report-name", default="item2vec_terciles", help="report file stem under experiments/reports")
    ap.add_argument("--rewrite", action="store_true", help="fit nothing: regenerate the --report-name Markdown from "
                    "its JSON")
    args = ap.parse_args(argv)
    if args.rewrite:
        path = REPORTS / f"{args.report_name}.json"
        if not path.is_file():
            raise SystemExit(f"--rewrite: {path} not found; run without --rewrite first")
        write_report(json.loads(path.read_text()), args.report_name)
        return
    try:
        ours_kw = json.loads(args.ours)
        Item2VecConfig(**ours_kw)
    except (TypeError, ValueError) as exc:  # bad JSON, not an object, an unknown field or a bad value
        raise SystemExit(f"--ours must be a JSON object of Item2VecConfig fields, e.g. '{{\"adagrad_eps\": 0.003}}'"
                         f": {exc}") from exc
    if args.seeds < 1:
        raise SystemExit("--seeds must be >= 1")
    run = harness.ReportRun(argv=sys.argv[1:] if argv is None else argv, seeds=list(range(args.seeds)))
    res: dict = {"seeds": args.seeds, "workers": args.workers, "ours": ours_kw,
                 "synthetic_events": args.synthetic_events, "sets": {}}
    for name in args.sets.split(","):
        res["sets"][name] = run_set(name, args.seeds, args.workers, ours_kw, args.synthetic_events)
    res["meta"] = run.finish()
    write_report(res, args.report_name)


if __name__ == "__main__":
    main()
