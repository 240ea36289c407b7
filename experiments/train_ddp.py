"""Data-parallel two-tower training under ``torchrun``: one process per GPU (NCCL), or per CPU rank (gloo).

    torchrun --standalone --nproc_per_node=2 experiments/train_ddp.py \\
        --config experiments/configs/beauty_two_tower_transformer.toml            # 2 GPUs, NCCL
    torchrun --standalone --nproc_per_node=2 experiments/train_ddp.py --device cpu --synthetic 5000 --epochs 1

Every rank reads the same data and trains on its share of each global batch (gradients all-reduced,
so ``batch_size`` in the config is the global batch); rank 0 evaluates on the test split, prints the
metrics and saves the model with ``--save``. ``recsys train`` itself runs one process (it logs to MLflow);
this script is the multi-process path.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch.distributed as dist

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_item2vec import load_synthetic  # noqa: E402
from item2vec_common import BEAUTY, load_beauty  # noqa: E402

from recsys.config import from_dict, load_toml  # noqa: E402
from recsys.evaluation.evaluator import EvalProtocol, evaluate_model  # noqa: E402
from recsys.models.two_tower import TwoTower, TwoTowerConfig  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=HERE / "configs" / "beauty_two_tower_transformer.toml",
                    help="a two-tower config TOML (its [model] table)")
    ap.add_argument("--data", type=Path, default=BEAUTY, help="Beauty.txt (user i1 i2 ... per line)")
    ap.add_argument("--synthetic", type=int, default=0, help="train on N synthetic events instead of --data")
    ap.add_argument("--device", default="auto", help="auto (each rank takes its local GPU), cuda or cpu")
    ap.add_argument("--epochs", type=int, default=0, help="override the config's epochs (0 = keep)")
    ap.add_argument("--save", type=Path, default=None, help="rank 0 saves the trained model here")
    args = ap.parse_args(argv)
    table = dict(load_toml(args.config)["model"])
    table.pop("name", None)
    if args.epochs:
        table.update(epochs=args.epochs, patience=0)
    cfg = from_dict(TwoTowerConfig, table, where=str(args.config))
    split = load_synthetic(args.synthetic) if args.synthetic else load_beauty(args.data)
    model = TwoTower(cfg, device=args.device).fit(split.train)  # joins the process group under torchrun
    if model.dist.is_main:
        res = evaluate_model(model, split.test_history, split.test_targets, EvalProtocol(ks=(10,)),
                             device=model.device)
        print(json.dumps({"world_size": model.dist.world_size, "device": str(model.device),
                          "backend": dist.get_backend() if dist.is_initialized() else None,
                          "epochs": len(model.history), "test_ndcg_10": round(res["ndcg_10"], 5),
                          "test_hr_10": round(res["hr_10"], 5)}))
        if args.save:
            model.save(args.save)
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
