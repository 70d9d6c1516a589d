"""The checks behind the coursework exercises.

Every exercise has a check ``check_<name>(learner_object)`` in the module of its notebook
(``kfc_lite.exercises.nb01`` for notebook 01, ...). A check never raises: it returns a
:class:`Feedback` whose text says what was expected, what came back, and where to look. Shown as the
last expression of a cell, the feedback prints as that text; ``progress("01")`` summarises a notebook.

A check is written as a function that raises :class:`Wrong` at the first thing that is off; the
:func:`exercise` decorator turns that into feedback, treats ``NotImplementedError`` as "not done yet"
and any other exception from the learner's code as a bug to report in words.
"""

from __future__ import annotations

import functools
import sys
import traceback
from dataclasses import dataclass, field

import numpy as np

PASSED, FAILED, NOT_DONE = "passed", "failed", "not done yet"

#: notebook -> exercise name -> latest Feedback
_RESULTS: dict[str, dict[str, Feedback]] = {}
#: notebook -> exercise names in the order they were registered
_EXERCISES: dict[str, list[str]] = {}


class Wrong(Exception):
    """Raised inside a check when the learner's answer is off: what, expected, got, hint."""

    def __init__(self, what: str, expected=None, got=None, hint: str | None = None):
        super().__init__(what)
        self.what, self.expected, self.got, self.hint = what, expected, got, hint


@dataclass
class Feedback:
    notebook: str
    exercise: str
    status: str
    lines: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    def __str__(self) -> str:
        mark = {PASSED: "✔", FAILED: "✘", NOT_DONE: "…"}[self.status]
        head = f"{mark} Exercise {self.notebook}.{self.exercise}: {self.status}"
        return "\n".join([head] + ["  " + line for line in self.lines])

    __repr__ = __str__


def _short(value, limit: int = 300) -> str:
    if isinstance(value, np.ndarray):
        with np.printoptions(precision=4, suppress=True, threshold=12, edgeitems=3):
            text = f"array of shape {value.shape}: {value}"
    else:
        torch = sys.modules.get("torch")  # a tensor can only come from an imported torch: never import it here
        if torch is not None and isinstance(value, torch.Tensor):
            return _short(value.detach().cpu().numpy(), limit)
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def exercise(notebook: str, name: str, *, hint_on_error: str | None = None):
    """Decorate a check ``f(answer, ...)`` that raises :class:`Wrong`; the result returns :class:`Feedback`."""

    _EXERCISES.setdefault(notebook, [])
    if name not in _EXERCISES[notebook]:
        _EXERCISES[notebook].append(name)

    def wrap(check):
        @functools.wraps(check)
        def run(*args, **kwargs) -> Feedback:
            try:
                success = check(*args, **kwargs)
                lines = [success] if isinstance(success, str) else ["all checks agree with the reference."]
                fb = Feedback(notebook, name, PASSED, lines)
            except NotImplementedError:
                fb = Feedback(
                    notebook,
                    name,
                    NOT_DONE,
                    [
                        "the cell above still raises NotImplementedError: "
                        "replace the stub with your code and run it again."
                    ],
                )
            except Wrong as w:
                lines = [w.what]
                if w.expected is not None:
                    lines.append(f"expected: {_short(w.expected)}")
                if w.got is not None:
                    lines.append(f"got:      {_short(w.got)}")
                if w.hint:
                    lines.append(f"hint: {w.hint}")
                fb = Feedback(notebook, name, FAILED, lines)
            except Exception as exc:  # the learner's code crashed: report it in words, do not raise
                tb = traceback.extract_tb(exc.__traceback__)
                where = f" (line {tb[-1].lineno} of {tb[-1].name})" if tb else ""
                lines = [f"your code raised {type(exc).__name__}: {exc}{where}"]
                if hint_on_error:
                    lines.append(f"hint: {hint_on_error}")
                fb = Feedback(notebook, name, FAILED, lines)
            _RESULTS.setdefault(notebook, {})[name] = fb
            return fb

        run.notebook, run.exercise = notebook, name
        return run

    return wrap


def expect_close(what: str, got, expected, *, rtol: float = 1e-6, atol: float = 1e-8, hint: str | None = None) -> None:
    """Raise :class:`Wrong` unless ``got`` has ``expected``'s shape and values (to tolerance)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        if isinstance(got, torch.Tensor):
            got = got.detach().cpu().numpy()
        if isinstance(expected, torch.Tensor):
            expected = expected.detach().cpu().numpy()
    if got is None:
        raise Wrong(f"{what}: your function returned None", expected=expected, hint=hint or "did you forget `return`?")
    got_arr, exp_arr = np.asarray(got), np.asarray(expected)
    if got_arr.shape != exp_arr.shape:
        raise Wrong(
            f"{what}: the shape is {got_arr.shape}, expected {exp_arr.shape}", expected=exp_arr, got=got_arr, hint=hint
        )
    if not np.all(np.isfinite(got_arr)):
        raise Wrong(f"{what}: the result contains NaN or inf", got=got_arr, hint=hint)
    if not np.allclose(got_arr, exp_arr, rtol=rtol, atol=atol):
        err = float(np.max(np.abs(got_arr - exp_arr)))
        raise Wrong(
            f"{what}: the values differ (largest difference {err:.3g})", expected=exp_arr, got=got_arr, hint=hint
        )


def progress(notebook: str) -> str:
    """A summary of which exercises of ``notebook`` ('01', '02', ...) pass, fail or are not done yet."""
    names = _EXERCISES.get(notebook, [])
    if not names:
        return f"No exercises are registered for notebook {notebook}: import kfc_lite.exercises.nb{notebook} first."
    results = _RESULTS.get(notebook, {})
    lines = []
    done = 0
    for name in names:
        fb = results.get(name)
        status = fb.status if fb else "not checked yet"
        done += bool(fb and fb.passed)
        lines.append(f"  {name:<32} {status}")
    return "\n".join([f"Notebook {notebook}: {done} of {len(names)} exercises pass"] + lines)


def multiple_choice(
    notebook: str, name: str, question: str, options: dict[str, str], correct: str, explanations: dict[str, str]
):
    """Build a multiple-choice check: ``check(answer)`` explains the chosen option in words.

    ``answer`` is a letter, or a function returning one: a learner's stub ``def answer(): raise
    NotImplementedError`` then reads as "not done yet", like every other exercise.
    """

    @exercise(notebook, name)
    def check(answer):
        if callable(answer):
            answer = answer()  # NotImplementedError from a stub propagates: "not done yet"
        if answer is None or answer is NotImplemented:
            raise NotImplementedError
        key = str(answer).strip().lower()
        if key not in options:
            raise Wrong(f"{answer!r} is not one of the options {sorted(options)}", hint=question)
        if key != correct:
            raise Wrong(f"({key}) is not it: {explanations.get(key, '')}", hint="read the plot again and reconsider")
        return f"({key}) is right: {explanations.get(key, '')}"

    check.question, check.options = question, options
    return check
