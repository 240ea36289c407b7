"""The prepared data folder: the one home of its file names and its reader.

A prepared data folder holds::

    interactions.parquet   encoded, cleaned events (user_idx, item_idx, timestamp, weight, event)
    quarantine.parquet     rows rejected by validation, with a ``reason`` (only when there were any)
    user_ids.parquet       IdMap of users  (index 1..n_users <-> raw id)
    item_ids.parquet       IdMap of items
    items_meta.parquet     item_idx, title, categories (when the source has them)
    split/                 SplitData (train / validation / test sequences, params.json)
    report.json            row accounting (read = accepted + quarantined + duplicates + filtered)

Every engine (:mod:`recsys.prepare.engines`) writes it under a temporary name that is renamed into place, so a
crash never leaves a half-written one behind. ``recsys data ingest`` writes the first three names too (its
folder holds validated rows with raw ids, before encoding).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from recsys.ingest.schema import ITEM, ITEM_IDX
from recsys.prepare.idmap import IdMap
from recsys.prepare.sequences import Sequences
from recsys.prepare.split import SplitData

INTERACTIONS = "interactions.parquet"
QUARANTINE = "quarantine.parquet"
USER_IDS = "user_ids.parquet"
ITEM_IDS = "item_ids.parquet"
ITEMS_META = "items_meta.parquet"
SPLIT = "split"
REPORT = "report.json"


@dataclass
class Prepared:
    """Everything a training step needs, as read back from a prepared data folder."""

    directory: Path
    split: SplitData
    users: IdMap
    items: IdMap
    items_meta: pl.DataFrame | None  # item_idx, title, categories
    report: dict
    name: str


def write_report(folder: Path, report: dict) -> None:
    """``report.json`` of a folder being built (inside the engine's atomic folder)."""
    (folder / REPORT).write_text(json.dumps(report, indent=2, default=str))


def save_id_maps(folder: Path, users: IdMap, items: IdMap) -> None:
    """The user and item IdMaps of a folder being built."""
    users.save(folder / USER_IDS)
    items.save(folder / ITEM_IDS)


def load_id_maps(directory: str | Path) -> tuple[IdMap, IdMap]:
    """The IdMaps of a prepared folder (what ``prepare(..., id_maps_from=...)`` extends).

    Parameters
    ----------
    directory : a folder an engine wrote (:func:`is_prepared`).

    Returns
    -------
    tuple[IdMap, IdMap] : (users, items): index 1..n <-> raw id.

    Raises
    ------
    FileNotFoundError : the folder holds no id maps.
    """
    d = Path(directory)
    return IdMap.load(d / USER_IDS), IdMap.load(d / ITEM_IDS)


def is_prepared(directory: str | Path) -> bool:
    """Whether ``directory`` is a finished prepared folder (its report is written last)."""
    return (Path(directory) / REPORT).is_file()


def load_prepared(directory: str | Path, name: str = "") -> Prepared:
    """Read a prepared folder.

    Parameters
    ----------
    directory : the folder an engine wrote.
    name : the data set's name (default: the one recorded in its report, else the folder's name).

    Returns
    -------
    Prepared : the split (memory-mapped), id maps, item metadata and report.

    Raises
    ------
    FileNotFoundError : the folder is not a finished prepared folder.
    """
    d = Path(directory)
    if not is_prepared(d):
        raise FileNotFoundError(f"{d} is not a prepared data folder ({REPORT} missing); run `recsys data split`")
    users, items = load_id_maps(d)
    meta_path = d / ITEMS_META
    report = json.loads((d / REPORT).read_text())
    return Prepared(d, SplitData.load(d / SPLIT), users, items,
                    pl.read_parquet(meta_path) if meta_path.is_file() else None, report,
                    name or report.get("data_config", {}).get("name", d.name))


def read_report(directory: str | Path) -> dict:
    """A prepared (or ingested) folder's ``report.json``."""
    return json.loads((Path(directory) / REPORT).read_text())


def read_interactions(directory: str | Path) -> pl.DataFrame:
    """A prepared folder's encoded events (``interactions.parquet``)."""
    return pl.read_parquet(Path(directory) / INTERACTIONS)


def raw_items_meta(data: Prepared) -> pl.DataFrame | None:
    """The item metadata keyed by raw ``item`` id (as bundles store it), or None."""
    if data.items_meta is None:
        return None
    meta = data.items_meta
    return meta.with_columns(pl.Series(ITEM, data.items.decode(meta[ITEM_IDX].to_numpy()))).drop(ITEM_IDX)


def all_events(data: Prepared) -> Sequences:
    """Every user's whole history (all splits, oldest first): what an exported bundle encodes and stores.

    Under leave-last-out it is each user's test history followed by their test target, joined from the
    memory-mapped split (memory: the result, about 12 bytes an event); a temporal split, whose held-out parts
    may leave events out (cold items), is rebuilt from ``interactions.parquet`` (the whole log in memory).

    Parameters
    ----------
    data : a prepared folder as :func:`load_prepared` reads it.

    Returns
    -------
    Sequences : row = user index, with timestamps, the same as ``build_sequences`` of the folder's events.
    """
    split = data.split
    joined = split.test_history.n_events + split.test_targets.n_events
    if split.params.get("split") == "leave_last_out" and split.params.get("n_events") == joined:
        return split.test_history.concat(split.test_targets)
    from recsys.prepare.build import build_sequences

    return build_sequences(read_interactions(data.directory), split.n_users, split.n_items)
