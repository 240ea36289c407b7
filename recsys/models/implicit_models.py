"""Implicit-feedback matrix factorisation baselines (ALS, BPR) from the ``implicit`` library.

Both are fitted on the (n_users + 1, n_items + 1) interaction matrix of the training
sequences, so factor row ``u`` is user index ``u`` and row ``i`` is item index ``i``; row 0
(padding) of the item factors is zeroed. The GPU backend of ``implicit`` is used when the
device resolved by :mod:`recsys.device` is CUDA and ``implicit.gpu.HAS_CUDA`` (or when
``use_gpu=True``); factors are always kept as numpy arrays.

``encode_users`` folds new histories into a fitted model with the item factors fixed:

* ALS: the exact least-squares user step of Hu et al. (``recalculate_user``), confidence
  ``1 + alpha * count``; the same solve the training loop does for every user.
* BPR: item factors end with a bias column and user factors with a constant 1; the user part
  is learned by full-batch gradient ascent on the BPR objective (one negative per history event
  and step, negatives that are in the history skipped, L2 ``regularization``), starting from 0,
  for ``fold_in_steps`` steps. Negatives are a hash of (seed, step, position, item)
  (:func:`serving.encoder.bpr_negatives`), so a history gets the same vector alone or in a batch,
  offline or served.

Both export their fold-in as serving's numpy encoders (kinds "als" and "bpr").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import implicit.als
import implicit.bpr
import implicit.cpu.als
import implicit.gpu
import numpy as np
import scipy.sparse as sp
import torch
from threadpoolctl import threadpool_limits

from recsys.config import ConfigError, to_dict
from recsys.device import resolve_device
from recsys.models.base import EpochCallback, Model, NaNLossError, NotFittedError, StopTraining, Validator
from recsys.models.popularity import load_arrays, save_arrays
from recsys.prepare.sequences import Sequences
from recsys.search_space import Choice, Float, SearchSpace
from serving.encoder import bpr_fold_in


@dataclass
class ALSConfig:
    """Hyperparameters of :class:`ALS` (confidence = 1 + alpha * count)."""

    factors: int = 64  # vector width, >= 1 (implicit's default is 100; 64 kept from the first Beauty configs)
    regularization: float = 0.01  # L2 weight on the factors, >= 0 (implicit's default)
    # confidence weight per interaction; 10 scored the best worst-case validation ratio over the five shared
    # data sets among the default's one-change neighbours (experiments/reports/defaults.md, 3 seeds)
    alpha: float = 10.0
    iterations: int = 15  # alternating least-squares sweeps, >= 1 (implicit's default)
    use_gpu: bool | str = "auto"  # "auto": the GPU when the device is CUDA and implicit has CUDA
    num_threads: int = 0  # 0 = every core
    validate_every: int = 1  # call validate() every n iterations (and after the last); 0 = never
    seed: int = 0  # the factors' random init

    def __post_init__(self) -> None:
        _check_common(self, "ALSConfig")
        if self.alpha < 0:
            raise ConfigError(f"ALSConfig.alpha must be >= 0 (confidence = 1 + alpha * count); got {self.alpha}")


@dataclass
class BPRConfig:
    """Hyperparameters of :class:`BPR` (``fold_in_*``: how :meth:`BPR.encode_users` learns users)."""

    factors: int = 64  # vector width, >= 1 (as ALS's)
    learning_rate: float = 0.01  # SGD step, > 0 (implicit's default)
    regularization: float = 0.01  # L2 weight on the factors, >= 0 (implicit's default)
    iterations: int = 100  # epochs of sampled (user, positive, negative) triples, >= 1 (implicit's default)
    verify_negative_samples: bool = True  # redraw a "negative" the user has seen (implicit's default)
    use_gpu: bool | str = "auto"  # "auto": the GPU when the device is CUDA and implicit has CUDA
    num_threads: int = 0  # 0 = every core
    validate_every: int = 10  # BPR runs many cheap epochs; validating each would dominate the fit
    seed: int = 0  # init and sampling
    fold_in_steps: int = 100  # on Beauty 200 steps beat 50 and the user factors of fit (val NDCG@10)

    def __post_init__(self) -> None:
        _check_common(self, "BPRConfig")
        if self.learning_rate <= 0:
            raise ConfigError(f"BPRConfig.learning_rate must be > 0; got {self.learning_rate}")


def _check_common(cfg: Any, owner: str) -> None:
    if cfg.use_gpu not in (True, False, "auto"):
        raise ConfigError(f"{owner}.use_gpu must be true, false or 'auto'; got {cfg.use_gpu!r}")
    for key in ("factors", "iterations"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{owner}.{key} must be >= 1; got {getattr(cfg, key)}")
    if cfg.regularization < 0 or cfg.validate_every < 0 or cfg.num_threads < 0:
        raise ConfigError(f"{owner}: regularization, validate_every and num_threads must be >= 0")


def _use_gpu(setting: bool | str, device: torch.device) -> bool:
    if setting == "auto":
        return device.type == "cuda" and implicit.gpu.HAS_CUDA
    if setting and not implicit.gpu.HAS_CUDA:
        raise ConfigError("use_gpu=true but this implicit build has no CUDA support; use use_gpu='auto' or false")
    return bool(setting)


def _numpy(factors: Any) -> np.ndarray:
    """implicit GPU matrices -> numpy; numpy passes through. Always float32 C-contiguous."""
    arr = factors.to_numpy() if hasattr(factors, "to_numpy") else factors
    return np.ascontiguousarray(arr, dtype=np.float32)


#: what ``recsys tune`` searches for ALS (confidence 1 + alpha * count)
ALS_SPACE: SearchSpace = {"factors": Choice(32, 64, 128, 256), "regularization": Float(1e-3, 100.0, log=True),
                          "alpha": Float(0.1, 100.0, log=True), "iterations": Choice(10, 15, 25)}
#: what ``recsys tune`` searches for BPR
BPR_SPACE: SearchSpace = {"factors": Choice(32, 64, 128, 256), "learning_rate": Float(1e-3, 0.1, log=True),
                          "regularization": Float(1e-4, 0.1, log=True), "iterations": Choice(50, 100, 200)}


class _ImplicitModel(Model):
    """Shared fit loop, callbacks, vectors and persistence of the two implicit wrappers."""

    similarity: ClassVar[Literal["dot", "cosine"]] = "dot"
    CAPACITY: ClassVar[int] = 2

    def __init__(self, config: Any = None, device: str | torch.device = "auto") -> None:
        super().__init__()
        self.config = config or self.Config()
        self.device = resolve_device(device) if isinstance(device, str) else device
        self._items: np.ndarray | None = None  # (n_items + 1, d) float32
        self._train_pairs = 0  # distinct (user, item) pairs of the last fit's matrix

    def _make(self, gpu: bool) -> Any:
        """The implicit model for this config."""
        raise NotImplementedError

    def _confidence(self, histories: Sequences) -> sp.csr_matrix:
        """(n_rows, n_items + 1) float32 matrix implicit is fitted on."""
        return histories.to_csr(binary=True)

    def fit(
        self, train: Sequences, on_epoch_end: EpochCallback | None = None, validate: Validator | None = None
    ) -> _ImplicitModel:
        """Fit on ``train``; ``on_epoch_end(iteration, metrics)`` after every iteration (1-based)."""
        cfg = self.config
        with threadpool_limits(1, "blas"):  # implicit runs its own threads; nested BLAS threads thrash
            impl = self._make(_use_gpu(cfg.use_gpu, self.device))
            self._train = train

            def callback(iteration: int, elapsed: float, *stats: Any) -> None:
                epoch = iteration + 1
                metrics = {"epoch_seconds": float(elapsed), **self._train_stats(stats, train)}
                self._set_items(impl.item_factors)
                last = epoch == cfg.iterations
                if validate is not None and cfg.validate_every and (epoch % cfg.validate_every == 0 or last):
                    metrics.update(validate(self))
                if on_epoch_end is not None:
                    on_epoch_end(epoch, metrics)

            confidence = self._confidence(train)
            self._train_pairs = confidence.nnz  # distinct (user, item) pairs: BPR's AUC denominator
            try:
                impl.fit(confidence, show_progress=False, callback=callback)
            except StopTraining as stop:  # raised by on_epoch_end after an iteration: keep the factors so far
                self.stopped = str(stop)
        self._set_items(impl.item_factors)
        return self

    def _train_stats(self, stats: tuple, train: Sequences) -> dict[str, float]:
        return {}

    def _set_items(self, factors: Any) -> None:
        items = _numpy(factors).copy()
        if not np.isfinite(items).all():
            raise NaNLossError(f"{self.name}: item factors contain NaN/inf; lower learning_rate or regularization")
        items[0] = 0.0  # padding item: never trained, never ranked
        self._items = items

    def item_vectors(self) -> np.ndarray:
        """(n_items + 1, d) float32 item factors; row 0 (padding) is 0."""
        if self._items is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit() or load() first")
        return self._items

    def save(self, directory: str | Path) -> None:
        save_arrays(directory, self.name, to_dict(self.config), {"item_factors": self._items}, self._require_train())

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "auto") -> _ImplicitModel:
        config, arrays, train = load_arrays(directory, cls.name, cls.Config)
        model = cls(config, device)
        model._items, model._train = arrays["item_factors"].astype(np.float32), train
        return model


class ALS(_ImplicitModel):
    """Weighted matrix factorisation for implicit feedback (Hu, Koren, Volinsky 2008)."""

    name: ClassVar[str] = "als"
    Config: ClassVar[type] = ALSConfig
    search_space: ClassVar[SearchSpace] = ALS_SPACE

    @classmethod
    def contract_config(cls) -> ALSConfig:
        return ALSConfig(factors=4, iterations=10, regularization=0.1, alpha=10.0, num_threads=1)

    def _make(self, gpu: bool) -> Any:
        c = self.config
        return implicit.als.AlternatingLeastSquares(
            factors=c.factors, regularization=c.regularization, alpha=1.0, iterations=c.iterations,
            use_gpu=gpu, num_threads=c.num_threads, random_state=c.seed,
        )

    def _confidence(self, histories: Sequences) -> sp.csr_matrix:
        # implicit's ALS uses the stored value c itself as the confidence (its alpha multiplies
        # it), so we store 1 + alpha * count and pass alpha=1 to get Hu et al.'s weighting.
        m = histories.to_csr(binary=False)
        m.data = (1.0 + self.config.alpha * m.data).astype(np.float32)
        return m

    def encode_users(self, histories: Sequences) -> np.ndarray:
        """(histories.n_rows, factors) float32: the exact ALS user solve with items fixed."""
        items = self.item_vectors()
        if histories.n_items + 1 != items.shape[0]:
            raise ValueError(f"histories have n_items={histories.n_items} but the model has {items.shape[0] - 1}")
        solver = implicit.cpu.als.AlternatingLeastSquares(
            factors=items.shape[1], regularization=self.config.regularization, alpha=1.0,
            num_threads=self.config.num_threads,
        )
        solver.item_factors = items
        with threadpool_limits(1, "blas"):
            users = solver.recalculate_user(np.arange(histories.n_rows), self._confidence(histories))
        return np.ascontiguousarray(users, dtype=np.float32)

    def export_encoder(self) -> tuple[dict, dict[str, np.ndarray]]:
        """Kind "als": the same least-squares solve with the exported item factors."""
        self.item_vectors()
        return {"kind": "als", "regularization": self.config.regularization, "alpha": self.config.alpha}, {}


class BPR(_ImplicitModel):
    """Bayesian personalised ranking (Rendle et al. 2009) with an item bias column."""

    name: ClassVar[str] = "bpr"
    Config: ClassVar[type] = BPRConfig
    search_space: ClassVar[SearchSpace] = BPR_SPACE

    @classmethod
    def contract_config(cls) -> BPRConfig:
        return BPRConfig(factors=8, iterations=40, learning_rate=0.05, num_threads=1, fold_in_steps=30)

    def _make(self, gpu: bool) -> Any:
        c = self.config
        return implicit.bpr.BayesianPersonalizedRanking(
            factors=c.factors, learning_rate=c.learning_rate, regularization=c.regularization,
            iterations=c.iterations, verify_negative_samples=c.verify_negative_samples,
            use_gpu=gpu, num_threads=c.num_threads, random_state=c.seed,
        )

    def _train_stats(self, stats: tuple, train: Sequences) -> dict[str, float]:
        # implicit's BPR callback passes (correct, skipped) sample counts; AUC over the pairs it used
        correct, skipped = stats
        used = self._train_pairs - skipped  # counted once in fit, not rebuilt every iteration
        return {"train_auc": float(correct) / used} if used > 0 else {}

    def encode_users(self, histories: Sequences) -> np.ndarray:
        """(histories.n_rows, factors + 1) float32; last column 1 multiplies the item bias."""
        items = self.item_vectors()
        if histories.n_items + 1 != items.shape[0]:
            raise ValueError(f"histories have n_items={histories.n_items} but the model has {items.shape[0] - 1}")
        user = bpr_fold_in(items, histories.offsets, np.asarray(histories.items, dtype=np.int64),
                           self.config.learning_rate, self.config.regularization, self.config.fold_in_steps,
                           self.config.seed)
        if not np.isfinite(user).all():
            raise NaNLossError("BPR fold-in diverged (NaN user factors); lower learning_rate or fold_in_steps")
        return np.concatenate([user, np.ones((histories.n_rows, 1), np.float32)], axis=1)

    def export_encoder(self) -> tuple[dict, dict[str, np.ndarray]]:
        """Kind "bpr": the same fold-in (steps, rate, L2, seed) over the exported item factors."""
        self.item_vectors()
        c = self.config
        return {"kind": "bpr", "learning_rate": c.learning_rate, "regularization": c.regularization,
                "steps": c.fold_in_steps, "seed": c.seed}, {}
