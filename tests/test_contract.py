"""The one contract test, run against every model in ``recsys.models.registry.MODELS``.

Known answer: two disjoint item groups (A = 1..12, B = 13..24); every user consumes only
within one group. A personalised model must rank the user's own group above the other one.
Non-personalised models (``NON_PERSONAL``) must instead rank by training popularity.
A model is fitted with its ``contract_config()`` classmethod if it has one (small and fast),
else with its default ``Config()``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from recsys.data.sequences import Sequences
from recsys.models.base import Model, NotFittedError
from recsys.models.registry import MODELS

N_GROUP, N_USERS, LEN = 12, 200, 4
N_ITEMS = 2 * N_GROUP
NON_PERSONAL = {"popularity"}


def group_of_user(u: np.ndarray) -> np.ndarray:
    """0 for odd users (group A), 1 for even users (group B)."""
    return (np.asarray(u) % 2 == 0).astype(int)


def histories(n_users: int, seed: int) -> Sequences:
    """Row 0 empty; user u draws LEN items from its own group, more from the group's low ids."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, N_GROUP + 1)
    p /= p.sum()
    rows = [[]]
    for u in range(1, n_users + 1):
        items = rng.choice(N_GROUP, size=LEN, replace=False, p=p) + 1 + N_GROUP * group_of_user(u)
        rows.append(items.tolist())
    return Sequences.from_lists(rows, n_items=N_ITEMS)


@pytest.fixture(scope="module")
def train() -> Sequences:
    return histories(N_USERS, seed=0)


def config_for(cls: type[Model]) -> object:
    return cls.contract_config() if hasattr(cls, "contract_config") else cls.Config()


def epochs_of(config: object) -> int | None:
    """Number of epochs the config asks for (``epochs`` or ``iterations``), None when it has none."""
    for key in ("epochs", "iterations"):
        if key in {f.name for f in dataclasses.fields(config)}:
            return int(getattr(config, key))
    return None


@pytest.fixture(scope="module", params=sorted(MODELS))
def fitted(request: pytest.FixtureRequest, train: Sequences) -> tuple[Model, list, list]:
    cls = MODELS[request.param]
    model = cls(config_for(cls), device="cpu")
    with pytest.raises(NotFittedError):
        model.item_vectors()
    with pytest.raises(NotFittedError):
        model.recommend(np.array([1]), k=3)
    calls: list[tuple[int, dict]] = []
    validated: list[int] = []

    def validate(m: Model) -> dict[str, float]:
        validated.append(len(validated) + 1)
        assert m is model or m in getattr(model, "members", [])  # an ensemble validates its members
        return {"val_probe": 1.0}

    out = model.fit(train, on_epoch_end=lambda e, metrics: calls.append((e, metrics)), validate=validate)
    assert out is model
    return model, calls, validated


def test_vectors(fitted: tuple[Model, list, list], train: Sequences) -> None:
    model = fitted[0]
    items = model.item_vectors()
    assert items.dtype == np.float32 and items.ndim == 2 and items.shape[0] == N_ITEMS + 1
    assert np.isfinite(items).all()
    users = model.user_vectors()
    assert users.shape == (N_USERS + 1, items.shape[1]) and users.dtype == np.float32
    assert np.isfinite(users).all()
    assert model.similarity in ("dot", "cosine")


def test_recommend(fitted: tuple[Model, list, list], train: Sequences) -> None:
    model = fitted[0]
    users = np.arange(1, N_USERS + 1)
    ids, scores = model.recommend(users, k=5, exclude_seen=True)
    assert ids.shape == scores.shape == (N_USERS, 5)
    assert (ids > 0).all() and (ids <= N_ITEMS).all()
    assert (np.diff(scores, axis=1) <= 0).all()
    seen = train.to_csr()
    assert seen[np.repeat(users, 5), ids.ravel()].sum() == 0
    ids_all, _ = model.recommend(users, k=N_ITEMS + 5, exclude_seen=False)
    assert ids_all.shape == (N_USERS, N_ITEMS) and (ids_all > 0).all()  # k capped; padding never returned


def test_known_answer(fitted: tuple[Model, list, list], train: Sequences) -> None:
    model = fitted[0]
    new = histories(40, seed=1)  # unseen histories, same structure
    vecs = model.encode_users(new)
    assert vecs.shape == (new.n_rows, model.item_vectors().shape[1]) and np.isfinite(vecs).all()
    ids, _ = model.recommend(np.arange(1, new.n_rows), k=4, exclude_seen=True, histories=new)
    if model.name in NON_PERSONAL:
        # the list is the unseen items by decreasing training count (ties in any order)
        counts = np.bincount(train.items, minlength=N_ITEMS + 1)
        for u in range(1, new.n_rows):
            rec = counts[ids[u - 1]]
            rest = np.setdiff1d(np.arange(1, N_ITEMS + 1), np.concatenate([new.row(u), ids[u - 1]]))
            assert (np.diff(rec) <= 0).all() and counts[rest].max() <= rec.min()
        return
    own = (ids - 1) // N_GROUP == group_of_user(np.arange(1, new.n_rows))[:, None]
    assert own.mean() >= 0.9, f"{model.name}: only {own.mean():.2f} of the top-4 items are in the user's group"


def test_save_load_round_trip(fitted: tuple[Model, list, list], tmp_path: Path) -> None:
    model = fitted[0]
    users = np.arange(0, N_USERS + 1)
    before = model.recommend(users, k=6)
    model.save(tmp_path / "m")
    loaded = type(model).load(tmp_path / "m")
    after = loaded.recommend(users, k=6)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    new = histories(10, seed=2)
    np.testing.assert_array_equal(model.encode_users(new), loaded.encode_users(new))


def test_callbacks(fitted: tuple[Model, list, list]) -> None:
    model, calls, validated = fitted
    n = epochs_of(model.config)
    if n is None:
        assert calls == [] and validated == []
        return
    members = getattr(model, "members", None)
    if members is None:
        per_member = [calls]
    else:  # an ensemble reports each member's epochs, metric names suffixed _member_<i>
        assert len(calls) == n * len(members)
        per_member = [[(e, {k.removesuffix(f"_member_{i}"): v for k, v in m.items()}) for e, m in calls
                       if all(k.endswith(f"_member_{i}") for k in m)] for i in range(len(members))]
    every = getattr(model.config, "validate_every", 1)
    for own in per_member:
        assert [e for e, _ in own] == list(range(1, n + 1))
        if every:
            assert all("val_probe" in m for e, m in own if e % every == 0 or e == n)
    if every:
        assert len(validated) == sum(len([e for e, _ in own if e % every == 0 or e == n]) for own in per_member)
