"""experiments/ablation_two_tower.py: options scored on validation only, the final one on test, rows merged."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
import ablation_two_tower  # noqa: E402
from beauty_baselines import read_pairs  # noqa: E402


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
    final = rep["finals"]["bsa"]
    assert final["option"] == "bsa" and all("test" in r for r in final["runs"])
    assert 0.0 <= final["test"]["ndcg_10"]["mean"] <= 1.0
    md = (tmp_path / "ablation_two_tower_quick.md").read_text()
    assert "## Final configurations on test" in md and "| baseline |" in md and "Commit " in md
    seeds = ", ".join(str(r["seed"]) for r in rep["rows"]["baseline"]["runs"])
    assert f"| {seeds} |" in md  # each row lists the seeds it was fitted with; the header names none
    assert "; seeds " not in md


def _pairs_file(path: Path, n_users: int = 60, n_items: int = 25) -> Path:
    """A Games-format file: ``user item`` a line, grouped by user in time order."""
    rng = np.random.default_rng(1)
    lines = [f"{u} {int(i)}" for u in range(1, n_users + 1)
             for i in (rng.integers(1, n_items + 1) + np.arange(int(rng.integers(4, 8)))) % n_items + 1]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_read_pairs_keeps_file_order_as_time_and_can_keep_the_first_users(tmp_path: Path) -> None:
    path = tmp_path / "pairs.txt"
    path.write_text("1 5\n1 3\n2 4\n3 1\n3 2\n")
    events, n_users, n_items = read_pairs(path)
    assert (n_users, n_items) == (3, 5)
    assert events.rows() == [(1, 5, 0), (1, 3, 1), (2, 4, 2), (3, 1, 3), (3, 2, 4)]
    events, n_users, n_items = read_pairs(path, max_users=2)
    assert events.rows() == [(1, 5, 0), (1, 3, 1), (2, 4, 2)] and (n_users, n_items) == (2, 5)


def test_games_scores_several_finals_on_test_into_its_own_report_and_rewrite_reproduces_it(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(ablation_two_tower, "REPORTS", tmp_path)
    data = _pairs_file(tmp_path / "Video.txt")
    args = ["--quick", "--set", "games", "--data", str(data), "--seeds", "1", "--epochs", "1"]
    ablation_two_tower.main([*args, "--final", "baseline,bsa"])
    assert not (tmp_path / "ablation_two_tower_quick.json").exists()  # Beauty's report is not touched
    rep = json.loads((tmp_path / "ablation_two_tower_games_quick.json").read_text())
    assert rep["set"] == "games" and rep["rows"] == {} and set(rep["finals"]) == {"baseline", "bsa"}
    for f in rep["finals"].values():
        assert len(f["runs"]) == 1 and 0.0 <= f["runs"][0]["test"]["ndcg_10"] <= 1.0
    md = tmp_path / "ablation_two_tower_games_quick.md"
    text = md.read_text()
    assert "unchanged, on Games" in text and "beside today's tower" in text
    assert "| bsa |" in text and "| baseline |" in text
    md.unlink()
    ablation_two_tower.main(["--quick", "--set", "games", "--rewrite"])
    assert md.read_text() == text


def test_a_report_with_the_old_single_final_keeps_it_as_one_of_the_finals(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(ablation_two_tower, "REPORTS", tmp_path)
    run = {"seed": 42, "fit_s": 10.0, "epochs": 3, "val": {"hr_10": 0.2, "ndcg_10": 0.1},
           "test": {"hr_10": 0.18, "ndcg_10": 0.09}}
    summary = {m: {"mean": run["test"][m], "sd": 0.0} for m in ("hr_10", "ndcg_10")}
    old = {"meta": {"command": "python x", "commit": "abc1234", "seeds": [0, 1, 2]}, "base": "transformer",
           "rows": {}, "final": {"option": "bsa", "overrides": {"mixer": "bsa"}, "runs": [run], "val": summary,
                                 "test": summary, "device": "cpu", "commit": "abc1234"}}
    (tmp_path / "ablation_two_tower.json").write_text(json.dumps(old))
    ablation_two_tower.main(["--rewrite"])
    rep = json.loads((tmp_path / "ablation_two_tower.json").read_text())
    assert set(rep["finals"]) == {"bsa"} and "final" not in rep
    md = (tmp_path / "ablation_two_tower.md").read_text()
    assert "| bsa | {'mixer': 'bsa'} | 0.0900 ± 0.0000 | 0.1800 ± 0.0000 |" in md and "; seeds" not in md


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


def test_unknown_options_and_a_missing_report_to_rewrite_are_clear_errors(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(SystemExit, match="unknown"):
        ablation_two_tower.main(["--options", "baseline,nope"])
    with pytest.raises(SystemExit, match="unknown"):
        ablation_two_tower.main(["--final", "nope"])
    monkeypatch.setattr(ablation_two_tower, "REPORTS", tmp_path)
    with pytest.raises(SystemExit, match="does not exist"):
        ablation_two_tower.main(["--set", "games", "--rewrite"])
