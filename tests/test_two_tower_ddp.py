"""Data-parallel training: 2 gloo processes on the CPU match 1 process on the same global batch.

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

from recsys.data.sequences import Sequences
from recsys.models.two_tower import TwoTower, TwoTowerConfig


def _data() -> Sequences:
    rng = np.random.default_rng(3)
    rows = [[]] + [rng.integers(1, 31, size=int(rng.integers(3, 9))).tolist() for _ in range(40)]
    return Sequences.from_lists(rows, n_items=30)


def _config(loss: str) -> TwoTowerConfig:
    # dropout 0: dropout masks are drawn per rank, so only a dropout-free run can match bit for bit
    return TwoTowerConfig(dim=8, max_len=5, n_heads=2, dropout=0.0, epochs=4, batch_size=10_000, lr=1e-2,
                          warmup_steps=1, loss=loss, n_uniform_negatives=4 if loss == "sampled" else 0)


def _flat_params(model: TwoTower) -> np.ndarray:
    return torch.cat([p.detach().reshape(-1) for p in model.net.parameters()]).numpy().copy()


def _worker(rank: int, world: int, port: int, loss: str, out: str) -> None:
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.manual_seed(100 + rank)  # different local seeds: rank 0's start point must be broadcast
    params: list[np.ndarray] = []
    model = TwoTower(_config(loss), device="cpu")
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


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["full", "sampled"])
def test_two_gloo_ranks_match_one_process(tmp_path: Path, loss: str) -> None:
    mp.start_processes(_worker, args=(2, _free_port(), loss, str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    p0, p1 = np.load(tmp_path / "params_0.npy"), np.load(tmp_path / "params_1.npy")
    np.testing.assert_array_equal(p0, p1)  # identical parameters on both ranks after every step
    single = TwoTower(_config(loss), device="cpu")
    params: list[np.ndarray] = []
    single.fit(_data(), on_epoch_end=lambda e, m: params.append(_flat_params(single)))
    np.testing.assert_allclose(np.load(tmp_path / "loss_0.npy"), [h["loss"] for h in single.history], rtol=1e-5)
    # Adam divides by sqrt(v): on parameters whose gradient is ~0 (rows of items absent from the batch),
    # summation-order roundoff becomes a visible update, so parameters match to a fraction of one lr step
    np.testing.assert_allclose(p0, np.stack(params), atol=0.2 * _config(loss).lr)
    assert not np.allclose(p0[0], p0[-1])  # it did train
