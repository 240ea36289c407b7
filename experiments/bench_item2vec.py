"""Benchmark: our PyTorch item2vec vs gensim Word2Vec, side by side in one run.

Same evaluation for both: gensim's input and output vectors go through our user encoder, our
scoring (in-in or in-out) and ``recsys.evaluation``'s full ranking; gensim ``workers=2, sg=1, hs=0``,
ours ``workers=2`` (two lock-free training threads like gensim's) unless ``--ours-workers`` says
otherwise. Data sets: ``experiments/item2vec_common.py`` (leave-last-out; fit on train, test with
test_history).

Parts (each writes into ``experiments/reports/bench_item2vec.{json,md}``):

* ``sets``: configurations chosen on Beauty *validation* by ``experiments/tune_item2vec.py`` run
  unchanged on the test splits of Beauty, Games, the MovieLens 1M sample, latest-small, 100K and the
  synthetic set (``--synthetic-events``, 5M): ours (the tuner's choice, which is the library
  default), gensim's best of each scoring, and gensim at our configuration (the throughput
  reference); ``--seeds`` seeds each, alternating; mean ± sd, and any learning-rate backoff of ours.
  With the library default not the tuner's choice, it and gensim at its settings are fitted too. A long set
  runs a seed at a time: ``--first-seed N --seeds 1 --merge`` pools its seed with the set's earlier ones.
  ``--rows`` fits only some rows (with ``--merge``): the library default's after a new default, whose gensim rows
  are unchanged, or more seeds for two rows; the other rows are kept and must run the same configuration.
* ``beauty``: Beauty with the fixed side-by-side hyperparameters (``SHARED``: dim 64, window 5,
  5 negatives, 5 epochs, ns_exponent 0.75, subsampling 1e-3; gensim at its default alpha);
  ours and gensim alternate ``--repeats`` times; medians and the throughput ratio.
* ``variants``: our design choices on Beauty (sparse vs dense updates, shared negatives, repeat cap, CBOW).
* ``workers``: our fit on Beauty with ``workers=1`` and ``workers=2``, alternating ``--repeats`` times.
* ``synthetic``: ``recsys.sources.synthetic`` with 5M events (one fit each).
* ``rules``: the row-update rules (Adagrad, Adagrad whose row accumulators decay, mean, capped, plain sum) at
  the library default otherwise, on the validation split of ``--rule-sets`` (``synthetic``: with
  ``--synthetic-events``); ``--rules`` picks some (``--merge`` keeps the other rows): how the default was chosen.
* ``throughput``: the library default (``Item2VecConfig()``) and gensim at the same hyperparameters and
  threads on each of ``--sets``, ``--repeats`` fits each, alternating; not part of the default ``--parts``.

Throughput = training events x epochs / fit seconds (fit = everything from the training
sequences to vectors: vocabulary/counts, sampling tables and all epochs; gensim's list-of-token
conversion is data preparation and not timed). The machine may be shared: figures are under
whatever contention there was, which is why the two sides alternate within one run.

    python experiments/bench_item2vec.py --quick        # small smoke run
    python experiments/bench_item2vec.py                # every part (hours on 2 cores: the sets part fits
                                                        # gensim 3 times a seed on the 5M synthetic set)
    python experiments/bench_item2vec.py --parts sets --sets beauty,games,ml-1m-sample,ml-latest-small,ml-100k
    python experiments/bench_item2vec.py --parts sets --sets synthetic --first-seed 1 --seeds 1 --merge  # seed 1
    python experiments/bench_item2vec.py --parts sets --rows "ours, library default" --merge   # after a new default
    python experiments/bench_item2vec.py --parts rules --report-name bench_item2vec_rules   # how the rule was chosen
    python experiments/bench_item2vec.py --parts rules --report-name bench_item2vec_rules --merge \
        --rules "adagrad;adagrad decay 0.99" --rule-sets beauty,synthetic --synthetic-events 1000000
    python experiments/bench_item2vec.py --parts throughput --sets beauty,games,ml-1m-sample,ml-latest-small,ml-100k \
        --repeats 3 --merge
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

sys.path.insert(0, str(REPO / "experiments"))

from harness import ReportRun, commit_now, legacy_runs, runs_header, without_legacy_fields  # noqa: E402
from item2vec_common import (  # noqa: E402
    METRICS,
    SETS,
    SYNTHETIC,
    fit,
    fit_gensim,
    fit_ours,
    load_set,
    load_synthetic,
    scores,
    sentences,
)

from recsys import atomic  # noqa: E402
from recsys.models.base import NaNLossError  # noqa: E402
from recsys.models.item2vec import Item2VecConfig  # noqa: E402
from recsys.prepare.split import SplitData  # noqa: E402

SHARED = {"dim": 64, "window": 5, "negatives": 5, "epochs": 5, "ns_exponent": 0.75, "subsample": 1e-3}


def side_by_side(split: SplitData, cfg: Item2VecConfig, repeats: int, workers: int) -> dict:
    """Ours and gensim alternately; median fit time, throughput ratio and test metrics of the last fit."""
    sents = sentences(split.train)
    gensim_cfg = dataclasses.replace(cfg, lr=0.025, min_lr=1e-4)  # gensim's own defaults (alpha, min_alpha)
    ev = split.train.n_events * cfg.epochs
    t_ours, t_gs = [], []
    for _ in range(repeats):
        ours, s = fit_ours(split.train, cfg)
        t_ours.append(s)
        gs, s = fit_gensim(split.train, sents, gensim_cfg, workers)
        t_gs.append(s)
        print(f"  ours {t_ours[-1]:.2f}s  gensim {t_gs[-1]:.2f}s", flush=True)
    mo, mg = statistics.median(t_ours), statistics.median(t_gs)
    return {
        "train_events": split.train.n_events, "fit_s_ours": t_ours, "fit_s_gensim": t_gs,
        "events_per_s_epoch_ours": ev / mo, "events_per_s_epoch_gensim": ev / mg,
        "throughput_ratio_ours_over_gensim": mg / mo,
        # the fastest fit of each: the least disturbed by other processes on a shared VM (timeit's rule)
        "throughput_ratio_best_of": min(t_gs) / min(t_ours),
        "test_ours": scores(ours, split.test_history, split.test_targets),
        "test_gensim": scores(gs, split.test_history, split.test_targets),
    }


def workers_ab(split: SplitData, base: Item2VecConfig, repeats: int) -> dict:
    """Our fit with workers=1 (one torch thread pool) and workers=2 (Hogwild threads), alternating."""
    t: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(repeats):
        for w in t:
            t[w].append(round(fit_ours(split.train, dataclasses.replace(base, workers=w))[1], 3))
        print(f"  workers=1 {t[1][-1]:.2f}s  workers=2 {t[2][-1]:.2f}s", flush=True)
    return {"fit_s": {str(w): v for w, v in t.items()},
            "speedup_median": statistics.median(t[1]) / statistics.median(t[2]),
            "speedup_best_of": min(t[1]) / min(t[2])}


def variants(split: SplitData, base: Item2VecConfig) -> dict:
    """Our design choices measured on the same split (one fit each, in one run)."""
    out = {}
    for name, kw in {
        "default": {}, "sparse=False (dense gradient)": {"sparse": False},
        "shared_negatives=1 (word2vec)": {"shared_negatives": 1}, "shared_negatives=8": {"shared_negatives": 8},
        "repeat_cap=0 (plain sum)": {"repeat_cap": 0}, "lr=0.025 (word2vec)": {"lr": 0.025},
        "num_threads=1": {"num_threads": 1, "workers": 1}, "cbow": {"mode": "cbow"},
        "workers=1 (one thread pool, deterministic)": {"workers": 1},
        "workers=2 (Hogwild threads)": {"workers": 2},
    }.items():
        model, s = fit_ours(split.train, dataclasses.replace(base, **kw))
        out[name] = {"fit_s": round(s, 3), **scores(model, split.test_history, split.test_targets)}
        print(f"  {name}: {out[name]}", flush=True)
    return out


NOTE = ("Timings are wall-clock on a 2-core VM that may be shared with other jobs (the load average at the start "
        "is recorded above), so single fits vary; the two sides alternate to share any contention. Gensim uses its "
        "default alpha 0.025 in the side-by-side parts (beauty, synthetic); the sets part runs each side at its "
        "tuned configuration. Gensim's fit time includes build_vocab, ours includes counting and the sampling tables.")
TUNE_REPORT = REPO / "experiments" / "reports" / "tune_item2vec.json"
OURS_ONLY = ("batch_size", "update")  # batched SGD's settings: gensim steps one pair at a time
# what the tuner varies or fixes: the library default must equal the tuned choice on these
TUNED = ("window", "negatives", "ns_exponent", "epochs", "dim", "subsample", "lr", "min_lr", "batch_size", "update",
         "user_decay", "scoring")


def tuned_configs(path: Path) -> dict[str, Item2VecConfig]:
    """Ours (the tuner's choice over both scorings) and gensim's best of each scoring, from the tune report."""
    if not path.is_file():
        sys.exit(f"{path} not found: run python experiments/tune_item2vec.py first")
    rep = json.loads(path.read_text())
    out = {"ours": Item2VecConfig(**rep["chosen"]["ours"])}
    for srch in rep["searches"]:
        if srch["fitter"] == "gensim":
            out[f"gensim {srch['scoring']}"] = Item2VecConfig(**srch["best"])
    return out


def sets_part(names: list[str], tuned: dict[str, Item2VecConfig], seeds: int, workers: int,
              synthetic_events: int, first_seed: int = 0, rows: list[str] | None = None) -> dict:
    """On each set's test split, with configs chosen on Beauty validation and not changed: ours (the tuner's
    choice), gensim's best of each scoring, and gensim at our configuration (the throughput reference); where the
    library default differs from the tuner's choice, it and gensim at its settings too (the default's verdict and
    throughput; gensim at any configuration counts among its candidates for gensim's best).
    The four fits of a seed alternate; metrics are means over the ``seeds`` seeds ``first_seed``,
    ``first_seed + 1``, ... (a long set can be run a seed at a time: :func:`merge_sets` pools the seeds of runs at
    the same configurations). A fit that diverges (NaNLossError) is recorded as such and its model scores nothing
    on that set. ``rows``: fit only these rows (labels); each set then holds their fits alone, unsummarised, for
    :func:`merge_rows` to join with the report's other rows."""
    ours = dataclasses.replace(tuned["ours"], workers=workers)
    default = dataclasses.replace(Item2VecConfig(), workers=workers)
    plan = [("ours", "ours", ours), *[(k, "gensim", v) for k, v in tuned.items() if k.startswith("gensim")],
            ("gensim at our config", "gensim", ours)]
    if default != ours:  # the library default is the tuned choice once it ships; no second fit of the same thing
        plan += [("ours, library default", "ours", default), ("gensim at the library default", "gensim", default)]
    out: dict = {"seeds": seeds, "default_is_ours": default == ours,
                 "configs": {label: {k: getattr(cfg, k) if fitter == "ours" or k not in OURS_ONLY else "-"
                                     for k in TUNED} for label, fitter, cfg in plan},
                 # every setting of our rows (the row rule too, which TUNED's table leaves out): merges compare it
                 "full_configs": {label: {k: v for k, v in dataclasses.asdict(cfg).items() if k != "seed"}
                                  for label, fitter, cfg in plan if fitter == "ours"}}
    if rows is not None:
        unknown = [r for r in rows if r not in out["configs"]]
        if unknown:
            raise SystemExit(f"--rows: no row {', '.join(map(repr, unknown))} in the sets part; its rows at this "
                             f"commit: {'; '.join(out['configs'])}")
        plan = [x for x in plan if x[0] in rows]
    for name in names:
        split = load_set(name, synthetic_events)
        sents = sentences(split.train)
        runs: dict[str, list] = {label: [] for label, _, _ in plan}
        for seed in range(first_seed, first_seed + seeds):
            for label, fitter, cfg in plan:
                try:
                    model, sec = fit(fitter, split.train, dataclasses.replace(cfg, seed=seed), sents, workers)
                except NaNLossError as exc:
                    runs[label].append({"seed": seed, "fit_s": None, "diverged": str(exc).split(";")[0],
                                        **dict.fromkeys(METRICS, 0.0)})
                    print(f"  {name} seed {seed} {label}: diverged ({exc})", flush=True)
                    continue
                runs[label].append({"seed": seed, "fit_s": round(sec, 3),
                                    "lr_backoffs": len(getattr(model, "lr_backoffs", [])),
                                    **scores(model, split.test_history, split.test_targets),
                                    "user_decay": model.user_decay})  # what "auto" chose, if it is auto
                print(f"  {name} seed {seed} {label}: {runs[label][-1]}", flush=True)
        out[name] = {"train_events": split.train.n_events, "users": split.n_users, "items": split.n_items,
                     **({"runs": runs} if rows is not None else
                        summarize_set(runs, split.train.n_events, out["configs"], out["default_is_ours"])),
                     "commit": STARTED_AT}  # the code this process loaded, not whatever HEAD is when a set ends
        if name == SYNTHETIC:
            out[name]["synthetic_events"] = synthetic_events
    return out


def summarize_set(runs: dict[str, list[dict]], train_events: int, configs: dict[str, dict],
                  default_is_ours: bool) -> dict:
    """One set's verdicts from its fits (``runs``: label -> one record per seed): mean ± sd per model, gensim's
    best, whether ours and the library default reach it, and the throughput ratios (median fits)."""
    mean = {label: {m: round(statistics.mean(r[m] for r in rs), 5) for m in METRICS} for label, rs in runs.items()}
    sd = {label: {m: round(statistics.stdev([r[m] for r in rs]), 5) if len(rs) > 1 else 0.0 for m in METRICS}
          for label, rs in runs.items()}
    gensim = [k for k in mean if k.startswith("gensim")]
    best = max(gensim, key=lambda k: mean[k]["ndcg_10"])
    t_ours, t_gs = _median_fit(runs["ours"]), _median_fit(runs["gensim at our config"])
    ev = train_events * configs["ours"]["epochs"]
    mine = "ours" if default_is_ours else "ours, library default"  # what the must-show judges: the default
    t_def = _median_fit(runs[mine])
    t_gs_def = t_gs if default_is_ours else _median_fit(runs["gensim at the library default"])
    ev_def = train_events * configs[mine]["epochs"]
    return {
        "runs": runs, "mean": mean, "sd": sd, "gensim_best": best,
        "diverged": {label: sum("diverged" in r for r in rs) for label, rs in runs.items()},
        "ours_at_least_gensim_best": {m: mean["ours"][m] >= mean[best][m] for m in ("ndcg_10", "hr_10")},
        "ours_at_least_every_gensim": {m: all(mean["ours"][m] >= mean[k][m] for k in gensim)
                                       for m in ("ndcg_10", "hr_10")},
        "events_per_s_epoch_ours": ev / t_ours, "events_per_s_epoch_gensim": ev / t_gs,
        "throughput_ratio_ours_over_gensim": t_gs / t_ours,
        "default_at_least_gensim_best": {m: mean[mine][m] >= mean[best][m] for m in ("ndcg_10", "hr_10")},
        "events_per_s_epoch_default": ev_def / t_def, "events_per_s_epoch_gensim_at_default": ev_def / t_gs_def,
        "throughput_ratio_default_over_gensim": t_gs_def / t_def,
        "seeds": min(len(rs) for rs in runs.values()),
        "row_seeds": {label: [r["seed"] for r in rs] for label, rs in runs.items()},
    }


def _median_fit(runs: list[dict]) -> float:
    """Median fit seconds of the runs that did not diverge (NaN when all did)."""
    return statistics.median([r["fit_s"] for r in runs if r["fit_s"]] or [float("nan")])


def throughput_part(names: list[str], repeats: int, workers: int, synthetic_events: int) -> dict:
    """The library default against gensim at the same hyperparameters and thread count on each set, fits
    alternating (which side goes first alternates too); events per second of an epoch from the median fits.
    The last fit of each side is scored on the test split as a check that both trained."""
    cfg = dataclasses.replace(Item2VecConfig(), workers=workers)
    # the row rule's own settings too (TUNED keys the sets part's configurations, which merges compare)
    out: dict = {"config": {k: getattr(cfg, k) for k in (*TUNED, "adagrad_decay", "adagrad_decay_per", "adagrad_eps",
                                                     "skip_target_negatives", "saturate")},
                 "repeats": repeats, "workers": workers,
                 "commit": STARTED_AT}
    for name in names:
        split = load_set(name, synthetic_events)
        sents = sentences(split.train)
        secs: dict[str, list[float]] = {"ours": [], "gensim": []}
        last = {}
        for r in range(repeats):
            for fitter in (("ours", "gensim") if r % 2 == 0 else ("gensim", "ours")):
                last[fitter], sec = fit(fitter, split.train, cfg, sents, workers)
                secs[fitter].append(round(sec, 3))
            print(f"  {name} round {r + 1}: ours {secs['ours'][-1]:.2f}s  gensim {secs['gensim'][-1]:.2f}s", flush=True)
        ev = split.train.n_events * cfg.epochs
        med = {k: statistics.median(v) for k, v in secs.items()}
        out[name] = {"train_events": split.train.n_events, "fit_s": secs,
                     "events_per_s_epoch": {k: ev / v for k, v in med.items()},
                     "throughput_ratio_ours_over_gensim": med["gensim"] / med["ours"],
                     "test_ndcg_10_last_fit": {k: scores(m, split.test_history, split.test_targets)["ndcg_10"]
                                               for k, m in last.items()}}
    return out


def throughput_markdown(r: dict) -> list[str]:
    lines = ["## Throughput: the library default vs gensim at the same hyperparameters and threads", "",
             f"Configuration (`Item2VecConfig()`): {r['config']}; {r['workers']} worker threads each; {r['repeats']} "
             f"fits per side and set, alternating; commit {r['commit']}.", "",
             "| set | training events | ours events/s per epoch | gensim events/s per epoch | ours / gensim | "
             "fit s ours (median) | fit s gensim (median) | test NDCG@10 of the last fit (ours, gensim) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, p in ((k, v) for k, v in r.items() if isinstance(v, dict) and "fit_s" in v):
        e, t = p["events_per_s_epoch"], p["test_ndcg_10_last_fit"]
        lines.append(f"| {name} | {p['train_events']} | {e['ours']:,.0f} | {e['gensim']:,.0f} | "
                     f"{p['throughput_ratio_ours_over_gensim']:.2f}x | {statistics.median(p['fit_s']['ours']):.2f} | "
                     f"{statistics.median(p['fit_s']['gensim']):.2f} | {t['ours']:.4f}, {t['gensim']:.4f} |")
    return [*lines, ""]


def merge_sets(old: dict | None, new: dict, run: int | None = None) -> dict:
    """``new``'s sets, plus those of ``old`` it did not rerun (same configurations required). A set in both, at the
    same configurations and size, whose seeds do not overlap, pools its fits: the seeds of both runs, summarised
    again, with each run's commit (a set run a seed at a time). ``run``: this run's number in the report."""
    if not old:
        return new
    if not _same_configs(old, new):
        dropped = sorted(k for k, v in old.items() if isinstance(v, dict) and "mean" in v and k not in new)
        if dropped:  # the old sets no longer describe these configurations: said, not silently lost
            print(f"merge: this sets part ran other configurations than the report's (another library default or "
                  f"tuner's choice); the sets it did not rerun are dropped: {', '.join(dropped)}", file=sys.stderr)
        return new
    merged = {**new}
    for name, p in new.items():
        o = old.get(name)
        if not (isinstance(p, dict) and "mean" in p and isinstance(o, dict) and "mean" in o):
            continue
        if _seeds_of(o) & _seeds_of(p) or not _same_size(o, p):
            continue  # a rerun of the same seeds (or another data size) replaces the set
        runs = {label: sorted(o["runs"][label] + p["runs"][label], key=lambda r: r["seed"]) for label in p["runs"]}
        merged[name] = {**p, **summarize_set(runs, p["train_events"], new["configs"], new["default_is_ours"]),
                        **_provenance(o, p, p.get("run", run if run is not None else "-"))}
    kept = {k: v for k, v in old.items() if isinstance(v, dict) and "mean" in v and k not in new}
    return {**merged, **kept}


def _same_size(o: dict, p: dict) -> bool:
    """Whether two runs of a set fitted the same data: its generated size, and its train events, users and items."""
    return o.get("synthetic_events") == p.get("synthetic_events") \
        and (o["train_events"], o["users"], o["items"]) == (p["train_events"], p["users"], p["items"])


def _provenance(o: dict, p: dict, run: object) -> dict:
    """The ``commit`` and ``run`` fields of a set that pools ``o``'s fits with ``p``'s (``run``: ``p``'s runs), each
    listed once in order."""
    return {"commit": ", ".join(dict.fromkeys([*o["commit"].split(", "), p["commit"]])),
            "run": ", ".join(dict.fromkeys([*str(o.get("run", "-")).split(", "), *str(run).split(", ")]))}


def _same_row(old: dict, new: dict, label: str) -> bool:
    """Whether two sets parts ran row ``label`` at the same configuration: the table's settings and, where both
    recorded ``full_configs``, every setting (the row rule, say). A setting that one record lacks (an
    ``Item2VecConfig`` field added after it was written) counts as the value every fit had before the field existed
    (:data:`ADDED_FIELDS`), whatever its default is now."""
    if old.get("configs", {}).get(label) != new.get("configs", {}).get(label):
        return False
    a, b = old.get("full_configs", {}), new.get("full_configs", {})
    return label not in a or label not in b or _with_defaults(a[label]) == _with_defaults(b[label])


def _same_configs(old: dict, new: dict) -> bool:
    """Whether two sets parts ran the same configurations, row by row (:func:`_same_row`); a part written before
    ``full_configs`` were recorded is compared on ``configs`` alone."""
    if old.get("configs") != new.get("configs"):
        return False
    if "full_configs" not in old or "full_configs" not in new:
        return True
    return old["full_configs"].keys() == new["full_configs"].keys() \
        and all(_same_row(old, new, label) for label in old["full_configs"])


#: ``Item2VecConfig`` fields added after sets parts were recorded, at the value every fit had before the field
#: existed (a later change of a field's default must not change what an old record means)
ADDED_FIELDS = {"adagrad_eps": 1e-10, "skip_target_negatives": False, "saturate": 0.0}


def _with_defaults(settings: dict) -> dict:
    """``settings`` (one row of ``full_configs``) with every ``Item2VecConfig`` field it lacks at the value fits had
    before the field existed (:data:`ADDED_FIELDS`; any other at its default)."""
    defaults = {f.name: f.default for f in dataclasses.fields(Item2VecConfig) if f.name != "seed"}
    return {**defaults, **ADDED_FIELDS, **settings}


def merge_rows(old: dict | None, new: dict, rows: list[str], run: int) -> dict:
    """``--rows``: ``new`` (:func:`sets_part` with ``rows``) fitted only ``rows`` of each of its sets; the report's
    sets part ``old`` gives every other row, which must run the same configuration at this commit (a row whose
    configuration changed, the library default's after a new default say, must be among ``rows``). A fitted row
    pools its seeds with the report's runs of it at the same configuration (a seed fitted again replaces its run)
    and replaces them at another. Sets ``new`` did not touch are kept; each set is summarised again."""
    if not old or not any(isinstance(v, dict) and "mean" in v for v in old.values()):
        raise SystemExit("--rows: needs --merge and a report whose sets part has the rows not fitted")
    stale = [label for label in new["configs"] if label not in rows and not _same_row(old, new, label)]
    if stale:
        raise SystemExit(f"--rows: the report's {'; '.join(stale)} ran another configuration than this commit's; "
                         "fit them too (add them to --rows)")
    merged = {**old, **{k: new[k] for k in ("configs", "full_configs", "default_is_ours")}}
    for name, p in new.items():
        if not (isinstance(p, dict) and "runs" in p):
            continue
        o = old.get(name)
        if not (isinstance(o, dict) and "mean" in o) or not _same_size(o, p):
            raise SystemExit(f"--rows: the report has no {name} set of this size to add rows to; fit its every row "
                             "first (without --rows)")
        runs = {}
        for label in new["configs"]:
            if label not in rows:
                runs[label] = o["runs"][label]
                continue
            fitted = {r["seed"] for r in p["runs"][label]}
            kept = [r for r in o["runs"].get(label, []) if r.get("seed") not in fitted] \
                if _same_row(old, new, label) else []
            runs[label] = sorted(kept + p["runs"][label], key=lambda r: r["seed"])
        merged[name] = {**o, **summarize_set(runs, p["train_events"], new["configs"], new["default_is_ours"]),
                        **_provenance(o, p, run)}
    return merged


def merge_from(report: dict, other: dict) -> dict:
    """``report`` with the sets part of ``other``, a report of this script written elsewhere (another worktree or
    machine: a long set run beside the others), merged in as :func:`merge_sets` merges a later run: ``other``'s
    runs are appended to the run list and its sets' run numbers shifted to match; where ``other`` began as a copy of
    ``report`` (run there with ``--merge``), the runs they share are not repeated. The configurations must agree."""
    if "sets" not in other:
        raise SystemExit("--merge-from: that report has no sets part to merge")
    if "sets" in report and not _same_configs(report["sets"], other["sets"]):
        raise SystemExit("--merge-from: the two reports' sets parts ran other configurations (another library "
                         "default or tuner's choice); rerun one of them at the other's commit")
    mine, theirs = legacy_runs(report), legacy_runs(other)
    # ``other`` may have been written with --merge on a copy of this report: the runs the two share at the start are
    # this report's own, kept once and not renumbered; only ``other``'s later runs are appended
    common = 0
    while common < min(len(mine), len(theirs)) and mine[common] == theirs[common]:
        common += 1
    shift = len(mine) - common

    def renumber(n: str) -> str:
        return str(int(n) + shift if int(n) > common else int(n))

    sets = {name: {**p, "run": ", ".join(renumber(n) for n in str(p.get("run", 1)).split(", "))}
            if isinstance(p, dict) and "mean" in p else p for name, p in other["sets"].items()}
    runs = [*mine, *theirs[common:]]
    return {**without_legacy_fields(report), "runs": runs, "sets": merge_sets(report.get("sets"), sets),
            "part_runs": {**report.get("part_runs", {}), "sets": len(runs)}}


def _seeds_of(p: dict) -> set[int]:
    """The seeds a set's fits used (a report from before per-fit seeds ran 0, 1, ...)."""
    rs = next(iter(p["runs"].values()))
    return {r.get("seed", i) for i, r in enumerate(rs)}


#: the row-update rules compared by the ``rules`` part, each at the library default otherwise (and how many pairs share
#: a draw of negatives, whose rows then sum that many pairs' gradients)
RULES = {"adagrad": {"update": "adagrad", "adagrad_decay": 1.0},
         "adagrad decay 0.999": {"update": "adagrad", "adagrad_decay": 0.999},
         "adagrad decay 0.99": {"update": "adagrad", "adagrad_decay": 0.99},
         # the decay at every training step, the row's or not (dense RMSprop's forgetting): rarely drawn rows forget
         # between their draws
         "adagrad decay 0.999 per step": {"update": "adagrad", "adagrad_decay": 0.999, "adagrad_decay_per": "step"},
         # word2vec's rule: a negative drawn equal to its pair's target is left out of the loss and the step
         "adagrad decay 0.999 per step, skip target negatives": {"update": "adagrad", "adagrad_decay": 0.999,
                                                                 "adagrad_decay_per": "step",
                                                                 "skip_target_negatives": True},
         # word2vec's MAX_EXP rule (gensim's too): a term whose score has |s| >= 6 moves no row
         "adagrad decay 0.999 per step, saturate 6": {"update": "adagrad", "adagrad_decay": 0.999,
                                                      "adagrad_decay_per": "step", "saturate": 6.0},
         # a floor eps under the square root of the accumulator (step lr * g / (sqrt(G) + eps)): rows whose recent
         # gradients are small next to eps take SGD-like steps, proportional to their gradient
         **{f"adagrad decay 0.999 per step, eps {eps}": {"update": "adagrad", "adagrad_decay": 0.999,
                                                         "adagrad_decay_per": "step", "adagrad_eps": eps}
            for eps in (0.003, 0.005, 0.01)},
         # fewer pairs per step: fewer of a row's gradients summed into one step, from weights less stale (the
         # default steps 4096 pairs)
         **{f"adagrad decay 0.999 per step, batch_size {b}": {"update": "adagrad", "adagrad_decay": 0.999,
                                                              "adagrad_decay_per": "step", "batch_size": b}
            for b in (1024, 2048)},
         "adagrad decay 0.9": {"update": "adagrad", "adagrad_decay": 0.9},
         "mean": {"update": "mean"},
         "capped, repeat_cap 16 (the earlier rule)": {"update": "capped", "repeat_cap": 16},
         "capped, repeat_cap 0 (plain sum)": {"update": "capped", "repeat_cap": 0},
         # more pairs per draw of negatives: fewer negative rows gathered and summed per step (faster), each summing
         # more pairs' gradients (the default shares one draw among 16)
         "adagrad decay 0.999, shared_negatives 32": {"update": "adagrad", "adagrad_decay": 0.999,
                                                      "shared_negatives": 32},
         "adagrad decay 0.999, shared_negatives 64": {"update": "adagrad", "adagrad_decay": 0.999,
                                                      "shared_negatives": 64}}


LEGACY_RULES = {"adagrad (default)": "adagrad"}  # labels of earlier reports


def rules_part(names: list[str], seeds: int, workers: int, labels: list[str] | None = None,
               synthetic_events: int = 5_000_000) -> dict:
    """The row-update rules (:mod:`recsys.models.row_updates`; ``labels``: those of :data:`RULES`, default all)
    at the library default otherwise, on each set's *validation* split: NDCG@10 / HR@10 (mean over ``seeds``),
    fit seconds, divergence (no backoff allowed)."""
    unknown = set(labels or ()) - set(RULES)
    if unknown:
        raise SystemExit(f"unknown rule(s) {sorted(unknown)}; known: {', '.join(RULES)}")
    out: dict = {"seeds": seeds, "rules": RULES, "synthetic_events": synthetic_events}
    for name in names:
        split = load_set(name, synthetic_events)
        rows: dict = {}
        for label, kw in RULES.items():
            if labels and label not in labels:
                continue
            got = []
            for seed in range(seeds):
                cfg = dataclasses.replace(Item2VecConfig(), **kw, seed=seed, max_backoffs=0)
                try:
                    model, sec = fit_ours(split.train, dataclasses.replace(cfg, workers=workers))
                except NaNLossError as exc:
                    got.append({"diverged": str(exc).split(";")[0]})
                    continue
                res = scores(model, split.valid_history, split.valid_targets)
                got.append({"fit_s": round(sec, 2), "val_ndcg_10": res["ndcg_10"], "val_hr_10": res["hr_10"]})
            ok = [g for g in got if "diverged" not in g]
            rows[label] = {"runs": got, "diverged": len(got) - len(ok),
                           **{k: round(statistics.mean(g[k] for g in ok), 5) if ok else None
                              for k in ("val_ndcg_10", "val_hr_10", "fit_s")}}
            if name == SYNTHETIC:  # per row: a merge may hold rows of runs at other sizes
                rows[label]["synthetic_events"] = synthetic_events
            print(f"  {name} {label}: {rows[label]}", flush=True)
        out[name] = rows
    return out


def merge_rules(old: dict | None, new: dict, run: int) -> dict:
    """``new``'s rows (each marked with ``run``) over ``old``'s: rows of rules or sets not rerun are kept."""
    for name, rows in new.items():
        if isinstance(rows, dict) and name != "rules":
            for v in rows.values():
                v.setdefault("run", run)
    if not old:
        return new
    merged = {**old, **{k: v for k, v in new.items() if k in ("seeds", "rules", "synthetic_events")}}
    for name, rows in old.items():  # rows of earlier runs under the labels they had
        if isinstance(rows, dict) and name != "rules":
            merged[name] = {LEGACY_RULES.get(label, label): v for label, v in rows.items()}
    for name, rows in new.items():
        if isinstance(rows, dict) and name != "rules":
            merged[name] = {**merged.get(name, {}), **rows}
    return merged


def _row_events(v: dict, runs: list[dict]) -> int:
    """The synthetic event count a rules row was fitted on: its own record, else its run's command (rows written
    before per-row records; the report's top-level ``synthetic_events`` is only the latest run's)."""
    if "synthetic_events" in v:
        return v["synthetic_events"]
    run = int(str(v.get("run", 1)).split(", ")[-1])
    argv = shlex.split(runs[run - 1]["command"]) if 0 < run <= len(runs) else []
    if "--synthetic-events" in argv:
        return int(argv[argv.index("--synthetic-events") + 1])
    return 200_000 if "--quick" in argv else 5_000_000


def rules_markdown(r: dict, runs: list[dict] | None = None) -> list[str]:
    lines = ["## Row-update rules at the library default (validation split)", "",
             "Each rule with every other setting at `Item2VecConfig()`, no learning-rate backoff allowed; mean over "
             "the seeds of the row's runs. The rule is chosen on validation; a diverged fit is counted, not scored. "
             "run: the run (listed above) that fitted the row; each run fitted at the library default of its "
             "commit (its other settings changed over time), so rules are compared within one run.", "",
             "| set | rule | val NDCG@10 | val HR@10 | fit s | diverged | seeds | run |",
             "|---|---|---|---|---|---|---|---|"]
    for name, rows in r.items():
        if not isinstance(rows, dict) or name == "rules":
            continue
        for rule, v in rows.items():
            label = f"{name} ({_row_events(v, runs or []):,} events)" if name == SYNTHETIC else name
            fit_s = "-" if v["fit_s"] is None else f"{v['fit_s']:.1f}"  # mean over the seeds
            lines.append(f"| {label} | {rule} | {_fmt4(v['val_ndcg_10'])} | {_fmt4(v['val_hr_10'])} | {fit_s} | "
                         f"{v['diverged']} of {len(v['runs'])} | "
                         f"{len(v['runs'])} | {v.get('run', 1)} |")
    return [*lines, ""]


def _fmt4(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def write_reports(out: Path, results: dict, stem: str = "bench_item2vec") -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, text in ((f"{stem}.json", json.dumps(results, indent=2, default=float)),
                       (f"{stem}.md", markdown(results))):
        atomic.write_text(out / name, text)


def sets_markdown(r: dict) -> list[str]:
    lines = ["## Beauty-chosen configurations, unchanged, on every set (test split)", "",
             "Ours = the tuner's choice on Beauty validation (`experiments/reports/tune_item2vec.md`). "
             "Gensim: its best configuration of each scoring from the same "
             "search, and gensim at our configuration (same hyperparameters; the throughput reference). Where the "
             "library default is not the tuner's choice, it is fitted too, with gensim at its settings (its "
             "throughput reference); gensim's best is the best gensim row of the set, whichever configuration. "
             "Metrics are mean ± sd over the seeds each heading names; each seed's fits alternate; a fit that diverged "
             "(NaN) counts as 0.", "",
             "| configuration | " + " | ".join(TUNED) + " |", "|---|" + "---|" * len(TUNED)]
    lines += [f"| {label} | " + " | ".join(str(c[k]) for k in TUNED) + " |" for label, c in r["configs"].items()]
    lines.append("")
    if "full_configs" in r:
        lines += ["Row rule of our rows: " + "; ".join(
            (f"{label} adagrad_decay {c['adagrad_decay']} per {c['adagrad_decay_per']}" if c["update"] == "adagrad"
             else f"{label} {c['update']}") + (f", saturate {c['saturate']}" if c.get("saturate") else "")
            for label, c in r["full_configs"].items()) + ".", ""]
    order = [*SETS, SYNTHETIC]  # the sets in one order, however the runs that wrote them were merged
    names = sorted((k for k in r if isinstance(r[k], dict) and "mean" in r[k]),
                   key=lambda k: order.index(k) if k in order else len(order))
    for name in names:
        p = r[name]
        counts = sorted({len(rs) for rs in p["runs"].values()})  # rows added with --rows may have more seeds
        n_seeds = f"{counts[0]}-{counts[-1]} seeds, per row below" if len(counts) > 1 else \
            f"{counts[0]} seed{'s' if counts[0] > 1 else ''}"
        lines += [f"### {name} ({p['users']} users, {p['items']} items, {p['train_events']} training events; "
                  f"{n_seeds}, commit {p.get('commit', '?')}, run {p.get('run', '-')})", "",
                  "| | " + " | ".join(f"test {m}" for m in METRICS) + " | fit s (median) | lr backoffs |"
                  + (" seeds |" if len(counts) > 1 else ""),
                  "|---|" + "---|" * (len(METRICS) + 2 + (len(counts) > 1))]
        sd = p.get("sd", {})
        for label, m in p["mean"].items():
            times = [x["fit_s"] for x in p["runs"][label] if x["fit_s"]]
            fit_s = f"{statistics.median(times):.2f}" if times else "-"
            mark = " (gensim's best)" if label == p["gensim_best"] else ""
            bad = p["diverged"][label]
            mark += f" **diverged in {bad} of {len(p['runs'][label])} seeds**" if bad else ""
            cells = [f"{m[k]:.4f}" + (f" ± {sd[label][k]:.4f}" if label in sd else "") for k in METRICS]
            backoffs = sum(x.get("lr_backoffs", 0) for x in p["runs"][label]) if label.startswith("ours") else "-"
            seeds = f" {', '.join(str(x.get('seed', '?')) for x in p['runs'][label])} |" if len(counts) > 1 else ""
            lines.append(f"| {label}{mark} | " + " | ".join(cells) + f" | {fit_s} | {backoffs} |" + seeds)
        chose = [f"{label} " + ", ".join(str(x["user_decay"]) for x in p["runs"][label])
                 for label, c in r["configs"].items() if c["user_decay"] == "auto" and label in p["runs"]
                 and all("user_decay" in x for x in p["runs"][label])]
        lines += ["", f"user_decay \"auto\" chose, per seed: {'; '.join(chose)}."] if chose else []
        b = p["mean"][p["gensim_best"]]
        lines += ["", f"ours / gensim's best: NDCG@10 {p['mean']['ours']['ndcg_10'] / max(b['ndcg_10'], 1e-12):.3f}, "
                  f"HR@10 {p['mean']['ours']['hr_10'] / max(b['hr_10'], 1e-12):.3f}; ours at least gensim's best: "
                  f"{p['ours_at_least_gensim_best']}; "
                  + ("ours is the library default; " if r.get("default_is_ours") else
                     "library default at least gensim's best: "
                     f"{ {m: p['mean']['ours, library default'][m] >= b[m] for m in ('ndcg_10', 'hr_10')} }; ")
                  + "throughput ours / gensim at our config: "
                  f"{p['throughput_ratio_ours_over_gensim']:.2f}x ({p['events_per_s_epoch_ours']:.0f} vs "
                  f"{p['events_per_s_epoch_gensim']:.0f} events/s per epoch, median fits)"
                  + ("" if r.get("default_is_ours") or "throughput_ratio_default_over_gensim" not in p else
                     "; throughput library default / gensim at the library default: "
                     f"{p['throughput_ratio_default_over_gensim']:.2f}x ({p['events_per_s_epoch_default']:.0f} vs "
                     f"{p['events_per_s_epoch_gensim_at_default']:.0f} events/s per epoch, median fits)"), ""]
    return lines


def markdown(r: dict) -> str:
    lines = ["# item2vec (PyTorch) vs gensim Word2Vec", "", *runs_header(r["runs"])]
    if r.get("part_runs") and len(r["runs"]) > 1:
        lines += ["Runs that wrote each part: " + "; ".join(f"{k}: run {n}" for k, n in r["part_runs"].items())
                  + ".", ""]
    if "sets" in r:
        lines += sets_markdown(r["sets"])
    if "rules" in r:
        lines += rules_markdown(r["rules"], r["runs"])
    if "throughput" in r:
        lines += throughput_markdown(r["throughput"])
    lines += [f"Side-by-side hyperparameters (parts beauty, synthetic, variants, workers): {r['shared']}", ""]
    for part in ("beauty", "synthetic"):
        if part in r:
            p = r[part]
            lines += [f"## {part} ({p['train_events']} training events)", "",
                      "| | ours | gensim | ratio ours/gensim |", "|---|---|---|---|",
                      f"| fit s (median) | {statistics.median(p['fit_s_ours']):.2f} | "
                      f"{statistics.median(p['fit_s_gensim']):.2f} | |",
                      f"| fit s (fastest of {len(p['fit_s_ours'])}) | {min(p['fit_s_ours']):.2f} | "
                      f"{min(p['fit_s_gensim']):.2f} | {p.get('throughput_ratio_best_of', 0):.2f}x |",
                      f"| events/s per epoch (median fit) | {p['events_per_s_epoch_ours']:.0f} | "
                      f"{p['events_per_s_epoch_gensim']:.0f} | {p['throughput_ratio_ours_over_gensim']:.2f}x |"]
            lines += [f"| test {m} | {p['test_ours'][m]:.4f} | {p['test_gensim'][m]:.4f} | "
                      f"{p['test_ours'][m] / max(p['test_gensim'][m], 1e-12):.2f} |" for m in METRICS]
            lines.append("")
    if "variants" in r:
        lines += ["## our variants (Beauty test, one fit each, side-by-side hyperparameters)", "",
                  "| variant | fit s | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
        lines += [f"| {k} | {v['fit_s']} | " + " | ".join(f"{v[m]:.4f}" for m in METRICS) + " |"
                  for k, v in r["variants"].items()]
        lines.append("")
    if "workers" in r:
        w = r["workers"]
        lines += ["## our training threads (Beauty, alternating fits)", "",
                  "| workers | fit s (median) | fit s (fastest) |", "|---|---|---|"]
        lines += [f"| {k} | {statistics.median(v):.2f} | {min(v):.2f} |" for k, v in w["fit_s"].items()]
        lines += ["", f"workers=2 over workers=1: {w['speedup_median']:.2f}x (medians), "
                  f"{w['speedup_best_of']:.2f}x (fastest)", ""]
    lines += ["## notes", "", NOTE]
    return "\n".join(lines) + "\n"


#: the commit (and whether the tree differed from it) when this process started and loaded its code
STARTED_AT = commit_now()


def _parts_of(command: str) -> tuple[set[str], set[str]] | None:
    """The ``--parts`` and ``--sets`` a recorded command line ran (``None``: no ``--parts``, whose default then is
    not recorded)."""
    args = shlex.split(command)[2:]
    if "--parts" not in args or "--rewrite" in args:
        return None
    sets = args[args.index("--sets") + 1].split(",") if "--sets" in args else [*SETS, SYNTHETIC]
    return set(args[args.index("--parts") + 1].split(",")), set(sets)


def rewrite(path: Path) -> dict:
    """Regenerate the Markdown from the JSON. A report from before the harness gets its runs list, and each part
    the last run whose ``--parts`` (and, for a data set of the sets part, ``--sets``) named it (``--merge`` kept
    the others' parts)."""
    old = json.loads(path.read_text())
    results = {**without_legacy_fields(old), "runs": legacy_runs(old)}
    ran = [(i, _parts_of(m["command"])) for i, m in enumerate(results["runs"], 1)]
    part_runs = results.setdefault("part_runs", {})
    for part, value in list(results.items()):
        if isinstance(value, dict) and part not in ("shared", "ours_config", "part_runs"):
            last = [i for i, p in ran if p and part in p[0]]
            if last and part not in part_runs:
                part_runs[part] = last[-1]
            if part == "sets":
                for name, per_set in value.items():
                    if isinstance(per_set, dict) and "mean" in per_set and "run" not in per_set:
                        last = [i for i, p in ran if p and "sets" in p[0] and name in p[1]]
                        per_set["run"] = last[-1] if last else "-"
    write_reports(path.parent, results, path.stem)
    return results


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small smoke run: 1 repeat, 200k synthetic events, 1 seed")
    ap.add_argument("--repeats", type=int, default=7, help="alternating ours/gensim fits on Beauty")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per model and set in the sets part")
    ap.add_argument("--first-seed", type=int, default=0, help="the sets part's seeds are first-seed, first-seed + 1, "
                    "...; with --merge a set's earlier seeds are kept and pooled (run a long set a seed at a time)")
    ap.add_argument("--sets", default=",".join([*SETS, SYNTHETIC]),
                    help=f"data sets of the sets part ({', '.join([*SETS, SYNTHETIC])}; synthetic: --synthetic-events)")
    ap.add_argument("--synthetic-events", type=int, default=5_000_000)
    ap.add_argument("--parts", default="sets,beauty,variants,workers,synthetic", help="comma-separated parts to run")
    ap.add_argument("--workers", type=int, default=2, help="gensim worker threads")
    ap.add_argument("--ours-workers", type=int, default=2, help="our training threads (Item2VecConfig.workers; "
                    "1 = deterministic, torch's own intra-op threads)")
    ap.add_argument("--tune-report", type=Path, default=TUNE_REPORT, help="tune_item2vec.json with the chosen configs")
    ap.add_argument("--out", type=Path, default=REPO / "experiments" / "reports")
    ap.add_argument("--merge", action="store_true", help="keep the parts of the existing report that this run skips")
    ap.add_argument("--report-name", default="bench_item2vec", help="report file stem under --out")
    ap.add_argument("--rule-sets", default="beauty,ml-1m-sample", help="data sets of the rules part")
    ap.add_argument("--rules", default="", help="the rules part's rules: labels of RULES separated by ';' (default "
                    "all; with --merge the other rows are kept)")
    ap.add_argument("--rows", default="", help="sets part: fit only these rows, labels separated by ';' (e.g. "
                    "\"ours, library default\" after a new default; with --merge, required: the report's other "
                    "rows are kept, at their configurations)")
    ap.add_argument("--rewrite", action="store_true", help="fit nothing: regenerate the --report-name Markdown "
                    "from its JSON")
    ap.add_argument("--merge-from", default="", metavar="JSON",
                    help="fit nothing: merge the sets part of another report of this script (e.g. a set run in "
                         "another worktree at the same commit) into the --report-name report, as --merge would")
    args = ap.parse_args(argv)
    parts = set(args.parts.split(","))
    if args.quick:
        args.repeats, args.synthetic_events, args.seeds = 1, 200_000, 1
    base = Item2VecConfig(**SHARED, workers=args.ours_workers)
    previous = args.out / f"{args.report_name}.json"
    if args.rewrite:
        return rewrite(previous)
    if args.merge_from:
        if not previous.exists():
            raise SystemExit(f"--merge-from: {previous} does not exist; copy the other report there instead")
        merged = merge_from(json.loads(previous.read_text()), json.loads(Path(args.merge_from).read_text()))
        write_reports(args.out, merged, args.report_name)
        return merged
    run = ReportRun(seeds=list(range(args.first_seed, args.first_seed + args.seeds)),
                    argv=sys.argv[1:] if argv is None else argv)
    results: dict = {"runs": [run.meta], "shared": SHARED, "ours_config": dataclasses.asdict(base),
                     "quick": args.quick}
    if args.merge and previous.exists():  # earlier parts first; this run's parts replace theirs
        old = json.loads(previous.read_text())
        results = {**without_legacy_fields(old), **results, "runs": [*legacy_runs(old), run.meta]}
    if parts & {"beauty", "variants", "workers"}:
        beauty = load_set("beauty")
    rows = [r.strip() for r in args.rows.split(";") if r.strip()] or None
    if rows and "sets" in parts and not args.merge:
        raise SystemExit("--rows: needs --merge (the report's sets part gives the other rows)")

    def sets_step() -> dict:
        new = sets_part(args.sets.split(","), tuned_configs(args.tune_report), args.seeds, args.workers,
                        args.synthetic_events, args.first_seed, rows)
        if rows:
            return merge_rows(results.get("sets"), new, rows, len(results["runs"]))
        return merge_sets(results.get("sets") if args.merge else None, new, len(results["runs"]))

    steps = [("sets", sets_step),
             ("beauty", lambda: side_by_side(beauty, base, args.repeats, args.workers)),
             ("variants", lambda: variants(beauty, base)),
             ("workers", lambda: workers_ab(beauty, base, args.repeats)),
             ("synthetic", lambda: side_by_side(load_synthetic(args.synthetic_events), base, 1, args.workers)),
             ("rules", lambda: merge_rules(results.get("rules") if args.merge else None,
                                           rules_part(args.rule_sets.split(","), args.seeds, args.ours_workers,
                                                      args.rules.split(";") if args.rules else None,
                                                      args.synthetic_events), len(results["runs"]))),
             ("throughput", lambda: throughput_part(args.sets.split(","), args.repeats, args.workers,
                                                    args.synthetic_events))]
    for name, fn in steps:
        if name in parts:
            print(f"== {name}", flush=True)
            results[name] = fn()
            results["part_runs"] = {**results.get("part_runs", {}), name: len(results["runs"])}
            for per_set in results[name].values() if name == "sets" else ():  # it keeps the sets it did not rerun
                if isinstance(per_set, dict) and "mean" in per_set:
                    per_set.setdefault("run", len(results["runs"]))
            run.finish()
            write_reports(args.out, results, args.report_name)  # after every part: a long run leaves partial results
    return results


if __name__ == "__main__":
    main()
