"""Synthetic interaction logs with planted structure: Zipf popularity, user tastes, Markov successors.

Use it for scale tests and benchmarks (real data here is small) and for learning tests whose
right answer is known::

    >>> data = generate(SyntheticConfig(n_users=50, n_items=40, n_events=500, n_categories=4))
    >>> data.interactions.columns, data.interactions.height
    (['user', 'item', 'timestamp', 'weight', 'event'], 500)
    >>> data.items.columns
    ['item', 'title', 'categories']

The generative story, per user (raw ids ``user`` 1..n_users, ``item`` 1..n_items):

* every item has a main category and a Zipf popularity ``rank ** -zipf_exponent``;
  ``n_successors`` "successor" items are drawn uniformly inside its main category;
* a user has ``n_favorite_categories`` favourite categories and an activity level (lognormal),
  which fixes their number of events (``>= min_events_per_user``; the total is exactly ``n_events``);
* the first event, and each later one with probability ``1 - markov_prob``, is a *fresh pick*:
  a category (a favourite with probability ``taste_strength``, else by category popularity mass),
  then an item of that category by popularity; every other event is a uniformly chosen successor
  of the previous item. So a next-item model and a co-occurrence model beat popularity clearly;
* timestamps start at a random point in ``[start_time, start_time + time_span)`` and grow by
  ``1 + Exponential(mean_gap_s)`` seconds, strictly increasing per user.

Determinism and chunking: users are generated in fixed *blocks* (about ``BLOCK_EVENTS`` events,
block size depends on the config only), each from its own random stream ``(seed, block)``. A user
never spans two blocks, so no state has to be carried, and :func:`write` groups whole blocks into
part files: the rows are the same for any ``chunk_size`` and equal :func:`generate`'s output.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from recsys.atomic import atomic_dir
from recsys.config import ConfigError
from recsys.ingest.schema import EVENT, ITEM, TIMESTAMP, USER, WEIGHT

BLOCK_EVENTS = 1_000_000  # events per random-stream block; fixed so output is chunk_size independent

_ADJECTIVES = (
    "Crimson", "Amber", "Silent", "Golden", "Rustic", "Velvet", "Midnight", "Bright", "Cosy", "Urban",
    "Wild", "Silver", "Misty", "Bold", "Gentle", "Lunar", "Coral", "Frosted", "Hidden", "Royal",
    "Sunny", "Ivory", "Copper", "Electric", "Classic", "Tiny", "Grand", "Swift", "Quiet", "Azure",
)
_NOUNS = (
    "Garden", "River", "Forest", "Harbor", "Meadow", "Canyon", "Summit", "Orchard", "Island", "Valley",
    "Prairie", "Lagoon", "Desert", "Glacier", "Cottage", "Station", "Market", "Studio", "Harvest", "Comet",
)
_CATEGORIES = (
    ("Lighting", ("Lamp", "Lantern", "Sconce")), ("Kitchen", ("Kettle", "Skillet", "Mug")),
    ("Books", ("Novel", "Atlas", "Journal")), ("Music", ("Album", "Vinyl", "Songbook")),
    ("Toys", ("Puzzle", "Kite", "Robot")), ("Garden", ("Planter", "Trowel", "Hose")),
    ("Sports", ("Racket", "Ball", "Helmet")), ("Beauty", ("Serum", "Balm", "Palette")),
    ("Outdoors", ("Tent", "Backpack", "Compass")), ("Office", ("Notebook", "Stapler", "Desk")),
    ("Fashion", ("Scarf", "Jacket", "Sneaker")), ("Games", ("Cartridge", "Board Game", "Controller")),
    ("Pets", ("Leash", "Bowl", "Cushion")), ("Tools", ("Drill", "Wrench", "Saw")),
    ("Bath", ("Towel", "Soap", "Mirror")), ("Travel", ("Suitcase", "Pillow", "Map")),
)


@dataclass(frozen=True)
class SyntheticConfig:
    """Size, structure and randomness of a synthetic data set (see the module docstring)."""

    n_users: int = 10_000  # users (each gets at least min_events_per_user events)
    n_items: int = 5_000  # catalogue size
    n_events: int = 500_000  # total events, spread over users by a lognormal activity
    n_categories: int = 20  # item categories (tastes are drawn over them)
    zipf_exponent: float = 1.0  # item popularity ~ rank ** -zipf_exponent
    markov_prob: float = 0.5  # P(next event is a successor of the previous item)
    n_successors: int = 5  # items that may follow each item in a sequential habit
    taste_strength: float = 0.8  # P(a fresh pick comes from the user's favourite categories)
    n_favorite_categories: int = 2  # categories each user prefers
    second_category_prob: float = 0.2  # P(an item also lists a second category)
    min_events_per_user: int = 5  # so every user survives a leave-last-out split
    activity_sigma: float = 1.0  # lognormal spread of events per user
    purchase_prob: float = 0.05  # P(event == "purchase"), else "view"
    start_time: int = 1_600_000_000  # epoch s
    time_span: int = 365 * 86_400  # users start uniformly within this many seconds
    mean_gap_s: float = 3_600.0  # mean seconds between a user's events (exponential gaps)
    seed: int = 0  # everything random in the set
    chunk_size: int = 5_000_000  # events per Parquet part file in write() (whole blocks, so approximate)

    def __post_init__(self) -> None:
        positive = ("n_users", "n_items", "n_events", "n_categories", "n_successors", "n_favorite_categories",
                    "min_events_per_user", "time_span", "chunk_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"SyntheticConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("markov_prob", "taste_strength", "second_category_prob", "purchase_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"SyntheticConfig.{name} is a probability in [0, 1], got {getattr(self, name)}")
        for name in ("zipf_exponent", "activity_sigma", "mean_gap_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"SyntheticConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.n_items < self.n_categories:
            raise ConfigError(f"n_items={self.n_items} < n_categories={self.n_categories}: every category "
                              "needs an item; lower n_categories")
        if self.n_events < self.n_users * self.min_events_per_user:
            raise ConfigError(
                f"n_events={self.n_events} cannot give {self.n_users} users >= {self.min_events_per_user} "
                f"events each; raise n_events to >= {self.n_users * self.min_events_per_user} or lower "
                "n_users / min_events_per_user")


@dataclass(frozen=True)
class Catalogue:
    """Planted item structure. Arrays are indexed by raw item id (row 0 unused, padding).

    Attributes
    ----------
    category : (n_items + 1,) int32 main category of every item.
    popularity : (n_items + 1,) float64 sampling weight (Zipf), 0 at row 0.
    successors : (n_items + 1, n_successors) int64 successor items (same main category).
    items : polars frame ``item`` Int64, ``title`` String, ``categories`` List[String] (main first).
    """

    category: np.ndarray
    popularity: np.ndarray
    successors: np.ndarray
    items: pl.DataFrame


@dataclass(frozen=True)
class SyntheticData:
    """``interactions`` in the canonical raw layout; ``items`` the catalogue frame."""

    interactions: pl.DataFrame
    items: pl.DataFrame


def category_names(n: int) -> list[str]:
    """Readable names for ``n`` categories: the base list, then "Lighting 2", ... when it runs out."""
    base = [name for name, _ in _CATEGORIES]
    return [base[c % len(base)] + ("" if c < len(base) else f" {c // len(base) + 1}") for c in range(n)]


def build_catalogue(config: SyntheticConfig) -> Catalogue:
    """The item catalogue of ``config``: categories, Zipf popularity, successors and titles."""
    rng = np.random.default_rng([config.seed, 0])
    n, n_cat = config.n_items, config.n_categories
    # categories have Zipf-ish sizes too; the first n_cat items cover every category once
    cat_weight = 1.0 / np.arange(1, n_cat + 1) ** 0.5
    cat = np.concatenate([rng.permutation(n_cat), rng.choice(n_cat, n - n_cat, p=cat_weight / cat_weight.sum())])
    pop = 1.0 / (rng.permutation(n) + 1.0) ** config.zipf_exponent
    order = np.argsort(cat, kind="stable")  # items grouped by category
    sizes = np.bincount(cat, minlength=n_cat)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    succ_pos = starts[cat][:, None] + (rng.random((n, config.n_successors)) * sizes[cat][:, None]).astype(np.int64)
    successors = np.zeros((n + 1, config.n_successors), dtype=np.int64)
    successors[1:] = order[succ_pos] + 1
    category = np.concatenate([[0], cat]).astype(np.int32)
    popularity = np.concatenate([[0.0], pop])
    return Catalogue(category, popularity, successors, _items_frame(config, cat, rng))


def _items_frame(config: SyntheticConfig, cat: np.ndarray, rng: np.random.Generator) -> pl.DataFrame:
    n, n_cat = config.n_items, config.n_categories
    names = pl.Series(category_names(n_cat))
    # each category has three product words; a title is "<adjective> <noun> <product word>"
    kind_words = pl.Series([w for c in range(n_cat) for w in _CATEGORIES[c % len(_CATEGORIES)][1]])
    adj = pl.Series(_ADJECTIVES).gather(rng.integers(len(_ADJECTIVES), size=n))
    noun = pl.Series(_NOUNS).gather(rng.integers(len(_NOUNS), size=n))
    kind = kind_words.gather(cat * 3 + rng.integers(3, size=n))
    second = (cat + 1 + rng.integers(max(n_cat - 1, 1), size=n)) % n_cat
    has_second = (rng.random(n) < config.second_category_prob) & (n_cat > 1)
    frame = pl.DataFrame({
        ITEM: np.arange(1, n + 1, dtype=np.int64),
        "_adj": adj, "_noun": noun, "_kind": kind,
        "_main": names.gather(cat), "_second": names.gather(second), "_has2": has_second,
    })
    both = pl.concat_list("_main", "_second")
    title = pl.concat_str(["_adj", "_noun", "_kind"], separator=" ").alias("title")
    cats = pl.when("_has2").then(both).otherwise(pl.concat_list("_main")).alias("categories")
    return frame.select(ITEM, title, cats)


def user_lengths(config: SyntheticConfig) -> np.ndarray:
    """(n_users,) int64 events per user: ``min_events_per_user`` plus a lognormal share; sums to n_events."""
    rng = np.random.default_rng([config.seed, 1])
    share = rng.lognormal(0.0, config.activity_sigma, config.n_users)
    extra = config.n_events - config.n_users * config.min_events_per_user
    share *= extra / share.sum()
    lengths = np.floor(share).astype(np.int64)
    short = extra - int(lengths.sum())  # 0 <= short < n_users; give them to the largest remainders
    if short:
        lengths[np.argpartition(lengths - share, short - 1)[:short]] += 1
    return lengths + config.min_events_per_user


def user_blocks(lengths: np.ndarray) -> np.ndarray:
    """(n_blocks + 1,) int64 user boundaries: consecutive users with about BLOCK_EVENTS events each."""
    ends = np.cumsum(lengths)
    cuts = np.searchsorted(ends, np.arange(BLOCK_EVENTS, int(ends[-1]), BLOCK_EVENTS), side="left") + 1
    return np.unique(np.concatenate([[0], cuts, [len(lengths)]]))


class _Sampler:
    """Vectorised draws from the catalogue: categories by mass, items of a category by popularity."""

    def __init__(self, cat: Catalogue, n_categories: int) -> None:
        c, pop = cat.category[1:], cat.popularity[1:]
        self.order = np.argsort(c, kind="stable") + 1  # item ids grouped by category
        mass = np.bincount(c, weights=pop, minlength=n_categories)
        self.cat_cdf = np.cumsum(mass) / mass.sum()
        # key of the j-th item of category k is k + (cumulative share of k's popularity), in (k, k + 1];
        # a draw k + U[0, 1) then lands in category k (the last key of each category is exactly k + 1)
        p = pop[self.order - 1]
        csum = np.cumsum(p)
        first = np.concatenate([[0], np.flatnonzero(np.diff(c[self.order - 1])) + 1])
        base = np.repeat(csum[first] - p[first], np.diff(np.concatenate([first, [len(p)]])))
        within = (csum - base) / np.repeat(mass, np.bincount(c, minlength=n_categories))
        last = np.concatenate([first[1:], [len(p)]]) - 1
        within[last] = 1.0
        self.key = c[self.order - 1] + within

    def categories(self, rng: np.random.Generator, size: int | tuple) -> np.ndarray:
        idx = np.searchsorted(self.cat_cdf, rng.random(size), side="right")
        return np.minimum(idx, len(self.cat_cdf) - 1)

    def items(self, rng: np.random.Generator, categories: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.key, categories + rng.random(len(categories)), side="right")
        return self.order[np.minimum(pos, len(self.order) - 1)]


def _block_items(config: SyntheticConfig, cat: Catalogue, sampler: _Sampler, lens: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Items (n,) int64 of one block of users with ``lens`` events each; also each event's local user."""
    n, n_users = int(lens.sum()), len(lens)
    local = np.repeat(np.arange(n_users), lens)
    first = np.concatenate([[0], np.cumsum(lens)[:-1]])
    fresh = rng.random(n) >= config.markov_prob
    fresh[first] = True
    favs = sampler.categories(rng, (n_users, config.n_favorite_categories))
    j = np.flatnonzero(fresh)
    from_taste = rng.random(len(j)) < config.taste_strength
    fav_pick = favs[local[j], rng.integers(config.n_favorite_categories, size=len(j))]
    cats = np.where(from_taste, fav_pick, sampler.categories(rng, len(j)))
    items = np.zeros(n, dtype=np.int64)
    items[j] = sampler.items(rng, cats)
    # depth = steps since the last fresh pick; depth d follows a successor of depth d - 1's item,
    # so one vectorised pass per depth replaces a Python loop over events
    depth = np.arange(n) - np.maximum.accumulate(np.where(fresh, np.arange(n), 0))
    by_depth = np.argsort(depth, kind="stable")
    bounds = np.cumsum(np.bincount(depth))
    for d in range(1, len(bounds)):
        idx = by_depth[bounds[d - 1]:bounds[d]]
        items[idx] = cat.successors[items[idx - 1], rng.integers(config.n_successors, size=len(idx))]
    return items, local


def _block_frame(config: SyntheticConfig, cat: Catalogue, sampler: _Sampler, lengths: np.ndarray,
                 u0: int, u1: int, block: int) -> pl.DataFrame:
    """Events of users ``u0 + 1 .. u1`` (raw ids), sorted by user then time."""
    rng = np.random.default_rng([config.seed, 2, block])
    lens = lengths[u0:u1]
    items, local = _block_items(config, cat, sampler, lens, rng)
    n = len(items)
    first = np.concatenate([[0], np.cumsum(lens)[:-1]])
    gaps = 1 + np.floor(rng.exponential(config.mean_gap_s, n)).astype(np.int64)
    gaps[first] = 0
    csum = np.cumsum(gaps)
    start = config.start_time + rng.integers(0, config.time_span, size=len(lens))
    ts = start[local] + csum - csum[first][local]
    purchase = pl.Series(rng.random(n) < config.purchase_prob)
    return pl.DataFrame({
        USER: (local + u0 + 1).astype(np.int64), ITEM: items, TIMESTAMP: ts,
        WEIGHT: np.ones(n, dtype=np.float32),
    }).with_columns(pl.when(purchase).then(pl.lit("purchase")).otherwise(pl.lit("view")).alias(EVENT))


def iter_blocks(config: SyntheticConfig, catalogue: Catalogue | None = None) -> Iterator[pl.DataFrame]:
    """Yield the interaction frames of consecutive user blocks (bounded memory, deterministic)."""
    cat = build_catalogue(config) if catalogue is None else catalogue
    sampler = _Sampler(cat, config.n_categories)
    lengths = user_lengths(config)
    bounds = user_blocks(lengths)
    for b in range(len(bounds) - 1):
        yield _block_frame(config, cat, sampler, lengths, int(bounds[b]), int(bounds[b + 1]), b)


def generate(config: SyntheticConfig | None = None) -> SyntheticData:
    """The whole data set in memory (small and medium sizes; use :func:`write` for 10M+ events)."""
    config = config or SyntheticConfig()
    cat = build_catalogue(config)
    return SyntheticData(pl.concat(list(iter_blocks(config, cat)), rechunk=True), cat.items)


def write(config: SyntheticConfig, directory: str | Path, progress: bool = True, overwrite: bool = False) -> Path:
    """Write ``interactions/part-NNNNN.parquet``, ``items.parquet`` and ``manifest.json`` into ``directory``.

    Events stream block by block (one block of ~BLOCK_EVENTS events plus one part file in memory);
    each part holds whole blocks, about ``config.chunk_size`` events. Everything is written into a
    temporary sibling folder that is renamed into place at the end, so a crash leaves no half data set.
    """
    final = Path(directory)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} exists; pass overwrite=True or choose another directory")
    with atomic_dir(final) as tmp:
        (tmp / "interactions").mkdir()
        cat = build_catalogue(config)
        cat.items.write_parquet(tmp / "items.parquet")
        pending: list[pl.DataFrame] = []
        parts, bar = 0, tqdm(total=config.n_events, unit="ev", disable=not progress, desc="synthetic")
        for frame in iter_blocks(config, cat):
            pending.append(frame)
            bar.update(frame.height)
            if sum(f.height for f in pending) >= config.chunk_size:
                pl.concat(pending).write_parquet(tmp / "interactions" / f"part-{parts:05d}.parquet")
                pending, parts = [], parts + 1
        if pending:
            pl.concat(pending).write_parquet(tmp / "interactions" / f"part-{parts:05d}.parquet")
            parts += 1
        bar.close()
        manifest = {"format": "recsys-synthetic-v1", "config": asdict(config), "n_events": config.n_events,
                    "n_parts": parts}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return final
