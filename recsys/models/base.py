"""The one model contract every model implements.

A model learns from per-user training sequences (:class:`~recsys.prepare.sequences.Sequences`,
row = user index, 0 = padding user) and exposes vectors whose dot product ranks items::

    model.fit(train, on_epoch_end=cb, validate=fn)     # -> model
    model.item_vectors()        # (n_items + 1, d) float32, row 0 = padding
    model.user_vectors()        # (n_users + 1, d) float32 for the users seen in fit
    model.encode_users(hist)    # (hist.n_rows, d) float32 from request-time histories
    model.recommend(users, k, exclude_seen=True)   # -> (ids, scores), both (len(users), k)
    model.ineligible_items()    # (n_items + 1,) bool of items never ranked, or None
    model.export_encoder()      # (spec, weights): serving's numpy encoder reproduces encode_users
    model.save(dir); Model.load(dir)

``similarity`` says how vectors compare: ``"dot"`` (raw dot product) or ``"cosine"``
(vectors are L2-normalised, so the dot product is the cosine); export picks the Annoy
metric from it.

What a model takes beyond the training sequences is declared here, so callers never inspect
constructor signatures or config fields: ``takes_item_features`` (an ``item_features=`` constructor
argument), ``checkpoints`` (a ``checkpoint_dir`` config field; a killed fit resumes from it) and
``warm_start``: what a model can start from instead of a random init: ``"vectors"`` (an ``init_vectors``
config field: an .npy of item vectors) or ``"weights"`` (an ``init_weights`` config field: the weights
folder of an earlier model of the same architecture, item rows aligned to the new data); ``""`` = neither.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from recsys.prepare.sequences import Sequences
from recsys.scoring import topk_batched

#: ``on_epoch_end(epoch, metrics)``: called after every epoch (1-based) with that epoch's figures; it may raise
#: :class:`StopTraining` to end the fit after that epoch.
EpochCallback = Callable[[int, dict[str, float]], None]
#: ``validate(model) -> metrics``: run by models with epochs after each epoch; merged into the callback.
Validator = Callable[["Model"], dict[str, float]]


class NaNLossError(FloatingPointError):
    """Training produced a NaN/inf loss or NaN vectors; lower the learning rate or check the data."""


class StopTraining(Exception):  # noqa: N818 (a signal, not an error)
    """Raised by an ``on_epoch_end`` callback (a time budget, say) to end ``fit`` after the epoch it was called for.

    ``fit`` then returns normally, as after its last epoch (two-tower models restore their best validation
    checkpoint as they do at the end), and the model's ``stopped`` attribute holds the message.
    """


class NotFittedError(RuntimeError):
    """A model method that needs a fitted model was called before ``fit`` or ``load``."""


class Model(ABC):
    """Abstract contract shared by every model (see the module docstring)."""

    name: ClassVar[str]
    similarity: ClassVar[Literal["dot", "cosine"]] = "dot"
    takes_item_features: ClassVar[bool] = False
    checkpoints: ClassVar[bool] = False
    warm_start: ClassVar[Literal["", "vectors", "weights"]] = ""
    #: what ``recsys tune`` searches: config field -> range (:mod:`recsys.search_space`); empty = nothing to tune
    search_space: ClassVar[dict] = {}
    #: keys of ``search_space`` read only when encoding users or ranking (not by ``fit``), each a ``Choice``:
    #: ``recsys tune`` scores every combination of their values on each fit by setting them on ``model.config``,
    #: no refit; the first is also swept at every epoch's validation (pruning)
    encode_time: ClassVar[tuple[str, ...]] = ()
    #: how much a user's encoding learns, lower = simpler (see :meth:`capacity`)
    CAPACITY: ClassVar[int] = 0

    def __init__(self) -> None:
        self._train: Sequences | None = None
        self.stopped: str | None = None  # why fit ended before its last epoch (a StopTraining message), if it did

    def capacity(self) -> int:
        """How much this model learns to encode a user; the pipeline prefers the lower of two models whose
        validation metrics are level within sampling error (``[pipeline] select_within_se``).

        Returns
        -------
        int : 0 nothing per user (popularity), 1 a fixed function of learned item vectors (item2vec's
            weighted mean), 2 a learned vector per user (ALS, BPR), 3 a learned network over the history
            (pooled two-tower), 4 a learned sequence network (Transformer two-tower), 5 several of them
            (ensemble).
        """
        return self.CAPACITY

    # -- training ---------------------------------------------------------------------------
    @abstractmethod
    def fit(
        self,
        train: Sequences,
        on_epoch_end: EpochCallback | None = None,
        validate: Validator | None = None,
    ) -> Model:
        """Learn from ``train``; implementations store ``self._train``.

        Parameters
        ----------
        train : per-user training sequences (row = user index, row 0 the padding user), oldest event first;
            may be memory-mapped.
        on_epoch_end : called after every epoch (iteration) with its figures (loss, ``val_*`` from
            ``validate``); raising :class:`StopTraining` in it ends the fit after that epoch.
        validate : scores the model after each epoch (models with epochs); its metrics reach ``on_epoch_end``.

        Returns
        -------
        Model : ``self``, fitted.

        Raises
        ------
        NaNLossError : the loss or the vectors stopped being finite (lower the learning rate).
        """

    # -- vectors ----------------------------------------------------------------------------
    @abstractmethod
    def item_vectors(self) -> np.ndarray:
        """The candidates' vectors.

        Returns
        -------
        (n_items + 1, d) float32 : row ``j`` scores item index ``j`` by its dot product with a user vector;
            row 0 is the padding item.

        Raises
        ------
        NotFittedError : before ``fit`` or ``load``.
        """

    @abstractmethod
    def encode_users(self, histories: Sequences) -> np.ndarray:
        """User vectors from histories, as at request time.

        Parameters
        ----------
        histories : one row per user, item indices of the training IdMap, oldest first (an empty row is
            allowed).

        Returns
        -------
        (histories.n_rows, d) float32 : vectors whose dot product with :meth:`item_vectors` ranks items.

        Raises
        ------
        NotFittedError : before ``fit`` or ``load``.
        ValueError : ``histories`` index another number of items than the model was trained on.
        """

    @abstractmethod
    def export_encoder(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The request-time user encoder, for :func:`serving.encoder.build_encoder`.

        Returns
        -------
        (spec, weights) : ``spec`` is JSON (``kind`` plus its fields), ``weights`` plain float arrays by name.
            Serving's numpy encoder built from them reproduces :meth:`encode_users` on any history to float32
            round-off (the contract test checks every registered model).

        Raises
        ------
        NotFittedError : before ``fit`` or ``load``, for models whose encoder carries learnt values (popularity's
            constant encoder needs none).
        """

    def ineligible_items(self) -> np.ndarray | None:
        """Items this model never ranks for anyone, or None when every item may be ranked.

        Returns
        -------
        (n_items + 1,) bool or None. A model whose vectors for some items carry nothing learnt (item2vec's
        items that never occur in training keep their initial vectors) marks them here, so their arbitrary
        scores cannot reach a top-k: :meth:`recommend`, ``evaluate_model``, the exported bundle (manifest
        ``never_candidates``) and serving all leave them out.
        """
        return None

    def user_vectors(self) -> np.ndarray:
        """Vectors of the users seen in ``fit``, encoded from their training histories.

        Returns
        -------
        (n_users + 1, d) float32 : row = user index; row 0 the padding user.
        """
        return self.encode_users(self._require_train())

    # -- ranking ----------------------------------------------------------------------------
    def recommend(
        self,
        user_ids: np.ndarray,
        k: int = 10,
        exclude_seen: bool = True,
        histories: Sequences | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items for users, by exact scoring of every item.

        Parameters
        ----------
        user_ids : row indices of ``histories``.
        k : items per user (at most the number of items).
        exclude_seen : never return an item of the user's history.
        histories : the histories to encode (default: the training sequences).

        Returns
        -------
        (ids, scores) : each (len(user_ids), k); item indices best first, and their scores (``-inf`` where
            fewer than ``k`` items were eligible). :meth:`ineligible_items` are never returned.

        Raises
        ------
        IndexError : a user id outside ``histories``.
        """
        hist = histories if histories is not None else self._require_train()
        user_ids = np.asarray(user_ids, dtype=np.int64)
        if len(user_ids) and (user_ids.min() < 0 or user_ids.max() >= hist.n_rows):
            raise IndexError(f"user ids must lie in 0..{hist.n_rows - 1}; got {user_ids.min()}..{user_ids.max()}")
        sub = hist.take(user_ids)
        exclude = sub.to_csr() if exclude_seen else None
        return topk_batched(self.encode_users(sub), self.item_vectors(), k, exclude, ineligible=self.ineligible_items())

    # -- persistence ------------------------------------------------------------------------
    @abstractmethod
    def save(self, directory: str | Path) -> None:
        """Write the model into ``directory`` as plain arrays (.npy) and JSON, never pickle, atomically.

        Parameters
        ----------
        directory : the model folder (created; replaced when it exists).
        """

    @classmethod
    @abstractmethod
    def load(cls, directory: str | Path) -> Model:
        """Read what :meth:`save` wrote.

        Parameters
        ----------
        directory : a folder :meth:`save` wrote.

        Returns
        -------
        Model : fitted, ready to encode and rank.

        Raises
        ------
        FileNotFoundError : a file of the model is missing.
        """

    # -- helpers ----------------------------------------------------------------------------
    def _require_train(self) -> Sequences:
        if self._train is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit() or load() first")
        return self._train
