"""``WSOLMetrics``: every WSOL number of an evaluation from one set of per-image rows, exact under DDP.

One ``update`` per batch makes one kernel call (:func:`~camlab.wsol.levels.scan_levels` over the threshold
grid plus the fixed localization threshold) and appends one row per image to ``cat`` states: its dataset
``index``, best IoU and box per grid threshold, the IoU and box at the fixed threshold, its PxAP histogram,
label, prediction and top-k hits. State grows with images, never with pixels. ``compute()`` /
:meth:`WSOLMetrics.report` gather the rows of every rank, keep the first row of each dataset index
(``DistributedSampler`` pads the last batch by repeating samples) in index order, and derive every number
from them with the aggregates of :mod:`camlab.wsol.functional`; :meth:`WSOLReport.per_image` gives the same
rows as a table, so its hit counts x 100 / images are the aggregates exactly. Call ``compute()`` / ``report()`` on every rank.

The protocol of Choe et al. (CVPR 2020) chooses the CAM thresholds on the validation split and reports the test
split at them: :meth:`WSOLReport.chosen_thresholds` of the validation report gives them,
:meth:`WSOLReport.at_thresholds` of the test report scores its rows there (the ``@val`` numbers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from camlab.wsol.functional import (as_numpy, box_accuracy, box_accuracy_at, check_iou_thresholds, localization_accuracy,
                                    piou_at, pxap_from_rows, softmax_prediction, threshold_index, topk_hits)
from camlab.wsol.boxes import pack_boxes, unpack_boxes
from camlab.wsol.levels import largest_contour, scan_levels
from camlab.wsol.pointing import POINTING_NAMES, pointing_from_rows, pointing_rows
from camlab.wsol.pxap import pxap_histograms
from camlab.wsol.scoremaps import ScoreMaps, resolve_thresholds

__all__ = ["WSOLMetrics", "WSOLReport"]


@dataclass
class WSOLReport:
    """Everything one evaluation measured. ``scalars``: the flat results (percent); ``curves``: a table with a
    ``threshold`` column and one column per curve; ``rows``: per-image arrays sorted by dataset index."""

    scalars: dict = field(default_factory=dict)
    curves: dict = field(default_factory=dict)
    rows: dict = field(default_factory=dict)
    iou_thresholds: tuple = ()
    thresholds: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: more per-image columns (e.g. the model-based faithfulness metrics of :mod:`camlab.faith`), each aligned with
    #: ``rows["index"]``; :meth:`add_columns` aligns them by dataset index
    columns: dict = field(default_factory=dict)
    #: the top-k of ``rows["cls_hit"]``'s columns and the IoU threshold (fraction) of GT-known / top-k loc
    topk: tuple = ()
    loc_iou_threshold: float = 0.5

    def chosen_thresholds(self) -> dict[str, float]:
        """The CAM thresholds where this report's curves peak, to apply to another split (:meth:`at_thresholds`):
        ``IoU{k}`` per MaxBoxAccV2 IoU threshold (its ``best_threshold``, all contours), ``loc`` (the threshold of
        the best GT-known loc at ``loc_iou_threshold`` over the grid, all contours: MaxBoxAccV2's box at that IoU)
        and, with masks, ``PIoU`` (the best pixel-IoU threshold). Empty without box rows."""
        s, r = self.scalars, self.rows
        if "ious" not in r or not r["ious"].shape[0]:
            return {}
        chosen = {f"IoU{k:g}": float(s[f"MaxBoxAccV2/best_threshold/IoU{k:g}"]) for k in self.iou_thresholds}
        k = self.loc_iou_threshold * 100
        chosen["loc"] = float(box_accuracy(r["ious"], self.thresholds, (k,))[f"MaxBoxAccV2/best_threshold/IoU{k:g}"])
        if np.isfinite(s.get("PIoU/best_threshold", np.nan)):
            chosen["PIoU"] = float(s["PIoU/best_threshold"])
        return chosen

    def at_thresholds(self, chosen: dict[str, float], suffix: str = "@val") -> dict[str, float]:
        """This report's numbers at CAM thresholds chosen on another split (:meth:`chosen_thresholds`), no maximum
        over this split's thresholds: ``MaxBoxAccV2@val`` (+ ``/IoU{k}`` and ``/threshold/IoU{k}``),
        ``gt_known_loc@val`` and ``top{k}_loc@val`` (right class and IoU >= ``loc_iou_threshold`` at ``loc``, boxes of
        every contour; ``loc@val/threshold``), ``PIoU@val`` (+ ``/threshold``). ValueError when a threshold is not
        on this report's grid."""
        r, out = self.rows, {}
        if "ious" not in r or not chosen:
            return out
        ks = [k for k in self.iou_thresholds if f"IoU{k:g}" in chosen]
        if ks:
            name = f"MaxBoxAccV2{suffix}"
            out.update(box_accuracy_at(r["ious"], self.thresholds, {k: chosen[f"IoU{k:g}"] for k in ks}, ks, name))
        if "loc" in chosen:
            j = threshold_index(self.thresholds, chosen["loc"])
            with_cls = self.topk if (r["pred"] >= 0).all() and (r["label"] >= 0).all() else ()
            loc = localization_accuracy(r["ious"][:, j], r["cls_hit"], with_cls, self.loc_iou_threshold)
            out.update({f"{k}{suffix}": v for k, v in loc.items() if not k.endswith("_cls")})
            out[f"loc{suffix}/threshold"] = float(chosen["loc"])
        if "PIoU" in chosen and "hist" in r and r["has_mask"].any():
            out[f"PIoU{suffix}"] = piou_at(r["hist"][r["has_mask"].astype(bool)], self.thresholds, chosen["PIoU"])
            out[f"PIoU{suffix}/threshold"] = float(chosen["PIoU"])
        return out

    def add_columns(self, index: np.ndarray, columns: dict) -> None:
        """Add per-image ``columns`` of the images ``index`` (any order); images they miss get NaN."""
        mine = self.rows.get("index")
        if mine is None:
            return
        index = np.asarray(index)
        order = np.argsort(index, kind="stable")
        pos = np.searchsorted(index[order], mine).clip(0, max(len(index) - 1, 0))
        found = (index[order][pos] == mine) if len(index) else np.zeros(len(mine), bool)
        for name, values in columns.items():
            col = np.full(len(mine), np.nan)
            col[found] = np.asarray(values, np.float64)[order][pos[found]]
            self.columns[name] = col

    def per_image(self) -> list[dict]:
        """One dict per image: ``index``, ``label``, ``pred``, ``score``, ``correct``, ``gt_known_iou``,
        ``gt_known_hit``, ``top1_loc``, ``gt_known_box`` (when GT-known loc was measured) and, per IoU threshold k, ``threshold{k}`` (the
        dataset's best threshold), ``iou{k}``, ``hit{k}``, ``box{k}`` at it. Boxes are inclusive pixels."""
        r = self.rows
        if not r:
            return []
        n = r["index"].shape[0]
        best = {k: int(self.scalars.get(f"MaxBoxAccV2/best_index/IoU{k:g}", 0)) for k in self.iou_thresholds}
        out = []
        for i in range(n):
            correct = bool(r["pred"][i] == r["label"][i])
            row = {"index": int(r["index"][i]), "label": int(r["label"][i]), "pred": int(r["pred"][i]),
                   "score": float(r["score"][i]), "correct": correct}
            if "loc_iou" in r:  # GT-known loc was measured (topk not empty)
                hit = bool(r["loc_hit"][i])
                row.update({"gt_known_iou": float(r["loc_iou"][i]), "gt_known_hit": hit, "top1_loc": correct and hit,
                            "gt_known_box": r["loc_box"][i].tolist()})
            if "faith" in r:
                row.update({name: float(r["faith"][i, c]) for c, name in enumerate(POINTING_NAMES)})
            row.update({name: float(col[i]) for name, col in self.columns.items()})
            for k, j in best.items():
                iou = float(r["ious"][i, j])
                row.update({f"threshold{k:g}": float(self.thresholds[j]), f"iou{k:g}": iou,
                            f"hit{k:g}": iou >= k / 100, f"box{k:g}": r["boxes"][i, j].tolist()})
            out.append(row)
        return out


class WSOLMetrics(Metric):
    """MaxBoxAccV2, MaxBoxAcc, PxAP / PIoU, GT-known / top-k loc and top-k cls from per-image rows.

    Args:
        cam_thresholds: None (``np.arange(0, 1, 0.01)``), an interval, or an increasing sequence.
        iou_thresholds: MaxBoxAccV2's IoU thresholds in percent.
        max_box_acc: also MaxBoxAcc (largest contour, IoU 50): OpenCV at the levels with several components.
        masks: also PxAP / PIoU (``update`` then takes ``masks``; images without are left out of PxAP).
        topk: top-k loc and top-k cls (need ``logits`` and ``labels``); ``()`` for none.
        loc_cam_threshold, loc_iou_threshold, loc_multi_contour: the fixed-threshold protocol of GT-known loc.
        gt_known: GT-known loc (the largest contour at ``loc_cam_threshold`` by default: OpenCV where that level has
            several components); always on with ``topk``. False with ``topk=()`` skips it.
        pointing: also the map-only localisation-evaluation metrics of :mod:`camlab.wsol.pointing` (pointing game
            with ``pointing_tolerance`` px, energy-based pointing game; with masks relevance mass / rank accuracy and
            the top-``topk_pixels`` intersection), keyed ``faith/<name>``.
        box_metrics: False for a PxAP-only metric (``update`` then needs no boxes).
        parallel: the kernels over the images of a batch on numba threads (identical results).

    ``compute()`` keys (scalar float64 tensors): ``MaxBoxAccV2``, ``MaxBoxAccV2/IoU{k}``,
    ``MaxBoxAccV2/best_threshold/IoU{k}``, ``best_threshold/IoU{k}`` (alias), ``MaxBoxAcc``, ``MaxBoxAcc/IoU50``,
    ``MaxBoxAcc/best_threshold/IoU50``, ``PxAP``, ``PIoU``, ``PIoU/best_threshold``, ``gt_known_loc``,
    ``top{k}_loc``, ``top{k}_cls``. :meth:`report` adds the curves and the per-image rows.

    Example:
        >>> wm = WSOLMetrics(cam_thresholds=0.1, masks=True, topk=(1,))
        >>> cams = torch.zeros(1, 8, 8); cams[0, 2:6, 2:6] = 1.0
        >>> masks = (cams > 0).to(torch.uint8); boxes = torch.tensor([[[2.0, 2.0, 6.0, 6.0]]])
        >>> wm.update(cams, boxes=boxes, num_boxes=torch.tensor([1]), masks=masks,
        ...           logits=torch.tensor([[1.0, 0.0]]), labels=torch.tensor([0]), index=torch.tensor([7]))
        >>> r = wm.compute(); float(r["MaxBoxAccV2"]), float(r["PxAP"]), float(r["top1_loc"])
        (100.0, 100.0, 100.0)
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, cam_thresholds=None, iou_thresholds: Sequence[float] = (30, 50, 70), max_box_acc: bool = True,
                 masks: bool = False, topk: Sequence[int] = (1, 5), loc_cam_threshold: float = 0.2,
                 loc_iou_threshold: float = 0.5, loc_multi_contour: bool = False, box_metrics: bool = True,
                 gt_known: bool = True, pointing: bool = False, pointing_tolerance: float = 15.0,
                 topk_pixels: int = 1000, parallel: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.thresholds = resolve_thresholds(cam_thresholds)
        self.iou_thresholds = check_iou_thresholds(iou_thresholds)
        if not 0 <= float(loc_cam_threshold) < 1:
            raise ValueError(f"cam_threshold must be in [0, 1), got {loc_cam_threshold}")
        if not 0 < float(loc_iou_threshold) <= 1:
            raise ValueError(f"iou_threshold is a fraction in (0, 1], got {loc_iou_threshold}")
        self.topk = tuple(int(k) for k in topk)
        if any(k < 1 for k in self.topk):
            raise ValueError(f"topk must be positive integers, got {self.topk}")
        self.loc_cam_threshold, self.loc_iou_threshold = float(loc_cam_threshold), float(loc_iou_threshold)
        self.loc_multi_contour, self.box_metrics = bool(loc_multi_contour), bool(box_metrics)
        self.max_box_acc, self.masks, self.parallel = bool(max_box_acc) and self.box_metrics, bool(masks), bool(parallel)
        self.loc = self.box_metrics and (bool(gt_known) or bool(self.topk))  # the fixed-threshold protocol
        self.pointing = self.box_metrics and bool(pointing)
        if self.pointing and not (float(pointing_tolerance) >= 0 and int(topk_pixels) >= 1):
            raise ValueError(f"pointing_tolerance must be >= 0 px and topk_pixels >= 1, got {pointing_tolerance}, "
                             f"{topk_pixels}")
        self.pointing_tolerance, self.topk_pixels = float(pointing_tolerance), int(topk_pixels)
        states = ["index", "label", "pred", "score", "cls_hit"]
        if self.box_metrics:
            states += ["ious", "boxes"] + (["loc_iou", "loc_box"] if self.loc else [])
            states += ["largest"] if self.max_box_acc else []
            states += ["faith"] if self.pointing else []
        if self.masks:
            states += ["hist", "has_mask"]
        self.state_names = tuple(states)
        for name in states:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, cams, boxes: Tensor | None = None, num_boxes: Tensor | None = None, masks: Tensor | None = None,
               logits: Tensor | None = None, labels: Tensor | None = None, index: Tensor | None = None) -> None:
        """cams (B, H, W) in [0, 1] (the GT class's maps, or a :class:`ScoreMaps`); boxes (B, G, 4) xyxy padded;
        num_boxes (B,); masks (B, H, W) uint8 (0, 1, 255 = ignore) or None; logits (B, C); labels (B,);
        index (B,) dataset indices (required: they de-duplicate DDP padding)."""
        maps = ScoreMaps.of(cams)
        B = len(maps)
        if index is None:
            raise ValueError("index (dataset index per sample) is required: it de-duplicates DDP padding")
        # numpy only on the inputs: this may run on a worker thread, where a torch op could start an OpenMP team
        index = as_numpy(index, np.int64).reshape(-1)
        if index.shape[0] != B:
            raise ValueError(f"index has {index.shape[0]} entries for a batch of {B}")
        row: dict[str, np.ndarray] = {"index": index}
        row["label"] = as_numpy(labels, np.int64).reshape(-1) if labels is not None else np.full(B, -1, np.int64)
        if row["label"].shape[0] != B:
            raise ValueError(f"labels has {row['label'].shape[0]} entries for a batch of {B}")
        if logits is not None:
            logits = as_numpy(logits, np.float64)
            if logits.ndim != 2 or logits.shape[0] != B:
                raise ValueError(f"logits must be (B, C) for the batch of {B} maps, got {logits.shape}")
            row["pred"], row["score"] = softmax_prediction(logits)
        else:
            row["pred"], row["score"] = np.full(B, -1, np.int64), np.full(B, np.nan)
        if self.topk and logits is not None and labels is not None:
            row["cls_hit"] = topk_hits(logits, row["label"], self.topk).astype(np.uint8)
        else:
            row["cls_hit"] = np.zeros((B, len(self.topk)), np.uint8)
        if self.box_metrics:
            if boxes is None:
                raise ValueError("boxes (B, G, 4) are required for the box metrics (box_metrics=False for PxAP only)")
            T = self.thresholds.shape[0]
            # the fixed localization threshold rides along with the grid: column T
            thresholds = np.append(self.thresholds, self.loc_cam_threshold) if self.loc else self.thresholds
            scan = scan_levels(maps, boxes, num_boxes, thresholds, parallel=self.parallel)
            row["ious"], row["boxes"] = scan.iou[:, 0, :T], pack_boxes(scan.box[:, 0, :T])
            loc_largest = self.loc and not self.loc_multi_contour
            if self.max_box_acc or loc_largest:  # one OpenCV pass over the distinct levels of both
                cols = np.arange(T + loc_largest) if self.max_box_acc else np.array([T])
                iou, box = largest_contour(scan, maps, cols)
                if self.max_box_acc:
                    row["largest"] = iou[:, :T]
                if loc_largest:
                    row["loc_iou"], row["loc_box"] = iou[:, -1], pack_boxes(box[:, -1])
            if self.loc and self.loc_multi_contour:
                row["loc_iou"], row["loc_box"] = scan.iou[:, 0, T], pack_boxes(scan.box[:, 0, T])
        if self.pointing:
            row["faith"] = pointing_rows(maps, boxes, num_boxes, masks, self.pointing_tolerance, self.topk_pixels)
        if self.masks:
            if masks is None:
                row["hist"] = np.zeros((B, 2, self.thresholds.shape[0] + 2), np.int32)
                row["has_mask"] = np.zeros(B, np.uint8)
            else:
                masks = as_numpy(masks)
                if masks.shape != maps.shape:
                    raise ValueError(f"masks {masks.shape} must match the maps {maps.shape}")
                row["hist"] = pxap_histograms(maps, masks, self.thresholds, parallel=self.parallel).astype(np.int32)
                row["has_mask"] = np.ones(B, np.uint8)
        for name, value in row.items():
            value = torch.from_numpy(np.ascontiguousarray(value))
            getattr(self, name).append(value if self.device.type == "cpu" else value.to(self.device))

    def _rows(self) -> dict[str, np.ndarray]:
        """The (already synced) rows, first occurrence per dataset index, sorted by index."""
        # a list of per-batch tensors, or one tensor once synced across processes
        if isinstance(self.index, list) and not self.index:
            return {}
        index = dim_zero_cat(self.index).cpu().numpy()
        if index.size == 0:
            return {}
        _, first = np.unique(index, return_index=True)
        rows = {}
        for name in self.state_names:
            rows[name] = dim_zero_cat(getattr(self, name)).cpu().numpy()[first]
        for name in ("boxes", "loc_box"):
            if name in rows:
                rows[name] = unpack_boxes(rows[name])
        if self.loc:
            rows["loc_hit"] = rows["loc_iou"] >= self.loc_iou_threshold
        return rows

    def _report(self) -> WSOLReport:
        rows = self._rows()
        report = WSOLReport(rows=rows, iou_thresholds=self.iou_thresholds, thresholds=self.thresholds,
                            topk=self.topk, loc_iou_threshold=self.loc_iou_threshold)
        if not rows:
            return report
        out: dict = {}
        if self.box_metrics:
            out.update(box_accuracy(rows["ious"], self.thresholds, self.iou_thresholds, "MaxBoxAccV2"))
            if self.max_box_acc:
                out.update(box_accuracy(rows["largest"], self.thresholds, (50,), "MaxBoxAcc"))
        if self.loc:
            with_cls = self.topk if (rows["pred"] >= 0).all() and (rows["label"] >= 0).all() else ()
            out.update(localization_accuracy(rows["loc_iou"], rows["cls_hit"], with_cls, self.loc_iou_threshold))
        if self.pointing:
            out.update(pointing_from_rows(rows["faith"]))
        if self.masks and rows["has_mask"].any():
            out.update(pxap_from_rows(rows["hist"][rows["has_mask"].astype(bool)], self.thresholds))
        for key in list(out):
            if key.startswith("MaxBoxAccV2/best_threshold/"):
                out[key.removeprefix("MaxBoxAccV2/")] = out[key]
        report.scalars = {k: v for k, v in out.items() if np.ndim(v) == 0}
        report.curves = {"threshold": self.thresholds.tolist()}
        report.curves.update({k.replace("/curve", ""): np.asarray(v).tolist() for k, v in out.items() if np.ndim(v) == 1})
        if len(report.curves) == 1:
            report.curves = {}
        return report

    def compute(self) -> dict[str, Tensor]:
        """Flat dict of the scalar results as float64 tensors (see the class docstring)."""
        scalars = self._report().scalars
        return {k: torch.tensor(v, dtype=torch.float64) for k, v in scalars.items() if "/best_index/" not in k}

    def report(self) -> WSOLReport:
        """Scalars, curves and per-image rows of every rank (one sync; call it on every rank)."""
        with self.sync_context(should_sync=True, should_unsync=True):
            return self._report()
