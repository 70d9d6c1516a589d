"""Build the course's website: ``python -m tools.book`` (``make book``) writes build/book/html/index.html and a page
per notebook, with its outputs and figures.

The notebooks and an index page made from README.md's table of notebooks are staged in build/book/src/, and Sphinx
with myst-nb (configuration in docs/book/conf.py) executes and renders them there, so the notebooks in notebooks/
stay without outputs and their run folders land in the staging folder (myst-nb keeps the outputs it extracts in
build/book/jupyter_execute/). Execution follows ``KFC_QUICK`` like every
notebook (``make book`` sets quick mode unless told ``KFC_QUICK=0``); with ``--execute cache`` (the default) a
notebook is run again only when its code changed, with one cache for each mode.

Solution cells are shown folded ("Show the code"): the page is the notebook as it runs, its checks passing, and a
reader opens a solution on purpose. ``--solutions remove`` leaves them out (a course website during a term).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import shutil
import subprocess
import sys

import nbformat

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere: kfc_lite is importable from the checkout

from kfc_lite.notebooks import SOLUTION_TAG, notebook_paths, tags  # noqa: E402

CONF_DIR = ROOT / "docs" / "book"
#: seconds a quick-mode cell may run before its kernel is taken for stuck (the notebook tests allow 240)
QUICK_CELL_TIMEOUT = 300
#: how a build that failed on a stuck or dead kernel reads
STUCK = re.compile(r"CellTimeoutError|DeadKernelError|timed out|Kernel died")
#: what a solution cell is tagged with in the book (myst-nb's tags), by --solutions
SOLUTION_TAGS = {"hide": ["hide-input"], "remove": ["remove-cell"], "show": []}


def notebook_title(nb) -> str:
    """The notebook's title: the first line of its first cell, without the '# '."""
    first = nb.cells[0].source.strip().split("\n")[0] if nb.cells else ""
    return first.lstrip("#").strip() or "untitled"


def readme_section(readme: str, heading: str) -> str:
    """The text of README's section whose '## ' heading contains ``heading`` (case-insensitive), or ''."""
    match = re.search(rf"^## [^\n]*{re.escape(heading)}[^\n]*\n(.*?)(?=^## |\Z)", readme, re.M | re.S | re.I)
    return match.group(1).strip() if match else ""


def index_page(readme: str, staged: dict[str, str], quick: bool) -> str:
    """The book's index page: README's introduction and its table of notebooks, each staged notebook linked to its
    page (``staged``: stem -> title); a staged notebook the table does not name gets a row of its own."""
    title = next((ln[2:].strip() for ln in readme.split("\n") if ln.startswith("# ")), "kfc-lite")
    intro = readme_section(readme, "What this is")
    section = readme_section(readme, "notebooks")
    table = [ln for ln in section.split("\n") if ln.startswith("|")]
    rows, named = [], set()
    for line in table[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        stem = cells[0].strip("`")
        if stem in staged:
            cells[0] = f"[{staged[stem]}]({stem}.ipynb)"
            named.add(stem)
        rows.append("| " + " | ".join(cells) + " |")
    rows += [f"| [{t}]({stem}.ipynb) | |" for stem, t in staged.items() if stem not in named]
    header = table[:2] if len(table) >= 2 else ["| notebook | what you leave knowing |", "| --- | --- |"]
    mode = "quick mode (`KFC_QUICK=1`: small sizes, few steps)" if quick else "full mode (`KFC_QUICK=0`)"
    toctree = "\n".join(staged)
    return f"""# {title}

{intro}

## The notebooks

{chr(10).join(header + rows)}

Every page is its notebook as it ran for this website, in {mode}, with its outputs and figures. The interactive
explorers answer a moving slider only in a running notebook: open the course with `make lab` to use them, and to
do the exercises (the solutions are folded under "Show the code" below each exercise's stub).

```{{toctree}}
:hidden:
:maxdepth: 1

{toctree}
```
"""


def stage(src_dir: pathlib.Path, notebooks: list[pathlib.Path], solutions: str, quick: bool) -> dict[str, str]:
    """Write the notebooks (solution cells tagged for the book) and index.md into ``src_dir``; a file whose content
    is unchanged is left alone, so Sphinx and the execution cache see it unchanged. Returns stem -> title."""
    src_dir.mkdir(parents=True, exist_ok=True)
    staged = {}
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if SOLUTION_TAG in tags(cell):
                cell.metadata["tags"] = tags(cell) + [t for t in SOLUTION_TAGS[solutions] if t not in tags(cell)]
        write_if_changed(src_dir / path.name, nbformat.writes(nb) + "\n")
        staged[path.stem] = notebook_title(nb)
    for old in src_dir.glob("*.ipynb"):
        if old.stem not in staged:
            old.unlink()  # a notebook left from an earlier build of other notebooks would get a page
    write_if_changed(src_dir / "index.md", index_page((ROOT / "README.md").read_text(), staged, quick))
    return staged


def write_if_changed(path: pathlib.Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def build(
    book: pathlib.Path,
    only: list[str] | None = None,
    execute: str = "cache",
    solutions: str = "hide",
    cell_timeout: int | None = None,
) -> int:
    """Stage the notebooks (those whose number or stem is in ``only``, or all) in ``book``/src and run Sphinx into
    ``book``/html; returns its exit code. ``execute`` is myst-nb's ``nb_execution_mode`` (cache, force, auto, off);
    ``cell_timeout`` the seconds a cell may run (default: QUICK_CELL_TIMEOUT in quick mode, no limit in full mode)."""
    src_dir = book / "src"
    paths = notebook_paths(ROOT / "notebooks")
    if only:
        paths = [p for p in paths if p.stem in only or p.name[:2] in only]
        if not paths:
            raise SystemExit(f"no notebook in notebooks/ is called {only}")
    quick = os.environ.get("KFC_QUICK", "1") != "0"
    os.environ["KFC_QUICK"] = "1" if quick else "0"  # the kernels inherit it
    mode = "quick" if quick else "full"
    stage(src_dir, paths, solutions, quick)
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-c", str(CONF_DIR),
           "-d", str(src_dir / f".doctrees-{mode}"),
           "-D", f"nb_execution_mode={execute}",
           "-D", f"nb_execution_cache_path={src_dir / f'.jupyter_cache-{mode}'}",
           "-D", f"nb_execution_timeout={cell_timeout or (QUICK_CELL_TIMEOUT if quick else -1)}",
           str(src_dir), str(book / "html")]  # fmt: skip
    for attempt in range(2):
        code, output = run_and_echo(cmd, cwd=src_dir)
        if code == 0 or attempt == 1 or not STUCK.search(output):
            return code
        # a kernel that went quiet (see tests/test_notebooks.py): once more, on fresh kernels; in cache mode the
        # notebooks already executed are not run again
        print("a notebook's kernel stopped answering: building once more", file=sys.stderr)
    return code


def run_and_echo(cmd: list[str], cwd: pathlib.Path) -> tuple[int, str]:
    """Run ``cmd``, its output passed through as it comes; returns its exit code and the last of its output."""
    tail: list[str] = []
    with subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            sys.stdout.write(line)
            tail = (tail + [line])[-400:]
    sys.stdout.flush()
    return proc.returncode, "".join(tail)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.book", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=ROOT / "build" / "book",
        help="the book's folder: the website in html/, the executed notebooks and their cache in src/",
    )
    parser.add_argument("--only", nargs="+", metavar="NB", help="only these notebooks (numbers such as 01, or stems)")
    parser.add_argument(
        "--execute",
        choices=["cache", "force", "auto", "off"],
        default="cache",
        help="myst-nb's execution mode (default: cache, re-run a notebook when its code changed)",
    )
    parser.add_argument(
        "--solutions",
        choices=sorted(SOLUTION_TAGS),
        default="hide",
        help="solution cells folded (hide, the default), left out (remove) or shown (show)",
    )
    parser.add_argument(
        "--cell-timeout",
        type=int,
        metavar="SECONDS",
        help=f"seconds a cell may run (default {QUICK_CELL_TIMEOUT} in quick mode, none in full mode)",
    )
    parser.add_argument("--clean", action="store_true", help="start afresh: the book's folder emptied first")
    args = parser.parse_args(argv)
    if args.clean and args.out.exists():
        shutil.rmtree(args.out)
    code = build(args.out.resolve(), args.only, args.execute, args.solutions, args.cell_timeout)
    if code == 0:
        print(f"the book is in {args.out / 'html'}: open {args.out / 'html' / 'index.html'}")
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
