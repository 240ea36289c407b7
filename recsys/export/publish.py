"""A publish root: versioned bundles plus an atomically switched ``current`` symlink.

Layout::

    <root>/bundles/20250101T120000123456Z/   one bundle per version (names sort by time)
    <root>/current -> bundles/<version>       relative symlink; the server follows it

The pointer is switched by creating a temp symlink beside it and renaming it over ``current``
(:func:`recsys.atomic.replace_symlink`; atomic on POSIX), so a reader sees the old or the new
bundle, never neither. :func:`publish` keeps the newest ``keep`` versions (and always the current one);
:func:`rollback` points ``current`` at the version published before it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from recsys import atomic
from serving import format as fmt
from serving.loader import read_manifest, verify_files


@dataclass(frozen=True)
class BundleInfo:
    version: str
    path: Path
    current: bool
    model: str | None
    created_at: str | None


def new_version() -> str:
    """UTC timestamp with microseconds: versions sort by publication time."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def current_version(root: str | Path) -> str | None:
    """Version the ``current`` pointer names, or None before the first publish."""
    cur = Path(root) / fmt.CURRENT
    return Path(os.readlink(cur)).name if cur.is_symlink() else None


def list_bundles(root: str | Path) -> list[BundleInfo]:
    """Published bundles, oldest first."""
    bundles = Path(root) / fmt.BUNDLES_DIR
    if not bundles.is_dir():
        return []
    cur, out = current_version(root), []
    for p in sorted(q for q in bundles.iterdir() if q.is_dir() and not q.name.startswith(".")):
        try:
            m = read_manifest(p)
        except fmt.BundleError:
            m = {}
        out.append(BundleInfo(p.name, p, p.name == cur, m.get("model"), m.get("created_at")))
    return out


def publish(root: str | Path, bundle_dir: str | Path, version: str | None = None, keep: int = 5) -> Path:
    """Move a verified bundle into ``root/bundles/<version>``, point ``current`` at it, prune old ones.

    Raises
    ------
    serving.BundleError
        When the bundle fails verification (it is left where it was).
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1 (the current bundle is always kept); got {keep}")
    dest = place(root, bundle_dir, version or new_version())
    point(root, dest.name)
    prune(root, keep)
    return dest


def place(root: str | Path, bundle_dir: str | Path, version: str) -> Path:
    """Move a verified bundle to ``root/bundles/<version>`` (a rename; the pointer is not touched).

    Idempotent: when ``bundle_dir`` is gone and ``bundles/<version>`` holds a bundle that verifies (a
    rerun after a kill that came after the move), that bundle is returned as it is.
    """
    root, src = Path(root), Path(bundle_dir)
    bundles = root / fmt.BUNDLES_DIR
    dest = bundles / version
    if src.resolve() == dest.resolve() or (dest.is_dir() and not src.exists()):
        verify_files(dest, read_manifest(dest))
        return dest
    verify_files(src, read_manifest(src))
    if dest.exists():
        raise FileExistsError(f"version {dest.name} is already published in {bundles}; pick another version")
    bundles.mkdir(parents=True, exist_ok=True)
    for stale in bundles.glob(f".{version}.tmp-*"):  # a cross-device copy that was killed
        shutil.rmtree(stale, ignore_errors=True)
    return atomic.move_dir(src, dest)


def point(root: str | Path, version: str) -> None:
    """Point ``current`` at ``bundles/<version>`` (atomic: readers see the old or the new target)."""
    root = Path(root)
    if not (root / fmt.BUNDLES_DIR / version).is_dir():
        raise FileNotFoundError(f"{root / fmt.BUNDLES_DIR / version} does not exist; place the bundle first")
    atomic.replace_symlink(root / fmt.CURRENT, Path(fmt.BUNDLES_DIR) / version)


def rollback(root: str | Path) -> Path:
    """Point ``current`` at the version published just before it; returns that bundle's path."""
    versions = [b.version for b in list_bundles(root)]
    cur = current_version(root)
    if cur not in versions or versions.index(cur) == 0:
        raise RuntimeError(f"no bundle older than {cur!r} in {root} to roll back to; published: {versions}")
    prev = versions[versions.index(cur) - 1]
    point(root, prev)
    return Path(root) / fmt.BUNDLES_DIR / prev


def prune(root: str | Path, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` versions (never the current one); returns what was deleted."""
    infos = list_bundles(root)
    doomed = [b for b in infos[: max(len(infos) - keep, 0)] if not b.current]
    for b in doomed:
        shutil.rmtree(b.path)
    return [b.version for b in doomed]
