"""Checks of settings, shared by every configuration of the library.

Each check returns the value in a plain Python type or raises a ``ValueError`` whose sentence names the setting,
what it must be and what it got, so that a typo in a config or on the command line reads as a sentence, not as a
traceback from deep inside a run. ``bool`` is never taken for a number: ``steps=True`` is a mistake, not 1.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["is_integer", "is_number", "integer", "number", "flag", "one_of", "widths"]


def is_integer(value) -> bool:
    """An int or NumPy integer, not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A finite real number (int, float or their NumPy kinds), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def integer(name: str, value, minimum: int = 0, *, allow_none: bool = False) -> int | None:
    """``value`` as an int, which must be at least ``minimum`` (``None`` passes where ``allow_none``)."""
    if allow_none and value is None:
        return None
    if not is_integer(value) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}{' or None' if allow_none else ''}, got {value!r}")
    return int(value)


def number(
    name: str,
    value,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    allow_none: bool = False,
) -> float | None:
    """``value`` as a float: finite, ``>= low`` (``> low`` where ``low_open``) and ``<= high`` where given."""
    if allow_none and value is None:
        return None
    if not is_number(value):
        raise ValueError(f"{name} must be a finite number{' or None' if allow_none else ''}, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value!r}")
    return float(value)


def flag(name: str, value) -> bool:
    """``value`` as a bool; only True or False (or NumPy's) are taken, not 0 or 1."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def one_of(name: str, value, choices, why: str = ""):
    """``value`` if it is one of ``choices``; ``why`` (optional) says what the choices mean."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}{' (' + why + ')' if why else ''}, got {value!r}")
    return value


def widths(name: str, value) -> tuple[int, ...]:
    """Layer widths such as ``(256, 256)`` (a list is taken too) as a tuple of positive ints."""
    if isinstance(value, (list, tuple)) and value and all(is_integer(v) and v >= 1 for v in value):
        return tuple(int(v) for v in value)
    raise ValueError(f"{name} must be a non-empty tuple of positive layer widths such as (256, 256), got {value!r}")
