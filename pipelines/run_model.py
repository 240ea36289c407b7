"""A trained model recovered from MLflow alone: ``runs:/<run_id>/model``.

``recsys train`` logs the fitted model's folder (plain ``.npy`` and JSON, never pickle) as the run's
``model`` artifacts, with ``recsys_run.json`` beside it: the model's registered name and the run's whole
config. :func:`load_run_model` downloads those artifacts from any tracking store and rebuilds both, so
``recsys evaluate --model runs:/<id>/model`` and ``recsys export --model runs:/<id>/model`` work on a
machine that has the data but not the training output folder.

    >>> rm = load_run_model("runs:/0123abcd.../model")      # doctest: +SKIP
    >>> rm.model.item_vectors().shape, rm.cfg.data.path       # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipelines.config import RunConfig, parse_run_config
from recsys.config import to_dict
from recsys.models.base import Model
from recsys.models.registry import MODELS

ARTIFACT = "model"
MANIFEST = "recsys_run.json"


def manifest(cfg: RunConfig, fingerprint: str, exclude_seen: bool = True) -> dict:
    """What :func:`load_run_model` needs beside the model files: the model name, the config, the data split,
    and whether evaluation left seen items out (the run's decision when ``[eval] exclude_history = "auto"``)."""
    return {"format": "recsys-run-model-v1", "model": cfg.model_name, "data_fingerprint": fingerprint,
            "exclude_seen": exclude_seen,
            "config": {"run": to_dict(cfg.run), "data": to_dict(cfg.data), "eval": to_dict(cfg.eval),
                       "model": {"name": cfg.model_name, **cfg.model}}}


@dataclass
class RunModel:
    """A model loaded from a run: the fitted ``model``, the run's ``cfg`` and its data ``fingerprint``."""

    model: Model
    cfg: RunConfig
    fingerprint: str
    path: Path
    exclude_seen: bool = True  # what the run decided (older manifests: true)


def load_run_model(uri: str, dst: str | Path | None = None) -> RunModel:
    """Download ``uri`` (``runs:/<id>/model``, or a local folder) and load the model and config it holds."""
    local = Path(uri)
    if not local.is_dir():
        import mlflow

        from pipelines import tracking

        mlflow.set_tracking_uri(tracking.tracking_uri())
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=None if dst is None
                                                             else str(dst)))
        except Exception as exc:  # MlflowException, OSError: an unknown run or a run without a model
            raise ValueError(f"cannot download {uri!r} from {tracking.tracking_uri()}: {exc}") from None
    meta_path = local / MANIFEST
    if not meta_path.is_file():
        raise ValueError(f"{uri}: no {MANIFEST} in the model artifacts; was it logged by `recsys train`?")
    meta = json.loads(meta_path.read_text())
    name = meta["model"]
    if name not in MODELS:
        raise ValueError(f"{uri}: model {name!r} is not one this version of recsys knows ({sorted(MODELS)})")
    cfg = parse_run_config(meta["config"], source=f"{uri}/{MANIFEST}")
    return RunModel(MODELS[name].load(local), cfg, meta["data_fingerprint"], local,
                    bool(meta.get("exclude_seen", True)))


__all__ = ["ARTIFACT", "MANIFEST", "RunModel", "load_run_model", "manifest"]
