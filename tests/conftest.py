import os

# Tests run in quick mode with a non-interactive Matplotlib backend, whoever starts them.
os.environ.setdefault("KFC_QUICK", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def root() -> pathlib.Path:
    return ROOT
