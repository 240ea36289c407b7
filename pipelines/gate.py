"""The promotion gate: candidate and champion bundles judged the same way on the same held-out split.

Each bundle is scored as it serves: its own encoder (:mod:`serving.encoder`, loaded from the bundle)
encodes the new data's test histories, items matched by raw id, and its item vectors rank every item,
the history left out or not as the bundle's lookups do (manifest ``exclude_seen``). Neither bundle's
stored user vectors are used, so a champion encoded from older histories is not handicapped against a
candidate encoded from the new ones. What a bundle does not know is handled as serving handles it:
unknown history items are ignored, unknown items are never ranked (a target among them is a miss), and
a user with no known history item gets the bundle's popularity ranking. The metrics carry those counts
(``gate_unknown_items``, ``gate_unknown_targets``, ``gate_fallback_users``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from recsys.evaluation.evaluator import EvalProtocol, evaluate
from recsys.evaluation.sample import protocol_part
from recsys.prepare.idmap import IdMap
from recsys.prepare.split import SplitData
from serving import format as fmt
from serving.loader import load_bundle


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


def align_rows(vectors: np.ndarray, bundle_ids: np.ndarray, target: IdMap, fill: float = 0.0) -> np.ndarray:
    """Rows of ``vectors`` (row j + 1 = bundle id j) re-ordered to ``target``'s indices; rows of ``target``'s
    ids that ``bundle_ids`` lacks (and row 0) are ``fill``."""
    out = np.full((len(target) + 1, vectors.shape[1]), fill, dtype=np.float32)
    ids = pl.Series("id", bundle_ids)
    if ids.dtype != target.dtype:
        ids = ids.cast(target.dtype, strict=False)
    idx = target.encode(ids, unknown="null").fill_null(0).to_numpy() if len(ids) else np.zeros(0, dtype=np.int64)
    known = idx > 0
    out[idx[known]] = vectors[1:][known]
    return out


def bundle_metrics(bundle: Path, split: SplitData, items: IdMap, protocol: EvalProtocol) -> dict:
    """Test metrics of ``bundle`` as served (see the module docstring), on ``split``'s test users."""
    b = load_bundle(bundle)
    to_b = np.zeros(len(items) + 1, dtype=np.int64)  # this data's item index -> the bundle's (0 = unknown)
    to_b[1:] = b.items.lookup(items.ids.to_list())
    known = to_b > 0
    known[0] = False
    never = np.zeros(len(b.item_vectors), dtype=bool)  # the bundle's never-candidates, as serving bans them
    never[np.asarray(b.manifest.get(fmt.NEVER_CANDIDATES) or [], dtype=np.int64)] = True
    eligible = known & ~never[to_b]
    # the test users the training runs scored: all, or the protocol's max_users sample (same seed)
    part = protocol_part(split.test_history, split.test_targets, protocol)
    hist, test_targets = part.histories, part.targets
    mapped = to_b[np.asarray(hist.items, dtype=np.int64)]
    keep = mapped > 0
    lens = np.bincount(hist.row_index()[keep], minlength=hist.n_rows)
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    users = b.encoder.encode_batch(offsets, mapped[keep])  # (n_rows, d): the bundle's own encoder
    item_vecs = np.zeros((len(items) + 1, users.shape[1]), dtype=np.float32)
    item_vecs[known] = b.item_vectors[to_b[known]]
    if b.manifest["metric"] == "angular":  # serving ranks by cosine
        item_vecs /= np.maximum(np.linalg.norm(item_vecs, axis=1, keepdims=True), 1e-12)
    # serving's popularity fallback as one more dimension that only fallback users weigh
    fallback = lens == 0
    pop = np.zeros(len(items) + 1, dtype=np.float32)
    pop[known] = b.popularity[to_b[known]]
    users = np.hstack([np.where(fallback[:, None], 0.0, users), fallback[:, None]]).astype(np.float32)
    item_vecs = np.hstack([item_vecs, pop[:, None]])
    # seen items left out as the bundle's lookups do by default
    protocol = dataclasses.replace(protocol, exclude_history=bool(b.manifest.get(fmt.EXCLUDE_SEEN, True)))
    out = evaluate(users, item_vecs, hist, test_targets, protocol, ineligible=~eligible, **part.kwargs())
    targets = np.asarray(test_targets.items, dtype=np.int64)
    has_target = np.diff(test_targets.offsets) > 0
    out.update(gate_unknown_items=float((~known[1:]).sum()), gate_unknown_targets=float((~known[targets]).sum()),
               gate_fallback_users=float((fallback & has_target).sum()))
    return out


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
