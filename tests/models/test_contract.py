"""The one contract test, run against every model in ``recsys.models.registry.MODELS``.

Known answer: two disjoint item groups (A = 1..12, B = 13..24); every user consumes only
within one group. A personalised model must rank the user's own group above the other one.
Non-personalised models (``NON_PERSONAL``) must instead rank by training popularity.
A model is fitted with its ``contract_config()`` classmethod if it has one (small and fast),
else with its default ``Config()``; ``VARIANTS`` adds configurations that change what is exported.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from recsys.models.base import Model, NotFittedError
from recsys.models.registry import MODELS
from recsys.prepare.sequences import Sequences

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


# registered models, plus configurations whose vectors or encoder take another path through export
VARIANTS = {"item2vec-in-in": ("item2vec", {"scoring": "in-in"})}


@pytest.fixture(scope="module", params=[*sorted(MODELS), *VARIANTS])
def fitted(request: pytest.FixtureRequest, train: Sequences) -> tuple[Model, list, list]:
    name, overrides = VARIANTS.get(request.param, (request.param, {}))
    cls = MODELS[name]
    model = cls(dataclasses.replace(config_for(cls), **overrides), device="cpu")
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


@pytest.mark.parametrize("name", sorted(n for n in MODELS if epochs_of(config_for(MODELS[n])) is not None))
def test_a_callback_can_stop_fit_after_an_epoch(name: str, train: Sequences) -> None:
    """StopTraining from ``on_epoch_end`` (a time budget) ends fit after that epoch: fit returns normally, the
    model says why, and it ranks with finite vectors (an ensemble stops every member after its epoch)."""
    from recsys.models.base import StopTraining

    cls = MODELS[name]
    model = cls(dataclasses.replace(config_for(cls), **({"epochs": 3} if hasattr(config_for(cls), "epochs")
                                                        else {"iterations": 3})), device="cpu")
    calls: list[int] = []

    def stop_after_first(epoch: int, metrics: dict) -> None:
        calls.append(epoch)
        raise StopTraining("time budget of 1 min reached after epoch 1")

    assert model.fit(train, on_epoch_end=stop_after_first) is model
    assert model.stopped is not None and model.stopped.startswith("time budget of 1 min reached after epoch 1")
    assert set(calls) == {1}  # no epoch after the stop (an ensemble's members each report their first)
    assert np.isfinite(model.item_vectors()).all() and np.isfinite(model.user_vectors()).all()


# -- what is served is what was evaluated: the model's own encoder, numpy only ---------------------
MAX_LEN = 60  # longer than every contract config's max_len


def request_histories(seed: int) -> Sequences:
    """Row 0 empty (the padding user), then an empty history, one item, one longer than max_len (repeats
    included), and random ones of 2..12 items."""
    rng = np.random.default_rng(seed)
    rows = [[], [], [int(rng.integers(1, N_ITEMS + 1))], rng.integers(1, N_ITEMS + 1, MAX_LEN).tolist()]
    rows += [rng.integers(1, N_ITEMS + 1, int(rng.integers(2, 13))).tolist() for _ in range(20)]
    return Sequences.from_lists(rows, n_items=N_ITEMS)


def test_served_encoder_reproduces_encode_users(fitted: tuple[Model, list, list]) -> None:
    from recsys.export.bundle import model_encoder

    model = fitted[0]
    hist = request_histories(seed=3)
    want = model.encode_users(hist)
    enc = model_encoder(model)  # numpy only: serving.encoder
    tol = dict(rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(want).max())))
    np.testing.assert_allclose(enc.encode_batch(hist.offsets, hist.items), want, **tol)
    for r in range(1, hist.n_rows):  # one request at a time gives the same vector as the batch
        np.testing.assert_allclose(enc.encode(hist.row(r)), want[r], **tol)


def _assert_model_top(served: list, user_vec: np.ndarray, items: np.ndarray, model_scores: np.ndarray) -> None:
    """``served`` (raw ids ``i<j>``) is a top list under the model's own scores: the model's scores of the
    served items, in served order, are the model's top scores (ties may be ordered either way)."""
    idx = np.array([int(r[1:]) for r in served])
    got = items[idx] @ user_vec
    np.testing.assert_allclose(got, model_scores[np.isfinite(model_scores)], rtol=1e-4, atol=1e-5)


def test_served_top10_equals_model_recommend(fitted: tuple[Model, list, list], train: Sequences,
                                             tmp_path: Path) -> None:
    from recsys.export import AnnConfig, export_model
    from serving import Recommender

    model = fitted[0]
    item_ids, user_ids = [f"i{j}" for j in range(1, N_ITEMS + 1)], [f"u{j}" for j in range(1, N_USERS + 1)]
    path = export_model(tmp_path / "b", model, item_ids, user_ids, ann=AnnConfig(n_trees=5, search_k_factors=(1,)))
    rec = Recommender.load(path, search="exact")
    items = model.item_vectors()
    hist = request_histories(seed=4)
    rows = np.arange(2, hist.n_rows)  # non-empty histories (an empty one is answered by popularity)
    ids, scores = model.recommend(rows, k=10, histories=hist)
    users = model.encode_users(hist)
    for b, r in enumerate(rows):
        raws = [f"i{j}" for j in hist.row(r)]
        raws.insert(len(raws) // 2, "not-an-item")  # unknown ids are ignored and reported
        got = rec.recommend_for_history(raws, k=10)
        assert got.source == "history" and got.unknown == ["not-an-item"]
        _assert_model_top(got.items, users[r], items, scores[b])
    # a known user's recent events: stored history + events, encoded now; neither comes back
    known = np.arange(1, 11)
    fresh = Sequences.from_lists([[]] + [hist.row(r).tolist() for r in range(4, 4 + len(known))], n_items=N_ITEMS)
    both = train.take(np.concatenate([[0], known])).concat(fresh)
    f_ids, f_scores = model.recommend(np.arange(1, len(known) + 1), k=10, histories=both)
    f_users = model.encode_users(both)
    for b, u in enumerate(known):
        got = rec.recommend(f"u{u}", k=10, history=[f"i{j}" for j in fresh.row(b + 1)])
        assert got.source == "fresh"
        assert not {int(r[1:]) for r in got.items} & set(both.row(b + 1).tolist())
        _assert_model_top(got.items, f_users[b + 1], items, f_scores[b])
        assert rec.recommend(f"u{u}", k=10).source == "model"
