"""Box conventions, their converters, the one inclusive IoU, and the OpenCV reference boxes at one cut.

Two conventions meet in WSOL evaluation:

* **continuous xyxy** (camlab's datasets, torchvision): float pixel coordinates in the network input frame;
  the box ``[0, 10)`` covers pixels 0..9;
* **inclusive integer** (wsoleval): ``x0, y0, x1, y1`` are the first and last pixel; widths and heights
  get ``+1``. Ground-truth boxes become inclusive by ``int()`` truncation (:func:`gt_boxes_to_int`), exactly
  what wsoleval does with its (already integer) metadata boxes, so a continuous ``[0, 10)`` becomes ``0..10``
  (11 pixels): the same one-pixel quirk wsoleval has on CUB / ILSVRC.

A predicted box comes from a contour: pixels spanning columns ``px0..px1`` and rows ``py0..py1`` give
``(px0, py0, min(px1 + 1, W - 1), min(py1 + 1, H - 1))`` (``cv2.boundingRect``, then wsoleval's clip: one
pixel larger right and bottom than the pixels it covers); a hole's box is the hole's pixel box grown by one
pixel on each side, clipped the same way; no contour at all gives ``(0, 0, 0, 0)``. The IoU of inclusive
boxes adds 1 to widths and heights; a union <= 0 gives 0 (:func:`iou_inclusive`, the one implementation,
used by the kernels too).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from numba import njit

__all__ = ["best_iou", "box_iou_inclusive", "boxes_at_threshold", "contour_box", "find_contours", "gt_boxes_to_int",
           "inclusive_gt", "iou_inclusive", "pack_boxes", "prediction_to_xyxy", "unpack_boxes"]


@njit(cache=True, inline="always")
def iou_inclusive(ax0, ay0, ax1, ay1, bx0, by0, bx1, by1):
    """IoU of two inclusive integer boxes (``+1`` on sides); a union <= 0 gives 0."""
    iw = max(min(ax1, bx1) - max(ax0, bx0) + 1, 0)
    ih = max(min(ay1, by1) - max(ay0, by0) + 1, 0)
    inter = iw * ih
    union = (ax1 - ax0 + 1) * (ay1 - ay0 + 1) + (bx1 - bx0 + 1) * (by1 - by0 + 1) - inter
    return inter / union if union > 0 else 0.0


@njit(cache=True, inline="always")
def best_iou(x0, y0, x1, y1, gt, n_gt):
    """Best :func:`iou_inclusive` of one box against the first ``n_gt`` rows of ``gt`` (G, 4)."""
    best = 0.0
    for g in range(n_gt):
        v = iou_inclusive(x0, y0, x1, y1, gt[g, 0], gt[g, 1], gt[g, 2], gt[g, 3])
        if v > best:
            best = v
    return best


@njit(cache=True)
def _pairwise(a, b, out):
    for i in range(a.shape[0]):
        for j in range(b.shape[0]):
            out[i, j] = iou_inclusive(a[i, 0], a[i, 1], a[i, 2], a[i, 3], b[j, 0], b[j, 1], b[j, 2], b[j, 3])


def box_iou_inclusive(boxes_a, boxes_b) -> np.ndarray:
    """Pairwise IoU of inclusive integer boxes: (A, 4), (B, 4) -> (A, B) float64.

    Example:
        >>> box_iou_inclusive(np.array([[0, 0, 9, 9]]), np.array([[0, 0, 4, 9], [20, 20, 29, 29]]))
        array([[0.5, 0. ]])
    """
    a = np.ascontiguousarray(np.asarray(boxes_a, dtype=np.int64).reshape(-1, 4))
    b = np.ascontiguousarray(np.asarray(boxes_b, dtype=np.int64).reshape(-1, 4))
    out = np.zeros((a.shape[0], b.shape[0]), np.float64)
    _pairwise(a, b, out)
    return out


def gt_boxes_to_int(boxes) -> np.ndarray:
    """Continuous ``xyxy`` float boxes -> wsoleval's inclusive integer boxes by ``int()`` truncation.

    Example:
        >>> gt_boxes_to_int(torch.tensor([[1.9, 2.0, 10.5, 7.99]]))
        array([[ 1,  2, 10,  7]])
    """
    if isinstance(boxes, torch.Tensor):
        boxes = boxes.detach().cpu().numpy()
    boxes = np.asarray(boxes, dtype=np.float64)
    if not np.isfinite(boxes).all():
        raise ValueError("ground-truth boxes must be finite numbers (a NaN or inf coordinate was given)")
    return np.trunc(boxes).astype(np.int64)


def inclusive_gt(boxes, num_boxes, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """A batch's padded continuous boxes -> ((B, G, 4) inclusive int64 boxes, (B,) valid counts).

    ``num_boxes`` None means all G boxes are valid. Every image needs 1 <= num_boxes <= G.

    Example:
        >>> gt, n = inclusive_gt(torch.tensor([[[0.0, 0.0, 4.5, 4.5], [0, 0, 0, 0]]]), torch.tensor([1]), 1)
        >>> gt[0, 0].tolist(), n.tolist()
        ([0, 0, 4, 4], [1])
    """
    gt = gt_boxes_to_int(boxes)
    if gt.ndim == 2:
        gt = gt[None]
    if gt.ndim != 3 or gt.shape[0] != batch or gt.shape[-1] != 4:
        raise ValueError(f"boxes must be (B, G, 4) with B={batch}, got shape {gt.shape}")
    if num_boxes is None:
        n_gt = np.full(batch, gt.shape[1], dtype=np.int64)
    else:
        if isinstance(num_boxes, torch.Tensor):
            num_boxes = num_boxes.detach().cpu()
        n_gt = np.asarray(num_boxes, dtype=np.int64).reshape(-1)
        if n_gt.shape[0] != batch:
            raise ValueError(f"num_boxes has {n_gt.shape[0]} entries for a batch of {batch}")
    if (n_gt < 1).any() or (n_gt > gt.shape[1]).any():
        raise ValueError("every image needs 1 <= num_boxes <= G ground-truth boxes")
    return np.ascontiguousarray(gt), n_gt


def pack_boxes(boxes) -> np.ndarray:
    """(..., 4) inclusive boxes with coordinates in [0, 32767] -> (...) int64, 16 bits a coordinate (metric rows:
    half the bytes of int32, and every backend gathers int64).

    Example:
        >>> unpack_boxes(pack_boxes(np.array([[0, 5, 223, 32767]]))).tolist()
        [[0, 5, 223, 32767]]
    """
    b = np.asarray(boxes, dtype=np.int64)
    return b[..., 0] | (b[..., 1] << 16) | (b[..., 2] << 32) | (b[..., 3] << 48)


def unpack_boxes(packed) -> np.ndarray:
    """The inverse of :func:`pack_boxes`: (...) int64 -> (..., 4) int32."""
    p = np.asarray(packed, dtype=np.int64)[..., None]
    return ((p >> np.array([0, 16, 32, 48])) & 0xFFFF).astype(np.int32)


def prediction_to_xyxy(box) -> list[float]:
    """A predicted inclusive-convention box (as scored) -> continuous xyxy floats for drawing.

    The scored box is already one pixel larger right and bottom than the pixels it covers (the
    ``boundingRect`` quirk), so its coordinates are drawn as they are.

    Example:
        >>> prediction_to_xyxy(np.array([2, 2, 6, 6]))
        [2.0, 2.0, 6.0, 6.0]
    """
    return [float(v) for v in np.asarray(box).reshape(4)]


def find_contours(binary: np.ndarray, offset: tuple[int, int] = (0, 0)):
    """OpenCV tree-mode contours of a uint8 mask (``CHAIN_APPROX_SIMPLE``), as wsoleval calls it."""
    # findContours returns (image, contours, hierarchy) in OpenCV 3 and (contours, hierarchy) after.
    return cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE, offset=offset)[-2]


def contour_box(contour: np.ndarray, width: int, height: int) -> list[int]:
    """wsoleval's box of a contour: ``boundingRect`` ``(x, y, x + w, y + h)``, x1 / y1 clipped to W-1 / H-1."""
    x, y, w, h = cv2.boundingRect(contour)
    return [x, y, min(x + w, width - 1), min(y + h, height - 1)]


def boxes_at_threshold(scoremap_u8: np.ndarray, threshold: float, multi_contour: bool = True) -> np.ndarray:
    """Boxes of a uint8 score map at one CAM threshold, through OpenCV: the reference semantics.

    Args:
        scoremap_u8: (H, W) uint8 map.
        threshold: CAM threshold in [0, 1); foreground is ``u8 > int(threshold * u8.max())``.
        multi_contour: every tree-mode contour (holes included) if True, else only the contour with the
            largest ``cv2.contourArea`` (first one on ties).

    Returns:
        (N, 4) int64 inclusive boxes; ``[[0, 0, 0, 0]]`` when there is no contour.

    Example:
        >>> m = np.zeros((6, 6), np.uint8); m[1:5, 1:5] = 200; m[2:4, 2:4] = 0
        >>> boxes_at_threshold(m, 0.5)  # a ring: outer box; hole pixels 2..3 grown by 1, then +w
        array([[1, 1, 5, 5],
               [1, 1, 5, 5]])
        >>> boxes_at_threshold(m, 0.5, multi_contour=False)
        array([[1, 1, 5, 5]])
    """
    height, width = scoremap_u8.shape
    level = int(float(threshold) * int(scoremap_u8.max()))
    contours = find_contours((scoremap_u8 > level).astype(np.uint8))
    if len(contours) == 0:
        return np.zeros((1, 4), dtype=np.int64)
    if not multi_contour:
        areas = [cv2.contourArea(c) for c in contours]
        contours = [contours[int(np.argmax(areas))]]
    return np.array([contour_box(c, width, height) for c in contours], dtype=np.int64)
