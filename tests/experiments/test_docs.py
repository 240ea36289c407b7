"""Figures cannot drift from their reports: the generated docs match a regeneration, and every report names the
command and the commit that produced it."""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "experiments"))
import make_docs  # noqa: E402

REPORTS = REPO / "experiments" / "reports"
COMMIT = re.compile(r"commits?:?\s*`?[0-9a-f]{7,40}\b", re.I)
COMMAND = re.compile(r"`(?:python|torchrun|recsys)\b[^`]*`")
#: reports written before their scripts recorded the commit; each leaves this list when it is rerun
NO_COMMIT_YET: set[str] = set()
NO_COMMAND_YET: set[str] = set()


def test_the_docs_and_readme_blocks_match_a_regeneration_from_the_reports() -> None:
    assert make_docs.main(["--check"]) == 0, "run `python experiments/make_docs.py` and commit its output"


def test_every_report_names_its_command_and_commit() -> None:
    reports = {p.stem: p.read_text() for p in REPORTS.glob("*.md")}
    assert len(reports) > 20
    missing_commit = {name for name, text in reports.items() if not COMMIT.search(text)}
    missing_command = {name for name, text in reports.items() if not COMMAND.search(text)}
    # a new report must name both; an old one leaves the list once rerun (the list only shrinks)
    assert missing_commit == NO_COMMIT_YET & set(reports), sorted(missing_commit ^ (NO_COMMIT_YET & set(reports)))
    assert missing_command == NO_COMMAND_YET & set(reports), sorted(missing_command ^ NO_COMMAND_YET)


def _runs(record: object) -> list[dict]:
    """Every run record (the harness's ``ReportRun.meta``: command, commit, machine) in a report's JSON."""
    if isinstance(record, dict):
        own = [record] if {"command", "commit", "machine"} <= record.keys() else []
        return own + [m for v in record.values() for m in _runs(v)]
    return [m for v in record for m in _runs(v)] if isinstance(record, list) else []


def test_every_report_records_its_runs_command_commit_and_machine_in_its_json() -> None:
    import json

    for path in REPORTS.glob("*.json"):
        runs = _runs(json.loads(path.read_text()))
        assert runs, f"{path.name}: no run record; write it through experiments/harness.py's ReportRun"
        assert all(re.fullmatch(r"[0-9a-f]{7,40}(\+dirty)?", str(m["commit"])) for m in runs), path.name
        # the harness's keys (a report from before it is regenerated through the script's --rewrite)
        assert not any("loadavg" in m for m in runs), f"{path.name}: rewrite it through the harness"


def test_the_readme_is_a_users_guide_of_at_most_250_lines() -> None:
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move details to docs/guide.md"
