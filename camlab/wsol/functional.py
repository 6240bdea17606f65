"""The WSOL metrics as plain functions on arrays: bring your own maps (numpy or torch), no Lightning.

Two layers, as in ``torchmetrics.functional``: per-image *rows* (:func:`best_ious`, :func:`loc_ious`,
:func:`topk_hits`, and :func:`~camlab.wsol.pxap.pxap_histograms`) and *aggregates* from rows
(:func:`box_accuracy`, :func:`localization_accuracy`, :func:`pxap_from_rows`). The one-call metrics
(:func:`max_box_acc`, :func:`pxap`, :func:`gt_known_loc`) are the two composed. The protocol of Choe et al. (CVPR
2020) chooses the CAM threshold on one split and applies it to another: :func:`threshold_index` finds a chosen
threshold on the grid, :func:`box_accuracy_at` and :func:`piou_at` score rows at it. :class:`~camlab.wsol.WSOLMetrics`
keeps the rows of every batch and calls the same aggregates, so its numbers and these are the same code.

Values are percents, as in clovaai/wsolevaluation; its conventions are in :mod:`camlab.wsol.scoremaps`,
:mod:`camlab.wsol.boxes` and :mod:`camlab.wsol.pxap`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from camlab.wsol.levels import largest_contour, scan_levels
from camlab.wsol.pxap import pxap_from_histograms, pxap_histograms
from camlab.wsol.scoremaps import ScoreMaps, resolve_thresholds

__all__ = ["as_numpy", "best_ious", "box_accuracy", "box_accuracy_at", "check_iou_thresholds", "gt_known_loc",
           "loc_ious", "localization_accuracy", "max_box_acc", "piou_at", "pxap", "pxap_from_rows",
           "softmax_prediction", "threshold_index", "topk_hits"]


def check_iou_thresholds(iou_thresholds: Sequence[float]) -> tuple:
    """IoU thresholds in percent, each in (0, 100]; ValueError otherwise.

    Example:
        >>> check_iou_thresholds([30, 50, 70])
        (30, 50, 70)
    """
    ious = tuple(iou_thresholds)
    if not ious or any(not (0 < float(k) <= 100) for k in ious):
        raise ValueError(f"iou_thresholds must be non-empty percents in (0, 100], got {list(iou_thresholds)}")
    if any(float(k) <= 1 for k in ious):  # a fraction given where a percent is meant would score silently
        raise ValueError(f"iou_thresholds are percents (e.g. 30, 50, 70), got {list(iou_thresholds)}: "
                         f"multiply fractions by 100")
    return ious


def best_ious(maps, boxes, num_boxes=None, thresholds=None, multi_contour: bool = True,
              parallel: bool = False) -> np.ndarray:
    """Per image and CAM threshold, the best IoU between the map's boxes and the GT boxes: (B, T) float64.

    Args:
        maps: (B, H, W) score maps in [0, 1] (numpy, torch or :class:`~camlab.wsol.ScoreMaps`).
        boxes: (B, G, 4) continuous xyxy GT boxes, padded; num_boxes: (B,) valid ones (all if None).
        thresholds: CAM thresholds (None: ``np.arange(0, 1, 0.01)``; a float: that interval; or a sequence).
        multi_contour: all tree-mode contours (MaxBoxAccV2) or the largest ``contourArea`` one (MaxBoxAcc).

    Example:
        >>> m = np.zeros((1, 8, 8), np.float32); m[0, 2:6, 2:6] = 1.0
        >>> best_ious(m, np.array([[[2.0, 2.0, 6.0, 6.0]]]), thresholds=[0.5, 0.9], multi_contour=False)
        array([[1., 1.]])
    """
    maps = ScoreMaps.of(maps)
    scan = scan_levels(maps, boxes, num_boxes, resolve_thresholds(thresholds), parallel=parallel)
    return scan.all_ious.copy() if multi_contour else largest_contour(scan, maps)[0]


def box_accuracy(ious, thresholds, iou_thresholds: Sequence[float] = (30, 50, 70),
                 name: str = "MaxBoxAccV2") -> dict:
    """Box accuracy from per-image rows of best IoUs: the curves and their maxima.

    An image is correct at IoU threshold k when its IoU is >= k / 100 (exactly k counts). Per k the curve is
    ``100 x correct / images`` over the CAM thresholds, and its maximum is reported, each k taking its own
    best threshold (the first on ties); ``name`` is their mean.

    Returns:
        ``{name: float, f"{name}/IoU{k}": float, f"{name}/best_threshold/IoU{k}": float,
        f"{name}/best_index/IoU{k}": int, f"{name}/curve/IoU{k}": (T,) array}``; empty without rows.

    Example:
        >>> r = box_accuracy(np.array([[0.9, 0.6, 0.2], [0.1, 0.6, 0.8]]), [0.1, 0.2, 0.3], (50, 70))
        >>> r["MaxBoxAccV2"], r["MaxBoxAccV2/best_threshold/IoU50"], r["MaxBoxAccV2/curve/IoU70"].tolist()
        (75.0, 0.2, [50.0, 0.0, 50.0])
    """
    ious = np.asarray(ious, dtype=np.float64)
    if ious.ndim != 2 or ious.shape[0] == 0:
        return {}
    thresholds = np.asarray(thresholds, dtype=np.float64)
    out: dict = {}
    best = []
    for k in check_iou_thresholds(iou_thresholds):
        curve = (ious >= k / 100).sum(axis=0).astype(np.float64) * 100.0 / float(ious.shape[0])
        arg = int(np.argmax(curve))
        best.append(curve[arg])
        out[f"{name}/IoU{k:g}"] = float(curve[arg])
        out[f"{name}/best_threshold/IoU{k:g}"] = float(thresholds[arg])
        out[f"{name}/best_index/IoU{k:g}"] = arg
        out[f"{name}/curve/IoU{k:g}"] = curve
    out[name] = float(np.mean(best))
    return out


def threshold_index(thresholds, value: float) -> int:
    """The column of ``value`` in the CAM threshold grid ``thresholds`` (exact match); ValueError when it is not on it.

    A threshold chosen on one split is applied to another's rows of the same grid, so it must be one of its values.

    Example:
        >>> threshold_index(np.arange(0, 1, 0.01), 0.35000000000000003)
        35
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    hit = np.flatnonzero(thresholds == float(value))
    if hit.size == 0:
        raise ValueError(f"CAM threshold {value!r} is not on this grid of {thresholds.shape[0]} thresholds "
                         f"({thresholds[0]:g} .. {thresholds[-1]:g}): evaluate with the grid it was chosen on")
    return int(hit[0])


def box_accuracy_at(ious, thresholds, chosen: dict, iou_thresholds: Sequence[float] = (30, 50, 70),
                    name: str = "MaxBoxAccV2@val") -> dict:
    """Box accuracy of rows at CAM thresholds chosen elsewhere, one per IoU threshold (no maximum over this split).

    ``chosen`` maps each IoU threshold k (percent) to its CAM threshold, e.g. the ``best_threshold`` values of
    :func:`box_accuracy` on a validation split. Per k: ``100 x (images with IoU >= k / 100 at that threshold) /
    images``; ``name`` is their mean.

    Returns:
        ``{name: float, f"{name}/IoU{k}": float, f"{name}/threshold/IoU{k}": float}``; empty without rows.

    Example:
        >>> ious = np.array([[0.9, 0.6, 0.2], [0.1, 0.6, 0.8]])
        >>> r = box_accuracy_at(ious, [0.1, 0.2, 0.3], {50: 0.1, 70: 0.3}, (50, 70))
        >>> r["MaxBoxAccV2@val/IoU50"], r["MaxBoxAccV2@val/IoU70"], r["MaxBoxAccV2@val"]
        (50.0, 50.0, 50.0)
    """
    ious = np.asarray(ious, dtype=np.float64)
    if ious.ndim != 2 or ious.shape[0] == 0:
        return {}
    out: dict = {}
    accs = []
    for k in check_iou_thresholds(iou_thresholds):
        t = chosen[k]
        j = threshold_index(thresholds, t)
        acc = float((ious[:, j] >= k / 100).sum() * 100.0 / ious.shape[0])
        accs.append(acc)
        out[f"{name}/IoU{k:g}"], out[f"{name}/threshold/IoU{k:g}"] = acc, float(t)
    out[name] = float(np.mean(accs))
    return out


def max_box_acc(maps, boxes, num_boxes=None, thresholds=None, iou_thresholds: Sequence[float] = (30, 50, 70),
                multi_contour: bool = True) -> dict:
    """MaxBoxAccV2 (all contours, IoU 30/50/70) or MaxBoxAcc (``multi_contour=False``, pass ``(50,)``).

    Example:
        >>> cams = np.zeros((2, 8, 8), np.float32); cams[:, 2:6, 2:6] = 1.0
        >>> boxes = np.array([[[2.0, 2.0, 6.0, 6.0]], [[0.0, 0.0, 1.0, 1.0]]])
        >>> max_box_acc(cams, boxes, thresholds=[0.5], iou_thresholds=(50,))["MaxBoxAccV2"]
        50.0
    """
    thresholds = resolve_thresholds(thresholds)
    ious = best_ious(maps, boxes, num_boxes, thresholds, multi_contour)
    return box_accuracy(ious, thresholds, iou_thresholds, "MaxBoxAccV2" if multi_contour else "MaxBoxAcc")


def pxap_from_rows(hist, thresholds) -> dict:
    """PxAP, PIoU and their curves from per-image histograms (B, 2, T + 2); NaN results when undefined.

    Returns:
        ``{"PxAP", "PIoU", "PIoU/best_threshold"}`` floats and ``"PxAP/precision"``, ``"PxAP/recall"``,
        ``"PIoU/curve"`` (T,) arrays (PIoU in percent); only the three NaN scalars when no GT pixel is
        positive or nothing is predicted.

    Example:
        >>> h = np.array([[[0, 2, 0, 0], [1, 0, 0, 0]]])
        >>> pxap_from_rows(h, [0.0, 0.5])["PxAP"]
        100.0
    """
    total = np.asarray(hist, dtype=np.int64).sum(axis=0)  # (2, T + 2)
    try:
        r = pxap_from_histograms(total[0], total[1])
    except ValueError:
        nan = float("nan")
        return {"PxAP": nan, "PIoU": nan, "PIoU/best_threshold": nan}
    return {"PxAP": r["pxap"], "PIoU": r["piou"],
            "PIoU/best_threshold": float(np.asarray(thresholds)[r["best_piou_index"]]),
            "PxAP/precision": r["precision"], "PxAP/recall": r["recall"], "PIoU/curve": r["piou_curve"] * 100}


def piou_at(hist, thresholds, threshold: float) -> float:
    """Pixel IoU (percent) of per-image histograms (B, 2, T + 2) at one CAM threshold of their grid: foreground
    pixels with a score >= it over (foreground pixels + background pixels >= it); NaN without foreground pixels.

    Example:
        >>> h = np.array([[[0, 2, 0, 0], [1, 1, 0, 0]]])  # fg scores in [0.5, 1), bg: one in [0, .5), one in [.5, 1)
        >>> piou_at(h, [0.0, 0.5], 0.5), piou_at(h, [0.0, 0.5], 0.0)
        (66.66666666666667, 50.0)
    """
    j = threshold_index(thresholds, threshold)
    total = np.asarray(hist, dtype=np.int64).sum(axis=0)  # (2, T + 2)
    positives = int(total[0].sum())
    if positives == 0:
        return float("nan")
    tp, fp = int(total[0, j:].sum()), int(total[1, j:].sum())
    return 100.0 * tp / (positives + fp)


def pxap(maps, masks, thresholds=None) -> dict:
    """PxAP and PIoU of score maps against GT masks (1 foreground, 0 background, 255 ignored).

    Example:
        >>> s = np.array([[[0.9, 0.2], [0.8, 0.1]]], np.float32); m = np.array([[[1, 0], [1, 0]]], np.uint8)
        >>> pxap(s, m)["PxAP"]
        100.0
    """
    thresholds = resolve_thresholds(thresholds)
    maps = ScoreMaps.of(maps)
    return pxap_from_rows(pxap_histograms(maps, masks, thresholds), thresholds)


def loc_ious(maps, boxes, num_boxes=None, cam_threshold: float = 0.2, multi_contour: bool = False
             ) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the IoU and box at one CAM threshold (the CAM paper's protocol): ((B,), (B, 4)).

    Example:
        >>> m = np.zeros((1, 8, 8), np.float32); m[0, 2:6, 2:6] = 1.0
        >>> iou, box = loc_ious(m, np.array([[[2.0, 2.0, 6.0, 6.0]]]))
        >>> iou.tolist(), box.tolist()
        ([1.0], [[2, 2, 6, 6]])
    """
    if not 0 <= float(cam_threshold) < 1:
        raise ValueError(f"cam_threshold must be in [0, 1), got {cam_threshold}")
    maps = ScoreMaps.of(maps)
    scan = scan_levels(maps, boxes, num_boxes, np.array([float(cam_threshold)]))
    if multi_contour:
        return scan.iou[:, 0, 0].copy(), scan.box[:, 0, 0].copy()
    iou, box = largest_contour(scan, maps)
    return iou[:, 0], box[:, 0]


def as_numpy(x, dtype=None) -> np.ndarray:
    """A tensor (any device) or array-like as a numpy array, without a torch op (no OpenMP team on the thread)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def topk_hits(logits, labels, topk: Sequence[int] = (1, 5)) -> np.ndarray:
    """(B, len(topk)) bool: the label is among the k highest logits, ties ranked by class index (as a stable sort:
    top-1 is then exactly ``label == argmax``, the first maximum).

    Example:
        >>> topk_hits(torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0]]), torch.tensor([1, 1]), (1, 2)).tolist()
        [[False, True], [False, True]]
    """
    logits = as_numpy(logits, np.float64)
    labels = as_numpy(labels, np.int64).reshape(-1)
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"logits must be (B, C) and labels (B,), got {logits.shape} and {labels.shape}")
    if labels.size and ((labels < 0) | (labels >= logits.shape[1])).any():
        raise ValueError(f"labels must be class indices in [0, {logits.shape[1]}), got {labels.tolist()}")
    own = logits[np.arange(logits.shape[0]), labels]  # (B,)
    ahead = (logits > own[:, None]) | ((logits == own[:, None]) & (np.arange(logits.shape[1]) < labels[:, None]))
    higher = ahead.sum(axis=1)  # (B,) classes ranked before the label
    return np.stack([higher < k for k in topk], axis=1) if topk else np.zeros((logits.shape[0], 0), bool)


def softmax_prediction(logits) -> tuple[np.ndarray, np.ndarray]:
    """(B,) predicted class (the first maximum) and its softmax probability (float64), from (B, C) logits.

    Example:
        >>> pred, score = softmax_prediction(np.array([[0.0, 0.0], [3.0, 1.0]]))
        >>> pred.tolist(), score.round(4).tolist()
        ([0, 0], [0.5, 0.8808])
    """
    logits = as_numpy(logits, np.float64)
    pred = logits.argmax(axis=1)
    top = logits[np.arange(logits.shape[0]), pred]
    return pred, 1.0 / np.exp(logits - top[:, None]).sum(axis=1)


def localization_accuracy(loc_iou, cls_hit=None, topk: Sequence[int] = (), iou_threshold: float = 0.5) -> dict:
    """GT-known loc, top-k loc and top-k cls (percent) from per-image rows.

    GT-known loc: the IoU at the fixed CAM threshold is >= ``iou_threshold``. Top-k loc: the label is in
    the top k AND GT-known loc holds (the CAM paper's top-k loc). Top-k cls: classification accuracy.

    Example:
        >>> localization_accuracy(np.array([1.0, 0.2]), np.array([[True], [True]]), (1,))
        {'gt_known_loc': 50.0, 'top1_loc': 50.0, 'top1_cls': 100.0}
    """
    loc_iou = np.asarray(loc_iou, dtype=np.float64)
    if loc_iou.shape[0] == 0:
        return {}
    n = float(loc_iou.shape[0])
    loc = loc_iou >= iou_threshold
    out = {"gt_known_loc": float(loc.sum() * 100.0 / n)}
    for j, k in enumerate(topk):
        cls = np.asarray(cls_hit)[:, j].astype(bool)
        out[f"top{k}_loc"] = float((cls & loc).sum() * 100.0 / n)
        out[f"top{k}_cls"] = float(cls.sum() * 100.0 / n)
    return out


def gt_known_loc(maps, boxes, num_boxes=None, cam_threshold: float = 0.2, iou_threshold: float = 0.5,
                 multi_contour: bool = False) -> float:
    """GT-known localization accuracy (percent) at one CAM threshold, largest contour by default.

    Example:
        >>> cams = np.zeros((2, 8, 8), np.float32); cams[:, 2:6, 2:6] = 1.0
        >>> gt_known_loc(cams, np.array([[[2.0, 2.0, 6.0, 6.0]], [[0.0, 0.0, 1.0, 1.0]]]))
        50.0
    """
    iou, _ = loc_ious(maps, boxes, num_boxes, cam_threshold, multi_contour)
    return localization_accuracy(iou, iou_threshold=iou_threshold)["gt_known_loc"]
