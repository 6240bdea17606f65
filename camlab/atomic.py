"""Output files written whole or not at all: a temporary file beside the target, renamed over it when complete.

Every file camlab writes (checkpoints, ``metrics.json``, ``per_image.csv``, curve CSVs, plots, overlays,
predictions, comparison tables) goes through :func:`atomic_write` (or :func:`write_text` / :func:`write_bytes`):
the content goes to a hidden temporary file in the target's folder (``.<name>.<pid>-<n>.tmp``), which is
``os.replace``-d over the target only once it is complete. A full disk, a read-only folder, an exception half-way
or a killed process therefore leaves the previous file as it was (or no file), never an empty or partial one,
and no temporary file behind (except after ``kill -9``, which no code can clean up after: the hidden ``.tmp``
file is then the only trace, the target is intact). ``fsync=True`` also survives a power cut (checkpoints use it).

A failed write raises the ``OSError`` with the *target's* path as its ``filename``, so the entry points'
one-line messages name the file the user asked for, not the temporary one.

>>> import tempfile; from pathlib import Path
>>> target = Path(tempfile.mkdtemp()) / "metrics.json"
>>> write_text(target, '{"acc": 1}\\n')
>>> try:
...     with atomic_write(target) as f:
...         _ = f.write('{"acc": ')
...         raise RuntimeError("the writer failed half-way")
... except RuntimeError:
...     pass
>>> target.read_text(), [p.name for p in target.parent.iterdir()]  # the old file, no temporary file
('{"acc": 1}\\n', ['metrics.json'])
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from pathlib import Path
from typing import IO, Any, Iterator

__all__ = ["atomic_write", "write_bytes", "write_text"]

_COUNTER = itertools.count()


def _temporary_name(path: Path) -> Path:
    # unique per process, thread and call: two writers of one target never share a temporary file
    return path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident() % 100000}-{next(_COUNTER)}.tmp")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", *, fsync: bool = False, **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing (``mode`` ``"w"`` or ``"wb"``, ``open_kwargs`` as for
    :func:`open`); when the block ends without an exception, rename it over ``path``. Otherwise (or if writing
    fails) the temporary file is removed and ``path`` is left as it was.

    The new file gets the permissions of any new file (the umask), not those of a file it replaces.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    tmp = _temporary_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as err:
        raise _naming(err, path) from None
    try:
        with open(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise _naming(err, path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8", newline: str | None = None) -> None:
    """``path.write_text(text)``, atomically (see :func:`atomic_write`)."""
    with atomic_write(path, "w", encoding=encoding, newline=newline) as f:
        f.write(text)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """``path.write_bytes(data)``, atomically (see :func:`atomic_write`)."""
    with atomic_write(path, "wb") as f:
        f.write(data)


def _naming(err: OSError, path: Path) -> OSError:
    """``err`` about ``path`` (not the temporary file); errors without an errno (a library's own) as they are."""
    if err.errno is None:
        return err
    try:
        return type(err)(err.errno, err.strerror, str(path))
    except Exception:  # noqa: BLE001 - a subclass with another constructor
        return OSError(err.errno, err.strerror, str(path))
