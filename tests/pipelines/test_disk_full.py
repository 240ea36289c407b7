"""The disk filling up during ingest, training and publish: a clear error naming the file system (exit 6),
the champion still served, and a rerun that publishes once space is back.

Real file systems fill up: the driver (disk_full_driver.py) mounts two small tmpfs in its own user and
mount namespace (``unshare -rm``), one for the pipeline's workdir and one for its publish root, and fills
one with a file before the step under test runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.runstate import disk_full, disk_full_message

DRIVER = Path(__file__).with_name("disk_full_driver.py")
REPO = Path(__file__).resolve().parents[2]


def _namespaces_work() -> bool:
    if sys.platform != "linux" or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


needs_namespaces = pytest.mark.skipif(
    not _namespaces_work(), reason="needs Linux `unshare -rm` (user + mount namespaces) to mount a small tmpfs "
    "without privileges; this kernel or container does not allow it")


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("disk-full")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{out / 'mlruns.db'}",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("RECSYS_FAULT_POINT", None)
    done = subprocess.run(["unshare", "-rm", sys.executable, str(DRIVER), str(out)], cwd=out, env=env,
                          capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["first_exit"] == 0, result["first_stderr"]
    return result


@pytest.mark.slow
@needs_namespaces
@pytest.mark.parametrize("step", ["ingest", "train", "publish"])
def test_a_full_disk_stops_the_step_clearly_and_a_rerun_publishes(outcome: dict, step: str) -> None:
    r = outcome[step]
    assert r["exit"] == 6, r["stderr"]
    # the message names the step, the file system (its mount point) and says what to do
    assert f"step {step}: the disk is full: the file system mounted at {r['disk']} " in r["stderr"], r["stderr"]
    assert "MiB free" in r["stderr"] and "free space there and rerun" in r["stderr"]
    # nothing switched; the published bundle answers as before
    assert r["current_after"] == r["current_before"] and r["same_answers"]
    # space back: the rerun resumes and publishes this run's model
    assert r["rerun_exit"] == 0, r["rerun_stderr"]
    assert r["current_now"] != r["current_before"] and r["current_now"].endswith(r["champion"])


def test_disk_full_is_recognised_through_wrappers_and_names_the_destination(tmp_path: Path) -> None:
    import errno
    import sqlite3

    assert disk_full(OSError(errno.ENOSPC, "No space left on device", "/x"))
    assert disk_full(sqlite3.OperationalError("database or disk is full"))
    assert disk_full(RuntimeError("polars: No space left on device (os error 28)"))
    assert not disk_full(OSError(errno.EACCES, "Permission denied", "/x"))
    try:
        try:
            raise OSError(errno.EDQUOT, "Disk quota exceeded", str(tmp_path / "a.npy"))
        except OSError as inner:
            raise ValueError("saving the model failed") from inner
    except ValueError as wrapped:
        assert disk_full(wrapped)
        message = disk_full_message("train", Path("/elsewhere"), wrapped)
    assert message.startswith("step train: the disk is full: the file system mounted at ")
    assert f"(holding {tmp_path / 'a.npy'})" in message and "MiB free of" in message
    copy = shutil.Error([(str(tmp_path / "src"), str(tmp_path / "dst"), "[Errno 28] No space left on device")])
    assert disk_full(copy) and f"(holding {tmp_path / 'dst'})" in disk_full_message("publish", Path("/"), copy)
