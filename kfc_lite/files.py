"""Files written so that a crash or a stopped run never leaves half of one behind."""
from __future__ import annotations

import os
import pathlib
import tempfile


def atomic_torch_save(obj, path) -> pathlib.Path:
    """``torch.save`` to a temporary file in the same folder, then rename it into place."""
    import torch

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
