"""The two-tower ensemble: members side by side, trained at once or in turn with the same result."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import markov_sequences

from recsys.config import ConfigError
from recsys.models.two_tower import TwoTower, TwoTowerEnsemble, TwoTowerEnsembleConfig
from recsys.prepare.sequences import Sequences

TINY = dict(dim=8, max_len=6, n_heads=2, epochs=3, batch_size=8, lr=5e-3, warmup_steps=2, dropout=0.2,
            windows="prefix")


_markov = markov_sequences


def _same_params(a: TwoTower, b: TwoTower) -> None:
    for (k, x), y in zip(a.net.state_dict().items(), b.net.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=k)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Bitwise comparisons need one intra-op thread count throughout (parallel members use 1 each)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def fitted(one_thread: None) -> tuple[TwoTowerEnsemble, Sequences]:
    tr = _markov()
    return TwoTowerEnsemble(TwoTowerEnsembleConfig(**TINY, members=2), device="cpu").fit(tr), tr


def test_vectors_are_the_members_side_by_side(fitted: tuple[TwoTowerEnsemble, Sequences]) -> None:
    m, tr = fitted
    a, b = m.members
    np.testing.assert_array_equal(m.item_vectors(), np.concatenate([a.item_vectors(), b.item_vectors()], axis=1))
    users = m.user_vectors()
    assert users.shape == (tr.n_rows, 16)
    # the ensemble's score is the sum of the members' scores
    np.testing.assert_allclose(users @ m.item_vectors().T,
                               a.user_vectors() @ a.item_vectors().T + b.user_vectors() @ b.item_vectors().T,
                               rtol=1e-5, atol=1e-5)
    assert not np.allclose(a.item_vectors(), b.item_vectors())  # seeds 42 and 43: different members


def test_member_is_the_tower_trained_alone_and_parallel_equals_sequential(
        fitted: tuple[TwoTowerEnsemble, Sequences]) -> None:
    m, tr = fitted
    alone = TwoTower(m.config.member(1), device="cpu").fit(tr)  # seed 43, dropout 0.2, trained on its own
    _same_params(m.members[1], alone)
    seq = TwoTowerEnsemble(TwoTowerEnsembleConfig(**TINY, members=2, parallel=False), device="cpu").fit(tr)
    for x, y in zip(m.members, seq.members, strict=True):
        _same_params(x, y)


def test_save_load_and_numpy_encoder(tmp_path: Path, fitted: tuple[TwoTowerEnsemble, Sequences]) -> None:
    from recsys.export.bundle import model_encoder

    m, tr = fitted
    m.save(tmp_path / "ens")
    back = TwoTowerEnsemble.load(tmp_path / "ens", device="cpu")
    np.testing.assert_array_equal(m.item_vectors(), back.item_vectors())
    np.testing.assert_array_equal(m.user_vectors(), back.user_vectors())
    assert back.config == m.config and len(back.history) == len(m.history) == 6  # 2 members x 3 epochs
    enc = model_encoder(back)
    hist = Sequences.from_lists([[], [3], [1, 2, 3, 4, 5, 6, 7, 8, 9], [20, 19]], n_items=20)
    np.testing.assert_allclose(enc.encode_batch(hist.offsets, hist.items), m.encode_users(hist), atol=2e-5)
    np.testing.assert_allclose(enc.encode(hist.row(2)), m.encode_users(hist)[2], atol=2e-5)


def test_cosine_ensemble_vectors_are_unit_length() -> None:
    m = TwoTowerEnsemble(TwoTowerEnsembleConfig(**{**TINY, "epochs": 1}, similarity="cosine", temperature=0.1),
                         device="cpu").fit(_markov())
    np.testing.assert_allclose(np.linalg.norm(m.item_vectors()[1:], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(m.user_vectors()[1:], axis=1), 1.0, rtol=1e-5)


class Budget(Exception):
    pass


@pytest.mark.parametrize("parallel", [True, False])
def test_a_callback_error_stops_every_member(parallel: bool) -> None:
    calls: list[tuple[int, dict]] = []

    def stop(epoch: int, metrics: dict) -> None:
        calls.append((epoch, metrics))
        raise Budget

    m = TwoTowerEnsemble(TwoTowerEnsembleConfig(**{**TINY, "epochs": 5}, parallel=parallel), device="cpu")
    with pytest.raises(Budget):
        m.fit(_markov(), on_epoch_end=stop)
    assert len(calls) == 1 and calls[0][0] == 1 and any(k.startswith("loss_member_") for k in calls[0][1])
    # every member stopped after its first epoch and holds it
    assert sorted((h["member"], h["epoch"]) for h in m.history) == ([(0.0, 1.0), (1.0, 1.0)] if parallel
                                                                     else [(0.0, 1.0)])
    assert np.isfinite(m.members[0].item_vectors()).all()


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="members"):
        TwoTowerEnsembleConfig(members=0)
    with pytest.raises(ConfigError, match="n_heads"):
        TwoTowerEnsembleConfig(dim=10, n_heads=3)
