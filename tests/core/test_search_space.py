"""Search spaces as plain data: the values a coordinate search tries along each parameter."""

from __future__ import annotations

import pytest

from recsys.search_space import Choice, Float, Int, ladder, moves


def test_a_ladder_spans_the_range_on_its_scale_with_both_bounds() -> None:
    assert ladder(Int(5, 20, log=True)) == [5, 8, 13, 20]  # 5 * 4**(i/3), rounded
    assert ladder(Float(-0.5, 1.0)) == [-0.5, 0.0, 0.5, 1.0]
    assert ladder(Float(0.025, 0.1, log=True), points=3) == [0.025, 0.05, 0.1]
    assert ladder(Int(0, 12, step=4)) == [0, 4, 8, 12]
    assert ladder(Int(0, 2)) == [0, 1, 2]  # rounded repeats dropped


def test_moves_go_to_the_ladder_nearest_first_and_skip_a_step_too_small_to_measure() -> None:
    assert moves(Int(5, 20, log=True), 11) == [13, 8, 20, 5]
    assert moves(Float(0.025, 0.1, log=True), 0.0987) == [0.062996052, 0.039685026, 0.025]  # 0.1: too close
    assert moves(Float(-0.5, 1.0), 0.5) == [1.0, 0.0, -0.5]  # an equal-distance tie: the higher first
    assert moves(Int(5, 20, log=True), 20) == [13, 8, 5]


def test_a_choice_moves_to_its_neighbours_first() -> None:
    subsample = Choice(1e-3, 1e-4, 1e-5, 0.0)
    assert moves(subsample, 1e-4) == [1e-5, 1e-3, 0.0]
    assert moves(subsample, 0.0) == [1e-5, 1e-4, 1e-3]
    assert moves(Choice(64, 128), 64) == [128]
    assert moves(Choice("a", "b"), "z") == ["a", "b"]  # a value outside the choice: every value


def test_an_unknown_entry_is_named() -> None:
    with pytest.raises(TypeError, match="unknown search-space entry"):
        moves("not a param", 1)  # type: ignore[arg-type]
