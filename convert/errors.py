"""The export's errors and the one table that turns them into exit statuses.

Exit status: 0 every gate passed, 1 a gate failed or could not be measured (the failures are printed), 2 bad
input, 3 a conversion failed, 4 the output could not be written (disk full, permissions), 130 interrupted.
Callers (``python -m convert``, ``make bench``) look the status up here instead of guessing it from builtin
exception classes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

GATE_FAILED, BAD_INPUT, CONVERSION_FAILED, WRITE_FAILED, INTERRUPTED = 1, 2, 3, 4, 130


class UsageError(ValueError):
    """Bad arguments or an unusable input; the message says what to do."""


class ConversionError(RuntimeError):
    """A converter, quantizer or the parity comparison could not make or check an artifact (the exporters'
    ``*ExportError`` and ``ParityError`` derive from it)."""


@dataclass(frozen=True)
class Outcome:
    """What an error means for the command: its exit status and the line printed for it."""

    status: int
    message: str


@functools.cache
def exit_table() -> tuple[tuple[type[BaseException], int, str], ...]:
    """``(error type, exit status, message prefix)``, first match wins (imported on first use: the input errors'
    modules pull in torch, which ``--help`` does not need).

    A manifest this project wrote and the runtime rejected is an exporter bug, not bad input, so it comes before the
    input errors (ManifestError is a ValueError too). The model config and the libraries underneath raise ValueError
    for a value that cannot work (a PHI of 9, a negative class count): bad input. FileNotFoundError is a missing
    input, a RuntimeError from a converter library a failed conversion; any other OSError happened while writing.
    """
    from calib_data.store import CalibrationError
    from efficientdet.checkpoint import CheckpointError
    from efficientdet.data.records import DatasetError
    from efficientdet.model.config import ConfigMismatchError
    from runtime.manifest import ManifestError

    return (
        (ManifestError, CONVERSION_FAILED, "conversion failed: "),
        (UsageError, BAD_INPUT, ""),
        (CheckpointError, BAD_INPUT, ""),
        (ConfigMismatchError, BAD_INPUT, ""),
        (DatasetError, BAD_INPUT, ""),
        (CalibrationError, BAD_INPUT, ""),
        (ConversionError, CONVERSION_FAILED, "conversion failed: "),
        (ValueError, BAD_INPUT, ""),
        (FileNotFoundError, BAD_INPUT, ""),
        (RuntimeError, CONVERSION_FAILED, "conversion failed: "),
    )


def outcome(error: BaseException) -> Outcome | None:
    """The exit status and message for ``error``, or None for an error no command should swallow (a bug)."""
    from runtime.fileio import write_error

    for kind, status, prefix in exit_table():
        if isinstance(error, kind):
            return Outcome(status, f"error: {prefix}{error}")
    if isinstance(error, OSError):
        return Outcome(WRITE_FAILED, f"error: {write_error(error)}")
    return None
