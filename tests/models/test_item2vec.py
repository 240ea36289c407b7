"""item2vec: hand-derived SGNS steps vs autograd, learning on planted clusters, determinism, NaN, I/O."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support import PER_CLUSTER, clustered_split

from recsys.config import ConfigError
from recsys.evaluation.evaluator import evaluate_model
from recsys.models.base import NaNLossError, NotFittedError
from recsys.models.item2vec import Item2Vec, Item2VecConfig, cbow_step, skipgram_step
from recsys.models.popularity import Popularity
from recsys.models.registry import build_model
from recsys.models.row_updates import RowState, apply_rows, row_coefficients
from recsys.prepare.sequences import Sequences
from recsys.prepare.split import SplitData


@pytest.fixture(scope="module")
def split() -> SplitData:
    return clustered_split()


def fast(**kw: object) -> Item2VecConfig:
    """Small and fast; the sampling settings pinned here so the tests do not move with the tuned defaults."""
    pinned = {"window": 5, "negatives": 5, "ns_exponent": 0.75, "user_decay": 1.0, "scoring": "in-in",
              "subsample": 1e-3}
    return Item2VecConfig(**{"dim": 16, "epochs": 8, "batch_size": 1024, "lr": 0.2, "seed": 1, **pinned, **kw})


@pytest.mark.parametrize(
    "kw",
    [
        {"mode": "skipgram", "window_kind": "dynamic"},
        # a session gives 132 pairs here: an item recurs often in a batch (the bounded row update copes)
        {"mode": "skipgram", "window_kind": "session", "shared_negatives": 4, "batch_size": 256},
        {"mode": "cbow", "window_kind": "fixed", "window": 3, "batch_size": 256},
        {"mode": "skipgram", "window_kind": "dynamic", "workers": 2, "batch_size": 256},
    ],
    ids=["skipgram-dynamic", "skipgram-session-shared", "cbow-fixed", "skipgram-hogwild-2-workers"],
)
def test_learns_planted_clusters_and_beats_popularity(split: SplitData, kw: dict) -> None:
    losses: list[float] = []
    model = Item2Vec(fast(**kw), device="cpu").fit(split.train, on_epoch_end=lambda e, m: losses.append(m["loss"]))
    assert losses[-1] < losses[0] - 0.3, losses
    vecs = model.item_vectors()[1:]
    sims = vecs @ vecs.T
    np.fill_diagonal(sims, -np.inf)
    nn = np.argsort(-sims, axis=1)[:, :5]
    cluster = np.arange(len(vecs)) // PER_CLUSTER
    purity = (cluster[nn] == cluster[:, None]).mean()
    assert purity > 0.85, f"only {purity:.2f} of the 5 nearest neighbours share the item's cluster"
    ours = evaluate_model(model, split.test_history, split.test_targets)
    pop = evaluate_model(Popularity().fit(split.train), split.test_history, split.test_targets)
    assert ours["hr_10"] > pop["hr_10"] + 0.2, (ours["hr_10"], pop["hr_10"])
    assert ours["ndcg_10"] > pop["ndcg_10"] + 0.1


def _reference_losses(w_in: torch.Tensor, w_out: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
                      nv: torch.Tensor) -> torch.Tensor:
    """Autograd SGNS loss: -log s(u.v) - sum_k log s(-u.n_k); u (B, D), v (B, D), nv (B, K, D)."""
    return -(F.logsigmoid((u * v).sum(1)).sum() + F.logsigmoid(-(nv * u[:, None, :]).sum(-1)).sum())


@pytest.mark.parametrize("share", [1, 3])
@pytest.mark.parametrize("sparse", [True, False])
def test_skipgram_step_matches_autograd(share: int, sparse: bool) -> None:
    g = torch.Generator().manual_seed(0)
    w_in, w_out = torch.randn(9, 4, generator=g), torch.randn(9, 4, generator=g)
    source = torch.tensor([1, 2, 2, 5, 8, 1, 3])  # repeated rows must accumulate
    target = torch.tensor([2, 1, 4, 4, 7, 3, 3])
    neg = torch.randint(1, 9, (-(-7 // share), 2), generator=g)
    wi, wo = w_in.clone().requires_grad_(), w_out.clone().requires_grad_()
    nv = wo[neg][torch.arange(7) // share]  # (P, K, D): pair p uses negative row p // share
    ref = _reference_losses(wi, wo, wi[source], wo[target], nv)
    ref.backward()
    loss = skipgram_step(w_in, w_out, source, target, neg, share, lr=0.1, sparse=sparse)
    assert loss.dtype == torch.float64 and float(loss) == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(w_in, wi.detach() - 0.1 * wi.grad)
    torch.testing.assert_close(w_out, wo.detach() - 0.1 * wo.grad)


def test_cbow_step_matches_autograd_with_word2vec_context_update() -> None:
    g = torch.Generator().manual_seed(1)
    w_in, w_out = torch.randn(9, 4, generator=g), torch.randn(9, 4, generator=g)
    context = torch.tensor([1, 2, 3, 3, 5, 6])
    local = torch.tensor([0, 0, 0, 1, 2, 2])
    centre = torch.tensor([4, 7, 1])
    neg = torch.randint(1, 9, (3, 2), generator=g)
    wo = w_out.clone().requires_grad_()
    h = (torch.zeros(3, 4).index_add_(0, local, w_in[context]) / torch.tensor([3.0, 1.0, 2.0])[:, None])
    h.requires_grad_()
    ref = _reference_losses(w_in, wo, h, wo[centre], wo[neg])
    ref.backward()
    loss = cbow_step(w_in.clone(), w_out.clone(), context, centre, neg, local, lr=0.1, sparse=True)
    assert float(loss) == pytest.approx(ref.item(), rel=1e-5)
    w_in2, w_out2 = w_in.clone(), w_out.clone()
    cbow_step(w_in2, w_out2, context, centre, neg, local, lr=0.1, sparse=True)
    torch.testing.assert_close(w_out2, wo.detach() - 0.1 * wo.grad)
    # word2vec / gensim cbow_mean: each context vector gets the full error of its group's mean
    torch.testing.assert_close(w_in2, w_in.index_add(0, context, h.grad[local], alpha=-0.1))


@pytest.mark.parametrize("share", [1, 3])
def test_skip_target_leaves_out_negatives_equal_to_their_pairs_target(share: int) -> None:
    """``skip_target``: the step is autograd's on the loss without the terms of negatives that equal their pair's
    target (word2vec's rule); those rows still move as the targets and negatives of other pairs."""
    g = torch.Generator().manual_seed(2)
    w_in, w_out = torch.randn(9, 4, generator=g), torch.randn(9, 4, generator=g)
    source = torch.tensor([1, 2, 2, 5, 8, 1, 3])
    target = torch.tensor([2, 1, 4, 4, 7, 3, 3])
    neg = torch.randint(1, 9, (-(-7 // share), 2), generator=g)
    neg[0, 0], neg[-1, 1] = 2, 3  # pair 0's target; the last pair's target (and pair 5's when share is 3)
    pair_neg = neg[torch.arange(7) // share]  # (P, K)
    keep = (pair_neg != target[:, None]).float()
    assert keep.sum() < keep.numel()
    wi, wo = w_in.clone().requires_grad_(), w_out.clone().requires_grad_()
    u, nv = wi[source], wo[pair_neg]
    ref = -(F.logsigmoid((u * wo[target]).sum(1)).sum() + (F.logsigmoid(-(nv * u[:, None, :]).sum(-1)) * keep).sum())
    ref.backward()
    loss = skipgram_step(w_in, w_out, source, target, neg, share, lr=0.1, sparse=True, skip_target=True)
    assert float(loss) == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(w_in, wi.detach() - 0.1 * wi.grad)
    torch.testing.assert_close(w_out, wo.detach() - 0.1 * wo.grad)
    # CBOW: a negative equal to its group's centre
    context, local, centre = torch.tensor([1, 2, 3, 5]), torch.tensor([0, 0, 1, 1]), torch.tensor([4, 7])
    cneg = torch.tensor([[4, 6], [2, 7]])
    base = cbow_step(w_in.clone(), w_out.clone(), context, centre, cneg, local, lr=0.1, sparse=True)
    h = (w_in[torch.tensor([1, 3])] + w_in[torch.tensor([2, 5])]) / 2  # the two groups' means
    dropped = -(F.logsigmoid(-(w_out[torch.tensor([4, 7])] * h).sum(1))).sum()  # the two skipped terms' loss
    skipped = cbow_step(w_in.clone(), w_out.clone(), context, centre, cneg, local, lr=0.1, sparse=True,
                        skip_target=True)
    assert float(skipped) == pytest.approx(float(base) - float(dropped), rel=1e-5)


@pytest.mark.parametrize("share", [1, 3])
def test_saturate_leaves_terms_beyond_the_threshold_unstepped(share: int) -> None:
    """``saturate``: the step is autograd's on the loss without the terms whose score has ``|s| >= saturate``
    (word2vec's MAX_EXP rule), and the returned loss still counts them; CBOW scores its groups' means."""
    g = torch.Generator().manual_seed(5)
    w_in, w_out = torch.randn(9, 4, generator=g), torch.randn(9, 4, generator=g)  # scores of sd 2: many beyond 1.5
    source = torch.tensor([1, 2, 2, 5, 8, 1, 3])
    target = torch.tensor([2, 1, 4, 4, 7, 3, 6])
    neg = torch.randint(1, 9, (-(-7 // share), 2), generator=g)
    pair_neg = neg[torch.arange(7) // share]  # (P, K)
    wi, wo = w_in.clone().requires_grad_(), w_out.clone().requires_grad_()
    u = wi[source]
    s_pos, s_neg = (u * wo[target]).sum(1), (wo[pair_neg] * u[:, None, :]).sum(-1)
    keep_pos, keep_neg = (s_pos.abs() < 1.5).float(), (s_neg.abs() < 1.5).float()
    assert 0 < keep_pos.sum() + keep_neg.sum() < keep_pos.numel() + keep_neg.numel()
    full = -(F.logsigmoid(s_pos).sum() + F.logsigmoid(-s_neg).sum())
    (-(F.logsigmoid(s_pos) * keep_pos).sum() - (F.logsigmoid(-s_neg) * keep_neg).sum()).backward()
    loss = skipgram_step(w_in, w_out, source, target, neg, share, lr=0.1, sparse=True, saturate=1.5)
    assert float(loss) == pytest.approx(full.item(), rel=1e-5)
    torch.testing.assert_close(w_in, wi.detach() - 0.1 * wi.grad)
    torch.testing.assert_close(w_out, wo.detach() - 0.1 * wo.grad)
    # CBOW
    w_in, w_out = torch.randn(9, 4, generator=g), torch.randn(9, 4, generator=g)
    context, local, centre = torch.tensor([1, 2, 3, 5, 6]), torch.tensor([0, 0, 1, 1, 2]), torch.tensor([4, 7, 8])
    cneg = torch.tensor([[5, 6], [2, 1], [3, 4]])
    wi, wo = w_in.clone().requires_grad_(), w_out.clone().requires_grad_()
    h = torch.zeros(3, 4).index_add(0, local, wi[context]) / torch.tensor([2.0, 2.0, 1.0])[:, None]
    s_pos, s_neg = (h * wo[centre]).sum(1), (wo[cneg] * h[:, None, :]).sum(-1)
    keep_pos, keep_neg = (s_pos.abs() < 1.0).float(), (s_neg.abs() < 1.0).float()
    assert 0 < keep_pos.sum() + keep_neg.sum() < keep_pos.numel() + keep_neg.numel()
    h.retain_grad()
    (-(F.logsigmoid(s_pos) * keep_pos).sum() - (F.logsigmoid(-s_neg) * keep_neg).sum()).backward()
    cbow_step(w_in, w_out, context, centre, cneg, local, lr=0.1, sparse=True, saturate=1.0)
    torch.testing.assert_close(w_out, wo.detach() - 0.1 * wo.grad)
    # each context vector takes its group mean's full error (cbow_mean), as in test_cbow_step_matches_autograd
    torch.testing.assert_close(w_in, wi.detach().index_add(0, context, h.grad[local], alpha=-0.1))
    with pytest.raises(ConfigError, match="saturate"):
        Item2VecConfig(saturate=-1.0)


def test_same_seed_same_vectors_other_seed_differs(split: SplitData) -> None:
    a = Item2Vec(fast(epochs=2, seed=3), device="cpu").fit(split.train).item_vectors()
    b = Item2Vec(fast(epochs=2, seed=3), device="cpu").fit(split.train).item_vectors()
    c = Item2Vec(fast(epochs=2, seed=4), device="cpu").fit(split.train).item_vectors()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_hogwild_workers_train_every_pair_once(split: SplitData) -> None:
    pairs: dict[int, list[float]] = {}
    for workers in (1, 2):
        pairs[workers] = []
        Item2Vec(fast(workers=workers, batch_size=128), device="cpu").fit(
            split.train, on_epoch_end=lambda e, m, w=workers: pairs[w].append(m["pairs"]))
    assert pairs[1] == pairs[2]  # the same seeded batches, each stepped exactly once, by either thread


def test_sparse_and_dense_updates_agree(split: SplitData) -> None:
    a = Item2Vec(fast(epochs=2, sparse=True), device="cpu").fit(split.train).item_vectors()
    b = Item2Vec(fast(epochs=2, sparse=False), device="cpu").fit(split.train).item_vectors()
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_encode_users_recency_weighted_mean(split: SplitData) -> None:
    model = Item2Vec(fast(epochs=1, user_decay=0.5, normalize=False), device="cpu").fit(split.train)
    assert model.similarity == "dot"
    v = model.item_vectors()
    hist = Sequences.from_lists([[], [3, 7, 9], [], [5]], n_items=split.n_items)
    got = model.encode_users(hist)
    np.testing.assert_allclose(got[1], (0.25 * v[3] + 0.5 * v[7] + v[9]) / 1.75, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got[3], v[5], rtol=1e-6)
    assert not got[0].any() and not got[2].any()
    with pytest.raises(ValueError, match="IdMap"):
        model.encode_users(Sequences.from_lists([[], [1]], n_items=5))


def test_normalized_vectors_and_padding_row(split: SplitData) -> None:
    model = Item2Vec(fast(epochs=1), device="cpu").fit(split.train)
    v = model.item_vectors()
    assert model.similarity == "cosine" and v.dtype == np.float32
    assert not v[0].any()
    np.testing.assert_allclose(np.linalg.norm(v[1:], axis=1), 1.0, rtol=1e-5)


def test_in_out_scores_output_vectors_against_the_input_vectors_of_the_history(split: SplitData) -> None:
    model = Item2Vec(fast(epochs=2, user_decay=0.5, scoring="in-out"), device="cpu").fit(split.train)
    assert model.similarity == "dot"
    items, inputs = model.item_vectors(), model.input_vectors()
    np.testing.assert_array_equal(items[1:], model.w_out[1:])  # raw output vectors, never normalised
    assert not items[0].any() and not inputs[0].any()
    np.testing.assert_allclose(np.linalg.norm(inputs[1:], axis=1), 1.0, rtol=1e-5)
    hist = Sequences.from_lists([[], [3, 7]], n_items=split.n_items)
    np.testing.assert_allclose(model.encode_users(hist)[1], (0.5 * inputs[3] + inputs[7]) / 1.5, rtol=1e-5, atol=1e-7)
    spec, weights = model.export_encoder()
    assert spec == {"kind": "mean", "decay": 0.5, "max_len": None}
    np.testing.assert_array_equal(weights["item_table"], inputs)
    # the same training under the other scoring: same input vectors, other candidates
    in_in = Item2Vec(fast(epochs=2, user_decay=0.5), device="cpu").fit(split.train)
    np.testing.assert_array_equal(in_in.input_vectors(), inputs)
    assert in_in.export_encoder()[1] == {}


def test_in_out_scoring_learns_the_clusters_and_beats_popularity(split: SplitData) -> None:
    model = Item2Vec(fast(scoring="in-out"), device="cpu").fit(split.train)
    ours = evaluate_model(model, split.test_history, split.test_targets)
    pop = evaluate_model(Popularity().fit(split.train), split.test_history, split.test_targets)
    assert ours["hr_10"] > pop["hr_10"] + 0.2, (ours["hr_10"], pop["hr_10"])
    assert ours["ndcg_10"] > pop["ndcg_10"] + 0.1


def test_in_out_bundle_serves_next_items_for_a_history_and_for_similar_items(split: SplitData, tmp_path: Path) -> None:
    from recsys.export import AnnConfig, export_model
    from serving import Recommender

    model = Item2Vec(fast(epochs=3, scoring="in-out"), device="cpu").fit(split.train)
    ids = [f"i{j}" for j in range(1, split.n_items + 1)]
    path = export_model(tmp_path / "b", model, ids, [f"u{j}" for j in range(1, split.n_users + 1)],
                        ann=AnnConfig(n_trees=5, search_k_factors=(1,)))
    rec = Recommender.load(path, search="exact")
    inputs, outputs = model.input_vectors(), model.item_vectors()
    scores = outputs @ inputs[7]  # item 7's input vector against every output vector
    scores[[0, 7]] = -np.inf
    want = [f"i{j}" for j in np.argsort(-scores, kind="stable")[:5]]
    assert rec.similar_items("i7", k=5).items == want
    assert rec.recommend_for_history(["i7"], k=5).items == want  # the same question, asked as a history


def test_save_load_identical(split: SplitData, tmp_path: Path) -> None:
    model = Item2Vec(fast(epochs=2, user_decay=0.8), device="cpu").fit(split.train)
    model.save(tmp_path / "m")
    loaded = Item2Vec.load(tmp_path / "m", device="cpu")
    assert loaded.config == model.config
    np.testing.assert_array_equal(loaded.item_vectors(), model.item_vectors())
    np.testing.assert_array_equal(loaded.w_out, model.w_out)
    np.testing.assert_array_equal(loaded.encode_users(split.test_history), model.encode_users(split.test_history))
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically, nothing left behind
    Popularity().fit(split.train).save(tmp_path / "pop")
    with pytest.raises(ValueError, match="popularity"):
        Item2Vec.load(tmp_path / "pop")


def test_unfitted_and_config_errors() -> None:
    with pytest.raises(NotFittedError):
        Item2Vec().item_vectors()
    with pytest.raises(ConfigError, match="dim"):
        Item2VecConfig(dim=0)
    with pytest.raises(ConfigError, match="user_decay"):
        Item2VecConfig(user_decay=1.5)
    with pytest.raises(ConfigError, match="scoring in"):
        Item2VecConfig(scoring="out-out")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="window"):
        build_model("item2vec", {"windw": 3}, device="cpu")
    model = build_model("item2vec", {"mode": "cbow", "dim": 8}, device="cpu")
    assert isinstance(model, Item2Vec) and model.config.mode == "cbow" and model.config.dim == 8


def test_capped_rule_damps_rows_repeated_in_a_batch() -> None:
    w = torch.zeros(4, 2)
    rows = torch.tensor([1, 1, 1, 1, 2, 3, 3])
    grad = torch.tensor([[1.0, 0], [1, 0], [1, 0], [1, 0], [0, 1], [2, 2], [2, 2]])
    c = row_coefficients("capped", rows, 4, 0.5, 2, torch.float32)
    apply_rows(w, [(rows, grad * c[:, None])], rule="capped", lr=0.5)
    # row 1: 4 repeats > cap 2 -> half of the summed step; rows 2, 3: at most cap repeats -> plain sum
    torch.testing.assert_close(w, torch.tensor([[0.0, 0], [-1, 0], [0, -0.5], [-2, -2]]))


def test_mean_rule_moves_a_row_by_the_mean_of_its_gradients() -> None:
    w = torch.zeros(4, 2)
    rows = torch.tensor([1, 1, 1, 1, 2, 3, 3])
    grad = torch.tensor([[1.0, 0], [3, 0], [1, 0], [3, 0], [0, 1], [2, 2], [4, 2]])
    c = row_coefficients("mean", rows, 4, 0.5, 0, torch.float32)
    apply_rows(w, [(rows, grad * c[:, None])], rule="mean", lr=0.5)
    torch.testing.assert_close(w, torch.tensor([[0.0, 0], [-1, 0], [0, -0.5], [-1.5, -1]]))


def test_adagrad_rule_by_hand() -> None:
    """Row-wise Adagrad on each row's summed gradient: G += mean(g**2), step -lr * g / sqrt(G)."""
    w, state = torch.zeros(3, 2), RowState.zeros(3)
    rows = torch.tensor([1, 1, 2])
    grad = torch.tensor([[1.0, 1.0], [2.0, 1.0], [0.0, 2.0]])
    for parts in ([(rows, grad)], [(rows[:1], grad[:1]), (rows[1:], grad[1:])]):  # one part, or split across two
        c = row_coefficients("adagrad", rows, 3, 0.1, 0, torch.float32)
        apply_rows(w, [(r, g * c[: len(r), None]) for r, g in parts], rule="adagrad", lr=0.1, state=state)
    acc = state.acc
    # row 1: g = (3, 2), mean g^2 = 6.5 per step; row 2: g = (0, 2), mean g^2 = 2
    torch.testing.assert_close(acc, torch.tensor([0.0, 13.0, 4.0]))
    want1 = -0.1 * torch.tensor([3.0, 2.0]) * (1 / 6.5**0.5 + 1 / 13**0.5)
    want2 = -0.1 * torch.tensor([0.0, 2.0]) * (1 / 2**0.5 + 1 / 4**0.5)
    torch.testing.assert_close(w, torch.stack([torch.zeros(2), want1, want2]))
    with pytest.raises(ValueError, match="RowState"):
        apply_rows(w, [(rows, grad)], rule="adagrad", lr=0.1)


def test_adagrad_decay_by_hand_and_every_step_stays_within_lr_sqrt_dim() -> None:
    """With decay b, a row's accumulator at each of its updates is G = b * G + mean(g**2): G >= mean(g**2), so no
    step is longer than lr * sqrt(D), as under Adagrad, while a row's steps no longer shrink towards 0."""
    w, state = torch.zeros(2, 2), RowState(torch.zeros(2), decay=0.5)
    rows, g = torch.tensor([1]), torch.tensor([[3.0, 2.0]])  # mean g^2 = 6.5
    for _ in range(2):
        apply_rows(w, [(rows, -g)], rule="adagrad", lr=0.1, state=state)
    torch.testing.assert_close(state.acc, torch.tensor([0.0, 0.5 * 6.5 + 6.5]))
    torch.testing.assert_close(w[1], -0.1 * g[0] * (1 / 6.5**0.5 + 1 / 9.75**0.5))
    gen = torch.Generator().manual_seed(0)
    w, decayed, plain = torch.zeros(2, 8), RowState(torch.zeros(2), decay=0.9), RowState.zeros(2)
    w2 = w.clone()
    last = []
    for i in range(300):  # large gradients, then small ones
        grad = torch.randn(1, 8, generator=gen) * (10.0 if i < 100 else 0.1)
        before, before2 = w[1].clone(), w2[1].clone()
        apply_rows(w, [(rows, grad)], rule="adagrad", lr=0.1, state=decayed)
        apply_rows(w2, [(rows, grad)], rule="adagrad", lr=0.1, state=plain)
        step = float((w[1] - before).norm())
        assert step <= 0.1 * 8**0.5 * (1 + 1e-5)
        last.append((step, float((w2[1] - before2).norm())))
    # after the large gradients, Adagrad's steps on small ones are ~0; the decayed accumulator forgets them
    assert last[-1][0] > 20 * last[-1][1], last[-1]
    with pytest.raises(ConfigError, match="adagrad_decay"):
        Item2VecConfig(adagrad_decay=0.0)


def test_adagrad_decay_per_step_by_hand() -> None:
    """Per step, a row's accumulator decays by b at every step, its own or not: G = b**(t - t_last) * G + mean(g**2);
    a row drawn every step decays as under the per-update rule, one drawn rarely forgets more between draws, and no
    step is longer than lr * sqrt(D)."""
    w, state = torch.zeros(3, 2), RowState.zeros(3, decay=0.5, per_step=True)
    g1, g2 = torch.tensor([[3.0, 2.0]]), torch.tensor([[0.0, 2.0]])  # mean g^2: 6.5 and 2
    r1, r2 = torch.tensor([1]), torch.tensor([2])
    apply_rows(w, [(r1, -g1), (r2, -g2)], rule="adagrad", lr=0.1, state=state)  # step 1: rows 1 and 2
    apply_rows(w, [(r1, -g1)], rule="adagrad", lr=0.1, state=state)  # step 2: row 1
    apply_rows(w, [(r1, -g1)], rule="adagrad", lr=0.1, state=state)  # step 3: row 1
    apply_rows(w, [(r2, -g2)], rule="adagrad", lr=0.1, state=state)  # step 4: row 2, 3 steps after its last
    g_row1 = 0.25 * 6.5 + 0.5 * 6.5 + 6.5  # 3 updates, one step apart
    g_row2 = 0.5**3 * 2 + 2
    torch.testing.assert_close(state.acc, torch.tensor([0.0, g_row1, g_row2]))
    assert state.clock.tolist() == [4] and state.last.tolist() == [0, 3, 4]
    want1 = -0.1 * g1[0] * sum(1 / a**0.5 for a in (6.5, 9.75, g_row1))
    want2 = -0.1 * g2[0] * (1 / 2**0.5 + 1 / g_row2**0.5)
    torch.testing.assert_close(w, torch.stack([torch.zeros(2), want1, want2]))
    # the per-update rule at the same decay: row 2's accumulator decays once (0.5 * 2 + 2), not three times
    per_update = RowState.zeros(3, decay=0.5)
    for parts in ([(r1, -g1), (r2, -g2)], [(r1, -g1)], [(r1, -g1)], [(r2, -g2)]):
        apply_rows(torch.zeros(3, 2), parts, rule="adagrad", lr=0.1, state=per_update)
    torch.testing.assert_close(per_update.acc, torch.tensor([0.0, g_row1, 3.0]))
    gen = torch.Generator().manual_seed(0)
    w = torch.zeros(3, 8)
    state = RowState.zeros(3, decay=0.9, per_step=True)
    for i in range(200):  # row 2 drawn every 17th step only: its accumulator is nearly 0 at each draw
        rows = torch.tensor([1, 2]) if i % 17 == 0 else torch.tensor([1])
        grad = torch.randn(len(rows), 8, generator=gen) * (10.0 if i < 100 else 0.1)
        before = w.clone()
        apply_rows(w, [(rows, grad)], rule="adagrad", lr=0.1, state=state)
        assert float((w - before).norm(dim=1).max()) <= 0.1 * 8**0.5 * (1 + 1e-5)
    with pytest.raises(ValueError, match="clock"):
        RowState(torch.zeros(3), 0.5, last=torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="no clock"):
        RowState.zeros(3).tick()
    with pytest.raises(ConfigError, match="adagrad_decay_per"):
        Item2VecConfig(adagrad_decay_per="epoch")  # type: ignore[arg-type]


def test_adagrad_eps_floor_by_hand_and_within_lr_sqrt_dim() -> None:
    """With eps, a row moves by lr * g / (sqrt(G) + eps): a row whose gradient is small next to eps takes an SGD-like
    step (about lr * g / eps), a large one about the same step as with Adagrad's guard; none longer than lr * sqrt(D).
    """
    rows = torch.tensor([1, 2])
    grad = torch.tensor([[0.003, -0.004], [3.0, 4.0]])  # mean g^2: 1.25e-5 and 12.5
    w, state = torch.zeros(3, 2), RowState.zeros(3, eps=0.01)
    apply_rows(w, [(rows, grad)], rule="adagrad", lr=0.1, state=state)
    torch.testing.assert_close(state.acc, torch.tensor([0.0, 1.25e-5, 12.5]))
    torch.testing.assert_close(w[1], 0.1 * grad[0] / (1.25e-5**0.5 + 0.01))
    torch.testing.assert_close(w[2], 0.1 * grad[1] / (12.5**0.5 + 0.01))
    guard = torch.zeros(3, 2)
    apply_rows(guard, [(rows, grad)], rule="adagrad", lr=0.1, state=RowState.zeros(3))
    assert float(w[1].norm()) < 0.3 * float(guard[1].norm())  # the small gradient's step shrinks ...
    assert float(w[2].norm()) == pytest.approx(float(guard[2].norm()), rel=1e-2)  # ... the large one barely
    gen = torch.Generator().manual_seed(0)
    w, state = torch.zeros(2, 8), RowState.zeros(2, decay=0.9, per_step=True, eps=0.1)
    for i in range(100):
        before = w.clone()
        apply_rows(w, [(torch.tensor([1]), torch.randn(1, 8, generator=gen) * 10.0 ** (i % 5 - 2))],
                   rule="adagrad", lr=0.1, state=state)
        assert float((w - before).norm()) <= 0.1 * 8**0.5 * (1 + 1e-5)
    with pytest.raises(ValueError, match="eps"):
        RowState.zeros(2, eps=0.0)
    with pytest.raises(ConfigError, match="adagrad_eps"):
        Item2VecConfig(adagrad_eps=0.0)


def test_row_state_groups_repeated_rows() -> None:
    state = RowState.zeros(10)
    rows = torch.tensor([7, 3, 7, 7, 1, 3, 9])
    uniq, inverse = state.group(rows)
    assert sorted(uniq.tolist()) == [1, 3, 7, 9] and torch.equal(uniq[inverse], rows)
    uniq, inverse = state.group(torch.tensor([2, 2]))  # stale slots of earlier batches do not leak in
    assert uniq.tolist() == [2] and inverse.tolist() == [0, 0]


def test_a_shared_negative_counts_once_per_pair_it_serves() -> None:
    rows = torch.tensor([1, 1, 2])
    # alone: 2 and 1 repeats, within cap 2 -> the plain step -lr
    torch.testing.assert_close(row_coefficients("capped", rows, 3, 0.5, 2, torch.float32), torch.full((3,), -0.5))
    # each occurrence sums 4 pairs (shared_negatives=4): 8, 8 and 4 repeats -> -lr * 2/8, 2/8, 2/4
    torch.testing.assert_close(row_coefficients("capped", rows, 3, 0.5, 2, torch.float32, per_row=4),
                               torch.tensor([-0.125, -0.125, -0.25]))
    torch.testing.assert_close(row_coefficients("capped", rows, 3, 0.5, 0, torch.float32, per_row=4),
                               torch.full((3,), -0.5))
    torch.testing.assert_close(row_coefficients("mean", rows, 3, 0.5, 0, torch.float32, per_row=4),
                               torch.tensor([-0.0625, -0.0625, -0.125]))


@pytest.mark.parametrize("rule", ["adagrad", "mean"])
def test_one_item_in_every_pair_takes_a_bounded_step_whatever_the_batch(rule: str) -> None:
    """Item 1 is the target of every pair and the source of every pair's reverse: its rows' step at the default
    learning rate stays finite and does not grow with the batch (the summed rule grows linearly)."""
    cfg = Item2VecConfig(update=rule)
    d, n_items = cfg.dim, 50
    steps: dict[str, list[float]] = {"bounded": [], "plain sum": []}
    for batch in (64, 512, 4096, 32768):
        gen = torch.Generator().manual_seed(0)
        others = torch.randint(2, n_items + 1, (batch,), generator=gen)
        source = torch.cat([torch.ones(batch // 2, dtype=torch.long), others[: batch // 2]])
        target = torch.cat([others[batch // 2 :], torch.ones(batch - batch // 2, dtype=torch.long)])
        neg = torch.ones((batch, cfg.negatives), dtype=torch.long)  # and every pair's negatives
        for key, kw in (("bounded", {"rule": rule}), ("plain sum", {"rule": "capped", "cap": 0})):
            w_in = torch.randn(n_items + 1, d, generator=torch.Generator().manual_seed(1)) * 0.5
            w_out = torch.randn(n_items + 1, d, generator=torch.Generator().manual_seed(2)) * 0.5
            before_in, before_out = w_in[1].clone(), w_out[1].clone()
            states = (RowState.zeros(n_items + 1), RowState.zeros(n_items + 1))
            loss = skipgram_step(w_in, w_out, source, target, neg, 1, lr=cfg.lr, sparse=True, state_in=states[0],
                                 state_out=states[1], saturate=cfg.saturate, **kw)
            assert torch.isfinite(loss) and torch.isfinite(w_in).all() and torch.isfinite(w_out).all()
            steps[key].append(max(float((w_in[1] - before_in).norm()), float((w_out[1] - before_out).norm())))
    bounded = steps["bounded"]
    # adagrad: |step| <= lr * sqrt(dim); mean: <= lr * one pair's gradient <= lr * (1 + negatives) * max row norm
    max_norm = 0.5 * 1.5 * d**0.5  # randn * 0.5 rows: norm about 0.5 sqrt(d); 1.5x leaves room for the largest
    limit = cfg.lr * d**0.5 if rule == "adagrad" else cfg.lr * (1 + cfg.negatives) * max_norm
    assert max(bounded) <= limit * (1 + 1e-5), bounded
    assert max(bounded) <= 1.5 * min(bounded), bounded  # flat in the batch size
    assert steps["plain sum"][-1] > 100 * steps["plain sum"][0], steps["plain sum"]  # the old summed step grows


def test_plain_summed_steps_diverge_where_the_default_rule_learns(split: SplitData) -> None:
    """Few items, high lr, large batches: the plain summed step blows the loss up; the default one keeps learning.
    (The plain rule runs without ``saturate``, which caps the blow-up by freezing saturated terms: the loss still
    grows 50-fold with it.)"""
    plain: list[float] = []
    default: list[float] = []
    summed = {"update": "capped", "repeat_cap": 0, "max_backoffs": 0, "saturate": 0.0}
    for kw, losses, epochs in ((summed, plain, 3), ({}, default, 8)):
        model = Item2Vec(fast(epochs=epochs, lr=0.5, batch_size=2048, **kw), device="cpu")
        try:
            model.fit(split.train, lambda e, m, out=losses: out.append(m["loss"]))
        except NaNLossError:
            losses.append(float("inf"))
    assert plain[-1] > 1e3, plain  # diverging (4.16 = 6 log 2 at the start)
    assert max(default) < 4.2 and default[-1] < default[0] - 0.8, default


@pytest.mark.parametrize(("kernel", "step"), [("tensor", "skipgram_step"), ("auto", "fused_skipgram_step")])
@pytest.mark.parametrize(("bad", "backs_off"), [("nan", True), ("past the bound", True), ("under the bound", False)])
def test_a_diverged_step_backs_off_the_learning_rate_and_is_recorded(split: SplitData, monkeypatch, kernel: str,
                                                                      step: str, bad: str, backs_off: bool) -> None:
    """Step 3 of epoch 1 returns a NaN loss, or a finite one averaging just past (or under) DIVERGED_TERM_LOSS per
    term: past it, the epoch reruns from its start at half the rate; the model stays finite either way."""
    import recsys.models.item2vec as i2v

    real, calls = getattr(i2v, step), {"n": 0, "lr": []}
    cfg = fast(epochs=2, batch_size=256, kernel=kernel)

    def flaky(*args, **kw):
        calls["n"] += 1
        calls["lr"].append(kw["lr"])
        out = real(*args, **kw)
        if calls["n"] != 3:
            return out
        terms = len(args[3]) * (1 + cfg.negatives)  # the step's positives (targets), each with its negatives
        value = {"nan": float("nan"), "past the bound": 1.01, "under the bound": 0.99}[bad]
        return torch.tensor(value * i2v.DIVERGED_TERM_LOSS * terms if bad != "nan" else value, dtype=torch.float64)

    monkeypatch.setattr(i2v, step, flaky)
    seen: list[dict] = []
    model = Item2Vec(cfg, device="cpu")
    model.fit(split.train, lambda e, m: seen.append(m))
    assert np.isfinite(model.item_vectors()).all()
    if not backs_off:
        assert model.lr_backoffs == [] and [m["lr_backoffs"] for m in seen] == [0.0, 0.0]
        return
    assert model.lr_backoffs == [{"epoch": 1, "step": 3, "lr_scale": 0.5}]
    assert [m["lr_backoffs"] for m in seen] == [1.0, 1.0]
    # the rerun's first step, at half the rate (the schedule's position differs a little: new pairs are drawn)
    assert calls["lr"][3] == pytest.approx(calls["lr"][0] / 2, rel=1e-2)


def test_divergence_past_the_backoffs_names_epoch_step_and_setting(split: SplitData) -> None:
    with pytest.raises(NaNLossError, match=r"epoch 1, step \d+: .* 2 learning-rate halvings .* lower lr"):
        Item2Vec(fast(lr=1e30, min_lr=0.0, max_backoffs=2), device="cpu").fit(split.train)


@pytest.mark.parametrize("saturate", [0.0, 6.0])
def test_a_blow_up_with_a_finite_loss_is_divergence_too(split: SplitData, saturate: float) -> None:
    """At lr 1e20 the first step puts output rows near 1e20 and every later score is beyond 1e18: the loss stays
    finite (1e17 per term) and, with ``saturate``, so do the vectors, since every term freezes. The fit must still
    stop, not return that model."""
    with pytest.raises(NaNLossError, match=r"epoch 1, step 2: mean loss per term .* \(bound 1000.0\) after 2 "):
        Item2Vec(fast(lr=1e20, min_lr=0.0, max_backoffs=2, saturate=saturate), device="cpu").fit(split.train)


@pytest.mark.parametrize("scoring", ["in-in", "in-out"])
def test_items_never_trained_are_never_ranked_offline_or_served(scoring: str, tmp_path: Path) -> None:
    """Item 21 never occurs in training: its vector is untrained, so no lookup returns it, offline or served."""
    from conftest import markov_sequences

    from recsys.export import AnnConfig, export_model
    from serving import Recommender

    base = markov_sequences(n_users=80, n_items=20, seed=2)
    train = Sequences(base.offsets, base.items, 21)  # 21 items, item 21 absent
    model = Item2Vec(fast(epochs=3, scoring=scoring, normalize=scoring == "in-in"), device="cpu").fit(train)
    never = model.ineligible_items()
    assert never is not None and np.flatnonzero(never).tolist() == [21]
    users = np.arange(1, train.n_rows)
    ids, scores = model.recommend(users, k=20, exclude_seen=False)  # all 20 trained items, never 21
    assert not (ids == 21).any() and np.isfinite(scores).all()
    targets = Sequences.from_lists([[]] + [[21]] * (train.n_rows - 1), n_items=21)
    res = evaluate_model(model, train, targets)
    assert res["hr_20"] == 0.0 and res["n_masked_targets"] == train.n_rows - 1  # never ranked, so never a hit
    path = export_model(tmp_path / "b", model, [f"i{j}" for j in range(1, 22)],
                        [f"u{j}" for j in range(1, train.n_rows)], ann=AnnConfig(n_trees=5, search_k_factors=(1,)))
    rec = Recommender.load(path)
    assert rec.manifest["never_candidates"] == [21]
    for u in range(1, 30):
        assert "i21" not in rec.recommend(f"u{u}", k=20, exclude_seen=False).items
    assert "i21" not in rec.similar_items("i3", k=20).items
    assert len(rec.recommend_for_history(["i1", "i2"], k=25).items) == 18  # 20 trained items, 2 seen


def test_warm_start_begins_from_the_given_vectors(split: SplitData, tmp_path: Path) -> None:
    """A near-zero learning rate keeps warm-started vectors at their init; zero rows stay random."""
    n = split.train.n_items + 1
    init = np.random.default_rng(5).normal(size=(n, 16)).astype(np.float32)
    init[3] = 0.0  # an item the champion did not know
    np.save(tmp_path / "init.npy", init)
    still = dict(lr=1e-9, min_lr=0.0, dim=16, normalize=False, epochs=1)
    warm = Item2Vec(fast(**still, init_vectors=str(tmp_path / "init.npy")), "cpu").fit(split.train)
    cold = Item2Vec(fast(**still), "cpu").fit(split.train)
    known = np.ones(n, dtype=bool)
    known[[0, 3]] = False
    np.testing.assert_allclose(warm.w_in[known], init[known], atol=1e-5)
    np.testing.assert_allclose(warm.w_in[3], cold.w_in[3], atol=1e-6)  # the random init, unchanged
    assert not np.allclose(cold.w_in[known], init[known], atol=1e-2)
    np.save(tmp_path / "bad.npy", init[:, :8])
    with pytest.raises(ConfigError, match="align it to the current item ids and dim"):
        Item2Vec(fast(**still, init_vectors=str(tmp_path / "bad.npy")), "cpu").fit(split.train)


def test_item2vec_streams_a_memory_mapped_split(tmp_path):
    """Counts and pairs are read from a memory-mapped split chunk by chunk: the same vectors as in memory."""
    from conftest import markov_sequences

    tr = markov_sequences(n_users=50, n_items=20, seed=4)
    tr.save(tmp_path / "train")
    mapped = Sequences.load(tmp_path / "train", mmap=True)
    assert isinstance(mapped.items, np.memmap)
    cfg = fast(epochs=2)
    a, b = Item2Vec(cfg).fit(tr), Item2Vec(cfg).fit(mapped)
    np.testing.assert_allclose(a.item_vectors(), b.item_vectors())


def _markov_split(n_users: int = 600, n_items: int = 120, length: int = 12, seed: int = 0) -> SplitData:
    """Each next item is one of two fixed successors of the previous one: the last item is what predicts the next."""
    import polars as pl

    from recsys.prepare.split import leave_last_out

    rng = np.random.default_rng(seed)
    succ = rng.integers(1, n_items + 1, size=(n_items + 1, 2))
    users, items = [], []
    for u in range(1, n_users + 1):
        cur = int(rng.integers(1, n_items + 1))
        for _ in range(length):
            users.append(u)
            items.append(cur)
            cur = int(succ[cur, rng.integers(2)])
    enc = pl.DataFrame({"user_idx": users, "item_idx": items, "timestamp": np.arange(len(users))})
    return leave_last_out(enc, n_users, n_items)


def test_auto_user_decay_is_chosen_from_the_training_data_low_for_markov_logs_high_for_tastes(
        split: SplitData, tmp_path: Path) -> None:
    from recsys.models.item2vec import AUTO_DECAYS, auto_decay_choice

    markov = Item2Vec(fast(scoring="in-out", user_decay="auto"), device="cpu").fit(_markov_split().train)
    tastes = Item2Vec(fast(scoring="in-out", user_decay="auto"), device="cpu").fit(split.train)
    for model in (markov, tastes):
        scores = model.auto_decay_scores
        assert tuple(scores) == AUTO_DECAYS and model.user_decay == auto_decay_choice(scores)
    assert markov.user_decay <= 0.2, markov.auto_decay_scores  # the most recent item is what counts
    assert tastes.user_decay >= 0.6, tastes.auto_decay_scores  # every item of a user's cluster counts alike
    # encoding, export and a reloaded model all use the chosen value
    fixed = Item2Vec(fast(scoring="in-out", user_decay=markov.user_decay), device="cpu")
    fixed.w_in, fixed.w_out, fixed._train = markov.w_in, markov.w_out, markov._train
    hist = _markov_split().test_history
    np.testing.assert_array_equal(markov.encode_users(hist), fixed.encode_users(hist))
    assert markov.export_encoder()[0]["decay"] == markov.user_decay
    markov.save(tmp_path / "m")
    loaded = Item2Vec.load(tmp_path / "m", device="cpu")
    assert loaded.config.user_decay == "auto" and loaded.user_decay == markov.user_decay


def test_a_saved_auto_decay_is_loaded_not_chosen_again_and_an_older_save_chooses_it(
        split: SplitData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = Item2Vec(fast(scoring="in-out", user_decay="auto"), device="cpu").fit(split.train)
    model.save(tmp_path / "m")
    (tmp_path / "old").mkdir()
    for f in (tmp_path / "m").iterdir():  # the same model as a save from before auto_decay.npy
        if f.name != "auto_decay.npy":
            (tmp_path / "old" / f.name).symlink_to(f)
    expected = (model.user_decay, model.auto_decay_scores)

    def chosen_again(self: Item2Vec) -> tuple[float, dict[float, float]]:
        raise AssertionError("a loaded model scored the decays again")

    with monkeypatch.context() as m:
        m.setattr(Item2Vec, "_choose_decay", chosen_again)
        loaded = Item2Vec.load(tmp_path / "m", device="cpu")
        assert (loaded.user_decay, loaded.auto_decay_scores) == expected
    older = Item2Vec.load(tmp_path / "old", device="cpu")
    assert older._auto_decay is None and (older.user_decay, older.auto_decay_scores) == expected
    Item2Vec(fast(user_decay=0.6), device="cpu").fit(split.train).save(tmp_path / "fixed")
    assert not (tmp_path / "fixed" / "auto_decay.npy").exists()


def test_auto_decay_choice_is_one_step_below_the_proxys_best_ties_to_the_larger() -> None:
    from recsys.models.item2vec import AUTO_DECAYS, auto_decay_choice

    for i, best in enumerate(AUTO_DECAYS):
        scores = {d: (1.0 if d == best else 0.5) for d in AUTO_DECAYS}
        assert auto_decay_choice(scores) == AUTO_DECAYS[min(i + 1, len(AUTO_DECAYS) - 1)]
    assert auto_decay_choice(dict.fromkeys(AUTO_DECAYS, 0.3)) == AUTO_DECAYS[1]  # all tied: the largest is best
    assert auto_decay_choice({**dict.fromkeys(AUTO_DECAYS, 0.0), 0.6: 0.2, 0.4: 0.2}) == 0.5


def test_auto_user_decay_follows_the_vectors_and_falls_back_without_two_item_rows(split: SplitData) -> None:
    from recsys.models.item2vec import AUTO_DECAY_FALLBACK

    model = Item2Vec(fast(epochs=2, user_decay="auto"), device="cpu")
    seen: list[float] = []
    model.fit(split.train, on_epoch_end=lambda e, m: seen.append(model.user_decay))
    assert len(seen) == 2 and model._auto_decay[0] == 2  # chosen again for each epoch's vectors
    single = Sequences.from_lists([[], [1], [2], [3]] * 30, n_items=3)
    lone = Item2Vec(fast(epochs=1, user_decay="auto", subsample=0.0), device="cpu").fit(single)
    assert lone.user_decay == AUTO_DECAY_FALLBACK and lone.auto_decay_scores == {}
    assert Item2Vec(fast(user_decay=0.6)).auto_decay_scores == {}
    with pytest.raises(ConfigError, match="user_decay"):
        Item2VecConfig(user_decay="recent")  # type: ignore[arg-type]


def test_split_last_draws_rows_of_two_or_more_items_and_keeps_the_padding_row() -> None:
    train = Sequences.from_lists([[], [1, 2, 3], [4], [5, 6], [7, 8, 9, 1]], n_items=9)
    hist, tgt = train.split_last(10)
    assert [hist.row(r).tolist() for r in range(hist.n_rows)] == [[], [1, 2], [5], [7, 8, 9]]
    assert [tgt.row(r).tolist() for r in range(tgt.n_rows)] == [[], [3], [6], [1]]
    hist, tgt = train.split_last(2, seed=3)
    assert hist.n_rows == tgt.n_rows == 3 and tgt.row(0).size == 0 and set(tgt.items.tolist()) <= {3, 6, 1}
    assert train.split_last(2, seed=3)[1].items.tolist() == tgt.items.tolist()  # the seed fixes the draw
