"""experiments/compare_prepared.py: an Annoy index that differs in bytes is judged by its answers."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from annoy import AnnoyIndex

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "experiments"))
import compare_prepared  # noqa: E402


def _index(path: Path, vectors: np.ndarray, n_jobs: int) -> None:
    index = AnnoyIndex(vectors.shape[1], "dot")
    index.set_seed(0)
    for i, v in enumerate(vectors):
        index.add_item(i, v)
    index.build(8, n_jobs=n_jobs)
    index.save(str(path))


def test_two_threaded_builds_answer_alike_and_other_vectors_do_not(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((3000, 16)).astype(np.float32)
    manifest = {"dim": 16, "metric": "dot", "annoy": {"search_k": 800}}
    _index(tmp_path / "a.ann", vectors, n_jobs=-1)
    _index(tmp_path / "b.ann", vectors, n_jobs=-1)  # threads append nodes in the order they finish
    same = compare_prepared.same_answers(tmp_path / "a.ann", tmp_path / "b.ann", manifest)
    assert same == {"items": 3000, "asked": 3000, "same": 1.0}
    _index(tmp_path / "c.ann", vectors + rng.standard_normal(vectors.shape).astype(np.float32), n_jobs=1)
    other = compare_prepared.same_answers(tmp_path / "a.ann", tmp_path / "c.ann", manifest)
    assert other["asked"] == 3000 and other["same"] < 0.1
