"""Lazy package namespaces: ``from kfc_lite.koopman import DMD`` imports only the submodule that defines it,
so the NumPy-only parts of the course do not pay for importing torch."""

import importlib


def lazy_exports(package: str, exports: dict[str, str]):
    """Module ``__getattr__`` and ``__dir__`` for ``package`` whose public names live in submodules
    (``exports``: name -> submodule)."""

    def __getattr__(name):
        if name in exports:
            return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(exports)

    return __getattr__, __dir__
