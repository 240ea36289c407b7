"""Shared fixtures: the real data folder (../shared/data) and small synthetic sequences."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from recsys.prepare.sequences import Sequences

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RECSYS_SHARED_DATA", REPO.parent / "shared" / "data"))


def markov_sequences(n_users: int = 60, n_items: int = 20, seed: int = 0) -> Sequences:
    """Short sequences where the next item is ``previous % n_items + 1`` with probability 0.8."""
    rng = np.random.default_rng(seed)
    rows = [[]]
    for _ in range(n_users):
        s = [int(rng.integers(1, n_items + 1))]
        for _ in range(int(rng.integers(3, 9))):
            s.append(s[-1] % n_items + 1 if rng.random() < 0.8 else int(rng.integers(1, n_items + 1)))
        rows.append(s)
    return Sequences.from_lists(rows, n_items=n_items)


def _require(path: Path) -> Path:
    if path.exists():
        return path
    msg = (
        f"real data set {path} is absent: tests that read ../shared/data need the shared folder "
        "beside the checkout (set RECSYS_SHARED_DATA to point elsewhere)"
    )
    if os.environ.get("RECSYS_REQUIRE_DATA") == "1":
        pytest.fail(msg + "; RECSYS_REQUIRE_DATA=1 makes this a failure")
    pytest.skip(msg)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data; skips (or fails under RECSYS_REQUIRE_DATA=1) when absent."""
    return _require(SHARED_DATA)


@pytest.fixture(scope="session")
def beauty_path(shared_data: Path) -> Path:
    return _require(shared_data / "iclrec-amazon" / "Beauty.txt")


@pytest.fixture()
def sqlite_store(tmp_path, monkeypatch):
    """The embedded MLflow store (``mlruns.db``) in a fresh working directory; ends any run left active."""
    import mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield tmp_path
    mlflow.end_run()
