"""item2vec's training step and fit on Beauty, side by side with the reference step it replaced, in one run.

The skip-gram step under the default row rule (row-wise Adagrad, :mod:`recsys.models.row_updates`) was changed
after a profile; the reference is the step as it was (kept below as ``reference_step``):

- one gather of the output rows of targets and negatives together (the reference gathered them in two calls), and
  their deltas written into one buffer (``out=``), so the output matrix takes one grouped update instead of two
  scatters into the distinct rows;
- with one CPU thread (Hogwild workers run one each) the distinct rows' sums use ``index_add_``, which adds whole
  rows, where the reference used ``scatter_add_`` with an expanded index, element by element.

Parts, each timed in rounds that alternate the order of the current and the reference code:

- ``step``: one thread, the default configuration's shapes (4096 pairs, 20 negatives shared by 16 pairs, dim 128)
  on Beauty's catalogue with Zipf-drawn rows; after one untimed pass, each round runs the same batches with each
  step from the same weights. The two must agree (max abs difference of the weights after the batches).
- ``hogwild``: the same batches split between two Python threads with one torch thread each (``workers=2``).
- ``fit``: the default :class:`Item2VecConfig` with ``workers=2`` (what ``bench_item2vec.py`` times) fitted on
  Beauty for ``--epochs`` epochs, with the library's step and with the reference patched in.

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
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "experiments"))

import harness  # noqa: E402
from item2vec_common import load_set  # noqa: E402

from recsys import atomic  # noqa: E402
from recsys.models import item2vec as item2vec_module  # noqa: E402
from recsys.models.item2vec import Item2Vec, Item2VecConfig, skipgram_step  # noqa: E402
from recsys.models.row_updates import ADAGRAD_EPS, RowState, row_coefficients  # noqa: E402
from recsys.prepare.sequences import item_counts  # noqa: E402

REPORTS = REPO / "experiments" / "reports"


def reference_apply_adagrad(weight: torch.Tensor, parts: list[tuple[torch.Tensor, torch.Tensor]], lr: float,
                            state: RowState) -> None:
    """The reference: ``apply_rows(rule="adagrad")`` as it was (a zeroed allocation, ``scatter_add_`` per part)."""
    uniq, inverse = state.group(torch.cat([rows for rows, _ in parts]) if len(parts) > 1 else parts[0][0])
    d = weight.shape[1]
    summed = torch.zeros(len(uniq), d, dtype=weight.dtype, device=weight.device)
    start = 0
    for rows, delta in parts:
        summed.scatter_add_(0, inverse[start : start + len(rows), None].expand(-1, d), delta.to(weight.dtype))
        start += len(rows)
    acc = state.acc.index_select(0, uniq).add_(torch.linalg.vector_norm(summed, dim=1).square_().div_(d))
    state.acc.index_copy_(0, uniq, acc)
    step = summed.mul_((lr / (acc.sqrt_() + ADAGRAD_EPS))[:, None])
    weight.index_add_(0, uniq, step)


def reference_step(w_in: torch.Tensor, w_out: torch.Tensor, source: torch.Tensor, target: torch.Tensor,
                   neg: torch.Tensor, share: int, *, lr: float, sparse: bool = True, cap: int = 0,
                   rule: str = "adagrad", state_in: RowState | None = None,
                   state_out: RowState | None = None) -> torch.Tensor:
    """The reference: ``skipgram_step`` under the Adagrad rule as it was (two gathers and two scatters of w_out)."""
    if rule != "adagrad" or state_in is None or state_out is None:
        raise ValueError("the reference step covers the adagrad rule only")
    p, (g, k), d = len(source), neg.shape, w_in.shape[1]
    pad = g * share - p
    neg_flat = neg.reshape(-1)
    u = w_in.index_select(0, source)
    v = w_out.index_select(0, target)
    nv = w_out.index_select(0, neg_flat).view(g, k, d)
    u3 = (F.pad(u, (0, 0, 0, pad)) if pad else u).view(g, share, d)
    s_pos = (u * v).sum(1)
    s_neg = torch.bmm(u3, nv.transpose(1, 2))
    g_pos = torch.sigmoid(s_pos) - 1.0
    g_neg = torch.sigmoid(s_neg)
    loss_neg = F.logsigmoid(-s_neg)
    if pad:
        valid = (torch.arange(g * share, device=u.device) < p).view(g, share, 1)
        g_neg, loss_neg = g_neg * valid, loss_neg * valid
    loss = -(F.logsigmoid(s_pos).sum(dtype=torch.float64) + loss_neg.sum(dtype=torch.float64))
    n_rows, dt = w_in.shape[0], g_pos.dtype
    c_src = row_coefficients("adagrad", source, n_rows, lr, cap, dt)
    c_src3 = (F.pad(c_src, (0, pad)) if pad else c_src).view(g, share, 1)
    delta_u = torch.bmm(g_neg * c_src3, nv).view(g * share, d)[:p]
    delta_u.addcmul_((g_pos * c_src)[:, None], v)
    c_tgt = row_coefficients("adagrad", target, n_rows, lr, cap, dt)
    c_neg = row_coefficients("adagrad", neg_flat, n_rows, lr, cap, dt, per_row=share).view(g, 1, k)
    delta_tgt = u * (g_pos * c_tgt)[:, None]
    delta_neg = torch.bmm((g_neg * c_neg).transpose(1, 2), u3).view(g * k, d)
    reference_apply_adagrad(w_in, [(source, delta_u)], lr, state_in)
    reference_apply_adagrad(w_out, [(target, delta_tgt), (neg_flat, delta_neg)], lr, state_out)
    return loss


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
    si, so = RowState.zeros(len(w_in)), RowState.zeros(len(w_in))

    def work(part: list[tuple]) -> None:
        for b in part:
            step(w_in, w_out, *b, cfg.shared_negatives, lr=cfg.lr, sparse=True, rule="adagrad", state_in=si,
                 state_out=so)

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
    sides: dict[str, Step] = {"current": skipgram_step, "reference": reference_step}
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
    """Whole fits with the library's step and with the reference patched into the module, alternating."""
    secs: dict[str, list[float]] = {"current": [], "reference": []}
    ratios = []
    for r in range(rounds):
        order = ["current", "reference"] if r % 2 == 0 else ["reference", "current"]
        got = {}
        for name in order:
            item2vec_module.skipgram_step = skipgram_step if name == "current" else reference_step
            try:
                t0 = time.perf_counter()
                Item2Vec(cfg, device="cpu").fit(train)
                got[name] = time.perf_counter() - t0
            finally:
                item2vec_module.skipgram_step = skipgram_step
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
    lines = ["# item2vec training step: current vs the reference it replaced (Beauty)", "",
             *harness.header_lines(res["meta"]),
             f"Default configuration: {res['config']}. Batches: {res['n_batches']} drawn by Beauty's item frequencies "
             f"({res['n_items']} items).", "",
             "| part | current | reference | reference / current (median of rounds) |", "|---|---|---|---|",
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
    res = {"config": {k: getattr(cfg, k) for k in ("dim", "batch_size", "negatives", "shared_negatives", "update")},
           "n_items": int(split.train.n_items), "n_batches": args.batches, "rounds": args.rounds}
    res["step"] = steps_part(batches, w, cfg, args.rounds, threads=1)
    res["hogwild"] = steps_part(batches, w, cfg, args.rounds, threads=2)
    res["fit"] = fit_part(split.train, dataclasses.replace(cfg, epochs=args.epochs, workers=2), args.rounds)
    res["meta"] = run.finish()
    write_report(res, "bench_item2vec_step_quick" if args.quick else "bench_item2vec_step")


if __name__ == "__main__":
    main()
