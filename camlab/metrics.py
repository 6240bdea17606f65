"""torchmetrics classes for WSOL: MaxBoxAcc(V2), PxAP/PIoU and the CAM paper's top-k localization.

Thin :class:`torchmetrics.Metric` wrappers over :mod:`camlab.localization`. Values are percents, like
clovaai/wsolevaluation. State never grows with pixels: one row per sample (its dataset ``index`` plus
per-threshold best IoU, a PxAP histogram, or hit bits), kept as ``cat`` states. ``compute()`` drops
repeated indices (``DistributedSampler`` pads the last batch by repeating samples), so the result under
any number of processes equals the single-process one exactly. Call ``compute()`` on every rank.

Inputs are score maps already upsampled to the input size and normalized to [0, 1]
(:func:`camlab.localization.normalize_cams`). On the CPU, float64 maps stay float64 and any other float dtype
becomes float32 (exactly); the uint8 maps are ``map * 255`` truncated, in that dtype. wsoleval's evaluator takes
float64 maps only, so its product is always float64: for float32 values in [0, 1] the float32 product truncates to
the same integer (checked for the float32 values around every k / 255), and float64 maps are never rounded to
float32, which would move scores across PxAP bin edges and uint8 steps
(``benchmarks/crosscheck_wsoleval.py`` compares with wsoleval's own evaluator code).
"""

from __future__ import annotations

import queue
import threading
import warnings
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from camlab.cam import minmax_normalize
from camlab.localization import (
    _all_contours_batch,
    _cut_levels,
    _largest_contour_ious,
    _normalize_scoremaps,
    _prepare_gt,
    _pxap_histograms_unit,
    _scoremaps_u8,
    pxap_from_histograms,
    threshold_grid,
)

__all__ = ["BoxAccuracy", "PxAP", "ScoreMaps", "TopKLocalization", "UpdateWorker", "WSOLMetrics",
           "resolve_thresholds"]


def resolve_thresholds(cam_thresholds) -> np.ndarray:
    """None -> ``np.arange(0, 1, 0.01)``; a float -> ``np.arange(0, 1, interval)``; a sequence as is.

    Example:
        >>> len(resolve_thresholds(None)), len(resolve_thresholds(0.1)), resolve_thresholds([0.2, 0.5]).tolist()
        (100, 10, [0.2, 0.5])
    """
    if cam_thresholds is None:
        return threshold_grid(0.01)
    if isinstance(cam_thresholds, (float, int)) and not isinstance(cam_thresholds, bool):
        if not 0 < float(cam_thresholds) < 1:
            raise ValueError(f"cam threshold interval must be in (0, 1), got {cam_thresholds}")
        return threshold_grid(float(cam_thresholds))
    grid = np.asarray(list(cam_thresholds), dtype=np.float64)
    if grid.ndim != 1 or grid.size == 0:
        raise ValueError("cam_thresholds must be None, an interval, or a non-empty 1-D sequence")
    if (grid < 0).any() or (grid >= 1).any() or (np.diff(grid) <= 0).any():
        raise ValueError(f"cam_thresholds must be strictly increasing values in [0, 1), got {grid.tolist()}")
    return grid


class ScoreMaps:
    """A batch of score maps converted once: (B, H, W) numpy maps in [0, 1], uint8 maps, maxima.

    The maps are float64 when given as float64 and float32 otherwise (see the module docstring). Every metric's
    ``update`` accepts one in place of the ``cams`` tensor; :class:`WSOLMetrics` builds one per batch so that its
    sub-metrics copy, check and convert the maps once (one fused pass for float32).
    :meth:`normalize` builds one from *raw* maps, min-max normalizing them on the CPU with the same operations as
    :func:`camlab.cam.minmax_normalize` in the maps' dtype (bit-identical results), for float32 in the same pass.

    Example:
        >>> sm = ScoreMaps.normalize(torch.tensor([[[1.0, 3.0], [2.0, 3.0]]]))
        >>> sm.maps.tolist(), sm.u8.tolist(), sm.vmax.tolist()
        ([[[0.0, 1.0], [0.5, 1.0]]], [[[0, 255], [127, 255]]], [255])
    """

    def __init__(self, cams: Tensor, _normalize: bool = False) -> None:
        if not isinstance(cams, Tensor) or cams.ndim != 3:
            raise ValueError(f"cams must be a (B, H, W) tensor, got {getattr(cams, 'shape', type(cams))}")
        dtype = torch.float64 if cams.dtype == torch.float64 else torch.float32
        maps = cams.detach().to("cpu", dtype).numpy()
        try:
            if _normalize and dtype == torch.float64:
                self.maps = minmax_normalize(torch.from_numpy(maps)).numpy()
                self.u8, self.vmax = _scoremaps_u8(self.maps, check=True)
            elif _normalize:
                self.maps, self.u8, self.vmax = _normalize_scoremaps(maps)
            else:
                self.maps = maps
                self.u8, self.vmax = _scoremaps_u8(maps, check=True)
        except ValueError:
            raise ValueError("cams must be normalized to [0, 1] without NaN (see localization.normalize_cams)")
        self.shape = self.maps.shape

    @classmethod
    def normalize(cls, cams: Tensor) -> "ScoreMaps":
        """Raw (B, H, W) maps -> min-max normalized score maps (see the class docstring)."""
        return cls(cams, _normalize=True)


class _SharedLevels:
    """The all-contour kernel's output (best IoU and count of the contours, and of the components alone, per image
    and cut level) for one batch, one GT box set and one threshold grid, cached on the batch's :class:`ScoreMaps`: MaxBoxAccV2, MaxBoxAcc and
    top-k loc of one :meth:`WSOLMetrics.update` then share one kernel run, and MaxBoxAcc / top-k loc call OpenCV
    only where a mask has several components. The cache lives as long as the ScoreMaps (one batch)."""

    def __init__(self, maps: ScoreMaps, gt, n_gt, thresholds: np.ndarray, parallel: bool) -> None:
        self.maps, self.gt, self.n_gt, self.parallel = maps, gt, n_gt, parallel
        self.thresholds = np.array(thresholds, dtype=np.float64)
        self.levels = _cut_levels(maps.vmax, thresholds)
        self.all_ious = np.zeros(self.levels.shape, dtype=np.float64)
        self.counts = np.empty(self.levels.shape, np.int64)  # contours: components + holes
        self.comp_ious = np.zeros(self.levels.shape, dtype=np.float64)  # over the components' boxes alone
        self.comp_counts = np.empty(self.levels.shape, np.int64)
        _all_contours_batch(maps.u8, self.levels, gt, n_gt, self.all_ious, parallel=parallel, counts=self.counts,
                            comp_out=self.comp_ious, comp_counts=self.comp_counts)
        self._largest = None

    @staticmethod
    def get(maps: ScoreMaps, boxes, num_boxes, thresholds: np.ndarray, parallel: bool = False) -> "_SharedLevels":
        gt, n_gt = _prepare_gt(boxes, num_boxes, maps.shape[0])
        cache = maps.__dict__.setdefault("_levels_cache", [])
        for shared in cache:
            if (np.array_equal(shared.thresholds, thresholds) and np.array_equal(shared.gt, gt)
                    and np.array_equal(shared.n_gt, n_gt)):
                return shared
        shared = _SharedLevels(maps, gt, n_gt, thresholds, parallel)
        cache.append(shared)
        return shared

    def largest(self) -> np.ndarray:
        """(B, T) best IoU of the largest-``contourArea`` contour (MaxBoxAcc), computed once."""
        if self._largest is None:
            self._largest = _largest_contour_ious(self.maps.u8, self.gt, self.n_gt, self.levels,
                                                  comp_ious=self.comp_ious, comp_counts=self.comp_counts)
        return self._largest

    @staticmethod
    def at_threshold(maps: ScoreMaps, boxes, num_boxes, threshold: float, multi_contour: bool) -> np.ndarray:
        """(B,) best IoU at one CAM threshold: from a cached grid run of this batch where the image's cut level
        ``int(threshold * max)`` is one of the grid's levels, from the kernel (and OpenCV) elsewhere."""
        gt, n_gt = _prepare_gt(boxes, num_boxes, maps.shape[0])
        level = _cut_levels(maps.vmax, [threshold])  # (B, 1)
        B = level.shape[0]
        iou = np.zeros(B, dtype=np.float64)
        todo = np.ones(B, dtype=bool)
        for sh in maps.__dict__.get("_levels_cache", []):
            if not (np.array_equal(sh.gt, gt) and np.array_equal(sh.n_gt, n_gt)):
                continue
            eq = sh.levels == level
            rows = np.flatnonzero(eq.any(axis=1) & todo)
            if rows.size == 0:
                continue
            col = eq[rows].argmax(axis=1)
            if multi_contour:
                iou[rows] = sh.all_ious[rows, col]
            elif sh._largest is not None:
                iou[rows] = sh._largest[rows, col]
            else:  # one component: its outer border is the largest contour; OpenCV only for several
                iou[rows] = _largest_contour_ious(maps.u8[rows], gt[rows], n_gt[rows], level[rows],
                                                  comp_ious=sh.comp_ious[rows, col][:, None],
                                                  comp_counts=sh.comp_counts[rows, col][:, None])[:, 0]
            todo[rows] = False
        rest = np.flatnonzero(todo)
        if rest.size:
            u8, g, n, lv = maps.u8[rest], gt[rest], n_gt[rest], level[rest]
            if multi_contour:
                out = np.zeros(lv.shape, dtype=np.float64)
                _all_contours_batch(u8, lv, g, n, out)
                iou[rest] = out[:, 0]
            else:
                iou[rest] = _largest_contour_ious(u8, g, n, lv)[:, 0]
        return iou


def _check_maps(cams) -> ScoreMaps:
    return cams if isinstance(cams, ScoreMaps) else ScoreMaps(cams)


def _check_index(index, batch: int) -> Tensor:
    if index is None:
        raise ValueError("index (dataset index per sample) is required: it de-duplicates DDP padding")
    index = torch.as_tensor(index).detach().reshape(-1).long().cpu()
    if index.numel() != batch:
        raise ValueError(f"index has {index.numel()} entries for a batch of {batch}")
    return index


def _unique_rows(index: Tensor, *rows: Tensor) -> tuple[np.ndarray, ...]:
    """Rows of the first occurrence of each index, sorted by index (rows of a repeat are identical)."""
    idx = index.cpu().numpy()
    _, first = np.unique(idx, return_index=True)
    return tuple(r.cpu().numpy()[first] for r in rows)


class _RowMetric(Metric):
    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def _empty(self) -> bool:
        if isinstance(self.index, list):
            return sum(t.numel() for t in self.index) == 0
        return self.index.numel() == 0


class BoxAccuracy(_RowMetric):
    """Box accuracy swept over CAM thresholds: MaxBoxAccV2 (all contours) or MaxBoxAcc (largest).

    Per image and CAM threshold, the best IoU between the boxes of the thresholded map and the GT boxes
    (wsoleval conventions, see :mod:`camlab.localization`); an image is correct at an IoU threshold
    when that IoU is >= it. Per IoU threshold the accuracy curve is ``100 * correct / images`` and its
    maximum over CAM thresholds is reported, each IoU taking its own best threshold (the first on ties).

    Args:
        cam_thresholds: None (``np.arange(0, 1, 0.01)``), an interval, or an increasing sequence.
        iou_thresholds: IoU thresholds in percent.
        multi_contour: all contours (MaxBoxAccV2) or the largest ``contourArea`` one (MaxBoxAcc).
        parallel: run the all-contour kernel over the images of a batch on numba threads.

    ``compute()`` keys, with ``N`` = ``"MaxBoxAccV2"`` if multi_contour else ``"MaxBoxAcc"``:
    ``N`` (mean over IoU thresholds of the best accuracies: MaxBoxAccV2 with IoU 30/50/70, MaxBoxAcc with
    IoU 50), ``N/IoU{k}``, ``N/best_threshold/IoU{k}``, ``N/curve/IoU{k}`` (T,), ``N/num_samples``.
    Empty dict when no sample was seen. Scalars are float64 tensors.

    Example:
        >>> m = BoxAccuracy(cam_thresholds=[0.5], iou_thresholds=(50,))
        >>> cams = torch.zeros(2, 8, 8); cams[:, 2:6, 2:6] = 1.0
        >>> boxes = torch.tensor([[[2.0, 2.0, 6.0, 6.0]], [[0.0, 0.0, 1.0, 1.0]]])
        >>> m.update(cams, boxes, torch.tensor([1, 1]), index=torch.tensor([0, 1]))
        >>> float(m.compute()["MaxBoxAccV2"])
        50.0
    """

    def __init__(self, cam_thresholds=None, iou_thresholds: Sequence[float] = (30, 50, 70),
                 multi_contour: bool = True, parallel: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.thresholds = resolve_thresholds(cam_thresholds)
        ious = tuple(iou_thresholds)
        if not ious or any(not (0 < float(k) <= 100) for k in ious):
            raise ValueError(f"iou_thresholds must be non-empty percents in (0, 100], got {iou_thresholds}")
        self.iou_thresholds = ious
        self.multi_contour = bool(multi_contour)
        self.parallel = bool(parallel)
        self.name = "MaxBoxAccV2" if self.multi_contour else "MaxBoxAcc"
        self.add_state("index", default=[], dist_reduce_fx="cat")
        self.add_state("ious", default=[], dist_reduce_fx="cat")

    def update(self, cams: Tensor, boxes: Tensor, num_boxes: Tensor | None = None,
               index: Tensor | None = None) -> None:
        """cams (B, H, W) in [0, 1]; boxes (B, G, 4) xyxy padded; num_boxes (B,); index (B,)."""
        maps = _check_maps(cams)
        index = _check_index(index, maps.shape[0])
        shared = _SharedLevels.get(maps, boxes, num_boxes, self.thresholds, self.parallel)
        if self.multi_contour:
            ious = shared.all_ious
        else:
            ious = shared.largest()
        self.index.append(index.to(self.device))
        self.ious.append(torch.from_numpy(ious).to(self.device))

    def compute(self) -> dict[str, Tensor]:
        if self._empty():
            return {}
        (ious,) = _unique_rows(dim_zero_cat(self.index), dim_zero_cat(self.ious))
        n = ious.shape[0]
        out: dict[str, Tensor] = {}
        best = []
        for k in self.iou_thresholds:
            correct = (ious >= k / 100).sum(axis=0).astype(np.float64)  # (T,)
            curve = correct * 100.0 / float(n)
            arg = int(np.argmax(curve))
            best.append(curve[arg])
            out[f"{self.name}/IoU{k:g}"] = torch.tensor(curve[arg], dtype=torch.float64)
            out[f"{self.name}/best_threshold/IoU{k:g}"] = torch.tensor(self.thresholds[arg], dtype=torch.float64)
            out[f"{self.name}/curve/IoU{k:g}"] = torch.from_numpy(curve)
        out[self.name] = torch.tensor(np.average(best), dtype=torch.float64)
        out[f"{self.name}/num_samples"] = torch.tensor(n)
        return out


class PxAP(_RowMetric):
    """Pixel average precision (PxAP) and best pixel IoU (PIoU) of score maps against GT masks.

    Per sample, float64 histograms of foreground and background scores over wsoleval's edges (the CAM
    thresholds, then 1, 2, 3); ignore pixels (mask values other than 0 and 1, e.g. 255) are dropped.
    From the summed histograms: precision and recall of ``score >= t`` at every threshold and
    ``PxAP = 100 * sum_i precision_i * (recall_i - recall_{i-1})`` over points predicting something
    (wsoleval's exact summation). **PIoU** (not in wsoleval) is the best, over the CAM thresholds t, of
    the dataset-level pixel IoU ``tp / (tp + fp + fn)`` of the mask ``score >= t``, in percent.

    ``compute()`` keys: ``PxAP``, ``PIoU``, ``PIoU/best_threshold``, ``PxAP/precision`` (T,),
    ``PxAP/recall`` (T,), ``PIoU/curve`` (T,, percent), ``PxAP/num_samples``; empty dict when no sample;
    NaN values (and a RuntimeWarning) when no pixel is positive or none is predicted.

    ``parallel=True`` histograms the images of a batch on numba threads (same counts).

    Example:
        >>> m = PxAP(cam_thresholds=[0.0, 0.5])
        >>> cams = torch.tensor([[[0.9, 0.1], [0.8, 0.2]]]); masks = torch.tensor([[[1, 0], [1, 255]]])
        >>> m.update(cams, masks.to(torch.uint8), index=torch.tensor([0]))
        >>> r = m.compute(); float(r["PxAP"]), float(r["PIoU"])
        (100.0, 100.0)
    """

    def __init__(self, cam_thresholds=None, parallel: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.thresholds = resolve_thresholds(cam_thresholds)
        self.parallel = bool(parallel)
        self.add_state("index", default=[], dist_reduce_fx="cat")
        self.add_state("hist", default=[], dist_reduce_fx="cat")

    def update(self, cams: Tensor, masks: Tensor, index: Tensor | None = None) -> None:
        """cams (B, H, W) in [0, 1]; masks (B, H, W) uint8 (0, 1, 255 = ignore); index (B,)."""
        maps = _check_maps(cams)
        index = _check_index(index, maps.shape[0])
        if tuple(masks.shape) != maps.shape:
            raise ValueError(f"masks {tuple(masks.shape)} must match cams {maps.shape}")
        hist = _pxap_histograms_unit(maps.maps, masks.detach().cpu().to(torch.uint8).numpy(), self.thresholds,
                                     parallel=self.parallel)
        self.index.append(index.to(self.device))
        self.hist.append(torch.from_numpy(hist.astype(np.int32)).to(self.device))  # (B, 2, T + 2)

    def compute(self) -> dict[str, Tensor]:
        if self._empty():
            return {}
        (hist,) = _unique_rows(dim_zero_cat(self.index), dim_zero_cat(self.hist))
        total = hist.astype(np.int64).sum(axis=0)  # (2, T + 2)
        f64 = torch.float64
        try:
            r = pxap_from_histograms(total[0], total[1])
        except RuntimeError as err:  # no positive pixel, or nothing predicted: NaN, not a crashed run
            warnings.warn(f"PxAP is undefined ({err}); returning NaN", RuntimeWarning, stacklevel=2)
            nan = torch.tensor(float("nan"), dtype=f64)
            return {"PxAP": nan, "PIoU": nan.clone(), "PIoU/best_threshold": nan.clone(),
                    "PxAP/num_samples": torch.tensor(hist.shape[0])}
        return {
            "PxAP": torch.tensor(r["pxap"], dtype=f64),
            "PIoU": torch.tensor(r["piou"], dtype=f64),
            "PIoU/best_threshold": torch.tensor(self.thresholds[r["best_piou_index"]], dtype=f64),
            "PxAP/precision": torch.from_numpy(np.ascontiguousarray(r["precision"])),
            "PxAP/recall": torch.from_numpy(np.ascontiguousarray(r["recall"])),
            "PIoU/curve": torch.from_numpy(np.ascontiguousarray(r["piou_curve"] * 100)),
            "PxAP/num_samples": torch.tensor(hist.shape[0]),
        }


class TopKLocalization(_RowMetric):
    """The CAM paper's localization protocol at one fixed CAM threshold, in percent.

    GT-known loc: the box(es) from the GT class's CAM at ``cam_threshold`` (wsoleval box conventions,
    relative to the map's max) reach IoU >= ``iou_threshold`` with some GT box. Top-k loc: the GT class
    is among the k highest logits AND GT-known loc holds (only the correct class can count, so this is
    the paper's top-k loc). Top-k cls: classification accuracy.

    ``compute()`` keys: ``gt_known_loc``, ``top{k}_loc``, ``top{k}_cls`` for each k; empty dict when no
    sample. k larger than the number of classes is clamped.

    Example:
        >>> m = TopKLocalization(topk=(1,))
        >>> cams = torch.zeros(2, 8, 8); cams[:, 2:6, 2:6] = 1.0
        >>> boxes = torch.tensor([[[2.0, 2.0, 6.0, 6.0]]]).repeat(2, 1, 1)
        >>> logits = torch.tensor([[2.0, 1.0], [2.0, 1.0]]); labels = torch.tensor([0, 1])
        >>> r = m.update(cams, boxes, torch.tensor([1, 1]), logits, labels, index=torch.tensor([0, 1]))
        >>> {k: float(v) for k, v in m.compute().items()}
        {'gt_known_loc': 100.0, 'top1_loc': 50.0, 'top1_cls': 50.0}
    """

    def __init__(self, cam_threshold: float = 0.2, iou_threshold: float = 0.5, topk: Sequence[int] = (1, 5),
                 multi_contour: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0 <= float(cam_threshold) < 1:
            raise ValueError(f"cam_threshold must be in [0, 1), got {cam_threshold}")
        if not 0 < float(iou_threshold) <= 1:
            raise ValueError(f"iou_threshold is a fraction in (0, 1], got {iou_threshold}")
        topk = tuple(int(k) for k in topk)
        if not topk or any(k < 1 for k in topk):
            raise ValueError(f"topk must be positive integers, got {topk}")
        self.cam_threshold = float(cam_threshold)
        self.iou_threshold = float(iou_threshold)
        self.topk = topk
        self.multi_contour = bool(multi_contour)
        self.add_state("index", default=[], dist_reduce_fx="cat")
        self.add_state("loc_iou", default=[], dist_reduce_fx="cat")
        self.add_state("cls_hit", default=[], dist_reduce_fx="cat")

    def update(self, cams: Tensor, boxes: Tensor, num_boxes: Tensor | None, logits: Tensor, labels: Tensor,
               index: Tensor | None = None) -> None:
        """cams (B, H, W): the GT class's CAM in [0, 1]; boxes (B, G, 4); logits (B, C); labels (B,)."""
        maps = _check_maps(cams)
        index = _check_index(index, maps.shape[0])
        if logits.ndim != 2 or logits.shape[0] != maps.shape[0] or labels.reshape(-1).shape[0] != maps.shape[0]:
            raise ValueError("logits must be (B, C) and labels (B,) for the batch of cams")
        iou = _SharedLevels.at_threshold(maps, boxes, num_boxes, self.cam_threshold, self.multi_contour)
        logits = logits.detach().float().cpu()
        labels = labels.detach().reshape(-1).long().cpu()
        kmax = min(max(self.topk), logits.shape[1])
        top = logits.topk(kmax, dim=1).indices  # (B, kmax)
        hits = torch.stack([(top[:, : min(k, kmax)] == labels[:, None]).any(dim=1) for k in self.topk], dim=1)
        self.index.append(index.to(self.device))
        self.loc_iou.append(torch.from_numpy(iou).to(self.device))
        self.cls_hit.append(hits.to(torch.uint8).to(self.device))

    def compute(self) -> dict[str, Tensor]:
        if self._empty():
            return {}
        iou, hit = _unique_rows(dim_zero_cat(self.index), dim_zero_cat(self.loc_iou), dim_zero_cat(self.cls_hit))
        n = float(iou.shape[0])
        loc = iou >= self.iou_threshold
        out = {"gt_known_loc": torch.tensor(loc.sum() * 100.0 / n, dtype=torch.float64)}
        for j, k in enumerate(self.topk):
            cls = hit[:, j].astype(bool)
            out[f"top{k}_loc"] = torch.tensor((cls & loc).sum() * 100.0 / n, dtype=torch.float64)
            out[f"top{k}_cls"] = torch.tensor(cls.sum() * 100.0 / n, dtype=torch.float64)
        return out


class WSOLMetrics(torch.nn.Module):
    """All WSOL metrics behind one ``update`` / ``compute`` with a flat dict of results.

    Sub-metrics: ``box_v2`` (BoxAccuracy, all contours, ``iou_thresholds``), ``box_v1`` (BoxAccuracy,
    largest contour, IoU 50; ``max_box_acc=False`` drops it: it is the slow, OpenCV-per-level one),
    ``pxap`` (PxAP, when ``masks=True``), ``topk_loc`` (TopKLocalization, when ``topk`` is not empty).
    In ``update`` a metric whose inputs are absent (``boxes``, ``masks`` or ``logits`` None) is skipped.
    ``compute()`` returns the scalar results of every metric that saw data (curves are in
    :meth:`curves`): ``MaxBoxAccV2``, ``MaxBoxAccV2/IoU{k}``, ``MaxBoxAccV2/best_threshold/IoU{k}``,
    ``best_threshold/IoU{k}`` (alias of the V2 one), ``MaxBoxAcc``, ``MaxBoxAcc/IoU50``,
    ``MaxBoxAcc/best_threshold/IoU50``, ``PxAP``, ``PIoU``, ``PIoU/best_threshold``, ``gt_known_loc``,
    ``top{k}_loc``, ``top{k}_cls``.

    Example:
        >>> wm = WSOLMetrics(cam_thresholds=0.1, masks=True, topk=(1,))
        >>> cams = torch.zeros(1, 8, 8); cams[0, 2:6, 2:6] = 1.0
        >>> masks = (cams > 0).to(torch.uint8); boxes = torch.tensor([[[2.0, 2.0, 6.0, 6.0]]])
        >>> wm.update(cams, boxes=boxes, num_boxes=torch.tensor([1]), masks=masks,
        ...           logits=torch.tensor([[1.0, 0.0]]), labels=torch.tensor([0]), index=torch.tensor([7]))
        >>> r = wm.compute(); float(r["MaxBoxAccV2"]), float(r["PxAP"]), float(r["top1_loc"])
        (100.0, 100.0, 100.0)
    """

    def __init__(self, cam_thresholds=None, iou_thresholds: Sequence[float] = (30, 50, 70),
                 max_box_acc: bool = True, masks: bool = False, topk: Sequence[int] = (1, 5),
                 loc_cam_threshold: float = 0.2, loc_iou_threshold: float = 0.5,
                 loc_multi_contour: bool = False, parallel: bool = False) -> None:
        super().__init__()
        self.thresholds = resolve_thresholds(cam_thresholds)
        self.box_v2 = BoxAccuracy(self.thresholds, iou_thresholds, multi_contour=True, parallel=parallel)
        self.box_v1 = BoxAccuracy(self.thresholds, (50,), multi_contour=False) if max_box_acc else None
        self.pxap = PxAP(self.thresholds, parallel=parallel) if masks else None
        self.topk_loc = (TopKLocalization(loc_cam_threshold, loc_iou_threshold, topk, loc_multi_contour)
                         if topk else None)

    def _metrics(self) -> list[Metric]:
        return [m for m in (self.box_v2, self.box_v1, self.pxap, self.topk_loc) if m is not None]

    def update(self, cams: Tensor, boxes: Tensor | None = None, num_boxes: Tensor | None = None,
               masks: Tensor | None = None, logits: Tensor | None = None, labels: Tensor | None = None,
               index: Tensor | None = None) -> None:
        """cams (B, H, W) in [0, 1], the GT class's CAM; other inputs as in the batch dict."""
        cams = _check_maps(cams)  # converted and checked once for every sub-metric
        if boxes is not None:
            self.box_v2.update(cams, boxes, num_boxes, index)
            if self.box_v1 is not None:
                self.box_v1.update(cams, boxes, num_boxes, index)
            if self.topk_loc is not None and logits is not None and labels is not None:
                self.topk_loc.update(cams, boxes, num_boxes, logits, labels, index)
        if masks is not None and self.pxap is not None:
            self.pxap.update(cams, masks, index)

    def _all(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for m in self._metrics():
            # a metric never updated (its inputs absent) is skipped; inputs are present or absent
            # dataset-wide, so every rank skips the same ones and the collective syncs stay matched
            if m.update_called:
                out.update(m.compute())
        for key in list(out):
            if key.startswith("MaxBoxAccV2/best_threshold/"):
                out[key.removeprefix("MaxBoxAccV2/")] = out[key]
        return out

    def compute(self) -> dict[str, Tensor]:
        """Flat dict of scalar float64 tensors (see the class docstring)."""
        return {k: v for k, v in self._all().items() if v.ndim == 0 and not k.endswith("num_samples")}

    def curves(self) -> dict[str, list[float]]:
        """Per-threshold curves as a table: ``threshold`` and one column per curve (CSV/plot ready)."""
        table = {"threshold": self.thresholds.tolist()}
        for key, v in self._all().items():
            if v.ndim == 1:
                table[key.replace("/curve", "")] = v.tolist()
        return table

    def reset(self) -> None:
        for m in self._metrics():
            m.reset()


class UpdateWorker:
    """Runs submitted calls one at a time, in submission order, on one background thread.

    Made for metric updates that should overlap the caller's next batch: the kernels of
    :mod:`camlab.localization` release the GIL (numba ``nogil``, OpenCV), so the update of batch i runs while
    the main thread computes batch i + 1. One thread and a FIFO queue: the calls run exactly as a plain loop
    would run them (same order, same state), so results are bit-identical to calling them directly.

    * ``submit`` blocks while ``max_pending`` calls are queued (back-pressure: at most that many batches
      are held in memory);
    * the first exception a call raises is stored; later calls are skipped, and the exception is re-raised
      (with its traceback) by the next ``submit``, ``join`` or ``close``;
    * ``join`` waits until every submitted call has run; call it before reading what the calls wrote (e.g.
      before ``compute()``). ``close`` joins and stops the thread (a later ``submit`` starts a new one).

    Nothing else may touch the objects the queued calls use until ``join`` returns: in particular not
    ``Metric.to()``, which rebuilds the list states.

    Example:
        >>> out = []
        >>> w = UpdateWorker()
        >>> for i in range(3):
        ...     w.submit(out.append, i)
        >>> w.join(); out
        [0, 1, 2]
        >>> w.close()
    """

    def __init__(self, max_pending: int = 2, name: str = "camlab-metric-updates") -> None:
        if int(max_pending) < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.max_pending = int(max_pending)
        self.name = name
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def __getstate__(self) -> dict:  # picklable (ddp_spawn, deepcopy): the thread and queue are not copied
        return {"max_pending": self.max_pending, "name": self.name, "_queue": None, "_thread": None, "_error": None}

    def _run(self, q: queue.Queue) -> None:
        while True:
            item = q.get()
            try:
                if item is None:
                    return
                if self._error is None:
                    fn, args, kwargs = item
                    fn(*args, **kwargs)
            except BaseException as err:  # kept for the caller's thread; later calls are skipped
                self._error = err
            finally:
                item = None  # drop the batch's references before waiting for the next one
                q.task_done()

    def _raise_pending(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Queue ``fn(*args, **kwargs)``; re-raises an earlier call's exception instead of queueing."""
        self._raise_pending()
        if self._thread is None or not self._thread.is_alive():
            self._queue = queue.Queue(maxsize=self.max_pending)
            self._thread = threading.Thread(target=self._run, args=(self._queue,), name=self.name, daemon=True)
            self._thread.start()
        self._queue.put((fn, args, kwargs))

    def join(self) -> None:
        """Wait for every submitted call; re-raise the first exception one of them raised."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.join()
        self._raise_pending()

    def close(self, raise_errors: bool = True) -> None:
        """Join, then stop the thread. ``raise_errors=False`` drops a pending exception (cleanup paths)."""
        try:
            if self._thread is not None and self._thread.is_alive():
                self._queue.join()
                self._queue.put(None)
                self._thread.join()
        finally:
            self._thread = None
            self._queue = None
            if raise_errors:
                self._raise_pending()
            else:
                self._error = None

