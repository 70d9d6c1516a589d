"""The run folder's rules, at the path they had before training became a package: :mod:`kfc_lite.train.run_folder`
is the module; this name stays so that code importing ``kfc_lite.run_folder`` keeps working."""

from kfc_lite.train.run_folder import *  # noqa: F403
from kfc_lite.train.run_folder import __all__  # noqa: F401
