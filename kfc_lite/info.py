"""A report of versions, the device and the dataset cache, for notebook 00 and ``kfc-lite info``."""

from __future__ import annotations

import importlib
import os
import platform
import sys

PACKAGES = ["torch", "numpy", "scipy", "matplotlib", "ipywidgets", "gymnasium", "mujoco", "h5py", "tqdm", "jupyterlab"]
OPTIONAL = ["minari", "d4rl", "gym"]


def dataset_dir() -> str:
    """The D4RL cache folder: ``$D4RL_DATASET_DIR``, else ``~/.d4rl/datasets`` (the ``d4rl`` package's own)."""
    return os.path.expanduser(os.environ.get("D4RL_DATASET_DIR", os.path.join("~", ".d4rl", "datasets")))


def _version(name: str) -> str | None:
    try:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version(name)
        except PackageNotFoundError:
            mod = importlib.import_module(name)
            return getattr(mod, "__version__", "installed")
    except Exception:
        return None


def report() -> dict:
    """Versions, device and paths as a dict (printable with :func:`format_report`)."""
    from kfc_lite import __version__
    from kfc_lite.settings import quick_mode, resolve_device

    info = {
        "kfc_lite": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {name: _version(name) or "missing" for name in PACKAGES},
        "optional": {name: _version(name) or "not installed" for name in OPTIONAL},
        "dataset_dir": dataset_dir(),
        "quick_mode": quick_mode(),
    }
    try:
        import torch

        dev = resolve_device("auto")
        info["device"] = str(dev)
        info["threads"] = torch.get_num_threads()
        if dev.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(dev)
        info["cpu_bf16"] = _cpu_has_bf16()
    except Exception as exc:  # torch missing or broken: say so instead of failing the report
        info["device"] = f"unavailable ({exc})"
    return info


def cpu_name() -> str:
    """The CPU's model name and the vector instruction set torch's kernels dispatch to on it (``AMD EPYC,
    AVX512``). Machines of one model name differ in it (AVX2 or AVX-512), and with it in their floating-point
    results and speed, so every benchmark and report names both."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    try:
        import torch

        return f"{name}, {torch.backends.cpu.get_cpu_capability()}"
    except ImportError:
        return name


def _cpu_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        return False


def format_report(info: dict | None = None) -> str:
    info = info or report()
    lines = [f"kfc-lite {info['kfc_lite']} on Python {info['python']} ({info['platform']})"]
    lines.append(
        f"device: {info.get('device')}"
        + (f" ({info['gpu']})" if "gpu" in info else "")
        + (f", {info['threads']} torch threads" if "threads" in info else "")
    )
    lines.append(f"quick mode: {'on' if info['quick_mode'] else 'off'}")
    lines.append(f"dataset cache: {info['dataset_dir']}")
    lines.append("packages: " + ", ".join(f"{k} {v}" for k, v in info["packages"].items()))
    lines.append("optional: " + ", ".join(f"{k} {v}" for k, v in info["optional"].items()))
    return "\n".join(lines)
