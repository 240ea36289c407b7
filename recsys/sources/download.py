"""Download, verify and unpack MovieLens archives into a cache folder (``urllib`` only).

    >>> path = download("ml-100k", "data-cache")          # doctest: +SKIP
    >>> sorted(p.name for p in path.iterdir())[:3]        # doctest: +SKIP
    ['README', 'allbut.pl', 'mku.sh']

Layout of ``cache_dir`` after ``download("ml-100k", cache_dir)``::

    ml-100k.zip          the verified archive, kept so a re-extraction needs no network
    ml-100k/             the unpacked files (what ``download`` returns)
    ml-100k.sha256       sha256 of the archive; written last, so its presence means "complete"

Checksums: the archive's sha256 is compared with :data:`DATASETS` when a digest is known there
(ml-100k), else with GroupLens's published md5 (ml-1m). ml-latest-small has no pinned digest (the
file has been re-released in the past), so its sha256 is recorded on first download
(trust on first use) and later calls compare the cached archive against that record.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from recsys import atomic

BASE_URL = "https://files.grouplens.org/datasets/movielens/"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteDataset:
    """A downloadable archive: known digests (None when not pinned) and a file it must contain."""

    name: str
    sha256: str | None
    md5: str | None
    must_contain: str


DATASETS: dict[str, RemoteDataset] = {
    # sha256 and md5 of ml-100k.zip (4,924,029 bytes); the md5 is the one GroupLens publishes
    "ml-100k": RemoteDataset("ml-100k", "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
                             "0e33842e24a9c977be4e0107933c0723", "u.data"),
    # no sha256 could be confirmed offline; GroupLens's published md5 is checked instead
    "ml-1m": RemoteDataset("ml-1m", None, "c4d9eecfca2ab87c1945afe126590906", "ratings.dat"),
    "ml-latest-small": RemoteDataset("ml-latest-small", None, None, "ratings.csv"),
}


class DownloadError(RuntimeError):
    """The archive could not be fetched or unpacked; the message names the URL and what to do."""


class ChecksumError(DownloadError):
    """The archive's digest differs from the expected one (the bad file has been deleted)."""


def download(name: str, cache_dir: str | Path, url: str | None = None, progress: bool = True,
             timeout: float = 60.0) -> Path:
    """Return the folder with the unpacked files of MovieLens ``name``, downloading it if needed.

    Parameters
    ----------
    name : one of :data:`DATASETS` (``ml-100k``, ``ml-1m``, ``ml-latest-small``).
    cache_dir : folder for the archive and the unpacked files; created when missing.
    url : where to fetch the zip from (a mirror); default ``BASE_URL + name + ".zip"``.
    progress : show a tqdm bar while downloading.
    timeout : seconds for the connection and for each read.

    Returns
    -------
    Path of ``cache_dir / name``. No network access when that folder and its ``.sha256`` record
    exist (or when a verified ``name.zip`` is already in the cache).
    """
    spec = _spec(name)
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    target, archive, record = cache / name, cache / f"{name}.zip", cache / f"{name}.sha256"
    if target.is_dir() and record.is_file() and _record_ok(spec, record):
        return target
    if archive.is_file():
        try:
            digest = _verify(spec, archive, _previous_digest(spec, record))
        except ChecksumError:  # a stale or damaged cached archive: fetch it again
            digest = None
    else:
        digest = None
    if digest is None:
        _fetch(url or f"{BASE_URL}{name}.zip", archive, progress, timeout)
        digest = _verify(spec, archive, _previous_digest(spec, record))
    _extract(spec, archive, target)
    _atomic_write(record, digest + "\n")
    return target


def _spec(name: str) -> RemoteDataset:
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name]


def _record_ok(spec: RemoteDataset, record: Path) -> bool:
    """A record is trusted unless it contradicts a pinned sha256."""
    return spec.sha256 is None or record.read_text().strip() == spec.sha256


def _previous_digest(spec: RemoteDataset, record: Path) -> str | None:
    """For archives without a pinned sha256: the one recorded on first download, if any."""
    if spec.sha256 is None and spec.md5 is None and record.is_file():
        return record.read_text().strip() or None
    return None


def _digests(path: Path) -> tuple[str, str]:
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            sha.update(block)
            md5.update(block)
    return sha.hexdigest(), md5.hexdigest()


def _verify(spec: RemoteDataset, archive: Path, recorded: str | None) -> str:
    """sha256 of ``archive`` after checking it; a mismatch deletes the file and raises ChecksumError."""
    sha, md5 = _digests(archive)
    hint = "Run again to re-download; if it keeps failing the server or mirror serves a different file"
    if spec.sha256 is None and recorded is not None:
        hint += f" (the expected sha256 was recorded on first download: delete {archive.stem}.sha256 to accept it)"
    checks = [("sha256", spec.sha256 or recorded, sha), ("md5", spec.md5, md5)]
    for kind, expected, got in checks:
        if expected is not None and got != expected:
            archive.unlink(missing_ok=True)
            raise ChecksumError(f"{archive.name}: {kind} mismatch, expected {expected} but got {got}; "
                                f"the file was deleted. {hint}")
    return sha


def _fetch(url: str, archive: Path, progress: bool, timeout: float) -> None:
    """Stream ``url`` into a temporary file beside ``archive``, then rename it into place."""
    request = urllib.request.Request(url, headers={"User-Agent": "recsys-download/1"})
    try:
        with atomic.atomic_path(archive) as part, urllib.request.urlopen(request, timeout=timeout) as response, \
                part.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=archive.name, disable=not progress) as bar:
                while block := response.read(_CHUNK):
                    out.write(block)
                    bar.update(len(block))
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"HTTP {exc.code} ({exc.reason}) fetching {url}; check the data set name or the "
                            "url, or try again later") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"could not download {url}: {reason}; check the network (or proxy), pass url= "
                            f"to a reachable mirror, or put {archive.name} into {archive.parent}") from exc


def _extract(spec: RemoteDataset, archive: Path, target: Path) -> None:
    """Unpack into a temporary folder, check it, then swap it in for ``target``."""
    atomic.recover_dir(target)  # a swap killed half-way (old folder still aside)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                p = PurePosixPath(member)
                if p.is_absolute() or ".." in p.parts:
                    raise DownloadError(f"{archive}: unsafe member path {member!r}; refusing to extract")
            zf.extractall(tmp)
    except zipfile.BadZipFile as exc:
        archive.unlink(missing_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        raise DownloadError(f"{archive} is not a valid zip ({exc}); it was deleted, run again to re-download") from exc
    # GroupLens zips hold one top folder named like the data set; accept a flat archive too
    root = tmp / spec.name if (tmp / spec.name).is_dir() else tmp
    if not (root / spec.must_contain).is_file():
        shutil.rmtree(tmp, ignore_errors=True)
        raise DownloadError(f"{archive} does not contain {spec.name}/{spec.must_contain}; is it the right archive?")
    if root != tmp:  # the data set's folder inside the archive becomes the whole temporary folder
        inner = tmp.with_name(tmp.name + "-root")
        os.rename(root, inner)
        shutil.rmtree(tmp)
        tmp = inner
    atomic.replace_dir(tmp, target)


def _atomic_write(path: Path, text: str) -> None:
    atomic.write_text(path, text)
