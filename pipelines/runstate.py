"""Run directories, step completion markers, the overlap lock and the documented exit codes.

A pipeline run lives in ``<workdir>/runs/<run_id>/``; each finished step leaves
``<step>.done`` (JSON: when, outputs) there, written atomically after the step's outputs. A rerun
after a crash reopens the newest unfinished run and starts at its first step without a marker.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import os
import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys import atomic


class ExitCode:
    """Process exit codes of ``recsys pipeline run`` (documented in the README)."""

    OK = 0  # finished; the candidate was published (or the plan was printed with --dry-run)
    ERROR = 1  # an unexpected error; the champion stays published; rerun to resume
    USAGE = 2  # bad config or command line
    DATA_CHECK_FAILED = 3  # ingest checks failed (bad-row fraction, row-count drop); nothing trained
    GATE_REJECTED = 4  # the candidate was worse than the champion beyond the tolerance; champion kept
    NO_MODEL = 5  # every configured model failed to train (or the one to publish did); champion kept
    DISK_FULL = 6  # a step ran out of disk space; the champion stays published; free space and rerun to resume
    LOCKED = 75  # another run holds the lock (EX_TEMPFAIL); try again later


class PipelineExit(Exception):
    """Ends a pipeline run with a documented exit code and a one-paragraph message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class LockedError(PipelineExit):
    def __init__(self, message: str) -> None:
        super().__init__(ExitCode.LOCKED, message)


@contextmanager
def run_lock(workdir: Path) -> Iterator[None]:
    """Hold ``<workdir>/pipeline.lock`` (flock) for the whole run; a second run gets :class:`LockedError`.

    flock is released by the kernel when the process dies, so a crashed run never leaves a stale lock.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "pipeline.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = path.read_text().strip() or "unknown"
            raise LockedError(f"another pipeline run holds {path} ({holder}); runs never overlap, so this one "
                              "exits. Wait for it to finish (or kill it) and run again.") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} since {now()}".encode())
        yield
    finally:
        os.close(fd)


FAULT_ENV = "RECSYS_FAULT_POINT"


#: what a full disk says through other layers than OSError (polars/Rust, SQLite, C++ writers)
_FULL_WORDS = ("no space left on device", "os error 28", "database or disk is full", "disk quota exceeded")


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from or during) reports a full disk or quota."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(w in str(e).lower() for w in _FULL_WORDS):
            return True
        e = e.__cause__ or e.__context__
    return False


def mount_point(path: str | Path) -> Path:
    """The mount point of the file system holding ``path`` (its nearest existing ancestor)."""
    p = Path(path).absolute()
    while not p.exists():
        p = p.parent
    while not os.path.ismount(p):
        p = p.parent
    return p


def _failed_path(exc: BaseException) -> str | None:
    """The path whose write found the disk full: an ENOSPC/EDQUOT error's file name, or the destination of a
    copy (``shutil.Error`` lists ``(src, dst, why)``) that failed so."""
    e: BaseException | None = exc
    for _ in range(8):
        if e is None:
            return None
        if isinstance(e, shutil.Error) and e.args and isinstance(e.args[0], list):
            for entry in e.args[0]:
                if len(entry) == 3 and any(w in str(entry[2]).lower() for w in _FULL_WORDS):
                    return str(entry[1])
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT) and e.filename:
            return os.fsdecode(e.filename)
        e = e.__cause__ or e.__context__
    return None


def disk_full_message(step: str, where: Path, exc: BaseException) -> str:
    """A full disk during ``step``, named with its file system and free space: the file system of the path
    the failed write names, else of ``where`` (the run folder)."""
    where = Path(_failed_path(exc) or where)
    mount = mount_point(where)
    usage = shutil.disk_usage(mount)
    return (f"step {step}: the disk is full: the file system mounted at {mount} (holding {where}) has "
            f"{usage.free / 2**20:.1f} MiB free of {usage.total / 2**20:.1f} MiB ({type(exc).__name__}: "
            f"{str(exc)[:300]}); free space there and rerun the same command: the run resumes at {step}; "
            "the champion stays published")


def fault_point(name: str) -> None:
    """Crash-injection hook: SIGKILL this process when ``$RECSYS_FAULT_POINT == name``.

    The crash tests use it to kill a run at an exact point (mid-training, mid-export); unset,
    it does nothing.
    """
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class RunDir:
    """One pipeline run's folder and its step markers."""

    path: Path

    @property
    def run_id(self) -> str:
        return self.path.name

    def marker(self, step: str) -> Path:
        return self.path / f"{step}.done"

    def is_done(self, step: str) -> bool:
        return self.marker(step).is_file()

    def mark_done(self, step: str, **info: Any) -> None:
        atomic.write_json(self.marker(step), {"finished_at": now(), **info})

    def end(self, outcome: str, **info: Any) -> None:
        """Mark the run ended (published, rejected, data check failed): the next run starts fresh."""
        atomic.write_json(self.path / "ended.json", {"outcome": outcome, "at": now(), **info})

    def info(self, step: str) -> dict[str, Any]:
        return json.loads(self.marker(step).read_text())

    def failed_models(self) -> dict[str, str]:
        """``{label: error}`` of the models whose training failed in this run (``train-<label>.done`` with
        ``failed``)."""
        out = {}
        for marker in sorted(self.path.glob("train-*.done")):
            info = json.loads(marker.read_text())
            if info.get("failed"):
                out[marker.name[len("train-") : -len(".done")]] = info.get("error", "")
        return out

    def clear_from(self, steps: list[str]) -> None:
        """Forget that ``steps`` ran (``train`` includes every per-model ``train-<label>`` marker)."""
        for s in steps:
            self.marker(s).unlink(missing_ok=True)
            if s == "train":
                for m in self.path.glob("train-*.done"):
                    m.unlink()

    def state(self) -> dict[str, Any]:
        p = self.path / "state.json"
        return json.loads(p.read_text()) if p.is_file() else {}

    def update_state(self, **values: Any) -> None:
        atomic.write_json(self.path / "state.json", {**self.state(), **values})


def open_run(workdir: Path, reuse_latest: bool = False) -> tuple[RunDir, bool]:
    """The newest run that has not ended (resumed), or a fresh one; returns (run, resumed).

    ``reuse_latest`` reopens the newest run even when it ended (``--from`` / ``--only``).
    """
    runs = workdir / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    existing = sorted(p for p in runs.iterdir() if p.is_dir() and not p.name.startswith("."))
    if existing:
        last = RunDir(existing[-1])
        if reuse_latest:
            (last.path / "ended.json").unlink(missing_ok=True)
            return last, True
        if not (last.path / "ended.json").is_file():
            return last, True
    run_id = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = runs / run_id
    path.mkdir()
    return RunDir(path), False


def previous_runs(workdir: Path, before: str) -> list[RunDir]:
    """Finished runs older than ``before``, newest first."""
    runs = workdir / "runs"
    if not runs.is_dir():
        return []
    found = [RunDir(p) for p in runs.iterdir() if p.is_dir() and p.name < before and (p / "ended.json").is_file()]
    return sorted(found, key=lambda r: r.run_id, reverse=True)
