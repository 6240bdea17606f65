"""Reading what the format readers are given: a required path, an annotation file's text (UTF-8, a byte-order
mark dropped, another encoding refused naming file, line and byte), its numbered lines, the seeded split of
images that have none of their own, and the image files of a folder.

Every reader (:mod:`camlab.data.cub`, :mod:`camlab.data.wsoleval`, :mod:`camlab.data.ilsvrc`,
:mod:`camlab.data.custom`) reads its files through these, so a bad file gives the same one-line error everywhere.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Sequence

from camlab.errors import ConfigError, DataError

__all__ = ["IMAGE_EXTENSIONS", "SPLITS", "assign_split", "list_images", "read_lines", "read_text", "require"]

SPLITS = ("train", "val", "test")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm")


def require(path: str | os.PathLike, what: str, layout: str) -> Path:
    """``path`` if it exists, else a DataError naming it and the expected layout."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{what} not found: {p}. Expected layout: {layout}")
    return p


def read_text(path: str | os.PathLike) -> str:
    r"""A UTF-8 annotation file's text (a byte-order mark dropped); another encoding is a DataError naming the
    file, the line and the byte.

    >>> import tempfile; p = Path(tempfile.mkdtemp()) / "a.csv"
    >>> _ = p.write_bytes("\ufeffpath,label\n".encode() + "caf\xe9.jpg,0\n".encode("latin-1"))
    >>> read_text(p)
    Traceback (most recent call last):
    ...
    camlab.errors.DataError: ... is not UTF-8 text: byte 0xe9 at line 2, column 4; ...
    """
    try:
        data = Path(path).read_bytes()
    except IsADirectoryError:
        raise DataError(f"{path} is a directory, not a file: give the annotation file itself") from None
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None
    data = data[3:] if data.startswith(b"\xef\xbb\xbf") else data  # a byte-order mark (Excel's "CSV UTF-8")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):  # Excel's "Unicode text", Windows Notepad
        raise DataError(f"{path} is UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8 (e.g. "
                        f"iconv -f utf-16 -t utf-8 {Path(path).name} > fixed.txt)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise DataError(
            f"{path} is not UTF-8 text: byte 0x{data[err.start]:02x} at line {line}, column {column}; save it as "
            f"UTF-8 (e.g. iconv -f latin1 -t utf-8 {Path(path).name} > fixed.txt)"
        ) from None


def read_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, stripped text) of the non-empty lines of a UTF-8 text file (see :func:`read_text`)."""
    return [(i, line.strip()) for i, line in enumerate(read_text(path).splitlines(), 1) if line.strip()]


def assign_split(keys: Sequence[str], split: str, val_fraction: float, test_fraction: float, seed: int) -> set[str]:
    """The keys of ``split`` in a deterministic random split of ``keys`` (sorted, shuffled by ``seed``).

    >>> keys = [f"img{i}" for i in range(10)]
    >>> parts = [assign_split(keys, s, 0.2, 0.3, 0) for s in ("train", "val", "test")]
    >>> [len(p) for p in parts], len(set.union(*parts))
    ([5, 2, 3], 10)
    """
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}", settings=["split"])
    if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction < 1):
        given = f"val_fraction={val_fraction}" + (f", test_fraction={test_fraction}" if test_fraction else "")
        raise ConfigError(
            f"{given}: the fractions must be >= 0 and sum to less than 1 (the rest is the train split); "
            f"they set how many images without a split of their own go to val and test",
            settings=["val_fraction", "test_fraction"] if test_fraction else ["val_fraction"],
        )
    order = sorted(set(keys))
    random.Random(seed).shuffle(order)
    n_val, n_test = round(len(order) * val_fraction), round(len(order) * test_fraction)
    parts = {"val": order[:n_val], "test": order[n_val : n_val + n_test], "train": order[n_val + n_test :]}
    return set(parts[split])


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    with os.scandir(folder) as it:
        return sorted(Path(e.path) for e in it if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS))
