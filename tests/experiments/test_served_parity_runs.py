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


def test_the_item2vec_default_row_fits_the_library_default() -> None:
    import dataclasses

    from recsys.models.item2vec import Item2VecConfig

    base, changes = served_parity.VARIANTS["item2vec_default"]
    cfg = served_parity.load_run_config(served_parity.CONFIGS / f"beauty_{base}.toml")
    row = Item2VecConfig(**{**cfg.model, **changes})
    run_settings = {"seed", "workers", "num_threads"}  # how a fit runs, not what it learns
    differ = {f.name for f in dataclasses.fields(Item2VecConfig)
              if getattr(row, f.name) != getattr(Item2VecConfig(), f.name)} - run_settings
    assert differ == set(), {k: (getattr(row, k), getattr(Item2VecConfig(), k)) for k in differ}
    assert "item2vec_default" in served_parity.MODELS_IN_TABLE
