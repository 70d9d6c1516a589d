"""Errors of the data layer: each message names the file or dataset, what is wrong, and the fix."""
from __future__ import annotations


class DatasetError(ValueError):
    """A dataset file or dict that is not a usable D4RL dataset (missing key, bad shape, NaN, truncated file)."""


class DownloadError(RuntimeError):
    """A download that did not finish (network error, server cut the connection, checksum mismatch)."""


class UnknownDatasetError(KeyError, ValueError):
    """A dataset or environment name we do not know; the message lists close matches.

    It is both a ``KeyError`` (a failed look-up in a registry) and a ``ValueError`` (bad input), so callers may
    catch either. ``KeyError`` normally shows its message in quotes; ``__str__`` gives it back plain.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
