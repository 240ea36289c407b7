"""experiments/harness.py: what every report states about its run, and the shared helpers."""

from __future__ import annotations

import re
import socket
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "experiments"))
import harness  # noqa: E402


def test_a_report_run_records_command_commit_machine_load_seeds_and_wall_time() -> None:
    with harness.ReportRun(seeds=[42, 43], argv=["--sets", "beauty"]) as run:
        pass
    m = run.meta
    assert m["command"].startswith("python ") and m["command"].endswith(" --sets beauty")
    assert re.fullmatch(r"[0-9a-f]{7,40}", m["commit"]) and isinstance(m["dirty"], bool)
    assert "cores" in m["machine"] and "bf16" in m["machine"]
    assert len(m["loadavg_start"]) == len(m["loadavg_end"]) == 3 and m["seconds"] >= 0 and m["seeds"] == [42, 43]
    header = "\n".join(run.header())
    assert f"Command: `{m['command']}`" in header and f"Commit {m['commit']}" in header and "seeds 42, 43" in header
    # the report test's patterns find both in a header written this way
    assert re.search(r"commits?:?\s*`?[0-9a-f]{7,40}\b", header, re.I) and re.search(r"`python\b[^`]*`", header)


def test_free_port_and_tree_rss() -> None:
    import os

    port = harness.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # it was free
    assert harness.tree_rss_mb(os.getpid()) > 10 and harness.peak_rss_gb() > 0.01
