"""Run-wide settings: quick mode, device selection, seeding and the process's environment.

One code path serves the CPU and the GPU: the device is a parameter, never a fork in the code.
"""

from __future__ import annotations

import contextlib
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
        raise ValueError(
            f"{QUICK_ENV}={value!r} is not understood: use {QUICK_ENV}=1 for quick mode or {QUICK_ENV}=0 for full mode"
        )
    if os.environ.get(BINDER_ENV):
        return True
    return default


@contextlib.contextmanager
def environ(**values: str):
    """``os.environ`` with ``values`` for the ``with`` block (a process started inside inherits them), as it was
    after for those keys only. ``unittest.mock.patch.dict`` would restore the whole mapping, undoing what the block
    itself set on purpose (``ray.init`` sets ``PYTHONBREAKPOINT`` for the driver)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


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


MALLOC_ENV = "KFC_MALLOC_TUNING"
#: glibc ``mallopt`` parameters (malloc.h): M_TRIM_THRESHOLD, M_MMAP_THRESHOLD
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: the largest mmap threshold glibc accepts on 64-bit (HEAP_MAX_SIZE / 2)
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 2**30
_allocator_tuned: bool | None = None


def tune_cpu_allocator() -> bool:
    """Keep the C allocator from handing a training step's large temporaries back to the kernel every step.

    glibc's ``malloc`` serves blocks above a threshold (128 KiB, raised on the fly up to 32 MiB) with a fresh
    ``mmap`` and returns them with ``munmap`` when freed, and it gives the top of its heap back once more than
    a threshold is free there. A CQL step allocates and frees dozens of (7680, 256) activations and gradients
    (7.5 MiB each in fp32), so each step touched ~45 MiB of new pages: ~12,000 page faults, each a kernel
    entry that zero-fills 4 KiB. Its effect on the step time is in benchmarks/NOTES.md ('Settings the code
    makes, and why').

    This sets ``M_MMAP_THRESHOLD`` to 32 MiB (blocks below it come from the heap and are reused) and
    ``M_TRIM_THRESHOLD`` to 1 GiB (the heap keeps what a step freed for the next one). Within training the peak memory
    is the same: the step's high-water mark of temporaries stays resident instead of being re-faulted. The setting holds
    for the whole process and every library in it, so memory freed in blocks under 32 MiB is kept (up to 1 GiB above the
    heap's top) rather than returned: training and :func:`~kfc_lite.koopman.fit.fit_koopman` call
    :func:`release_cpu_memory` when they end, which returns what is free. Blocks of 32 MiB and more (datasets) are
    mapped and unmapped as glibc does by default.

    Called when a training run starts (:func:`kfc_lite.train.train`, :func:`~kfc_lite.train.train_online_sac`,
    :func:`kfc_lite.koopman.fit_koopman`), not when an agent is built, so that a notebook or a test that only
    builds agents leaves the process as it found it. It acts once per process, only with glibc (Linux), and
    ``KFC_MALLOC_TUNING=0`` turns it off. PyTorch's CPU tuning guide reaches the same end by preloading jemalloc
    or tcmalloc; this needs no extra library. Returns whether the setting is in effect.
    """
    global _allocator_tuned
    if _allocator_tuned is not None:
        return _allocator_tuned
    value = os.environ.get(MALLOC_ENV, "1").strip().lower()
    if value not in ("", "1", "true", "yes", "on", "0", "false", "no", "off"):
        raise ValueError(
            f"{MALLOC_ENV}={value!r} is not understood: use {MALLOC_ENV}=0 to leave the C allocator "
            f"as it is, or {MALLOC_ENV}=1 (the default)"
        )
    _allocator_tuned = False
    if value in ("0", "false", "no", "off"):
        return False
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    import ctypes

    mallopt = _libc_function("mallopt", (ctypes.c_int, ctypes.c_int))
    if mallopt is None:
        return False
    _allocator_tuned = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _allocator_tuned


def release_cpu_memory() -> bool:
    """Give the C heap's free memory back to the system (glibc ``malloc_trim(0)``), where the allocator setting
    of :func:`tune_cpu_allocator` is in effect; returns whether memory was released. Called when a training
    run or a Koopman fit ends."""
    if not _allocator_tuned:
        return False
    import ctypes

    trim = _libc_function("malloc_trim", (ctypes.c_size_t,))
    return bool(trim(0)) if trim is not None else False


def _libc_function(name: str, argtypes: tuple):
    """glibc's ``int name(argtypes...)`` through ctypes, or None where it cannot be loaded."""
    import ctypes

    try:
        fn = getattr(ctypes.CDLL("libc.so.6"), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = argtypes, ctypes.c_int
    return fn


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells it, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def thread_pool(workers: int, threads_each: int = 1, name: str = "kfc_lite"):
    """A ``ThreadPoolExecutor`` of ``workers`` threads whose torch ops use ``threads_each`` intra-op threads,
    leaving the calling thread's own count as it was.

    How PyTorch (OpenMP builds) behaves, measured with torch 2.13: ``torch.set_num_threads`` sets the calling thread's
    OpenMP count *and* a process-wide value, and a thread that has not read its count yet adopts the process-wide value
    when it first does. So a training thread that had called ``set_num_threads(2)`` ran its products on one thread as
    soon as a worker had called ``set_num_threads(1)``. Here the caller's count is read (fixed) first, each worker sets
    and reads its own as it starts, every worker is started at once (a barrier makes each first task land on a thread of
    its own, and the executor never starts more), and the process-wide value is set back to what it was (read, and set
    back, on a fresh thread, so that a pool made from inside another pool's worker leaves the process as it found it). A
    worker that fails to start releases the others and the call raises.
    """
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import torch

    if not (isinstance(workers, int) and workers >= 1 and isinstance(threads_each, int) and threads_each >= 1):
        raise ValueError(f"workers and threads_each must be positive integers, got {workers!r} and {threads_each!r}")
    caller = torch.get_num_threads()  # (the first call in a thread fixes its count: see below)
    process_wide = _in_fresh_thread(torch.get_num_threads)  # what a thread started now would take
    barrier = threading.Barrier(workers)

    def start(n: int) -> None:
        try:
            _fix_thread_count(n)
        except BaseException:
            barrier.abort()  # the other workers stop waiting; their first task raises BrokenBarrierError
            raise

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name, initializer=start, initargs=(threads_each,))
    try:
        for f in [pool.submit(barrier.wait) for _ in range(workers)]:
            f.result()
    except (threading.BrokenBarrierError, RuntimeError) as e:  # RuntimeError: a broken executor
        pool.shutdown(wait=False)
        raise RuntimeError(f"could not start the {name} worker threads: {e!r}") from e
    finally:
        _in_fresh_thread(lambda: torch.set_num_threads(process_wide))  # the process-wide value as it was
        if torch.get_num_threads() != caller:  # (only if the caller had not read its count before)
            torch.set_num_threads(caller)
    return pool


def _in_fresh_thread(fn):
    """``fn()`` run on a new thread (one that has not read its torch thread count yet); returns its result."""
    import threading

    out = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join()
    return out[0] if out else None


def _fix_thread_count(n: int) -> None:
    """Set this thread's torch thread count for good: a thread adopts the process-wide count when it first
    reads it, and keeps its own from then on."""
    import torch

    torch.set_num_threads(n)
    torch.get_num_threads()
