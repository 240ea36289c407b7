"""Compressed logs (gzip, zstd, bz2): recognised by their magic bytes (whatever the name), decompressed
as a stream into a temporary plain file that the text readers then read as usual.

Memory stays bounded by the copy buffer, whatever the archive's size; a truncated or damaged archive is
a :class:`~recsys.ingest.errors.DataError` that names the file; a disk that fills up while the copy is written
is an ``OSError`` that names the disk's folder and its free space, not the archive. ``events.csv.gz`` is read as CSV,
``events.tsv.zst`` as TSV: the compression suffix is dropped before the format is taken from the name.
"""

from __future__ import annotations

import bz2
import gzip
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from recsys.ingest.errors import DataError

#: compression -> (magic bytes, file-name suffixes)
KINDS = {"gzip": (b"\x1f\x8b", (".gz", ".gzip")), "zstd": (b"\x28\xb5\x2f\xfd", (".zst", ".zstd")),
         "bz2": (b"BZh", (".bz2",))}
SUFFIXES = tuple(s for _, suffixes in KINDS.values() for s in suffixes)
_CHUNK = 1 << 20


def compression(path: Path) -> str | None:
    """"gzip", "zstd" or "bz2" when the file starts with that format's magic bytes, else None."""
    with path.open("rb") as fh:
        head = fh.read(4)
    return next((kind for kind, (magic, _) in KINDS.items() if head.startswith(magic)), None)


def inner_name(path: Path) -> str:
    """The file name without a compression suffix: ``events.csv.gz`` -> ``events.csv``."""
    name = path.name
    for suffix in SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _copy(kind: str, path: Path, dst: BinaryIO) -> None:
    """Stream-decompress ``path`` into ``dst``; raises on a truncated or damaged archive."""
    if kind in ("gzip", "bz2"):
        with (gzip.open if kind == "gzip" else bz2.open)(path, "rb") as src:
            shutil.copyfileobj(src, dst, _CHUNK)
        return
    try:
        import zstandard
    except ImportError:
        raise DataError(f"{path}: is zstd-compressed and the `zstandard` package is missing; "
                        "`pip install zstandard` (a dependency of recsys) or decompress the file first.") from None
    dctx, dobj = zstandard.ZstdDecompressor(), None
    with path.open("rb") as src:
        while chunk := src.read(_CHUNK):
            while chunk:  # one decompressobj per frame: a file may hold several frames back to back
                dobj = dobj if dobj is not None and not dobj.eof else dctx.decompressobj()
                dst.write(dobj.decompress(chunk))
                chunk = dobj.unused_data if dobj.eof else b""
    if dobj is None or not dobj.eof:
        raise EOFError("the last zstd frame ends before its end marker")


class _WriteFailed(Exception):
    """Writing the plain copy failed (the disk, not the archive)."""

    def __init__(self, error: OSError, written: int) -> None:
        super().__init__(str(error))
        self.error, self.written = error, written


class _Sink:
    """The plain copy: counts the bytes written and tells a failed write from a failed read."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh, self.written = fh, 0

    def write(self, data: bytes) -> int:
        try:
            n = self.fh.write(data)
        except OSError as exc:
            raise _WriteFailed(exc, self.written) from None
        self.written += len(data)
        return n


@contextmanager
def decompressed(path: Path, kind: str) -> Iterator[Path]:
    """Yield a temporary plain copy of the ``kind``-compressed ``path`` (removed afterwards).

    Raises
    ------
    DataError : the archive is truncated, damaged or holds an empty file (names the archive).
    OSError : the plain copy could not be written (a full disk: names the folder, its free space and the fix).
    """
    with tempfile.TemporaryDirectory(prefix="recsys-decompressed-") as tmp:
        out = Path(tmp) / inner_name(path)
        try:
            with out.open("wb") as fh:
                _copy(kind, path, _Sink(fh))  # type: ignore[arg-type]
        except _WriteFailed as failed:
            free = shutil.disk_usage(tmp).free
            raise OSError(failed.error.errno, f"cannot write the decompressed copy of {path} in {tmp} "
                          f"({failed.error.strerror or failed.error}; {failed.written / 2**20:.0f} MiB written, "
                          f"{free / 2**20:.0f} MiB free on that disk): the archive is fine. Free space there, "
                          "or point TMPDIR at a disk with room for the uncompressed log.") from None
        except DataError:
            raise
        except Exception as exc:  # EOFError, OSError, zlib.error, zstandard.ZstdError: all mean a bad archive
            raise DataError(f"{path}: the {kind} archive is truncated or damaged ({type(exc).__name__}: {exc}); "
                            "nothing was read from it. Re-download or re-export the file.") from None
        if out.stat().st_size == 0:
            raise DataError(f"{path}: the {kind} archive holds an empty file; nothing to read.")
        yield out
