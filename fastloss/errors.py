"""The errors a user can cause and fix: bad files, bad data, bad settings.

Every one of them is a `FastlossError`, and also the built-in exception a Python caller would
expect (a bad value is a ``ValueError``, a missing file a ``FileNotFoundError``, ...). The
command line prints the message of a `FastlossError` on one line, without a traceback, and
exits with status 2. Messages name the Python API's arguments (``overwrite=True``); the
command line shows them as its flags (``--overwrite``).
"""

from __future__ import annotations


class FastlossError(Exception):
    """A problem with the caller's input that the caller can fix."""


class ArgumentError(FastlossError, ValueError):
    """An argument or setting with a value fastloss cannot use: a shape, a range, an option,
    a module the batched model cannot run."""


class ArgumentTypeError(FastlossError, TypeError):
    """An argument of a type fastloss cannot use."""


class DataError(FastlossError, ValueError):
    """A data set that cannot be used: its shapes, labels or values, or an unreadable file."""


class FileFormatError(FastlossError, ValueError):
    """A file that exists but is not what it should be: corrupt, truncated, another format."""


class NotFoundError(FastlossError, FileNotFoundError):
    """A file or folder that is not there."""


class OutputExistsError(FastlossError, FileExistsError):
    """An output that exists and would be replaced or mixed with other results; finished
    results are never overwritten unless asked (``overwrite=True``)."""


class OutputWriteError(FastlossError, OSError):
    """An output that cannot be written: its folder is read-only or the disk is full. Finished
    results are left as they were."""


class SurfaceFileError(FastlossError, OSError):
    """An existing HDF5 result that cannot be read or written (corrupt, truncated, not HDF5,
    locked by another writer). Such files are never deleted or replaced silently."""


class ProcessGroupError(FastlossError, RuntimeError):
    """A process of a ``torchrun`` group that stalled past the timeout or left (killed,
    crashed); the others stop instead of waiting forever."""


class DivergedError(FastlossError, FloatingPointError):
    """Training or fitting produced a NaN or infinite loss."""


class ResourceError(FastlossError, MemoryError):
    """A job too large for the device's memory, with what to lower."""


class DependencyError(FastlossError, ImportError):
    """A package or module that is needed and cannot be imported."""


class MetricError(FastlossError, KeyError):
    """A metric or profile a result does not hold."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0]) if self.args else ""


class ExtensionMismatchError(DependencyError):
    """The compiled extension was built for another torch or CUDA than the one installed."""
