"""Drives `recsys pipeline run` on small tmpfs file systems that fill up; run by test_disk_full.py.

Runs as root of its own user and mount namespace (``unshare -rm``), where it mounts two tmpfs: one for the
pipeline's workdir, one for its publish root. Usage: ``disk_full_driver.py OUT_DIR``; prints one JSON
object: for each step (ingest, train, publish) the failing run's exit code and message, what ``current``
pointed at before and after, whether the published bundle still answered the same, and the rerun's exit
code and champion once the space was freed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

RECSYS = str(Path(sys.executable).with_name("recsys"))
SIZE = "48m"
CONFIG = """[pipeline]
name = "full"
workdir = "{work}/wd"
bundles = "{pub}/pub"
keep = 3
[data]
synthetic_users = 3000
synthetic_items = 2000
synthetic_events = 60000
[models.als]
factors = 64
iterations = 2
[models.pop]
name = "popularity"
"""


def mount(d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(d)], check=True)


def fill(d: Path, leave: int) -> Path:
    """Write a filler file until the file system is full, then give back ``leave`` bytes."""
    filler = d / "filler"
    with open(filler, "wb", buffering=0) as f:
        chunk = b"\0" * (1 << 20)
        try:
            while True:
                f.write(chunk)
        except OSError:
            pass
    os.truncate(filler, max(filler.stat().st_size - leave, 0))
    return filler


def run(cfg: Path, fault: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "RECSYS_FAULT_POINT": fault} if fault else dict(os.environ)
    return subprocess.run([RECSYS, "pipeline", "run", "--config", str(cfg), "--no-samples"], env=env,
                          capture_output=True, text=True, timeout=600)


def answer(pub: Path) -> list:
    from serving import Recommender

    rec = Recommender.load(pub / "pub")
    return [rec.recommend(u, k=5).items for u in rec.bundle.users.ids[:5].tolist()]


def champion(work: Path) -> str:
    return json.loads((work / "wd" / "champion.json").read_text())["run_id"]


def main() -> None:
    out = Path(sys.argv[1])
    work, pub = out / "work-fs", out / "pub-fs"
    mount(work)
    mount(pub)
    cfg = out / "full.toml"
    cfg.write_text(CONFIG.format(work=work, pub=pub))
    first = run(cfg)
    result: dict = {"first_exit": first.returncode, "first_stderr": first.stderr[-2000:]}
    # step -> (fault point the run is killed at first, so that a rerun resumes at that step; disk filled)
    cases = {"ingest": ("", work, 256 << 10), "train": ("trained-als", work, 256 << 10),
             "publish": ("gated", pub, 0)}
    for step, (fault, disk, leave) in cases.items():
        before, served = os.readlink(pub / "pub" / "current"), answer(pub)
        if fault:
            killed = run(cfg, fault)
            assert killed.returncode == -9, (step, killed.returncode, killed.stderr[-2000:])
        filler = fill(disk, leave)
        failed = run(cfg)
        after = os.readlink(pub / "pub" / "current")
        still = answer(pub) == served
        filler.unlink()
        rerun = run(cfg)
        result[step] = {"exit": failed.returncode, "stderr": failed.stderr[-3000:], "current_before": before,
                        "current_after": after, "same_answers": still, "rerun_exit": rerun.returncode,
                        "rerun_stderr": rerun.stderr[-2000:], "disk": str(disk),
                        "champion": champion(work), "current_now": os.readlink(pub / "pub" / "current")}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
