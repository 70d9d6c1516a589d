"""Notebook conventions shared by the tests and the student edition (docs/design.md).

* the first cell is markdown: a title, objectives, prerequisites, run time on a CPU and on a GPU,
  and the quick-mode switch (``KFC_QUICK``);
* a code cell tagged ``parameters`` reads quick mode;
* an exercise is a stub that raises ``NotImplementedError``, a solution cell tagged ``solution``,
  and a check cell that calls ``kfc_lite.exercises``.
"""
from __future__ import annotations

import pathlib
import re

SOLUTION_TAG = "solution"
PARAMETERS_TAG = "parameters"
NOTEBOOK_NAME = re.compile(r"^(\d\d)_[a-z0-9_]+\.ipynb$")


def notebook_paths(folder) -> list[pathlib.Path]:
    return sorted(p for p in pathlib.Path(folder).glob("*.ipynb") if NOTEBOOK_NAME.match(p.name))


def tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


#: a code cell that makes a Matplotlib figure (and is not an interactive explorer, whose output is a widget)
_FIGURE_CALL = re.compile(r"\bplt\.|\bfig\b|\bplot_\w*\(|subplots\(")
_WIDGET = re.compile(r"explorer|interact|widgets\.")


def draws_figure(cell) -> bool:
    """Whether a code cell draws a static figure, which must then show up as an image in its outputs."""
    return (cell.cell_type == "code" and bool(_FIGURE_CALL.search(cell.source))
            and not _WIDGET.search(cell.source))


def convention_problems(nb) -> list[str]:
    """Everything in notebook ``nb`` (an nbformat node) that breaks the conventions of docs/design.md."""
    problems = []
    cells = nb.cells
    if not cells or cells[0].cell_type != "markdown":
        return ["the first cell must be a markdown cell with the title and how to run the notebook"]
    first = cells[0].source
    if not first.lstrip().startswith("# "):
        problems.append("the first cell must start with a '# ' title")
    low = first.lower()
    for needle, what in [("kfc_quick", "the quick-mode switch (KFC_QUICK)"), ("cpu", "the run time on a CPU"),
                         ("gpu", "the run time on a GPU"), ("prerequisite", "the prerequisites"),
                         ("able to", "what the learner will be able to do")]:
        if needle not in low:
            problems.append(f"the first cell does not state {what}")
    params = [c for c in cells if c.cell_type == "code" and PARAMETERS_TAG in tags(c)]
    if len(params) != 1:
        problems.append(f"expected exactly one code cell tagged '{PARAMETERS_TAG}', found {len(params)}")
    elif "quick" not in params[0].source.lower():
        problems.append("the parameters cell does not set quick mode")
    if any(draws_figure(c) for c in cells) and not any(
            c.cell_type == "code" and "%matplotlib inline" in c.source for c in cells):
        problems.append("the notebook draws figures but never sets '%matplotlib inline': under another backend "
                        "(MPLBACKEND=Agg, a user's setting) its figures would not appear")
    for i, cell in enumerate(cells):
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None):
            problems.append(f"cell {i} carries outputs: strip them before committing")
        if SOLUTION_TAG in tags(cell):
            before = [c for c in cells[max(0, i - 3):i] if c.cell_type == "code"]
            if not any("NotImplementedError" in c.source for c in before):
                problems.append(f"solution cell {i} is not preceded by a learner stub raising NotImplementedError")
            after = [c for c in cells[i + 1:i + 3] if c.cell_type == "code"]
            if not any("check" in c.source for c in after):
                problems.append(f"solution cell {i} is not followed by a check cell")
    return problems


def student_edition(nb):
    """A copy of ``nb`` with solution cells removed and outputs stripped (the stub cells stay)."""
    import copy

    out = copy.deepcopy(nb)
    out.cells = [c for c in out.cells if SOLUTION_TAG not in tags(c)]
    for c in out.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    return out
