"""The errors camlab reports to the user as one line (``camlab: error: ...``), without a traceback.

Library code raises them with messages in its own argument names (``skip_corrupt=True``); ``settings`` names the
arguments a :class:`ConfigError` is about, and an entry point turns them into the config keys the user sets
(:func:`camlab.runtime.app.describe_error`). No imports beyond the standard library: every module may use them.

>>> err = DataError("cannot read image x.jpg; set skip_corrupt=True to skip it", settings=["skip_corrupt"])
>>> isinstance(err, ConfigError) and isinstance(err, ValueError), err.settings
(True, ('skip_corrupt',))
>>> str(err)
'cannot read image x.jpg; set skip_corrupt=True to skip it'
>>> err.within("val_dataset").settings  # raised by the val_dataset factory of a data module
('val_dataset.skip_corrupt',)
"""

from __future__ import annotations

from typing import Iterable

__all__ = ["CompareError", "ConfigError", "DataError", "DataFilesNotFound", "OutputError", "PredictError",
           "RunInterrupted", "TrainingDiverged"]


class ConfigError(ValueError):
    """A configuration or input problem the user can fix; reported as one line.

    Args:
        message: what is wrong and what to do, in the raising code's argument names.
        settings: the arguments the message is about (the ones to change), as names of the raising object's
            arguments; dotted (``val_dataset.length``) where an enclosing object says whose argument it is.
    """

    def __init__(self, message: str, *, settings: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.settings = tuple(settings)

    def within(self, argument: str) -> ConfigError:
        """This error, its settings prefixed by ``argument`` (the enclosing object's argument that raised it)."""
        self.settings = tuple(f"{argument}.{s}" for s in self.settings)
        return self


class DataError(ConfigError):
    """Bad input data (a missing file, a bad line, an unreadable image); reported as one line."""


class DataFilesNotFound(ConfigError, FileNotFoundError):
    """A dataset root or file is missing; the message names it and the expected layout."""


class TrainingDiverged(ConfigError):
    """The training loss (or the weights) became NaN or infinite: the run stops at once, before a bad step or a
    checkpoint of such weights; reported as one line (what to change: the learning rate, the precision). In a
    sweep the trial is recorded as failed and the sweep goes on (see :func:`camlab.runtime.app.run_app`)."""


class OutputError(ConfigError):
    """An output file could not be written (read-only or full disk); the message names the path."""


class RunInterrupted(Exception):
    """The run was stopped by a termination signal (SIGTERM) after saving its state; one line, and the exit code
    ``exit_code`` (128 + the signal number, the shell's convention), so a scheduler sees a failed job."""

    def __init__(self, message: str, exit_code: int = 143) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class PredictError(Exception):
    """A user-fixable problem of ``camlab-predict``; printed as ``camlab: error: ...`` without a traceback."""


class CompareError(Exception):
    """A problem with the input of ``camlab-compare``: reported as one line, exit code 2."""
