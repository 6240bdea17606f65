"""Reading image files as the network sees them: 8-bit RGB of every PIL mode, and the EXIF orientation.

One function reads every image of train, eval and predict (:func:`read_rgb`), so a file gives the same pixels
everywhere; :func:`read_header` gives a file's size and orientation without decoding it (set-up checks), and
:func:`unreadable_error` the one message for a file PIL cannot read.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from camlab.errors import DataError

log = logging.getLogger("camlab.data")

EXIF_ORIENTATION = 0x0112  # the EXIF tag; 1 (or absent) is upright
TURNED = (5, 6, 7, 8)  # orientations displayed a quarter turn from the stored grid (width and height swap)
# what PIL raises for a file it cannot open or decode (a decompression bomb is no OSError)
UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
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


def read_rgb(path: str | os.PathLike, exif_transpose: bool = False) -> tuple[Image.Image, int]:
    """The 8-bit RGB pixels of an image file (see :func:`to_rgb`) and its EXIF orientation.

    By default the pixels are as stored and the orientation is NOT applied: WSOL benchmark annotations
    (ILSVRC, CUB, wsolevaluation) are drawn on the stored pixel grid, and applying it would move every box of
    such a file; callers warn where it is not 1. ``exif_transpose=True`` turns the image upright first (as image
    viewers show it), for annotations drawn on the upright image.
    Raises what PIL raises for an unreadable file (:data:`UNREADABLE`).
    """
    with Image.open(path) as im:
        orientation = exif_orientation(im)
        if exif_transpose and orientation != 1:
            return to_rgb(ImageOps.exif_transpose(im), path), orientation
        return to_rgb(im, path), orientation


def read_header(path: str | os.PathLike, exif_transpose: bool = False) -> tuple[tuple[int, int], int]:
    """((W, H), EXIF orientation) of an image file from its header, the pixels not decoded; (W, H) as
    :func:`read_rgb` with the same ``exif_transpose`` gives the image (swapped for a quarter-turned file).

    A PNG's EXIF block is only looked for before its pixel data (where PIL finds it without decoding); one after
    it is seen when the image is read.
    """
    with Image.open(path) as im:
        size = im.size
        orientation = 1 if im.format == "PNG" and "exif" not in im.info else exif_orientation(im)
    if exif_transpose and orientation in TURNED:
        size = (size[1], size[0])
    return size, orientation


def unreadable_error(path: str | os.PathLike, err: BaseException) -> DataError:
    """The one-line error for an image file PIL cannot read (``err``: what it raised)."""
    cause = " ".join(str(err).split()).rstrip(".") or type(err).__name__
    fix = "Replace or remove the file"
    if isinstance(err, Image.DecompressionBombError):
        cause = f"{cause} (PIL's limit, Image.MAX_IMAGE_PIXELS)"
        fix = "Downscale or remove the file"
    return DataError(
        f"cannot read image {path}: {cause}. {fix}, or set skip_corrupt=True to skip unreadable images (counted "
        f"and reported)",
        settings=["skip_corrupt"],
    )


def why_not_a_file(path: str | os.PathLike) -> str:
    """Why a listed image path is not a file: ``", a directory, not an image file"`` etc.; empty when it does not
    exist."""
    if os.path.isdir(path):
        return ", a directory, not an image file"
    if os.path.islink(path):
        return f", a broken symbolic link (to {os.readlink(path)}, missing or a loop of links)"
    return ""


def warn_exif_orientation(path: str | os.PathLike, orientation: int) -> None:
    """Once per process: this file (the first one met) would display rotated or mirrored."""
    _warn_once("exif", "%s has EXIF orientation %d (shown rotated or mirrored by image viewers): camlab reads the "
               "stored pixels (exif_transpose=False), so its boxes must be given on the stored pixel grid, not the "
               "upright image (set exif_transpose=True for boxes drawn on the upright image); the count of such "
               "images is reported at the end", path, orientation)
