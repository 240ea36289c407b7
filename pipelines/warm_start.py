"""Warm start of a pipeline model from the published champion (``pipeline.warm_start``).

A model declares what it can start from (``Model.warm_start``):

``"vectors"``  item2vec: the champion bundle's input vectors (``init_vectors``), when the champion is the
               same kind of model with the same dimension;
``"weights"``  two-tower: every weight of the same-label model trained by the champion's run
               (``init_weights``), when that model has the same architecture.

Either way the item rows are re-ordered to this run's item ids; items the champion did not know keep
their random init (zero rows for vectors, all-NaN rows for weights, as each config field documents).
Returns the config values to add, or ``{}`` (start from scratch) with the reason logged.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from pipelines import gate as gating
from pipelines.runstate import RunDir
from recsys import atomic
from recsys.config import from_dict
from recsys.models.registry import MODELS
from recsys.prepare.format import Prepared, load_id_maps

log = logging.getLogger(__name__)

#: config fields that decide a two-tower's tensor shapes: warm start needs them equal
ARCHITECTURE = ("dim", "max_len", "n_layers", "n_heads", "user_tower", "pooling", "fusion", "item_id", "features",
                "text_buckets", "mixer", "bsa_keep")


def from_champion(champion: dict | None, run_path: Path, label: str, name: str, params: dict,
                  data: Prepared) -> dict:
    """The warm-start config values for model ``label`` (registry ``name``) of this run, or ``{}``."""
    kind = MODELS[name].warm_start
    if not champion or not kind or f"init_{kind}" in params:
        return {}
    if kind == "vectors":
        return _vectors(champion, run_path, label, name, params, data)
    return _weights(champion, run_path, label, name, params, data)


def _vectors(champ: dict, run_path: Path, label: str, name: str, params: dict, data: Prepared) -> dict:
    from serving.format import BundleError
    from serving.loader import load_bundle

    try:
        bundle = load_bundle(champ["bundle"], verify=False)
    except (BundleError, OSError) as exc:
        log.info("%s: the champion's bundle cannot be read (%s): no warm start", label, exc)
        return {}
    champ_model = bundle.manifest["model"].split(":")[-1]
    if champ_model != name:
        log.info("%s: the champion is a %s model, not %s: no warm start", label, champ_model, name)
        return {}
    vectors = np.asarray(bundle.input_vectors)
    dim = params.get("dim", MODELS[name].Config().dim)
    if vectors.shape[1] != dim:
        log.info("%s: champion vectors have dim %d, model dim %d: no warm start", label, vectors.shape[1], dim)
        return {}
    aligned = gating.align_rows(vectors, np.asarray(bundle.items.ids), data.items)
    path = run_path / "warm_start" / f"{label}.npy"
    with atomic.atomic_path(path) as tmp:
        np.save(tmp, aligned, allow_pickle=False)
    return {"init_vectors": str(path)}


def _weights(champ: dict, run_path: Path, label: str, name: str, params: dict, data: Prepared) -> dict:
    import torch

    from recsys.models.two_tower.checkpoint import load_tensors, save_tensors

    prev = RunDir(Path(champ["data_dir"]).parent)
    if not prev.marker(f"train-{label}").is_file():
        log.info("%s: the champion's run trained no model %r: no warm start", label, label)
        return {}
    info = prev.info(f"train-{label}")
    model_dir = Path(info.get("model_dir", ""))
    if info.get("failed") or info.get("model") != name or not (model_dir / "config.json").is_file():
        log.info("%s: the champion's run has no trained %s model for it: no warm start", label, name)
        return {}
    meta = json.loads((model_dir / "config.json").read_text())
    cls = MODELS[name]
    old, new = from_dict(cls.Config, meta["config"]), from_dict(cls.Config, params)
    changed = [f for f in ARCHITECTURE if getattr(old, f) != getattr(new, f)]
    if changed:
        log.info("%s: architecture changed since the champion's run (%s): no warm start", label, changed)
        return {}
    weights = load_tensors(model_dir / "weights")
    _, old_items = load_id_maps(Path(champ["data_dir"]))
    n_old = int(meta["n_items"])
    out = {}
    for key, t in weights.items():
        if key.startswith("item.") and t.dim() == 2 and t.shape[0] == n_old + 1:  # a row per item id
            rows = gating.align_rows(t.float().numpy(), old_items.ids, data.items, fill=np.nan)
            rows[0] = t[0].float().numpy()  # the padding row
            t = torch.as_tensor(rows).to(t.dtype)
        out[key] = t
    path = run_path / "warm_start" / label
    with atomic.atomic_dir(path) as tmp:
        save_tensors(tmp, out)
    return {"init_weights": str(path)}
