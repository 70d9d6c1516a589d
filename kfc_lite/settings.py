"""Run-wide settings: quick mode, device selection and seeding.

One code path serves the CPU and the GPU: the device is a parameter, never a fork in the code.
"""
from __future__ import annotations

import os
import random

import numpy as np

QUICK_ENV = "KFC_QUICK"
#: Binder sets this variable in every session it starts; quick mode follows from it.
BINDER_ENV = "BINDER_SERVICE_HOST"


def quick_mode(default: bool = False) -> bool:
    """Whether notebooks and scripts should run in quick mode (small sizes, few steps).

    ``KFC_QUICK=1`` turns it on and ``KFC_QUICK=0`` off; when the variable is unset, quick mode is on
    inside Binder (``BINDER_SERVICE_HOST`` is set there) and ``default`` elsewhere.
    """
    value = os.environ.get(QUICK_ENV)
    if value is not None and value.strip() != "":
        v = value.strip().lower()
        if v in ("1", "true", "yes", "on"):
            return True
        if v in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{QUICK_ENV}={value!r} is not understood: use {QUICK_ENV}=1 for quick mode or {QUICK_ENV}=0 for full mode")
    if os.environ.get(BINDER_ENV):
        return True
    return default


def resolve_device(device: str = "auto"):
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"mps"`` into a ``torch.device``.

    ``auto`` picks CUDA when it is present, else the CPU. Asking for a device that is not there is an
    error that says so, never a silent fall-back to the CPU.
    """
    import torch

    if isinstance(device, torch.device):
        device = str(device)
    name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device={device!r} was asked for, but this torch ({torch.__version__}) sees no CUDA GPU. "
                "Use device='auto' or 'cpu', or install a CUDA build of torch on a machine with a GPU."
            )
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RuntimeError(f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
        return dev
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise RuntimeError("device='mps' was asked for, but MPS is not available here; use 'auto' or 'cpu'")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and torch; return a NumPy generator seeded the same way."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    random.seed(int(seed))
    np.random.seed(int(seed) % (2**32))
    try:
        import torch

        torch.manual_seed(int(seed))
    except ImportError:  # pragma: no cover - torch is a dependency, but NumPy-only use stays possible
        pass
    return np.random.default_rng(int(seed))


def silence_mujoco_log() -> None:
    """Stop mujoco >= 4 from writing ``MUJOCO_LOG.TXT`` into the current folder.

    HalfCheetah's XML triggers a deprecation warning ('settotalmass') that MuJoCo writes to a log file
    next to the process; we route MuJoCo's warnings to Python's ``warnings`` instead.
    """
    try:
        import mujoco
    except ImportError:
        return
    import warnings

    setter = getattr(mujoco, "set_mju_user_warning", None)
    if setter is not None:
        setter(lambda msg: warnings.warn(f"MuJoCo: {msg}", RuntimeWarning, stacklevel=2))
