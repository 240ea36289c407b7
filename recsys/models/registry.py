"""The model registry: a plain dict from run-config name to model class (no importlib lookups)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from recsys.config import ConfigError, from_dict
from recsys.models.base import Model
from recsys.models.implicit_models import ALS, BPR
from recsys.models.item2vec import Item2Vec
from recsys.models.popularity import Popularity
from recsys.models.two_tower import TwoTower, TwoTowerEnsemble

MODELS: dict[str, type[Model]] = {
    "popularity": Popularity,
    "als": ALS,
    "bpr": BPR,
    "item2vec": Item2Vec,
    "two_tower": TwoTower,
    "two_tower_ensemble": TwoTowerEnsemble,
}


def check_model_config(name: str, params: Mapping[str, Any], device: str | torch.device = "auto",
                       where: str = "") -> None:
    """Validate a model's flat ``params`` before anything trains: the name, every key and value, and a
    ``precision`` the device can run (bf16 needs native support).

    Raises
    ------
    ConfigError
        naming ``where``, the model and the fix.
    """
    from recsys.device import check_precision, resolve_device

    ctx = f"{where}: " if where else ""
    if name not in MODELS:
        raise ConfigError(f"{ctx}unknown model {name!r}; registered models are: {sorted(MODELS)}")
    config = from_dict(MODELS[name].Config, params, where=where or f"model {name!r}")
    precision = getattr(config, "precision", None)
    if precision is not None:
        try:
            check_precision(device if isinstance(device, torch.device) else resolve_device(device), precision)
        except ValueError as exc:
            raise ConfigError(f"{ctx}{exc}") from None


def build_model(name: str, params: Mapping[str, Any], device: str | torch.device = "auto", **inputs: Any) -> Model:
    """Instantiate ``MODELS[name]`` with its config built from the flat ``params``.

    ``inputs`` are extra constructor arguments, e.g. ``item_features`` for the two-tower model.

    Raises
    ------
    ConfigError
        ``name`` is not a registered model (the message lists them), or ``params`` has a key
        the model's config does not know (the message lists the valid keys).
    """
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; registered models are: {sorted(MODELS)}")
    cls = MODELS[name]
    config = from_dict(cls.Config, params, where=f"model {name!r}")
    return cls(config, device, **inputs)
