"""How long a notebook's long cells take, against the run times its prose states.

A notebook states the run time of a long cell in a marker before it, ``<!-- seconds: quick=20 full=1500 -->``
(:func:`kfc_lite.notebooks.stated_seconds`). Those are statements about a machine's speed, so they are measured
here, with the CPU named, and never by a test (a faster or a busier machine would fail them). It runs, on a fresh
kernel in a scratch folder, the notebook's parameters cell in the mode (``KFC_QUICK``), the ``--setup`` cells the
timed cells need (imports, loaded results; untimed), then the ``--cells`` to time, and prints each timed cell's
stated and measured seconds with the CPU named. Cells not named are not run, so a cell can be timed without the
hours of full-mode training before it, as long as it does not need their results. With ``--whole`` it runs the
whole notebook instead and tables every stated time in it, the notebook's own (the sum of its code cells) and each
cell's.

    .venv/bin/python benchmarks/notebook_times.py notebooks/05_kfc_on_d4rl.ipynb --setup 3 36 --cells 45
    # the whole notebook, top to bottom: every stated time in it (the notebook's own and each cell's)
    .venv/bin/python benchmarks/notebook_times.py notebooks/01_koopman_on_toy_systems.ipynb --whole --mode quick

A kernel that stops answering (now and then one does under nbclient: client and kernel both wait) is taken for
stuck after ``--timeout`` seconds in one cell, and the notebook is run once more on a fresh kernel.

Writes ``benchmarks/results/notebook-times-<notebook>-<mode>.md`` (the table) and ``.json`` (the raw times). Time it on
an otherwise idle machine: a timing taken beside another job says how long it took there, not how long it takes.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import pathlib
import shlex
import shutil
import sys
import tempfile
import time

from _timing import write_results

HERE = pathlib.Path(__file__).resolve().parent


def timing_notebook(nb, quick: bool, setup: list[int], cells: list[int]):
    """A notebook of the parameters cell, a check that it took the mode, the setup cells and the timed cells."""
    import nbformat

    params = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(params) != 1:
        raise SystemExit(
            f"the notebook needs one cell tagged 'parameters', it has {len(params)}: tag the cell that sets QUICK "
            '(its metadata\'s "tags": ["parameters"]), and only that one'
        )
    if not cells:
        raise SystemExit("name the cells to time with --cells (their indices in the notebook, from 0)")
    for i in [*setup, *cells]:
        if not 0 <= i < len(nb.cells) or nb.cells[i].cell_type != "code":
            raise SystemExit(
                f"cell {i} is not a code cell of this notebook (it has {len(nb.cells)} cells, counted from 0): "
                "--setup and --cells take code cells' indices"
            )
        if i == params[0]:
            raise SystemExit(f"cell {i} is the parameters cell, which always runs first: leave it out")
    if sorted(setup + cells) != setup + cells or len(set(setup + cells)) != len(setup + cells):
        raise SystemExit("--setup and --cells must come in the notebook's order, each once, the setup cells first")
    out = nbformat.v4.new_notebook(metadata=copy.deepcopy(nb.metadata))
    # the parameters cell reads the mode from KFC_QUICK (set for the kernel) and derives its sizes from it
    mode = nbformat.v4.new_code_cell(f"assert QUICK is {quick}, 'the parameters cell did not take KFC_QUICK'")
    out.cells = [copy.deepcopy(nb.cells[params[0]]), mode, *(copy.deepcopy(nb.cells[i]) for i in setup + cells)]
    for cell in out.cells:
        cell.outputs, cell.execution_count = [], None
    return out, list(range(len(out.cells) - len(cells), len(out.cells)))


def whole_notebook(nb):
    """The whole notebook with its outputs cleared: every cell in its place, every code cell timed."""
    out = copy.deepcopy(nb)
    for cell in out.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return out


def stated_rows(nb, run, position: dict, targets: list, mode: str) -> list[dict]:
    """One row per timed target of ``nb``: a code cell's index, or None for the whole notebook (the sum of every
    code cell of ``run``, the executed notebook); ``position`` maps a target cell to its place in ``run``."""
    from kfc_lite.notebooks import cell_seconds, stated_seconds

    stated = {index: (quick, full) for index, quick, full in stated_seconds(nb)}
    rows = []
    for index in targets:
        quick, full = stated.get(index, (None, None))
        if index is None:
            times = [cell_seconds(c) for c in run.cells if c.cell_type == "code"]
            took, first = (None if None in times else sum(times)), "(the whole notebook)"
        else:
            took = cell_seconds(run.cells[position[index]])
            first = next((line for line in nb.cells[index].source.splitlines() if line.strip()), "")
        rows.append({"cell": index, "first_line": first, "stated_s": quick if mode == "quick" else full})
        rows[-1]["measured_s"] = took
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("notebook", type=pathlib.Path)
    p.add_argument("--cells", type=int, nargs="+", default=[], help="the code cells to time (indices from 0)")
    p.add_argument("--setup", type=int, nargs="*", default=[], help="code cells the timed ones need, run untimed")
    p.add_argument("--whole", action="store_true", help="run the whole notebook; table every stated time in it")
    p.add_argument("--mode", choices=("full", "quick"), default="full")
    p.add_argument(
        "--timeout",
        type=float,
        help="seconds any one cell may take before its kernel is taken for stuck and the notebook run once more "
        "(default: 600 in quick mode, 4 hours in full mode)",
    )
    p.add_argument("--out", type=pathlib.Path, default=HERE / "results")
    p.add_argument("--keep", type=pathlib.Path, help="run in this folder and keep it (default: a scratch folder)")
    p.add_argument("--note", default="", help="a line for the table: what else the machine was doing, say")
    a = p.parse_args(argv)

    import nbformat

    nb = nbformat.read(a.notebook, as_version=4)
    if a.whole and (a.cells or a.setup):
        raise SystemExit("--whole runs every cell: leave out --cells and --setup")
    if a.whole:
        from kfc_lite.notebooks import stated_seconds

        run = whole_notebook(nb)
        targets = [index for index, _, _ in stated_seconds(nb)]
        if not targets:
            raise SystemExit(f"{a.notebook} states no run time (no <!-- seconds ... --> marker): nothing to compare")
        position = {t: t for t in targets if t is not None}  # the same cells, in the same places
    else:
        run, timed = timing_notebook(nb, a.mode == "quick", a.setup, a.cells)  # refuses bad cells before an import
        targets, position = list(a.cells), dict(zip(a.cells, timed, strict=True))
    from kfc_lite.notebooks import execute_notebook
    from kfc_lite.sweep.report import machine

    folder = a.keep or pathlib.Path(tempfile.mkdtemp(prefix="notebook-times-"))
    folder.mkdir(parents=True, exist_ok=True)
    timeout = a.timeout or (600 if a.mode == "quick" else 4 * 3600)
    t0 = time.perf_counter()
    try:
        # the kernel takes the mode from KFC_QUICK; a kernel that stops answering is retried once on a fresh one
        env = {"KFC_QUICK": "1" if a.mode == "quick" else "0"}
        run = execute_notebook(run, folder, env=env, timeout=timeout, attempts=2)
    finally:
        if a.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    wall = time.perf_counter() - t0

    rows = stated_rows(nb, run, position, targets, a.mode)
    command = "benchmarks/notebook_times.py " + shlex.join(sys.argv[1:] if argv is None else map(str, argv))
    stem = f"notebook-times-{a.notebook.stem}-{a.mode}"
    raw = {"command": command, "machine": machine(threads=False), "note": a.note, "mode": a.mode, "cells": rows}
    a.out.mkdir(parents=True, exist_ok=True)  # the raw times first: a long run's measurement is kept whatever follows
    (a.out / f"{stem}.json").write_text(json.dumps(raw, indent=2))
    written = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"

    lines = [
        f"# Run times of `{a.notebook.name}` in {a.mode} mode, against what its text states",
        "",
        f"* command: `{command}`",
        f"* machine: {machine(threads=False)} (the notebook sets its kernel's threads itself)",
        *([f"* note: {a.note}"] if a.note else []),
        f"* written: {written}; {wall:.0f} s in all, kernel start and the untimed setup cells included",
        "",
        "| cell | its first line | stated s | measured s | measured / stated |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        took = "-" if r["measured_s"] is None else f"{r['measured_s']:.0f}"
        ratio = f"{r['measured_s'] / r['stated_s']:.2f}" if r["stated_s"] and r["measured_s"] is not None else "-"
        said = "-" if r["stated_s"] is None else f"{r['stated_s']:g}"
        cell = "all" if r["cell"] is None else r["cell"]
        lines.append(f"| {cell} | `{r['first_line'][:60]}` | {said} | {took} | {ratio} |")
    text = "\n".join(lines) + "\n"
    print(text)
    write_results(a.out, stem, text, raw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
