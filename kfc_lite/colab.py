"""Running the course on Google Colab: the "Open in Colab" badge and the first code cell of notebooks 02 to 05.

The cell's source lives here, once (:data:`CELL_SOURCE`); notebooks hold copies that a test compares with it.
Inside Colab (``"google.colab" in sys.modules``) the cell installs the course from its repository with pip and
reports the GPU (``device="auto"`` then uses it), or says how to switch the runtime to one; anywhere else it does
nothing, so the same notebook runs unchanged locally, on Binder and in the tests.

Put the badge and the cell into a notebook (again after a change here, to refresh the copy)::

    python -m kfc_lite.colab insert notebooks/03_symmetries_of_dynamics.ipynb
"""

from __future__ import annotations

import pathlib
import sys

REPOSITORY = "kfc-lite/kfc-lite"
BRANCH = "main"
#: what pip installs inside Colab (Colab's own CUDA build of torch already satisfies the course's torch range)
PIP_REQUIREMENT = f"kfc-lite @ git+https://github.com/{REPOSITORY}@{BRANCH}"
TAG = "colab-setup"
CELL_ID = "colab-setup"

#: The first code cell. Self-contained: in a fresh Colab runtime ``kfc_lite`` is not installed yet.
CELL_SOURCE = f'''\
# Colab only: install the course and check the GPU. Anywhere else (your machine, Binder, the tests) this does nothing.
import sys

if "google.colab" in sys.modules:
    import subprocess

    requirement = "{PIP_REQUIREMENT}"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", requirement], check=True)
    import torch

    if torch.cuda.is_available():
        print(f"Colab: kfc-lite installed; GPU {{torch.cuda.get_device_name(0)}} found, device='auto' uses it.")
    else:
        print("Colab: kfc-lite installed, but this runtime has no GPU, so everything runs on the CPU (slowly in "
              "full mode). For a GPU: Runtime > Change runtime type > Hardware accelerator: a GPU (T4 is enough) "
              "> Save, then run the notebook again from the top.")'''


def colab_url(notebook_name: str) -> str:
    """The address that opens ``notebooks/<notebook_name>`` of the repository in Colab."""
    return f"https://colab.research.google.com/github/{REPOSITORY}/blob/{BRANCH}/notebooks/{notebook_name}"


def badge(notebook_name: str) -> str:
    """The Markdown line with the "Open in Colab" badge for one notebook."""
    return (
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(notebook_name)})"
        " runs this notebook in Google Colab, with a GPU; its first code cell installs the course there."
    )


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def setup_cells(nb) -> list:
    """The notebook's cells tagged ``colab-setup``."""
    return [c for c in nb.cells if c.cell_type == "code" and TAG in _tags(c)]


def problems(nb, notebook_name: str) -> list[str]:
    """What is missing or stale about Colab in a notebook (an nbformat node): the badge and the setup cell."""
    out = []
    if not nb.cells or colab_url(notebook_name) not in nb.cells[0].source:
        out.append(f"the first cell has no Open-in-Colab badge for {notebook_name}")
    cells = setup_cells(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    if len(cells) != 1:
        out.append(f"expected one code cell tagged '{TAG}', found {len(cells)}")
    elif code[0] is not cells[0]:
        out.append(f"the cell tagged '{TAG}' must be the first code cell (it installs what the others import)")
    elif cells[0].source != CELL_SOURCE:
        out.append(
            f"the '{TAG}' cell differs from kfc_lite.colab.CELL_SOURCE: run "
            f"`python -m kfc_lite.colab insert notebooks/{notebook_name}`"
        )
    return out


def insert(path) -> None:
    """Add (or refresh) the badge in the first cell and the setup cell as the first code cell of a notebook file."""
    import nbformat
    from nbformat.v4 import new_code_cell

    path = pathlib.Path(path)
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    url = colab_url(path.name)
    if url not in first.source:
        lines = first.source.split("\n")
        first.source = "\n".join(lines[:1] + ["", badge(path.name)] + lines[1:])
    existing = setup_cells(nb)
    if existing:
        existing[0].source = CELL_SOURCE
        for extra in existing[1:]:
            nb.cells.remove(extra)
    else:
        cell = new_code_cell(CELL_SOURCE)
        cell.metadata["tags"] = [TAG]
        if not any(c.get("id") == CELL_ID for c in nb.cells):
            cell["id"] = CELL_ID
        at = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"), len(nb.cells))
        nb.cells.insert(at, cell)
    nbformat.validate(nb)
    nbformat.write(nb, path)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or argv[0] != "insert":
        print("usage: python -m kfc_lite.colab insert NOTEBOOK.ipynb [...]", file=sys.stderr)
        return 2
    for name in argv[1:]:
        insert(name)
        print(f"{name}: Colab badge and '{TAG}' cell in place")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
