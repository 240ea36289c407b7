"""experiments/item2vec_terciles.py: validation rows grouped by their target's training count."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "experiments"))
import item2vec_terciles  # noqa: E402

from recsys.prepare.sequences import Sequences  # noqa: E402


def test_rows_are_grouped_by_their_targets_training_count_rarest_first() -> None:
    # training counts: item 1 x5, item 2 x3, item 3 x1, item 4 x0 (unseen), item 5 x2
    train = Sequences.from_lists([[1, 1, 2, 1, 3], [1, 2, 5], [1, 2, 5]], n_items=5)
    # seven validation rows, one without a target (left out of every group)
    targets = Sequences.from_lists([[2], [4], [1], [], [5], [3], [1]], n_items=5)
    groups = item2vec_terciles.tercile_rows(train, targets)
    # counts of the targets by row: 3, 0, 5, -, 2, 1, 5 -> order 1 (0), 5 (1), 4 (2), 0 (3), 2 (5), 6 (5)
    assert [g.tolist() for g in groups] == [[1, 5], [4, 0], [2, 6]]
    assert sum(map(len, groups)) == 6


def test_bad_overrides_are_refused_with_the_fix() -> None:
    with pytest.raises(SystemExit, match="JSON object of Item2VecConfig"):
        item2vec_terciles.main(["--ours", "{'adagrad_eps': 1}"])
    with pytest.raises(SystemExit, match="JSON object of Item2VecConfig"):
        item2vec_terciles.main(["--ours", '{"no_such_field": 1}'])
    with pytest.raises(SystemExit, match="JSON object of Item2VecConfig"):
        item2vec_terciles.main(["--ours", '{"adagrad_eps": 0}'])
    with pytest.raises(SystemExit, match="run without --rewrite first"):
        item2vec_terciles.main(["--rewrite", "--report-name", "no_such_terciles_report"])
