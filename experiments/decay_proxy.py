"""Can item2vec's ``user_decay`` be chosen per log from the training data alone? Validation against a training proxy.

``user_decay`` is encode-time (no refit) and the best value differs between logs: the shared sets' validation
prefers 0.4-0.8 (``experiments/reports/defaults.md``), the synthetic log, whose next item is often a Markov
successor of the previous one, a much lower one. A per-log choice must not look at validation or test, so this
measures ``Item2VecConfig(user_decay="auto")``, which uses the training sequences only: for up to
``AUTO_DECAY_ROWS`` training rows of length >= 2 (drawn with a fixed seed), predict the row's last training item
from the items before it, with each decay of ``AUTO_DECAYS``, and take the decay one step below the best-scoring
one (the model has trained on those last items, so the proxy's scores are optimistic, and flatter weights gain
most from that). The question is only whether its *choice* agrees with validation's.

For each set and seed: the library default fitted once (``--workers`` threads), then, for every decay of the
grid, validation NDCG@10 on that fit, and what "auto" scores and chooses there (the library's own code). The
report gives, per set, validation NDCG@10 per decay (mean over the seeds), the proxy's best and auto's choice per
seed, and the validation ratio of auto's choice to that fit's best decay and to the fixed 0.4 (the tuned value, the
library default before "auto"). Test is not scored.

    python experiments/decay_proxy.py                                  # the five shared sets + 1M synthetic events
    python experiments/decay_proxy.py --sets ml-100k --seeds 1 --out-name decay_proxy_quick
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "experiments"))

from harness import ReportRun, header_lines  # noqa: E402
from item2vec_common import SETS, SYNTHETIC, load_set  # noqa: E402

from recsys import atomic  # noqa: E402
from recsys.evaluation.evaluator import evaluate_model  # noqa: E402
from recsys.models.item2vec import (  # noqa: E402
    AUTO_DECAY_ROWS,
    AUTO_DECAYS,
    Item2Vec,
    Item2VecConfig,
    auto_decay_best,
)

REPORTS = REPO / "experiments" / "reports"
GRID = AUTO_DECAYS
FIXED = 0.4  #: the fixed decay "auto" is measured against: the tuned value, the library default before "auto"


def probe(name: str, synthetic_events: int, workers: int, seed: int) -> dict:
    """One fit of the library default on ``name`` at ``seed``; validation NDCG@10 for every decay of GRID, and what
    ``user_decay="auto"`` scores and chooses on that fit (the library's own code)."""
    split = load_set(name, synthetic_events)
    t0 = time.perf_counter()
    model = Item2Vec(Item2VecConfig(workers=workers, seed=seed), device="cpu").fit(split.train)
    fit_s = time.perf_counter() - t0
    valid = {}
    for decay in GRID:
        model.config = dataclasses.replace(model.config, user_decay=decay)
        valid[decay] = round(evaluate_model(model, split.valid_history, split.valid_targets)["ndcg_10"], 5)
    model.config = dataclasses.replace(model.config, user_decay="auto")
    t0 = time.perf_counter()
    pick = model.user_decay
    choose_s = time.perf_counter() - t0
    proxy = {d: round(v, 5) for d, v in model.auto_decay_scores.items()}
    best_valid = max(GRID, key=lambda d: valid[d])
    out = {"seed": seed, "train_events": split.train.n_events, "fit_s": round(fit_s, 1), "choose_s": round(choose_s, 2),
           "proxy_rows": min(AUTO_DECAY_ROWS, int((split.train.lengths() >= 2).sum())),
           "valid": valid, "proxy": proxy, "valid_choice": best_valid,
           "proxy_best": auto_decay_best(proxy), "auto_choice": pick,
           "auto_over_valid_best": round(valid[pick] / valid[best_valid], 4),
           "auto_over_default": round(valid[pick] / valid[FIXED], 4)}
    if name == SYNTHETIC:
        out["synthetic_events"] = synthetic_events
    print(f"{name}: {json.dumps(out)}", flush=True)
    return out


def markdown(res: dict) -> str:
    default = res["default_decay"]
    lines = ["# item2vec's user_decay chosen from the training data: a proxy against validation", "",
             *header_lines(res["meta"]),
             f"Library default fitted once per set and seed (seeds {', '.join(map(str, res['seeds']))}, workers "
             f"{res['workers']}); the fixed decay compared with is {default} (the tuned value, the default before "
             "\"auto\"). Proxy: predict the last training item of up "
             f"to {res['users']} training rows from the items before it (NDCG@10, history excluded); "
             "`user_decay=\"auto\"` takes the decay one step below the proxy's best. Cells: validation NDCG@10, mean "
             "over the seeds; **bold** = the best mean. Per seed: the proxy's best, auto's choice, and the validation "
             f"ratio of auto's choice to that fit's best decay and to {default}. Test is not scored.", "",
             "| set | " + " | ".join(f"{d}" for d in GRID) + " | proxy's best | auto's choice | auto / fit's best "
             f"(mean, min) | auto / {default} (mean, min) |", "|---|" + "---:|" * (len(GRID) + 4)]
    for name, runs in res["sets"].items():
        mean = {d: statistics.mean(r["valid"][str(d)] for r in runs) for d in GRID}
        best = max(GRID, key=lambda d: mean[d])
        cells = [f"**{mean[d]:.4f}**" if d == best else f"{mean[d]:.4f}" for d in GRID]
        over_best = [r["auto_over_valid_best"] for r in runs]
        over_default = [r["auto_over_default"] for r in runs]
        label = name if name != SYNTHETIC else f"synthetic ({runs[0]['synthetic_events']:,} events)"
        lines.append(f"| {label} | " + " | ".join(cells) + " | "
                     + ", ".join(str(r["proxy_best"]) for r in runs) + " | "
                     + ", ".join(str(r["auto_choice"]) for r in runs) + " | "
                     f"{statistics.mean(over_best):.3f}, {min(over_best):.3f} | "
                     f"{statistics.mean(over_default):.3f}, {min(over_default):.3f} |")
    runs = [r for rs in res["sets"].values() for r in rs]
    lines += ["", f"Over every set and seed: auto's choice / that fit's best decay, worst "
              f"{min(r['auto_over_valid_best'] for r in runs):.3f}; auto's choice / the fixed default {default}, worst "
              f"{min(r['auto_over_default'] for r in runs):.3f}, best {max(r['auto_over_default'] for r in runs):.3f}. "
              f"Seconds per choice: {min(r['choose_s'] for r in runs):.1f}-{max(r['choose_s'] for r in runs):.1f}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default=",".join([*SETS, SYNTHETIC]), help=f"of {', '.join([*SETS, SYNTHETIC])}")
    ap.add_argument("--synthetic-events", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=3, help="fits per set (seeds 0..N-1)")
    ap.add_argument("--out-name", default="decay_proxy", help="report stem under experiments/reports")
    args = ap.parse_args(argv)
    names = [s for s in args.sets.split(",") if s]
    bad = [s for s in names if s not in SETS and s != SYNTHETIC]
    if bad:
        ap.error(f"unknown set(s) {bad}; known: {', '.join([*SETS, SYNTHETIC])}")
    seeds = list(range(args.seeds))
    run = ReportRun(seeds=seeds, argv=sys.argv[1:] if argv is None else argv)
    res = {"users": AUTO_DECAY_ROWS, "workers": args.workers, "default_decay": FIXED,
           "grid": list(GRID), "seeds": seeds, "sets": {}}
    for name in names:
        res["sets"][name] = [json.loads(json.dumps(probe(name, args.synthetic_events, args.workers, seed)))
                             for seed in seeds]
    res["meta"] = run.finish()
    atomic.write_json(REPORTS / f"{args.out_name}.json", res)
    atomic.write_text(REPORTS / f"{args.out_name}.md", markdown(res))
    print(markdown(res))
    return res


if __name__ == "__main__":
    main()
