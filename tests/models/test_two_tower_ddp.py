"""Data-parallel training: 2 ranks (gloo on the CPU; NCCL on 2 GPUs where a machine has them) match
1 process on the same global batch.

Each epoch here is exactly one optimisation step (the global batch holds every training window),
so the per-epoch records are per-step records: after every step both ranks hold identical
parameters, and the loss curve equals the single-process curve within float tolerance.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from recsys.models.two_tower import TwoTower, TwoTowerConfig
from recsys.prepare.sequences import Sequences


def _data() -> Sequences:
    rng = np.random.default_rng(3)
    rows = [[]] + [rng.integers(1, 31, size=int(rng.integers(3, 9))).tolist() for _ in range(40)]
    return Sequences.from_lists(rows, n_items=30)


def _config(loss: str) -> TwoTowerConfig:
    # dropout 0: dropout masks are drawn per rank, so only a dropout-free run can match bit for bit
    return TwoTowerConfig(dim=8, max_len=5, n_heads=2, dropout=0.0, epochs=4, batch_size=10_000, lr=1e-2,
                          warmup_steps=1, loss=loss, n_uniform_negatives=4 if loss == "sampled" else 0,
                          precision="fp32")  # bf16 autocast on CUDA would not match the fp32 reference


def _flat_params(model: TwoTower) -> np.ndarray:
    return torch.cat([p.detach().reshape(-1) for p in model.net.parameters()]).float().cpu().numpy().copy()


def _worker(rank: int, world: int, port: int, loss: str, out: str, device: str) -> None:
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.manual_seed(100 + rank)  # different local seeds: rank 0's start point must be broadcast
    params: list[np.ndarray] = []
    model = TwoTower(_config(loss), device=device)
    model.fit(_data(), on_epoch_end=lambda e, m: params.append(_flat_params(model)))
    np.save(Path(out) / f"params_{rank}.npy", np.stack(params))
    np.save(Path(out) / f"loss_{rank}.npy", np.array([h["loss"] for h in model.history]))
    # tear down together: a rank destroying its gloo group while its peer is still connected can abort
    # the process ("terminate called without an active exception", seen once in CI)
    dist.barrier()
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


NCCL = pytest.param("cuda", id="nccl", marks=[pytest.mark.cuda, pytest.mark.skipif(
    torch.cuda.device_count() < 2, reason=f"NCCL needs 2+ GPUs; this machine has {torch.cuda.device_count()}")])


@pytest.mark.slow
@pytest.mark.parametrize("device", [pytest.param("cpu", id="gloo"), NCCL])
@pytest.mark.parametrize("loss", ["full", "sampled"])
def test_two_ranks_match_one_process(tmp_path: Path, loss: str, device: str) -> None:
    mp.start_processes(_worker, args=(2, _free_port(), loss, str(tmp_path), device), nprocs=2, join=True,
                       start_method="spawn")
    p0, p1 = np.load(tmp_path / "params_0.npy"), np.load(tmp_path / "params_1.npy")
    np.testing.assert_array_equal(p0, p1)  # identical parameters on both ranks after every step
    single = TwoTower(_config(loss), device="cuda:0" if device == "cuda" else "cpu")
    params: list[np.ndarray] = []
    single.fit(_data(), on_epoch_end=lambda e, m: params.append(_flat_params(single)))
    np.testing.assert_allclose(np.load(tmp_path / "loss_0.npy"), [h["loss"] for h in single.history], rtol=1e-5)
    # Adam divides by sqrt(v): on parameters whose gradient is ~0 (rows of items absent from the batch),
    # summation-order roundoff becomes a visible update, so parameters match to a fraction of one lr step
    np.testing.assert_allclose(p0, np.stack(params), atol=0.2 * _config(loss).lr)
    assert not np.allclose(p0[0], p0[-1])  # it did train


@pytest.mark.slow
def test_torchrun_trains_across_two_processes(tmp_path: Path) -> None:
    """docs/guide.md's multi-process command, on 2 gloo ranks: rank 0 reports world size 2 and saves a model."""
    import json
    import shutil
    import subprocess

    torchrun = shutil.which("torchrun")
    assert torchrun, "torchrun comes with torch; the environment is incomplete"
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "experiments/train_ddp.py", "--device",
                          "cpu", "--synthetic", "5000", "--epochs", "1", "--save", str(tmp_path / "m")], cwd=repo,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["world_size"] == 2 and r["backend"] == "gloo" and r["epochs"] == 1 and 0 < r["test_hr_10"] <= 1
    assert TwoTower.load(tmp_path / "m", device="cpu").item_vectors().shape[0] > 1
