"""Ground-truth masks from files on disk: PNG instance masks (+ ignore regions), COCO polygons and RLE.

A :class:`MaskSpec` says where one image's mask comes from; ``render(width, height)`` gives the H×W uint8
mask of the batch contract (0 background, 1 object, 255 ignore) at any size. PNG and RLE masks are
resized with OpenCV nearest-neighbour *per instance, straight to the requested size*, then thresholded and
united, exactly as wsolevaluation's ``get_mask`` does for OpenImages; polygons are drawn at the requested
size (PIL, coordinates scaled).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import cv2
import numpy as np
from PIL import Image, ImageDraw

from camlab.errors import DataError


@dataclass(frozen=True)
class MaskSpec:
    """Where one image's ground-truth mask comes from.

    Args:
        files: PNG files, one per instance (or one for all); a pixel is object iff its grey value > threshold.
        ignore_file: optional PNG of regions to ignore (value > threshold), minus the object pixels (wsoleval).
        threshold: grey-value threshold (0: any nonzero value; CUB's soft segmentations use 127).
        polygons: COCO polygons, each a flat ``x0, y0, x1, y1, ...`` sequence in source-image pixels.
        rles: COCO run-length encodings ``{"size": [h, w], "counts": str | list[int]}``.
        source_size: (W, H) of the image the polygons are drawn in (needed with polygons).
    """

    files: tuple[str, ...] = ()
    ignore_file: str | None = None
    threshold: int = 0
    polygons: tuple[tuple[float, ...], ...] = ()
    rles: tuple[Any, ...] = ()
    source_size: tuple[int, int] | None = None

    @property
    def paths(self) -> list[str]:
        return list(self.files) + ([self.ignore_file] if self.ignore_file else [])

    def instances(self, width: int, height: int) -> list[np.ndarray]:
        """Every instance as an H×W bool mask at (width, height)."""
        out = [_read_png(f, width, height) > self.threshold for f in self.files]
        out += [_resize_nearest(rle_decode(r), width, height) > 0 for r in self.rles]
        if self.polygons:
            if self.source_size is None:
                raise ValueError("MaskSpec with polygons needs source_size")
            sx, sy = width / self.source_size[0], height / self.source_size[1]
            for poly in self.polygons:
                out.append(polygon_mask(poly, width, height, sx, sy))
        return out

    def render(self, width: int, height: int) -> np.ndarray:
        """H×W uint8: 1 on any instance, 255 on ignore regions outside them, 0 elsewhere."""
        fg = np.zeros((height, width), dtype=bool)
        for m in self.instances(width, height):
            fg |= m
        mask = fg.astype(np.uint8)
        if self.ignore_file:
            ignore = (_read_png(self.ignore_file, width, height) > self.threshold) & ~fg
            mask[ignore] = 255
        return mask


def _read_png(path: str, width: int, height: int) -> np.ndarray:
    grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if grey is None:
        raise DataError(
            f"cannot read mask file {path} (missing, unreadable or not an image); replace the file, or set "
            f"masks=False to use no masks (no PxAP)",
            settings=["masks"],
        )
    return _resize_nearest(grey, width, height)


def _resize_nearest(m: np.ndarray, width: int, height: int) -> np.ndarray:
    if m.shape == (height, width):
        return m
    return cv2.resize(m, (width, height), interpolation=cv2.INTER_NEAREST)


def polygon_mask(poly: Sequence[float], width: int, height: int, sx: float = 1.0, sy: float = 1.0) -> np.ndarray:
    """H×W bool mask of one polygon (flat x, y list), coordinates scaled by (sx, sy); filled with PIL.

    >>> polygon_mask([1, 1, 4, 1, 4, 3, 1, 3], 6, 5).astype(int).sum(0).tolist()
    [0, 3, 3, 3, 3, 0]
    """
    xy = [(float(poly[i]) * sx, float(poly[i + 1]) * sy) for i in range(0, len(poly) - 1, 2)]
    canvas = Image.new("1", (width, height), 0)
    if len(xy) >= 3:
        ImageDraw.Draw(canvas).polygon(xy, fill=1, outline=1)
    return np.asarray(canvas, dtype=bool)


def rle_counts_from_string(s: str) -> list[int]:
    """Decode COCO's compressed RLE string (6-bit chars, 5 data bits, delta-coded from the 3rd count on).

    >>> rle_counts_from_string("52203")  # from the 4th count on, each adds the count two before it
    [5, 2, 2, 2, 5]
    """
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_counts(rle: dict) -> tuple[int, int, np.ndarray]:
    """(h, w, run lengths) of a COCO RLE; ValueError when it is malformed or its runs do not fill h×w.

    >>> rle_counts({"size": [2, 3], "counts": "52"})
    Traceback (most recent call last):
    ...
    ValueError: RLE counts sum to 7, expected h*w = 6
    """
    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
        if isinstance(counts, (bytes, str)):
            counts = rle_counts_from_string(counts.decode() if isinstance(counts, bytes) else counts)
        counts = np.asarray(counts, dtype=np.int64).reshape(-1)
    except (KeyError, TypeError, ValueError, IndexError) as err:
        msg = f"malformed RLE ({type(err).__name__}: {err}); expected {{'size': [h, w], 'counts': ...}}"
        raise ValueError(msg) from None
    if counts.sum() != h * w or (counts < 0).any():
        raise ValueError(f"RLE counts sum to {int(counts.sum())}, expected h*w = {h * w}")
    return h, w, counts


def rle_decode(rle: dict) -> np.ndarray:
    """COCO RLE -> H×W uint8 0/1 mask (runs alternate 0s and 1s, column-major, starting with 0s).

    >>> rle_decode({"size": [2, 3], "counts": [1, 2, 3]}).tolist()
    [[0, 1, 0], [1, 0, 0]]
    """
    h, w, counts = rle_counts(rle)
    values = np.arange(len(counts)) % 2  # 0, 1, 0, ...
    flat = np.repeat(values.astype(np.uint8), counts)
    return flat.reshape((w, h)).T.copy()  # column-major -> H×W


def tight_boxes(instances: Sequence[np.ndarray], inclusive: bool) -> np.ndarray:
    """G×4 xyxy tight boxes of the non-empty instance masks (inclusive: last pixel; else one past it).

    >>> m = np.zeros((4, 5), bool); m[1:3, 2:4] = True
    >>> tight_boxes([m], inclusive=True).tolist(), tight_boxes([m], inclusive=False).tolist()
    ([[2.0, 1.0, 3.0, 2.0]], [[2.0, 1.0, 4.0, 3.0]])
    """
    boxes = []
    for m in instances:
        cols, rows = np.flatnonzero(m.any(0)), np.flatnonzero(m.any(1))
        if cols.size:
            end = 0 if inclusive else 1
            boxes.append((cols[0], rows[0], cols[-1] + end, rows[-1] + end))
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
