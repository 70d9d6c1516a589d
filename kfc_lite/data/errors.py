"""Errors of the data layer: each message names the file or dataset, what is wrong, and the fix."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset file or dict that is not a usable D4RL dataset (missing key, bad shape, NaN, truncated file)."""


class DatasetMismatchError(DatasetError):
    """A readable dataset that is not the one its name promises (another environment, size or row count).

    Unlike a damaged download, such a file may be someone's data under the wrong name: it is refused, never deleted.
    """


class DownloadError(RuntimeError):
    """A download that did not finish (network error, server cut the connection, checksum mismatch)."""


class DownloadLockedError(DownloadError):
    """Another process is downloading the same file, and we were told not to wait (longer) for it."""


class OutputExistsError(FileExistsError, ValueError):
    """A file would be replaced, and nobody asked for that (``--overwrite``).

    A ``ValueError`` too, so callers that catch bad input (the command line) report it as a sentence.
    """


class UnknownDatasetError(KeyError, ValueError):
    """A dataset or environment name we do not know; the message lists close matches.

    It is both a ``KeyError`` (a failed look-up in a registry) and a ``ValueError`` (bad input), so callers may
    catch either. ``KeyError`` normally shows its message in quotes; ``__str__`` gives it back plain.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
