"""The GPU check: one command that proves the CUDA paths and measures them on a lent GPU machine.

    python experiments/gpu_check.py             # on a GPU machine; about 8 minutes on one H100/H200
    python experiments/gpu_check.py --dry-run   # every section on the CPU at toy size (CI runs this)

Sections, in one run, written to ``experiments/reports/gpu_check.{json,md}`` (``--out`` elsewhere):

1. the CUDA test subset (``pytest -m cuda``: item2vec, the two-tower models, the ensemble, evaluation on
   the device, checkpoint resume across devices, NCCL data parallel with 2+ GPUs);
2. CPU-vs-CUDA parity for the same seed: item2vec and a Transformer two-tower, test NDCG@10 on Beauty,
   within ``TOLERANCE``;
3. item2vec throughput on the device against gensim Word2Vec with 2 workers and with every core of the
   machine, same hyperparameters, measured in the same run;
4. the Beauty Transformer tower's seconds per epoch in fp32 and bf16;
5. the Beauty ensemble config trained (with its early stopping on validation) to its test metric.

A dry run uses a small synthetic log and tiny models on the CPU: it checks that every section runs, not
what it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from bench_item2vec import SHARED, load_synthetic  # noqa: E402
from item2vec_common import BEAUTY, fit_gensim, load_beauty, sentences  # noqa: E402

from recsys import atomic  # noqa: E402
from recsys.config import from_dict, load_toml  # noqa: E402
from recsys.device import bf16_supported  # noqa: E402
from recsys.evaluation.evaluator import EvalProtocol, evaluate_model, make_validator  # noqa: E402
from recsys.models.item2vec import Item2Vec, Item2VecConfig  # noqa: E402
from recsys.models.two_tower import TwoTower, TwoTowerConfig, TwoTowerEnsemble, TwoTowerEnsembleConfig  # noqa: E402

TOLERANCE = 0.005  # |CPU - CUDA| test NDCG@10, same seed: float sums round differently on each device
TARGETS = {"item2vec_vs_gensim_2_workers": 50.0, "item2vec_vs_gensim_all_cores": 10.0,
           "transformer_epoch_s": 3.0, "ensemble_ndcg_10": 0.0616, "ensemble_minutes": 5.0}
CONFIGS = HERE / "configs"


def model_table(name: str, **overrides) -> dict:
    table = dict(load_toml(CONFIGS / name)["model"])
    table.pop("name", None)
    return {**table, **overrides}


def cuda_tests(dry: bool) -> dict:
    """``pytest -m cuda`` over the device-parametrized tests; on a CPU machine every one of them skips."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                          "tests/models/test_devices.py", "tests/models/test_two_tower_ddp.py"], cwd=REPO,
                         capture_output=True, text=True)
    tail = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-500:]
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error)", tail)}
    return {"summary": tail, **counts, "ok": out.returncode in (0, 5) and not counts.get("failed"),
            "seconds": round(time.perf_counter() - t0, 1)}


def parity(split, device: torch.device, dry: bool) -> dict:
    """Same seed on the CPU and on ``device``: item2vec and a Transformer two-tower, test NDCG@10."""
    protocol = EvalProtocol(ks=(10,))
    i2v = Item2VecConfig(**{**SHARED, "epochs": 1 if dry else SHARED["epochs"]}, seed=7)
    tt = TwoTowerConfig(**model_table("beauty_two_tower_transformer.toml", epochs=1 if dry else 3, patience=0,
                                      precision="fp32", **({"dim": 16, "max_len": 10} if dry else {})))
    rows = {}
    for name, build in (("item2vec", lambda d: Item2Vec(i2v, device=d)), ("two_tower", lambda d: TwoTower(tt, d))):
        scores = {}
        for key, d in (("cpu", torch.device("cpu")), ("device", device)):
            model = build(d).fit(split.train)
            res = evaluate_model(model, split.test_history, split.test_targets, protocol, device=d)
            scores[key] = round(res["ndcg_10"], 5)
        diff = abs(scores["cpu"] - scores["device"])
        rows[name] = {**scores, "diff": round(diff, 5), "within": diff <= TOLERANCE}
    return {"tolerance": TOLERANCE, **rows}


def throughput(split, device: torch.device, dry: bool) -> dict:
    """item2vec fit time on ``device`` against gensim (2 workers; every core), same hyperparameters."""
    cfg = Item2VecConfig(**{**SHARED, "epochs": 1 if dry else SHARED["epochs"]}, seed=7)
    events = int(split.train.n_events) * cfg.epochs
    t0 = time.perf_counter()
    Item2Vec(cfg, device=device).fit(split.train)
    if device.type == "cuda":
        torch.cuda.synchronize()
    ours = time.perf_counter() - t0
    sents = sentences(split.train)
    out = {"events_per_epoch": int(split.train.n_events), "epochs": cfg.epochs,
           "ours": {"device": str(device), "seconds": round(ours, 2), "events_per_s": round(events / ours)}}
    cores = os.cpu_count() or 1
    for label, workers in (("gensim_2_workers", 2), ("gensim_all_cores", cores)):
        _, seconds = fit_gensim(split.train, sents, cfg, workers)
        out[label] = {"workers": workers, "seconds": round(seconds, 2), "events_per_s": round(events / seconds),
                      "ours_speedup": round(seconds / ours, 2)}
    return out


def transformer_epoch(split, device: torch.device, dry: bool) -> dict:
    """Seconds of the second epoch (the first includes warm-up and kernel selection) in fp32 and bf16."""
    out = {}
    for precision in ("fp32", "bf16"):
        if precision == "bf16" and not bf16_supported(device):
            out[precision] = {"skipped": f"{device} has no native bf16"}
            continue
        table = model_table("beauty_two_tower_transformer.toml", epochs=2, patience=0, precision=precision,
                            **({"dim": 16, "max_len": 10} if dry else {}))
        m = TwoTower(from_dict(TwoTowerConfig, table, where="gpu_check"), device=device).fit(split.train)
        out[precision] = {"epoch_s": [round(h["epoch_seconds"], 2) for h in m.history],
                          "second_epoch_s": round(m.history[-1]["epoch_seconds"], 2)}
    return out


def ensemble(split, device: torch.device, dry: bool) -> dict:
    """The committed Beauty ensemble config, early stopping on validation as in its CPU run, to test NDCG@10."""
    table = model_table("beauty_two_tower_ensemble.toml",
                        **({"epochs": 1, "dim": 16, "max_len": 10, "patience": 0} if dry else {}))
    if not bf16_supported(device) and table.get("precision") == "bf16":
        table["precision"] = "fp32"  # the config asks for bf16; this device has none (recorded below)
    cfg = from_dict(TwoTowerEnsembleConfig, table, where="gpu_check")
    protocol = EvalProtocol(ks=(10,))
    validate = make_validator(split.valid_history, split.valid_targets, protocol, device=device)
    t0 = time.perf_counter()
    m = TwoTowerEnsemble(cfg, device=device).fit(split.train, validate=validate)
    minutes = (time.perf_counter() - t0) / 60
    res = evaluate_model(m, split.test_history, split.test_targets, protocol, device=device)
    return {"precision": cfg.precision, "members": cfg.members, "dim": cfg.dim, "minutes": round(minutes, 2),
            "test_ndcg_10": round(res["ndcg_10"], 5), "test_hr_10": round(res["hr_10"], 5),
            "epochs": [len(mm.history) for mm in m.members]}


def verdicts(r: dict) -> dict:
    if r["dry_run"]:
        return {}
    t = r["throughput"]
    return {"CUDA tests pass": r["cuda_tests"]["ok"],
            "parity within tolerance": all(v["within"] for k, v in r["parity"].items() if isinstance(v, dict)),
            f"item2vec >= {TARGETS['item2vec_vs_gensim_2_workers']:.0f}x gensim (2 workers)":
                t["gensim_2_workers"]["ours_speedup"] >= TARGETS["item2vec_vs_gensim_2_workers"],
            f"item2vec >= {TARGETS['item2vec_vs_gensim_all_cores']:.0f}x gensim (all cores)":
                t["gensim_all_cores"]["ours_speedup"] >= TARGETS["item2vec_vs_gensim_all_cores"],
            f"Transformer epoch < {TARGETS['transformer_epoch_s']} s": min(
                v["second_epoch_s"] for v in r["transformer_epoch"].values() if "second_epoch_s" in v)
                < TARGETS["transformer_epoch_s"],
            f"ensemble test NDCG@10 >= {TARGETS['ensemble_ndcg_10']} in < {TARGETS['ensemble_minutes']} min":
                r["ensemble"]["test_ndcg_10"] >= TARGETS["ensemble_ndcg_10"]
                and r["ensemble"]["minutes"] < TARGETS["ensemble_minutes"]}


def markdown(r: dict) -> str:
    lines = ["# GPU check" + (" (dry run on the CPU: toy sizes, checks that every section runs)" if r["dry_run"]
                              else ""), "",
             f"Command: `{r['command']}`. Commit `{r['commit']}`. Device: {r['device_name']}; CPU: {r['cpus']} cores; "
             f"torch {r['torch']}. {r['seconds']} s in all.", ""]
    if r["verdicts"]:
        lines += ["| target | met |", "| --- | --- |"] + [f"| {k} | {'yes' if v else '**no**'} |"
                                                         for k, v in r["verdicts"].items()] + [""]
    c = r["cuda_tests"]
    lines += ["## CUDA tests", "", f"`pytest -m cuda`: {c['summary']} ({c['seconds']} s)", "",
              f"## CPU vs {r['device']} parity (test NDCG@10, same seed, tolerance {TOLERANCE})", "",
              "| model | cpu | device | difference | within |", "| --- | ---: | ---: | ---: | --- |"]
    for name in ("item2vec", "two_tower"):
        p = r["parity"][name]
        lines.append(f"| {name} | {p['cpu']} | {p['device']} | {p['diff']} | {p['within']} |")
    t = r["throughput"]
    lines += ["", f"## item2vec throughput ({t['events_per_epoch']:,} training events x {t['epochs']} epochs)", "",
              "| fitter | seconds | events/s | ours faster by |", "| --- | ---: | ---: | ---: |",
              f"| ours on {t['ours']['device']} | {t['ours']['seconds']} | {t['ours']['events_per_s']:,} | |"]
    for k in ("gensim_2_workers", "gensim_all_cores"):
        lines.append(f"| gensim, {t[k]['workers']} workers | {t[k]['seconds']} | {t[k]['events_per_s']:,} | "
                     f"{t[k]['ours_speedup']}x |")
    lines += ["", "## Transformer tower, seconds per epoch", ""]
    for prec, v in r["transformer_epoch"].items():
        lines.append(f"- {prec}: " + (v["skipped"] if "skipped" in v else f"{v['second_epoch_s']} s "
                                      f"(epochs: {v['epoch_s']})"))
    e = r["ensemble"]
    lines += ["", "## Ensemble config to its test metric", "",
              f"{e['members']} members, dim {e['dim']}, {e['precision']}: test NDCG@10 {e['test_ndcg_10']}, "
              f"HR@10 {e['test_hr_10']} in {e['minutes']} min (epochs per member {e['epochs']})."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="every section on the CPU at toy size (for CI)")
    ap.add_argument("--data", type=Path, default=BEAUTY, help="Beauty.txt (user i1 i2 ... per line)")
    ap.add_argument("--out", type=Path, default=HERE / "reports", help="report folder")
    args = ap.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        ap.error("no CUDA device here: run on a GPU machine, or pass --dry-run to check the script on the CPU")
    device = torch.device("cpu" if args.dry_run else "cuda")
    t0 = time.perf_counter()
    split = load_synthetic(5_000) if args.dry_run else load_beauty(args.data)
    r = {"dry_run": args.dry_run, "device": str(device),
         "device_name": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "CPU",
         "cpus": os.cpu_count(), "torch": torch.__version__}
    for name, fn in (("cuda_tests", lambda: cuda_tests(args.dry_run)),
                     ("parity", lambda: parity(split, device, args.dry_run)),
                     ("throughput", lambda: throughput(split, device, args.dry_run)),
                     ("transformer_epoch", lambda: transformer_epoch(split, device, args.dry_run)),
                     ("ensemble", lambda: ensemble(split, device, args.dry_run))):
        s = time.perf_counter()
        r[name] = fn()
        print(f"[{name}] {time.perf_counter() - s:.1f} s: {json.dumps(r[name])[:300]}", flush=True)
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    r.update(seconds=round(time.perf_counter() - t0, 1), commit=commit,
             command="python experiments/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    r["verdicts"] = verdicts(r)
    atomic.write_text(args.out / "gpu_check.json", json.dumps(r, indent=2))
    atomic.write_text(args.out / "gpu_check.md", markdown(r))
    print(markdown(r))
    return r


if __name__ == "__main__":
    main()
