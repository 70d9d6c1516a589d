"""The library stays readable as it grows: modules a reader can hold in mind, and the lesson's pieces where
docs/design.md says they are."""

import ast

from conftest import ROOT

#: about 400 lines: past that a module holds more than one idea; split it by idea (docs/design.md, 'Layout')
MAX_MODULE_LINES = 420


def test_no_library_module_is_over_about_400_lines():
    sizes = {
        str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in sorted((ROOT / "kfc_lite").rglob("*.py"))
    }
    assert len(sizes) > 50  # the walk found the library
    too_long = {path: n for path, n in sizes.items() if n > MAX_MODULE_LINES}
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines (split each by idea): {too_long}"


def _defined(path: str) -> set[str]:
    tree = ast.parse((ROOT / path).read_text())
    return {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}


def test_the_method_is_found_in_one_named_function_each():
    """A reader looking for the KFC++ shift, the CQL loss or the training step finds each in one named place."""
    assert "kfcpp_shift" in _defined("kfc_lite/symmetry.py")
    assert "cql_penalty" in _defined("kfc_lite/rl/losses.py")
    assert "ReferenceSACCQL" in _defined("kfc_lite/rl/reference.py")
    loop = (ROOT / "kfc_lite/train/offline.py").read_text()
    assert "augmented = augmenter(batch)" in loop and "agent.update(batch, augmented" in loop
