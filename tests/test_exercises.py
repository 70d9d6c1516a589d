"""The exercise framework: feedback in words, never an exception; progress per notebook; the student edition."""

import nbformat
import numpy as np
from conftest import ROOT

from kfc_lite import exercises
from kfc_lite.exercises import FAILED, NOT_DONE, PASSED, Wrong, exercise, multiple_choice, nb00, progress
from kfc_lite.notebooks import convention_problems, student_edition
from kfc_lite.student import write_student_edition


def test_stub_right_and_wrong_answers_get_words():
    def stub(A):
        raise NotImplementedError

    fb = nb00.check_eigenvalues_2x2(stub)
    assert fb.status == NOT_DONE and "NotImplementedError" in str(fb)
    fb = nb00.check_eigenvalues_2x2(lambda A: np.diag(A))
    assert fb.status == FAILED and "expected" in str(fb) and "hint" in str(fb)
    fb = nb00.check_eigenvalues_2x2(lambda A: np.linalg.eigvals(A)[::-1])
    assert fb.passed and str(fb).startswith("✔ Exercise 00.eigenvalues_2x2: passed")


def test_a_crash_in_the_learners_code_is_reported_not_raised():
    fb = nb00.check_eigenvalues_2x2(lambda A: 1 / 0)
    assert fb.status == FAILED and "ZeroDivisionError" in str(fb)


def test_progress_counts_what_passed():
    @exercise("99", "first")
    def check_first(x):
        if x != 1:
            raise Wrong("x should be 1", expected=1, got=x)

    @exercise("99", "second")
    def check_second(x):
        raise NotImplementedError

    assert "0 of 2" in progress("99") and "not checked yet" in progress("99")
    check_first(1)
    check_second(None)
    text = progress("99")
    assert "1 of 2" in text and "first" in text and NOT_DONE in text
    assert "No exercises" in progress("98")
    exercises._EXERCISES.pop("99")
    exercises._RESULTS.pop("99")


def test_multiple_choice_explains_each_option():
    check = multiple_choice(
        "97",
        "mc",
        "Which?",
        {"a": "one", "b": "two"},
        "b",
        {"a": "one is wrong because ...", "b": "two is right because ..."},
    )
    assert check(None).status == NOT_DONE
    fb = check("a")
    assert fb.status == FAILED and "one is wrong because" in str(fb)
    assert check("B").passed
    assert "not one of the options" in str(check("z"))
    exercises._EXERCISES.pop("97")
    exercises._RESULTS.pop("97", None)


def test_student_edition_drops_solutions_and_keeps_stubs(tmp_path):
    written = write_student_edition(ROOT / "notebooks", tmp_path)
    assert written, "no notebook written"
    for path in written:
        source = nbformat.read(ROOT / "notebooks" / path.name, as_version=4)
        student = nbformat.read(path, as_version=4)
        n_solutions = sum("solution" in c.metadata.get("tags", []) for c in source.cells)
        assert len(student.cells) == len(source.cells) - n_solutions
        assert not any("solution" in c.metadata.get("tags", []) for c in student.cells)
        stubs = sum("NotImplementedError" in c.source for c in student.cells if c.cell_type == "code")
        assert stubs >= n_solutions


def test_conventions_catch_a_broken_notebook():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    assert convention_problems(nb) == [
        "the first cell must be a markdown cell with the title and how to run the notebook"
    ]
    nb = nbformat.read(ROOT / "notebooks" / "00_start_here.ipynb", as_version=4)
    first_code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    nb.cells[first_code].outputs = [nbformat.v4.new_output("stream", text="hi")]
    sol = [i for i, c in enumerate(nb.cells) if "solution" in c.metadata.get("tags", [])][0]
    nb.cells[sol - 1].source = "pass"
    problems = convention_problems(nb)
    assert any("carries outputs" in p for p in problems)
    assert any("not preceded by a learner stub" in p for p in problems)
    assert student_edition(nb).cells[first_code].outputs == []


def test_training_diagnosis_names_the_mistake_of_each_wrong_answer():
    from kfc_lite.exercises import nb02

    check = nb02.check_training_diagnosis
    assert check(lambda: "c").status == PASSED
    overfit = check("a")
    assert overfit.status == FAILED and "validation loss" in str(overfit)
    unstable = check("b")
    assert unstable.status == FAILED and "20 times" in str(unstable)
    assert "validation split" in str(check("d"))
    assert check(stub_raising).status == NOT_DONE
    assert check("e").status == FAILED


def stub_raising():
    raise NotImplementedError
