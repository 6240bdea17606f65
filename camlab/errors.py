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

__all__ = ["CompareError", "ConfigError", "DataError", "DataFilesNotFound", "PredictError"]


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


class PredictError(Exception):
    """A user-fixable problem of ``camlab-predict``; printed as ``camlab: error: ...`` without a traceback."""


class CompareError(Exception):
    """A problem with the input of ``camlab-compare``: reported as one line, exit code 2."""
