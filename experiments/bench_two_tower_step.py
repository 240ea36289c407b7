"""Two-tower training step on Beauty: what the CPU speed-ups buy, side by side in one run.

Variants (the same prefix batches, the same initial weights, timed in alternating rounds):

- ``reference``: ``nn.Dropout`` + SDPA's own attention dropout + unfused AdamW, fp32 (before)
- ``fast_dropout``: :class:`~recsys.models.two_tower.user_tower.FastDropout` masks from ``torch.rand``
- ``fused_adamw``: + ``AdamW(fused=True)`` (what ``TwoTower`` trains with now, fp32)
- ``bf16``: + ``precision = "bf16"`` autocast (fast only on CPUs with AVX512-BF16 / AMX)

    python experiments/bench_two_tower_step.py                 # dim 128 and 256, 60 steps x 5 rounds
    python experiments/bench_two_tower_step.py --dims 128 --steps 20 --rounds 1 --quick

Writes ``experiments/reports/bench_two_tower_step{,_quick}.{json,md}``: median ms per step, the
estimated epoch (steps per epoch x median) and each variant's speed-up over ``reference`` (the median
of the per-round ratios: a round times every variant on the same batches).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import harness  # same folder
import numpy as np
import torch
import torch.nn.functional as F
from beauty_baselines import DEFAULT_DATA, REPORTS, read_beauty  # same folder

from recsys import atomic
from recsys.models.two_tower import TwoTower, TwoTowerConfig
from recsys.models.two_tower import user_tower as U
from recsys.models.two_tower.data import epoch_batches, training_windows, trim_padding
from recsys.models.two_tower.train import StepInputs, step_loss
from recsys.prepare.split import leave_last_out

VARIANTS = ("reference", "fast_dropout", "fused_adamw", "bf16")


def _sdpa_dropout(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, p: float) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)


def build(variant: str, dim: int, n_items: int) -> tuple[TwoTower, torch.optim.Optimizer]:
    cfg = TwoTowerConfig(dim=dim, windows="prefix", batch_size=128, dropout=0.4, loss="full",
                         precision="bf16" if variant == "bf16" else "fp32")
    model = TwoTower(cfg, device="cpu")
    model._build(n_items)
    if variant == "reference":  # torch's own dropout modules in place of FastDropout
        for mod in list(model.net.modules()):
            for name, child in mod.named_children():
                if isinstance(child, U.FastDropout):
                    setattr(mod, name, torch.nn.Dropout(child.p))
    fused = variant in ("fused_adamw", "bf16")
    opt = torch.optim.AdamW(model.net.parameters(), lr=cfg.lr, fused=fused, foreach=None if fused else False)
    return model, opt


def time_steps(variant: str, model: TwoTower, opt: torch.optim.Optimizer, windows, batches: list[np.ndarray]) -> float:
    """Seconds for ``batches`` training steps (forward, backward, clip, AdamW)."""
    fast_attention = U.attention
    U.attention = _sdpa_dropout if variant == "reference" else fast_attention
    aux = StepInputs(model.n_items)
    model.net.train()
    try:
        t0 = time.perf_counter()
        for idx in batches:
            inp, tgt = (torch.as_tensor(a) for a in trim_padding(*windows.batch(idx)))
            loss, n = step_loss(model.net, model.config, inp, tgt, aux, model.dist, model.device)
            opt.zero_grad(set_to_none=True)
            (loss / n).backward()
            torch.nn.utils.clip_grad_norm_(model.net.parameters(), model.config.grad_clip)
            opt.step()
        return time.perf_counter() - t0
    finally:
        U.attention = fast_attention


def bench_dim(dim: int, split, args: argparse.Namespace) -> dict:
    windows = training_windows(split.train, 50, "prefix")
    all_batches = epoch_batches(len(windows), 128, seed=0, epoch=1, lengths=windows.lengths)
    runs = {v: build(v, dim, split.train.n_items) for v in VARIANTS}
    for v in VARIANTS:  # warm-up (allocator, oneDNN kernels), not timed
        time_steps(v, *runs[v], windows, all_batches[-10:])
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(args.rounds):
        chunk = all_batches[r * args.steps : (r + 1) * args.steps]  # every variant runs the same batches
        for v in VARIANTS if r % 2 == 0 else reversed(VARIANTS):  # alternate the order against drift
            times[v].append(time_steps(v, *runs[v], windows, chunk) / len(chunk))
    out = {}
    for v in VARIANTS:
        med = statistics.median(times[v])
        ratio = statistics.median(a / b for a, b in zip(times["reference"], times[v], strict=True))  # per round
        out[v] = {"ms_per_step": round(1000 * med, 1), "epoch_s": round(med * len(all_batches), 1),
                  "speedup_vs_reference": round(ratio, 2), "ms_per_round": [round(1000 * t, 1) for t in times[v]]}
        print(f"dim {dim} {v:>12}: {out[v]['ms_per_step']} ms/step, epoch ~{out[v]['epoch_s']} s, "
              f"{out[v]['speedup_vs_reference']}x", flush=True)
    return {"steps_per_epoch": len(all_batches), "variants": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Beauty.txt (user i1 i2 ... per line)")
    ap.add_argument("--dims", default="128,256", help="comma list of model widths")
    ap.add_argument("--steps", type=int, default=60, help="steps per variant per round")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds on the same batches per round; "
                    "the median of the per-round speed-ups is reported")
    ap.add_argument("--quick", action="store_true", help="write the _quick report (smoke runs)")
    args = ap.parse_args()
    run = harness.ReportRun()
    if args.steps < 1 or args.rounds < 1:
        raise SystemExit("--steps and --rounds must be >= 1")
    events, n_users, n_items = read_beauty(args.data, None)
    split = leave_last_out(events, n_users, n_items)
    dims = {d: bench_dim(int(d), split, args) for d in args.dims.split(",")}
    results = {"meta": run.finish(), "command": run.meta["command"],
               "setup": "prefix windows, batch 128, full softmax over 12,101 items, 2 layers, 2 heads, dropout 0.4",
               "dims": dims}
    write_report(results, REPORTS / ("bench_two_tower_step_quick" if args.quick else "bench_two_tower_step"))


def write_report(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path.with_suffix(".json"), json.dumps(results, indent=2))
    lines = ["# Two-tower training step on Beauty: CPU speed-ups", "",
             *harness.header_lines(results["meta"]), f"Setup: {results['setup']}.", "",
             "| dim | variant | ms/step | epoch s | speed-up vs reference |", "| --- | --- | ---: | ---: | ---: |"]
    for dim, r in results["dims"].items():
        for v, m in r["variants"].items():
            lines.append(f"| {dim} | {v} | {m['ms_per_step']} | {m['epoch_s']} | {m['speedup_vs_reference']}x |")
    atomic.write_text(path.with_suffix(".md"), "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
