"""Turn validated interactions into what models train on: dedupe and k-core filters, id maps, splits and
sequences, written as a prepared folder (:mod:`recsys.prepare.format`) by one of three engines
(:mod:`recsys.prepare.engines`: in memory, out of core, Spark) behind :func:`prepare`.

    >>> from recsys.prepare import DataConfig, prepare
    >>> data = prepare(DataConfig(path="logs/events.csv", min_length=3), "prepared/")   # doctest: +SKIP
"""

from __future__ import annotations

import logging
from pathlib import Path

from recsys.prepare.config import DataConfig
from recsys.prepare.format import Prepared, load_id_maps, load_prepared

log = logging.getLogger(__name__)

ENGINES = ("memory", "outofcore", "spark")


def prepare(cfg: DataConfig, out: str | Path, seed: int = 42, id_maps_from: str | Path | None = None,
            ingested: object | None = None) -> Prepared:
    """Prepare ``cfg``'s log into the folder ``out`` (written atomically) on ``cfg.engine``; read it back.

    Parameters
    ----------
    cfg : the log (``path``, empty for the built-in synthetic set; ``format``, columns, encoding), its
        cleaning (repeat policy, k-core, minimum length), split, and engine.
    out : the prepared folder to write; replaced atomically when it exists.
    seed : the synthetic set's seed (when ``cfg.path`` is empty).
    id_maps_from : a previous prepared folder whose IdMaps are extended (new ids appended), so indices of
        known users and items stay the same across runs.
    ingested : rows already read and validated (the pipeline's incremental log folder): in memory
        (:class:`recsys.prepare.engines.memory.Ingested`) for the in-memory engine, as Parquet parts
        (:class:`recsys.prepare.engines.ValidatedParts`) for the out-of-core and Spark engines.

    Returns
    -------
    Prepared : the folder as :func:`recsys.prepare.format.load_prepared` reads it.

    Raises
    ------
    recsys.ingest.errors.DataError : a log that cannot be read, or too many bad rows (names file, row, field).
    ValueError : nothing left after cleaning, an unknown engine, or ``ingested`` of the other engines' kind.
    """
    out = Path(out)
    previous = load_id_maps(id_maps_from) if id_maps_from else None
    from recsys.prepare.engines import ValidatedParts

    if cfg.engine == "memory":
        from recsys.prepare.engines.memory import prepare_in_memory

        if isinstance(ingested, ValidatedParts):
            raise ValueError("the in-memory engine takes rows read into memory (Ingested), not ValidatedParts")
        prepare_in_memory(cfg, out, seed, previous, ingested)  # type: ignore[arg-type]
    elif cfg.engine in ENGINES:
        if ingested is not None and not isinstance(ingested, ValidatedParts):
            raise ValueError(f"data.engine = {cfg.engine!r} reads validated rows as Parquet parts (ValidatedParts), "
                             "not rows in memory")
        from recsys.prepare.engines import prepare_large

        prepare_large(cfg, out, seed, previous, ingested)
    else:
        raise ValueError(f"data.engine = {cfg.engine!r} is not one of {', '.join(repr(e) for e in ENGINES)}")
    return load_prepared(out, name=cfg.name)


__all__ = ["DataConfig", "Prepared", "load_prepared", "prepare"]
