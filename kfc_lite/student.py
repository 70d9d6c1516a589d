"""Write the student edition of the course: ``python -m kfc_lite.student notebooks build/student``.

Solution cells (tagged ``solution``) are removed and outputs stripped; everything else, the stubs and
the checks included, stays as it is, so the student edition runs top to bottom with every check
saying "not done yet".
"""

from __future__ import annotations

import pathlib
import sys

import nbformat

from kfc_lite.notebooks import notebook_paths, student_edition


def write_student_edition(src, dst) -> list[pathlib.Path]:
    dst = pathlib.Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    written = []
    for path in notebook_paths(src):
        nb = student_edition(nbformat.read(path, as_version=4))
        out = dst / path.name
        nbformat.write(nb, out)
        written.append(out)
    return written


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m kfc_lite.student SOURCE_DIR TARGET_DIR", file=sys.stderr)
        return 2
    for out in write_student_edition(*argv):
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
