"""Notebook conventions shared by the tests and the student edition (docs/design.md).

* the first cell is markdown: a title, objectives, prerequisites, run time on a CPU and on a GPU,
  and the quick-mode switch (``KFC_QUICK``);
* a code cell tagged ``parameters`` reads quick mode;
* an exercise is a stub that raises ``NotImplementedError``, a solution cell tagged ``solution``,
  and a check cell that calls ``kfc_lite.exercises``;
* a sentence of the prose that reads an outcome off a run is checked by :func:`claim` in a small cell
  right after the output it reads from;
* a stated run time carries a hidden marker ``<!-- seconds: quick=Q full=F -->`` (:func:`stated_seconds`);
* a notebook is run by :func:`execute_notebook`, which retries a kernel that stopped answering.
"""

from __future__ import annotations

import datetime
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
    return cell.cell_type == "code" and bool(_FIGURE_CALL.search(cell.source)) and not _WIDGET.search(cell.source)


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
    for needle, what in [
        ("kfc_quick", "the quick-mode switch (KFC_QUICK)"),
        ("cpu", "the run time on a CPU"),
        ("gpu", "the run time on a GPU"),
        ("prerequisite", "the prerequisites"),
        ("able to", "what the learner will be able to do"),
    ]:
        if needle not in low:
            problems.append(f"the first cell does not state {what}")
    params = [c for c in cells if c.cell_type == "code" and PARAMETERS_TAG in tags(c)]
    if len(params) != 1:
        problems.append(f"expected exactly one code cell tagged '{PARAMETERS_TAG}', found {len(params)}")
    elif "quick" not in params[0].source.lower():
        problems.append("the parameters cell does not set quick mode")
    if any(draws_figure(c) for c in cells) and not any(
        c.cell_type == "code" and "%matplotlib inline" in c.source for c in cells
    ):
        problems.append(
            "the notebook draws figures but never sets '%matplotlib inline': under another backend "
            "(MPLBACKEND=Agg, a user's setting) its figures would not appear"
        )
    for i, cell in enumerate(cells):
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None):
            problems.append(f"cell {i} carries outputs: strip them before committing")
        if SOLUTION_TAG in tags(cell):
            before = [c for c in cells[max(0, i - 3) : i] if c.cell_type == "code"]
            if not any("NotImplementedError" in c.source for c in before):
                problems.append(f"solution cell {i} is not preceded by a learner stub raising NotImplementedError")
            after = [c for c in cells[i + 1 : i + 3] if c.cell_type == "code"]
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


def claim(holds, sentence: str, **numbers) -> None:
    """Check one sentence of the prose against the run that the learner just made.

    ``holds`` is the condition that makes ``sentence`` true, computed from the run; ``numbers`` are the values it
    was computed from. When it fails, an ``AssertionError`` quotes the sentence and the numbers, so the notebook
    test (which fails on any error) catches prose that a change of code, data or mode has made wrong. When it holds,
    one line says so.
    """
    shown = ", ".join(f"{k} = {_fmt(v)}" for k, v in numbers.items())
    if not bool(holds):
        raise AssertionError(
            f'the text says: "{sentence}", but this run disagrees'
            + (f" ({shown})" if shown else "")
            + ". Fix the text (or compute it from the run), not the check."
        )
    print(f"✔ as the text says: {sentence}" + (f" ({shown})" if shown else ""))


def _fmt(value) -> str:
    try:
        import numpy as np

        arr = np.asarray(value, dtype=float)
        if arr.ndim == 0:
            return f"{float(arr):.4g}"
        with np.printoptions(precision=4, threshold=8):
            return str(arr)
    except (TypeError, ValueError):
        return repr(value)


#: a stated run time: ``<!-- seconds: quick=Q full=F -->`` in a markdown cell times the next code cell; in the
#: first cell, ``<!-- seconds notebook: quick=Q full=F -->`` times the whole notebook. Seconds on one CPU core
#: (full may be ``-`` where nobody has measured it).
_SECONDS = re.compile(r"<!--\s*seconds(\s+notebook)?\s*:\s*quick\s*=\s*([\d.]+)\s+full\s*=\s*([\d.]+|-)\s*-->")


def stated_seconds(nb) -> list[tuple[int | None, float, float | None]]:
    """The run times the notebook's prose states: ``(code cell index or None for the notebook, quick, full)``."""
    out = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        for m in _SECONDS.finditer(cell.source):
            quick, full = float(m.group(2)), None if m.group(3) == "-" else float(m.group(3))
            if m.group(1):
                out.append((None, quick, full))
                continue
            target = next((j for j in range(i + 1, len(nb.cells)) if nb.cells[j].cell_type == "code"), None)
            if target is not None:
                out.append((target, quick, full))
    return out


def execute_notebook(nb, cwd, *, env: dict | None = None, timeout: float = 240, attempts: int = 2):
    """``nb`` executed on a fresh ``python3`` kernel in ``cwd``, with ``env`` added to the kernel's environment.

    Now and then a kernel under nbclient stops answering: client and kernel both wait, neither computes. A cell
    that runs past ``timeout`` seconds, or a kernel that dies, is taken for that, and the whole notebook is run
    once more on a fresh kernel (``attempts`` in all); an error in a cell is never retried. Returns the executed
    copy; ``nb`` itself is left as it was.
    """
    import copy

    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    from kfc_lite.settings import environ

    with environ(**(env or {})):  # the kernel inherits this process's environment
        for attempt in range(attempts):
            run = copy.deepcopy(nb)
            try:
                client = NotebookClient(
                    run, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
                )
                client.execute()
                return run
            except (CellTimeoutError, DeadKernelError):
                if attempt == attempts - 1:
                    raise


def cell_seconds(cell) -> float | None:
    """How long an executed cell ran, from the timestamps nbclient records (``None`` when it has none)."""
    t = cell.get("metadata", {}).get("execution", {})
    start, end = t.get("iopub.execute_input") or t.get("shell.execute_request"), t.get("shell.execute_reply")
    if not (start and end):
        return None
    parse = lambda x: datetime.datetime.fromisoformat(x.replace("Z", "+00:00"))
    return (parse(end) - parse(start)).total_seconds()
