"""Progress bars and lines and the time budget of long training (pipelines.progress), on a fake clock."""

from __future__ import annotations

import io

import pytest

from pipelines.progress import chain, epoch_progress, progress, time_budget, total_epochs
from recsys.models.base import StopTraining
from recsys.models.item2vec import Item2VecConfig


def test_a_line_per_epoch_with_the_time_left() -> None:
    lines: list[str] = []
    cb = epoch_progress("als", 10, lines.append, clock=iter([0.0, 30.0, 90.0, 3700.0]).__next__)
    cb(1, {"loss": 0.5, "val_ndcg_10": 0.04, "epoch_seconds": 30.0})
    cb(2, {"loss": 0.25, "lr_backoffs": 1.0})
    cb(3, {})
    assert lines == [
        "  [als] epoch 1/10  loss 0.5000  val_ndcg_10 0.0400  30.0 s/epoch, at most 4 min 30 s left",
        "  [als] epoch 2/10  loss 0.2500  lr halved 1x  45.0 s/epoch, at most 6 min 0 s left",
        "  [als] epoch 3/10  1233.3 s/epoch, at most 2 h 23 min left",
    ]
    unknown: list[str] = []
    epoch_progress("pop", None, unknown.append, clock=iter([0.0, 1.0]).__next__)(1, {})
    assert unknown == ["  [pop] epoch 1/?  1.0 s/epoch"]


def test_the_budget_stops_after_the_epoch_that_reaches_it() -> None:
    stop = time_budget(1.0, clock=iter([0.0, 30.0, 59.9, 61.0]).__next__)
    stop(1, {})
    stop(2, {})
    with pytest.raises(StopTraining, match=r"time budget of 1 min reached after epoch 3 \(1.0 min\)"):
        stop(3, {})


def test_chain_calls_each_in_order_and_total_epochs_reads_the_config() -> None:
    seen: list[str] = []
    chain(lambda e, m: seen.append("a"), None, lambda e, m: seen.append("b"))(1, {})
    assert seen == ["a", "b"]
    assert total_epochs(Item2VecConfig(epochs=7)) == 7 and total_epochs(None) is None
    from recsys.models.two_tower import TwoTowerConfig

    assert total_epochs(TwoTowerConfig(epochs=25, warm_epochs=6)) == 25  # cold: warm_epochs does not apply
    assert total_epochs(TwoTowerConfig(epochs=25, warm_epochs=6, init_weights="w")) == 6


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_over_the_epochs_and_a_log_gets_lines() -> None:
    term, lines = _Terminal(), []
    bar = progress("tt", 4, lines.append, stream=term)
    bar(1, {"loss": 2.5, "val_ndcg_10": 0.0312})
    bar(2, {"loss": 2.0, "val_ndcg_10": 0.0401})
    bar.close()
    shown = term.getvalue()
    assert lines == []  # the bar replaces the lines
    assert "[tt]" in shown and "2/4" in shown and "val_ndcg_10=0.0401" in shown and "loss=2.0000" in shown
    log = io.StringIO()  # not a terminal: a cron log
    cb = progress("tt", 4, lines.append, stream=log)
    cb(1, {"loss": 2.5})
    cb.close()
    assert log.getvalue() == "" and len(lines) == 1 and lines[0].startswith("  [tt] epoch 1/4  loss 2.5000")
