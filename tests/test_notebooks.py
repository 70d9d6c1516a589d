"""Every notebook runs top to bottom in quick mode, and follows DESIGN.md's conventions."""
import os

import nbformat
import pytest

from kfc_lite.notebooks import convention_problems, notebook_paths

from conftest import ROOT

NOTEBOOKS = notebook_paths(ROOT / "notebooks")


def test_the_course_has_notebooks():
    names = [p.name for p in NOTEBOOKS]
    assert names, "notebooks/ holds no notebook"
    numbers = [int(n[:2]) for n in names]
    assert numbers == list(range(len(numbers))), f"notebooks must be numbered 00, 01, ... without gaps: {names}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_conventions(path):
    nb = nbformat.read(path, as_version=4)
    assert convention_problems(nb) == []


def execute(nb, cwd, timeout=900):
    from nbclient import NotebookClient

    env_quick = os.environ.get("KFC_QUICK")
    os.environ["KFC_QUICK"] = "1"
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(cwd)}}).execute()
    finally:
        if env_quick is None:
            os.environ.pop("KFC_QUICK", None)
        else:
            os.environ["KFC_QUICK"] = env_quick
    return nb


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_quick_mode(path):
    nb = execute(nbformat.read(path, as_version=4), path.parent)
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", f"cell {i} of {path.name} raised {out.get('ename')}"
