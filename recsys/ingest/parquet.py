"""Parquet logs -> the mapped columns, typed as stored (the validator checks and converts them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl

from recsys.ingest.errors import DataError
from recsys.ingest.schema import ROW, ColumnMapping
from recsys.ingest.text import polars_errors


def parquet_raw(path: Path, mapping: ColumnMapping, schema_only: bool = False) -> pl.DataFrame:
    """The mapped columns (canonical names) and ``row``; with ``schema_only`` only the checks run (empty frame)."""
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != b"PAR1":
        raise DataError(f"{path}: is not a Parquet file (starts with {magic!r}, not b'PAR1'). Check the path, "
                        "or pass fmt='csv' / 'tsv' if it is text.")
    with polars_errors(path, "Parquet"):
        lf = pl.scan_parquet(path)
        found = lf.collect_schema().names()
        if any(src not in found for src in mapping.pairs().values()):
            raise mapping.missing_error(path, found, None)
        if schema_only:
            return pl.DataFrame()
        cols = [pl.col(src).alias(dst) for dst, src in mapping.pairs().items()]
        return lf.select(*cols, pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(ROW)).collect()




def parquet_files(path: Path) -> list[Path]:
    """``path`` itself, or the ``*.parquet`` files of a folder (recursively, sorted by name): the parts of
    one log, read in that order."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if p.is_file())
        if not files:
            raise DataError(f"{path}: the folder holds no *.parquet files; pass a Parquet file or a folder of parts.")
        return files
    return [path]


def parquet_rows(path: Path) -> int:
    """Rows of a Parquet file or folder of parts, from the footers alone (nothing is read)."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in parquet_files(path))


def parquet_blocks(path: Path, mapping: ColumnMapping, block_rows: int = 4_000_000) -> Iterator[pl.DataFrame]:
    """:func:`parquet_raw` as a stream: frames of at most ``block_rows`` rows, cut from one row group at a time,
    ``row`` counted across the file, or across a folder's parts in name order; memory is one row group."""
    import pyarrow.parquet as pq

    offset = 1
    for file in parquet_files(path):
        parquet_raw(file, mapping, schema_only=True)  # the magic bytes and the mapped columns, named errors
        with polars_errors(file, "Parquet"):
            pf = pq.ParquetFile(file)
            cols = list(dict.fromkeys(mapping.pairs().values()))
            # a row group at a time (ParquetFile.iter_batches keeps decoded data alive: memory grew with the file);
            # small row groups are gathered into blocks of block_rows (tiny blocks make tiny partition row groups)
            pending: list[pl.DataFrame] = []
            for g in range(pf.num_row_groups + 1):
                if g < pf.num_row_groups:
                    pending.append(pl.from_arrow(pf.read_row_group(g, columns=cols)))
                    if sum(f.height for f in pending) < block_rows:
                        continue
                if not pending:
                    continue
                group, pending = pl.concat(pending), []
                for start in range(0, group.height, block_rows):
                    raw = group.slice(start, block_rows)
                    n = raw.height
                    yield raw.select(*[pl.col(src).alias(dst) for dst, src in mapping.pairs().items()],
                                     pl.int_range(offset, offset + n, dtype=pl.Int64).alias(ROW))
                    offset += n

__all__ = ["parquet_blocks", "parquet_files", "parquet_raw", "parquet_rows"]
