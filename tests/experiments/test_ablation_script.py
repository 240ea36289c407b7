"""experiments/ablation_two_tower.py: options scored on validation only, the final one on test, rows merged."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
import ablation_two_tower  # noqa: E402


def _beauty_file(path: Path, n_users: int = 80, n_items: int = 30) -> Path:
    """A Beauty-format file (``user i1 i2 ...``) of Markov-like sequences."""
    rng = np.random.default_rng(0)
    lines = []
    for u in range(1, n_users + 1):
        item, seq = int(rng.integers(1, n_items + 1)), []
        for _ in range(int(rng.integers(4, 9))):
            seq.append(item)
            item = item % n_items + 1 if rng.random() < 0.8 else int(rng.integers(1, n_items + 1))
        lines.append(" ".join(map(str, [u, *seq])))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_options_are_scored_on_validation_and_only_the_final_on_test(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(ablation_two_tower, "REPORTS", tmp_path)
    data = _beauty_file(tmp_path / "Beauty.txt")
    common = ["--quick", "--data", str(data), "--seeds", "2", "--epochs", "1"]
    ablation_two_tower.main([*common, "--options", "baseline"])
    ablation_two_tower.main([*common, "--options", "bsa", "--final", "bsa"])
    rep = json.loads((tmp_path / "ablation_two_tower_quick.json").read_text())
    assert set(rep["rows"]) == {"baseline", "bsa"}  # the first run's row is kept by the second
    for row in rep["rows"].values():
        assert len(row["runs"]) == 2 and all("test" not in r for r in row["runs"])
        assert row["runs"][0]["seed"] + 1 == row["runs"][1]["seed"]
    assert rep["rows"]["bsa"]["runs"][0]["config"]["mixer"] == "bsa"
    assert rep["rows"]["baseline"]["runs"][0]["config"]["mixer"] == "attention"
    final = rep["final"]
    assert final["option"] == "bsa" and all("test" in r for r in final["runs"])
    assert 0.0 <= final["test"]["ndcg_10"]["mean"] <= 1.0
    md = (tmp_path / "ablation_two_tower_quick.md").read_text()
    assert "Final configuration on test: bsa" in md and "| baseline |" in md and "Commit " in md


def test_seed_offsets_add_runs_to_a_row_and_each_fit_is_written_at_once(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(ablation_two_tower, "REPORTS", tmp_path)
    data = _beauty_file(tmp_path / "Beauty.txt")
    common = ["--quick", "--data", str(data), "--epochs", "1", "--options", "baseline"]
    ablation_two_tower.main([*common, "--seeds", "1"])
    first = json.loads((tmp_path / "ablation_two_tower_quick.json").read_text())["rows"]["baseline"]["runs"]
    fits = []
    real_fit = ablation_two_tower.fit_one

    def counting_fit(*args, **kwargs):  # the report on disk already holds every earlier fit of this run
        rows = json.loads((tmp_path / "ablation_two_tower_quick.json").read_text())["rows"]
        fits.append(len(rows["baseline"]["runs"]))
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(ablation_two_tower, "fit_one", counting_fit)
    ablation_two_tower.main([*common, "--seed-offsets", "2,1"])
    row = json.loads((tmp_path / "ablation_two_tower_quick.json").read_text())["rows"]["baseline"]
    assert fits == [1, 2]
    assert [r["seed"] for r in row["runs"]] == [first[0]["seed"] + k for k in (0, 1, 2)]
    assert row["runs"][0]["val"] == first[0]["val"] and all("commit" in r for r in row["runs"])
    values = [r["val"]["ndcg_10"] for r in row["runs"]]
    assert row["val"]["ndcg_10"]["mean"] == pytest.approx(sum(values) / 3, abs=1e-5)


def test_unknown_options_are_a_clear_error() -> None:
    with pytest.raises(SystemExit, match="unknown"):
        ablation_two_tower.main(["--options", "baseline,nope"])
