"""Boxes at every CAM threshold at once: one kernel call per batch behind :func:`scan_levels`.

For each image and threshold the box metrics need the best IoU between the boxes of the thresholded map
and the GT boxes, over all OpenCV tree-mode contours (MaxBoxAccV2: one outer contour per 8-connected
foreground component, one hole contour per 4-connected background component that does not touch the
border), or of the contour with the largest ``cv2.contourArea`` alone (MaxBoxAcc, GT-known loc).

:func:`scan_levels` labels every distinct cut level of an image in one call, with one of two exact kernels
chosen per image: the row-run kernel (:mod:`camlab.wsol.rowscan`, fastest on smooth CAMs) unless its gap
events exceed a budget proportional to the pixel count, then the union-find kernel
(:mod:`camlab.wsol.unionfind`, one pass over the pixels whatever the number of components: noise,
attributions, rough maps). Both give the same IoUs and counts.

:func:`largest_contour` needs the polygon area of contours, which no labelling gives: where a level has at
most one component, its outer border is the largest contour (a hole's border lies inside it), so the
kernel's component result is used; elsewhere OpenCV traces that level once per distinct level, cropped to
the foreground, reusing the previous level's result when the mask did not change.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numba import njit, prange

from camlab.wsol.boxes import contour_box, find_contours, inclusive_gt, iou_inclusive
from camlab.wsol.rowscan import scan_rows
from camlab.wsol.scoremaps import ScoreMaps, resolve_thresholds
from camlab.wsol.unionfind import scan_union_find

__all__ = ["EVENT_BUDGET", "MAX_SIDE", "LevelScan", "largest_contour", "scan_levels"]

#: gap events per pixel above which an image goes to the union-find kernel (where the row kernel's cost,
#: which grows with the events, passes the union-find's, which grows with the pixels)
EVENT_BUDGET = 1.0
#: the kernels pack a pixel's (y, x) into one int32
MAX_SIDE = 32767


@njit(cache=True, nogil=True)
def _scan_one(u8, levels, gt, n_gt, budget, iou, box, count, kernel):
    H, W = u8.shape
    limit = np.int64(budget * H * W) if kernel == 0 else np.int64(1) << 62
    if kernel == 2 or not scan_rows(u8, levels, gt, n_gt, limit, iou, box, count):
        scan_union_find(u8, levels, gt, n_gt, iou, box, count)


@njit(cache=True, nogil=True)
def _scan_serial(u8, levels, gt, n_gt, budget, iou, box, count, kernel):
    for i in range(u8.shape[0]):
        _scan_one(u8[i], levels[i], gt[i], n_gt[i], budget, iou[i], box[i], count[i], kernel)


@njit(cache=True, nogil=True, parallel=True)
def _scan_parallel(u8, levels, gt, n_gt, budget, iou, box, count, kernel):
    for i in prange(u8.shape[0]):
        _scan_one(u8[i], levels[i], gt[i], n_gt[i], budget, iou[i], box[i], count[i], kernel)


_KERNELS = {"auto": 0, "rows": 1, "unionfind": 2}


@dataclass
class LevelScan:
    """What :func:`scan_levels` finds, per image and threshold (B images, T thresholds).

    Attributes:
        thresholds: (T,) CAM thresholds.
        levels: (B, T) cut levels ``int(t * max)``.
        iou: (B, 2, T) float64 best IoU against the GT boxes: ``[:, 0]`` over all tree-mode contours
            (MaxBoxAccV2), ``[:, 1]`` over the 8-connected components alone (no hole boxes).
        box: (B, 2, T, 4) int32 inclusive box of that IoU (one of them on ties; ``(0, 0, 0, 0)`` where the
            level has no contour).
        count: (B, 2, T) int64 number of contours (components plus holes) ``[:, 0]`` and of components ``[:, 1]``.
        gt, n_gt: the inclusive GT boxes (B, G, 4) and their valid counts (B,) that were scored.
    """

    thresholds: np.ndarray
    levels: np.ndarray
    iou: np.ndarray
    box: np.ndarray
    count: np.ndarray
    gt: np.ndarray
    n_gt: np.ndarray

    @property
    def all_ious(self) -> np.ndarray:
        """(B, T) best IoU over all contours: MaxBoxAccV2's per-image rows."""
        return self.iou[:, 0]


def scan_levels(maps, boxes, num_boxes=None, thresholds=None, parallel: bool = False,
                kernel: str = "auto") -> LevelScan:
    """Label every threshold of every image once: best IoUs, their boxes and contour counts.

    Args:
        maps: (B, H, W) score maps in [0, 1] (numpy, torch or :class:`ScoreMaps`).
        boxes: (B, G, 4) continuous xyxy GT boxes (padded), truncated to wsoleval's inclusive boxes.
        num_boxes: (B,) valid boxes per image; all G if None.
        thresholds: CAM thresholds (see :func:`~camlab.wsol.scoremaps.resolve_thresholds`); need not be sorted.
        parallel: the images of the batch on numba threads.
        kernel: ``"auto"`` (per image, see the module docstring), ``"rows"`` or ``"unionfind"`` (tests).

    Example:
        >>> m = np.zeros((1, 8, 8), np.float32); m[0, 1:7, 1:7] = 1.0; m[0, 3:5, 3:5] = 0.0  # a ring
        >>> s = scan_levels(m, np.array([[[2.0, 2.0, 6.0, 6.0]]]), thresholds=[0.5])
        >>> s.iou[0, :, 0].round(4).tolist(), s.box[0, :, 0].tolist(), s.count[0, :, 0].tolist()
        ([1.0, 0.5102], [[2, 2, 6, 6], [1, 1, 7, 7]], [2, 1])
    """
    maps = ScoreMaps.of(maps)
    if isinstance(thresholds, np.ndarray) and thresholds.ndim == 1:
        thresholds = thresholds.astype(np.float64)
    else:
        thresholds = resolve_thresholds(thresholds)
    if kernel not in _KERNELS:
        raise ValueError(f"kernel must be one of {sorted(_KERNELS)}, got {kernel!r}")
    B = len(maps)
    if max(maps.shape[1:]) > MAX_SIDE:
        raise ValueError(f"score maps of at most {MAX_SIDE} px a side are supported, got {maps.shape[1:]}")
    gt, n_gt = inclusive_gt(boxes, num_boxes, B)
    levels = maps.levels(thresholds)
    T = levels.shape[1]
    iou = np.zeros((B, 2, T), np.float64)
    box = np.zeros((B, 2, T, 4), np.int32)
    count = np.zeros((B, 2, T), np.int64)
    if B and maps.shape[1] and maps.shape[2]:
        run = _scan_parallel if parallel else _scan_serial
        run(maps.u8, levels, gt, n_gt, EVENT_BUDGET, iou, box, count, _KERNELS[kernel])
    return LevelScan(thresholds, levels, iou, box, count, gt, n_gt)


def largest_contour(scan: LevelScan, maps, columns=None) -> tuple[np.ndarray, np.ndarray]:
    """Best IoU and box of the largest-``contourArea`` contour (first on ties), per image and threshold.

    Args:
        scan: the :func:`scan_levels` result of these maps.
        maps: the same maps (:class:`ScoreMaps` or arrays).
        columns: threshold indices of ``scan`` to do (all if None).

    Returns:
        ((B, C) float64 IoUs, (B, C, 4) int32 boxes) for the C columns.

    Example:
        >>> m = np.zeros((1, 8, 8), np.float32); m[0, 1:3, 1:3] = 1.0; m[0, 4:8, 4:8] = 1.0
        >>> s = scan_levels(m, np.array([[[1.0, 1.0, 3.0, 3.0]]]), thresholds=[0.5])
        >>> iou, box = largest_contour(s, m)
        >>> iou.tolist(), box[0, 0].tolist()
        ([[0.0]], [4, 4, 7, 7])
    """
    maps = ScoreMaps.of(maps)
    cols = np.arange(scan.levels.shape[1]) if columns is None else np.asarray(columns, dtype=np.int64).reshape(-1)
    ious = np.array(scan.iou[:, 1][:, cols], dtype=np.float64)  # one component (or none): the kernel's
    boxes = np.array(scan.box[:, 1][:, cols], dtype=np.int32)
    several = scan.count[:, 1][:, cols] >= 2
    B, H, W = maps.shape
    for i in np.flatnonzero(several.any(axis=1)):
        img = maps.u8[i]
        gt = scan.gt[i, : scan.n_gt[i]]
        row_max, col_max = img.max(axis=1), img.max(axis=0)
        todo = sorted(set(scan.levels[i][cols][several[i]].tolist()))
        n_above = np.cumsum(np.bincount(img.ravel(), minlength=256)[::-1])[::-1]  # pixels >= v
        cache: dict[int, tuple[float, list[int]]] = {}
        prev_count, prev = -1, (0.0, [0, 0, 0, 0])
        for level in todo:
            n_fg = int(n_above[level + 1]) if level < 255 else 0
            if n_fg == prev_count:  # nested masks of equal size are equal
                cache[level] = prev
                continue
            # cropped to the foreground: the same contours in the same order, shifted back by the offset
            ys, xs = np.flatnonzero(row_max > level), np.flatnonzero(col_max > level)
            y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
            _, binary = cv2.threshold(img[y0:y1, x0:x1], level, 255, cv2.THRESH_BINARY)
            contours = find_contours(binary, offset=(x0, y0))
            areas = [cv2.contourArea(c) for c in contours]
            b = contour_box(contours[areas.index(max(areas))], W, H)
            val = max(iou_inclusive(*b, *g) for g in gt.tolist())
            cache[level] = prev = (val, b)
            prev_count = n_fg
        for c in np.flatnonzero(several[i]):
            ious[i, c], boxes[i, c] = cache[int(scan.levels[i, cols[c]])]
    return ious, boxes
