"""item2vec: word2vec skip-gram / CBOW with negative sampling over item sequences, in PyTorch.

Rows of the training :class:`~recsys.prepare.sequences.Sequences` play the part of sentences.
Pairs come from :class:`~recsys.models.pairs.PairSampler` (fresh windows and subsampling every
epoch, streamed in bounded chunks) and negatives from ``count ** ns_exponent`` (alias method)::

    >>> train = Sequences.from_lists([[], [1, 2, 3], [2, 3, 1]] * 20, n_items=3)
    >>> m = Item2Vec(Item2VecConfig(dim=8, epochs=2, batch_size=64), device="cpu").fit(train)
    >>> m.item_vectors().shape, m.similarity
    ((4, 8), 'dot')

Training is word2vec's SGD with a linearly decaying learning rate, batched: the SGNS gradients
(``-log s(u.v) - sum_k log s(-u.n_k)``) are written out by hand and added to the touched rows
only, so a step costs O(batch x (1 + negatives) x dim) whatever the catalogue size. A row that
several pairs of a batch touch moves by a bounded step (row-wise Adagrad on its summed gradient,
:mod:`recsys.models.row_updates`): the plain summed step grows with the row's count in the batch and
diverged on popular items. The loss is checked every step; a non-finite one, or one whose mean per term passes
:data:`DIVERGED_TERM_LOSS`, reruns the epoch at half the learning rate (recorded), so a fit ends with finite
vectors or a :class:`NaNLossError` that says where and what to lower. Items that never occur in training are
never ranked (:meth:`ineligible_items`).
On CPU the default skip-gram step runs as one compiled loop (:mod:`recsys.models.sgns_kernel`, the same update;
``kernel="tensor"`` keeps the tensor ops).

The defaults (in-out scoring, 128 dimensions, window 5, 20 negatives, ``ns_exponent`` 0.5, 20 epochs,
``lr`` 0.05) are what ``experiments/tune_item2vec.py`` chose on Beauty validation at a369b13, with the same grid
and no more fits than gensim's search got, except ``subsample`` and ``user_decay``, chosen across the five shared
sets by ``experiments/defaults.py``: ``subsample`` 0 (``experiments/reports/defaults.md`` as of 9ff23e3), and
``user_decay`` "auto" in place of the tuned 0.4 (29994b8, 3 seeds: the best worst-case validation ratio, 0.955
against 0.4's 0.920, and the same Beauty validation NDCG@10, 0.0587; its choice against validation per set,
including the synthetic log, in ``experiments/reports/decay_proxy.md``). The same search rerun later chose 64
dimensions and ``lr`` 0.1 (``experiments/reports/tune_item2vec.md``); that choice is not the default.
``experiments/configs/beauty_item2vec.toml`` keeps the a369b13 choice. ``batch_size`` 4096,
``shared_negatives`` 16 and ``sparse`` are our batched SGD's own settings, fixed for speed and quality and
measured in ``experiments/reports/bench_item2vec.md``; ``update`` "adagrad" with ``adagrad_decay`` 0.999, applied
at every training step (``adagrad_decay_per`` "step"), and ``saturate`` 6 (word2vec's ``MAX_EXP``: a term scoring
beyond 6 in absolute value takes no step) were chosen among the row-update rules on validation
(``experiments/reports/bench_item2vec_rules.md``).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

from recsys.config import ConfigError, to_dict
from recsys.device import resolve_device
from recsys.models.base import EpochCallback, Model, NaNLossError, NotFittedError, StopTraining, Validator
from recsys.models.pairs import (
    AliasSampler,
    PairSampler,
    cbow_batches,
    keep_probabilities,
    negative_distribution,
    prefetch,
    run_threads,
)
from recsys.models.popularity import load_arrays, save_arrays
from recsys.models.row_updates import ADAGRAD_EPS, UPDATE_RULES, RowState, UpdateRule, apply_rows, row_coefficients
from recsys.models.sgns_kernel import fused_skipgram_step, supports
from recsys.prepare.sequences import Sequences, item_counts
from recsys.search_space import Choice, Float, Int, SearchSpace
from serving.encoder import decayed_mean


@dataclass
class Item2VecConfig:
    """Hyperparameters of :class:`Item2Vec` (names follow word2vec / gensim where they exist).

    ``shared_negatives`` = g: each draw of ``negatives`` items serves g consecutive (shuffled)
    skip-gram pairs, so every pair still sees ``negatives`` unigram draws but the gather and
    scatter of negative rows shrink g-fold; 1 is word2vec's independent draw per pair. A shared
    negative's update sums g pairs, so ``repeat_cap`` counts it as g repeats.
    ``user_decay`` in (0, 1]: a history item ``a`` steps from the most recent weighs ``decay**a``. ``"auto"``:
    chosen per log from the training data alone (:attr:`Item2Vec.user_decay`): the value of ``AUTO_DECAYS`` one
    step below the one that best predicts the last training item of up to ``AUTO_DECAY_ROWS`` training rows from
    the items before it.
    ``num_threads``: torch threads during fit; 0 (default) leaves torch's setting alone (one per
    core). On CPU batches are drawn inline, so every core goes to the step; on a CPU shared with
    other busy processes, 1 avoids OpenMP threads waiting for a core (measured many-fold slower).
    ``workers`` > 1 (CPU only): that many threads train on different batches at once, each with
    one torch thread, lock-free like gensim's workers (Hogwild); no barrier between cores, but
    concurrent updates of a row may race, so the result is no longer bitwise fixed by the seed.
    ``update``: how a row touched by several pairs of one batch moves (:mod:`recsys.models.row_updates`):
    ``"adagrad"`` (row-wise Adagrad on its summed gradient: no step longer than ``lr * sqrt(dim)``; with
    ``adagrad_decay`` < 1 a row's accumulator is multiplied by it at each of the row's updates, so it forgets
    old gradients and the steps of often-updated rows do not shrink to 0, within the same bound; with
    ``adagrad_decay_per="step"`` it is multiplied by it at every training step instead, so a rarely drawn row
    forgets as fast as a popular one in steps of training; ``adagrad_eps`` is the floor under the square root of
    the accumulator),
    ``"mean"`` (``lr`` times the mean of its gradients) or ``"capped"`` (the summed gradient, times
    ``repeat_cap / k`` for a row drawn k > ``repeat_cap`` times; 0 = plain sum: the earlier rule, whose
    step grows with the row's count up to the cap and which diverged on the MovieLens 1M sample).
    ``kernel``: ``"auto"`` computes a skip-gram step of the sparse ``"adagrad"`` rule on CPU in one compiled loop
    (:mod:`recsys.models.sgns_kernel`: the same update as the tensor step, which is memory-bound there; speed in
    ``experiments/reports/bench_item2vec.md``) and every other step with tensor ops; ``"tensor"`` always uses
    the tensor ops.
    ``max_backoffs``: a step whose loss is not finite, or averages more than :data:`DIVERGED_TERM_LOSS` per
    term (a blow-up that ``saturate`` keeps finite), restores the weights of the epoch's start and
    reruns the epoch at half the learning rate (recorded as ``lr_backoffs``); after that many halvings
    the fit stops with :class:`~recsys.models.base.NaNLossError` naming the epoch and step.
    ``scoring``: how candidates are ranked for a user (the recency-weighted mean ``u`` of the
    history's input vectors, L2-normalised first when ``normalize``). ``"in-in"``: cosine (or dot
    without ``normalize``) between ``u`` and the candidates' input vectors. ``"in-out"``: dot between
    ``u`` and the candidates' raw output vectors, the score skip-gram is trained to give the next
    item; output vectors are never normalised: their norm carries what the training learnt of an
    item's frequency as a context.
    """

    # defaults: what experiments/tune_item2vec.py chose on Beauty validation at a369b13, except where noted (see
    # the module docstring: its later rerun chose dim 64 and lr 0.1, not adopted)
    mode: Literal["skipgram", "cbow"] = "skipgram"  # skip-gram pairs, or CBOW (mean of the window predicts the centre)
    dim: int = 128  # vector width
    window: int = 5  # context distance (dynamic: each centre draws 1..window)
    window_kind: Literal["fixed", "dynamic", "session"] = "dynamic"  # see recsys.models.pairs
    negatives: int = 20  # noise items per pair
    ns_exponent: float = 0.5  # noise distribution count**ns_exponent (word2vec: 0.75)
    # word2vec's frequent-item subsampling threshold; 0 = off. Off by default: it had the best worst-case validation
    # ratio over the five shared sets among the default's one-change neighbours (0.967 vs 1e-3's 0.891; one seed,
    # experiments/reports/defaults.md at 9ff23e3); the Beauty-tuned 1e-3 stays in
    # experiments/configs/beauty_item2vec.toml
    subsample: float = 0.0
    epochs: int = 20  # passes over the training pairs
    lr: float = 0.05  # learning rate at the start, decaying linearly to min_lr (Adagrad scales it per row)
    min_lr: float = 1e-4  # learning rate at the end
    batch_size: int = 4096  # pairs per step (not searched: measured once against 16384 on Beauty validation)
    shared_negatives: int = 16  # consecutive pairs sharing one draw of negatives (1 = word2vec), for speed
    sparse: bool = True  # update only the touched rows (False: through a dense (V, D) tensor, kept to measure)
    update: UpdateRule = "adagrad"  # row step rule: "adagrad" | "mean" | "capped" (see above); bounded steps
    # "adagrad" only: factor on a row's accumulator at each of the row's updates (1 = plain Adagrad). 0.999: the best
    # worst-case ratio of validation NDCG@10 to each set's best rule over Beauty, the MovieLens 1M sample and 1M
    # synthetic events among 1, 0.999 and 0.99 (0.982, against plain Adagrad's 0.940 on the synthetic set; 3 seeds
    # each; 0.9, tried on the first two, was worse on both): experiments/reports/bench_item2vec_rules.md
    adagrad_decay: float = 0.999
    # "adagrad" only: when the decay applies, at each of the row's own updates ("update") or at every training
    # step, the row's or not ("step": a dense RMSprop's forgetting for a row with gradient 0 between its draws).
    # "step" since 67e0d23's rules run: higher validation NDCG@10 than "update" on all three sets, 3 seeds each
    # (Beauty 0.0604 vs 0.0587, the MovieLens 1M sample 0.0244 vs 0.0237, 1M synthetic events 0.2465 vs 0.2442):
    # experiments/reports/bench_item2vec_rules.md, run 5 (its "per step" rows were refitted in run 6, beside eps)
    adagrad_decay_per: Literal["update", "step"] = "step"
    # "adagrad" only: the floor under the square root of a row's accumulator, step = lr * g / (sqrt(G) + eps);
    # a larger value makes the steps of rows with small recent gradients SGD-like (proportional to g); any value
    # keeps the bound. Default: Adagrad's numerical guard
    adagrad_eps: float = ADAGRAD_EPS
    # a negative drawn equal to its pair's target (its CBOW group's centre) is left out of the loss and the step, as
    # word2vec and gensim skip it; False: it counts, pushing the pair's score down while the positive pushes it up.
    # Off by default: the same validation NDCG@10 within 0.0002 on all three sets of rules run 8 (3 seeds each,
    # experiments/reports/bench_item2vec_rules.md)
    skip_target_negatives: bool = False
    # word2vec's MAX_EXP rule (gensim's too, at 6): a loss term whose score s (a pair's or a negative's dot) has
    # |s| >= saturate moves no row; its loss still counts. 0: every term steps (sigmoid's exact gradient).
    # 6 since rules run 9: validation NDCG@10 at least 0's on all three sets, 3 seeds each, in one run (Beauty
    # 0.0606 vs 0.0604, the MovieLens 1M sample 0.0240 vs 0.0239, 1M synthetic 0.2459 vs 0.2456; within their sds):
    # experiments/reports/bench_item2vec_rules.md
    saturate: float = 6.0
    kernel: Literal["auto", "tensor"] = "auto"  # "auto": the fused CPU loop where it applies (see above)
    repeat_cap: int = 4  # "capped" only: repeats a row may sum in a batch before it is damped
    max_backoffs: int = 3  # halvings allowed after a diverged step (non-finite, or past DIVERGED_TERM_LOSS)
    normalize: bool = True  # L2-normalise the input vectors (in-in: cosine scoring)
    # recency weight of the user encoder: decay**age (encode-time, no refit); "auto" (default since 29994b8's
    # defaults run, see the module docstring): chosen per log from the training data
    user_decay: float | Literal["auto"] = "auto"
    seed: int = 0  # fixes init, pairs and negatives (with workers = 1)
    num_threads: int = 0  # torch threads during fit; 0 = torch's setting
    workers: int = 1  # Hogwild training threads on CPU (1 = deterministic)
    init_vectors: str = ""  # warm start: .npy (n_items + 1, dim) input vectors; all-zero rows stay random
    scoring: Literal["in-in", "in-out"] = "in-out"  # how candidates are ranked (see above)

    def __post_init__(self) -> None:
        checks = {
            "dim": self.dim >= 1, "window": self.window >= 1, "negatives": self.negatives >= 1,
            "epochs": self.epochs >= 1, "batch_size": self.batch_size >= 1, "subsample": self.subsample >= 0,
            "lr": self.lr > 0, "min_lr": 0 <= self.min_lr <= self.lr, "shared_negatives": self.shared_negatives >= 1,
            "user_decay": self.user_decay == "auto" or (not isinstance(self.user_decay, str)
                                                        and 0 < self.user_decay <= 1),
            "num_threads": self.num_threads >= 0,
            "workers": self.workers >= 1,
            "repeat_cap": self.repeat_cap >= 0, "max_backoffs": self.max_backoffs >= 0,
            "adagrad_decay": 0 < self.adagrad_decay <= 1,
            "adagrad_decay_per": self.adagrad_decay_per in ("update", "step"), "adagrad_eps": self.adagrad_eps > 0,
            "saturate": self.saturate >= 0,
            "update": self.update in UPDATE_RULES, "kernel": self.kernel in ("auto", "tensor"),
            "mode": self.mode in ("skipgram", "cbow"),
            "window_kind": self.window_kind in ("fixed", "dynamic", "session"),
            "scoring": self.scoring in ("in-in", "in-out"),
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            shown = {k: getattr(self, k) for k in bad}
            raise ConfigError(
                f"Item2VecConfig: invalid value(s) {shown}; need dim/window/negatives/epochs/batch_size/"
                "shared_negatives/workers >= 1, subsample >= 0, 0 <= min_lr <= lr, 0 < user_decay <= 1 or 'auto', "
                "repeat_cap/max_backoffs >= 0, 0 < adagrad_decay <= 1, adagrad_decay_per in {update, step}, "
                "adagrad_eps > 0, saturate >= 0, update in {adagrad, mean, capped}, "
                "kernel in {auto, tensor}, "
                "mode in {skipgram, cbow}, window_kind in {fixed, dynamic, session}, scoring in {in-in, in-out}"
            )


#: ``user_decay="auto"``: the decays it scores (largest first), and how many training rows (of length >= 2, drawn
#: with a fixed seed) it predicts the last item of, from the items before it (NDCG@10, the history excluded). It
#: takes the decay one step below the best-scoring one: the model has trained on those last items, and the proxy's
#: best sat a step above validation's best on most logs (experiments/reports/decay_proxy.md)
AUTO_DECAYS: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.15, 0.1, 0.05)
AUTO_DECAY_ROWS = 5000
#: the decay "auto" falls back to when no training row has two items (nothing to choose by)
AUTO_DECAY_FALLBACK = 0.4
#: a step whose loss averages more than this per term (each term is -log sigmoid of a score, log 2 at the start)
#: has diverged: its scores are wrong by hundreds where sigmoid saturates by 10. It counts as non-finite, since with
#: ``saturate`` > 0 a blown-up model's terms all freeze and its loss and vectors can stay finite
DIVERGED_TERM_LOSS = 1e3


def auto_decay_choice(scores: dict[float, float]) -> float:
    """``user_decay="auto"``'s rule: the decay of ``AUTO_DECAYS`` one step below the best-scoring one (ties to the
    larger decay; the last, smallest, decay stays itself).

        >>> auto_decay_choice(dict(zip(AUTO_DECAYS, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])))
        0.4
    """
    best = AUTO_DECAYS.index(auto_decay_best(scores))
    return AUTO_DECAYS[min(best + 1, len(AUTO_DECAYS) - 1)]


def auto_decay_best(scores: dict[float, float]) -> float:
    """The decay of ``AUTO_DECAYS`` whose proxy score is highest (ties to the larger decay): the step
    :func:`auto_decay_choice` goes below."""
    return max(AUTO_DECAYS, key=lambda d: (scores[d], d))


#: what ``recsys tune`` searches: the span of experiments/tune_item2vec.py's grid, the ordered parameters as
#: ranges (TPE models a range as one density, so what it learns of window 5 carries to 4 and 6; a Choice's
#: values are learned one by one, which 36 trials over seven parameters cannot do), subsample's values (0 =
#: off) and the encode-time parameters as choices
ITEM2VEC_SPACE: SearchSpace = {
    "window": Int(3, 20, log=True), "negatives": Int(5, 20, log=True), "ns_exponent": Float(-0.5, 1.0),
    "epochs": Int(5, 20, log=True), "dim": Choice(64, 128), "subsample": Choice(1e-3, 1e-4, 1e-5, 0.0),
    "lr": Float(0.025, 0.1, log=True), "user_decay": Choice(1.0, 0.6, 0.4, 0.2, 0.1, "auto"),
    "scoring": Choice("in-in", "in-out"),
}


class Item2Vec(Model):
    """Item embeddings from co-occurrence in sequences; users = recency-weighted mean of their items."""

    name: ClassVar[str] = "item2vec"
    Config: ClassVar[type] = Item2VecConfig
    search_space: ClassVar[SearchSpace] = ITEM2VEC_SPACE
    encode_time: ClassVar[tuple[str, ...]] = ("scoring", "user_decay")
    CAPACITY: ClassVar[int] = 1
    warm_start: ClassVar[str] = "vectors"

    def __init__(self, config: Item2VecConfig | None = None, device: str | torch.device = "auto") -> None:
        super().__init__()
        self.config = config or Item2VecConfig()
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.w_in: np.ndarray | None = None  # (n_items + 1, dim) input ("item") vectors
        self.w_out: np.ndarray | None = None  # (n_items + 1, dim) output ("context") vectors
        self._vectors_version = 0  # counts the vectors' changes: the cache key of the "auto" decay
        self._auto_decay: tuple[int, float, dict[float, float]] | None = None  # (version, decay, NDCG@10 per decay)

    @property
    def similarity(self) -> Literal["dot", "cosine"]:  # type: ignore[override]
        return "cosine" if self.config.normalize and self.config.scoring == "in-in" else "dot"

    @classmethod
    def contract_config(cls) -> Item2VecConfig:
        """A small, fast configuration for the shared contract test."""
        return Item2VecConfig(dim=16, epochs=5, batch_size=128, lr=0.05, subsample=0.0, shared_negatives=1,
                              window=5, negatives=5, ns_exponent=0.75, user_decay=1.0)

    # -- training -------------------------------------------------------------------------------
    def fit(
        self, train: Sequences, on_epoch_end: EpochCallback | None = None, validate: Validator | None = None
    ) -> Item2Vec:
        """Train for ``config.epochs`` epochs; reports ``{"loss", "pairs", **validate(self)}`` per epoch.

        ``loss`` is the epoch's SGNS loss summed in float64, divided by its positive examples
        (pairs for skip-gram, centre events for CBOW); ``pairs`` counts (centre, context) pairs.
        Raises :class:`NaNLossError` when the loss or the vectors stop being finite.
        """
        cfg = self.config
        counts = item_counts(train.items, train.n_items)  # streamed: train may be memory-mapped
        rng = np.random.default_rng(cfg.seed)
        self._train = train
        weights = self._init_weights(train.n_items + 1, rng)
        keep = keep_probabilities(counts, cfg.subsample) if cfg.subsample > 0 else None
        sampler = PairSampler(train, cfg.window, cfg.window_kind, keep, sort=cfg.mode == "cbow")
        noise = AliasSampler(negative_distribution(counts, cfg.ns_exponent))
        self.lr_backoffs: list[dict] = []
        with _torch_threads(1 if self._hogwild else cfg.num_threads):
            for epoch in range(1, cfg.epochs + 1):
                loss, n_pos, pairs = self._epoch_with_backoff(sampler, noise, rng, weights, epoch)
                self.w_in, self.w_out = weights[0].cpu().numpy(), weights[1].cpu().numpy()
                self._vectors_version += 1
                metrics = {"loss": loss / max(n_pos, 1), "pairs": float(pairs),
                           "lr_backoffs": float(len(self.lr_backoffs))}
                metrics.update(validate(self) if validate is not None else {})
                try:
                    if on_epoch_end is not None:
                        on_epoch_end(epoch, metrics)
                except StopTraining as stop:
                    self.stopped = str(stop)
                    break
        return self

    def _epoch_with_backoff(self, sampler: PairSampler, noise: AliasSampler, rng: np.random.Generator,
                            weights: list[torch.Tensor], epoch: int) -> tuple[float, int, int]:
        """:meth:`_epoch`, checked every step: a non-finite loss (or non-finite vectors at the epoch's end)
        restores the epoch's starting weights and reruns it at half the learning rate, recorded in
        ``self.lr_backoffs``; past ``config.max_backoffs`` halvings, :class:`NaNLossError`."""
        cfg = self.config
        while True:
            # the epoch's starting weights, to rerun it from (none needed once no backoff is left)
            start = [w.clone() for w in weights] if len(self.lr_backoffs) < cfg.max_backoffs else None
            try:
                out = self._epoch(sampler, noise, rng, weights, epoch)
                if not all(bool(torch.isfinite(w).all()) for w in weights[:2]):
                    raise _NonFinite(epoch, None, float("nan"))
                return out
            except _NonFinite as bad:
                if start is None:
                    what = (f"step {bad.step}: mean loss per term {bad.loss} (bound {DIVERGED_TERM_LOSS})"
                            if bad.step is not None else "its end: vectors not finite")
                    raise NaNLossError(
                        f"item2vec diverged at epoch {bad.epoch}, {what} after "
                        f"{len(self.lr_backoffs)} learning-rate halvings (lr now {cfg.lr * self._lr_scale}); "
                        f"lower lr (now {cfg.lr}) or batch_size (now {cfg.batch_size})"
                        + ("" if cfg.update == "adagrad" else ', or use update="adagrad" (bounded row steps)')
                    ) from None
                for w, s in zip(weights, start, strict=True):
                    w.copy_(s)
                self.lr_backoffs.append({"epoch": bad.epoch, "step": bad.step, "lr_scale": self._lr_scale / 2})

    @property
    def _lr_scale(self) -> float:
        """Factor on the learning-rate schedule after the recorded backoffs (1 without any)."""
        return 0.5 ** len(getattr(self, "lr_backoffs", []))

    def _warm_start(self, w_in: np.ndarray) -> np.ndarray:
        """Rows of ``config.init_vectors`` (e.g. the published champion's item vectors) replace the random init.

        Items the file does not know (all-zero rows, e.g. new items) keep their random vectors.
        """
        path = self.config.init_vectors
        try:
            init = np.load(path, allow_pickle=False)
        except OSError as exc:
            raise ConfigError(f"Item2VecConfig.init_vectors: cannot read {path!r} ({exc}); "
                              "pass an .npy of item vectors or leave it empty") from exc
        if init.shape != w_in.shape:
            raise ConfigError(f"Item2VecConfig.init_vectors: {path} has shape {init.shape}, the model needs "
                              f"{w_in.shape} (n_items + 1, dim); align it to the current item ids and dim")
        known = np.abs(init).sum(axis=1) > 0
        w_in[known] = init[known]
        return w_in

    def _init_weights(self, n_rows: int, rng: np.random.Generator) -> list[torch.Tensor]:
        """word2vec initialisation: inputs U(-0.5, 0.5) / dim, outputs 0; padding row 0 is 0.

        Returns ``[w_in, w_out, acc_in, acc_out, last_in, last_out, clock_in, clock_out]``: the (V, D) vectors,
        the (V,) Adagrad accumulators of their rows (zeros; used by ``update="adagrad"`` only), and for the
        per-step decay the (V,) step of each row's last update and the (1,) step clocks (zeros; cloned and
        restored with the rest on a backoff).
        """
        w_in = ((rng.random((n_rows, self.config.dim)) - 0.5) / self.config.dim).astype(np.float32)
        if self.config.init_vectors:
            w_in = self._warm_start(w_in)
        w_in[0] = 0.0
        w_out = np.zeros_like(w_in)
        acc = [torch.zeros(n_rows, dtype=torch.float32, device=self.device) for _ in range(2)]
        per_step = self.config.adagrad_decay_per == "step"
        clocks = [torch.zeros(n if per_step else 1, dtype=torch.int64, device=self.device)
                  for n in (n_rows, n_rows, 1, 1)]
        return [torch.from_numpy(w_in).to(self.device), torch.from_numpy(w_out).to(self.device), *acc, *clocks]

    def _epoch(
        self, sampler: PairSampler, noise: AliasSampler, rng: np.random.Generator,
        weights: list[torch.Tensor], epoch: int,
    ) -> tuple[float, int, int]:
        """One pass; returns (float64 loss sum, positive examples, pairs).

        Batches are drawn inline on CPU and by a producer thread on an accelerator (where the step
        runs asynchronously); all randomness stays in the batch generator, in a fixed order, so a
        seed still fixes the result either way. With ``workers`` > 1 on CPU, that many threads take
        batches from the generator in turn and step them concurrently (:func:`run_threads`).
        """
        cfg = self.config
        step = skipgram_step if cfg.mode == "skipgram" else cbow_step
        if cfg.kernel == "auto" and supports(self.device, cfg.mode, cfg.update, cfg.sparse):
            step = fused_skipgram_step
        batches = self._batches(sampler, noise, rng)
        w_in, w_out = weights[:2]
        # accumulators persist across epochs
        clocks = ((weights[4], weights[6]), (weights[5], weights[7])) if cfg.adagrad_decay_per == "step" \
            else ((None, None), (None, None))
        state_in, state_out = (RowState(acc, cfg.adagrad_decay, *clock, eps=cfg.adagrad_eps)
                               for acc, clock in zip(weights[2:4], clocks, strict=True))
        steps = itertools.count(1)

        def run(batch: tuple[tuple[torch.Tensor, ...], float]) -> tuple[float, int, int]:
            tensors, progress = batch
            n = next(steps)
            lr = self._lr_scale * (cfg.lr - (cfg.lr - cfg.min_lr) * min(1.0, (epoch - 1 + progress) / cfg.epochs))
            # no autocast: the hand-written SGD updates stay float32 on every device (bf16 rounding would
            # swallow updates of lr * gradient much smaller than the weights)
            loss = float(step(w_in, w_out, *tensors, lr=lr, sparse=cfg.sparse, cap=cfg.repeat_cap, rule=cfg.update,
                              state_in=state_in, state_out=state_out, skip_target=cfg.skip_target_negatives,
                              saturate=cfg.saturate))
            # every step: a diverging row shows in the loss of the batch touching it
            per_term = loss / (len(tensors[1]) * (1 + cfg.negatives))
            if not per_term <= DIVERGED_TERM_LOSS:  # NaN fails the comparison too
                raise _NonFinite(epoch, n, per_term)
            return loss, len(tensors[1]), len(tensors[0])

        if self._hogwild:
            done = run_threads(batches, run, cfg.workers)
        else:
            # a producer thread pays off only where the step runs asynchronously (CUDA); on CPU the GIL
            # hand-offs between numpy indexing and torch dispatch cost more than the overlap wins (measured)
            done = [run(b) for b in (prefetch(batches, depth=4) if self.device.type != "cpu" else batches)]
        return sum(d[0] for d in done), sum(d[1] for d in done), sum(d[2] for d in done)

    @property
    def _hogwild(self) -> bool:
        """Several lock-free training threads (``workers`` > 1, CPU only), each with one torch thread."""
        return self.config.workers > 1 and self.device.type == "cpu"

    def _batches(
        self, sampler: PairSampler, noise: AliasSampler, rng: np.random.Generator
    ) -> Iterator[tuple[tuple[torch.Tensor, ...], float]]:
        """Shuffled batches of one epoch as step arguments, with the fraction of the epoch done after each.

        skip-gram: (source = context, target = centre, negatives (G, K)); CBOW: (contexts (P,),
        centres (G,), negatives (G, K), local group of each context (P,)).
        """
        cfg, bs = self.config, self.config.batch_size
        for chunk in sampler.epoch(rng):
            n, start, span = len(chunk.centre), chunk.start, chunk.stop - chunk.start
            if cfg.mode == "skipgram":
                perm = rng.permutation(n)
                for a in range(0, n, bs):
                    idx = perm[a : a + bs]
                    neg = noise.sample((-(-len(idx) // cfg.shared_negatives), cfg.negatives), rng)
                    args = (chunk.context[idx], chunk.centre[idx], neg)
                    yield (*map(self._tensor, args), cfg.shared_negatives), start + span * min(a + bs, n) / n
            else:
                for (local, centre, context), frac in cbow_batches(chunk.group, chunk.centre, chunk.context, bs, rng):
                    neg = noise.sample((len(centre), cfg.negatives), rng)
                    yield tuple(map(self._tensor, (context, centre, neg, local))), start + span * frac

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)).to(self.device)

    # -- vectors ----------------------------------------------------------------------------------
    def item_vectors(self) -> np.ndarray:
        """(n_items + 1, dim) float32 candidate vectors; row 0 = 0.

        ``scoring="in-in"``: the input vectors, L2-normalised when ``config.normalize``;
        ``"in-out"``: the raw output vectors.
        """
        if self.config.scoring == "in-out":
            self._require_fitted()
            v = self.w_out.astype(np.float32, copy=True)
            v[0] = 0.0
            return v
        return self.input_vectors()

    def input_vectors(self) -> np.ndarray:
        """(n_items + 1, dim) float32 input vectors (what a history is made of), L2-normalised when
        ``config.normalize``; row 0 = 0. Under ``scoring="in-in"`` these are also the item vectors."""
        self._require_fitted()
        v = self.w_in.astype(np.float32, copy=True)
        if self.config.normalize:
            norms = np.linalg.norm(v, axis=1, keepdims=True)
            v /= np.where(norms > 0, norms, 1.0)
        v[0] = 0.0
        return v

    def encode_users(self, histories: Sequences) -> np.ndarray:
        """(histories.n_rows, dim) float32: ``sum_a decay**a * v(item_a) / sum_a decay**a``.

        ``v`` = :meth:`input_vectors` (under either scoring); ``a`` = 0 for the most recent item
        of a row; an empty history gives a zero vector.
        """
        vecs = self.input_vectors()
        if histories.n_items + 1 != vecs.shape[0]:
            raise ValueError(
                f"histories index {histories.n_items} items but the model has {vecs.shape[0] - 1}; "
                "encode histories with the IdMap the model was trained with"
            )
        return decayed_mean(vecs, histories.offsets, histories.items, self.user_decay).astype(np.float32)

    @property
    def user_decay(self) -> float:
        """The user encoder's decay: ``config.user_decay``, or under ``"auto"`` the value of ``AUTO_DECAYS`` one
        step below (smaller than) the one whose users best predict the last training item of up to
        ``AUTO_DECAY_ROWS`` training rows from the items before it (NDCG@10, history excluded, ties to the larger
        decay; the smallest decay stays itself; ``AUTO_DECAY_FALLBACK`` when no row has two items). The step down
        corrects the proxy's bias: the model has trained on those last items, and on most logs validation's best
        decay was a step below the proxy's (``experiments/reports/decay_proxy.md``). Computed from the vectors and
        the training sequences only, so a saved and loaded model chooses the same; recomputed when the vectors
        change (each epoch). The scores are in :attr:`auto_decay_scores`."""
        if self.config.user_decay != "auto":
            return float(self.config.user_decay)
        if self._auto_decay is None or self._auto_decay[0] != self._vectors_version:
            self._auto_decay = (self._vectors_version, *self._choose_decay())
        return self._auto_decay[1]

    @property
    def auto_decay_scores(self) -> dict[float, float]:
        """NDCG@10 of each decay that ``user_decay="auto"`` chose among (empty under a fixed decay)."""
        if self.config.user_decay != "auto":
            return {}
        self.user_decay  # noqa: B018 - computes the choice if the vectors changed
        return dict(self._auto_decay[2])

    def _choose_decay(self) -> tuple[float, dict[float, float]]:
        from recsys.evaluation.evaluator import evaluate  # the evaluator imports recsys.models

        hist, targets = self._require_train().split_last(AUTO_DECAY_ROWS)
        if targets.n_rows <= 1:  # row 0 is the padding row: no training row has two items
            return AUTO_DECAY_FALLBACK, {}
        vecs, items = self.input_vectors(), self.item_vectors()
        scores = {}
        for decay in AUTO_DECAYS:
            users = decayed_mean(vecs, hist.offsets, hist.items, decay).astype(np.float32)
            res = evaluate(users, items, hist, targets, device=torch.device("cpu"), ineligible=self.ineligible_items())
            scores[decay] = float(res["ndcg_10"])
        return auto_decay_choice(scores), scores

    def ineligible_items(self) -> np.ndarray | None:
        """(n_items + 1,) bool: items that never occur in the training sequences (their input vectors are
        the random initialisation, their output vectors 0), never ranked; None when every item occurs."""
        train = self._require_train()
        unseen = item_counts(train.items, train.n_items) == 0
        unseen[0] = False
        return unseen if unseen.any() else None

    def export_encoder(self) -> tuple[dict, dict[str, np.ndarray]]:
        """Kind "mean" with ``user_decay`` over the whole history, of the exported item vectors
        (in-in) or of the input vectors shipped as the encoder's ``item_table`` (in-out)."""
        spec = {"kind": "mean", "decay": self.user_decay, "max_len": None}
        if self.config.scoring == "in-out":
            return spec, {"item_table": self.input_vectors()}
        self._require_fitted()
        return spec, {}

    def _require_fitted(self) -> None:
        if self.w_in is None or self.w_out is None:
            raise NotFittedError("Item2Vec is not fitted: call fit() or load() first")

    # -- persistence ------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """``model.json`` (config), ``w_in.npy``, ``w_out.npy`` and ``train/``, written atomically; under
        ``user_decay="auto"`` also ``auto_decay.npy``, the choice and its scores, so a loaded model need not
        score the decays again (the same value it would choose: both come from the saved vectors and rows)."""
        arrays = {"w_in": self.w_in, "w_out": self.w_out}
        if self.config.user_decay == "auto":
            self._require_fitted()
            arrays["auto_decay"] = _auto_decay_array(self.user_decay, self.auto_decay_scores)
        save_arrays(directory, self.name, to_dict(self.config), arrays, self._require_train())

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "auto") -> Item2Vec:
        config, arrays, train = load_arrays(directory, cls.name, cls.Config)
        model = cls(config, device)
        model.w_in, model.w_out, model._train = arrays["w_in"], arrays["w_out"], train
        model._vectors_version += 1
        if config.user_decay == "auto" and "auto_decay" in arrays:  # a model saved before this file chooses again
            choice, scores = _auto_decay_from_array(arrays["auto_decay"])
            model._auto_decay = (model._vectors_version, choice, scores)
        return model


def _auto_decay_array(choice: float, scores: dict[float, float]) -> np.ndarray:
    """(1 + n, 2) float64: row 0 (choice, NaN), then one (decay, NDCG@10) row per scored decay."""
    return np.array([(choice, np.nan), *scores.items()], dtype=np.float64).reshape(-1, 2)


def _auto_decay_from_array(arr: np.ndarray) -> tuple[float, dict[float, float]]:
    """The inverse of :func:`_auto_decay_array`."""
    return float(arr[0, 0]), {float(d): float(v) for d, v in arr[1:]}


def skipgram_step(
    w_in: torch.Tensor, w_out: torch.Tensor, source: torch.Tensor, target: torch.Tensor,
    neg: torch.Tensor, share: int, *, lr: float, sparse: bool, cap: int = 0, rule: UpdateRule = "capped",
    state_in: RowState | None = None, state_out: RowState | None = None, skip_target: bool = False,
    saturate: float = 0.0,
) -> torch.Tensor:
    """One SGD step of skip-gram with negative sampling; returns the float64 loss sum.

    Parameters
    ----------
    w_in, w_out : (V, D) input / output vectors, updated in place.
    source, target : (P,) item indices: ``w_in[source]`` predicts ``w_out[target]``.
    neg : (G, K) negatives, G = ceil(P / share); row g serves pairs ``g*share .. g*share+share-1``.
    share : consecutive pairs that share one row of negatives.
    lr : learning rate of this step.
    sparse : update only the touched rows (else through a dense (V, D) tensor).
    cap, rule : how a row repeated in the batch moves (:mod:`recsys.models.row_updates`).
    state_in, state_out : the :class:`~recsys.models.row_updates.RowState` of ``w_in`` / ``w_out``
        (``rule="adagrad"`` only).
    skip_target : a negative equal to its pair's target is left out of the pair's loss and gradients (as in
        word2vec and gensim), instead of pushing the pair's score down while the positive pushes it up.
    saturate : > 0: a term (positive or negative) whose score has ``|s| >= saturate`` moves no row, as word2vec
        and gensim skip scores beyond ``MAX_EXP`` = 6; its loss still counts.

    The per-row factors (:func:`~recsys.models.row_updates.row_coefficients`) are folded into the (P,)
    and (G, share, K) score gradients before they meet the (., D) vectors, so each updated row costs
    one product and one scatter: the step is memory-bound and every (P, D) pass counts.
    """
    p, (g, k), d = len(source), neg.shape, w_in.shape[1]
    pad = g * share - p
    neg_flat = neg.reshape(-1)
    out_rows = torch.cat([target, neg_flat])  # (P + G*K,) every w_out row the step reads and moves
    u = w_in.index_select(0, source)  # (P, D)
    vo = w_out.index_select(0, out_rows)  # one gather for targets and negatives
    v, nv = vo[:p], vo[p:].view(g, k, d)  # (P, D), (G, K, D)
    u3 = (F.pad(u, (0, 0, 0, pad)) if pad else u).view(g, share, d)  # (G, share, D); padded rows are 0
    s_pos = (u * v).sum(1)  # (P,)
    s_neg = torch.bmm(u3, nv.transpose(1, 2))  # (G, share, K)
    g_pos = torch.sigmoid(s_pos) - 1.0  # (P,) dloss/ds_pos
    g_neg = torch.sigmoid(s_neg)  # (G, share, K) dloss/ds_neg
    loss_neg = F.logsigmoid(-s_neg)
    if pad:  # padded rows score 0 and must neither count in the loss nor push the negatives
        valid = (torch.arange(g * share, device=u.device) < p).view(g, share, 1)
        g_neg, loss_neg = g_neg * valid, loss_neg * valid
    if skip_target:  # (G, share, K): the negatives that are their pair's own target (padded rows match none)
        tgt3 = (F.pad(target, (0, pad), value=-1) if pad else target).view(g, share, 1)
        other = neg.view(g, 1, k) != tgt3
        g_neg, loss_neg = g_neg * other, loss_neg * other
    loss = -(F.logsigmoid(s_pos).sum(dtype=torch.float64) + loss_neg.sum(dtype=torch.float64))
    if saturate > 0:  # word2vec's MAX_EXP rule: a term scoring |s| >= saturate keeps its loss and moves no row
        g_pos, g_neg = g_pos * (s_pos.abs() < saturate), g_neg * (s_neg.abs() < saturate)
    n_rows, dt = w_in.shape[0], g_pos.dtype
    c_src = row_coefficients(rule, source, n_rows, lr, cap, dt)  # (P,)
    c_src3 = (F.pad(c_src, (0, pad)) if pad else c_src).view(g, share, 1)
    delta_u = torch.bmm(g_neg * c_src3, nv).view(g * share, d)[:p]  # negatives' part of the source rows' step
    delta_u.addcmul_((g_pos * c_src)[:, None], v)  # + the positive's part, in place
    # every row of w_out (targets and negatives) in one update, so a row that is both moves once
    c_tgt = row_coefficients(rule, target, n_rows, lr, cap, dt)
    # a negative row's delta sums the ``share`` pairs of its group: it counts as ``share`` repeats
    c_neg = row_coefficients(rule, neg_flat, n_rows, lr, cap, dt, per_row=share).view(g, 1, k)
    delta_out = torch.empty(p + g * k, d, dtype=u.dtype, device=u.device)  # targets' then negatives' deltas
    torch.mul(u, (g_pos * c_tgt)[:, None], out=delta_out[:p])
    torch.bmm((g_neg * c_neg).transpose(1, 2), u3, out=delta_out[p:].view(g, k, d))
    apply_rows(w_in, [(source, delta_u)], rule=rule, lr=lr, state=state_in, sparse=sparse)
    apply_rows(w_out, [(out_rows, delta_out)], rule=rule, lr=lr, state=state_out, sparse=sparse)
    return loss


def cbow_step(
    w_in: torch.Tensor, w_out: torch.Tensor, context: torch.Tensor, centre: torch.Tensor, neg: torch.Tensor,
    local: torch.Tensor, *, lr: float, sparse: bool, cap: int = 0, rule: UpdateRule = "capped",
    state_in: RowState | None = None, state_out: RowState | None = None, skip_target: bool = False,
    saturate: float = 0.0,
) -> torch.Tensor:
    """One SGD step of CBOW (mean of contexts) with negative sampling; returns the float64 loss sum.

    ``context`` / ``local`` (P,): context items and their group 0..G-1; ``centre`` (G,); ``neg`` (G, K).
    As in word2vec / gensim (``cbow_mean=1``) every context vector receives the full error of its
    group's mean, not 1/count of it. ``rule``, ``cap``, the row states, ``skip_target`` (a negative equal to
    its group's centre) and ``saturate`` (the score of the group's mean) as in :func:`skipgram_step`.
    """
    g, d = len(centre), w_in.shape[1]
    count = torch.bincount(local, minlength=g).clamp_min(1).to(w_in.dtype)
    h = torch.zeros(g, d, dtype=w_in.dtype, device=w_in.device).scatter_add_(
        0, local[:, None].expand(-1, d), w_in.index_select(0, context))  # not index_add_: see row_updates
    h = h / count[:, None]  # (G, D)
    v = w_out.index_select(0, centre)  # (G, D)
    nv = w_out.index_select(0, neg.reshape(-1)).view(g, -1, d)  # (G, K, D)
    s_pos = (h * v).sum(1)
    s_neg = torch.bmm(nv, h[:, :, None]).squeeze(2)  # (G, K)
    loss_neg = F.logsigmoid(-s_neg)
    g_neg = torch.sigmoid(s_neg)  # (G, K)
    if skip_target:
        other = neg != centre[:, None]
        g_neg, loss_neg = g_neg * other, loss_neg * other
    loss = -(F.logsigmoid(s_pos).sum(dtype=torch.float64) + loss_neg.sum(dtype=torch.float64))
    g_pos = torch.sigmoid(s_pos) - 1.0
    if saturate > 0:
        g_pos, g_neg = g_pos * (s_pos.abs() < saturate), g_neg * (s_neg.abs() < saturate)
    g_pos = g_pos[:, None]  # (G, 1)
    grad_h = g_pos * v + torch.bmm(g_neg[:, None, :], nv).squeeze(1)  # (G, D)
    n_rows, dt = w_in.shape[0], w_in.dtype
    c_ctx = row_coefficients(rule, context, n_rows, lr, cap, dt)
    apply_rows(w_in, [(context, grad_h.index_select(0, local) * c_ctx[:, None])], rule=rule, lr=lr,
               state=state_in, sparse=sparse)
    rows_out = torch.cat([centre, neg.reshape(-1)])
    grad_out = torch.cat([g_pos * h, (g_neg[:, :, None] * h[:, None, :]).view(-1, d)])
    c_out = row_coefficients(rule, rows_out, n_rows, lr, cap, dt)
    apply_rows(w_out, [(rows_out, grad_out * c_out[:, None])], rule=rule, lr=lr, state=state_out, sparse=sparse)
    return loss


class _NonFinite(FloatingPointError):
    """A step's mean loss per term stopped being finite or passed :data:`DIVERGED_TERM_LOSS` (or the vectors at an
    epoch's end stopped being finite); caught by the backoff."""

    def __init__(self, epoch: int, step: int | None, loss: float) -> None:
        super().__init__(f"epoch {epoch}, step {step}: loss {loss}")
        self.epoch, self.step, self.loss = epoch, step, loss


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Use ``n`` intra-op threads inside the block (0 = unchanged), restoring the old count after."""
    old = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
