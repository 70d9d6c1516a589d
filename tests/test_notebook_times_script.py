"""benchmarks/notebook_times.py runs only the cells it is given, in the mode it is given, and tables their times
against the notebook's stated ones; what the full-mode times are is measured by running it
(benchmarks/results/notebook-times-*.md)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import nbformat
import pytest
from conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "notebook_times.py"


def small_notebook(path):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("import kfc_lite\n\nQUICK = kfc_lite.quick_mode()\nNAP = 0.1 if QUICK else 1.2")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        params,
        nbformat.v4.new_code_cell("import time"),  # 1: setup
        nbformat.v4.new_code_cell("raise RuntimeError('a cell nobody asked for ran')"),  # 2: skipped
        nbformat.v4.new_markdown_cell("A nap.\n<!-- seconds: quick=0.1 full=1 -->"),
        nbformat.v4.new_code_cell("time.sleep(NAP)\nprint('slept', NAP)"),  # 4: timed
        nbformat.v4.new_code_cell("time.sleep(0.3)"),  # 5: timed, no stated time
    ]
    nbformat.write(nb, path)
    return path


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=ROOT)


def test_times_the_named_cells_in_full_mode_and_skips_the_others(tmp_path):
    nb = small_notebook(tmp_path / "nap.ipynb")
    out = run(nb, "--setup", 1, "--cells", 4, 5, "--out", tmp_path / "results", "--note", "a quiet machine")
    assert out.returncode == 0, out.stderr[-3000:]
    written = tmp_path / "results" / "notebook-times-nap-full"  # the notebook's stem and the mode
    record = json.loads(written.with_suffix(".json").read_text())
    assert record["mode"] == "full" and [c["cell"] for c in record["cells"]] == [4, 5]
    nap, plain = record["cells"]
    assert nap["stated_s"] == 1.0 and 1.2 <= nap["measured_s"] < 20  # full mode's nap, not quick mode's
    assert plain["stated_s"] is None and 0.3 <= plain["measured_s"] < 20
    table = written.with_suffix(".md").read_text()
    assert "| 4 | `time.sleep(NAP)` | 1 |" in table and "| 5 | `time.sleep(0.3)` | - |" in table
    assert "machine:" in table and "* note: a quiet machine" in table and table in out.stdout


def test_whole_tables_every_stated_time_of_the_whole_notebook_in_quick_mode(tmp_path):
    path = tmp_path / "nap.ipynb"
    nb = nbformat.read(small_notebook(path), as_version=4)
    nb.cells[2].source = "time.sleep(0.2)"  # no longer a cell nobody asked for: the whole notebook runs
    nb.cells.insert(0, nbformat.v4.new_markdown_cell("# Naps\n<!-- seconds notebook: quick=1 full=- -->"))
    nbformat.write(nb, path)
    out = run(path, "--whole", "--mode", "quick", "--out", tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    written = tmp_path / "notebook-times-nap-quick"  # the notebook's stem and the mode
    record = json.loads(written.with_suffix(".json").read_text())
    whole, nap = record["cells"]  # the notebook's own stated time, then the cell's (now cell 5)
    assert whole["cell"] is None and whole["stated_s"] == 1.0 and 0.6 <= whole["measured_s"] < 20  # 0.1+0.2+0.3
    assert nap["cell"] == 5 and nap["stated_s"] == 0.1 and 0.1 <= nap["measured_s"] < 0.6  # quick mode's nap
    assert "| all | `(the whole notebook)` | 1 |" in written.with_suffix(".md").read_text()
    refused = run(path, "--whole", "--cells", 5, "--out", tmp_path)
    assert refused.returncode != 0 and "leave out --cells and --setup" in refused.stderr


@pytest.mark.parametrize(
    "setup,cells,said",
    [
        ([], [3], "cell 3 is not a code cell"),
        ([], [0], "is the parameters cell"),
        ([4], [1], "in the notebook's order"),
        ([], [], "name the cells to time"),
        ("untagged", [4], "needs one cell tagged 'parameters', it has 0: tag the cell that sets QUICK"),
    ],
)
def test_cells_that_cannot_be_timed_are_refused_before_a_kernel_starts(tmp_path, setup, cells, said):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from notebook_times import timing_notebook
    finally:
        sys.path.remove(str(SCRIPT.parent))
    nb = nbformat.read(small_notebook(tmp_path / "nap.ipynb"), as_version=4)
    if setup == "untagged":
        nb.cells[0].metadata["tags"], setup = [], []
    with pytest.raises(SystemExit, match=re.escape(said)):
        timing_notebook(nb, False, setup, cells)


def test_the_command_in_the_notes_names_the_cells_it_means():
    """benchmarks/NOTES.md times notebook 05's own pendulum runs by cell index: the indices must still be the cell
    with a stated full-mode time and the cells it needs (the imports, the committed evidence it compares with)."""
    from kfc_lite.notebooks import stated_seconds

    notes = (ROOT / "benchmarks" / "NOTES.md").read_text()
    found = re.search(r"`benchmarks/notebook_times\.py (\S+) --setup ([\d ]+) --cells ([\d ]+)`", notes)
    assert found, "benchmarks/NOTES.md gives no notebook_times.py command"
    nb = nbformat.read(ROOT / found.group(1), as_version=4)
    setup, cells = ([int(i) for i in found.group(k).split()] for k in (2, 3))
    full = {index for index, _, f in stated_seconds(nb) if index is not None and f is not None}
    assert set(cells) <= full, f"cells {cells} of {found.group(1)} state no full-mode time (those that do: {full})"
    needs = "".join(nb.cells[i].source for i in setup)
    assert "from kfc_lite.train import" in needs and "evidence.load(" in needs
