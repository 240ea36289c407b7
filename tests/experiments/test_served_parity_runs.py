"""experiments/served_parity.py's run bookkeeping: every row names the run that checked it, and a run no row names
any more leaves the report."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "experiments"))
import served_parity  # noqa: E402


def test_a_report_from_before_the_harness_gets_one_run_per_command_and_commit_of_its_rows() -> None:
    old = {"command": "python b", "commit": "2222222", "machine": "vm",
           "models": {"als": {"command": "python a", "commit": "1111111"},
                      "bpr": {"command": "python a", "commit": "1111111"},
                      "item2vec": {"command": "python b", "commit": "2222222"}}}
    report = served_parity.with_runs(old)
    assert report["runs"] == [{"command": "python a", "commit": "1111111", "machine": "vm"},
                              {"command": "python b", "commit": "2222222", "machine": "vm"}]
    assert [r["run"] for r in report["models"].values()] == [1, 1, 2] and "command" not in report
    assert served_parity.with_runs(report) is report


def test_runs_no_row_names_are_dropped_and_the_rest_renumbered() -> None:
    report = {"runs": [{"command": "a"}, {"command": "b"}, {"command": "c"}],
              "models": {"als": {"run": 3}, "bpr": {"run": 2}}}
    out = served_parity.only_used_runs(report)
    assert out["runs"] == [{"command": "b"}, {"command": "c"}]
    assert out["models"] == {"als": {"run": 2}, "bpr": {"run": 1}}
