"""The `recsys` command line: data commands on small files, help texts, one-paragraph errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from recsys.prepare.sequences import Sequences

runner = CliRunner()


def _log(path: Path, bad_rows: int = 0) -> Path:
    rows = ["user,item,timestamp"]
    rows += [f"u{u},i{(u * 3 + j) % 13},{1_600_000_000 + 60 * (u * 10 + j)}" for u in range(12) for j in range(6)]
    rows += rows[1:3]  # exact duplicates of the first two events
    rows += [f",i{k},1600000000" for k in range(bad_rows)]  # null user -> quarantined
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("command", [[], ["data"], ["data", "ingest"], ["data", "split"], ["data", "sequences"],
                                     ["data", "generate"], ["data", "download"], ["data", "stats"], ["train"],
                                     ["experiments", "compare"], ["pipeline", "run"], ["pipeline", "rollback"],
                                     ["serve"], ["export"]])
def test_every_command_has_help(command: list[str]) -> None:
    res = runner.invoke(app, [*command, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage" in res.output and len(res.output) > 200
    if command == ["export"]:
        assert "--catalogue" in res.output and "without retraining" in res.output


def test_ingest_writes_accepted_rows_quarantine_and_a_reconciling_report(tmp_path: Path) -> None:
    src = _log(tmp_path / "log.csv", bad_rows=3)
    res = runner.invoke(app, ["data", "ingest", str(src), "--out", str(tmp_path / "out"), "--max-bad-fraction", "0.5"])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["rows_read"] == 12 * 6 + 2 + 3
    assert report["quarantined"] == 3 and report["duplicates_removed"] == 2
    assert report["rows_read"] == report["accepted"] + report["quarantined"] + report["duplicates_removed"]
    frame = pl.read_parquet(tmp_path / "out" / "interactions.parquet")
    assert frame.height == report["accepted"]
    quarantine = pl.read_parquet(tmp_path / "out" / "quarantine.parquet")
    assert quarantine.height == 3 and set(quarantine["reason"]) == {"empty id"}
    assert "read 77" in res.output


def test_split_then_sequences(tmp_path: Path) -> None:
    src = _log(tmp_path / "log.csv")
    prepared = tmp_path / "prep"
    res = runner.invoke(app, ["data", "split", str(src), "--out", str(prepared)])
    assert res.exit_code == 0, res.output
    assert "12 users, 13 items" in res.output
    res = runner.invoke(app, ["data", "sequences", str(prepared), "--out", str(tmp_path / "seq")])
    assert res.exit_code == 0, res.output
    seqs = Sequences.load(tmp_path / "seq")
    assert seqs.n_rows == 13 and seqs.lengths()[0] == 0  # row 0 = padding user
    assert int(seqs.lengths().sum()) == json.loads((prepared / "report.json").read_text())["n_events"]
    # within every row, timestamps never go backwards
    ts = np.asarray(seqs.timestamps)
    for r in range(1, seqs.n_rows):
        assert np.all(np.diff(ts[seqs.offsets[r]:seqs.offsets[r + 1]]) >= 0)


def test_stats_prints_counts(tmp_path: Path) -> None:
    res = runner.invoke(app, ["data", "stats", str(_log(tmp_path / "log.csv"))])
    assert res.exit_code == 0, res.output
    assert "users       12" in res.output and "items       13" in res.output


def test_generate_writes_parquet_parts(tmp_path: Path) -> None:
    res = runner.invoke(app, ["data", "generate", "--out", str(tmp_path / "syn"), "--users", "50", "--items", "30",
                              "--events", "2000", "--seed", "1"])
    assert res.exit_code == 0, res.output
    frame = pl.read_parquet(tmp_path / "syn" / "interactions" / "*.parquet")
    assert frame.height == 2000 and frame["user"].n_unique() == 50


@pytest.mark.parametrize("args, message", [
    (["data", "ingest", "missing.csv"], "missing.csv"),
    (["data", "sequences", "not-a-folder"], "not a prepared data folder"),
    (["train", "--config", "nope.toml"], "nope.toml"),
    (["pipeline", "run", "--only", "bake"], "not a step"),
])
def test_bad_input_is_one_paragraph_not_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    args: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
