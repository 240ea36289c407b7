"""Benchmark: our PyTorch item2vec vs gensim Word2Vec, side by side in one run.

Same data, same hyperparameters (skip-gram, dim 64, window 5, 5 negatives, 5 epochs,
ns_exponent 0.75, subsampling 1e-3; gensim ``workers=2, sg=1, hs=0``; ours ``workers=2``, i.e. two
lock-free training threads like gensim's, unless ``--ours-workers`` says otherwise), same evaluation:
gensim's vectors go through our user encoder and ``recsys.evaluation`` full ranking.

Parts (each writes into ``experiments/reports/bench_item2vec.{json,md}``):

* ``beauty``: Amazon Beauty (ICLRec), leave-last-out; fit on train, test with test_history.
  Ours and gensim alternate ``--repeats`` times; medians and the throughput ratio are reported,
  plus our variants (sparse vs dense updates, independent vs shared negatives, CBOW).
* ``workers``: our fit on Beauty with ``workers=1`` and ``workers=2``, alternating ``--repeats`` times.
* ``synthetic``: ``recsys.data.synthetic`` with 5M events (one fit each).
* ``tune``: a greedy one-parameter-at-a-time search on Beauty *validation* over window, ns_exponent,
  dim, epochs, subsample, lr and user_decay, for ours and for gensim; the best of each is then
  scored on test.

Throughput = training events x epochs / fit seconds (fit = everything from the training
sequences to vectors: vocabulary/counts, sampling tables and all epochs; gensim's list-of-token
conversion is data preparation and not timed). The machine may be shared: figures are under
whatever contention there was, which is why the two sides alternate within one run.

    python experiments/bench_item2vec.py --quick        # small smoke run
    python experiments/bench_item2vec.py                # full run (minutes)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recsys import atomic  # noqa: E402
from recsys.data.sequences import Sequences  # noqa: E402
from recsys.data.split import SplitData, leave_last_out  # noqa: E402
from recsys.data.synthetic import SyntheticConfig, generate  # noqa: E402
from recsys.evaluation.evaluator import evaluate_model  # noqa: E402
from recsys.models.item2vec import Item2Vec, Item2VecConfig  # noqa: E402

BEAUTY = REPO.parent / "shared" / "data" / "iclrec-amazon" / "Beauty.txt"
SHARED = {"dim": 64, "window": 5, "negatives": 5, "epochs": 5, "ns_exponent": 0.75, "subsample": 1e-3}
METRICS = ("hr_10", "ndcg_10", "hr_20", "ndcg_20")


def load_beauty(path: Path) -> SplitData:
    """One user a line ``user i1 i2 ...`` (time order) -> leave-last-out split."""
    users, items = [], []
    for line in path.read_text().splitlines():
        tok = line.split()
        users += [int(tok[0])] * (len(tok) - 1)
        items += [int(t) for t in tok[1:]]
    enc = pl.DataFrame({"user_idx": users, "item_idx": items, "timestamp": np.arange(len(users))})
    return leave_last_out(enc, max(users), max(items))


def load_synthetic(n_events: int) -> SplitData:
    cfg = SyntheticConfig(n_users=max(n_events // 50, 100), n_items=max(n_events // 250, 200), n_events=n_events)
    inter = generate(cfg).interactions
    enc = inter.select(pl.col("user").alias("user_idx"), pl.col("item").alias("item_idx"), "timestamp")
    return leave_last_out(enc, cfg.n_users, cfg.n_items)


def sentences(train: Sequences) -> list[list[str]]:
    off, items = train.offsets, train.items.astype(str)
    return [items[off[r] : off[r + 1]].tolist() for r in range(train.n_rows) if off[r + 1] > off[r]]


def fit_ours(train: Sequences, cfg: Item2VecConfig) -> tuple[Item2Vec, float]:
    t = time.perf_counter()
    model = Item2Vec(cfg, device="cpu").fit(train)
    return model, time.perf_counter() - t


def fit_gensim(train: Sequences, sents: list[list[str]], cfg: Item2VecConfig, workers: int) -> tuple[Item2Vec, float]:
    """gensim Word2Vec with ``cfg``'s hyperparameters; vectors wrapped in an Item2Vec for the same encoder."""
    from gensim.models import Word2Vec

    t = time.perf_counter()
    w2v = Word2Vec(sents, vector_size=cfg.dim, window=cfg.window, negative=cfg.negatives, sg=1, hs=0,
                   sample=cfg.subsample, ns_exponent=cfg.ns_exponent, alpha=cfg.lr, min_alpha=cfg.min_lr,
                   min_count=1, workers=workers, epochs=cfg.epochs, seed=cfg.seed + 1)
    seconds = time.perf_counter() - t
    vecs = np.zeros((train.n_items + 1, cfg.dim), dtype=np.float32)
    keys = np.array([int(k) for k in w2v.wv.index_to_key])
    vecs[keys] = w2v.wv.vectors
    model = Item2Vec(cfg, device="cpu")
    model.w_in, model.w_out, model._train = vecs, np.zeros_like(vecs), train
    return model, seconds


def scores(model: Item2Vec, hist: Sequences, targets: Sequences) -> dict[str, float]:
    res = evaluate_model(model, hist, targets)
    return {k: round(res[k], 5) for k in METRICS}


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
        "default alpha 0.025 in the side-by-side parts; the tuning grid tries lr/alpha 0.025, 0.05 and 0.1 for both. "
        "Gensim's fit time includes build_vocab, ours includes counting and the sampling tables.")

GRID = {
    "window": [3, 5, 10], "ns_exponent": [0.75, 0.0, -0.5, 1.0], "dim": [64, 128], "epochs": [5, 10],
    "subsample": [1e-3, 1e-4, 0.0], "lr": [0.025, 0.05, 0.1],
}
DECAYS = [1.0, 0.8, 0.6, 0.4, 0.2]


def tune(split: SplitData, base: Item2VecConfig, fitter: str, workers: int) -> dict:
    """Greedy search on validation (one parameter at a time, in GRID order); user_decay needs no refit."""
    sents = sentences(split.train) if fitter == "gensim" else None
    best_cfg, best, trials = base, -1.0, []

    def run(cfg: Item2VecConfig) -> tuple[float, Item2Vec]:
        if fitter == "ours":
            model, _ = fit_ours(split.train, cfg)
        else:
            model, _ = fit_gensim(split.train, sents, cfg, workers)
        res = []
        for d in DECAYS:  # encode-time parameter: same vectors, several user encoders
            model.config = dataclasses.replace(cfg, user_decay=d)
            res.append((evaluate_model(model, split.valid_history, split.valid_targets)["ndcg_10"], d))
        score, decay = max(res)
        trials.append({**{k: getattr(cfg, k) for k in GRID}, "user_decay": decay, "val_ndcg_10": round(score, 5)})
        print(f"  {fitter} {trials[-1]}", flush=True)
        model.config = dataclasses.replace(cfg, user_decay=decay)
        return score, model

    for key, values in GRID.items():
        for v in values:
            cfg = dataclasses.replace(best_cfg, **{key: v})
            if any(all(t.get(k) == getattr(cfg, k) for k in GRID) for t in trials):
                continue  # this exact setting was already scored in an earlier pass
            try:
                score, model = run(cfg)
            except FloatingPointError as exc:  # NaNLossError: too high a learning rate for this setting
                trials.append({key: v, "error": str(exc)})
                continue
            if score > best:
                best, best_cfg, best_model = score, model.config, model
    return {"best": dataclasses.asdict(best_cfg), "val_ndcg_10": round(best, 5), "trials": trials,
            "test": scores(best_model, split.test_history, split.test_targets)}


def write_reports(out: Path, results: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("bench_item2vec.json", json.dumps(results, indent=2, default=float)),
                       ("bench_item2vec.md", markdown(results))):
        atomic.write_text(out / name, text)


def markdown(r: dict) -> str:
    lines = ["# item2vec (PyTorch) vs gensim Word2Vec", "",
             f"Machine: {r['machine']}; load average at start {r.get('loadavg')}", "",
             f"Command: `{r['command']}`", "", f"Shared hyperparameters: {r['shared']}", ""]
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
        lines += ["## our variants (Beauty test, one fit each)", "",
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
    for who in ("ours", "gensim"):
        key = f"tune_{who}"
        if key in r:
            t = r[key]
            lines += [f"## tuned on Beauty validation: {who}", "", f"best: {t['best']}", "",
                      f"val ndcg@10 {t['val_ndcg_10']}; test " + ", ".join(f"{m} {t['test'][m]:.4f}" for m in METRICS),
                      ""]
    lines += ["## notes", "", NOTE]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small smoke run: 1 repeat, 200k synthetic events, tiny grid")
    ap.add_argument("--beauty", type=Path, default=BEAUTY, help="path to Beauty.txt")
    ap.add_argument("--repeats", type=int, default=7, help="alternating ours/gensim fits on Beauty")
    ap.add_argument("--synthetic-events", type=int, default=5_000_000)
    ap.add_argument("--parts", default="beauty,variants,workers,synthetic,tune", help="comma-separated parts to run")
    ap.add_argument("--workers", type=int, default=2, help="gensim worker threads")
    ap.add_argument("--ours-workers", type=int, default=2, help="our training threads (Item2VecConfig.workers; "
                    "1 = deterministic, torch's own intra-op threads)")
    ap.add_argument("--batch-size", type=int, default=Item2VecConfig.batch_size)
    ap.add_argument("--out", type=Path, default=REPO / "experiments" / "reports")
    ap.add_argument("--merge", action="store_true", help="keep the parts of the existing report that this run skips")
    args = ap.parse_args(argv)
    parts = set(args.parts.split(","))
    if args.quick:
        args.repeats, args.synthetic_events = 1, 200_000
        GRID.update({"window": [5], "ns_exponent": [0.75], "dim": [64], "epochs": [5], "subsample": [1e-3],
                     "lr": [Item2VecConfig.lr]})
    base = Item2VecConfig(**SHARED, batch_size=args.batch_size, workers=args.ours_workers)
    results: dict = {"machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
                     f"{torch.get_num_threads()} torch threads available, torch {torch.__version__}",
                     "command": " ".join(["python", "experiments/bench_item2vec.py", *(argv or sys.argv[1:])]),
                     "shared": SHARED, "ours_config": dataclasses.asdict(base), "quick": args.quick,
                     "loadavg": [round(x, 2) for x in os.getloadavg()]}
    previous = args.out / "bench_item2vec.json"
    if args.merge and previous.exists():  # earlier parts first; this run's parts replace theirs
        old = json.loads(previous.read_text())
        results = {**old, **results, "command": f"{old['command']}; then {results['command']}",
                   "loadavg": f"{old['loadavg']}; then {results['loadavg']}"}
    if parts & {"beauty", "variants", "workers", "tune"}:
        if not args.beauty.exists():
            sys.exit(f"{args.beauty} not found: pass --beauty or run with --parts synthetic")
        beauty = load_beauty(args.beauty)
    steps = [("beauty", lambda: side_by_side(beauty, base, args.repeats, args.workers)),
             ("variants", lambda: variants(beauty, base)),
             ("workers", lambda: workers_ab(beauty, base, args.repeats)),
             ("synthetic", lambda: side_by_side(load_synthetic(args.synthetic_events), base, 1, args.workers)),
             ("tune_ours", lambda: tune(beauty, base, "ours", args.workers)),
             ("tune_gensim", lambda: tune(beauty, base, "gensim", args.workers))]
    for name, fn in steps:
        if name.split("_")[0] in parts:
            print(f"== {name}", flush=True)
            results[name] = fn()
            write_reports(args.out, results)  # after every part, so a long run leaves partial results
    return results


if __name__ == "__main__":
    main()
