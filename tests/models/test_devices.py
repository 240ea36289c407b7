"""Every training and evaluation path on every device: ``cpu`` always, ``cuda`` where there is one
(skipped with the reason otherwise), as implicit parametrizes its tests. On CUDA each result is also
compared with the CPU's for the same seed. ``experiments/gpu_check.py`` runs the ``cuda`` subset."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import markov_sequences

from recsys import device as devices
from recsys.evaluation.evaluator import EvalProtocol, evaluate_model
from recsys.models.item2vec import Item2Vec, Item2VecConfig
from recsys.models.popularity import Popularity
from recsys.models.two_tower import TwoTower, TwoTowerConfig, TwoTowerEnsemble
from recsys.models.two_tower.ensemble import TwoTowerEnsembleConfig

NO_CUDA = f"no CUDA device on this machine (torch {torch.__version__}, cuda {torch.version.cuda})"
CUDA = pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                         reason=NO_CUDA)])
DEVICES = ["cpu", CUDA]
PROTOCOL = EvalProtocol(ks=(10,), exclude_history=True)


def _split() -> tuple:
    """Markov sequences: train = all but the last item, test target = the last item."""
    seqs = markov_sequences(n_users=300, n_items=40, seed=3)
    hist, tgt = [[]], [[]]
    for u in range(1, seqs.n_rows):
        s = seqs.row(u).tolist()
        hist.append(s[:-1])
        tgt.append(s[-1:])
    from recsys.prepare.sequences import Sequences

    return Sequences.from_lists(hist, n_items=40), Sequences.from_lists(tgt, n_items=40)


def _ndcg(model, device: str) -> float:
    hist, tgt = _split()
    return evaluate_model(model, hist, tgt, PROTOCOL, device=torch.device(device))["ndcg_10"]


def _popularity() -> float:
    hist, _ = _split()
    return _ndcg(Popularity().fit(hist), "cpu")


TT = dict(dim=16, max_len=8, n_heads=2, dropout=0.0, epochs=6, batch_size=64, lr=1e-2, warmup_steps=5)


@pytest.mark.parametrize("device", DEVICES)
def test_item2vec_trains_in_float32_and_beats_popularity(device: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_autocast(*a, **k):
        raise AssertionError("item2vec's hand-written SGD updates must not run under autocast")

    monkeypatch.setattr(torch, "autocast", no_autocast)
    hist, _ = _split()
    cfg = Item2VecConfig(dim=16, epochs=20, batch_size=256, window=2, seed=1, scoring="in-in", negatives=10, lr=0.1,
                         user_decay=0.1)  # pinned: the test does not move with the tuned defaults
    m = Item2Vec(cfg, device=device).fit(hist)
    assert m.w_in.dtype == np.float32 and m.device.type == device
    score = _ndcg(m, device)
    assert score > _popularity() + 0.05
    if device == "cuda":  # same seed on the CPU: the same quality (draws agree, sums round differently)
        assert abs(score - _ndcg(Item2Vec(cfg, device="cpu").fit(hist), "cpu")) < 0.03


@pytest.mark.parametrize("device", DEVICES)
def test_item2vec_adagrad_step_is_rowwise_adagrad_on_the_summed_gradient(device: str) -> None:
    """skipgram_step under the default rule equals autograd's summed gradient G put through row-wise Adagrad
    by hand (``w -= lr * G / sqrt(mean_d G**2)`` on each touched row), in float32 on the device."""
    from recsys.models.item2vec import skipgram_step
    from recsys.models.row_updates import RowState

    g = torch.Generator().manual_seed(0)
    w_in, w_out = torch.randn(12, 8, generator=g) * 0.3, torch.randn(12, 8, generator=g) * 0.3
    source = torch.tensor([1, 2, 2, 5, 8, 1, 1, 1, 3])  # repeated rows: one summed gradient each
    target = torch.tensor([2, 1, 4, 4, 7, 3, 3, 9, 1])
    neg = torch.randint(1, 12, (9, 3), generator=g)
    wi, wo = w_in.clone().requires_grad_(), w_out.clone().requires_grad_()
    u, v, nv = wi[source], wo[target], wo[neg]
    loss = -(torch.nn.functional.logsigmoid((u * v).sum(1)).sum()
             + torch.nn.functional.logsigmoid(-(nv * u[:, None, :]).sum(-1)).sum())
    loss.backward()
    want = []
    for w, grad in ((w_in, wi.grad), (w_out, wo.grad)):
        acc = grad.pow(2).mean(1, keepdim=True)
        want.append(w - 0.1 * torch.where(acc > 0, grad / acc.sqrt().clamp_min(1e-30), 0.0))
    dev = torch.device(device)
    got_in, got_out = w_in.to(dev), w_out.to(dev)
    state_in, state_out = RowState.zeros(12, dev), RowState.zeros(12, dev)
    got = skipgram_step(got_in, got_out, source.to(dev), target.to(dev), neg.to(dev), 1, lr=0.1, sparse=True,
                        rule="adagrad", state_in=state_in, state_out=state_out)
    assert got_in.dtype == torch.float32 and float(got) == pytest.approx(loss.item(), rel=1e-5)
    torch.testing.assert_close(got_in.cpu(), want[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_out.cpu(), want[1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(state_in.acc.cpu(), wi.grad.pow(2).mean(1), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("tower", ["pooled", "transformer"])
@pytest.mark.parametrize("device", DEVICES)
def test_two_tower_trains_and_evaluates_on_the_device(device: str, tower: str) -> None:
    hist, _ = _split()
    cfg = TwoTowerConfig(**TT, user_tower=tower, precision="fp32")
    m = TwoTower(cfg, device=device).fit(hist)
    assert m.device.type == device and next(m.net.parameters()).device.type == device
    assert m.history[-1]["loss"] < m.history[0]["loss"]
    score = _ndcg(m, device)
    assert score > _popularity() + 0.05
    assert score == pytest.approx(_ndcg(m, "cpu"), abs=1e-6)  # scoring on the device = scoring on the CPU
    if device == "cuda":
        assert abs(score - _ndcg(TwoTower(cfg, device="cpu").fit(hist), "cpu")) < 0.05


@pytest.mark.parametrize("device", DEVICES)
def test_ensemble_trains_on_the_device(device: str) -> None:
    hist, _ = _split()
    cfg = TwoTowerEnsembleConfig(members=2, **TT)
    m = TwoTowerEnsemble(cfg, device=device).fit(hist)
    assert all(mm.device.type == device for mm in m.members)
    assert _ndcg(m, device) > _popularity() + 0.05


PAIRS = [("cpu", "cpu"), pytest.param("cpu", "cuda", marks=CUDA.marks), pytest.param("cuda", "cpu", marks=CUDA.marks)]


@pytest.mark.parametrize(("first", "then"), PAIRS)
def test_checkpoint_resumes_on_another_device(tmp_path: Path, first: str, then: str) -> None:
    hist, _ = _split()
    cfg = TwoTowerConfig(**{**TT, "dropout": 0.1, "epochs": 2}, precision="fp32", checkpoint_dir=str(tmp_path))
    TwoTower(cfg, device=first).fit(hist)
    resumed = TwoTower(TwoTowerConfig(**{**cfg.__dict__, "epochs": 4}), device=then).fit(hist)
    assert len(resumed.history) == 4 and resumed.history[3]["loss"] < resumed.history[0]["loss"]
    assert json.loads((tmp_path / "last" / "state.json").read_text())["rng_device"] == then


def test_a_generator_state_from_another_device_reseeds_instead_of_failing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """What a checkpoint written on CUDA holds (a 16-byte Philox state), resumed on the CPU."""
    hist, _ = _split()
    cfg = TwoTowerConfig(**{**TT, "dropout": 0.1, "epochs": 2}, precision="fp32", checkpoint_dir=str(tmp_path))
    TwoTower(cfg, device="cpu").fit(hist)
    state_path = tmp_path / "last" / "state.json"
    state = json.loads(state_path.read_text())
    state_path.write_text(json.dumps({**state, "rng_device": "cuda"}))
    rng_files = sorted((tmp_path / "last" / "rng").glob("*.npy"))
    assert rng_files
    np.save(rng_files[0], np.arange(16, dtype=np.uint8))  # a CUDA generator's state: seed + offset
    with caplog.at_level(logging.WARNING):
        resumed = TwoTower(TwoTowerConfig(**{**cfg.__dict__, "epochs": 3}), device="cpu").fit(hist)
    assert len(resumed.history) == 3
    assert "was written on cuda, resuming on cpu" in caplog.text


def test_bf16_on_a_device_without_it_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "bf16_supported", lambda d: False)
    with pytest.raises(ValueError, match=r"precision='bf16' was set but this cpu .*set precision = \"fp32\""):
        TwoTower(TwoTowerConfig(**TT, precision="bf16"), device="cpu")
    TwoTower(TwoTowerConfig(**TT, precision="auto"), device="cpu")  # auto never asks for what is missing
    with pytest.raises(ValueError, match="precision='fp16' is not one of"):
        devices.check_precision(torch.device("cpu"), "fp16")
