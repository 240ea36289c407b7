"""Served = evaluated: offline test NDCG@10 of each Beauty model against the same histories served by its bundle.

For every model of the README's Beauty table (configs ``experiments/configs/beauty_<model>.toml``) and the
:data:`VARIANTS` (item2vec scored in-in; the Transformer with the BSARec filter, ``mixer = "bsa"``): fit
on the S3-Rec / ICLRec split (leave-last-out; validation for early stopping where the config asks),
score test offline (``model.encode_users`` + full ranking, history excluded), export the bundle through
``recsys.export.export_model`` (the pipeline's path), load it with ``serving.Recommender`` (exact search)
and ask ``recommend_for_history(<test history>, k=10)`` for every test user: the model's own numpy
encoder, no torch. Reported: offline and served HR@10 / NDCG@10, their difference, the share of
identical top-10 lists, per-request latency, and a sample of the same requests sent over HTTP to
``python -m serving`` whose lists must be identical to the in-process ones.

    python experiments/served_parity.py                         # every model, configs as tuned (about 1.5 h)
    python experiments/served_parity.py --models als,bpr        # some models; other rows kept from the last report
    python experiments/served_parity.py --max-epochs 3          # the two-tower rows capped at 3 epochs
    python experiments/served_parity.py --max-epochs 2 --quick  # smoke run: 2000 users
    python experiments/served_parity.py --rewrite               # fit nothing: the Markdown again from the JSON

Writes ``experiments/reports/served_parity{,_quick}.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from beauty_baselines import DEFAULT_DATA, REPORTS, read_beauty  # same folder; same reader as the baselines
from harness import ReportRun, free_port, runs_header

from pipelines.config import load_run_config
from recsys import atomic
from recsys.evaluation.evaluator import EvalProtocol, evaluate_model, make_validator
from recsys.export import AnnConfig, export_model
from recsys.models.base import Model
from recsys.models.registry import MODELS, build_model
from recsys.prepare.split import SplitData, leave_last_out
from serving import Recommender

CONFIGS = Path(__file__).resolve().parent / "configs"
MODELS_IN_TABLE = ("popularity", "bpr", "als", "item2vec", "item2vec_in_in", "item2vec_decay", "item2vec_default",
                   "two_tower_pooled", "two_tower_transformer", "two_tower_transformer_bsa", "two_tower_ensemble")
#: rows that are another row's config with some fields changed: name -> (config of beauty_<base>.toml, changes)
VARIANTS = {"item2vec_in_in": ("item2vec", {"scoring": "in-in"}),
            # the library's row-update default from 7b000c5 to 67e0d23 (the config pins plain Adagrad, as tuned)
            "item2vec_decay": ("item2vec", {"adagrad_decay": 0.999, "adagrad_decay_per": "update"}),
            # the library default (Item2VecConfig(): subsample 0 and user_decay "auto" since the defaults runs,
            # saturate 6 since rules run 9)
            "item2vec_default": ("item2vec", {"adagrad_decay": 0.999, "adagrad_decay_per": "step", "subsample": 0.0,
                                              "user_decay": "auto", "saturate": 6.0}),
            # the BSARec frequency filter in each Transformer block (experiments/ablation_two_tower.py's "bsa")
            "two_tower_transformer_bsa": ("two_tower_transformer", {"mixer": "bsa", "bsa_alpha": 0.7, "bsa_keep": 3})}
#: rows whose fits take long on a CPU: ``--max-epochs`` caps these only (item2vec, ALS and BPR fit as tuned, in
#: minutes; a capped item2vec ranks crowded near-equal scores whose order float32 round-off decides)
CAPPED = ("two_tower_pooled", "two_tower_transformer", "two_tower_transformer_bsa", "two_tower_ensemble")
FITTED_AT = "fitted_at.txt"  # beside a model saved in --models-dir: the commit it was fitted at
TOLERANCE = 0.001  # |served - offline| NDCG@10 allowed
K = 10


def fit(name: str, split: SplitData, protocol: EvalProtocol, max_epochs: int | None, models_dir: Path | None,
        device: str, commit: str) -> tuple[Model, float, str]:
    """The model of ``beauty_<name>.toml`` (or of a :data:`VARIANTS` row), fitted, or loaded from
    ``models_dir`` when saved there before; returns it, the fit seconds and the commit it was fitted at."""
    base, changes = VARIANTS.get(name, (name, {}))
    cfg = load_run_config(CONFIGS / f"beauty_{base}.toml")
    saved = models_dir / name if models_dir else None
    if saved is not None and saved.is_dir():
        print(f"[{name}] loading the model saved in {saved}", flush=True)
        at = (saved / FITTED_AT).read_text().strip() if (saved / FITTED_AT).is_file() else "unknown"
        return MODELS[cfg.model_name].load(saved), 0.0, at
    params, config_cls = {"seed": cfg.run.seed, **cfg.model, **changes}, MODELS[cfg.model_name].Config
    for key in ("epochs", "iterations"):
        if max_epochs and key in config_cls.__dataclass_fields__:
            params[key] = min(int(params.get(key, getattr(config_cls(), key))), max_epochs)
    model = build_model(cfg.model_name, params, device)
    t0 = time.perf_counter()
    # validation only where it steers training (early stopping), as in the reports the README cites
    early = getattr(model.config, "patience", 0) > 0
    model.fit(split.train, on_epoch_end=lambda e, m: print(f"[{name}] epoch {e} {_short(m)}", flush=True),
              validate=make_validator(split.valid_history, split.valid_targets, protocol) if early else None)
    seconds = time.perf_counter() - t0
    if saved is not None:
        model.save(saved)
        atomic.write_text(saved / FITTED_AT, commit + "\n")
    return model, seconds, commit


def _short(m: dict) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in m.items() if k in ("loss", "val_ndcg_10") or k.startswith("val_ndcg"))


def served(rec: Recommender, split: SplitData, users: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray]:
    """HR@10 / NDCG@10 of ``recommend_for_history`` over ``users``, their (n, 10) lists (0 = empty) and
    per-request seconds."""
    hist, tgt = split.test_history, split.test_targets
    lists, seconds, gains, hits = np.zeros((len(users), K), np.int64), np.zeros(len(users)), 0.0, 0
    for b, u in enumerate(users.tolist()):
        t0 = time.perf_counter()
        items = rec.recommend_for_history(hist.row(u).tolist(), k=K).items
        seconds[b] = time.perf_counter() - t0
        lists[b, :len(items)] = items
        target = int(tgt.row(u)[0])
        if target in items:
            hits += 1
            gains += 1.0 / math.log2(items.index(target) + 2)
    return {"hr_10": hits / len(users), "ndcg_10": gains / len(users)}, lists, seconds


def over_http(bundle: Path, split: SplitData, users: np.ndarray) -> np.ndarray:
    """The same requests POSTed to ``python -m serving <bundle>`` on 127.0.0.1: (n, 10) lists."""
    import httpx

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "serving", str(bundle), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = np.zeros((len(users), K), np.int64)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            for b, u in enumerate(users.tolist()):
                items = client.post("/v1/recommend", json={"history": split.test_history.row(u).tolist(),
                                                           "k": K}).json()["items"]
                out[b, :len(items)] = items
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return out


def check_model(name: str, model: Model, split: SplitData, protocol: EvalProtocol, http_sample: int) -> dict:
    users = np.flatnonzero(np.diff(split.test_targets.offsets) > 0)
    offline = evaluate_model(model, split.test_history, split.test_targets, protocol)
    model_lists, _ = model.recommend(users, k=K, histories=split.test_history)
    with tempfile.TemporaryDirectory(prefix="parity-") as tmp:
        t0 = time.perf_counter()
        ids = np.arange(1, split.n_items + 1)
        bundle = export_model(Path(tmp) / "bundle", model, ids, np.arange(1, split.n_users + 1),
                              ann=AnnConfig(n_trees=10, search_k_factors=(1,), search="exact"))
        export_s = time.perf_counter() - t0
        rec = Recommender.load(bundle, search="exact")
        metrics, lists, seconds = served(rec, split, users)
        sample = np.random.default_rng(0).choice(len(users), min(http_sample, len(users)), replace=False)
        http_lists = over_http(bundle, split, users[sample]) if http_sample else lists[sample]
    row = {
        "offline": {k: offline[k] for k in ("hr_10", "ndcg_10", "hr_20", "ndcg_20")},
        "served": metrics, "users": len(users),
        "ndcg_10_diff": metrics["ndcg_10"] - offline["ndcg_10"],
        "identical_top10": float(np.mean(np.all(lists == model_lists, axis=1))),
        "same_top10_set": float(np.mean(np.all(np.sort(lists, 1) == np.sort(model_lists, 1), axis=1))),
        "http_requests": int(len(sample)) if http_sample else 0,
        "http_identical": bool(np.array_equal(http_lists, lists[sample])),
        "encoder": rec.manifest["encoder"]["kind"], "encoder_check": rec.manifest["encoder_check"],
        "request_ms": {"mean": 1e3 * float(seconds.mean()), "p99": 1e3 * float(np.percentile(seconds, 99))},
        "export_s": round(export_s, 1),
    }
    row["within_tolerance"] = abs(row["ndcg_10_diff"]) <= TOLERANCE
    print(f"[{name}] offline ndcg_10 {offline['ndcg_10']:.4f} served {metrics['ndcg_10']:.4f} "
          f"diff {row['ndcg_10_diff']:+.5f} identical {row['identical_top10']:.3f} http {row['http_identical']}",
          flush=True)
    return row


def markdown(report: dict) -> str:
    lines = ["# Served = evaluated on Amazon Beauty", "", *runs_header(report["runs"]),
             f"Every test user ({report['users']:,}); served = `Recommender.recommend_for_history(test history, "
             f"k=10)` on the exported bundle, exact search; tolerance |served - offline| NDCG@10 <= {TOLERANCE}. "
             "Identical top-10: the served list equals `model.recommend` (same order; in parentheses, the same "
             "items): order differs only between items whose scores tie (popularity counts) or agree to float32 "
             "round-off; offline metrics rank ties pessimistically, serving by item index.", "",
             "Rows: the configs `experiments/configs/beauty_<model>.toml`; "
             + "; ".join(f"{name}: `beauty_{b}.toml` with {', '.join(f'{k} = {v!r}' for k, v in c.items())}"
                         for name, (b, c) in VARIANTS.items() if name in report["models"])
             + ". Fitted at: the commit the model was fitted at (the run's own when it fitted it). Run: the run "
             "that checked the row" + (" (numbered above)" if len(report["runs"]) > 1 else "") + ".", "",
             "| model | run | fitted at | encoder | epochs | offline HR@10 | served HR@10 | offline NDCG@10 | "
             "served NDCG@10 | diff | identical top-10 (same set) | HTTP sample identical | request ms mean / p99 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in report["models"].items():
        o, s = r["offline"], r["served"]
        lines.append(f"| {name} | {r.get('run', '-')} | {r.get('fitted_at', r['commit'])} | {r['encoder']} | "
                     f"{_epochs(r)} | "
                     f"{o['hr_10']:.4f} | {s['hr_10']:.4f} | "
                     f"{o['ndcg_10']:.4f} | {s['ndcg_10']:.4f} | {r['ndcg_10_diff']:+.5f} | "
                     f"{r['identical_top10']:.4f} ({r.get('same_top10_set', float('nan')):.4f}) | "
                     f"{r['http_identical']} ({r['http_requests']}) | "
                     f"{r['request_ms']['mean']:.2f} / {r['request_ms']['p99']:.2f} |")
    return "\n".join(lines) + "\n"


def _epochs(row: dict) -> str:
    """The epochs a row's model ran, with the cap ``--max-epochs`` set on it."""
    cap = row.get("max_epochs")
    return f"{row.get('epochs', '-')}" + (f" (cap {cap})" if cap else "")


def with_runs(report: dict) -> dict:
    """``report`` with its ``runs`` list; one from before the harness gets a run per distinct (command, commit) of
    its rows, with the machine it recorded, and each row the number of its run."""
    if "runs" in report:
        return report
    runs: list[dict] = []
    for row in report["models"].values():
        meta = {"command": row["command"], "commit": row["commit"], "machine": report.get("machine", "not recorded")}
        if meta not in runs:
            runs.append(meta)
        row["run"] = runs.index(meta) + 1
    return {"runs": runs, **{k: v for k, v in report.items() if k not in ("command", "commit", "machine")}}


def only_used_runs(report: dict) -> dict:
    """``report`` without the runs no row names any more (every row they checked was rerun), renumbered."""
    used = sorted({row["run"] for row in report["models"].values()})
    number = {old: new for new, old in enumerate(used, 1)}
    for row in report["models"].values():
        row["run"] = number[row["run"]]
    return {**report, "runs": [report["runs"][i - 1] for i in used]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Beauty.txt (user i1 i2 ... per line)")
    ap.add_argument("--models", default=",".join(MODELS_IN_TABLE), help="comma list of: " + ", ".join(MODELS_IN_TABLE))
    ap.add_argument("--max-epochs", type=int, default=0,
                    help="cap the epochs of the two-tower rows (" + ", ".join(CAPPED) + "); the others fit as "
                    "tuned (0 = every row as tuned)")
    ap.add_argument("--models-dir", type=Path, default=None,
                    help="save fitted models here, and load them instead of fitting when already saved")
    ap.add_argument("--http-sample", type=int, default=300, help="requests also sent over HTTP (0 = none)")
    ap.add_argument("--quick", action="store_true", help="smoke run: the first 2000 users")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--rewrite", action="store_true", help="fit nothing: regenerate the Markdown from the JSON")
    args = ap.parse_args()
    out = REPORTS / f"served_parity{'_quick' if args.quick else ''}.json"
    if args.rewrite:
        report = with_runs(json.loads(out.read_text()))
        atomic.write_text(out, json.dumps(report, indent=2))
        atomic.write_text(out.with_suffix(".md"), markdown(report))
        return
    names = [n for n in args.models.split(",") if n]
    unknown = sorted(set(names) - set(MODELS_IN_TABLE))
    if unknown:
        ap.error(f"unknown model(s) {unknown}; choose from {list(MODELS_IN_TABLE)}")
    events, n_users, n_items = read_beauty(args.data, 2000 if args.quick else None)
    split = leave_last_out(events, n_users, n_items)
    protocol = EvalProtocol(split="leave_last_out", ks=(10, 20), fingerprint=split.fingerprint)
    run = ReportRun()
    commit = run.meta["commit"] + ("+dirty" if run.meta["dirty"] else "")
    old = with_runs(json.loads(out.read_text())) if out.is_file() else {"runs": [], "models": {}}
    # rows of models not rerun are kept; each names the run that checked it
    report = {"runs": [*old["runs"], run.meta], "models": {k: v for k, v in old["models"].items() if k not in names},
              "users": int(np.sum(np.diff(split.test_targets.offsets) > 0)), "device": args.device}
    for name in names:
        cap = args.max_epochs if name in CAPPED else 0
        model, fit_s, fitted_at = fit(name, split, protocol, cap or None, args.models_dir, args.device, commit)
        row = check_model(name, model, split, protocol, args.http_sample)
        row.update(run=len(report["runs"]), command=run.meta["command"], commit=commit, fit_s=round(fit_s, 1),
                   loaded=fitted_at != commit,
                   fitted_at=fitted_at,
                   epochs=len(getattr(model, "history", [])) or "-", max_epochs=cap or None)
        report["models"][name] = row
        report["models"] = {k: report["models"][k] for k in MODELS_IN_TABLE if k in report["models"]}
        run.finish()
        report = only_used_runs(report)
        atomic.write_text(out, json.dumps(report, indent=2))
        atomic.write_text(out.with_suffix(".md"), markdown(report))
    bad = [n for n in names if not report["models"][n]["within_tolerance"] or not report["models"][n]["http_identical"]]
    if bad:
        raise SystemExit(f"served != evaluated for {bad}; see {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
