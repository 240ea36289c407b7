"""recsys.export: bundle contents, ANN tuning against exact top-k, input checks, publish/rollback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from support import make_bundle

from recsys.export import AnnConfig, export_bundle, export_model, list_bundles, publish, rollback
from recsys.export.ann import SearchOption, ann_topk, build_index, choose_search, exact_topk, recall
from recsys.export.bundle import EncoderMismatch
from recsys.export.publish import current_version
from recsys.models.base import Model, NaNLossError
from recsys.prepare.sequences import Sequences
from serving import BundleError, Recommender
from serving.format import sha256_file

SMALL = AnnConfig(n_trees=5, search_k_factors=(1,))


def _arrays(n_items=30, n_users=6, d=4, seed=0):
    rng = np.random.default_rng(seed)
    items, users = rng.normal(size=(n_items + 1, d)), rng.normal(size=(n_users + 1, d))
    seen = Sequences.from_lists([[]] + [[1 + u, 2 + u] for u in range(n_users)], n_items=n_items)
    return items, users, list(range(1, n_items + 1)), [f"u{j}" for j in range(n_users)], seen


def test_manifest_lists_every_file_with_its_hash(tmp_path):
    path, _ = make_bundle(tmp_path / "b")
    m = json.loads((path / "manifest.json").read_text())
    on_disk = {p.name for p in path.iterdir()} - {"manifest.json"}
    assert set(m["files"]) == on_disk
    assert all(m["files"][n]["sha256"] == sha256_file(path / n) for n in on_disk)
    assert m["counts"] == {"items": 300, "users": 40, "seen": 320}
    assert m["metric"] == "dot" and m["dim"] == 16 and m["format_version"] == 2
    assert m["recall_at_10"]["users"] == 1.0 and m["recall_at_10"]["items"] == 1.0
    assert m["annoy"]["n_trees"] == 50
    assert np.load(path / "user_vectors.npy").dtype == np.float32
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir left behind


def test_tuning_raises_trees_until_target_reached(tmp_path):
    rng = np.random.default_rng(1)
    items = rng.normal(size=(2001, 24)).astype(np.float32)
    users = rng.normal(size=(201, 24)).astype(np.float32)
    cfg = AnnConfig(search_k_factors=(1,), max_trees=80, sample=200)
    seen = sp.csr_matrix((201, 2001), dtype=np.float32)
    path = export_bundle(tmp_path / "t", items, users, np.arange(2000), np.arange(200), seen, None, "dot", "r",
                         target_recall=0.9, ann=cfg)
    m = json.loads((path / "manifest.json").read_text())
    tried = m["recall_at_10"]["tried"]
    assert [t["n_trees"] for t in tried] == [10, 20, 40, 80][: len(tried)]
    ok = [min(t["recall_users"], t["recall_items"]) >= 0.9 for t in tried]
    assert ok[-1] == m["recall_at_10"]["target_reached"] and not any(ok[:-1])
    # the recorded recall is what serving actually achieves on fresh queries of the same kind
    rec = Recommender.load(path)
    q = rng.normal(size=(100, 24)).astype(np.float32)
    got = [np.asarray([int(i) for i in rec._answer(v, 10, np.zeros(0, np.int64), None, "model").items]) + 1
           for v in q]
    assert abs(recall(exact_topk(q, items, "dot"), got) - m["recall_at_10"]["users"]) < 0.1


def test_recall_helpers_on_a_hand_made_case():
    items = np.array([[0, 0], [1, 0], [0, 1], [-1, 0]], dtype=np.float32)
    assert exact_topk(np.array([[1.0, 0.1]]), items, "dot", k=2).tolist()[0] in ([1, 2], [2, 1])
    assert recall(np.array([[1, 2]]), [np.array([2, 3])]) == 0.5
    index = build_index(items, "dot", n_trees=2)
    assert ann_topk(index, np.array([[1.0, 0.1]], np.float32), -1, items, "dot", k=1)[0].tolist() == [1]
    assert ann_topk(index, np.array([[1.0, 0.1]], np.float32), -1, items, "dot", k=1, banned=[[1]])[0].tolist() == [2]
    assert exact_topk(np.array([[1.0, 0.1]]), items, "dot", k=1, banned=[[1]]).tolist() == [[2]]


def test_search_choice_is_the_fastest_that_reached_the_target():
    fast_miss, slow_hit = SearchOption(0.90, False, 50.0), SearchOption(0.99, True, 900.0)
    cfg = AnnConfig()
    assert choose_search({"annoy": SearchOption(0.99, True, 300.0), "exact": SearchOption(1.0, True, 200.0)},
                         cfg) == "exact"  # exact scoring is faster on this catalogue: Annoy saves nothing
    assert choose_search({"annoy": SearchOption(0.99, True, 100.0), "exact": slow_hit}, cfg) == "annoy"
    assert choose_search({"annoy": fast_miss, "ivf": slow_hit}, cfg) == "ivf"  # a missed target never wins on speed
    assert choose_search({"annoy": fast_miss, "ivf": SearchOption(0.93, False, 80.0)}, cfg) == "ivf"  # best recall
    assert choose_search({"annoy": fast_miss, "exact": slow_hit}, AnnConfig(search="annoy")) == "annoy"
    with pytest.raises(ValueError, match="that index was not built"):
        choose_search({"annoy": fast_miss}, AnnConfig(search="ivf"))


def test_bad_inputs_are_refused_with_the_field_named(tmp_path):
    items, users, iids, uids, seen = _arrays()
    nan = items.copy()
    nan[3, 1] = np.nan
    with pytest.raises(NaNLossError, match=r"item_vectors has NaN/inf in 1 rows \(first \[3\]\)"):
        export_bundle(tmp_path / "x", nan, users, iids, uids, seen, None, "dot", "m", ann=SMALL)
    with pytest.raises(ValueError, match="duplicate raw ids"):
        export_bundle(tmp_path / "x", items, users, [1] * 30, uids, seen, None, "dot", "m", ann=SMALL)
    with pytest.raises(ValueError, match=r"user_ids must have one raw id per index 1..6"):
        export_bundle(tmp_path / "x", items, users, iids, uids[:-1], seen, None, "dot", "m", ann=SMALL)
    with pytest.raises(ValueError, match="user_vectors has 5 dims but item_vectors have 4"):
        export_bundle(tmp_path / "x", items, np.ones((7, 5)), iids, uids, seen, None, "dot", "m", ann=SMALL)
    with pytest.raises(ValueError, match="metric must be one of"):
        export_bundle(tmp_path / "x", items, users, iids, uids, seen, None, "l2", "m", ann=SMALL)
    with pytest.raises(ValueError, match="seen has shape"):
        export_bundle(tmp_path / "x", items, users, iids, uids, sp.csr_matrix((3, 31)), None, "dot", "m", ann=SMALL)
    export_bundle(tmp_path / "x", items, users, iids, uids, seen, None, "dot", "m", ann=SMALL)
    with pytest.raises(FileExistsError, match="bundles are immutable"):
        export_bundle(tmp_path / "x", items, users, iids, uids, seen, None, "dot", "m", ann=SMALL)


def test_encoder_spec_and_weights_drive_history_encoding(tmp_path):
    items, users, iids, uids, seen = _arrays()
    table = np.eye(4, dtype=np.float32)[np.arange(items.shape[0]) % 4]
    spec = {"kind": "mean", "decay": 0.5, "max_len": 2}
    path = export_bundle(tmp_path / "e", items, users, iids, uids, seen, None, "dot", "m", ann=SMALL,
                         encoder_spec=spec, encoder_weights={"item_table": table})
    enc = Recommender.load(path).bundle.encoder
    # max_len 2 keeps items 2, 3; weights 0.5 (older) and 1 (newest), over the item_table rows
    expected = (0.5 * table[2] + 1.0 * table[3]) / 1.5
    assert np.allclose(enc.encode(np.array([1, 2, 3])), expected, atol=1e-6)
    with pytest.raises(ValueError, match=r"item_table has 2 rows"):
        export_bundle(tmp_path / "f", items, users, iids, uids, seen, None, "dot", "m", ann=SMALL,
                      encoder_spec=spec, encoder_weights={"item_table": table[:2]})
    with pytest.raises(ValueError, match="encoder kind 'mean_linear' is unknown"):
        export_bundle(tmp_path / "g", items, users, iids, uids, seen, None, "dot", "m", ann=SMALL,
                      encoder_spec={"kind": "mean_linear"})


def test_an_unknown_encoder_kind_is_refused_at_load(tmp_path):
    items, users, iids, uids, seen = _arrays()
    path = export_bundle(tmp_path / "e", items, users, iids, uids, seen, None, "dot", "m", ann=SMALL)
    m = json.loads((path / "manifest.json").read_text())
    m["encoder"]["kind"] = "gru"  # written by a newer recsys
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="encoder kind 'gru' is unknown to this server"):
        Recommender.load(path)


class _Fixed(Model):
    """A fitted model with known item vectors whose users are the plain mean of their items."""

    name, similarity = "fixed", "cosine"

    def __init__(self, items, users):
        super().__init__()
        self._items, self._users = items.astype(np.float32), users.astype(np.float32)

    def fit(self, train, on_epoch_end=None, validate=None):
        self._train = train
        return self

    def item_vectors(self):
        return self._items

    def encode_users(self, histories):
        return np.stack([self._items[histories.row(r)].mean(0) if histories.lengths()[r] else
                         np.zeros(self._items.shape[1], np.float32) for r in range(histories.n_rows)])

    def export_encoder(self):
        return {"kind": "mean", "decay": 1.0, "max_len": None}, {}

    def save(self, directory):  # pragma: no cover - not part of this test
        raise NotImplementedError

    @classmethod
    def load(cls, directory):  # pragma: no cover
        raise NotImplementedError


class _Inconsistent(_Fixed):
    """Its encoder says "mean" but encode_users returns something else: must not be served."""

    def encode_users(self, histories):
        return self._users[: histories.n_rows]


def test_export_model_uses_its_metric_counts_meta_and_encoder(tmp_path):
    items, users, iids, uids, seen = _arrays()
    model = _Fixed(items, users).fit(seen)
    meta = pl.DataFrame({"item": [1, 2], "title": ["one", "two"], "categories": [["x"], []]})
    path = export_model(tmp_path / "m", model, iids, pl.Series(uids), seen, run_id="r1", item_meta=meta, ann=SMALL)
    m = json.loads((path / "manifest.json").read_text())
    assert (m["metric"], m["model"], m["run_id"], m["encoder"]["kind"]) == ("angular", "fixed", "r1", "mean")
    assert m["encoder_check"]["users"] == len(uids) and m["encoder_check"]["max_abs_diff"] < 1e-6
    rec = Recommender.load(path)
    np.testing.assert_allclose(rec.bundle.user_vectors, model.encode_users(seen), atol=1e-7)
    np.testing.assert_array_equal(rec.bundle.history(2), seen.row(2))  # the stored history, in time order
    pop = rec.recommend("nobody", k=3)
    assert pop.items == [2, 3, 4] and pop.scores == [2.0, 2.0, 2.0]  # items 2..6 seen twice, ties by index
    assert pop.meta[0] == {"title": "two", "categories": []}
    with pytest.raises(EncoderMismatch, match="does not reproduce the stored user vectors"):
        export_model(tmp_path / "bad", _Inconsistent(items, users).fit(seen), iids, uids, seen, ann=SMALL)
    assert not (tmp_path / "bad").exists()


# -- publishing ----------------------------------------------------------------------------------
def _publish_n(root: Path, tmp: Path, n: int, keep: int) -> list[Path]:
    items, users, iids, uids, seen = _arrays()
    out = []
    for i in range(n):
        b = export_bundle(tmp / f"b{i}", items + i, users, iids, uids, seen, None, "dot", f"m{i}", ann=SMALL)
        out.append(publish(root, b, version=f"v{i:03d}", keep=keep))
    return out


def test_publish_keeps_last_n_and_points_current(tmp_path):
    root = tmp_path / "root"
    paths = _publish_n(root, tmp_path, 4, keep=2)
    assert [b.version for b in list_bundles(root)] == ["v002", "v003"]
    assert current_version(root) == "v003" and os.readlink(root / "current") == "bundles/v003"
    assert Recommender.load(root).manifest["model"] == "m3"
    assert not paths[0].exists() and not (tmp_path / "b3").exists()  # moved into the root
    assert [b.current for b in list_bundles(root)] == [False, True]


def test_rollback_to_previous_and_refuse_beyond_oldest(tmp_path):
    root = tmp_path / "root"
    _publish_n(root, tmp_path, 3, keep=3)
    assert rollback(root).name == "v001"
    assert Recommender.load(root).manifest["model"] == "m1"
    assert rollback(root).name == "v000"
    with pytest.raises(RuntimeError, match="no bundle older than 'v000'"):
        rollback(root)


def test_publish_refuses_a_corrupt_bundle(tmp_path):
    items, users, iids, uids, seen = _arrays()
    b = export_bundle(tmp_path / "b", items, users, iids, uids, seen, None, "dot", "m", ann=SMALL)
    with open(b / "popular.npy", "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\x7f")
    with pytest.raises(BundleError, match=r"popular\.npy fails its sha256"):
        publish(tmp_path / "root", b)
    assert b.is_dir() and list_bundles(tmp_path / "root") == []
