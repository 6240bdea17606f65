"""WSOL evaluation: score maps, boxes, the all-threshold kernels, PxAP, the functional API and ``WSOLMetrics``.

Layers, each importing only the ones above it:

* :mod:`~camlab.wsol.scoremaps` - maps -> uint8 maps, maxima, cut levels, thresholds, ``ScoreMaps``;
* :mod:`~camlab.wsol.boxes` - box conventions and converters, the one inclusive IoU, OpenCV reference boxes;
* :mod:`~camlab.wsol.rowscan`, :mod:`~camlab.wsol.unionfind` - the two exact all-threshold kernels;
* :mod:`~camlab.wsol.levels` - ``scan_levels`` (one call per batch, the kernel chosen per image) and
  ``largest_contour``;
* :mod:`~camlab.wsol.pxap` - PxAP histograms and PxAP / PIoU from them;
* :mod:`~camlab.wsol.pointing` - pointing game, energy-based pointing game, relevance mass / rank accuracy, top-k
  intersection: per-image rows of map-only localisation-evaluation metrics;
* :mod:`~camlab.wsol.functional` - the metrics as plain functions on arrays (bring your own maps);
* :mod:`~camlab.wsol.metric` - ``WSOLMetrics``, a ``torchmetrics.Metric`` of per-image rows, exact under DDP.
* :mod:`~camlab.wsol.baseline` - the center baseline's map (a centred Gaussian) and its map source.

Example:
    >>> import numpy as np
    >>> from camlab import wsol
    >>> cams = np.zeros((2, 8, 8), np.float32); cams[:, 2:6, 2:6] = 1.0
    >>> boxes = np.array([[[2.0, 2.0, 6.0, 6.0]], [[0.0, 0.0, 1.0, 1.0]]])
    >>> wsol.max_box_acc(cams, boxes)["MaxBoxAccV2"], wsol.gt_known_loc(cams, boxes)
    (50.0, 50.0)
"""

from camlab.wsol.boxes import box_iou_inclusive, boxes_at_threshold, gt_boxes_to_int
from camlab.wsol.functional import (best_ious, box_accuracy, box_accuracy_at, gt_known_loc, loc_ious,
                                    localization_accuracy, max_box_acc, piou_at, pxap, pxap_from_rows, topk_hits)
from camlab.wsol.levels import LevelScan, largest_contour, scan_levels
from camlab.wsol.metric import WSOLMetrics, WSOLReport
from camlab.wsol.pointing import POINTING_NAMES, pointing_from_rows, pointing_rows
from camlab.wsol.pxap import pxap_bin_edges, pxap_from_histograms, pxap_histograms
from camlab.wsol.scoremaps import ScoreMaps, check_scoremaps, cut_levels, resolve_thresholds, scoremap_to_uint8, threshold_grid

__all__ = ["POINTING_NAMES", "LevelScan", "ScoreMaps", "WSOLMetrics", "WSOLReport", "best_ious", "box_accuracy", "box_accuracy_at", "box_iou_inclusive",
           "boxes_at_threshold", "check_scoremaps", "cut_levels", "gt_boxes_to_int", "gt_known_loc", "largest_contour",
           "loc_ious", "localization_accuracy", "max_box_acc", "piou_at", "pointing_from_rows", "pointing_rows", "pxap", "pxap_bin_edges", "pxap_from_histograms",
           "pxap_from_rows", "pxap_histograms", "resolve_thresholds", "scan_levels", "scoremap_to_uint8",
           "threshold_grid", "topk_hits"]
