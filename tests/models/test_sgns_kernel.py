"""The fused CPU skip-gram step: the tensor step's update (loss, vectors, accumulators), its exp, its bounds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numba import njit
from support import clustered_split

from recsys.models.item2vec import Item2Vec, Item2VecConfig, skipgram_step
from recsys.models.row_updates import RowState
from recsys.models.sgns_kernel import _exp_nonpositive, fused_skipgram_step, supports


def _weights(v: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(v, d, generator=gen) * 0.3, torch.randn(v, d, generator=gen) * 0.3


def _state(v: int, fill: float, decay: float, per_step: bool, eps: float = 1e-10) -> RowState:
    """Accumulators at ``fill``; per step: the clock at 5 and rows last updated at steps 0..4."""
    if not per_step:
        return RowState(torch.full((v,), fill), decay, eps=eps)
    return RowState(torch.full((v,), fill), decay, torch.arange(v) % 5, torch.tensor([5]), eps=eps)


@pytest.mark.parametrize(("share", "pairs"), [(1, 37), (3, 37), (16, 200), (16, 4096)])
@pytest.mark.parametrize(("decay", "per_step", "eps", "skip", "sat"), [
    (1.0, False, 1e-10, False, 0.0), (0.999, False, 1e-10, False, 0.0), (0.9, True, 1e-10, False, 0.0),
    (0.9, True, 0.3, False, 0.0), (0.9, True, 1e-10, True, 0.0), (0.9, True, 1e-10, False, 0.4)])
def test_the_fused_step_is_the_tensor_step(share: int, pairs: int, decay: float, per_step: bool, eps: float,
                                           skip: bool, sat: float) -> None:
    """Same loss, vectors and accumulators as skipgram_step's "adagrad" rule: repeated sources, targets and negatives
    (a row that is both a target and a negative), a short last group, accumulators already non-zero, and per step,
    rows last updated at different steps (the same clocks and last steps after); a floor ``eps`` under the square
    root of the accumulators (0.3: about their own square root, so it changes every step); negatives equal to their
    pair's target left out (``skip_target``); terms scoring beyond ``saturate`` (0.4: about one sd of the scores)
    left unstepped."""
    v, d, k = 60, 16, 5
    gen = torch.Generator().manual_seed(share + pairs)
    source = torch.randint(1, v, (pairs,), generator=gen)
    target = torch.randint(1, v, (pairs,), generator=gen)
    source[: pairs // 4] = 7  # a popular row, also drawn as a negative below
    target[pairs // 4 : pairs // 2] = 7  # and the target of pairs in whose group it is a negative
    neg = torch.randint(1, v, (-(-pairs // share), k), generator=gen)
    neg[:, 0] = 7
    out = {}
    for name, step in (("tensor", skipgram_step), ("fused", fused_skipgram_step)):
        w_in, w_out = _weights(v, d, 1)
        s_in, s_out = _state(v, 0.5, decay, per_step, eps), _state(v, 0.25, decay, per_step, eps)
        loss = step(w_in, w_out, source, target, neg, share, lr=0.05, sparse=True, rule="adagrad",
                    state_in=s_in, state_out=s_out, skip_target=skip, saturate=sat)
        out[name] = (float(loss), w_in, w_out, s_in.acc, s_out.acc,
                     *((s_in.last, s_out.last, s_in.clock, s_out.clock) if per_step else ()))
    (lt, *tensors_t), (lf, *tensors_f) = out["tensor"], out["fused"]
    assert lf == pytest.approx(lt, rel=1e-6)
    for a, b in zip(tensors_t, tensors_f, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    assert not torch.equal(out["fused"][1], _weights(v, d, 1)[0])  # it did move the vectors


def test_exp_of_non_positive_floats_to_float32_precision_and_nan_stays_nan() -> None:
    @njit
    def run(x: np.ndarray) -> np.ndarray:
        out, bits = np.empty_like(x), np.empty(len(x), np.int32)
        _exp_nonpositive(x, out, bits, len(x))
        return out

    x = -np.concatenate([np.linspace(0, 90, 200_001), [0.0, 1e-8, 87.3, 200.0, 1e30]]).astype(np.float32)
    got, want = run(x).astype(np.float64), np.exp(x.astype(np.float64))
    normal = x > -87
    assert np.all(np.abs(got[normal] - want[normal]) <= 2e-7 * want[normal])
    assert np.all((got[~normal] >= 0) & (got[~normal] < 1e-37))  # below -87: the float32 floor, never inf or NaN
    assert np.isnan(run(np.array([np.nan, -1.0], np.float32))).tolist() == [True, False]


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_vector_gives_a_non_finite_loss(bad: float) -> None:
    """The fit checks the loss every step: a NaN or infinite row must reach it (no "finite math" assumption)."""
    w_in, w_out = _weights(10, 8, 2)
    w_in[3, 2] = bad
    source, target = torch.tensor([3, 1, 2, 3]), torch.tensor([4, 5, 6, 7])
    neg = torch.tensor([[8, 9], [1, 2]])
    loss = fused_skipgram_step(w_in, w_out, source, target, neg, 2, lr=0.05, state_in=RowState.zeros(10),
                               state_out=RowState.zeros(10))
    assert not np.isfinite(loss)


def test_one_item_in_every_pair_takes_a_bounded_step_whatever_the_batch() -> None:
    """As the tensor step's test: item 1 in every pair (source, target and every negative) moves by at most
    lr * sqrt(dim) at the default learning rate, flat in the batch size, finite."""
    cfg = Item2VecConfig()
    d, n_items = cfg.dim, 50
    steps = []
    for batch in (64, 512, 4096, 32768):
        gen = torch.Generator().manual_seed(0)
        others = torch.randint(2, n_items + 1, (batch,), generator=gen)
        source = torch.cat([torch.ones(batch // 2, dtype=torch.long), others[: batch // 2]])
        target = torch.cat([others[batch // 2 :], torch.ones(batch - batch // 2, dtype=torch.long)])
        neg = torch.ones((-(-batch // cfg.shared_negatives), cfg.negatives), dtype=torch.long)
        w_in = torch.randn(n_items + 1, d, generator=torch.Generator().manual_seed(1)) * 0.5
        w_out = torch.randn(n_items + 1, d, generator=torch.Generator().manual_seed(2)) * 0.5
        before = w_in[1].clone(), w_out[1].clone()
        loss = fused_skipgram_step(w_in, w_out, source, target, neg, cfg.shared_negatives, lr=cfg.lr,
                                   state_in=RowState(torch.zeros(n_items + 1), cfg.adagrad_decay),
                                   state_out=RowState(torch.zeros(n_items + 1), cfg.adagrad_decay),
                                   saturate=cfg.saturate)
        assert np.isfinite(loss) and torch.isfinite(w_in).all() and torch.isfinite(w_out).all()
        steps.append(max(float((w_in[1] - before[0]).norm()), float((w_out[1] - before[1]).norm())))
    assert max(steps) <= cfg.lr * d**0.5 * (1 + 1e-5), steps
    assert max(steps) <= 1.5 * min(steps), steps


@pytest.mark.parametrize(("per", "eps", "skip", "sat"), [
    ("update", 1e-10, False, 0.0), ("step", 1e-10, False, 0.0), ("step", 0.01, False, 0.0), ("step", 1e-10, True, 0.0),
    ("step", 1e-10, False, 1.0)])
def test_a_fit_with_the_fused_step_matches_the_tensor_step(per: str, eps: float, skip: bool, sat: float) -> None:
    """The same seed draws the same batches: the two kernels give the same vectors up to float32 rounding (per step,
    the clocks carry over from epoch to epoch in both; ``adagrad_eps``, ``skip_target_negatives`` and ``saturate``
    reach both)."""
    split = clustered_split()
    cfg = {"dim": 16, "epochs": 3, "batch_size": 512, "negatives": 5, "seed": 2, "lr": 0.05, "adagrad_decay": 0.99,
           "adagrad_decay_per": per, "adagrad_eps": eps, "skip_target_negatives": skip, "saturate": sat}
    a = Item2Vec(Item2VecConfig(**cfg, kernel="auto"), device="cpu").fit(split.train)
    b = Item2Vec(Item2VecConfig(**cfg, kernel="tensor"), device="cpu").fit(split.train)
    np.testing.assert_allclose(a.w_in, b.w_in, atol=1e-4)
    np.testing.assert_allclose(a.w_out, b.w_out, atol=1e-4)
    if per == "step":  # the setting reaches the step: the fit of the same seed with the other setting differs
        other = ({"skip_target_negatives": False} if skip else {"saturate": 0.0} if sat else
                 {"adagrad_decay_per": "update"} if eps == 1e-10 else {"adagrad_eps": 1e-10})
        c = Item2Vec(Item2VecConfig(**{**cfg, **other}), device="cpu").fit(split.train)
        assert np.abs(c.w_in - a.w_in).max() > 1e-3


def test_where_the_fused_step_applies_and_its_errors() -> None:
    cpu = torch.device("cpu")
    assert supports(cpu, "skipgram", "adagrad", True)
    assert not supports(torch.device("cuda"), "skipgram", "adagrad", True)  # accelerators keep the tensor step
    assert not supports(cpu, "cbow", "adagrad", True) and not supports(cpu, "skipgram", "mean", True)
    assert not supports(cpu, "skipgram", "adagrad", False)
    w_in, w_out = _weights(10, 4, 0)
    kw = {"lr": 0.1, "state_in": RowState.zeros(10), "state_out": RowState.zeros(10)}
    pairs = torch.tensor([1, 2, 3])
    with pytest.raises(ValueError, match="float32"):
        fused_skipgram_step(w_in.double(), w_out.double(), pairs, pairs, torch.tensor([[4]]), 3, **kw)
    with pytest.raises(ValueError, match="serve 2 pairs, not 3"):
        fused_skipgram_step(w_in, w_out, pairs, pairs, torch.tensor([[4]]), 2, **kw)
    with pytest.raises(ValueError, match="one decay"):
        fused_skipgram_step(w_in, w_out, pairs, pairs, torch.tensor([[4]]), 3, lr=0.1,
                            state_in=RowState.zeros(10), state_out=RowState(torch.zeros(10), 0.5))
    with pytest.raises(ValueError, match="and eps"):
        fused_skipgram_step(w_in, w_out, pairs, pairs, torch.tensor([[4]]), 3, lr=0.1,
                            state_in=RowState.zeros(10), state_out=RowState.zeros(10, eps=0.01))


_FIT_HASH = """
import hashlib, sys
sys.path[:0] = sys.argv[1:3]
from support import clustered_split
from recsys.models.item2vec import Item2Vec, Item2VecConfig
cfg = Item2VecConfig(dim=16, epochs=3, batch_size=512, negatives=5, seed=2, lr=0.05, saturate=1.0,
                     skip_target_negatives=True)
model = Item2Vec(cfg, device="cpu").fit(clustered_split().train)
print(hashlib.sha256(model.w_in.tobytes() + model.w_out.tobytes()).hexdigest())
"""


def test_a_seed_fixes_the_fit_whether_the_loop_is_compiled_or_loaded_from_the_cache(tmp_path) -> None:
    """Two processes with an empty numba cache, then with the cache the first wrote: the same bits (with fastmath's
    "arcp" the compiled and the cached loop rounded differently, so the first run after an install differed)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import support

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    paths = [str(Path(__file__).resolve().parents[2]), str(Path(support.__file__).parent)]

    def fit_hash() -> str:
        out = subprocess.run([sys.executable, "-c", _FIT_HASH, *paths], env=env, capture_output=True, text=True,
                             check=True)
        return out.stdout.strip()

    compiled = fit_hash()
    assert list(tmp_path.rglob("*_step-*.nbi")), "the first process wrote no cache: the test would compare nothing"
    assert fit_hash() == compiled
