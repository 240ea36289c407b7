"""Two-tower ensemble training on Beauty: members at once (one thread each) vs in turn, side by side.

Variants, each one epoch per member of the Beauty ensemble config (experiments/configs/
beauty_two_tower_ensemble.toml) on the first ``--users`` users, timed in alternating rounds:

- ``one_member``: a single TwoTower (member 0) with all torch threads (the reference per member)
- ``in_turn``: TwoTowerEnsemble with ``parallel = false`` (members one after another, all threads each)
- ``at_once``: TwoTowerEnsemble with ``parallel = true`` (what the config trains with)

    python experiments/bench_two_tower_ensemble.py                 # 8000 users, 2 rounds
    python experiments/bench_two_tower_ensemble.py --users 1000 --rounds 1 --quick

Writes ``experiments/reports/bench_two_tower_ensemble{,_quick}.{json,md}``: median seconds of each
variant, member-epochs per second, and ``at_once``'s speed-up over ``in_turn`` (the median of the
per-round ratios) and its time relative to ``one_member``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import harness  # same folder
from beauty_baselines import DEFAULT_DATA, REPORTS, read_beauty  # same folder

from recsys import atomic
from recsys.config import from_dict, load_toml
from recsys.models.two_tower import TwoTower, TwoTowerEnsemble, TwoTowerEnsembleConfig
from recsys.prepare.split import leave_last_out

CONFIG = Path(__file__).resolve().parent / "configs" / "beauty_two_tower_ensemble.toml"
VARIANTS = ("one_member", "in_turn", "at_once")


def ensemble_config(dim: int | None) -> TwoTowerEnsembleConfig:
    table = dict(load_toml(CONFIG)["model"])
    table.pop("name")
    table.update(epochs=1, patience=0)
    if dim:
        table["dim"] = dim
    return from_dict(TwoTowerEnsembleConfig, table, where=str(CONFIG))


def run(variant: str, cfg: TwoTowerEnsembleConfig, train) -> float:
    t0 = time.perf_counter()
    if variant == "one_member":
        TwoTower(cfg.member(0), device="cpu").fit(train)
    else:
        TwoTowerEnsemble(TwoTowerEnsembleConfig(**{**vars(cfg), "parallel": variant == "at_once"}),
                         device="cpu").fit(train)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Beauty.txt (user i1 i2 ... per line)")
    ap.add_argument("--users", type=int, default=8000, help="first N users of the file (0 = all)")
    ap.add_argument("--dim", type=int, default=0, help="member dim (0 = the config's)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds; every variant once per round")
    ap.add_argument("--quick", action="store_true", help="write the _quick report (smoke runs)")
    args = ap.parse_args()
    run_meta = harness.ReportRun()
    events, n_users, n_items = read_beauty(args.data, args.users or None)
    train = leave_last_out(events, n_users, n_items).train
    cfg = ensemble_config(args.dim or None)
    seconds: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(args.rounds):
        order = VARIANTS if r % 2 == 0 else VARIANTS[::-1]
        for v in order:
            seconds[v].append(run(v, cfg, train))
            print(f"round {r + 1} {v}: {seconds[v][-1]:.1f} s", flush=True)
    med = {v: statistics.median(s) for v, s in seconds.items()}
    speedup = statistics.median(a / b for a, b in zip(seconds["in_turn"], seconds["at_once"], strict=True))
    vs_one = statistics.median(b / a for a, b in zip(seconds["one_member"], seconds["at_once"], strict=True))
    run_meta.meta["seeds"] = [cfg.seed]
    results = {"meta": run_meta.finish(), "command": run_meta.meta["command"], "users": args.users,
               "members": cfg.members, "dim": cfg.dim, "n_targets": int(train.n_events),
               "seconds": seconds, "median_s": med,
               "member_epochs_per_s": {v: (1 if v == "one_member" else cfg.members) / med[v] for v in VARIANTS},
               "at_once_speedup_over_in_turn": speedup, "at_once_time_over_one_member": vs_one}
    REPORTS.mkdir(parents=True, exist_ok=True)
    path = REPORTS / ("bench_two_tower_ensemble_quick" if args.quick else "bench_two_tower_ensemble")
    atomic.write_text(path.with_suffix(".json"), json.dumps(results, indent=2))
    lines = ["# Two-tower ensemble training: members at once vs in turn (Beauty, CPU)", "",
             *harness.header_lines(results["meta"]), f"{cfg.members} members of dim "
             f"{cfg.dim}, one epoch each on the first {args.users or 'all'} users, {args.rounds} alternating rounds.",
             "", "| variant | median s | member-epochs / s |", "| --- | ---: | ---: |"]
    lines += [f"| {v} | {med[v]:.1f} | {results['member_epochs_per_s'][v]:.4f} |" for v in VARIANTS]
    lines += ["", f"`at_once` is **{speedup:.2f}x** faster than `in_turn` (median of per-round ratios) and takes "
              f"**{vs_one:.2f}x** the time of `one_member` for {cfg.members} members."]
    atomic.write_text(path.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
