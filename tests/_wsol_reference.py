"""Plain, slow reference of the wsoleval localization metrics, for tests only.

Written independently of camlab.wsol: per image, per threshold, OpenCV + Python loops, in the
order the benchmark's procedure is described in /work/shared/METRIC_CONVENTIONS.md.
"""

from __future__ import annotations

import cv2
import numpy as np


def ref_boxes(scoremap: np.ndarray, threshold: float, multi_contour: bool) -> list[list[int]]:
    height, width = scoremap.shape
    u8 = (scoremap * 255).astype(np.uint8)
    cut = int(threshold * np.max(u8))
    _, binary = cv2.threshold(u8, cut, 255, cv2.THRESH_BINARY)
    contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
    if len(contours) == 0:
        return [[0, 0, 0, 0]]
    if not multi_contour:
        best, best_area = None, -1.0
        for c in contours:
            a = cv2.contourArea(c)
            if a > best_area:  # strict: the first one wins ties
                best, best_area = c, a
        contours = [best]
    boxes = []
    for c in contours:
        x, y, w, h = cv2.boundingRect(c)
        boxes.append([x, y, min(x + w, width - 1), min(y + h, height - 1)])
    return boxes


def ref_num_contours(scoremap: np.ndarray, threshold: float) -> int:
    """Number of OpenCV tree-mode contours of the thresholded map (outer borders plus holes)."""
    u8 = (scoremap * 255).astype(np.uint8)
    _, binary = cv2.threshold(u8, int(threshold * np.max(u8)), 255, cv2.THRESH_BINARY)
    return len(cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2])


def ref_iou(a, b) -> float:
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = iw * ih
    union = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - inter
    return inter / union if union > 0 else 0.0


def ref_gt(boxes_float) -> list[list[int]]:
    return [[int(v) for v in box] for box in boxes_float]


def ref_best_ious(scoremap, gt_float, thresholds, multi_contour) -> np.ndarray:
    gt = ref_gt(gt_float)
    out = []
    for t in thresholds:
        best = 0.0
        for box in ref_boxes(scoremap, t, multi_contour):
            for g in gt:
                best = max(best, ref_iou(box, g))
        out.append(best)
    return np.array(out)


def ref_max_box_acc(scoremaps, gts, thresholds, iou_thresholds=(30, 50, 70), multi_contour=True):
    """Returns ({iou: best accuracy percent}, {iou: accuracy curve}) over a list of images."""
    correct = {k: np.zeros(len(thresholds)) for k in iou_thresholds}
    for scoremap, gt in zip(scoremaps, gts):
        ious = ref_best_ious(scoremap, gt, thresholds, multi_contour)
        for k in iou_thresholds:
            correct[k][ious >= k / 100] += 1
    curves = {k: correct[k] * 100.0 / float(len(scoremaps)) for k in iou_thresholds}
    return {k: curves[k].max() for k in iou_thresholds}, curves


def ref_pxap(scoremaps, masks, thresholds):
    edges = np.append(np.asarray(thresholds, dtype=np.float64), [1.0, 2.0, 3.0])
    fg = np.zeros(len(edges) - 1)
    bg = np.zeros(len(edges) - 1)
    for s, m in zip(scoremaps, masks):
        s = s.astype(np.float64)
        fg += np.histogram(s[m == 1], bins=edges)[0]
        bg += np.histogram(s[m == 0], bins=edges)[0]
    tp = fg[::-1].cumsum()
    fp = bg[::-1].cumsum()
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = tp / (tp + fp)
    recall = tp / fg.sum()
    keep = (tp + fp) != 0
    auc = (precision[1:] * np.diff(recall))[keep[1:]].sum()
    auc *= 100
    # pixel IoU of {score >= t}, per threshold t (ascending), best in percent
    piou = []
    for k in range(len(thresholds)):
        tp_k = fg[k:].sum()
        fp_k = bg[k:].sum()
        fn_k = fg.sum() - tp_k
        piou.append(tp_k / (tp_k + fp_k + fn_k))
    return auc, max(piou) * 100, fg, bg
