"""The promotion gate: candidate and champion bundles scored on the same held-out split.

Both bundles are judged as they would be served: the stored user vector of each test user
(looked up by raw id) against the stored item vectors, full ranking with the user's history
excluded. A bundle that does not know a user or an item gives it a zero vector (it cannot rank
it), so a champion trained on older data is not favoured on new users or items.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from recsys.data.idmap import IdMap
from recsys.data.split import SplitData
from recsys.evaluation.evaluator import EvalProtocol, evaluate


@dataclass
class GateDecision:
    promote: bool
    metric: str
    candidate: float
    champion: float | None
    tolerance: float
    reason: str

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def align_rows(vectors: np.ndarray, bundle_ids: np.ndarray, target: IdMap) -> np.ndarray:
    """Rows of ``vectors`` (row j + 1 = bundle id j) re-ordered to ``target``'s indices; unknown ids -> 0."""
    out = np.zeros((len(target) + 1, vectors.shape[1]), dtype=np.float32)
    ids = pl.Series("id", bundle_ids)
    if ids.dtype != target.dtype:
        ids = ids.cast(target.dtype, strict=False)
    idx = target.encode(ids, unknown="null").fill_null(0).to_numpy() if len(ids) else np.zeros(0, dtype=np.int64)
    known = idx > 0
    out[idx[known]] = vectors[1:][known]
    return out


def bundle_metrics(bundle: Path, split: SplitData, users: IdMap, items: IdMap, protocol: EvalProtocol) -> dict:
    """Test metrics of a bundle's stored vectors on ``split`` (ids mapped through the raw ids)."""
    item_vecs = np.load(bundle / "item_vectors.npy", mmap_mode="r")
    user_vecs = np.load(bundle / "user_vectors.npy", mmap_mode="r")
    iv = align_rows(np.asarray(item_vecs), np.load(bundle / "item_ids.npy", allow_pickle=False), items)
    uv = align_rows(np.asarray(user_vecs), np.load(bundle / "user_ids.npy", allow_pickle=False), users)
    return evaluate(uv, iv, split.test_history, split.test_targets, protocol)


def decide(candidate: dict, champion: dict | None, metric: str, tolerance: float) -> GateDecision:
    """Promote when ``candidate[metric] >= champion[metric] - tolerance`` (or there is no champion)."""
    if metric not in candidate:
        raise ValueError(f"gate metric {metric!r} is not among the evaluated metrics {sorted(candidate)}")
    c = float(candidate[metric])
    if champion is None:
        return GateDecision(True, metric, c, None, tolerance, "no champion published yet")
    h = float(champion[metric])
    if c >= h - tolerance:
        return GateDecision(True, metric, c, h, tolerance, f"candidate {c:.4f} >= champion {h:.4f} - {tolerance}")
    return GateDecision(False, metric, c, h, tolerance,
                        f"candidate {metric} {c:.4f} is worse than the champion's {h:.4f} by more than {tolerance}")
