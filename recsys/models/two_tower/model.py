"""The two-tower retrieval model: an item tower and a (pooled or Transformer) user tower.

    >>> m = TwoTower(TwoTowerConfig(dim=32, epochs=5), device="cpu").fit(train)
    >>> m.recommend(np.array([1, 2]), k=10)      # (ids, scores), each (2, 10)

Training makes every item of every training sequence (but the first) a target, predicted from
its history by sliding windows or by prefixes (``windows``; see :mod:`~recsys.models.two_tower.data`),
with a full or sampled softmax (:mod:`.losses`), AdamW with warm-up and cosine decay, optional
early stopping on the ``validate`` callable, a checkpoint after every epoch and resume from it
(:mod:`.loop`). Items with no training interactions get
feature-only vectors (their untrained ID embedding is left out) when item features are given, both as
candidates and as history inputs (``zero_unseen`` does the same without features: zero vectors).
"""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from recsys.atomic import atomic_dir, write_json
from recsys.config import ConfigError, from_dict, to_dict
from recsys.device import check_precision, resolve_device
from recsys.models.base import EpochCallback, Model, NaNLossError, Validator
from recsys.models.two_tower.checkpoint import load_tensors, save_tensors
from recsys.models.two_tower.config import TWO_TOWER_SPACE, TwoTowerConfig
from recsys.models.two_tower.ddp import device_for, init_distributed
from recsys.models.two_tower.features import ItemFeatures
from recsys.models.two_tower.item_tower import ItemTower
from recsys.models.two_tower.loop import TrainLoop
from recsys.models.two_tower.user_tower import build_user_tower
from recsys.prepare.sequences import Sequences, item_counts

FORMAT_VERSION = 1
_INIT_LOCK = threading.Lock()


class TwoTower(Model):
    """Two-tower model; see the module docstring. ``item_features`` enables side features / cold start."""

    name: ClassVar[str] = "two_tower"
    Config: ClassVar[type] = TwoTowerConfig
    search_space: ClassVar[dict] = TWO_TOWER_SPACE
    similarity = "dot"
    takes_item_features: ClassVar[bool] = True
    checkpoints: ClassVar[bool] = True
    warm_start: ClassVar[str] = "weights"

    def capacity(self) -> int:
        """3 for the pooled user tower, 4 for the Transformer (:meth:`recsys.models.base.Model.capacity`)."""
        return 4 if self.config.user_tower == "transformer" else 3

    def __init__(self, config: TwoTowerConfig | None = None, device: str | torch.device = "auto",
                 item_features: ItemFeatures | None = None) -> None:
        super().__init__()
        self.config = config or TwoTowerConfig()
        self.similarity = self.config.similarity  # cosine: exported vectors are L2-normalised
        self.dist = init_distributed(device)
        self.device = device if isinstance(device, torch.device) else resolve_device(device_for(device, self.dist))
        check_precision(self.device, self.config.precision)  # a clear error now, not a slow emulated run
        self.item_features = item_features
        self.net: nn.ModuleDict | None = None
        self.n_items = 0
        self.item_seen: np.ndarray | None = None  # (n_items + 1,) bool: item occurs in the training data
        self.zero_unseen = False  # drop unseen items' ID embeddings even without features (model-level fusion)
        self.history: list[dict[str, float]] = []

    @classmethod
    def contract_config(cls) -> TwoTowerConfig:
        """Small and fast, for the shared contract test."""
        return TwoTowerConfig(dim=16, max_len=8, n_heads=2, dropout=0.0, epochs=10, batch_size=32, lr=1e-2,
                              warmup_steps=5)

    # -- construction ----------------------------------------------------------------------------
    def _build(self, n_items: int) -> None:
        self.n_items = n_items
        with _INIT_LOCK:  # initialisation draws from torch's global RNG: seeded and used by one thread at a time
            torch.manual_seed(self.config.seed)
            net = nn.ModuleDict({"item": ItemTower(self.config, n_items, self.item_features),
                                 "user": build_user_tower(self.config)})
        self.net = net.to(self.device)

    # -- training --------------------------------------------------------------------------------
    def fit(self, train: Sequences, on_epoch_end: EpochCallback | None = None, validate: Validator | None = None,
            checkpoint_dir: str | Path | None = None, resume: bool = True) -> TwoTower:
        """Train on ``train``; with ``checkpoint_dir`` (or ``config.checkpoint_dir``) a checkpoint is
        written after every epoch and, when ``resume``, an existing one is continued."""
        if train.n_items < 1:
            raise ValueError("training data has no items (n_items = 0); check the data step")
        self._train = train
        self._build(train.n_items)
        cfg = self.config
        if cfg.init_weights:
            self._warm_start(Path(cfg.init_weights))
            if cfg.warm_epochs:
                cfg = dataclasses.replace(cfg, epochs=min(cfg.epochs, cfg.warm_epochs))
        seen = item_counts(train.items, train.n_items) > 0  # streamed: train may be memory-mapped
        self.item_seen = seen
        ckpt = checkpoint_dir if checkpoint_dir is not None else (self.config.checkpoint_dir or None)
        loop = TrainLoop(self.net, cfg, self.device, self.dist, train, Path(ckpt) if ckpt else None)
        self.history = loop.run(on_epoch_end, (lambda: validate(self)) if validate is not None else None, resume)
        self.stopped = loop.stopped
        return self

    @torch.no_grad()
    def _warm_start(self, path: Path) -> None:
        """Every parameter from ``path`` (``config.init_weights``); rows that are all NaN keep their random init."""
        try:
            init = load_tensors(path, self.device)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"TwoTowerConfig.init_weights: cannot read {path} ({exc}); give the weights folder "
                              "of a saved two-tower model (<model dir>/weights)") from exc
        own = self.net.state_dict()
        wrong = sorted(k for k in set(own) | set(init)
                       if k not in own or k not in init or own[k].shape != init[k].shape)
        if wrong:
            raise ConfigError(f"TwoTowerConfig.init_weights: {path} does not fit this model's architecture "
                              f"(tensors missing or of another shape: {wrong[:5]}); warm start needs the same dim, "
                              "towers, layers and features, and item rows aligned to this data's item ids")
        for key, param in own.items():
            src = init[key].to(param.dtype)
            if src.is_floating_point() and src.dim() == 2:
                src = torch.where(torch.isnan(src).all(dim=1, keepdim=True), param, src)
            param.copy_(src)

    def _require_net(self) -> nn.ModuleDict:
        if self.net is None:
            self._require_train()
        return self.net

    # -- vectors ---------------------------------------------------------------------------------
    @torch.no_grad()
    def item_vectors(self) -> np.ndarray:
        """(n_items + 1, dim) float32; items never seen in training are feature-only when features exist."""
        net = self._require_net()
        net.eval()
        ids = torch.arange(self.n_items + 1, device=self.device)
        vecs = net["item"](ids, self._id_mask(ids)).float()  # fp32 whatever ``precision`` trains in: as served
        return self._finish(vecs)

    def _id_mask(self, ids: torch.Tensor) -> torch.Tensor | None:
        """Keep (1) / drop (0) each item's ID embedding: items never trained are dropped when the tower has
        features (or ``zero_unseen``); None = keep all."""
        net = self._require_net()
        if self.item_seen is None or not (net["item"].has_features or self.zero_unseen):
            return None
        return torch.as_tensor(self.item_seen, device=ids.device)[ids]

    @torch.no_grad()
    def encode_users(self, histories: Sequences, batch_size: int = 1024) -> np.ndarray:
        """(histories.n_rows, dim) float32: the user tower over the last ``max_len`` items of each row.

        Runs in fp32 whatever ``config.precision`` trains in, as serving's numpy encoder does."""
        net = self._require_net()
        if histories.n_items > self.n_items:
            raise ValueError(f"histories use item ids up to {histories.n_items} but the model knows {self.n_items}")
        net.eval()
        out = []
        for start in range(0, histories.n_rows, batch_size):
            rows = np.arange(start, min(start + batch_size, histories.n_rows))
            inp = torch.as_tensor(histories.padded(self.config.max_len, rows), dtype=torch.long, device=self.device)
            uniq, inv = torch.unique(inp, return_inverse=True)  # encode each history item once
            x = net["item"](uniq, self._id_mask(uniq))[inv]  # (B, T, D), as item_table below
            out.append(net["user"](x, inp > 0, last_only=True)[:, -1].float())  # (B, D) newest position
        vecs = torch.cat(out) if out else torch.zeros(0, self.config.dim, device=self.device)
        return self._finish(vecs)

    @torch.no_grad()
    def export_encoder(self) -> tuple[dict, dict[str, np.ndarray]]:
        """Kind "pooled" or "transformer" (:mod:`serving.towers`): the user tower's ``state_dict`` as arrays
        plus ``item_table``, the item tower's vector of every item as history inputs see it (features folded in)."""
        net = self._require_net()
        net.eval()
        cfg = self.config
        ids = torch.arange(self.n_items + 1, device=self.device)
        weights = {"item_table": net["item"](ids, self._id_mask(ids)).float().cpu().numpy()}
        weights.update({k: v.float().cpu().numpy() for k, v in net["user"].state_dict().items()})
        spec = {"kind": cfg.user_tower, "pooling": cfg.pooling, "max_len": cfg.max_len, "n_layers": cfg.n_layers,
                "n_heads": cfg.n_heads, "normalize": self.similarity == "cosine"}
        if cfg.mixer == "bsa":  # a kind of its own: a server that does not know the filter refuses the bundle
            spec.update(kind="transformer_bsa", bsa_alpha=cfg.bsa_alpha)
        return spec, weights

    def encode_item_features(self, features: ItemFeatures) -> np.ndarray:
        """(features.n_items + 1, dim) feature-only vectors of new items (e.g. from ``ItemFeatures.encode_new``)."""
        return self.encode_new_items(features)[0]

    @torch.no_grad()
    def encode_new_items(self, features: ItemFeatures) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Feature-only vectors of new items (row 0 = padding) and their rows of every ``export_encoder`` table
        (``item_table``: the item tower's output, as history inputs see it), with the trained item tower."""
        net = self._require_net()
        if not net["item"].has_features:
            raise ValueError("this model was trained without item features; it cannot encode new items")
        probe = TwoTower(self.config, self.device, features)
        probe._build(features.n_items)
        state = {k: v for k, v in net["item"].state_dict().items() if not k.startswith("id_emb")}
        probe.net["item"].load_state_dict(state, strict=False)
        probe.net.eval()
        probe.item_seen = np.zeros(features.n_items + 1, dtype=bool)
        ids = torch.arange(features.n_items + 1, device=self.device)
        table = probe.net["item"](ids, probe._id_mask(ids)).float().cpu().numpy()
        return probe.item_vectors(), {"item_table": table}

    def _finish(self, vecs: torch.Tensor) -> np.ndarray:
        if self.similarity == "cosine":
            vecs = torch.nn.functional.normalize(vecs, dim=-1)
        arr = vecs.cpu().numpy().astype(np.float32)
        if not np.isfinite(arr).all():
            raise NaNLossError("two-tower vectors contain NaN/inf; lower lr or check the data")
        return arr

    # -- persistence -----------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """Write config.json, weights/ (.npy), item_seen.npy, features/ and train/ (Sequences), atomically."""
        net, train = self._require_net(), self._require_train()
        with atomic_dir(directory) as tmp:
            save_tensors(tmp / "weights", net.state_dict())
            np.save(tmp / "item_seen.npy", self.item_seen)
            if self.item_features is not None:
                self.item_features.save(tmp / "features")
            train.save(tmp / "train")
            write_json(tmp / "config.json", {"model": self.name, "format_version": FORMAT_VERSION,
                                             "n_items": self.n_items, "config": to_dict(self.config)})

    @classmethod
    def load(cls, directory: str | Path, device: str = "auto") -> TwoTower:
        d = Path(directory)
        if not (d / "config.json").is_file():
            raise FileNotFoundError(f"{d} holds no two-tower model (config.json missing); save one with model.save()")
        meta = json.loads((d / "config.json").read_text())
        cfg = from_dict(TwoTowerConfig, meta["config"], where=str(d / "config.json"))
        feats = ItemFeatures.load(d / "features") if (d / "features").is_dir() else None
        model = cls(cfg, device, feats)
        model._build(int(meta["n_items"]))
        model.net.load_state_dict(load_tensors(d / "weights", model.device))
        model.item_seen = np.load(d / "item_seen.npy", allow_pickle=False)
        model._train = Sequences.load(d / "train", mmap=False)
        return model
