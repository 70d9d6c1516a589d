"""The course as an nbgrader course (kfc_lite.nbgrader_course): every notebook converts, nbgrader's own
``generate_assignment`` releases it without its solutions, and ``autograde`` gives a solved submission full points,
a partly solved one the points of what it solved, and the released notebook as a student gets it none."""

import ast
import copy
import os
import pathlib
import re
import subprocess
import sys

import nbformat
import pytest
from conftest import ROOT

from kfc_lite.nbgrader_course import (
    BEGIN,
    END,
    ConversionError,
    graded_check,
    merge_stub_and_solution,
    nbgrader_notebook,
    write_course,
)
from kfc_lite.notebooks import SOLUTION_TAG, notebook_paths, tags

NOTEBOOKS = notebook_paths(ROOT / "notebooks")
#: the notebook graded end to end: four exercises, under 20 s per run in quick mode
GRADED = "01_koopman_on_toy_systems"


def nbgrader(course: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    """nbgrader's command line in ``course``, reading the nbgrader_config.py written there, in quick mode."""
    env = dict(os.environ, KFC_QUICK="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    # without the environment's bin/ on PATH: the config written with the course must find `alembic` itself
    bindir = os.path.dirname(sys.executable)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != bindir)
    # a generous limit: a run takes under a minute, ten times that on a machine shared with other work
    proc = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args], cwd=course, env=env, capture_output=True, text=True, timeout=1200
    )
    assert proc.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    assert "ERROR" not in proc.stderr, proc.stderr[-5000:]
    return proc


def nbgrader_cells(nb, key: str):
    return [c for c in nb.cells if c.get("metadata", {}).get("nbgrader", {}).get(key)]


# the converter, cell by cell


def test_the_solution_body_goes_where_the_stub_raised():
    stub = 'import numpy as np\n\ndef f(x, y=2):\n    """Twice x."""\n    raise NotImplementedError'
    solution = "import numpy as np\n\ndef f(x, y=2):\n    # y times, not x squared\n    z = y * x\n    return z"
    merged = merge_stub_and_solution(stub, solution)
    assert merged == (
        'import numpy as np\n\ndef f(x, y=2):\n    """Twice x."""\n    ### BEGIN SOLUTION\n'
        "    # y times, not x squared\n    z = y * x\n    return z\n    ### END SOLUTION"
    )
    namespace = {}
    exec(merged, namespace)
    assert namespace["f"](3) == 6


def test_the_solution_body_takes_the_indentation_of_the_stub():
    merged = merge_stub_and_solution(
        "def f(x):\n  raise NotImplementedError", 'def f(x):\n    s = """a\nb"""\n\n    if x:\n        return s'
    )
    assert merged == 'def f(x):\n  ### BEGIN SOLUTION\n  s = """a\nb"""\n\n  if x:\n      return s\n  ### END SOLUTION'
    namespace = {}
    exec(merged, namespace)
    assert namespace["f"](1) == "a\nb"


@pytest.mark.parametrize(
    "solution",
    [
        "def f(x, y):\n    return x",  # another signature
        "def g(x):\n    return x",  # another function
        "def f(x):\n    return x\n\nC = 3",  # something the stub does not have
        "def f(x): return x",  # the body on the def line
    ],
)
def test_a_solution_that_does_not_pair_with_its_stub_is_not_merged(solution):
    assert merge_stub_and_solution("def f(x):\n    raise NotImplementedError", solution) is None


def test_a_check_cell_asserts_every_check_it_calls():
    source, names = graded_check("from kfc_lite.exercises import nb00\n\nnb00.check_a(f)\nfb = nb00.check_b(g)\nx = 1")
    assert names == ["a", "b"]
    assert source == (
        "from kfc_lite.exercises import nb00\n\n_feedback_0 = nb00.check_a(f)\nprint(_feedback_0)\n"
        "fb = nb00.check_b(g)\nx = 1\n"
        'assert _feedback_0.passed, "the check above did not pass: its feedback says why"\n'
        'assert fb.passed, "the check above did not pass: its feedback says why"'
    )
    nested, names = graded_check("if nb05.check_c(h).passed:\n    use = h")
    assert names == ["c"] and nested.endswith("assert_passed(nb05.check_c)")
    with pytest.raises(ConversionError):
        graded_check("print('no check here')")


def test_assert_passed_reads_the_latest_feedback():
    from kfc_lite.exercises import Wrong, exercise
    from kfc_lite.nbgrader_course import assert_passed

    @exercise("99", "doubling")
    def check_doubling(fn):
        if fn(2) != 4:
            raise Wrong("not twice")

    with pytest.raises(AssertionError, match="did not run"):
        assert_passed(check_doubling)
    check_doubling(lambda x: x + 2)
    assert_passed(check_doubling)
    check_doubling(lambda x: x + 1)
    with pytest.raises(AssertionError, match="not twice"):
        assert_passed(check_doubling)


def solution_statements(source: str) -> list[str]:
    """The first line of every statement in the bodies of a solution cell's functions, docstrings left out."""
    tree = ast.parse(source)
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    if not functions:
        return [source.strip()]
    lines = source.split("\n")
    return [
        lines[stmt.lineno - 1].strip()
        for fn in functions
        for stmt in fn.body
        if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant))
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_exercise_becomes_an_answer_and_a_graded_check(path):
    nb = nbformat.read(path, as_version=4)
    solutions = [c for c in nb.cells if SOLUTION_TAG in tags(c) and c.cell_type == "code"]
    out = nbgrader_notebook(nb, points=2)
    answers, checks = nbgrader_cells(out, "solution"), nbgrader_cells(out, "grade")
    assert len(answers) == len(checks) == len(solutions)
    assert not any(SOLUTION_TAG in tags(c) for c in out.cells), "a cell still carries the solution tag"
    assert all(c.metadata.nbgrader["points"] == 2 and c.metadata.nbgrader["locked"] for c in checks)
    ids = [c.metadata.nbgrader["grade_id"] for c in answers + checks]
    assert len(set(ids)) == len(ids), f"grade ids repeat: {ids}"
    for answer, check, solution in zip(answers, checks, solutions, strict=True):
        assert answer.source.count(BEGIN) == 1 and answer.source.count(END) == 1
        region = answer.source.split(BEGIN)[1].split(END)[0]
        # every statement of the solution's functions (or the whole cell) is in the region nbgrader clears
        assert all(stmt in region for stmt in solution_statements(solution.source)), (answer.source, solution.source)
        assert "check_" in check.source and check.source.rstrip().split("\n")[-1].startswith("assert")


# nbgrader itself


def test_nbgrader_releases_every_notebook_without_its_solutions(tmp_path):
    write_course(ROOT / "notebooks", tmp_path)
    nbgrader(tmp_path, "generate_assignment", "*", "--force")
    for path in NOTEBOOKS:
        source = nbformat.read(tmp_path / "source" / path.stem / path.name, as_version=4)
        release = nbformat.read(tmp_path / "release" / path.stem / path.name, as_version=4)
        answers = nbgrader_cells(release, "solution")
        assert len(answers) == len(nbgrader_cells(source, "solution"))
        for released, written in zip(answers, nbgrader_cells(source, "solution"), strict=True):
            assert "raise NotImplementedError()" in released.source and BEGIN not in released.source
            hidden = written.source.split(BEGIN)[1].split(END)[0]
            assert not any(ln.strip() in released.source for ln in hidden.split("\n") if ln.strip()), released.source


def submission(release, source, solve: int, wrong: int | None = None):
    """The released notebook with its first ``solve`` answers filled in from the source and answer ``wrong``
    returning None; the others stay as released."""
    nb = copy.deepcopy(release)
    written = nbgrader_cells(source, "solution")
    for k, cell in enumerate(nbgrader_cells(nb, "solution")):
        if k < solve:
            cell.source = written[k].source
        elif k == wrong:
            cell.source = cell.source.replace("raise NotImplementedError()", "return None")
    return nb


@pytest.mark.slow
@pytest.mark.notebook
def test_autograde_scores_solved_partly_solved_and_unsolved_submissions(tmp_path):
    from nbgrader.api import Gradebook

    path = ROOT / "notebooks" / f"{GRADED}.ipynb"
    write_course(ROOT / "notebooks", tmp_path, only=[GRADED])
    assert (tmp_path / "nbgrader_config.py").exists()
    nbgrader(tmp_path, "generate_assignment", GRADED, "--force")
    release = nbformat.read(tmp_path / "release" / GRADED / path.name, as_version=4)
    source = nbformat.read(tmp_path / "source" / GRADED / path.name, as_version=4)
    n = len(nbgrader_cells(source, "grade"))
    assert n >= 2, f"{GRADED} needs two exercises for a partly solved submission"
    submissions = {
        "solved": submission(release, source, solve=n),
        "partly": submission(release, source, 1, wrong=1),
        "unsolved": release,
    }
    for student, nb in submissions.items():
        folder = tmp_path / "submitted" / student / GRADED
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / path.name)
    nbgrader(tmp_path, "autograde", GRADED, "--force")

    expected = {"solved": [1.0] * n, "partly": [1.0] + [0.0] * (n - 1), "unsolved": [0.0] * n}
    with Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}") as gb:
        for student, scores in expected.items():
            sub = gb.find_submission(GRADED, student)
            assert sub.max_score == n
            assert [g.score for g in sub.notebooks[0].grades] == scores, student
            assert sub.score == sum(scores)
    # the points come from the course's own checks, whose feedback the graded notebooks show
    graded = nbformat.read(tmp_path / "autograded" / "partly" / GRADED / path.name, as_version=4)
    text = "\n".join(out.get("text", "") for c in graded.cells if c.cell_type == "code" for out in c.outputs)
    statuses = re.findall(r"Exercise \d\d\.\S+: (passed|failed|not done yet)", text)
    assert statuses == ["passed", "failed"] + ["not done yet"] * (n - 2), statuses
