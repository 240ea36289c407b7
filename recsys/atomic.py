"""Atomic writes: the one place where files, JSON documents and folders are replaced.

Every artifact a later step (or a restarted process) reads is written through this module, so a
kill at any instant leaves either the old content or the new one at the destination, never a
half-written file and never nothing:

- files: written to a temporary sibling (``.<name>.tmp-<random>``), flushed and fsynced, then
  ``os.replace``-d over the destination (atomic on POSIX), then the parent folder is fsynced so the
  rename itself survives a power cut;
- folders: built in a temporary sibling, every file fsynced, then swapped with the destination in
  one ``renameat2(RENAME_EXCHANGE)`` system call (Linux) and the old content, now at the temporary
  name, removed. Where the kernel or file system cannot exchange, the old folder is moved aside
  (``.<name>.old-<random>``), the new one renamed in, and the old one removed; the one instant at
  which the destination is missing is repaired by :func:`recover_dir`, which every folder write
  (and :func:`read_dir`) calls first: it moves the aside folder back.

``durable=False`` skips the fsyncs, for scratch files nothing later depends on.

The module-level :data:`_hook` is called with a name before each system call that changes the
file system; tests use it to kill the process between any two of them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: called as ``_hook(point)`` before every file-system change; tests replace it to inject crashes
_hook: Callable[[str], None] = lambda point: None  # noqa: E731 - a replaceable no-op


def _at(point: str) -> None:
    _hook(point)


def _tmp_name(dest: Path, kind: str) -> Path:
    return dest.with_name(f".{dest.name}.{kind}-{uuid.uuid4().hex[:10]}")


def fsync_dir(path: str | Path) -> None:
    """fsync a folder, so renames and new entries in it survive a crash of the machine."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: str | Path) -> None:
    """fsync every file and folder under ``root`` (bottom up), ``root`` included."""
    for here, _dirs, files in os.walk(root, topdown=False):
        for f in files:
            p = os.path.join(here, f)
            if not os.path.islink(p):
                fsync_file(p)
        fsync_dir(here)


# -- files ----------------------------------------------------------------------------------------


@contextmanager
def atomic_path(path: str | Path, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling path to write (with any writer: ``np.save``, ``write_parquet``...).

    On success the file is fsynced and renamed over ``path``; on an exception it is removed and
    ``path`` keeps its old content. The writer must write exactly the yielded path (``np.save``
    appends ``.npy`` to names without it, so the temporary name ends like the destination).
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.stem}.tmp-{uuid.uuid4().hex[:10]}{''.join(dest.suffixes)}")
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"the writer did not create {tmp} (the temporary file for {dest})")
        if durable:
            _at("fsync-file")
            fsync_file(tmp)
        _at("rename")
        os.replace(tmp, dest)
        if durable:
            _at("fsync-parent")
            fsync_dir(dest.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(path: str | Path, data: bytes, durable: bool = True) -> Path:
    """Replace ``path`` with ``data`` atomically (see the module docstring)."""
    dest = Path(path)
    with atomic_path(dest, durable=durable) as tmp:
        _at("open")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                _at("write")
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
    return dest


def write_text(path: str | Path, text: str, durable: bool = True) -> Path:
    return write_bytes(path, text.encode("utf-8"), durable=durable)


def write_json(path: str | Path, payload: Any, durable: bool = True, indent: int | None = 2,
               sort_keys: bool = False) -> Path:
    """Replace ``path`` with ``payload`` as JSON (``default=str`` for paths, dates...)."""
    return write_text(path, json.dumps(payload, indent=indent, sort_keys=sort_keys, default=str) + "\n",
                      durable=durable)


# -- folders --------------------------------------------------------------------------------------

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_libc: Any = None


def _renameat2() -> Any:
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        except OSError:
            _libc = False
    return getattr(_libc, "renameat2", None) if _libc else None


def exchange(a: str | Path, b: str | Path) -> bool:
    """Swap the paths ``a`` and ``b`` in one system call; False where the system cannot (then nothing moved)."""
    fn = _renameat2()
    if fn is None:
        return False
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
        return False  # old kernel or a file system without RENAME_EXCHANGE: use the aside protocol
    raise OSError(err, f"renameat2({a}, {b}, RENAME_EXCHANGE): {os.strerror(err)}")


def _asides(dest: Path) -> list[Path]:
    return sorted(dest.parent.glob(f".{dest.name}.old-*")) if dest.parent.is_dir() else []


def recover_dir(path: str | Path) -> None:
    """Repair what a kill inside :func:`replace_dir` can leave: put an aside folder back when the
    destination is missing; remove aside and temporary folders once the destination is whole."""
    dest = Path(path)
    asides = _asides(dest)
    if asides and not dest.exists():
        os.replace(asides.pop(), dest)
        fsync_dir(dest.parent)
    for stale in asides + (sorted(dest.parent.glob(f".{dest.name}.tmp-*")) if dest.parent.is_dir() else []):
        shutil.rmtree(stale, ignore_errors=True)


def read_dir(path: str | Path) -> Path:
    """``path`` after :func:`recover_dir`: what a reader of an atomically replaced folder should open."""
    recover_dir(path)
    return Path(path)


def replace_dir(src: str | Path, dest: str | Path, durable: bool = True) -> Path:
    """Put the complete folder ``src`` at ``dest`` (a sibling), replacing what was there.

    The destination always holds the old or the new folder: exchanged in one system call, or (where
    that is unsupported) old moved aside, new renamed in, old removed, with :func:`recover_dir`
    repairing the moment in between.
    """
    src, dest = Path(src), Path(dest)
    if durable:
        _at("fsync-tree")
        fsync_tree(src)
    old = None  # where the replaced folder ends up, removed last
    if dest.exists():
        _at("exchange")
        if exchange(src, dest):
            old = src
        else:
            old = _tmp_name(dest, "old")
            _at("move-aside")
            os.rename(dest, old)
    if old is not src:
        _at("rename-in")
        os.rename(src, dest)
    if durable:
        _at("fsync-parent")
        fsync_dir(dest.parent)
    if old is not None:
        _at("remove-old")
        shutil.rmtree(old, ignore_errors=True)
    return dest


@contextmanager
def atomic_dir(path: str | Path, durable: bool = True) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``path`` to fill; on success it replaces ``path``
    (:func:`replace_dir`); on an exception it is removed and ``path`` is left as it was."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(dest)
    tmp = _tmp_name(dest, "tmp")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, dest, durable=durable)


def move_dir(src: str | Path, dest: str | Path, durable: bool = True) -> Path:
    """Move the folder ``src`` to the new path ``dest`` (which must not exist): a rename on one file
    system; across file systems a copy under a temporary name renamed into place, then ``src`` removed."""
    src, dest = Path(src), Path(dest)
    if dest.exists():
        raise FileExistsError(f"{dest} exists; move_dir never replaces (use replace_dir)")
    try:
        _at("rename-in")
        os.rename(src, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        tmp = _tmp_name(dest, "tmp")
        shutil.copytree(src, tmp)
        if durable:
            fsync_tree(tmp)
        os.rename(tmp, dest)
        shutil.rmtree(src)
    if durable:
        _at("fsync-parent")
        fsync_dir(dest.parent)
    return dest


def replace_symlink(link: str | Path, target: str | Path, durable: bool = True) -> None:
    """Point the symlink ``link`` at ``target`` atomically (a new link renamed over the old one)."""
    link = Path(link)
    tmp = _tmp_name(link, "tmp")
    _at("symlink")
    os.symlink(target, tmp)
    try:
        _at("rename")
        os.replace(tmp, link)
    finally:
        if tmp.is_symlink():
            tmp.unlink()
    if durable:
        _at("fsync-parent")
        fsync_dir(link.parent)
