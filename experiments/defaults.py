"""Library defaults that transfer: each candidate configuration on the validation split of every shared data set.

    python experiments/defaults.py                    # item2vec and ALS candidates, every set (about an hour)
    python experiments/defaults.py --models als --sets ml-100k,beauty --merge

For each model family, a small set of candidate configurations (``CANDIDATES``: the current library default and
its neighbours, one setting changed at a time) is fitted (``SEEDS`` seeds, scores averaged) on every data set of
``experiments/item2vec_common.py`` (Beauty, Games, the MovieLens 1M sample, latest-small, 100K), each prepared
by the pipeline's own data steps (minimum length 3, leave-last-out). Candidates that change only an encode-time
setting (item2vec's ``user_decay``, ``scoring``) are scored on the default's fit. Each fit is scored on *validation*
NDCG@10;
a candidate's ratio on a set is its score over the best score any candidate of that family reached there, and
the chosen default is the candidate with the highest *worst* ratio across sets (ties: the higher mean ratio),
but the current default stays unless that worst ratio beats the default's by more than ``MARGIN`` (one-seed
differences smaller than that are noise, not a reason to change a default). Only then is the chosen candidate
scored on the test splits, once. Configs are never keyed by a data set's name: one configuration for every log.

Results go to ``experiments/reports/defaults.{md,json}`` with the commit; the library defaults and the shipped
pipeline configs are then set to the chosen candidates by hand (the report says which they are).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))
from harness import ReportRun, machine  # noqa: E402
from item2vec_common import SETS, load_set  # noqa: E402

from recsys import atomic  # noqa: E402
from recsys.config import to_dict  # noqa: E402
from recsys.evaluation.evaluator import evaluate_model  # noqa: E402
from recsys.models.registry import MODELS, build_model  # noqa: E402

REPORTS = REPO / "experiments" / "reports"

#: per model: candidate name -> the settings that differ from the library default (one change at a time)
CANDIDATES: dict[str, dict[str, dict]] = {
    "item2vec": {
        "default": {},
        "epochs 10": {"epochs": 10},
        "window 10": {"window": 10},
        "subsample 1e-3": {"subsample": 1e-3},  # the default is 0 since 9ff23e3
        # encode-time; the default is "auto" (chosen per log from the training data) since 29994b8's run
        "user_decay 0.2": {"user_decay": 0.2},
        "user_decay 0.4": {"user_decay": 0.4},  # the tuned fixed value, the default before "auto"
        "user_decay 0.8": {"user_decay": 0.8},
        "negatives 10": {"negatives": 10},
        "lr 0.1": {"lr": 0.1},  # the tuner's lr (at dim 64), and gensim's best's on the 5M synthetic set
        # the row-update rule before e5b7060 (the rules part chose "step" on three sets; this checks all five)
        "adagrad decay per update": {"adagrad_decay_per": "update"},
        "scoring in-in": {"scoring": "in-in"},
    },
    "als": {
        "default": {},
        "factors 32": {"factors": 32},
        "factors 128": {"factors": 128},
        "regularization 0.1": {"regularization": 0.1},
        "regularization 1": {"regularization": 1.0},
        "alpha 10": {"alpha": 10.0},
        "iterations 30": {"iterations": 30},
    },
}


#: fits per (candidate, set), scores averaged: ALS is cheap, an item2vec fit takes up to a minute and a half
SEEDS = {"item2vec": 1, "als": 3}
#: how much higher a candidate's worst ratio must be than the default's to replace it
MARGIN = 0.01


def fit_score(model_name: str, overrides: dict, split, part: str = "valid", seeds: int = 1,
              fits: dict | None = None) -> dict:
    """Fit ``model_name`` at its library default plus ``overrides`` (seeds 42, 43, ...) on ``split.train``; the
    mean NDCG@10 / HR@10 on ``part`` and the mean fit seconds.

    ``fits`` caches fitted models by (split, fit-time settings, seed): candidates that differ only in the model's
    encode-time settings (``Model.encode_time``, e.g. item2vec's ``user_decay``) are scored on the same fit, no
    refit (their fit seconds are that fit's)."""
    hist, targets = ((split.valid_history, split.valid_targets) if part == "valid"
                     else (split.test_history, split.test_targets))
    encode = MODELS[model_name].encode_time
    default = MODELS[model_name].Config()
    setting = {k: overrides.get(k, getattr(default, k)) for k in encode}
    fits = {} if fits is None else fits
    runs = []
    for seed in range(42, 42 + seeds):
        key = (id(split), tuple(sorted((k, v) for k, v in overrides.items() if k not in encode)), seed)
        if key not in fits:
            t0 = time.perf_counter()
            fitted = build_model(model_name, {**overrides, "seed": seed}, "cpu").fit(split.train)
            fits[key] = (fitted, time.perf_counter() - t0)
        model, fit_s = fits[key]
        model.config = dataclasses.replace(model.config, **setting)
        res = evaluate_model(model, hist, targets)
        runs.append((res["ndcg_10"], res["hr_10"], fit_s))
    return {"ndcg_10": round(sum(r[0] for r in runs) / seeds, 5), "hr_10": round(sum(r[1] for r in runs) / seeds, 5),
            "fit_s": round(sum(r[2] for r in runs) / seeds, 1), "seeds": seeds}


def choose(scores: dict[str, dict[str, dict]]) -> tuple[str, dict[str, dict[str, float]]]:
    """``scores[candidate][set]`` -> (the chosen candidate, ratios[candidate][set] to each set's best): the highest
    worst ratio (ties: mean ratio), unless it beats ``"default"``'s worst ratio by no more than ``MARGIN``."""
    sets = sorted({s for per in scores.values() for s in per})
    best = {s: max(scores[c][s]["ndcg_10"] for c in scores if s in scores[c]) for s in sets}
    ratios = {c: {s: (scores[c][s]["ndcg_10"] / best[s] if best[s] > 0 else 1.0) for s in sets if s in scores[c]}
              for c in scores}
    complete = [c for c in scores if len(ratios[c]) == len(sets)]
    chosen = max(complete, key=lambda c: (min(ratios[c].values()), sum(ratios[c].values())))
    if "default" in complete and min(ratios[chosen].values()) <= min(ratios["default"].values()) + MARGIN:
        chosen = "default"
    return chosen, ratios


def write_report(res: dict) -> None:
    atomic.write_json(REPORTS / "defaults.json", res)
    lines = ["# Defaults that transfer across logs (validation NDCG@10)", "",
             f"Machine: {res['machine']}. Command: `python experiments/defaults.py` (then `--models M --sets S "
             "--merge` for parts); each model's table names the commit it ran at.", "",
             "Each candidate is the library default with one setting changed. Ratio = the candidate's validation "
             "NDCG@10 over the best any candidate of the family reached on that set; the default is the candidate "
             f"with the highest worst ratio (ties: mean ratio) when that beats the current default's by more than "
             f"{MARGIN}, else the current default stays. Test NDCG@10 is measured once, for the chosen candidate "
             "only.", ""]
    for model, r in res["models"].items():
        sets = list(r["sets"])
        n_seeds = next(iter(next(iter(r["scores"].values())).values()))["seeds"]
        lines += [f"## {model} (commit {r['commit']}; {n_seeds} seed{'s' if n_seeds > 1 else ''} per cell, mean)", "",
                  *r.get("header", []),
                  f"Library default at that commit: `{json.dumps(r['library_default'])}`", "",
                  "| candidate | " + " | ".join(f"{s} val NDCG@10 (ratio)" for s in sets) + " | worst ratio | "
                  "mean ratio |", "| --- |" + " ---: |" * (len(sets) + 2)]
        for cand, per in r["scores"].items():
            ratios = r["ratios"][cand]
            cells = [f"{per[s]['ndcg_10']:.4f} ({ratios[s]:.3f})" if s in per else "-" for s in sets]
            mark = " **chosen**" if cand == r["chosen"] else ""
            lines.append(f"| {cand}{mark} | " + " | ".join(cells) +
                         f" | {min(ratios.values()):.3f} | {sum(ratios.values()) / len(ratios):.3f} |")
        lines += ["", f"Chosen: **{r['chosen']}** (`{json.dumps(CANDIDATES[model][r['chosen']])}` over the default). "
                  "Its test NDCG@10 / HR@10, looked at once: " +
                  "; ".join(f"{s} {t['ndcg_10']:.4f} / {t['hr_10']:.4f}" for s, t in r["chosen_test"].items()), "",
                  "Fit seconds (validation fits): " + "; ".join(
                      f"{s} {min(r['scores'][c][s]['fit_s'] for c in r['scores'] if s in r['scores'][c]):.0f}-"
                      f"{max(r['scores'][c][s]['fit_s'] for c in r['scores'] if s in r['scores'][c]):.0f} s"
                      for s in sets), ""]
    atomic.write_text(REPORTS / "defaults.md", "\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(CANDIDATES), help=f"of {', '.join(CANDIDATES)}")
    ap.add_argument("--sets", default=",".join(SETS), help=f"of {', '.join(SETS)}")
    ap.add_argument("--seeds", type=int, default=0, help="fits per candidate and set (default: SEEDS per model)")
    ap.add_argument("--merge", action="store_true", help="keep the existing report's models not rerun")
    args = ap.parse_args()
    models = [m for m in args.models.split(",") if m]
    names = [s for s in args.sets.split(",") if s]
    bad = [m for m in models if m not in CANDIDATES] + [s for s in names if s not in SETS]
    if bad:
        ap.error(f"unknown model(s) or set(s): {bad}")
    old = json.loads((REPORTS / "defaults.json").read_text()) if args.merge and (REPORTS / "defaults.json").is_file() \
        else {}
    res = {"machine": machine(),
           "models": dict(old.get("models", {}))}
    splits = {s: load_set(s) for s in names}
    for model in models:
        n_seeds = args.seeds or SEEDS[model]
        run = ReportRun(seeds=list(range(42, 42 + n_seeds)))
        scores: dict[str, dict] = {}
        fits: dict = {}  # per model family: its candidates' fits, reused across encode-time settings
        for cand, overrides in CANDIDATES[model].items():
            scores[cand] = {}
            for s in names:
                scores[cand][s] = fit_score(model, overrides, splits[s], seeds=n_seeds, fits=fits)
                print(f"{model} {cand:<20} {s:<16} val ndcg_10 {scores[cand][s]['ndcg_10']:.4f} "
                      f"({scores[cand][s]['fit_s']:.0f} s)", flush=True)
        chosen, ratios = choose(scores)
        test = {s: fit_score(model, CANDIDATES[model][chosen], splits[s], "test", n_seeds, fits) for s in names}
        fits.clear()
        res["models"][model] = {"commit": run.meta["commit"] + ("+dirty" if run.meta["dirty"] else ""),
                                "sets": names, "scores": scores, "ratios": ratios, "chosen": chosen,
                                "chosen_test": test, "library_default": to_dict(MODELS[model].Config()),
                                "run": run.finish(), "header": run.header()}
        write_report(res)
        print(f"{model}: chosen {chosen!r}; written to {REPORTS / 'defaults.md'}", flush=True)


if __name__ == "__main__":
    main()
