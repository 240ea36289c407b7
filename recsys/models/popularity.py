"""Most-popular baseline, plus the plain .npy + JSON model folder used by the baseline models.

Every user gets the same one-factor vector ``[1]`` and item ``i`` the vector
``[w(count_i)]``, so the dot product ranks items by their training count::

    >>> train = Sequences.from_lists([[], [1, 2], [2, 3, 2]], n_items=3)
    >>> m = Popularity().fit(train)
    >>> m.item_vectors()[:, 0].round(3)        # log1p of counts 0, 1, 3, 1
    array([0.   , 0.693, 1.386, 0.693], dtype=float32)
    >>> m.recommend(np.array([1]), k=1)[0]      # user 1 saw 1 and 2 -> item 3
    array([[3]])
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from recsys.atomic import atomic_dir
from recsys.config import from_dict, to_dict
from recsys.models.base import EpochCallback, Model, NotFittedError, Validator
from recsys.prepare.sequences import Sequences


@dataclass
class PopularityConfig:
    """``weighting``: item vector = ``log1p(count)`` ("log") or the raw ``count``; same ranking.

    ``seed`` is unused (the model is deterministic); it is accepted so that every run config
    can carry one.
    """

    weighting: Literal["log", "count"] = "log"  # item vector log1p(count) or count: the same ranking
    seed: int = 0  # unused (deterministic); accepted so every run config can carry one


class Popularity(Model):
    """Ranks items by how often they occur in the training sequences (repeats counted)."""

    name: ClassVar[str] = "popularity"
    Config: ClassVar[type] = PopularityConfig
    similarity: ClassVar[Literal["dot", "cosine"]] = "dot"

    def __init__(self, config: PopularityConfig | None = None, device: str | torch.device = "auto") -> None:
        super().__init__()
        self.config = config or PopularityConfig()
        self.counts: np.ndarray | None = None  # (n_items + 1,) int64

    @classmethod
    def contract_config(cls) -> PopularityConfig:
        return PopularityConfig()

    def fit(
        self, train: Sequences, on_epoch_end: EpochCallback | None = None, validate: Validator | None = None
    ) -> Popularity:
        """Count items in ``train``; no epochs, so neither callback is called."""
        self.counts = np.bincount(np.asarray(train.items), minlength=train.n_items + 1).astype(np.int64)
        self._train = train
        return self

    def item_vectors(self) -> np.ndarray:
        """(n_items + 1, 1) float32; padding row 0 is 0."""
        if self.counts is None:
            raise NotFittedError("Popularity is not fitted: call fit() or load() first")
        w = np.log1p(self.counts) if self.config.weighting == "log" else self.counts
        out = w.astype(np.float32)[:, None]
        out[0] = 0.0
        return out

    def encode_users(self, histories: Sequences) -> np.ndarray:
        """(histories.n_rows, 1) float32 of ones: every history gets the same ranking."""
        if self.counts is None:
            raise NotFittedError("Popularity is not fitted: call fit() or load() first")
        return np.ones((histories.n_rows, 1), dtype=np.float32)

    def export_encoder(self) -> tuple[dict, dict[str, np.ndarray]]:
        """Kind "none": every history gets ``ones(1)``; the item vectors carry the ranking."""
        return {"kind": "none"}, {}

    def save(self, directory: str | Path) -> None:
        save_arrays(directory, self.name, to_dict(self.config), {"counts": self.counts}, self._require_train())

    @classmethod
    def load(cls, directory: str | Path) -> Popularity:
        config, arrays, train = load_arrays(directory, cls.name, cls.Config)
        model = cls(config)
        model.counts, model._train = arrays["counts"], train
        return model


def save_arrays(
    directory: str | Path,
    name: str,
    config: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray | None],
    train: Sequences,
) -> None:
    """Write ``model.json`` (name, config), one ``<key>.npy`` per array and ``train/``.

    The folder is written beside ``directory`` and renamed into place, so a reader never sees
    half a model. ``train`` is kept so a loaded model can recommend for known users.
    """
    final = Path(directory)
    if any(v is None for v in arrays.values()):
        raise NotFittedError(f"{name} is not fitted: call fit() before save()")
    with atomic_dir(final) as tmp:
        for key, arr in arrays.items():
            np.save(tmp / f"{key}.npy", arr, allow_pickle=False)
        train.save(tmp / "train")
        (tmp / "model.json").write_text(json.dumps({"model": name, "config": dict(config)}, indent=2, sort_keys=True))


def load_arrays(
    directory: str | Path, name: str, config_cls: type
) -> tuple[Any, dict[str, np.ndarray], Sequences]:
    """Read what :func:`save_arrays` wrote: (config, {key: array}, train); checks the model name."""
    d = Path(directory)
    if not (d / "model.json").is_file():
        raise FileNotFoundError(f"{d} holds no saved model (model.json missing); pass the folder given to save()")
    meta = json.loads((d / "model.json").read_text())
    if meta.get("model") != name:
        raise ValueError(f"{d} holds a {meta.get('model')!r} model, not {name!r}; load it with that model class")
    config = from_dict(config_cls, meta["config"], where=str(d / "model.json"))
    arrays = {p.stem: np.load(p, allow_pickle=False) for p in sorted(d.glob("*.npy"))}
    return config, arrays, Sequences.load(d / "train", mmap=False)
