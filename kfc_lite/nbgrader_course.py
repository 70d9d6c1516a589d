"""Write the course as an nbgrader course: ``python -m kfc_lite.nbgrader_course notebooks build/nbgrader``.

Every notebook becomes an assignment of its own name, ``source/<stem>/<stem>.ipynb``, beside an
``nbgrader_config.py``. The notebooks' exercise convention (docs/design.md) maps onto nbgrader's cells:

* the learner's stub and the solution cell after it become one **autograded answer** cell (nbgrader
  ``solution``): the stub's code, with the solution's body between ``### BEGIN SOLUTION`` and
  ``### END SOLUTION`` where the stub raised ``NotImplementedError``. ``nbgrader generate_assignment``
  puts the raise back, so the released notebook reads like the student edition;
* the check cell becomes a locked **autograded test** cell carrying points: it runs the same check
  from ``kfc_lite.exercises`` and prints its feedback, then asserts that the check passed, since a
  check reports a wrong answer in its feedback and never raises;
* markdown cells tagged ``solution`` are left out, as in the student edition: nbgrader would turn
  them into manually graded answers.

Nothing here knows a notebook's exercises: they are read from the cells' tags and sources, so the
converter follows the notebooks as they change. docs/teaching.md shows how a teacher uses the course.
"""

from __future__ import annotations

import argparse
import ast
import copy
import pathlib
import re
import sys

import nbformat

from kfc_lite.notebooks import SOLUTION_TAG, notebook_paths, tags

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
#: the first line of the nbgrader_config.py this module writes; a config without it is the teacher's and is kept
CONFIG_MARK = "# nbgrader configuration of the kfc-lite course, written by python -m kfc_lite.nbgrader_course"
CONFIG = f"""{CONFIG_MARK}
# (delete this first line to keep your own edits when the course is written again).
import os
import sys

# nbgrader runs the `alembic` command of its environment to set up the gradebook: found even when the environment
# is not activated (`.venv/bin/nbgrader ...`)
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")

c = get_config()  # noqa: F821 (nbgrader provides it)
c.CourseDirectory.course_id = "kfc-lite"
# this folder, whatever a user-wide nbgrader_config.py says
c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
# Grade in quick mode unless told otherwise: the checks are the same in both modes, and a full-mode notebook
# trains for hours. `KFC_QUICK=0 nbgrader autograde ...` grades in full mode.
os.environ.setdefault("KFC_QUICK", "1")
# A quick-mode cell takes seconds to a minute on a CPU; nbgrader's default of 30 s would cut some off.
c.Execute.timeout = 600
"""


class ConversionError(ValueError):
    """A notebook whose exercise cells do not follow the convention the converter reads."""


def _is_stub(cell) -> bool:
    return cell.cell_type == "code" and "NotImplementedError" in cell.source


def _check_calls(tree: ast.Module) -> list[ast.stmt]:
    """The top-level statements of a cell that call an exercise check: ``check_x(...)`` or ``nbXX.check_x(...)``,
    alone or assigned to one name."""
    found = []
    for node in tree.body:
        value = None
        if isinstance(node, ast.Expr):
            value = node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            value = node.value
        if isinstance(value, ast.Call):
            func = value.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name.startswith("check_"):
                found.append(node)
    return found


def _check_name(node: ast.stmt) -> str:
    func = node.value.func
    return (func.attr if isinstance(func, ast.Attribute) else func.id).removeprefix("check_")


def _raises_not_implemented(node: ast.stmt) -> bool:
    if not isinstance(node, ast.Raise) or node.exc is None:
        return False
    exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
    return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"


def _docstring(fn: ast.FunctionDef) -> ast.Expr | None:
    first = fn.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return first
    return None


def merge_stub_and_solution(stub: str, solution: str) -> str | None:
    """The stub's source with each stubbed function's ``raise NotImplementedError`` replaced by the solution's body
    of that function, between nbgrader's solution markers; ``None`` when the two do not pair up that way (the
    solution defines something else, a signature differs, a body is on the ``def`` line)."""
    try:
        stub_tree, sol_tree = ast.parse(stub), ast.parse(solution)
    except SyntaxError:
        return None
    stub_lines, sol_lines = stub.split("\n"), solution.split("\n")
    stub_functions = {n.name: n for n in stub_tree.body if isinstance(n, ast.FunctionDef)}
    stub_statements = {ast.get_source_segment(stub, n) for n in stub_tree.body}
    replacements = []  # (first line, end line) of a raise in the stub, and the lines that replace it
    for node in sol_tree.body:
        if not isinstance(node, ast.FunctionDef) or node.name not in stub_functions:
            if ast.get_source_segment(solution, node) in stub_statements:
                continue  # e.g. the same import in both cells
            return None
        target = stub_functions[node.name]
        raises = [s for s in target.body if _raises_not_implemented(s)]
        if len(raises) != 1 or ast.dump(target.args) != ast.dump(node.args) or node.body[0].lineno == node.lineno:
            return None
        doc = _docstring(node)
        body = node.body[1:] if doc is not None else node.body
        if not body:
            return None
        if doc is not None and _docstring(target) is None:
            start = doc.lineno - 1  # the stub has no docstring of its own: keep the solution's
        elif doc is not None:
            start = doc.end_lineno
        else:
            start = body[0].lineno - 1
            while start - 1 >= node.lineno and sol_lines[start - 1].strip().startswith("#"):
                start -= 1  # comments above the first statement belong to the body (a header line never starts so)
        block = "\n".join(sol_lines[start : node.end_lineno]).strip("\n")
        indent = " " * raises[0].col_offset
        own = " " * body[0].col_offset
        if own != indent:
            # from the solution's indentation to the stub's, line by line: a line of a multi-line string that does
            # not start with the body's indentation keeps its text
            block = "\n".join(indent + ln[len(own) :] if ln.startswith(own) else ln for ln in block.split("\n"))
        new = [indent + BEGIN, block, indent + END]
        replacements.append((raises[0].lineno - 1, raises[0].end_lineno, new))
    if not replacements:
        return None
    for first, end, new in sorted(replacements, reverse=True):
        stub_lines[first:end] = new
    return "\n".join(stub_lines)


def graded_check(source: str) -> tuple[str, list[str]]:
    """A check cell's source as an nbgrader test cell, and the names of the exercises it checks: each check's
    feedback is kept and printed where the cell showed it, and the cell ends by asserting that every one passed."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ConversionError(f"the check cell does not parse: {exc}") from exc
    calls = _check_calls(tree)
    if not calls:
        # a check called inside an expression or a block (`if nb05.check_x(f).passed: ...`): its latest feedback
        nested = [
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.Call)
            and isinstance(n.func, (ast.Attribute, ast.Name))
            and (n.func.attr if isinstance(n.func, ast.Attribute) else n.func.id).startswith("check_")
        ]
        if not nested:
            raise ConversionError("the check cell calls no `check_...(...)`")
        funcs = list(dict.fromkeys(ast.get_source_segment(source, n.func) for n in nested))
        names = [f.rsplit(".", 1)[-1].removeprefix("check_") for f in funcs]
        lines = ["from kfc_lite.nbgrader_course import assert_passed"] + [f"assert_passed({f})" for f in funcs]
        return source.rstrip("\n") + "\n" + "\n".join(lines), names
    lines = source.split("\n")
    asserts = []
    for k, node in reversed(list(enumerate(calls))):
        indent = " " * node.col_offset
        if isinstance(node, ast.Assign):
            var = node.targets[0].id
        else:
            var = "_feedback" if len(calls) == 1 else f"_feedback_{k}"
            call = ast.get_source_segment(source, node.value)
            lines[node.lineno - 1 : node.end_lineno] = [f"{indent}{var} = {call}", f"{indent}print({var})"]
        asserts.insert(0, f'assert {var}.passed, "the check above did not pass: its feedback says why"')
    names = [_check_name(node) for node in calls]
    return "\n".join(lines).rstrip("\n") + "\n" + "\n".join(asserts), names


def assert_passed(check) -> None:
    """Raise ``AssertionError`` unless exercise check ``check`` (a ``check_...`` function of
    ``kfc_lite.exercises``) ran in this kernel and its latest feedback says passed: the end of a graded
    check cell whose check call sits inside an expression or a block."""
    from kfc_lite.exercises import _RESULTS

    feedback = _RESULTS.get(check.notebook, {}).get(check.exercise)
    if feedback is None:
        raise AssertionError(f"the check of exercise {check.notebook}.{check.exercise} did not run")
    if not feedback.passed:
        raise AssertionError(str(feedback))


def _nbgrader(grade_id: str, *, solution: bool, grade: bool, points: int | None = None) -> dict:
    meta = {"grade": grade, "grade_id": grade_id, "locked": not solution, "schema_version": 3, "solution": solution}
    if points is not None:
        meta["points"] = points
    return meta


def _identifier(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "exercise"


def _following_check(cells, i: int) -> int | None:
    """The check cell of solution cell ``i``: one of the two cells after it (docs/design.md)."""
    for j in range(i + 1, min(i + 3, len(cells))):
        if cells[j].cell_type == "code" and "check_" in cells[j].source:
            return j
    return None


def _preceding_stub(cells, i: int, keep: list[bool]) -> int | None:
    """The learner's stub of solution cell ``i``: one of the three cells before it, not yet made an answer."""
    for j in range(i - 1, max(-1, i - 4), -1):
        if keep[j] and _is_stub(cells[j]) and "nbgrader" not in cells[j].metadata:
            return j
    return None


def nbgrader_notebook(nb, points: int = 1):
    """A copy of notebook ``nb`` (an nbformat node) as an nbgrader source notebook; ``points`` per exercise check."""
    out = copy.deepcopy(nb)
    cells = out.cells
    keep = [True] * len(cells)
    used: set[str] = set()

    def unique(name: str) -> str:
        base, k = _identifier(name), 2
        name = base
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        return name

    for i, cell in enumerate(cells):
        if SOLUTION_TAG not in tags(cell):
            continue
        if cell.cell_type != "code":
            keep[i] = False
            continue
        check = _following_check(cells, i)
        if check is None:
            raise ConversionError(f"cell {i} (a solution) is not followed by a check cell within two cells")
        try:
            check_source, names = graded_check(cells[check].source)
        except ConversionError as exc:
            raise ConversionError(f"cell {check} (the check of solution cell {i}): {exc}") from None
        name = unique(names[0])
        stub = _preceding_stub(cells, i, keep)
        merged = merge_stub_and_solution(cells[stub].source, cell.source) if stub is not None else None
        if merged is not None:
            # the answer takes the stub's place, where the learner writes; the solution cell goes
            cells[stub].source = merged
            answer, keep[i] = cells[stub], False
        else:
            # no stub to fill in: the whole solution is the region nbgrader clears, after the stub if there is one
            cell.source = f"{BEGIN}\n{cell.source.strip()}\n{END}"
            answer = cell
        other_tags = [t for t in tags(answer) if t != SOLUTION_TAG]
        if other_tags:
            answer.metadata["tags"] = other_tags
        else:
            answer.metadata.pop("tags", None)
        answer.metadata["nbgrader"] = _nbgrader(f"answer_{name}", solution=True, grade=False)
        cells[check].source = check_source
        cells[check].metadata["nbgrader"] = _nbgrader(f"check_{name}", solution=False, grade=True, points=points)
    out.cells = [c for c, k in zip(cells, keep, strict=True) if k]
    for c in out.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    return out


def write_course(src, dst, only: list[str] | None = None, points: int = 1) -> list[pathlib.Path]:
    """Write ``dst/source/<stem>/<stem>.ipynb`` for every notebook in ``src`` (or those whose number or stem is in
    ``only``) and ``dst/nbgrader_config.py`` unless the teacher has their own there. Returns the notebooks written."""
    dst = pathlib.Path(dst)
    paths = notebook_paths(src)
    if only:
        paths = [p for p in paths if p.stem in only or p.name[:2] in only]
        missing = set(only) - {p.stem for p in paths} - {p.name[:2] for p in paths}
        if missing:
            raise ConversionError(f"no notebook in {src} is called {sorted(missing)}")
    if not paths:
        raise ConversionError(f"{src} holds no course notebook")
    written = []
    for path in paths:
        try:
            nb = nbgrader_notebook(nbformat.read(path, as_version=4), points=points)
        except ConversionError as exc:
            raise ConversionError(f"{path.name}: {exc}") from None
        out = dst / "source" / path.stem / path.name
        out.parent.mkdir(parents=True, exist_ok=True)
        nbformat.validate(nb)
        nbformat.write(nb, out)
        written.append(out)
    config = dst / "nbgrader_config.py"
    if not config.exists() or config.read_text().startswith(CONFIG_MARK):
        config.write_text(CONFIG)
    else:
        print(f"kept {config}: it is not the one this module writes", file=sys.stderr)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kfc_lite.nbgrader_course", description=__doc__.split("\n")[0])
    parser.add_argument("source", help="the folder of the course notebooks (notebooks/)")
    parser.add_argument("course", help="the nbgrader course folder to write (its source/ and nbgrader_config.py)")
    parser.add_argument("--only", nargs="+", metavar="NB", help="only these notebooks (numbers such as 01, or stems)")
    parser.add_argument("--points", type=int, default=1, help="points per exercise check (default 1)")
    args = parser.parse_args(argv)
    try:
        written = write_course(args.source, args.course, args.only, args.points)
    except ConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
