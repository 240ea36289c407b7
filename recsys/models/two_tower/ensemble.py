"""An ensemble of two-tower models, served as one two-tower model.

Member ``i`` is a :class:`~recsys.models.two_tower.model.TwoTower` with ``seed + i``, trained on the
same data with its own early stopping. The ensemble's vectors are the members' vectors side by side,
so its score is the sum of the members' scores: still one dot product, which export, Annoy and
serving use as they use any other model's vectors. With ``fusion="model"`` (model-level fusion of ID
and content) there are two members: member 0 an ID-only tower, member 1 a content-only tower
(``item_id=False``) over the item features; an item never trained scores by its content alone::

    >>> m = TwoTowerEnsemble(TwoTowerEnsembleConfig(members=2, dim=64), device="cpu").fit(train)
    >>> m.item_vectors().shape        # (n_items + 1, 2 * 64)

On a CPU the members train at the same time, one thread each (``parallel``): small models use a
second core poorly, so two members train in little more than the time of one (Beauty, dim 96,
2 cores: 1.27x the time of one member alone with both cores, 1.45x faster than training them in
turn; ``experiments/reports/bench_two_tower_ensemble.md`` at 6d48050). Every member draws its
dropout from its own generator (:mod:`~recsys.models.two_tower.rng`), so parallel and sequential
training give the same members bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
import math
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from recsys.atomic import atomic_dir, write_json
from recsys.config import ConfigError, from_dict, to_dict
from recsys.models.base import EpochCallback, Model, StopTraining, Validator
from recsys.models.two_tower.config import TWO_TOWER_SPACE, TwoTowerConfig
from recsys.models.two_tower.features import ItemFeatures
from recsys.models.two_tower.model import TwoTower
from recsys.prepare.sequences import Sequences

FORMAT_VERSION = 1


@dataclass
class TwoTowerEnsembleConfig(TwoTowerConfig):
    """:class:`TwoTowerConfig` (every member's hyperparameters) plus the ensemble's own."""

    members: int = 2  # member models, >= 1, seeds seed, seed + 1, ...; the ensemble's vectors are theirs side by side
    parallel: bool = True  # train the members at the same time, one thread each (not with torchrun)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.members < 1:
            raise ConfigError(f"TwoTowerEnsembleConfig: members must be >= 1; got {self.members}")
        if self.init_weights:
            raise ConfigError("TwoTowerEnsembleConfig: init_weights (warm start) is for a single two-tower; an "
                              "ensemble's members start from scratch, so leave it out")
        if self.fusion == "model" and (self.members != 2 or not self.features):
            raise ConfigError('TwoTowerEnsembleConfig: fusion = "model" is two members, an ID tower and a content '
                              f"tower: set members = 2 and some features (got members = {self.members}, "
                              f"features = {list(self.features)})")

    def member(self, i: int) -> TwoTowerConfig:
        """Member ``i``'s config: the shared hyperparameters, ``seed + i``, its own checkpoint folder."""
        own = tower_fields(self)
        own["seed"] = self.seed + i
        if self.fusion == "model":  # member 0: IDs only; member 1: content only
            own.update(fusion="sum", id_dropout=0.0)
            own.update({"features": ()} if i == 0 else {"item_id": False})
        if self.checkpoint_dir:
            own["checkpoint_dir"] = str(Path(self.checkpoint_dir) / f"member_{i}")
        return TwoTowerConfig(**own)


def tower_fields(cfg: TwoTowerConfig) -> dict:
    """The :class:`TwoTowerConfig` fields of ``cfg`` (an ensemble config's, without its own)."""
    return {f.name: getattr(cfg, f.name) for f in fields(TwoTowerConfig)}


class MemberFailed(StopTraining):
    """Another member's training raised (or a callback stopped the ensemble); this member stopped at the end of
    its epoch, as after its last one (its best checkpoint restored)."""


class TwoTowerEnsemble(Model):
    """Two-tower ensemble; see the module docstring."""

    name: ClassVar[str] = "two_tower_ensemble"
    Config: ClassVar[type] = TwoTowerEnsembleConfig
    search_space: ClassVar[dict] = TWO_TOWER_SPACE
    takes_item_features: ClassVar[bool] = True
    checkpoints: ClassVar[bool] = True
    CAPACITY: ClassVar[int] = 5

    def __init__(self, config: TwoTowerEnsembleConfig | None = None, device: str | torch.device = "auto",
                 item_features: ItemFeatures | None = None) -> None:
        super().__init__()
        self.config = config or TwoTowerEnsembleConfig()
        self.similarity = self.config.similarity
        self.device, self.item_features = device, item_features
        self.members: list[TwoTower] = []
        self.history: list[dict[str, float]] = []

    @classmethod
    def contract_config(cls) -> TwoTowerEnsembleConfig:
        """Small and fast, for the shared contract test."""
        return TwoTowerEnsembleConfig(**tower_fields(TwoTower.contract_config()), members=2)

    # -- training --------------------------------------------------------------------------------
    def fit(self, train: Sequences, on_epoch_end: EpochCallback | None = None, validate: Validator | None = None,
            checkpoint_dir: str | Path | None = None, resume: bool = True) -> TwoTowerEnsemble:
        """Train every member on ``train``.

        ``validate`` is called with the member being trained (its early stopping). ``on_epoch_end``
        gets every member's epochs, metric names suffixed ``_member_<i>``, one call at a time and
        always on the calling thread. With ``checkpoint_dir`` member ``i`` checkpoints to
        ``<checkpoint_dir>/member_<i>``. If a member raises (a NaN loss), the other members stop at
        the end of their epoch and the exception is re-raised. A callback's :class:`StopTraining` (a time
        budget) ends every member after its current epoch, each with its best checkpoint restored, and
        ``fit`` returns normally with ``stopped`` set; in turn (without ``parallel``) the members not yet
        trained are left out (``config.members`` shrinks to those trained).
        """
        self._train = train
        cfg = self.config
        self.members = [self._member(i) for i in range(cfg.members)]
        self.history = []
        parallel = cfg.parallel and cfg.members > 1 and self.members[0].dist.world_size == 1
        reports: queue.Queue = queue.Queue()  # parallel: (epoch, record, handled) from the members' threads
        failed = threading.Event()

        def train_member(i: int) -> None:
            def epoch_end(epoch: int, metrics: dict[str, float]) -> None:
                record = {f"{k}_member_{i}": v for k, v in metrics.items()}
                self.history.append({"member": float(i), "epoch": float(epoch), **metrics})
                if parallel:  # callbacks (MLflow logging) run on the caller's thread; wait for this one
                    handled = threading.Event()
                    reports.put((epoch, record, handled))
                    handled.wait()
                elif on_epoch_end is not None:
                    on_epoch_end(epoch, record)
                if failed.is_set():
                    raise MemberFailed(f"member {i} stopped after epoch {epoch}: another member failed")

            ckpt = Path(checkpoint_dir) / f"member_{i}" if checkpoint_dir is not None else None
            try:
                self.members[i].fit(train, on_epoch_end=epoch_end, validate=validate, checkpoint_dir=ckpt,
                                    resume=resume)
            except BaseException:
                failed.set()
                raise

        if not parallel:
            for i in range(cfg.members):
                train_member(i)
                if self.members[i].stopped is not None:  # a budget: the members after this one are not trained
                    self.stopped = f"{self.members[i].stopped} (member {i}; {cfg.members - i - 1} later not trained)"
                    self.members = self.members[: i + 1]
                    self.config = dataclasses.replace(cfg, members=i + 1)
                    break
            return self
        threads = torch.get_num_threads()
        torch.set_num_threads(max(1, threads // cfg.members))  # intra-op threads, process-wide
        errors: list[BaseException] = []
        try:
            with ThreadPoolExecutor(max_workers=cfg.members) as pool:
                futures = [pool.submit(train_member, i) for i in range(cfg.members)]
                while not (all(f.done() for f in futures) and reports.empty()):
                    try:
                        epoch, record, handled = reports.get(timeout=0.1)
                    except queue.Empty:
                        continue
                    try:
                        if on_epoch_end is not None and not failed.is_set():
                            on_epoch_end(epoch, record)
                    except BaseException as e:  # e.g. a budget stop: every member stops after this epoch
                        errors.append(e)
                        failed.set()
                    finally:
                        handled.set()
        finally:
            torch.set_num_threads(threads)
        errors += [e for e in (f.exception() for f in futures) if e is not None]
        first = next((e for e in errors if not isinstance(e, MemberFailed)), errors[0] if errors else None)
        if isinstance(first, StopTraining) and not isinstance(first, MemberFailed):
            self.stopped = str(first)  # every member stopped after its epoch and restored its best checkpoint
        elif first is not None:
            raise first
        return self

    def _member(self, i: int) -> TwoTower:
        model_level = self.config.fusion == "model"
        m = TwoTower(self.config.member(i), self.device, None if model_level and i == 0 else self.item_features)
        m.zero_unseen = model_level  # the ID member: an item never trained adds nothing to its content score
        return m

    def _require_members(self) -> list[TwoTower]:
        if not self.members:
            self._require_train()
        return self.members

    # -- vectors ---------------------------------------------------------------------------------
    def item_vectors(self) -> np.ndarray:
        """(n_items + 1, members * dim) float32: the members' item vectors side by side."""
        return self._join([m.item_vectors() for m in self._require_members()])

    def encode_users(self, histories: Sequences) -> np.ndarray:
        """(histories.n_rows, members * dim) float32: the members' user vectors side by side."""
        return self._join([m.encode_users(histories) for m in self._require_members()])

    def export_encoder(self) -> tuple[dict, dict[str, np.ndarray]]:
        """Kind "ensemble": the members' encoders (weights prefixed ``m<i>.``) side by side."""
        specs, weights = [], {}
        for i, m in enumerate(self._require_members()):
            spec, w = m.export_encoder()
            specs.append(spec)
            weights.update({f"m{i}.{k}": v for k, v in w.items()})
        return {"kind": "ensemble", "members": specs, "normalize": self.similarity == "cosine"}, weights

    def encode_item_features(self, features: ItemFeatures) -> np.ndarray:
        """Feature-only vectors of new items, side by side (see :meth:`TwoTower.encode_item_features`)."""
        return self.encode_new_items(features)[0]

    def encode_new_items(self, features: ItemFeatures) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """New items' vectors and encoder-table rows (``m<i>.item_table``), as :meth:`TwoTower.encode_new_items`.
        Under model-level fusion the ID member knows no new item: its part and table rows are zero."""
        vecs, tables = [], {}
        for i, m in enumerate(self._require_members()):
            if self.config.fusion == "model" and i == 0:
                v = np.zeros((features.n_items + 1, m.config.dim), np.float32)
                t = {"item_table": v}
            else:
                v, t = m.encode_new_items(features)
            vecs.append(v)
            tables.update({f"m{i}.{k}": rows for k, rows in t.items()})
        return self._join(vecs), tables

    def _join(self, parts: list[np.ndarray]) -> np.ndarray:
        """Concatenate; with cosine similarity each part is unit length, so scale the whole back to unit length."""
        out = np.concatenate(parts, axis=1)
        return out / np.float32(math.sqrt(len(parts))) if self.similarity == "cosine" else out

    # -- persistence -----------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """Write ensemble.json and one member_<i>/ folder per member (TwoTower.save), atomically."""
        members = self._require_members()
        with atomic_dir(directory) as tmp:
            for i, m in enumerate(members):
                m.save(tmp / f"member_{i}")
            write_json(tmp / "ensemble.json", {"model": self.name, "format_version": FORMAT_VERSION,
                                               "config": to_dict(self.config), "history": self.history})

    @classmethod
    def load(cls, directory: str | Path, device: str = "auto") -> TwoTowerEnsemble:
        d = Path(directory)
        if not (d / "ensemble.json").is_file():
            raise FileNotFoundError(f"{d} holds no two-tower ensemble (ensemble.json missing); save one with "
                                    "model.save()")
        meta = json.loads((d / "ensemble.json").read_text())
        model = cls(from_dict(TwoTowerEnsembleConfig, meta["config"], where=str(d / "ensemble.json")), device)
        model.members = [TwoTower.load(d / f"member_{i}", device) for i in range(model.config.members)]
        model.members[0].zero_unseen = model.config.fusion == "model"
        model.item_features = model.members[-1].item_features
        model.history = meta.get("history", [])
        model._train = model.members[0]._train
        return model
