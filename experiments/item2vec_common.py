"""What the item2vec benchmark and tuner share: the data sets, the two fitters, the scores.

Data sets (``../shared/data``, or ``$RECSYS_SHARED_DATA``), each prepared by the pipeline's own data
steps (read, validate, minimum length 3, sorted id maps, leave-last-out):

* ``beauty``: Amazon Beauty 5-core (S3-Rec / ICLRec ``Beauty.txt``), one user a line;
* ``games``: the SASRec paper's Amazon Games set (``sasrec/Video.txt``), one ``user item`` a line;
* ``ml-1m-sample``: the MovieLens 1M ratings sample (``ml-1m/ratings.sample-100k.dat``, 10%), by time;
* ``ml-latest-small``: MovieLens latest-small (``ml-latest-small/ratings.csv``), by time;
* ``ml-100k``: MovieLens 100K (``ml-100k/u.data``), by time;
* ``synthetic``: ``recsys.sources.synthetic`` (users with category tastes and sequential habits), generated:
  :func:`load_synthetic` (5M events in the benchmark).

Fitters: ``ours`` (:class:`~recsys.models.item2vec.Item2Vec` on CPU) and ``gensim`` (``Word2Vec``,
``sg=1, hs=0``, the same hyperparameters under gensim's names). Gensim's input vectors (``wv``) and
output vectors (``syn1neg``) are placed in an ``Item2Vec`` so both go through the same user
encoder, the same scoring (in-in or in-out) and ``recsys.evaluation``'s full ranking.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import numpy as np

from recsys.evaluation.evaluator import evaluate_model
from recsys.models.item2vec import Item2Vec, Item2VecConfig
from recsys.prepare.sequences import Sequences
from recsys.prepare.split import SplitData

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("RECSYS_SHARED_DATA", REPO.parent / "shared" / "data"))
SETS = {
    "beauty": ("iclrec-amazon/Beauty.txt", "seq-per-user", "utf8"),
    "games": ("sasrec/Video.txt", "seq-per-event", "utf8"),
    "ml-1m-sample": ("ml-1m/ratings.sample-100k.dat", "auto", "latin-1"),
    "ml-latest-small": ("ml-latest-small/ratings.csv", "auto", "utf8"),
    "ml-100k": ("ml-100k/u.data", "auto", "latin-1"),
}
#: generated rather than read: ``load_set("synthetic", n_events)``
SYNTHETIC = "synthetic"
METRICS = ("hr_10", "ndcg_10", "hr_20", "ndcg_20")
BEAUTY = DATA / SETS["beauty"][0]


def load_set(name: str, synthetic_events: int = 5_000_000) -> SplitData:
    """The named data set through the pipeline's data steps (no files written); ``"synthetic"`` is generated
    with ``synthetic_events`` events."""
    if name == SYNTHETIC:
        return load_synthetic(synthetic_events)
    if name not in SETS:
        raise SystemExit(f"unknown data set {name!r}; known: {', '.join([*SETS, SYNTHETIC])}")
    rel, fmt, encoding = SETS[name]
    return load_file(DATA / rel, fmt, encoding, name)


def load_beauty(path: Path = BEAUTY) -> SplitData:
    """A Beauty-format file (``user i1 i2 ...`` a line) as :func:`load_set` prepares it."""
    return load_file(Path(path), "seq-per-user", "utf8", "beauty")


def load_file(path: Path, fmt: str, encoding: str, name: str) -> SplitData:
    from pipelines.config import DataConfig
    from recsys.prepare.engines.memory import clean, fit_id_maps, ingest, split_encoded
    from recsys.prepare.idmap import encode_interactions

    if not path.is_file():
        raise SystemExit(f"{path} not found: the data sets live in ../shared/data (or set RECSYS_SHARED_DATA)")
    cfg = DataConfig(name=name, path=str(path), format=fmt, encoding=encoding, min_length=3)
    ing = ingest(cfg)
    frame = clean(ing, cfg)
    users, items = fit_id_maps(frame)
    return split_encoded(encode_interactions(frame, users, items), cfg, len(users), len(items))


def load_synthetic(n_events: int) -> SplitData:
    """``recsys.sources.synthetic`` with ``n_events`` events (a user per 50 events, an item per 250), leave-last-out."""
    import polars as pl

    from recsys.prepare.split import leave_last_out
    from recsys.sources.synthetic import SyntheticConfig, generate

    cfg = SyntheticConfig(n_users=max(n_events // 50, 100), n_items=max(n_events // 250, 200), n_events=n_events)
    inter = generate(cfg).interactions
    enc = inter.select(pl.col("user").alias("user_idx"), pl.col("item").alias("item_idx"), "timestamp")
    return leave_last_out(enc, cfg.n_users, cfg.n_items)


def sentences(train: Sequences) -> list[list[str]]:
    """Training rows as gensim sentences (item indices as strings); empty rows left out."""
    off, items = train.offsets, train.items.astype(str)
    return [items[off[r] : off[r + 1]].tolist() for r in range(train.n_rows) if off[r + 1] > off[r]]


def fit_ours(train: Sequences, cfg: Item2VecConfig) -> tuple[Item2Vec, float]:
    t = time.perf_counter()
    model = Item2Vec(cfg, device="cpu").fit(train)
    return model, time.perf_counter() - t


def fit_gensim(train: Sequences, sents: list[list[str]], cfg: Item2VecConfig, workers: int) -> tuple[Item2Vec, float]:
    """gensim Word2Vec with ``cfg``'s hyperparameters (``lr`` -> alpha, ``min_lr`` -> min_alpha, ``subsample``
    -> sample, ...); its ``wv`` and ``syn1neg`` become the ``w_in`` / ``w_out`` of an Item2Vec with ``cfg``."""
    from gensim.models import Word2Vec

    t = time.perf_counter()
    w2v = Word2Vec(sents, vector_size=cfg.dim, window=cfg.window, negative=cfg.negatives, sg=1, hs=0,
                   sample=cfg.subsample, ns_exponent=cfg.ns_exponent, alpha=cfg.lr, min_alpha=cfg.min_lr,
                   min_count=1, workers=workers, epochs=cfg.epochs, seed=cfg.seed + 1)
    seconds = time.perf_counter() - t
    w_in = np.zeros((train.n_items + 1, cfg.dim), dtype=np.float32)
    w_out = np.zeros_like(w_in)
    keys = np.array([int(k) for k in w2v.wv.index_to_key])
    w_in[keys], w_out[keys] = w2v.wv.vectors, w2v.syn1neg
    model = Item2Vec(cfg, device="cpu")
    model.w_in, model.w_out, model._train = w_in, w_out, train
    return model, seconds


def fit(fitter: str, train: Sequences, cfg: Item2VecConfig, sents: list[list[str]] | None = None,
        workers: int = 2) -> tuple[Item2Vec, float]:
    """``fit_ours`` (with ``workers`` training threads) or ``fit_gensim`` (``workers`` gensim workers)."""
    if fitter == "ours":
        return fit_ours(train, dataclasses.replace(cfg, workers=workers))
    return fit_gensim(train, sents if sents is not None else sentences(train), cfg, workers)


def scores(model: Item2Vec, hist: Sequences, targets: Sequences) -> dict[str, float]:
    res = evaluate_model(model, hist, targets)
    return {k: round(res[k], 5) for k in METRICS}


def with_scoring(model: Item2Vec, **kw: object) -> Item2Vec:
    """The same fitted vectors under other encode-time settings (``scoring``, ``user_decay``): no refit."""
    model.config = dataclasses.replace(model.config, **kw)
    return model
