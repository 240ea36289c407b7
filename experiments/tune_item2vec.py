"""Tune item2vec on Beauty *validation* only: ours with ``recsys tune``, and the greedy searches it is judged by.

``--search optuna`` (the default): our item2vec through the product's own search, :func:`pipelines.tune.tune`
(``recsys tune``: Optuna TPE over ``Item2Vec.search_space``, which spans ``GRID`` (its ordered parameters as
ranges) plus the scoring, then coordinate moves from the best trial for the last ``--refine`` share, pruning on the
validation NDCG@10 at 30/50/75% of a trial's epochs), ``--trials`` trials
(36: the fit budget of each greedy search), training threads as below. The study starts where the greedy searches
start (``START`` is the config it tunes, so its first trial), and like them scores every fit at each encode-time
setting (both scorings x every ``user_decay``) without a refit. The study (Optuna SQLite storage and its MLflow
runs, under ``--work``) resumes when rerun. Its best is reported beside the greedy searches' (kept in the report),
on the same validation split.

``--search greedy``: the earlier searches, kept for gensim (not a product model, so not in ``recsys tune``)
and to reproduce the report's greedy rows. Four searches (ours / gensim x in-in / in-out), each a greedy
coordinate search from the same start: for every parameter of the grid in turn, try each value with the others
at the best so far, keep the best validation NDCG@10; pass after pass until a pass improves nothing,
``--passes`` passes are done or the search has fitted ``--budget`` models. The grid is ``GRID`` for both
fitters, the same parameters and values; our batched SGD's own settings (``batch_size``, ``update``) stay at
the library defaults. With ``--merge`` and gensim's searches kept from the report, each of our searches may
fit at most as many models as gensim's search of the same scoring did (``fits_like_gensim``), so both sides
get the same search and the same number of fits. ``user_decay`` is an encode-time setting: it is searched on
the fitted vectors without a refit. A setting already scored is not fitted again. Test
data is never looked at.

The report (``experiments/reports/tune_item2vec.{json,md}``) records the grid, every trial (its
parameters, validation NDCG@10 / HR@10, fit seconds), each search's budget (fits, evaluations,
seconds) and its best configuration. ``experiments/bench_item2vec.py --parts sets`` runs our best
(over both scorings, by validation) against gensim's best of each scoring on the test splits of
Beauty, Games and the MovieLens 1M sample.

    python experiments/tune_item2vec.py                 # recsys tune, 36 trials (about half an hour on 2 cores)
    python experiments/tune_item2vec.py --search greedy # the four greedy searches
    python experiments/tune_item2vec.py --search greedy --quick   # a tiny grid, one pass: a smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "experiments"))

from harness import ReportRun, legacy_runs, runs_header, without_legacy_fields  # noqa: E402
from item2vec_common import fit, sentences, with_scoring  # noqa: E402

from pipelines.tune import REFINE_SHARE  # noqa: E402
from recsys import atomic  # noqa: E402
from recsys.evaluation.evaluator import evaluate_model  # noqa: E402
from recsys.models.base import NaNLossError  # noqa: E402
from recsys.models.item2vec import Item2VecConfig  # noqa: E402
from recsys.prepare.split import SplitData  # noqa: E402

# where every search starts: the Beauty config tuned earlier (in-in, ours), its scoring replaced
START = {"dim": 64, "window": 10, "negatives": 5, "ns_exponent": 0.75, "subsample": 1e-3, "epochs": 10,
         "lr": 0.1, "min_lr": 1e-4, "user_decay": 0.2}
GRID: dict[str, list] = {
    "window": [3, 5, 10, 20],
    "negatives": [5, 10, 20],
    "ns_exponent": [1.0, 0.75, 0.5, 0.0, -0.5],
    "epochs": [5, 10, 20],
    "dim": [64, 128],
    "subsample": [1e-3, 1e-4, 1e-5, 0.0],
    "lr": [0.025, 0.05, 0.1],
    "user_decay": [1.0, 0.6, 0.4, 0.2, 0.1],  # encode-time: no refit
}
OURS_ONLY: dict[str, list] = {}  # none: both fitters search GRID alone
ENCODE_TIME = ("user_decay",)
FITTERS = ("ours", "gensim")
SCORINGS = ("in-in", "in-out")


def grid_of(fitter: str) -> dict[str, list]:
    """The parameters a fitter's search varies, in order (encode-time ones last)."""
    grid = {**(OURS_ONLY if fitter == "ours" else {}), **{k: v for k, v in GRID.items() if k not in ENCODE_TIME}}
    return {**grid, **{k: GRID[k] for k in ENCODE_TIME}}


def search(split: SplitData, fitter: str, scoring: str, passes: int, budget: int, workers: int) -> dict:
    """Greedy coordinate search on validation NDCG@10; returns the best config, every trial and the budget."""
    grid = grid_of(fitter)
    sents = sentences(split.train) if fitter == "gensim" else None
    models: dict[tuple, object] = {}  # every fit of the search (~12 MB each on Beauty): decay needs no refit
    trials: list[dict] = []
    n_fits = n_evals = 0
    t0 = time.perf_counter()

    def score(cfg: Item2VecConfig) -> dict:
        nonlocal n_fits, n_evals
        key = tuple(getattr(cfg, k) for k in grid if k not in ENCODE_TIME)
        fit_s = None
        if key not in models:
            model, fit_s = fit(fitter, split.train, cfg, sents, workers)
            models[key] = model
            n_fits += 1
        model = with_scoring(models[key], scoring=scoring, user_decay=cfg.user_decay)
        res = evaluate_model(model, split.valid_history, split.valid_targets)
        n_evals += 1
        return {"val_ndcg_10": round(res["ndcg_10"], 5), "val_hr_10": round(res["hr_10"], 5),
                "fit_s": None if fit_s is None else round(fit_s, 2)}

    best_cfg = Item2VecConfig(**START, scoring=scoring, seed=0)
    seen: dict[tuple, float] = {}
    best = -1.0
    spent = False
    for p in range(1, passes + 1):
        improved = False
        for key, values in grid.items():
            for v in values:
                cfg = dataclasses.replace(best_cfg, **{key: v})
                sig = tuple(getattr(cfg, k) for k in grid)
                if sig in seen:
                    continue
                if key not in ENCODE_TIME and n_fits >= budget:
                    spent = True
                    break
                row = {"pass": p, "vary": key, **{k: getattr(cfg, k) for k in grid}}
                try:
                    row.update(score(cfg))
                except NaNLossError as exc:  # too high a learning rate for this setting
                    row["error"] = str(exc).split(";")[0]
                    seen[sig] = -1.0
                    trials.append(row)
                    continue
                seen[sig] = row["val_ndcg_10"]
                trials.append(row)
                print(f"  {fitter} {scoring} pass {p} {key}={v}: {row['val_ndcg_10']:.5f}"
                      + (f" (fit {row['fit_s']}s)" if row["fit_s"] else ""), flush=True)
                if row["val_ndcg_10"] > best:
                    improved = improved or best >= 0
                    best, best_cfg = row["val_ndcg_10"], cfg
        if spent or (not improved and p > 1):
            break
    best_row = next(t for t in trials if t.get("val_ndcg_10") == best and all(
        t[k] == getattr(best_cfg, k) for k in grid))
    return {"fitter": fitter, "scoring": scoring, "best": dataclasses.asdict(best_cfg), "val_ndcg_10": best,
            "val_hr_10": best_row["val_hr_10"], "trials": trials,
            "grid": list(grid),
            "budget": {"fits": n_fits, "fit_budget": budget, "budget_spent": spent, "evaluations": n_evals,
                       "seconds": round(time.perf_counter() - t0, 1), "passes_run": max(t["pass"] for t in trials)}}


def fits_like_gensim(searches: list[dict], fitter: str, scoring: str, budget: int) -> int:
    """Our search's fit budget: at most the fits gensim's search of the same scoring made (when it is in
    ``searches``), never more than ``budget``."""
    if fitter == "gensim":
        return budget
    theirs = [s["budget"]["fits"] for s in searches if s["fitter"] == "gensim" and s["scoring"] == scoring]
    return min([budget, *theirs])


def chosen(results: dict) -> dict:
    """Per fitter, the search with the best validation NDCG@10 (over both scorings)."""
    out = {}
    for fitter in FITTERS:
        runs = [r for r in results["searches"] if r["fitter"] == fitter]
        if runs:
            out[fitter] = max(runs, key=lambda r: r["val_ndcg_10"])["best"]
    return out


def optuna_search(split: SplitData, trials: int, workers: int, work: Path, sampler: str = "tpe",
                  refine: float = 0.0) -> dict:
    """``recsys tune`` of our item2vec on Beauty validation (the study resumes from ``work``); its trials."""
    import optuna
    from item2vec_common import BEAUTY

    from pipelines.config import DataConfig, RunConfig, RunSection
    from pipelines.study_report import trial_params
    from pipelines.tune import tune

    work.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{(work / 'mlruns.db').resolve()}"
    storage = f"sqlite:///{(work / 'optuna.db').resolve()}"
    cfg = RunConfig(run=RunSection(experiment="tune-item2vec", name="beauty-item2vec", seed=0, device="cpu"),
                    data=DataConfig(name="beauty", path=str(BEAUTY), format="seq-per-user", min_length=3),
                    model_name="item2vec", model={"workers": workers, **START}, source="tune_item2vec.py")
    t0 = time.perf_counter()
    res = tune(cfg, work, trials=trials, storage=storage, study_name="beauty-item2vec", sampler=sampler,
               refine=refine)
    study = optuna.load_study(study_name=res.study, storage=storage)
    rows = [{"number": t.number, "val_ndcg_10": t.value, **trial_params(t),
             "state": f"REPEAT of {t.user_attrs['repeat_of']}" if "repeat_of" in t.user_attrs else t.state.name,
             "refines": t.user_attrs.get("refines"),
             "seconds": None if t.duration is None else round(t.duration.total_seconds(), 1)} for t in study.trials]
    return {"study": res.study, "trials_asked": trials, "best_value": res.best_value, "best_trial": res.best_trial,
            "best_params": res.best_params, "complete": res.complete, "pruned": res.pruned, "failed": res.failed,
            "repeats": res.repeats,
            "seconds_this_call": round(time.perf_counter() - t0, 1), "trials": rows,
            "fingerprint": split.fingerprint}


def optuna_markdown(o: dict, searches: list[dict]) -> list[str]:
    greedy = max((s for s in searches if s["fitter"] == "ours"), key=lambda s: s["val_ndcg_10"], default=None)
    sampler = {"tpe": "TPE", "gp": "Gaussian-process"}[o.get("sampler", "tpe")]
    refine = o.get("refine", 0.0)
    how = (f"then coordinate moves from the best trial for the last {refine:.0%} of the trials" if refine
           else "no refinement")
    lines = [f"## recsys tune (Optuna {sampler} sampler, {how}, pruning), ours: {o['trials_asked']} trials", "",
             f"{_run_ref(o)}Commit {o['commit']}; command `{o['command']}`. Study `{o['study']}`: "
             f"{o['complete']} complete, "
             f"{o['pruned']} pruned, {o['failed']} failed, {o.get('repeats', 0)} repeats (settings already tried: the "
             f"earlier result, no fit, not counted). Best validation NDCG@10 **{o['best_value']:.5f}** "
             f"(trial {o['best_trial']}: `{o['best_params']}`)."]
    if greedy is not None:
        verdict = "reaches" if o["best_value"] >= greedy["val_ndcg_10"] else "does NOT reach"
        lines.append(f"The greedy search's best (ours, {greedy['scoring']}, {greedy['budget']['fits']} fits and "
                     f"{greedy['budget']['evaluations']} evaluations) was {greedy['val_ndcg_10']:.5f}: recsys tune "
                     f"{verdict} it ({o['best_value'] / greedy['val_ndcg_10']:.3f}x). Both start from the same "
                     "config and score each fit at every user_decay without a refit; a tune fit is also scored at "
                     "both scorings (the greedy searches ran one scoring each, 30 fits apiece). A pruned trial "
                     "shows no encode-time setting: it was not scored at the end.")
    keys = list(dict.fromkeys(k for t in o["trials"] for k in t
                              if k not in ("number", "state", "val_ndcg_10", "seconds", "refines")))
    lines += ["", "| trial | state | val NDCG@10 | " + " | ".join(keys) + " | seconds |",
              "|---|---|---|" + "---|" * (len(keys) + 1)]
    for t in o["trials"]:
        value = "" if t["val_ndcg_10"] is None else f"{t['val_ndcg_10']:.5f}"
        shown = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in (t.get(k, "") for k in keys)]
        state = t["state"] + (f" (moves trial {t['refines']})" if t.get("refines") is not None else "")
        lines.append(f"| {t['number']} | {state} | {value} | " + " | ".join(shown) + f" | {t['seconds'] or ''} |")
    return lines + [""]


def markdown(r: dict) -> str:
    lines = ["# item2vec tuned on Beauty validation: ours and gensim, both scorings", "", *runs_header(r["runs"]),
             "Greedy coordinate search on validation NDCG@10 (test never seen), the same for all four searches: "
             "each parameter in turn over its values, the others at the best so far; a setting already scored is "
             f"not refitted; at most {r['passes']} passes and {r['budget']} fits a search (ours: at most the fits of "
             "gensim's search of the same scoring), stopping after a pass "
             f"without improvement. Start: `{r['start']}`. Training threads: {r['workers']} for each fitter. "
             f"Our batched SGD's own settings, fixed (library defaults): {r.get('ours_fixed', {})}.", "",
             "## grid", "", "| parameter | values |", "|---|---|"]
    lines += [f"| {k} | {', '.join(str(x) for x in v)}{' (encode-time, no refit)' if k in ENCODE_TIME else ''} |"
              for k, v in r["grid"].items()]
    lines += [f"| {k} (ours only) | {', '.join(str(x) for x in v)} |" for k, v in r["ours_only"].items()]
    lines += ["", "## best of each search", "",
              "| fitter | scoring | val NDCG@10 | val HR@10 | fits | evaluations | seconds | best setting | run |",
              "|---|---|---|---|---|---|---|---|---|"]
    for s in r["searches"]:
        b = s["budget"]
        setting = ", ".join(f"{k}={s['best'][k]}" for k in s["grid"])
        lines.append(f"| {s['fitter']} | {s['scoring']} | {s['val_ndcg_10']:.5f} | {s['val_hr_10']:.5f} | "
                     f"{b['fits']} | {b['evaluations']} | {b['seconds']} | {setting} | {s.get('run', '-')} |")
    lines += ["", "Chosen by validation (best over both scorings): "
              + "; ".join(f"{f}: scoring={c['scoring']}" for f, c in r["chosen"].items()), ""]
    for key in [k for k in r if k.startswith("optuna")]:  # recsys tune: each sampler and refinement run
        if r.get(key):
            lines += optuna_markdown(r[key], r["searches"])
    for s in r["searches"]:
        lines += [f"## trials: {s['fitter']}, {s['scoring']}", "",
                  "| pass | varied | " + " | ".join(s["grid"]) + " | val NDCG@10 | val HR@10 | fit s |",
                  "|---|---|" + "---|" * (len(s["grid"]) + 3)]
        for t in s["trials"]:
            tail = (f"{t['val_ndcg_10']:.5f} | {t['val_hr_10']:.5f} | {t['fit_s'] or ''}" if "error" not in t
                    else f"{t['error']} | | ")
            lines.append(f"| {t['pass']} | {t['vary']} | " + " | ".join(str(t[k]) for k in s["grid"]) + f" | {tail} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--search", choices=("optuna", "greedy"), default="optuna",
                    help="optuna: recsys tune of ours (default); greedy: the coordinate searches")
    ap.add_argument("--trials", type=int, default=36, help="optuna: trials the study holds at the end (default 36)")
    ap.add_argument("--sampler", choices=("tpe", "gp"), default="tpe",
                    help="optuna: recsys tune's sampler; each sampler's study is its own part of the report")
    ap.add_argument("--refine", type=float, default=REFINE_SHARE,
                    help=f"optuna: share of the trials spent on coordinate moves from the best (default "
                         f"{REFINE_SHARE:.3g}, recsys tune's); 0 = the sampler alone; each its own report part")
    ap.add_argument("--work", type=Path, default=REPO / "bench_runs" / "tune_item2vec",
                    help="optuna: the study's storage and MLflow store (a rerun continues the study)")
    ap.add_argument("--passes", type=int, default=3, help="coordinate passes at most (default 3)")
    ap.add_argument("--budget", type=int, default=36, help="fits a search may make at most (default 36)")
    ap.add_argument("--workers", type=int, default=2, help="training threads of each fitter (default 2)")
    ap.add_argument("--fitters", default=",".join(FITTERS), help="comma-separated: ours, gensim")
    ap.add_argument("--scorings", default=",".join(SCORINGS), help="comma-separated: in-in, in-out")
    ap.add_argument("--quick", action="store_true", help="two values per parameter, one pass: a smoke run")
    ap.add_argument("--out", type=Path, default=REPO / "experiments" / "reports")
    ap.add_argument("--merge", action="store_true", help="keep the existing report's searches that this run does "
                    "not repeat (same grid and start required)")
    ap.add_argument("--rewrite", action="store_true", help="fit nothing: regenerate the Markdown from the JSON")
    args = ap.parse_args(argv)
    from item2vec_common import load_set

    if args.quick:
        args.passes = 1
        for grid in (GRID, OURS_ONLY):
            for k in grid:
                grid[k] = grid[k][:2] if k not in ("epochs",) else [5]
    if args.rewrite:
        return rewrite(args.out / "tune_item2vec.json")
    run = ReportRun(argv=sys.argv[1:] if argv is None else argv)
    split = load_set("beauty")
    if args.search == "optuna":
        return run_optuna(args, split, run)
    results: dict = {
        "runs": [run.meta], "quick": args.quick, "passes": args.passes, "workers": args.workers, "start": START,
        "budget": args.budget, "grid": {k: list(v) for k, v in GRID.items()},
        "ours_only": {k: list(v) for k, v in OURS_ONLY.items()}, "searches": [],
        "ours_fixed": {k: getattr(Item2VecConfig(), k) for k in ("batch_size", "update", "shared_negatives")},
    }
    name = "tune_item2vec_quick" if args.quick else "tune_item2vec"
    previous = args.out / f"{name}.json"
    if args.merge and previous.is_file():
        old = json.loads(previous.read_text())
        if old["grid"] != results["grid"] or old["start"] != results["start"] or old["budget"] != args.budget:
            sys.exit(f"--merge: {previous} was made with another grid, start or budget; rerun every search")
        redo = {(f, sc) for f in args.fitters.split(",") for sc in args.scorings.split(",")}
        results["searches"] = [x for x in old["searches"] if (x["fitter"], x["scoring"]) not in redo]
        results = {**without_legacy_fields(old), **results, "runs": [*legacy_runs(old), run.meta]}
    for fitter in args.fitters.split(","):
        for scoring in args.scorings.split(","):
            budget = fits_like_gensim(results["searches"], fitter, scoring, args.budget)
            print(f"== {fitter} {scoring} (at most {budget} fits)", flush=True)
            results["searches"].append({**search(split, fitter, scoring, args.passes, budget, args.workers),
                                        "run": len(results["runs"])})
            results["chosen"] = chosen(results)
            run.finish()
            args.out.mkdir(parents=True, exist_ok=True)  # after every search: a long run leaves partial results
            atomic.write_text(args.out / f"{name}.json", json.dumps(results, indent=2))
            atomic.write_text(args.out / f"{name}.md", markdown(results))
    return results


def run_optuna(args: argparse.Namespace, split: SplitData, run: ReportRun) -> dict:
    """Add (or replace) the report's ``optuna`` part, keeping its greedy searches."""
    path = args.out / "tune_item2vec.json"
    if not path.is_file():
        sys.exit(f"{path} is missing: the optuna part is compared with the greedy searches recorded there")
    old = json.loads(path.read_text())
    results = {**without_legacy_fields(old), "runs": [*legacy_runs(old), run.meta]}
    key = ("optuna" if args.sampler == "tpe" else f"optuna_{args.sampler}") + (
        f"_refine{round(100 * args.refine)}" if args.refine else "")
    results[key] = {**optuna_search(split, args.trials, args.workers, args.work, args.sampler, args.refine),
                    "commit": run.meta["commit"] + ("+dirty" if run.meta["dirty"] else ""), "sampler": args.sampler,
                    "refine": args.refine, "command": run.meta["command"], "run": len(results["runs"])}
    run.finish()
    atomic.write_text(path, json.dumps(results, indent=2))
    atomic.write_text(args.out / "tune_item2vec.md", markdown(results))
    return results


def _run_ref(part: dict) -> str:
    return f"Run {part['run']}. " if "run" in part else ""


def _greedy_covers(command: str, search_: dict) -> bool:
    """Whether a greedy run's command line (as recorded) searched ``search_``'s fitter and scoring."""
    args = shlex.split(command)[2:]
    if "--search" in args and args[args.index("--search") + 1] != "greedy" or "--rewrite" in args:
        return False
    fitters = args[args.index("--fitters") + 1].split(",") if "--fitters" in args else list(FITTERS)
    scorings = args[args.index("--scorings") + 1].split(",") if "--scorings" in args else list(SCORINGS)
    return search_["fitter"] in fitters and search_["scoring"] in scorings


def rewrite(path: Path) -> dict:
    """Regenerate the report's Markdown from its JSON (a report from before the harness gets its runs list)."""
    old = json.loads(path.read_text())
    results = {**without_legacy_fields(old), "runs": legacy_runs(old)}
    for s in results["searches"]:
        if "run" not in s:  # the last greedy run whose --fitters and --scorings covered it (--merge kept the rest)
            s["run"] = max((i for i, m in enumerate(results["runs"], 1) if _greedy_covers(m["command"], s)),
                           default="-")
    atomic.write_text(path, json.dumps(results, indent=2))
    atomic.write_text(path.with_suffix(".md"), markdown(results))
    return results


if __name__ == "__main__":
    main()
