"""Two-tower unit tests: losses against hand-computed values, masks, features, windows, save/load, resume."""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from conftest import markov_sequences
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.config import ConfigError
from recsys.models.two_tower import ItemFeatures, TwoTower, TwoTowerConfig, TwoTowerEnsemble
from recsys.models.two_tower import losses as L
from recsys.models.two_tower.checkpoint import load_tensors, save_tensors
from recsys.models.two_tower.data import (
    PrefixWindows,
    SlidingWindows,
    epoch_batches,
    epoch_span,
    epoch_steps,
    make_windows,
    target_counts,
    training_windows,
    trim_padding,
)
from recsys.models.two_tower.features import text_tokens
from recsys.models.two_tower.item_tower import gather_bags
from recsys.models.two_tower.user_tower import (
    FastDropout,
    PooledUserTower,
    TransformerUserTower,
    attention,
    lowpass_matrix,
)
from recsys.prepare.sequences import Sequences

TINY = dict(dim=8, max_len=6, n_heads=2, epochs=2, batch_size=8, lr=5e-3, warmup_steps=2)


# -- losses --------------------------------------------------------------------------------------
def test_sampled_logits_logq_and_accidental_hits_by_hand() -> None:
    users = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    cands = torch.tensor([[1.0, 1.0], [2.0, 0.0], [0.0, 1.0]])
    cand_ids = torch.tensor([5, 7, 5])  # candidate 2 is a second copy of item 5
    log_q = torch.log(torch.tensor([2.0, 1.0, 2.0]))
    labels = torch.tensor([0, 1])  # row 0's positive is item 5 (col 0); row 1's is item 7 (col 1)
    got = L.sampled_softmax_logits(users, cands, cand_ids, log_q, labels, temperature=0.5)
    ln2 = math.log(2.0)
    # dot / 0.5 - log q; row 0 col 2 is item 5 again -> accidental hit -> -inf
    want = torch.tensor([[2.0 - ln2, 4.0, -math.inf], [4.0 - ln2, 0.0, 4.0 - ln2]])
    torch.testing.assert_close(got, want)
    loss = L.sampled_softmax_loss(users, cands, cand_ids, log_q, labels, temperature=0.5)
    row0 = -(2.0 - ln2) + math.log(math.exp(2.0 - ln2) + math.exp(4.0))
    row1 = -0.0 + math.log(2 * math.exp(4.0 - ln2) + 1.0)
    assert loss.item() == pytest.approx(row0 + row1, rel=1e-5)


def test_full_softmax_by_hand_and_padding_never_a_candidate() -> None:
    users = torch.tensor([[1.0, 0.0]])
    items = torch.tensor([[100.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # row 0 (padding) would dominate
    loss = L.full_softmax_loss(users, items, torch.tensor([1]))
    assert loss.item() == pytest.approx(-1.0 + math.log(math.e + 1.0), rel=1e-6)
    cos = L.full_softmax_loss(users, items * 3, torch.tensor([1]), similarity="cosine", temperature=0.1)
    assert cos.item() == pytest.approx(math.log1p(math.exp(-10.0)), rel=1e-3)  # float32 logits


def test_mixture_log_q() -> None:
    prob = torch.tensor([0.0, 0.75, 0.25])
    got = L.mixture_log_q(torch.tensor([1, 2]), prob, n_in_batch=4, n_uniform=2, n_items=2)
    torch.testing.assert_close(got, torch.log(torch.tensor([4 * 0.75 + 1.0, 4 * 0.25 + 1.0])))


def test_streaming_frequency_converges_to_the_gap() -> None:
    est = L.StreamingFrequency(n_buckets=10, alpha=0.5)
    for step in range(1, 40):
        ids = [3] + ([4] if step % 4 == 0 else [])  # item 3 every step, item 4 every 4th step
        est.update(torch.tensor(ids + ids), step)  # a repeat within a batch counts once
    est_gap = est.log_expected_count(torch.tensor([3, 4])).exp()
    torch.testing.assert_close(est_gap, torch.tensor([1.0, 0.25]), atol=5e-3, rtol=0)
    first = L.StreamingFrequency(n_buckets=10, alpha=0.5)
    first.update(torch.tensor([1]), 1)
    first.update(torch.tensor([1]), 3)  # B = 0.5 * prior(10) + 0.5 * (3 - 1) = 6
    assert first.gap[1].item() == pytest.approx(6.0)


# -- masks ---------------------------------------------------------------------------------------
def _towers() -> list[torch.nn.Module]:
    torch.manual_seed(0)
    cfg = TwoTowerConfig(dim=8, max_len=6, n_heads=2, dropout=0.0)
    towers = [TransformerUserTower(cfg), PooledUserTower(cfg)]
    towers.append(PooledUserTower(TwoTowerConfig(dim=8, max_len=6, n_heads=2, dropout=0.0, pooling="mean")))
    return [t.eval() for t in towers]


@pytest.mark.parametrize("tower", range(3))
def test_causal_mask_future_does_not_leak(tower: int) -> None:
    net = _towers()[tower]
    x = torch.randn(3, 6, 8)
    valid = torch.ones(3, 6, dtype=torch.bool)
    out = net(x, valid)
    x2 = x.clone()
    x2[:, 3:] = torch.randn(3, 3, 8) * 5  # change the future of position 2
    out2 = net(x2, valid)
    torch.testing.assert_close(out[:, :3], out2[:, :3])
    assert not torch.allclose(out[:, 3:], out2[:, 3:])


@pytest.mark.parametrize("tower", range(3))
def test_padding_is_ignored_and_can_be_trimmed(tower: int) -> None:
    net = _towers()[tower]
    x = torch.randn(2, 6, 8)
    valid = torch.tensor([[False, False, True, True, True, True], [False, False, False, False, True, True]])
    out = net(x, valid)
    x2 = x.masked_fill(~valid[..., None], 0.0) + (~valid[..., None]) * torch.randn(2, 6, 8) * 7
    torch.testing.assert_close(out[valid], net(x2, valid)[valid])
    trimmed = net(x[:, 2:], valid[:, 2:])  # what training does to an all-padding prefix
    torch.testing.assert_close(out[:, 2:][valid[:, 2:]], trimmed[valid[:, 2:]])
    assert torch.isfinite(out).all()



@pytest.mark.parametrize("tower", range(3))
def test_last_only_is_the_last_output(tower: int) -> None:
    """``last_only`` (prefix training, user encoding) computes exactly the newest position's output."""
    net = _towers()[tower]
    x = torch.randn(3, 6, 8)
    valid = torch.tensor([[True] * 6, [False, False, True, True, True, True], [False] * 5 + [True]])
    last = net(x, valid, last_only=True)
    assert last.shape == (3, 1, 8)
    torch.testing.assert_close(last, net(x, valid)[:, -1:])


def test_lowpass_matrix_keeps_the_lowest_frequencies() -> None:
    np.testing.assert_allclose(lowpass_matrix(6, 1), np.full((6, 6), 1 / 6), atol=1e-7)  # the mean
    np.testing.assert_allclose(lowpass_matrix(6, 4), np.eye(6), atol=1e-6)  # all 6 // 2 + 1 bins: the identity
    z = np.random.default_rng(0).normal(size=(7, 3))
    spec = np.fft.rfft(z, axis=0)
    spec[2:] = 0
    np.testing.assert_allclose(lowpass_matrix(7, 2) @ z, np.fft.irfft(spec, n=7, axis=0), atol=1e-5)


def _bsa_tower(**kw: object) -> TransformerUserTower:
    torch.manual_seed(0)
    net = TransformerUserTower(TwoTowerConfig(dim=8, max_len=6, n_heads=2, dropout=0.0, mixer="bsa",
                                              windows="prefix", bsa_keep=2, **kw)).eval()
    with torch.no_grad():
        for blk in net.blocks:
            blk.beta.uniform_(0.2, 1.5)  # a trained beta: the high frequencies damped, not passed through
    return net


def test_bsa_tower_newest_output_ignores_padding_and_last_only_matches() -> None:
    """The filter mixes the whole window, but over zeroed padding and a right-aligned matrix, so the newest
    output (what prefix training and serving use) is the same with any amount of left padding or trimmed."""
    net = _bsa_tower()
    x = torch.randn(2, 6, 8)
    valid = torch.tensor([[False, False, True, True, True, True], [False, False, False, False, True, True]])
    out = net(x, valid)[:, -1]
    noisy = x.masked_fill(~valid[..., None], 0.0) + (~valid[..., None]) * torch.randn(2, 6, 8) * 7
    torch.testing.assert_close(net(noisy, valid)[:, -1], out)
    torch.testing.assert_close(net(x[:, 2:], valid[:, 2:])[:, -1], out)  # trimmed, as training does
    torch.testing.assert_close(net(x[1:, 4:], valid[1:, 4:])[:, -1], out[1:])  # no padding at all
    torch.testing.assert_close(net(x, valid, last_only=True)[:, -1], out)
    attention_only = TransformerUserTower(TwoTowerConfig(dim=8, max_len=6, n_heads=2, dropout=0.0)).eval()
    attention_only.load_state_dict({k: v for k, v in net.state_dict().items() if "beta" not in k and k != "lowpass"})
    assert not torch.allclose(attention_only(x, valid)[:, -1], out)  # the filter takes part


def test_numpy_bsa_tower_matches_torch_padded_and_unpadded() -> None:
    from serving.towers import TowerEncoder

    net = _bsa_tower()
    table = torch.randn(10, 8)
    weights = {"item_table": table.numpy(), **{k: v.numpy() for k, v in net.state_dict().items()}}
    spec = {"kind": "transformer_bsa", "pooling": "attention", "max_len": 6, "n_layers": 2, "n_heads": 2,
            "normalize": False, "bsa_alpha": 0.7}
    enc = TowerEncoder(spec, weights)
    padded = np.array([[0, 0, 3, 4, 5, 6], [0, 0, 0, 0, 1, 9], [1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        want = net(table[padded], torch.from_numpy(padded > 0), last_only=True)[:, -1].numpy()
    np.testing.assert_allclose(enc.encode_padded(padded), want, atol=2e-5)
    np.testing.assert_allclose(enc.encode_padded(padded[1:2, 4:]), want[1:2], atol=2e-5)  # one request, no padding
    with pytest.raises(ValueError, match="lowpass"):
        TowerEncoder(spec, {k: v for k, v in weights.items() if k != "lowpass"})


def test_bsa_needs_the_transformer_and_prefixes() -> None:
    with pytest.raises(ConfigError, match="mixer"):
        TwoTowerConfig(mixer="bsa", windows="sliding")
    with pytest.raises(ConfigError, match="mixer"):
        TwoTowerConfig(mixer="bsa", windows="prefix", user_tower="pooled")
    with pytest.raises(ConfigError, match="bsa_keep"):
        TwoTowerConfig(mixer="bsa", windows="prefix", max_len=6, bsa_keep=5)
    with pytest.raises(ConfigError, match="bsa_alpha"):
        TwoTowerConfig(mixer="bsa", windows="prefix", bsa_alpha=1.5)


def test_fast_dropout_and_explicit_attention() -> None:
    torch.manual_seed(0)
    drop = FastDropout(0.3)
    x = torch.ones(200_000)
    y = drop(x)
    assert abs(float((y == 0).float().mean()) - 0.3) < 0.01  # drop rate p
    assert torch.unique(y).tolist() == pytest.approx([0.0, 1 / 0.7])  # survivors scaled by 1 / (1 - p)
    assert abs(float(y.mean()) - 1.0) < 0.01  # unbiased
    assert torch.equal(drop.eval()(x), x)
    q, k, v = torch.randn(2, 2, 2, 4), torch.randn(2, 2, 5, 4), torch.randn(2, 2, 5, 4)  # (B, H, T, hd)
    mask = torch.tensor([[[[True, False, False, False, True], [True, True, True, True, True]]]]).expand(2, 1, 2, 5)
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(attention(q, k, v, mask, 1e-12), want)  # the explicit (dropout) path


def test_bf16_precision_on_cpu_tracks_fp32() -> None:
    from recsys.device import autocast, bf16_supported

    cpu, lin, x = torch.device("cpu"), torch.nn.Linear(4, 4), torch.randn(2, 4)
    with autocast(cpu):
        assert lin(x).dtype == torch.float32  # auto: fp32 on the CPU
    with pytest.raises(ValueError, match="precision='fp16' is not one of"):
        autocast(cpu, "fp16")
    if not bf16_supported(cpu):  # this CPU lacks AVX512-BF16/AMX: bf16 is refused up front, naming the fix
        with pytest.raises(ValueError, match="has no native bf16; set precision"):
            TwoTower(TwoTowerConfig(**TINY, precision="bf16"), device="cpu")
        return
    with autocast(cpu, "bf16"):
        assert lin(x).dtype == torch.bfloat16
    tr = _markov()
    fp32 = TwoTower(TwoTowerConfig(**TINY), device="cpu").fit(tr)
    bf16 = TwoTower(TwoTowerConfig(**TINY, precision="bf16"), device="cpu").fit(tr)
    a, b = fp32.history[-1]["loss"], bf16.history[-1]["loss"]
    assert math.isfinite(b) and abs(a - b) < 0.02 * a  # same run to bf16 round-off
    assert np.isfinite(bf16.user_vectors()).all()


# -- features, bags and windows ------------------------------------------------------------------
def test_item_features_and_bags() -> None:
    df = pl.DataFrame({"item_idx": [2, 1], "title": ["Red lipstick", None], "categories": ["Lips|Beauty", None]})
    f = ItemFeatures.from_frame(df, n_items=3, text_buckets=97)
    assert f.cat_vocab == ["Beauty", "Lips"] and f.categories_of(2).tolist() == [2, 1]
    assert len(f.categories_of(1)) == len(f.text_of(1)) == len(f.text_of(3)) == 0
    assert f.text_of(2).tolist() == text_tokens("red LIPSTICK", 97)  # stable hashing, case-folded
    assert set(text_tokens("red", 97)) <= set(f.text_of(2).tolist())  # word + its <re, red, ed> n-grams
    # "<red>" + 3-grams "<re" "red" "ed>" + 4-grams "<red" "red>" (the 5-gram is "<red>" itself)
    assert text_tokens("red", 10**9, 3, 5) == [1 + zlib.crc32(g.encode()) % 10**9
                                               for g in ["<red>", "<re", "red", "ed>", "<red", "red>"]]
    flat, off = gather_bags(torch.as_tensor(f.text_offsets), torch.as_tensor(f.text_values), torch.tensor([2, 1, 2]))
    n = len(f.text_of(2))
    assert off.tolist() == [0, n, n] and flat.tolist() == f.text_of(2).tolist() * 2
    with pytest.raises(ValueError, match="unique"):
        ItemFeatures.from_frame(pl.DataFrame({"item_idx": [1, 1]}), n_items=2)
    with pytest.raises(ValueError, match="outside 1..2"):
        ItemFeatures.from_frame(pl.DataFrame({"item_idx": [3]}), n_items=2)


def test_windows_cover_every_pair_once() -> None:
    tr = Sequences.from_lists([[], [1, 2, 3, 4, 5, 6], [7], [8, 9]], n_items=9)
    inp, tgt = make_windows(tr, max_len=2)
    assert inp.tolist() == [[0, 1], [2, 3], [4, 5], [0, 8]]
    assert tgt.tolist() == [[0, 2], [3, 4], [5, 6], [0, 9]]
    i2, t2 = trim_padding(inp[[0, 3]], tgt[[0, 3]])
    assert i2.tolist() == [[1], [8]] and t2.tolist() == [[2], [9]]


def test_prefix_windows_match_brute_force_and_sliding_targets() -> None:
    rows = [[], [1, 2, 3, 4, 5, 6], [7], [8, 9], [3, 3, 1]]
    tr = Sequences.from_lists(rows, n_items=9)
    pre, sliding = PrefixWindows(tr, max_len=3), SlidingWindows(tr, max_len=3)
    want = []  # every target with its (up to) 3 previous items, left-padded
    for r in rows:
        for i in range(1, len(r)):
            hist = r[max(0, i - 3) : i]
            want.append(([0] * (3 - len(hist)) + hist, r[i]))
    inp, tgt = pre.batch(np.arange(len(pre)))
    assert [(a.tolist(), int(b[-1])) for a, b in zip(inp, tgt, strict=True)] == want
    assert (tgt[:, :-1] == 0).all() and pre.lengths.tolist() == [min(i, 3) for r in rows for i in range(1, len(r))]
    assert sorted(tgt[tgt > 0].tolist()) == sorted(sliding.targets[sliding.targets > 0].tolist())
    np.testing.assert_array_equal(target_counts(tr), np.bincount(tgt[:, -1], minlength=10) * (np.arange(10) > 0))
    i2, t2 = pre.batch(np.array([5, 0]))  # any order, rows built independently
    assert i2.tolist() == [[0, 0, 8], [0, 0, 1]] and t2[:, -1].tolist() == [9, 2]
    i3, t3 = trim_padding(*pre.batch(np.array([5, 7])))  # trimming keeps every history item
    assert i3.tolist() == [[0, 8], [3, 3]] and t3.tolist() == [[0, 9], [0, 1]]


def test_rank_shards_union_is_the_global_batch() -> None:
    lengths = np.random.default_rng(0).integers(1, 9, size=103)
    one = epoch_batches(103, 10, seed=1, epoch=3, lengths=lengths)
    two = [epoch_batches(103, 10, seed=1, epoch=3, rank=r, world_size=2, lengths=lengths) for r in range(2)]
    assert len(one) == len(two[0]) == len(two[1]) == 11
    for b, r0, r1 in zip(one, *two, strict=True):
        assert sorted(b.tolist()) == sorted(r0.tolist() + r1.tolist())
    assert sorted(np.concatenate(one).tolist()) == list(range(103))
    # 4 bytes a window, in the order rng.permutation gave before (training runs stay reproducible)
    plain = epoch_batches(103, 10, seed=1, epoch=3)
    assert plain[0].dtype == np.int32
    assert np.concatenate(plain).tolist() == np.random.default_rng([1, 3]).permutation(103).tolist()


@pytest.mark.parametrize("lengths", [None, np.random.default_rng(0).integers(1, 9, size=103)])
def test_epoch_examples_cut_each_pass_into_epochs_that_together_see_every_window_once(lengths) -> None:
    assert [epoch_span(103, e, 30) for e in (1, 4, 5, 8)] == [(1, 0, 30), (1, 90, 103), (2, 0, 30), (2, 90, 103)]
    assert epoch_span(103, 3, 0) == epoch_span(103, 3, 103) == epoch_span(103, 3, 500) == (3, 0, 103)
    assert epoch_steps(103, 10, 8, 30) == 2 * (3 + 3 + 3 + 2) and epoch_steps(103, 10, 2) == 2 * 11
    for first in (1, 5):  # the epochs of pass 1 (1-4) and of pass 2 (5-8)
        epochs = [np.concatenate(epoch_batches(103, 10, seed=1, epoch=e, lengths=lengths, epoch_examples=30))
                  for e in range(first, first + 4)]
        assert [len(e) for e in epochs] == [30, 30, 30, 13]
        assert sorted(np.concatenate(epochs).tolist()) == list(range(103))
        if lengths is None:  # in the pass's permutation order
            want = np.random.default_rng([1, 1 + first // 4]).permutation(103)
            assert np.concatenate(epochs).tolist() == want.tolist()
    # 0 (the default) and a slice as large as the data are the whole pass, as before the option
    for e in (0, 103):
        got = epoch_batches(103, 10, seed=1, epoch=3, lengths=lengths, epoch_examples=e)
        assert [b.tolist() for b in got] == [b.tolist() for b in epoch_batches(103, 10, seed=1, epoch=3,
                                                                             lengths=lengths)]


def test_with_epoch_examples_a_time_budget_stops_a_fit_within_one_pass() -> None:
    from pipelines.progress import time_budget

    tr = _markov()
    n = len(training_windows(tr, 6, "sliding"))
    cfg = TwoTowerConfig(**{**TINY, "epochs": 8}, epoch_examples=n // 4 + 1)  # 4 epochs a pass
    ticks = iter([0.0, 0.0, 61.0])  # the clock: start, after epoch 1 (0 s), after epoch 2 (61 s: past 1 min)
    m = TwoTower(cfg, device="cpu").fit(tr, on_epoch_end=time_budget(1.0, clock=lambda: next(ticks)))
    assert len(m.history) == 2 and "time budget" in m.stopped  # half of the first pass trained, then stopped
    assert np.isfinite(m.item_vectors()).all()
    with pytest.raises(ConfigError, match="epoch_examples"):
        TwoTowerConfig(epoch_examples=-1)


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match="n_heads"):
        TwoTowerConfig(dim=10, n_heads=3)
    with pytest.raises(ValueError, match="id_dropout > 0 needs item features"):
        TwoTower(TwoTowerConfig(**TINY, id_dropout=0.5), device="cpu").fit(Sequences.from_lists([[], [1, 2]]))


# -- model: save/load, resume --------------------------------------------------------------------
_markov = markov_sequences


def _features(n_items: int) -> ItemFeatures:
    df = pl.DataFrame({"item_idx": np.arange(1, n_items + 1),
                       "title": [f"item number {i} {'even' if i % 2 == 0 else 'odd'}" for i in range(1, n_items + 1)],
                       "categories": [[f"c{i % 3}"] for i in range(1, n_items + 1)]})
    return ItemFeatures.from_frame(df, n_items=n_items, text_buckets=101)


@pytest.mark.parametrize("extra", [
    dict(user_tower="transformer", loss="full"),
    dict(user_tower="transformer", loss="full", windows="prefix", mixer="bsa", bsa_keep=2),
    dict(user_tower="pooled", loss="sampled", logq="streaming", n_uniform_negatives=5, similarity="cosine",
         fusion="concat", id_dropout=0.3),
])
def test_save_load_identical_scores(tmp_path: Path, extra: dict) -> None:
    tr = _markov()
    feats = _features(tr.n_items) if "id_dropout" in extra else None
    m = TwoTower(TwoTowerConfig(**TINY, **extra), device="cpu", item_features=feats).fit(tr)
    m.save(tmp_path / "m")
    back = TwoTower.load(tmp_path / "m", device="cpu")
    np.testing.assert_array_equal(m.item_vectors(), back.item_vectors())
    np.testing.assert_array_equal(m.user_vectors(), back.user_vectors())
    assert back.similarity == extra.get("similarity", "dot")
    if feats is not None:
        new = feats.encode_new(["item number 4 even"], [["c1"]])
        np.testing.assert_array_equal(m.encode_item_features(new), back.encode_item_features(new))


@pytest.mark.parametrize("loss,windows", [("full", "sliding"), ("sampled", "sliding"), ("full", "prefix")])
def test_resume_continues_the_same_run(tmp_path: Path, loss: str, windows: str) -> None:
    tr = _markov()
    cfg = TwoTowerConfig(**{**TINY, "epochs": 3}, loss=loss, dropout=0.2, n_uniform_negatives=3, windows=windows)
    whole = TwoTower(cfg, device="cpu").fit(tr)

    class Stop(Exception):
        pass

    def crash(epoch: int, metrics: dict) -> None:
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        TwoTower(cfg, device="cpu").fit(tr, on_epoch_end=crash, checkpoint_dir=tmp_path / "ck")
    seen: list[int] = []
    resumed = TwoTower(cfg, device="cpu").fit(tr, on_epoch_end=lambda e, m: seen.append(e),
                                              checkpoint_dir=tmp_path / "ck")
    assert seen == [3]  # epochs 1-2 came from the checkpoint
    for (k, a), b in zip(whole.net.state_dict().items(), resumed.net.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    assert [h["loss"] for h in whole.history] == [h["loss"] for h in resumed.history]


def test_warm_start_begins_from_the_given_weights_and_nan_rows_keep_their_init(tmp_path: Path) -> None:
    tr = _markov()
    first = TwoTower(TwoTowerConfig(**TINY), device="cpu").fit(tr)
    first.save(tmp_path / "m")
    weights = load_tensors(tmp_path / "m" / "weights")
    weights["item.id_emb.weight"][3] = float("nan")  # an item the earlier model did not know
    save_tensors(tmp_path / "w", weights)
    cfg = TwoTowerConfig(**{**TINY, "epochs": 0}, init_weights=str(tmp_path / "w"))
    warm = TwoTower(cfg, device="cpu").fit(tr)
    cold = TwoTower(TwoTowerConfig(**{**TINY, "epochs": 0}), device="cpu").fit(tr)
    got, was, fresh = (m.net.state_dict()["item.id_emb.weight"] for m in (warm, first, cold))
    rows = [i for i in range(tr.n_items + 1) if i != 3]
    torch.testing.assert_close(got[rows], was[rows], rtol=0, atol=0)
    torch.testing.assert_close(got[3], fresh[3], rtol=0, atol=0)  # random init, not NaN
    for k, v in first.net["user"].state_dict().items():
        torch.testing.assert_close(warm.net["user"].state_dict()[k], v, rtol=0, atol=0, msg=k)
    # warm_epochs bounds the epochs a warm start trains
    short = TwoTower(TwoTowerConfig(**{**TINY, "epochs": 4}, init_weights=str(tmp_path / "w"), warm_epochs=1),
                     device="cpu").fit(tr)
    assert len(short.history) == 1


def test_warm_start_from_another_architecture_is_a_clear_error(tmp_path: Path) -> None:
    tr = _markov()
    TwoTower(TwoTowerConfig(**TINY), device="cpu").fit(tr).save(tmp_path / "m")
    bigger = TwoTowerConfig(**{**TINY, "dim": 16}, init_weights=str(tmp_path / "m" / "weights"))
    with pytest.raises(ConfigError, match="does not fit this model's architecture"):
        TwoTower(bigger, device="cpu").fit(tr)
    with pytest.raises(ConfigError, match="init_weights: cannot read"):
        TwoTower(TwoTowerConfig(**TINY, init_weights=str(tmp_path / "nowhere")), device="cpu").fit(tr)


def test_early_stopping_restores_the_best_epoch() -> None:
    tr = _markov()
    scores = iter([0.1, 0.3, 0.2, 0.25, 0.9])
    snaps: list[np.ndarray] = []

    def validate(model: TwoTower) -> dict[str, float]:
        snaps.append(model.item_vectors())
        return {"val_ndcg_10": next(scores)}

    m = TwoTower(TwoTowerConfig(**{**TINY, "epochs": 5}, patience=2), device="cpu").fit(tr, validate=validate)
    assert len(m.history) == 4  # epochs 3 and 4 did not beat epoch 2 -> stop before epoch 5
    np.testing.assert_array_equal(m.item_vectors(), snaps[1])


# -- export for serving without torch -----------------------------------------------------------
@pytest.mark.parametrize("extra", [dict(user_tower="transformer"), dict(user_tower="pooled", similarity="cosine"),
                                   dict(user_tower="pooled", pooling="mean"),
                                   dict(user_tower="transformer", windows="prefix", mixer="bsa", bsa_keep=2)])
def test_numpy_user_encoder_matches_torch(extra: dict) -> None:
    from recsys.export.bundle import model_encoder

    tr = _markov()
    m = TwoTower(TwoTowerConfig(**TINY, **extra, dropout=0.1), device="cpu", item_features=_features(20)).fit(tr)
    enc = model_encoder(m)
    hist = Sequences.from_lists([[], [3], [1, 2, 3, 4, 5, 6, 7, 8, 9], [20, 19]], n_items=20)
    want = m.encode_users(hist)
    np.testing.assert_allclose(enc.encode_batch(hist.offsets, hist.items), want, atol=2e-5)
    for r in range(hist.n_rows):  # one history at a time, unpadded, as a request is encoded
        np.testing.assert_allclose(enc.encode(hist.row(r)), want[r], atol=2e-5)


def test_run_configs_build_the_model() -> None:
    from pipelines.config import load_run_config
    from recsys.models.registry import build_model

    paths = sorted((Path(__file__).resolve().parents[2] / "experiments" / "configs").glob("beauty_two_tower_*.toml"))
    assert {p.stem for p in paths} >= {"beauty_two_tower_transformer", "beauty_two_tower_pooled",
                                       "beauty_two_tower_ensemble"}
    for p in paths:
        cfg = load_run_config(p)
        model = build_model(cfg.model_name, cfg.model, device="cpu")
        if p.stem.endswith("ensemble"):
            assert isinstance(model, TwoTowerEnsemble) and model.config.members == 2
            assert model.config.user_tower == "transformer"
        else:
            assert isinstance(model, TwoTower) and model.config.user_tower in p.stem


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(1, 9), max_size=12), min_size=1, max_size=8), st.integers(1, 5))
def test_batches_read_from_the_sequences_equal_the_materialised_windows(rows, max_len) -> None:
    """Sliding windows and prefixes read per batch from ``train.items`` are exactly the eager ones."""
    tr = Sequences.from_lists([[], *rows], n_items=9)
    inp, tgt = make_windows(tr, max_len)
    sliding = SlidingWindows(tr, max_len)
    assert len(sliding) == len(inp)
    a, b = sliding.batch(np.arange(len(sliding)))
    np.testing.assert_array_equal(a, inp)
    np.testing.assert_array_equal(b, tgt)
    np.testing.assert_array_equal(sliding.lengths, (tgt > 0).sum(axis=1))
    pre = PrefixWindows(tr, max_len)
    want = [([0] * (max_len - len(r[max(0, i - max_len):i])) + r[max(0, i - max_len):i], r[i])
            for r in [[], *rows] for i in range(1, len(r))]
    x, y = pre.batch(np.arange(len(pre)))
    assert [(p.tolist(), int(q[-1])) for p, q in zip(x, y, strict=True)] == want


def test_two_tower_trains_on_a_memory_mapped_split_without_copying_it(tmp_path) -> None:
    """A split loaded with mmap=True trains to the same weights as the same split in memory."""
    tr = markov_sequences(n_users=40, n_items=15, seed=3)
    tr.save(tmp_path / "train")
    mapped = Sequences.load(tmp_path / "train", mmap=True)
    assert isinstance(mapped.items, np.memmap)
    for kind in ("sliding", "prefix"):
        windows = training_windows(mapped, 4, kind)
        assert np.shares_memory(windows.items, mapped.items)  # read per batch, never copied
    cfg = TwoTowerConfig(**TINY)
    a, b = TwoTower(cfg, device="cpu").fit(tr), TwoTower(cfg, device="cpu").fit(mapped)
    np.testing.assert_allclose(a.item_vectors(), b.item_vectors())
