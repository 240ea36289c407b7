"""Search spaces as plain data: the one-parameter moves a coordinate search takes."""

from __future__ import annotations

import pytest

from recsys.search_space import Choice, Float, Int, moves


def test_a_log_range_doubles_and_halves_within_its_bounds() -> None:
    assert moves(Int(3, 20, log=True), 8) == [16, 4]
    assert moves(Int(3, 20, log=True), 17) == [20, 9]  # 34 clipped; 8.5 rounds half to even from 3
    assert moves(Int(5, 20, log=True), 20) == [10]  # at the top: only down
    assert moves(Float(0.025, 0.1, log=True), 0.1) == [0.05]
    assert moves(Float(0.025, 0.1, log=True), 0.03) == [0.06, 0.025]


def test_a_linear_range_steps_a_sixth_of_its_width_on_its_grid() -> None:
    assert moves(Float(-0.5, 1.0), 0.5) == [0.75, 0.25]
    assert moves(Float(-0.5, 1.0), -0.4) == [-0.15, -0.5]
    assert moves(Int(0, 12, step=2), 6) == [8, 4]
    assert moves(Int(0, 3), 0) == [1]  # a step of at least 1; never the value itself
    assert moves(Int(0, 100, step=10), 95) == [100, 80]  # snapped to the step grid from low, clipped


def test_a_choice_moves_to_its_neighbours_first() -> None:
    subsample = Choice(1e-3, 1e-4, 1e-5, 0.0)
    assert moves(subsample, 1e-4) == [1e-5, 1e-3, 0.0]
    assert moves(subsample, 0.0) == [1e-5, 1e-4, 1e-3]
    assert moves(Choice(64, 128), 64) == [128]
    assert moves(Choice("a", "b"), "z") == ["a", "b"]  # a value outside the choice: every value


def test_an_unknown_entry_is_named() -> None:
    with pytest.raises(TypeError, match="unknown search-space entry"):
        moves("not a param", 1)  # type: ignore[arg-type]
