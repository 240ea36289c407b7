"""Two-tower (pooled and causal-Transformer user towers) on Amazon Beauty, S3-Rec / ICLRec protocol.

Protocol: leave-last-out per user, test history = train + validation item, full ranking over all
items with the history excluded (recsys.evaluation). Each tower is trained with its tuned config
(experiments/configs/beauty_two_tower_{ensemble,transformer,pooled}.toml; "ensemble" is two
Transformer-tower members trained at once), early-stopped on validation NDCG@10 and scored on
validation and test; popularity is measured in the same run, and published anchors on this file
and protocol are printed beside the results with ratios. Per-epoch log lines of an ensemble carry
each member's figures (suffix ``_member_<i>``).

    python experiments/beauty_two_tower.py                   # every tower, configs as tuned
    python experiments/beauty_two_tower.py --towers ensemble --budget-min 28.5   # the reported ensemble run
    python experiments/beauty_two_tower.py --quick           # smoke run: 2000 users, 2 epochs

Writes ``experiments/reports/beauty_two_tower{,_quick}.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import harness  # same folder
import torch
from beauty_baselines import DEFAULT_DATA, REPORTS, read_beauty  # same folder; same reader as the baselines

from recsys import atomic
from recsys.config import from_dict, load_toml, to_dict
from recsys.evaluation.evaluator import EvalProtocol, evaluate_model, make_validator
from recsys.models.base import Model
from recsys.models.popularity import Popularity
from recsys.models.registry import MODELS
from recsys.models.two_tower import TwoTowerConfig
from recsys.prepare.split import SplitData, leave_last_out

CONFIGS = Path(__file__).resolve().parent / "configs"
#: published test NDCG@10 on this file and protocol
ANCHORS = {"SASRec (BCE)": 0.0318, "ICLRec": 0.0403, "BSARec": 0.0611}
METRICS = ("hr_10", "ndcg_10", "hr_20", "ndcg_20")


class BudgetSpent(Exception):
    """Raised from the epoch callback when the wall-clock budget is used up."""


def tower_config(tower: str, quick: bool, epochs: int | None) -> tuple[type[Model], TwoTowerConfig]:
    """The model class named by ``beauty_two_tower_<tower>.toml`` and its config."""
    table = dict(load_toml(CONFIGS / f"beauty_two_tower_{tower}.toml")["model"])
    cls = MODELS[table.pop("name")]
    if quick:
        table.update(epochs=2, dim=32, warmup_steps=5)
    if epochs is not None:
        table["epochs"] = epochs
    return cls, from_dict(cls.Config, table, where=f"beauty_two_tower_{tower}.toml [model]")


def run_tower(tower: str, split: SplitData, protocol: EvalProtocol, args: argparse.Namespace, budget: float,
              epochs: int | None) -> dict:
    cls, cfg = tower_config(tower, args.quick, epochs)
    model = cls(cfg, device=args.device)
    log: list[dict] = []
    t0 = time.perf_counter()

    def on_epoch_end(epoch: int, metrics: dict[str, float]) -> None:
        log.append({"epoch": epoch, **{k: round(float(v), 5) for k, v in metrics.items()
                                       if k.startswith(("loss", "epoch_seconds", "val_hr_10", "val_ndcg_10"))}})
        print(f"[{tower}] {log[-1]}", flush=True)
        if budget and time.perf_counter() - t0 > 60 * budget:
            raise BudgetSpent

    validate = make_validator(split.valid_history, split.valid_targets, protocol)
    stopped = False
    try:
        model.fit(split.train, on_epoch_end=on_epoch_end, validate=validate)
    except BudgetSpent:
        stopped = True  # parameters are those after the last finished epoch
    train_s = time.perf_counter() - t0
    val = evaluate_model(model, split.valid_history, split.valid_targets, protocol)
    test = evaluate_model(model, split.test_history, split.test_targets, protocol)
    return {"config": to_dict(cfg), "epochs_run": max((r["epoch"] for r in log), default=0), "budget_stop": stopped,
            "train_s": round(train_s, 1),
            "s_per_epoch": round(sum(v for r in log for k, v in r.items() if k.startswith("epoch_seconds"))
                                 / max(len(log), 1), 1),
            "best_val_ndcg_10": max((v for r in log for k, v in r.items() if k.startswith("val_ndcg_10")),
                                    default=0.0),
            "val": {k: val[k] for k in METRICS}, "test": {k: test[k] for k in METRICS}, "log": log}


def write_report(results: dict, path: Path) -> None:
    """Write the report; towers not run this time keep their rows from the previous report (with its command)."""
    old = json.loads(path.with_suffix(".json").read_text()) if path.with_suffix(".json").is_file() else {}
    old_commit = old.get("meta", {}).get("commit", "not recorded")
    kept = {k: {"command": old.get("command", "?"), "commit": old_commit, **v} for k, v in old.get("models", {}).items()
            if k not in results["models"] and "command" not in v}
    kept.update({k: v for k, v in old.get("models", {}).items() if k not in results["models"] and "command" in v})
    results = {**results, "models": {**results["models"], **kept}}
    atomic.write_text(path.with_suffix(".json"), json.dumps(results, indent=2))
    pop = results["models"]["popularity"]["test"]["ndcg_10"]
    lines = ["# Two-tower on Beauty (S3-Rec / ICLRec protocol)", "", *harness.header_lines(results["meta"]),
             "| model | HR@10 | NDCG@10 | HR@20 | NDCG@20 | epochs | s/epoch | train min | NDCG@10 / popularity |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in results["models"].items():
        t = r["test"]
        train_min = f"{r['train_s'] / 60:.1f}" if "train_s" in r else "-"
        lines.append(f"| {name} | {t['hr_10']:.4f} | {t['ndcg_10']:.4f} | {t['hr_20']:.4f} | {t['ndcg_20']:.4f} | "
                     f"{r.get('epochs_run', '-')} | {r.get('s_per_epoch', '-')} | {train_min} | "
                     f"{t['ndcg_10'] / pop:.2f} |")
    earlier = [f"- {k}: `{v['command']}` (commit {v.get('commit', 'not recorded')})"
               for k, v in results["models"].items() if "command" in v]
    if earlier:
        lines += ["", "Rows kept from earlier runs (not rerun by this command):", "", *earlier]
    lines += ["", "Published test NDCG@10 on this file and protocol, and our best Transformer model's ratio to each:",
              ""]
    ours = max((results["models"].get(f"two_tower_{t}", {}).get("test", {}).get("ndcg_10", 0.0)
                for t in ("ensemble", "transformer")), default=0.0) or None
    for name, v in ANCHORS.items():
        lines.append(f"- {name}: {v:.4f}" + (f" (ours / anchor = {ours / v:.2f})" if ours else ""))
    atomic.write_text(path.with_suffix(".md"), "\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Beauty.txt (user i1 i2 ... per line)")
    ap.add_argument("--towers", default="ensemble,transformer,pooled",
                    help="comma list of: ensemble, transformer, pooled (configs/beauty_two_tower_<tower>.toml)")
    ap.add_argument("--epochs", default="", help="override the configs' epochs: one value or one per tower")
    ap.add_argument("--budget-min", default="0", help="stop training after this many minutes: one value, or one "
                    "per tower (comma list); 0 = no limit")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2000 users, 2 epochs, dim 32")
    args = ap.parse_args()
    run = harness.ReportRun()
    if args.threads:
        torch.set_num_threads(args.threads)
    events, n_users, n_items = read_beauty(args.data, 2000 if args.quick else None)
    split = leave_last_out(events, n_users, n_items)
    protocol = EvalProtocol(split="leave_last_out", ks=(10, 20), fingerprint=split.fingerprint)
    pop = Popularity().fit(split.train)
    models = {"popularity": {"test": {k: v for k, v in evaluate_model(pop, split.test_history, split.test_targets,
                                                                       protocol).items() if k in METRICS}}}
    towers = args.towers.split(",")
    budgets = [float(b) for b in _per_tower(args.budget_min, towers, "--budget-min")]
    epochs = [int(e) if e else None for e in _per_tower(args.epochs, towers, "--epochs")]
    for tower, budget, n_epochs in zip(towers, budgets, epochs, strict=True):
        models[f"two_tower_{tower}"] = run_tower(tower, split, protocol, args, budget, n_epochs)
        print(tower, models[f"two_tower_{tower}"]["test"], flush=True)
    run.meta["seeds"] = sorted({m["config"]["seed"] for m in models.values() if "seed" in m.get("config", {})})
    results = {"meta": {**run.finish(), "device": args.device}, "command": run.meta["command"], "n_users": n_users,
               "n_items": n_items, "split": split.params, "anchors_ndcg_10": ANCHORS, "models": models}
    REPORTS.mkdir(parents=True, exist_ok=True)
    write_report(results, REPORTS / ("beauty_two_tower_quick" if args.quick else "beauty_two_tower"))


def _per_tower(value: str, towers: list[str], flag: str) -> list[str]:
    values = value.split(",")
    values = values * len(towers) if len(values) == 1 else values
    if len(values) != len(towers):
        raise SystemExit(f"{flag} has {len(values)} values for {len(towers)} towers; give one or one per tower")
    return values


if __name__ == "__main__":
    main()
