"""Parquet logs -> the mapped columns, typed as stored (the validator checks and converts them)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recsys.data.errors import DataError
from recsys.data.schema import ROW, ColumnMapping
from recsys.data.textio import polars_errors


def parquet_raw(path: Path, mapping: ColumnMapping) -> pl.DataFrame:
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
        cols = [pl.col(src).alias(dst) for dst, src in mapping.pairs().items()]
        return lf.select(*cols, pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(ROW)).collect()


__all__ = ["parquet_raw"]
