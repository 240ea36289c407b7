"""Served = offline for the model a pipeline run published, on a seeded sample of its test users.

    python experiments/served_parity_run.py bench_runs/synthetic_scale-100M/synthetic_scale.toml --users 2000

``CONFIG`` is the pipeline config the run used; its relative paths resolve against ``--cwd`` (default: the
config's folder, where ``bench_pipeline.py`` runs each pipeline). From ``champion.json`` the script takes the
published run: its prepared data, the candidate model (the training run's saved model) and the published
bundle. For ``--users`` test users drawn with ``--seed`` it scores the model offline (``model.recommend``
over the test histories, seen items left out or kept as the bundle's manifest says) and asks the bundle,
loaded by ``serving.Recommender`` with the search export chose, ``recommend_for_history(<test history as raw
ids>, k=10)``: the model's numpy encoder, as the HTTP service answers. Reported: HR@10 / NDCG@10 of both
against each user's test target, their difference, and the share of identical top-10 lists (exact offline
against the bundle's index, so an approximate index shows here as lists that differ).

Writes ``experiments/reports/<--report-name>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import harness  # noqa: E402  (same folder)

from pipelines.pipeline_config import load_pipeline_config  # noqa: E402
from pipelines.runstate import RunDir  # noqa: E402
from recsys import atomic  # noqa: E402
from recsys.evaluation.sample import sample_users  # noqa: E402
from recsys.models.registry import MODELS  # noqa: E402
from recsys.prepare.format import load_prepared  # noqa: E402
from serving import Recommender  # noqa: E402

K = 10


def _gain(items: list, target: object) -> tuple[int, float]:
    if target in items:
        return 1, 1.0 / math.log2(items.index(target) + 2)
    return 0, 0.0


def parity(config: Path, cwd: Path, n_users: int, seed: int) -> dict:
    cfg = load_pipeline_config(config)
    workdir = cwd / cfg.pipeline.workdir
    champion = json.loads((workdir / "champion.json").read_text())
    run = RunDir(workdir / "runs" / champion["run_id"])
    label = run.info("evaluate")["candidate"]
    trained = run.info(f"train-{label}")
    model = MODELS[trained["model"]].load(cwd / trained["model_dir"])
    data = load_prepared(cwd / champion["data_dir"])
    t0 = time.perf_counter()
    rec = Recommender.load(cwd / champion["bundle"])
    load_s = time.perf_counter() - t0
    split = data.split
    users = sample_users(split.test_targets, n_users, seed)
    if users is None:
        users = np.flatnonzero(np.diff(np.asarray(split.test_targets.offsets))[1:] > 0) + 1
    exclude = bool(rec.exclude_seen)
    offline_idx, _ = model.recommend(users, k=K, exclude_seen=exclude, histories=split.test_history)
    offline = [data.items.decode(row[row > 0]).to_list() for row in offline_idx]
    served, seconds = [], []
    for u in users.tolist():
        history = data.items.decode(np.asarray(split.test_history.row(u))).to_list()
        t = time.perf_counter()
        served.append(rec.recommend_for_history(history, k=K, exclude_seen=exclude).items)
        seconds.append(time.perf_counter() - t)
    targets = data.items.decode(np.asarray([split.test_targets.row(u)[0] for u in users.tolist()])).to_list()
    scores = {}
    for name, lists in (("offline", offline), ("served", served)):
        got = [_gain(list(lst), t) for lst, t in zip(lists, targets, strict=True)]
        scores[name] = {"hr_10": sum(h for h, _ in got) / len(users), "ndcg_10": sum(g for _, g in got) / len(users)}
    same = [list(a) == list(b) for a, b in zip(offline, served, strict=True)]
    same_set = [set(a) == set(b) for a, b in zip(offline, served, strict=True)]
    return {"config": str(config), "run_id": champion["run_id"], "candidate": label, "model": trained["model"],
            "bundle": champion["bundle"], "search": rec.search, "exclude_seen": exclude, "users": int(len(users)),
            "seed": seed, "n_users_total": int(split.n_users), "n_items": int(split.n_items),
            "events": int(data.report.get("n_events", 0)), "offline": scores["offline"], "served": scores["served"],
            "ndcg_10_diff": scores["served"]["ndcg_10"] - scores["offline"]["ndcg_10"],
            "identical_top10": float(np.mean(same)), "same_top10_set": float(np.mean(same_set)),
            "load_verify_s": round(load_s, 2),
            "request_ms": {q: 1e3 * float(np.percentile(seconds, int(q[1:]))) for q in ("p50", "p99")}}


def markdown(res: dict, meta: dict) -> str:
    r = res
    return "\n".join([
        "# Served = offline for a pipeline run's published model", "", *harness.header_lines(meta),
        f"Run {r['run_id']} of `{r['config']}`: {r['events']:,} events, {r['n_users_total']:,} users, "
        f"{r['n_items']:,} items. Published candidate: `{r['candidate']}` ({r['model']}); the bundle serves with "
        f"search `{r['search']}`, seen items {'left out' if r['exclude_seen'] else 'kept'}. {r['users']:,} test "
        f"users drawn with seed {r['seed']}.", "",
        "| | HR@10 | NDCG@10 |", "|---|---|---|",
        f"| offline (`model.recommend`, exact) | {r['offline']['hr_10']:.4f} | {r['offline']['ndcg_10']:.4f} |",
        f"| served (`recommend_for_history`) | {r['served']['hr_10']:.4f} | {r['served']['ndcg_10']:.4f} |", "",
        f"NDCG@10 served - offline: {r['ndcg_10_diff']:+.5f}. Identical top-10 lists: {r['identical_top10']:.4f}; "
        f"same top-10 sets: {r['same_top10_set']:.4f}. Bundle load + verify {r['load_verify_s']} s; a request "
        f"p50 {r['request_ms']['p50']:.2f} ms, p99 {r['request_ms']['p99']:.2f} ms (one process, in line).", ""])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", type=Path, help="the pipeline config the run used")
    ap.add_argument("--cwd", type=Path, help="where the pipeline ran (default: the config's folder)")
    ap.add_argument("--users", type=int, default=2000, help="test users compared (default 2000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--report-name", default="served_parity_run")
    ap.add_argument("--out", type=Path, default=REPO / "experiments" / "reports")
    a = ap.parse_args()
    run = harness.ReportRun()
    res = parity(a.config.resolve(), (a.cwd or a.config.parent).resolve(), a.users, a.seed)
    meta = run.finish()
    a.out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(a.out / f"{a.report_name}.json", json.dumps({"meta": meta, **res}, indent=2))
    atomic.write_text(a.out / f"{a.report_name}.md", markdown(res, meta))
    print(markdown(res, meta))


if __name__ == "__main__":
    main()
