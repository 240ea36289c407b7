"""recsys.atomic: a SIGKILL between any two file-system calls leaves the old or the new content, never neither."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from recsys import atomic


def _points(op: Callable[[], None]) -> list[str]:
    seen: list[str] = []
    atomic._hook = seen.append
    try:
        op()
    finally:
        atomic._hook = lambda point: None
    return seen


def _killed_at(op: Callable[[], None], index: int) -> None:
    """Run ``op`` in a forked child that SIGKILLs itself just before its ``index``-th file-system call."""
    pid = os.fork()
    if pid == 0:  # child: no pytest machinery, no cleanup handlers run after the kill
        calls = iter(range(10_000))

        def hook(point: str) -> None:
            if next(calls) == index:
                os.kill(os.getpid(), signal.SIGKILL)

        atomic._hook = hook
        try:
            op()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def _each_kill(setup: Callable[[], None], op: Callable[[], None], read: Callable[[], str]) -> set[str]:
    """Kill ``op`` before each of its file-system calls in turn; return what a reader found each time."""
    setup()
    n = len(_points(op))
    assert n >= 3
    found = set()
    for i in range(n):
        setup()
        _killed_at(op, i)
        found.add(read())
    return found


def test_write_json_killed_anywhere_leaves_old_or_new(tmp_path: Path) -> None:
    p = tmp_path / "champion.json"

    def setup() -> None:
        p.write_text(json.dumps({"v": "old"}))

    found = _each_kill(setup, lambda: atomic.write_json(p, {"v": "new"}), lambda: json.loads(p.read_text())["v"])
    assert found == {"old", "new"}  # the kill before the rename keeps old, after it keeps new


def test_first_write_killed_leaves_nothing_or_the_whole_file(tmp_path: Path) -> None:
    p = tmp_path / "marker.done"

    def setup() -> None:
        p.unlink(missing_ok=True)

    def read() -> str:
        return p.read_text() if p.exists() else "absent"

    assert _each_kill(setup, lambda: atomic.write_text(p, "complete"), read) == {"absent", "complete"}


def _fill(d: Path, tag: str) -> None:
    for i in range(3):
        (d / f"f{i}.txt").write_text(f"{tag}-{i}")
    (d / "sub").mkdir()
    np.save(d / "sub" / "a.npy", np.full(4, 1.0 if tag == "new" else 0.0))


def _dir_content(d: Path) -> str:
    atomic.read_dir(d)
    if not d.exists():
        return "absent"
    texts = {(d / f"f{i}.txt").read_text().split("-")[0] for i in range(3)}
    arr = np.load(d / "sub" / "a.npy")
    texts.add("new" if arr[0] == 1.0 else "old")
    assert len(texts) == 1, f"a mix of old and new files: {texts}"
    leftovers = [p.name for p in d.parent.iterdir() if p.name.startswith(".")]
    assert not leftovers, leftovers  # read_dir removed the aside / temporary folders
    return texts.pop()


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2-exchange", "move-aside"])
def test_replace_dir_killed_anywhere_leaves_old_or_new(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        exchange: bool) -> None:
    if not exchange:
        monkeypatch.setattr(atomic, "exchange", lambda a, b: False)
    elif not atomic.exchange(*_two_dirs(tmp_path)):
        pytest.skip("this kernel or file system has no renameat2(RENAME_EXCHANGE)")
    d = tmp_path / "bundle"

    def setup() -> None:
        for p in tmp_path.iterdir():
            if p.name != "pair":
                atomic.shutil.rmtree(p)
        d.mkdir()
        _fill(d, "old")

    def op() -> None:
        with atomic.atomic_dir(d) as tmp:
            _fill(tmp, "new")

    points = _points(lambda: (setup(), op()))
    assert ("exchange" in points) and (("move-aside" in points) != exchange)
    assert _each_kill(setup, op, lambda: _dir_content(d)) == {"old", "new"}


def _two_dirs(tmp: Path) -> tuple[Path, Path]:
    a, b = tmp / "pair" / "a", tmp / "pair" / "b"
    a.mkdir(parents=True), b.mkdir()
    return a, b


def test_symlink_switch_killed_anywhere_points_at_old_or_new(tmp_path: Path) -> None:
    for v in ("v1", "v2"):
        (tmp_path / v).mkdir()
    link = tmp_path / "current"

    def setup() -> None:
        link.unlink(missing_ok=True)
        os.symlink("v1", link)

    assert _each_kill(setup, lambda: atomic.replace_symlink(link, "v2"), lambda: os.readlink(link)) == {"v1", "v2"}


def test_a_failing_writer_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    p = tmp_path / "vectors.npy"
    np.save(p, np.zeros(3))
    with pytest.raises(RuntimeError), atomic.atomic_path(p) as tmp:
        np.save(tmp, np.ones(3))
        raise RuntimeError("writer failed")
    assert np.load(p).sum() == 0 and sorted(x.name for x in tmp_path.iterdir()) == ["vectors.npy"]
    with atomic.atomic_path(p) as tmp:
        assert tmp.name.endswith(".npy")  # np.save keeps the name as given
        np.save(tmp, np.ones(3))
    assert np.load(p).sum() == 3


def test_move_dir_never_replaces(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(FileExistsError, match="never replaces"):
        atomic.move_dir(tmp_path / "a", tmp_path / "b")
    atomic.move_dir(tmp_path / "a", tmp_path / "c")
    assert (tmp_path / "c").is_dir() and not (tmp_path / "a").exists()
