"""The Colab setup cell: inside Colab (a stand-in ``google.colab`` module) it installs the course with pip and reports
the GPU or how to get one; anywhere else it does nothing. The notebooks that carry it hold today's source."""

import subprocess
import sys
import types

import nbformat
import pytest
from conftest import ROOT

from kfc_lite import colab

#: the notebooks that carry the badge and the setup cell (`python -m kfc_lite.colab insert NOTEBOOK` puts them in);
#: 00 and 01 run anywhere in seconds and need no GPU
WITH_COLAB = [
    "02_learning_koopman_with_control.ipynb",
    "03_symmetries_of_dynamics.ipynb",
    "04_offline_rl_with_cql.ipynb",
    "05_kfc_on_d4rl.ipynb",
]


class PipCalls:
    """A stand-in for ``subprocess.run``: records the command instead of running pip."""

    def __init__(self):
        self.calls = []

    def __call__(self, cmd, *args, **kwargs):
        self.calls.append(list(cmd))
        return subprocess.CompletedProcess(cmd, 0)


def run_cell(monkeypatch, in_colab: bool, gpu: bool):
    import torch

    pip = PipCalls()
    monkeypatch.setattr(subprocess, "run", pip)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: "Tesla T4")
    if in_colab:
        google = types.ModuleType("google")
        google.colab = types.ModuleType("google.colab")
        monkeypatch.setitem(sys.modules, "google", google)
        monkeypatch.setitem(sys.modules, "google.colab", google.colab)
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    exec(compile(colab.CELL_SOURCE, "colab-setup", "exec"), {"__name__": "__main__"})
    return pip.calls


def test_inside_colab_the_cell_installs_the_course_from_the_repository(monkeypatch, capsys):
    calls = run_cell(monkeypatch, in_colab=True, gpu=True)
    assert calls == [
        [sys.executable, "-m", "pip", "install", "--quiet", "kfc-lite @ git+https://github.com/kfc-lite/kfc-lite@main"]
    ]
    out = capsys.readouterr().out
    assert "Tesla T4" in out and "device='auto'" in out


def test_inside_colab_without_a_gpu_the_cell_says_how_to_get_one(monkeypatch, capsys):
    calls = run_cell(monkeypatch, in_colab=True, gpu=False)
    assert len(calls) == 1
    out = capsys.readouterr().out
    assert "no GPU" in out and "Change runtime type" in out


def test_outside_colab_the_cell_does_nothing(monkeypatch, capsys):
    assert run_cell(monkeypatch, in_colab=False, gpu=True) == []
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("name", WITH_COLAB)
def test_notebook_carries_the_badge_and_todays_cell(name):
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    assert colab.problems(nb, name) == []


def test_insert_adds_badge_and_cell_once(tmp_path):
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    path = tmp_path / "03_x.ipynb"
    nbformat.write(new_notebook(cells=[new_markdown_cell("# 03 · X\n\ntext"), new_code_cell("QUICK = True")]), path)
    colab.insert(path)
    colab.insert(path)  # a second insertion refreshes, it does not duplicate
    nb = nbformat.read(path, as_version=4)
    assert colab.problems(nb, path.name) == []
    assert nb.cells[0].source.startswith("# 03 · X\n") and nb.cells[0].source.count("colab-badge.svg") == 1
    assert [c.source for c in nb.cells if c.cell_type == "code"] == [colab.CELL_SOURCE, "QUICK = True"]
