"""Write a serving bundle (see :mod:`serving.format` for the layout) from plain arrays or a model.

    >>> export_bundle("out/b1", item_vecs, user_vecs, item_ids, user_ids, seen=train,
    ...               popularity=None, metric="dot", model_name="als")    # doctest: +SKIP
    PosixPath('out/b1')

Everything is written into a hidden temp directory beside ``dest_dir`` and renamed into place
only when complete, so a reader never sees half a bundle.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.atomic import atomic_dir
from recsys.export.ann import AnnConfig
from recsys.export.inputs import as_id_array, as_seen_csr, check_vectors, meta_list
from recsys.export.search import build_search
from recsys.models.base import Model
from recsys.prepare.sequences import Sequences
from serving import format as fmt
from serving.encoder import Encoder, build_encoder

N_POPULAR = 10_000


def export_bundle(
    dest_dir: str | Path,
    item_vectors: np.ndarray,
    user_vectors: np.ndarray,
    item_ids: Any,
    user_ids: Any,
    seen: Sequences | sp.csr_matrix,
    popularity: np.ndarray | None,
    metric: str,
    model_name: str,
    run_id: str | None = None,
    item_meta: Any = None,
    encoder_spec: Mapping | None = None,
    encoder_weights: Mapping[str, np.ndarray] | None = None,
    target_recall: float = 0.98,
    ann: AnnConfig | None = None,
    overwrite: bool = False,
    check_users: int = 0,
    content_only: Sequence[Sequence[Any]] | None = None,
    never_candidates: np.ndarray | None = None,
    exclude_seen: bool = True,
) -> Path:
    """Export vectors, id maps, seen items and the tuned indexes (Annoy up to ``AnnConfig.annoy_max_items``; IVF on
    large catalogues) as one bundle.

    Parameters
    ----------
    dest_dir : the bundle directory to create (must not exist unless ``overwrite``).
    item_vectors : (n_items + 1, d) float, row 0 = padding.
    user_vectors : (n_users + 1, d) float, row 0 = padding user.
    item_ids, user_ids : raw ids of indices 1..n (polars Series, IdMap, list or array; ints or strings).
    seen : each user's history: Sequences (row = user, oldest first; stored as ``history.npz``, which
        request-time encoding extends with a user's recent events) or a CSR (n_users + 1, n_items + 1)
        (then the stored history is in item-index order).
    popularity : (n_items + 1,) counts for the cold-start fallback; None counts users in ``seen``.
    metric : "dot" or "angular" (a model's "cosine" similarity maps to "angular").
    model_name, run_id : recorded in the manifest (run_id = the MLflow run).
    item_meta : optional polars DataFrame with an ``item`` column (plus title, categories, ...)
        or a mapping raw id -> dict.
    encoder_spec, encoder_weights : request-time history encoder (see :mod:`serving.encoder`);
        default: the plain mean of item vectors (``{"kind": "mean"}``).
    target_recall : ANN recall@10 to reach against exact top-10 (overrides ``ann.target_recall``).
    check_users : when > 0 (``export_model`` sets it), the encoder re-encodes the stored histories of that
        many sampled users and must reproduce their ``user_vectors`` (else ``EncoderMismatch``); the
        manifest's ``encoder_check`` records the largest difference.
    content_only : ``[raw id, source]`` of items added after training whose vectors come from their content
        alone (:mod:`recsys.export.extend`); recorded in the manifest, where serving reads it.
    never_candidates : item indices (1..n_items) that serving never returns from a model lookup (a model's
        ``ineligible_items()``: vectors with nothing learnt); recorded in the manifest.
    exclude_seen : whether serving leaves a user's seen items out unless a request says otherwise (the
        pipeline decides it per log on validation); recorded in the manifest.

    Returns
    -------
    Path of the bundle directory.
    """
    dest = Path(dest_dir)
    metric = {"cosine": "angular"}.get(metric, metric)
    if metric not in fmt.METRICS:
        raise ValueError(f"metric must be one of {fmt.METRICS} (or 'cosine'); got {metric!r}")
    if dest.exists() and not overwrite:
        raise FileExistsError(f"{dest} exists; bundles are immutable: pick a new directory or pass overwrite=True")
    items = check_vectors("item_vectors", item_vectors)
    users = check_vectors("user_vectors", user_vectors, dim=items.shape[1])
    n_items, n_users, dim = items.shape[0] - 1, users.shape[0] - 1, items.shape[1]
    arrays = {
        fmt.ITEM_VECTORS: items, fmt.USER_VECTORS: users,
        fmt.ITEM_IDS: as_id_array("item_ids", item_ids, n_items),
        fmt.USER_IDS: as_id_array("user_ids", user_ids, n_users),
    }
    csr = as_seen_csr(seen, n_users, n_items)
    pop = _popularity(popularity, csr, n_items)
    arrays[fmt.POPULARITY], arrays[fmt.POPULAR] = pop, _popular_order(pop)
    weights = {k: np.asarray(v, dtype=np.float32) for k, v in (encoder_weights or {}).items()}
    spec = dict(encoder_spec or {"kind": "mean", "decay": 1.0, "max_len": None})
    encoder = build_encoder(spec, weights, items)  # raises ValueError naming what does not fit
    history = seen if isinstance(seen, Sequences) else None
    cfg = ann or AnnConfig()
    cfg = AnnConfig(**{**cfg.__dict__, "target_recall": target_recall})
    if cfg.search not in ("auto", *fmt.SEARCH_MODES):
        raise ValueError(f"AnnConfig.search must be 'auto' or one of {fmt.SEARCH_MODES}; got {cfg.search!r}")
    encoder_check = _check_encoder(check_users, encoder, users, seen)
    built = build_search(items, users, metric, cfg, seen=csr)
    index, ann_result = built.annoy, built.annoy_result
    # the recall block describes the index tuned for the bundle: Annoy, or IVF where Annoy was not built
    tuned = ann_result if ann_result is not None else built.ivf_result

    # written into a temporary folder that replaces `dest` in one exchange: a reader (or a rerun after a
    # kill) finds the old bundle or the complete new one
    with atomic_dir(dest) as tmp:
        for name, arr in arrays.items():
            np.save(tmp / name, arr, allow_pickle=False)
        for name, arr in weights.items():
            np.save(tmp / f"{fmt.ENCODER_PREFIX}{name}.npy", arr, allow_pickle=False)
        np.savez(tmp / fmt.SEEN, indptr=csr.indptr.astype(np.int64), indices=csr.indices.astype(np.int32))
        h_ptr, h_items = (history.offsets, history.items) if history is not None else (csr.indptr, csr.indices)
        np.savez(tmp / fmt.HISTORY, indptr=np.asarray(h_ptr, dtype=np.int64), items=np.asarray(h_items, np.int32))
        if index is not None:
            index.save(str(tmp / fmt.INDEX))
            index.unload()
        if built.ivf is not None:
            for name, arr in ((fmt.IVF_CENTROIDS, built.ivf.centroids), (fmt.IVF_OFFSETS, built.ivf.offsets),
                              (fmt.IVF_ITEMS, built.ivf.items), (fmt.IVF_VECTORS, built.ivf.vectors)):
                np.save(tmp / name, arr, allow_pickle=False)
        if item_meta is not None:
            meta = meta_list(item_meta, arrays[fmt.ITEM_IDS])
            (tmp / fmt.ITEMS_META).write_text(json.dumps(meta, default=str))
        manifest = {
            "format_version": fmt.FORMAT_VERSION, "model": model_name, "run_id": run_id,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"), "dim": dim, "metric": metric,
            "search": built.search,
            "search_options": built.manifest_options(),
            "annoy": None if ann_result is None else {
                "n_trees": ann_result.n_trees, "search_k": ann_result.search_k, "search_k_for": fmt.SEARCH_K_FOR,
                "build_seconds": round(ann_result.build_seconds, 3)},
            "recall_at_10": {"index": "annoy" if ann_result is not None else "ivf", "users": tuned.recall_users,
                             "items": tuned.recall_items, "target": target_recall,
                             "target_reached": tuned.target_reached, "sample": cfg.sample, "tried": tuned.tried},
            "ivf": None if built.ivf_result is None else {
                **built.ivf_result.to_json(), "build_seconds": round(built.ivf_result.build_seconds, 3)},
            "counts": {"items": n_items, "users": n_users, "seen": int(csr.nnz)},
            "id_types": {"item": _kind(arrays[fmt.ITEM_IDS]), "user": _kind(arrays[fmt.USER_IDS])},
            "encoder": {**spec, "weights": sorted(weights)},
            "encoder_check": encoder_check,
            "content_only": _content_only(content_only, arrays[fmt.ITEM_IDS]),
            fmt.NEVER_CANDIDATES: _never_candidates(never_candidates, n_items),
            fmt.EXCLUDE_SEEN: bool(exclude_seen),
            "files": _file_table(tmp),
        }
        (tmp / fmt.MANIFEST).write_text(json.dumps(manifest, indent=2))
    return dest


def export_model(dest_dir: str | Path, model: Model, item_ids: Any, user_ids: Any,
                 histories: Sequences | None = None, run_id: str | None = None, **kwargs: Any) -> Path:
    """:func:`export_bundle` for a fitted model: the one export path (the pipeline and every test use it).

    ``histories`` (row = user, oldest first; default: the model's training sequences) are each user's
    full history: the stored user vectors are ``model.encode_users(histories)``, the stored history that
    request-time events extend, the seen items and the popularity counts. The model's own encoder
    (``model.export_encoder()``) goes into the bundle and is checked to reproduce the stored vectors.
    """
    hist = histories if histories is not None else model._require_train()
    counts = np.bincount(np.asarray(hist.items, dtype=np.int64), minlength=hist.n_items + 1)
    spec, weights = model.export_encoder()
    never = model.ineligible_items()
    kwargs = {"popularity": counts, "model_name": model.name, "check_users": 200,
              "never_candidates": None if never is None else np.flatnonzero(never), **kwargs}
    return export_bundle(dest_dir, model.item_vectors(), model.encode_users(hist), item_ids, user_ids, seen=hist,
                         metric=model.similarity, run_id=run_id, encoder_spec=spec, encoder_weights=weights,
                         **kwargs)


def model_encoder(model: Model) -> Encoder:
    """Serving's numpy encoder for a fitted model, built from ``model.export_encoder()`` as a bundle loads it."""
    spec, weights = model.export_encoder()
    return build_encoder(spec, {k: np.asarray(v, dtype=np.float32) for k, v in weights.items()},
                         np.asarray(model.item_vectors(), dtype=np.float32))


class EncoderMismatch(ValueError):
    """The bundle's encoder does not reproduce the user vectors it is exported with."""


def _check_encoder(n: int, encoder: Encoder, users: np.ndarray, seen: Sequences | sp.csr_matrix) -> dict | None:
    """Re-encode ``n`` sampled users' stored histories; their vectors must match ``users`` (float32 round-off)."""
    if n <= 0 or not isinstance(seen, Sequences) or seen.n_rows < 2:
        return None
    rows = np.sort(np.random.default_rng(0).choice(np.arange(1, seen.n_rows), min(n, seen.n_rows - 1), replace=False))
    sub = seen.take(rows)
    got = encoder.encode_batch(sub.offsets, sub.items)
    want = users[rows]
    scale = max(float(np.abs(want).max(initial=0.0)), 1.0)
    diff = float(np.abs(got - want).max(initial=0.0))
    if diff > 1e-3 * scale:
        worst = int(rows[np.abs(got - want).max(axis=1).argmax()])
        raise EncoderMismatch(f"the bundle's {encoder.spec.get('kind')} encoder does not reproduce the stored user "
                              f"vectors (max |diff| {diff:.3g} at user index {worst}); the model's export_encoder() "
                              "and encode_users() disagree: fix the model before serving it")
    return {"users": len(rows), "max_abs_diff": diff}


def _content_only(entries: Sequence[Sequence[Any]] | None, item_ids: np.ndarray) -> dict | None:
    """Manifest record of the content-only items: ``{"count", "sources": {source: n}, "items": [[id, source]]}``."""
    if not entries:
        return None
    known = set(item_ids.tolist())
    missing = [e[0] for e in entries if e[0] not in known]
    if missing:
        raise ValueError(f"content_only lists items the bundle does not hold: {missing[:3]}")
    sources: dict[str, int] = {}
    for _, src in entries:
        sources[src] = sources.get(src, 0) + 1
    return {"count": len(entries), "sources": sources, "items": [[_plain(raw), src] for raw, src in entries]}


def _never_candidates(items: np.ndarray | None, n_items: int) -> list[int]:
    """Sorted distinct item indices, checked to lie in 1..n_items."""
    if items is None:
        return []
    idx = np.unique(np.asarray(items, dtype=np.int64))
    if len(idx) and (idx[0] < 1 or idx[-1] > n_items):
        raise ValueError(f"never_candidates must be item indices in 1..{n_items}; got {idx[0]}..{idx[-1]}")
    return idx.tolist()


def _plain(raw: Any) -> Any:
    return raw.item() if isinstance(raw, np.generic) else raw


def _popularity(popularity: np.ndarray | None, csr: sp.csr_matrix, n_items: int) -> np.ndarray:
    if popularity is None:
        return np.bincount(csr.indices, minlength=n_items + 1).astype(np.float32)
    pop = np.asarray(popularity, dtype=np.float32)
    if pop.shape != (n_items + 1,) or not np.all(np.isfinite(pop)):
        raise ValueError(f"popularity must be ({n_items + 1},) finite counts (row 0 = padding); got {pop.shape}")
    return pop


def _popular_order(pop: np.ndarray) -> np.ndarray:
    """(min(n_items, N_POPULAR),) item indices by count, ties by index (stable)."""
    order = np.argsort(-pop[1:], kind="stable")[:N_POPULAR] + 1
    return order.astype(np.int64)


def _kind(ids: np.ndarray) -> str:
    return "int" if ids.dtype.kind in "iu" else "str"


def _file_table(directory: Path) -> dict[str, dict]:
    return {p.name: {"sha256": fmt.sha256_file(p), "bytes": p.stat().st_size}
            for p in sorted(directory.iterdir()) if p.is_file()}


__all__: Sequence[str] = ("EncoderMismatch", "export_bundle", "export_model", "model_encoder")
