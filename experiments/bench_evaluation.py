"""Validation speed on Beauty: item2vec's user encoding and the evaluator's ranks, side by side with the reference
implementations they replaced, in one run.

A ``recsys tune`` trial of item2vec scores its fit at every encode-time setting (2 scorings x 5 user decays: ten
validations), so a trial spends more time validating than fitting. Two parts were changed after a profile:

- ``decayed_mean`` (``serving.encoder``): the weighted row sums as one sparse (rows x events) product; the reference
  summed the weighted (events, d) rows with ``np.add.reduceat`` (kept below as ``decayed_mean_reduceat``).
- ``_batch_ranks`` (``recsys.evaluation.evaluator``): the items ahead of each target counted with an int32 sum; the
  reference summed the boolean matrix into int64 (kept below as ``batch_ranks_int64``).

After one untimed call of each, each round times the current and the reference of each part in turn (the order
alternating between rounds) on the same fitted model, checks that they agree (the ranks exactly, the user vectors to
1e-12), and the report gives the median of the per-round ratios.

    python experiments/bench_evaluation.py            # 7 rounds
    python experiments/bench_evaluation.py --quick    # 2 rounds, the _quick report
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "experiments"))

import harness  # noqa: E402
from item2vec_common import load_set  # noqa: E402

from recsys import atomic  # noqa: E402
from recsys.evaluation import evaluator  # noqa: E402
from recsys.evaluation.evaluator import EvalProtocol, evaluate_model  # noqa: E402
from recsys.models import item2vec as item2vec_module  # noqa: E402
from recsys.models.item2vec import Item2Vec, Item2VecConfig  # noqa: E402
from serving.encoder import decayed_mean, segment_sum  # noqa: E402

REPORTS = REPO / "experiments" / "reports"


def decayed_mean_reduceat(vectors: np.ndarray, offsets: np.ndarray, items: np.ndarray, decay: float,
                          max_len: int | None = None, block_events: int = 1 << 18) -> np.ndarray:
    """The reference: ``serving.encoder.decayed_mean`` as it was before the sparse product (np.add.reduceat)."""
    offsets = np.asarray(offsets, dtype=np.int64)
    out = np.zeros((len(offsets) - 1, vectors.shape[1]), dtype=np.float64)
    r0 = 0
    while r0 < len(offsets) - 1:
        r1 = max(int(np.searchsorted(offsets, offsets[r0] + block_events, side="right")) - 1, r0 + 1)
        r1 = min(r1, len(offsets) - 1)
        local = offsets[r0:r1 + 1] - offsets[r0]
        its = np.asarray(items[offsets[r0]:offsets[r1]], dtype=np.int64)
        age = np.repeat(local[1:], np.diff(local)) - 1 - np.arange(len(its))
        w = np.power(float(decay), age, dtype=np.float64)
        if max_len is not None:
            w[age >= int(max_len)] = 0.0
        num = segment_sum(w[:, None] * np.asarray(vectors[its], dtype=np.float64), local)
        den = segment_sum(w, local)
        out[r0:r1] = num / np.where(den > 0, den, 1.0)[:, None]
        r0 = r1
    return out


def batch_ranks_int64(s: torch.Tensor, tgt, chunk: int) -> np.ndarray:
    """The reference: the evaluator's ``_batch_ranks`` as it was before the int32 count."""
    coo_rows = np.repeat(np.arange(tgt.shape[0]), np.diff(tgt.indptr))
    r = torch.as_tensor(coo_rows, dtype=torch.long, device=s.device)
    c = torch.as_tensor(tgt.indices.astype(np.int64), device=s.device)
    out = np.empty(len(coo_rows), dtype=np.float64)
    one_each = len(coo_rows) == s.shape[0]
    for a in range(0, len(coo_rows), chunk):
        rr, cc = r[a : a + chunk], c[a : a + chunk]
        row_s = s[a : a + chunk] if one_each else s[rr]
        t = row_s.gather(1, cc[:, None])
        rank = (row_s >= t).sum(1).double()
        out[a : a + chunk] = torch.where(torch.isneginf(t[:, 0]), torch.inf, rank).cpu().numpy()
    return out


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7, help="alternating rounds (default 7)")
    ap.add_argument("--quick", action="store_true", help="2 rounds, the _quick report")
    args = ap.parse_args(argv)
    rounds = 2 if args.quick else args.rounds
    run = harness.ReportRun(seeds=[0], argv=argv)
    split = load_set("beauty")
    model = Item2Vec(Item2VecConfig(epochs=1, seed=0, scoring="in-out"), device="cpu")
    model.fit(split.train)
    hist, tgt = split.valid_history, split.valid_targets
    vecs = model.input_vectors()
    protocol = EvalProtocol()
    current_rank, current_mean = evaluator._batch_ranks, item2vec_module.decayed_mean

    def encode(fn):
        return lambda: fn(vecs, hist.offsets, hist.items, model.user_decay)

    def validation(ranks, mean):
        def go():
            evaluator._batch_ranks, item2vec_module.decayed_mean = ranks, mean
            try:
                return evaluate_model(model, hist, tgt, protocol)
            finally:
                evaluator._batch_ranks, item2vec_module.decayed_mean = current_rank, current_mean
        return go

    parts = {
        "encode users (decayed_mean)": {"current": encode(decayed_mean), "reference": encode(decayed_mean_reduceat)},
        "one validation (evaluate_model)": {"current": validation(current_rank, current_mean),
                                            "reference": validation(batch_ranks_int64, decayed_mean_reduceat)},
    }
    seconds = {p: {"current": [], "reference": []} for p in parts}
    for fns in parts.values():  # warm-up, untimed: first calls pay for imports and first-touch allocations
        for fn in fns.values():
            fn()
    for r in range(rounds):
        for part, fns in parts.items():
            outs = {}
            for name in (("current", "reference") if r % 2 == 0 else ("reference", "current")):
                s, outs[name] = timed(fns[name])
                seconds[part][name].append(s)
            if part.startswith("encode"):
                assert np.allclose(outs["current"], outs["reference"], rtol=0, atol=1e-12), "user vectors differ"
            else:
                assert outs["current"] == outs["reference"], "metrics differ"
            print(f"round {r + 1} {part}: current {seconds[part]['current'][-1]:.3f} s, reference "
                  f"{seconds[part]['reference'][-1]:.3f} s", flush=True)
    rows = {p: {"current_s": statistics.median(s["current"]), "reference_s": statistics.median(s["reference"]),
                "speedup": statistics.median(b / a for a, b in zip(s["current"], s["reference"], strict=True))}
            for p, s in seconds.items()}
    meta = run.finish()
    results = {"meta": meta, "rounds": rounds, "users": int(hist.n_rows), "history_events": int(hist.n_events),
               "items": int(vecs.shape[0]), "dim": int(vecs.shape[1]), "seconds": seconds, "rows": rows}
    name = "bench_evaluation_quick" if args.quick else "bench_evaluation"
    REPORTS.mkdir(parents=True, exist_ok=True)
    atomic.write_text(REPORTS / f"{name}.json", json.dumps(results, indent=2))
    lines = [f"# Validation speed on Beauty: current vs reference{' (quick)' if args.quick else ''}", "",
             *harness.header_lines(meta),
             f"Beauty validation: {results['users']:,} users, {results['history_events']:,} history events, "
             f"{results['items']:,} item rows of dim {results['dim']} (item2vec, 1 epoch, in-out). {rounds} "
             "alternating rounds; the results agree (metrics exactly, user vectors to 1e-12).", "",
             "| part | current s (median) | reference s (median) | speed-up (median of per-round ratios) |",
             "| --- | ---: | ---: | ---: |"]
    lines += [f"| {p} | {r['current_s']:.3f} | {r['reference_s']:.3f} | {r['speedup']:.2f}x |" for p, r in rows.items()]
    atomic.write_text(REPORTS / f"{name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return results


if __name__ == "__main__":
    main()
