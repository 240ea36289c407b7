"""experiments/harness.py: what every report states about its run, and the shared helpers."""

from __future__ import annotations

import re
import shlex
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
    # an argument with spaces or a ';' is quoted, so the command pastes into a shell as it ran
    argv = ["--rules", "adagrad; adagrad decay 0.9", "--seeds", "1"]
    assert shlex.split(harness.ReportRun(argv=argv).meta["command"])[2:] == argv


def test_free_port_and_tree_rss() -> None:
    import os

    port = harness.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # it was free
    assert harness.tree_rss_mb(os.getpid()) > 10 and harness.peak_rss_gb() > 0.01


def test_legacy_runs_split_the_joined_fields_one_run_each_and_claim_no_commit_they_did_not_record() -> None:
    old = {"command": "python a.py; then python a.py --x; then python a.py --y",
           "commit": "?; then 1234567", "machine": "vm", "loadavg": "[1.0]; then [2.0]; then [3.0]"}
    runs = harness.legacy_runs(old)
    assert [r["command"] for r in runs] == ["python a.py", "python a.py --x", "python a.py --y"]
    # the first merge that recorded a commit wrote "?; then <hash>": "?" covers every run before it
    assert ["commit" in r for r in runs] == [False, False, True] and runs[2]["commit"] == "1234567"
    assert [r["machine"] for r in runs] == ["vm"] * 3 and [r["loadavg_start"] for r in runs] == ["[1.0]", "[2.0]",
                                                                                                   "[3.0]"]
    # commits that cannot be matched to runs are not claimed for any
    assert all("commit" not in r for r in harness.legacy_runs({**old, "commit": "1111111; then 2222222"}))
    assert harness.legacy_runs({"runs": [{"command": "c"}]}) == [{"command": "c"}]  # already converted


def test_runs_header_lists_every_merged_run_with_its_command_and_commit() -> None:
    runs = [{"command": "python a.py", "commit": "1234567", "machine": "vm", "loadavg_start": [1.0]},
            {"command": "python a.py --merge"}]
    text = "\n".join(harness.runs_header(runs))
    assert "Merged from 2 runs" in text
    assert "1. Command: `python a.py`. Commit 1234567; machine: vm; load average [1.0] at start." in text
    assert "2. Command: `python a.py --merge`. Commit not recorded; machine: not recorded" in text
    assert harness.runs_header(runs[:1]) == harness.header_lines(runs[0])
