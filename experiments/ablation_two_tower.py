"""Ablation of the Transformer user tower's options on Amazon Beauty, chosen on validation, tested once.

Each option is a set of :class:`~recsys.models.two_tower.TwoTowerConfig` overrides on a base configuration
(``experiments/configs/beauty_two_tower_<base>.toml``, ``--base transformer`` or ``ensemble``). Every option is
fitted with ``--seeds`` seeds (the config's seed, +1, +2), early-stopped on validation NDCG@10 and scored on the
validation split only; the report gives mean ± sd over the seeds, the epochs and the fit time. The test split is
scored only for ``--final NAME`` (the configuration chosen from the validation table), once per seed.
``--set games`` runs the same on the SASRec paper's Amazon Games file (``sasrec/Video.txt``), into its own report:
there nothing is chosen, ``--final baseline,NAME`` scores today's tower and the Beauty choice, unchanged, on test.

    python experiments/ablation_two_tower.py --options baseline,bsa --seeds 3          # validation rows
    python experiments/ablation_two_tower.py --final bsa --seeds 3                      # the chosen one on test
    python experiments/ablation_two_tower.py --options baseline,bsa --device cuda       # on a lent GPU
    python experiments/ablation_two_tower.py --quick --options baseline,bsa             # smoke run
    python experiments/ablation_two_tower.py --options bsa --seed-offsets 1,2          # add seeds to a row
    python experiments/ablation_two_tower.py --set games --final baseline,bsa --seeds 3 # unchanged, on Games
    python experiments/ablation_two_tower.py --rewrite                                  # the .md from the JSON

Rows and finals of options not rerun are kept from the previous report (each names its seeds, commit and device),
so the tables can be filled over several runs and machines: fit times compare only within one device. With
``--seed-offsets`` only those seeds are fitted and added to the option's runs already in the report, for a row and
for a final alike (a seed fitted again replaces its run; each run names its commit and device). The report is
written after every fit, so a run stopped part way keeps the fits it finished.
Writes ``experiments/reports/ablation_two_tower{,_games}{,_quick}.{json,md}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import harness  # same folder
from beauty_baselines import DEFAULT_DATA, REPORTS, read_beauty, read_pairs  # same folder; the baselines' readers
from beauty_two_tower import tower_config  # same folder

from recsys import atomic
from recsys.config import to_dict
from recsys.evaluation.evaluator import EvalProtocol, evaluate_model, make_validator
from recsys.prepare.split import SplitData, leave_last_out

#: option name -> config overrides (one change at a time, and combinations named as such)
OPTIONS: dict[str, dict] = {
    "baseline": {},
    "bsa": {"mixer": "bsa", "bsa_alpha": 0.7, "bsa_keep": 3},  # BSARec's Beauty setting (alpha 0.7, c 5)
    "bsa alpha 0.5": {"mixer": "bsa", "bsa_alpha": 0.5, "bsa_keep": 3},
    "bsa alpha 0.9": {"mixer": "bsa", "bsa_alpha": 0.9, "bsa_keep": 3},
    "bsa keep 2": {"mixer": "bsa", "bsa_alpha": 0.7, "bsa_keep": 2},
    "bsa keep 6": {"mixer": "bsa", "bsa_alpha": 0.7, "bsa_keep": 6},
}
METRICS = ("hr_10", "ndcg_10")


def fit_one(base: str, overrides: dict, seed_offset: int, split: SplitData, protocol: EvalProtocol,
            args: argparse.Namespace, test: bool) -> dict:
    """One fit of ``base`` + ``overrides`` at the config's seed + ``seed_offset``: validation (and test) scores."""
    cls, cfg = tower_config(base, args.quick, args.epochs)
    cfg = dataclasses.replace(cfg, **overrides, seed=cfg.seed + seed_offset)
    model = cls(cfg, device=args.device)
    t0 = time.perf_counter()
    epochs: list[int] = []

    def on_epoch_end(epoch: int, metrics: dict[str, float]) -> None:
        epochs.append(epoch)
        print(f"  seed +{seed_offset} epoch {epoch}: val NDCG@10 {metrics.get('val_ndcg_10', float('nan')):.5f}",
              flush=True)

    model.fit(split.train, on_epoch_end=on_epoch_end,
              validate=make_validator(split.valid_history, split.valid_targets, protocol))
    fit_s = time.perf_counter() - t0
    val = evaluate_model(model, split.valid_history, split.valid_targets, protocol)
    row = {"seed": cfg.seed, "fit_s": round(fit_s, 1), "epochs": len(epochs),
           "val": {k: round(val[k], 5) for k in METRICS}}
    if test:
        scores = evaluate_model(model, split.test_history, split.test_targets, protocol)
        row["test"] = {k: round(scores[k], 5) for k in METRICS}
    row["config"] = to_dict(cfg)
    return row


def summary(runs: list[dict], part: str) -> dict:
    out = {}
    for m in METRICS:
        values = [r[part][m] for r in runs]
        out[m] = {"mean": round(statistics.mean(values), 5),
                  "sd": round(statistics.stdev(values), 5) if len(values) > 1 else 0.0}
    return out


#: data sets: reader and default file
SETS = {"beauty": (read_beauty, DEFAULT_DATA), "games": (read_pairs, DEFAULT_DATA.parents[1] / "sasrec" / "Video.txt")}


def write_report(res: dict, name: str) -> None:
    """Merge ``res`` into the report ``name`` (rows and finals of other options are kept) and write its .json and .md.

    The header names the last run; each row lists its seeds, commits and device, each final its own."""
    path = REPORTS / f"{name}.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    rows = {**{k: v for k, v in old.get("rows", {}).items() if k not in res["rows"]}, **res["rows"]}
    finals = {**_finals(old), **_finals(res)}
    out = {**{k: v for k, v in res.items() if k != "final"}, "rows": rows, "finals": finals}
    atomic.write_text(path, json.dumps(out, indent=1) + "\n")
    meta = {k: v for k, v in res["meta"].items() if k != "seeds"}  # seeds differ by row: the table lists them
    beauty = res.get("set", "beauty") == "beauty"
    title = ("options on Beauty validation, the chosen one on test" if beauty else
             "today's tower and the option chosen on Beauty, unchanged, on Games")
    lines = [f"# Transformer user tower: {title}", "",
             *harness.header_lines(meta),
             f"Base configuration: `experiments/configs/beauty_two_tower_{res['base']}.toml`. Each row is a change "
             "of it, fitted with the seeds listed, early-stopped on validation NDCG@10; mean ± sd over the seeds. "
             "Test scores appear only for the final configurations.", ""]
    if rows:
        lines += ["| option | overrides | val NDCG@10 | val HR@10 | seeds | epochs (mean) | fit s | device | commit |",
                  "|---|---|---|---|---|---|---|---|---|"]
    for label, r in sorted(rows.items(), key=lambda kv: -kv[1]["val"]["ndcg_10"]["mean"]):
        v = r["val"]
        lines.append(f"| {label} | {r['overrides'] or '-'} | {v['ndcg_10']['mean']:.4f} ± {v['ndcg_10']['sd']:.4f} | "
                     f"{v['hr_10']['mean']:.4f} ± {v['hr_10']['sd']:.4f} | {_seeds(r['runs'])} | "
                     f"{statistics.mean(x['epochs'] for x in r['runs']):.1f} | "
                     f"{statistics.mean(x['fit_s'] for x in r['runs']):.0f} | {r['device']} | {r['commit']} |")
    if finals:
        lines += ["", "## Final configurations on test", "",
                  "| option | overrides | test NDCG@10 | test HR@10 | val NDCG@10 | seeds | fit s | device | commit |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for label, f in sorted(finals.items(), key=lambda kv: -kv[1]["test"]["ndcg_10"]["mean"]):
            t, v = f["test"], f["val"]
            lines.append(f"| {label} | {f['overrides'] or '-'} | {t['ndcg_10']['mean']:.4f} ± {t['ndcg_10']['sd']:.4f} "
                         f"| {t['hr_10']['mean']:.4f} ± {t['hr_10']['sd']:.4f} | {v['ndcg_10']['mean']:.4f} ± "
                         f"{v['ndcg_10']['sd']:.4f} | {_seeds(f['runs'])} | "
                         f"{statistics.mean(x['fit_s'] for x in f['runs']):.0f} | {f['device']} | {f['commit']} |")
        how = ("The final option is chosen from the validation table; its test scores are looked at once." if beauty
               else "The option chosen on Beauty validation, unchanged, beside today's tower (baseline).")
        lines += ["", how, ""]
    atomic.write_text(REPORTS / f"{name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def _finals(res: dict) -> dict:
    """The report's test-scored configurations by option (a report from before ``finals`` held one ``final``)."""
    old = res.get("final")
    return {**({old["option"]: old} if old else {}), **res.get("finals", {})}


def _seeds(runs: list[dict]) -> str:
    return ", ".join(str(r["seed"]) for r in runs)


def report_name(data: str, quick: bool) -> str:
    return "ablation_two_tower" + ("" if data == "beauty" else f"_{data}") + ("_quick" if quick else "")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--options", default="", help=f"comma list of: {', '.join(OPTIONS)}")
    ap.add_argument("--final", default="",
                    help="comma list of options to score on test (on Beauty: the one chosen on validation)")
    ap.add_argument("--base", default="transformer", choices=("transformer", "ensemble"))
    ap.add_argument("--set", dest="data_set", default="beauty", choices=tuple(SETS),
                    help="data set (games: its own report)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--seed-offsets", default="",
                    help="comma list of seed offsets to fit and add to the runs of the rows (and finals) already in "
                    "the report (default: 0..seeds-1, replacing them)")
    ap.add_argument("--epochs", type=int, help="override the base config's epochs")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data", type=Path, help="the set's file (default: ../shared/data, per --set)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2000 users, 2 epochs, dim 32")
    ap.add_argument("--rewrite", action="store_true", help="fit nothing: regenerate the .md from the report's JSON")
    args = ap.parse_args(argv)
    name_of_report = report_name(args.data_set, args.quick)
    path = REPORTS / f"{name_of_report}.json"
    if args.rewrite:
        if not path.is_file():
            raise SystemExit(f"--rewrite: {path} does not exist; run the ablation first")
        write_report(json.loads(path.read_text()), name_of_report)
        return
    names = [o for o in args.options.split(",") if o]
    finals_asked = [o for o in args.final.split(",") if o]
    unknown = [o for o in [*names, *finals_asked] if o not in OPTIONS]
    if unknown or not (names or finals_asked):
        raise SystemExit(f"give --options and/or --final from: {', '.join(OPTIONS)} (unknown: {unknown})")
    run = harness.ReportRun(argv=sys.argv[1:] if argv is None else argv)
    reader, default_path = SETS[args.data_set]
    events, n_users, n_items = reader(args.data or default_path, 2000 if args.quick else None)
    split = leave_last_out(events, n_users, n_items)
    protocol = EvalProtocol(split="leave_last_out", ks=(10,), fingerprint=split.fingerprint)
    where = {"device": args.device, "commit": run.meta["commit"] + ("+dirty" if run.meta["dirty"] else ""),
             "command": run.meta["command"]}
    offsets = [int(x) for x in args.seed_offsets.split(",") if x] or list(range(args.seeds))
    old = json.loads(path.read_text()) if args.seed_offsets and path.is_file() else {}
    head, rows, finals = {"base": args.base, "set": args.data_set}, {}, {}
    for part, asked, test in (("rows", names, False), ("finals", finals_asked, True)):
        into = rows if part == "rows" else finals
        before = old.get("rows", {}) if part == "rows" else _finals(old)
        for name in asked:
            print(f"== {'final, on test: ' if test else ''}{name}: {OPTIONS[name]}", flush=True)
            prev = before.get(name, {})
            runs = [{"commit": prev["commit"], "device": prev["device"], **r} for r in prev.get("runs", [])
                    if prev.get("overrides") == OPTIONS[name]]
            for s in offsets:  # the report is written after every fit
                run_ = {**fit_one(args.base, OPTIONS[name], s, split, protocol, args, test=test),
                        "commit": where["commit"], "device": args.device}
                runs = sorted([r for r in runs if r["seed"] != run_["seed"]] + [run_], key=lambda r: r["seed"])
                into[name] = {"option": name, "overrides": OPTIONS[name], "runs": runs, "val": summary(runs, "val"),
                              **({"test": summary(runs, "test")} if test else {}), **where,
                              **_where_runs(runs, where)}
                write_report({"meta": run.finish(), **head, "rows": rows, "finals": finals}, name_of_report)


def _where_runs(runs: list[dict], where: dict) -> dict:
    """A row's commit and device: those of its runs, joined when they differ."""
    commits = dict.fromkeys(r.get("commit", where["commit"]) for r in runs)
    devices = dict.fromkeys(r.get("device", where["device"]) for r in runs)
    return {"commit": ", ".join(commits), "device": ", ".join(devices)}


if __name__ == "__main__":
    main()
