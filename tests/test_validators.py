"""The shared checks of kfc_lite.validators: what they take, what they refuse, and that the sentence names both."""

import math

import numpy as np
import pytest

from kfc_lite.validators import flag, integer, number, one_of, widths


def test_integer_takes_numpy_integers_and_refuses_bools_floats_and_small_values():
    assert integer("steps", np.int64(5), 1) == 5 and type(integer("steps", np.int64(5), 1)) is int
    assert integer("eval_max_steps", None, 1, allow_none=True) is None
    for bad in (True, 2.0, "3", None, 0):
        with pytest.raises(ValueError, match=r"steps must be an integer >= 1, got"):
            integer("steps", bad, 1)


def test_number_checks_finiteness_and_bounds():
    assert number("tau", np.float32(0.5), 0.0, 1.0, low_open=True) == 0.5
    assert number("target_entropy", None, allow_none=True) is None
    with pytest.raises(ValueError, match="tau must be > 0.0, got 0"):
        number("tau", 0, 0.0, 1.0, low_open=True)
    with pytest.raises(ValueError, match="gamma must be <= 1.0, got 1.5"):
        number("gamma", 1.5, 0.0, 1.0)
    for bad in (math.nan, math.inf, False, "0.1"):
        with pytest.raises(ValueError, match="q_lr must be a finite number"):
            number("q_lr", bad)


def test_flag_one_of_and_widths():
    assert flag("gauged", np.bool_(True)) is True
    with pytest.raises(ValueError, match="gauged must be True or False, got 1"):
        flag("gauged", 1)
    assert one_of("per", "batch", ("batch", "sample")) == "batch"
    with pytest.raises(ValueError, match=r"per must be one of \('batch', 'sample'\) \(the authors' code draws once "):
        one_of("per", "episode", ("batch", "sample"), "the authors' code draws once per batch")
    assert widths("hidden", [64, np.int32(32)]) == (64, 32)
    for bad in ((), (256, 0), (256, True), "256", 256):
        with pytest.raises(ValueError, match="hidden must be a non-empty tuple of positive layer widths"):
            widths("hidden", bad)
