"""Reading image files as the network sees them: 8-bit RGB of every PIL mode, and the EXIF orientation.

One function reads every image of train, eval and predict (:func:`read_rgb`), so a file gives the same pixels
everywhere.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
from PIL import Image

from camlab.errors import DataError

log = logging.getLogger("camlab.data")

EXIF_ORIENTATION = 0x0112  # the EXIF tag; 1 (or absent) is upright
_WARNED: set[str] = set()  # what this process has warned about once (each DataLoader worker warns once)


def _warn_once(key: str, message: str, *args: Any) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        log.warning(message, *args)


def to_rgb(im: Image.Image, path: str | os.PathLike) -> Image.Image:
    """``im`` as 8-bit RGB. PIL's ``convert("RGB")`` clamps 16-bit and float pixels to 255 (a white image), so:

    - 16-bit (``I;16*``) and 32-bit integer (``I``) images with values in 0..65535 are scaled from 0..65535;
    - float (``F``) images with values in [0, 1] are scaled from [0, 1];
    - other ``I`` / ``F`` ranges are stretched from the image's own min..max (contrast then differs per image);
    - NaN or infinite float pixels are a DataError naming the file.

    Each case is warned about once per process, naming the first file. Other modes convert as PIL does
    (palette, grey, CMYK, alpha dropped).
    """
    mode = im.mode
    if not (mode.startswith("I;16") or mode in ("I", "F")):
        return im.convert("RGB")
    a = np.asarray(im, dtype=np.float64)
    if not np.isfinite(a).all():
        raise DataError(f"image {path} ({mode}) has NaN or infinite pixel values; replace the file, or remove it "
                        f"from the annotations")
    lo, hi = float(a.min()), float(a.max())
    if mode == "F" and lo >= 0 and hi <= 1:
        key, scale, how = "unit", (0.0, 1.0), "float image: values in [0, 1] scaled to 0..255"
    elif mode != "F" and lo >= 0 and hi <= 65535:
        key, scale, how = "16bit", (0.0, 65535.0), f"{mode} image: 16-bit values 0..65535 scaled to 0..255"
    else:
        key, scale = "minmax", (lo, hi)
        how = f"{mode} image with values {lo:g}..{hi:g}: its own min..max stretched to 0..255"
    _warn_once(key, "%s is a %s (every such image is read so; the first one is named)", path, how)
    span = scale[1] - scale[0]
    u8 = np.zeros(a.shape, np.uint8) if span <= 0 else np.rint((a - scale[0]) * (255.0 / span)).clip(0, 255)
    return Image.fromarray(u8.astype(np.uint8), "L").convert("RGB")


def exif_orientation(im: Image.Image) -> int:
    """The EXIF orientation of an open image (1: upright, 2-8: rotated and/or mirrored when displayed)."""
    try:
        value = im.getexif().get(EXIF_ORIENTATION, 1)
        return int(value) if 1 <= int(value) <= 8 else 1
    except Exception:  # noqa: BLE001 - a broken EXIF block is not an unreadable image
        return 1


def read_rgb(path: str | os.PathLike) -> tuple[Image.Image, int]:
    """The 8-bit RGB pixels of an image file as stored (see :func:`to_rgb`) and its EXIF orientation.

    The orientation is NOT applied: WSOL benchmark annotations (ILSVRC, CUB, wsolevaluation) are drawn on the
    stored pixel grid, and applying it would move every box of such a file. Callers warn where it is not 1.
    Raises what PIL raises for an unreadable file (OSError, SyntaxError, ValueError, ...).
    """
    with Image.open(path) as im:
        orientation = exif_orientation(im)
        return to_rgb(im, path), orientation


def warn_exif_orientation(path: str | os.PathLike, orientation: int) -> None:
    """Once per process: this file (the first one met) would display rotated or mirrored."""
    _warn_once("exif", "%s has EXIF orientation %d (shown rotated or mirrored by image viewers): camlab reads the "
               "stored pixels and does not apply it, so its boxes must be given on the stored pixel grid, not the "
               "upright image; the count of such images is reported at the end", path, orientation)
