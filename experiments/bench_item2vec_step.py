"""item2vec's training step and fit on Beauty: the fused CPU step against the tensor step it replaced, in one run.

On CPU the default configuration's skip-gram step (row-wise Adagrad, :mod:`recsys.models.row_updates`) now runs
as one compiled loop, :func:`recsys.models.sgns_kernel.fused_skipgram_step` (``Item2VecConfig.kernel="auto"``);
the reference is the tensor step it replaced, :func:`recsys.models.item2vec.skipgram_step`, still the step on
accelerators and for every other rule (``kernel="tensor"``).

Parts, each timed in rounds that alternate the order of the current and the reference code:

- ``step``: one thread, the default configuration's shapes (4096 pairs, 20 negatives shared by 16 pairs, dim 128)
  on Beauty's catalogue with rows drawn by item frequency; after one untimed pass (which also compiles the
  fused loop), each round runs the same batches with each step from the same weights. The two must agree (max
  abs difference of the weights after the batches).
- ``hogwild``: the same batches split between two Python threads with one torch thread each (``workers=2``).
- ``fit``: the default :class:`Item2VecConfig` with ``workers=2`` (what ``bench_item2vec.py`` times) fitted on
  Beauty for ``--epochs`` epochs, with ``kernel="auto"`` and with ``kernel="tensor"``.

    python experiments/bench_item2vec_step.py            # 7 rounds
    python experiments/bench_item2vec_step.py --quick    # 2 rounds, 1 epoch, the _quick report
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "experiments"))

import harness  # noqa: E402
from item2vec_common import load_set  # noqa: E402

from recsys import atomic  # noqa: E402
from recsys.models.item2vec import Item2Vec, Item2VecConfig, skipgram_step  # noqa: E402
from recsys.models.row_updates import RowState  # noqa: E402
from recsys.models.sgns_kernel import fused_skipgram_step  # noqa: E402
from recsys.prepare.sequences import item_counts  # noqa: E402

REPORTS = REPO / "experiments" / "reports"


Step = Callable[..., torch.Tensor]


def make_batches(counts: np.ndarray, cfg: Item2VecConfig, n_batches: int, seed: int) -> list[tuple]:
    """Batches of the default shapes with rows drawn by Beauty's item frequencies (negatives by count**ns)."""
    rng = np.random.default_rng(seed)
    items = np.flatnonzero(counts)
    pos = counts[items] / counts[items].sum()
    noise = counts[items] ** cfg.ns_exponent
    noise = noise / noise.sum()
    g = -(-cfg.batch_size // cfg.shared_negatives)
    out = []
    for _ in range(n_batches):
        src = torch.from_numpy(rng.choice(items, cfg.batch_size, p=pos))
        tgt = torch.from_numpy(rng.choice(items, cfg.batch_size, p=pos))
        neg = torch.from_numpy(rng.choice(items, (g, cfg.negatives), p=noise))
        out.append((src, tgt, neg))
    return out


def run_steps(step: Step, w: tuple[torch.Tensor, torch.Tensor], batches: list[tuple], cfg: Item2VecConfig,
              threads: int) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Seconds for ``batches`` from copies of ``w`` (split between ``threads`` Python threads) and the weights."""
    w_in, w_out = w[0].clone(), w[1].clone()
    per_step = cfg.adagrad_decay_per == "step"
    si, so = (RowState.zeros(len(w_in), decay=cfg.adagrad_decay, per_step=per_step, eps=cfg.adagrad_eps)
              for _ in range(2))

    def work(part: list[tuple]) -> None:
        for b in part:
            step(w_in, w_out, *b, cfg.shared_negatives, lr=cfg.lr, sparse=True, rule="adagrad", state_in=si,
                 state_out=so, skip_target=cfg.skip_target_negatives, saturate=cfg.saturate)

    t0 = time.perf_counter()
    if threads == 1:
        work(batches)
    else:
        ts = [threading.Thread(target=work, args=(batches[i::threads],)) for i in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    return time.perf_counter() - t0, w_in, w_out


def steps_part(batches: list[tuple], w: tuple[torch.Tensor, torch.Tensor], cfg: Item2VecConfig, rounds: int,
               threads: int) -> dict:
    sides: dict[str, Step] = {"current": fused_skipgram_step, "reference": skipgram_step}
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = {name: run_steps(fn, w, batches, cfg, 1) for name, fn in sides.items()}  # untimed; agreement
        diff = max(float((res["current"][i] - res["reference"][i]).abs().max()) for i in (1, 2))
        ms: dict[str, list[float]] = {name: [] for name in sides}
        ratios = []
        for r in range(rounds):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            got = {name: run_steps(sides[name], w, batches, cfg, threads)[0] for name in order}
            for name, s in got.items():
                ms[name].append(round(s / len(batches) * 1e3, 3))
            ratios.append(got["reference"] / got["current"])
            print(f"  {threads} thread(s) round {r + 1}: current {ms['current'][-1]:.2f} ms/step, reference "
                  f"{ms['reference'][-1]:.2f}", flush=True)
    finally:
        torch.set_num_threads(old)
    return {"threads": threads, "ms_per_step": ms, "median_ms": {k: statistics.median(v) for k, v in ms.items()},
            "speedup_median_of_rounds": statistics.median(ratios), "max_abs_weight_diff_one_thread": diff}


def fit_part(train, cfg: Item2VecConfig, rounds: int) -> dict:
    """Whole fits with the fused step (``kernel="auto"``) and the tensor step (``kernel="tensor"``), alternating."""
    secs: dict[str, list[float]] = {"current": [], "reference": []}
    ratios = []
    for r in range(rounds):
        order = ["current", "reference"] if r % 2 == 0 else ["reference", "current"]
        got = {}
        for name in order:
            t0 = time.perf_counter()
            kernel = "auto" if name == "current" else "tensor"
            Item2Vec(dataclasses.replace(cfg, kernel=kernel), device="cpu").fit(train)
            got[name] = time.perf_counter() - t0
            secs[name].append(round(got[name], 3))
        ratios.append(got["reference"] / got["current"])
        print(f"  fit round {r + 1}: current {got['current']:.2f} s, reference {got['reference']:.2f} s", flush=True)
    events = train.n_events * cfg.epochs
    return {"epochs": cfg.epochs, "workers": cfg.workers, "fit_s": secs,
            "events_per_s_median": {k: events / statistics.median(v) for k, v in secs.items()},
            "speedup_median_of_rounds": statistics.median(ratios)}


def write_report(res: dict, name: str) -> None:
    atomic.write_text(REPORTS / f"{name}.json", json.dumps(res, indent=1) + "\n")
    s1, s2, f = res["step"], res["hogwild"], res["fit"]
    lines = ["# item2vec training step: the fused CPU step vs the tensor step it replaced (Beauty)", "",
             *harness.header_lines(res["meta"]),
             f"Default configuration: {res['config']}. Batches: {res['n_batches']} drawn by Beauty's item frequencies "
             f"({res['n_items']} items).", "",
             "| part | fused (current) | tensor (reference) | reference / current (median of rounds) |",
             "|---|---|---|---|",
             f"| step, 1 thread (ms/step, median) | {s1['median_ms']['current']:.2f} | "
             f"{s1['median_ms']['reference']:.2f} | {s1['speedup_median_of_rounds']:.2f}x |",
             f"| step, 2 Hogwild threads (ms/step, median) | {s2['median_ms']['current']:.2f} | "
             f"{s2['median_ms']['reference']:.2f} | {s2['speedup_median_of_rounds']:.2f}x |",
             f"| fit, {f['epochs']} epochs, workers={f['workers']} (events/s per epoch, median) | "
             f"{f['events_per_s_median']['current']:,.0f} | {f['events_per_s_median']['reference']:,.0f} | "
             f"{f['speedup_median_of_rounds']:.2f}x |", "",
             f"Agreement after the batches from the same weights, one thread: max abs weight difference "
             f"{s1['max_abs_weight_diff_one_thread']:.2e} (float32 sums in another order).", "",
             f"Rounds: {res['rounds']}; each alternates which side runs first. Per-round figures are in the JSON.", ""]
    atomic.write_text(REPORTS / f"{name}.md", "\n".join(lines))
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batches", type=int, default=60, help="batches per timed pass of the step parts")
    ap.add_argument("--epochs", type=int, default=5, help="epochs of each timed fit")
    ap.add_argument("--quick", action="store_true", help="2 rounds, 20 batches, 1 epoch; the _quick report")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.batches, args.epochs = 2, 20, 1
    run = harness.ReportRun(argv=sys.argv[1:] if argv is None else argv)
    split = load_set("beauty")
    cfg = Item2VecConfig()
    counts = item_counts(split.train.items, split.train.n_items).astype(np.float64)
    rng = np.random.default_rng(0)
    d, v = cfg.dim, split.train.n_items + 1
    w = (torch.from_numpy(((rng.random((v, d)) - 0.5) / d).astype(np.float32)),
         torch.from_numpy(((rng.random((v, d)) - 0.5) / d).astype(np.float32)))  # both random: nonzero gradients
    batches = make_batches(counts, cfg, args.batches, seed=1)
    res = {"config": {k: getattr(cfg, k) for k in ("dim", "batch_size", "negatives", "shared_negatives", "update",
                                                  "adagrad_decay", "adagrad_decay_per")},
           "n_items": int(split.train.n_items), "n_batches": args.batches, "rounds": args.rounds}
    res["step"] = steps_part(batches, w, cfg, args.rounds, threads=1)
    res["hogwild"] = steps_part(batches, w, cfg, args.rounds, threads=2)
    fit_part(split.train, dataclasses.replace(cfg, epochs=1, workers=2), 1)  # untimed: loads the compiled loop
    res["fit"] = fit_part(split.train, dataclasses.replace(cfg, epochs=args.epochs, workers=2), args.rounds)
    res["meta"] = run.finish()
    write_report(res, "bench_item2vec_step_quick" if args.quick else "bench_item2vec_step")


if __name__ == "__main__":
    main()
