"""Per-image localization rows of an evaluation: one CSV line per dataset image, exact under DDP.

:class:`PerImageWriter` is a Lightning callback for ``trainer.test`` / ``trainer.validate``. From each batch's
forward pass (the ``{"logits", "features"}`` the step returns, as for :class:`camlab.callbacks.CAMLocalization`)
it keeps, per image: the prediction, the GT-known box at the fixed CAM threshold (largest contour, the CAM
paper's protocol) and its IoU, the best IoU over all contours at every grid threshold (MaxBoxAccV2's rows),
and the raw feature-resolution CAM of the GT class (a few hundred bytes). At the end of the epoch the rows of
all ranks are gathered on rank 0 and de-duplicated by dataset ``index`` (DistributedSampler repeats samples
to pad the last batch); the best threshold per IoU is chosen as MaxBoxAccV2 chooses it, and the box at that
threshold is extracted from the stored CAM. So, over the rows of ``per_image.csv``:

- ``mean(hit{k}) * 100``         = ``MaxBoxAccV2/IoU{k}`` (the box at ``threshold{k}`` = its best threshold)
- ``mean(gt_known_hit) * 100``   = ``gt_known_loc``; ``mean(correct and gt_known_hit) * 100`` = ``top1_loc``
- ``mean(correct) * 100``        = ``top1_cls``

Boxes are ``x0 y0 x1 y1`` inclusive integer pixels of the network input (wsoleval's convention, see
:mod:`camlab.localization`). With ``save_cams`` the CAMs are also written: ``cams.npz`` (``index``, ``label``,
``pred``, ``cam`` = the uint8 GT-class score maps the metrics threshold, ``cam_raw`` = the raw maps at feature
resolution) and one overlay PNG per image under ``cam_pngs/<index>.png`` (the GT class's CAM, GT boxes in
green, the GT-known box in red).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any, Sequence

import lightning.pytorch as L
import numpy as np
import torch
from torch import Tensor

from camlab.cam import minmax_normalize, upsample
from camlab.cam_methods import check_method, compute_cams
from camlab.localization import (
    best_ious_per_threshold,
    box_iou_inclusive,
    boxes_at_threshold,
    gt_boxes_to_int,
    scoremap_to_uint8,
)
from camlab.metrics import resolve_thresholds

log = logging.getLogger(__name__)


def best_box(scoremap_u8: np.ndarray, gt_boxes: np.ndarray, threshold: float,
             multi_contour: bool = True) -> tuple[list[int], float]:
    """The box of a uint8 map at ``threshold`` with the highest IoU against any GT box, and that IoU.

    ``gt_boxes``: (G, 4) float xyxy (truncated to wsoleval's inclusive ints). Ties: the first box.

    >>> m = np.zeros((8, 8), np.uint8); m[2:6, 2:6] = 255; m[0, 7] = 255
    >>> best_box(m, np.array([[2.0, 2.0, 6.0, 6.0]]), 0.5)
    ([2, 2, 6, 6], 1.0)
    """
    boxes = boxes_at_threshold(scoremap_u8, threshold, multi_contour=multi_contour)  # (N, 4)
    gt = gt_boxes_to_int(np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4))  # (G, 4)
    if gt.shape[0] == 0:
        return [int(v) for v in boxes[0]], 0.0
    iou = box_iou_inclusive(boxes, gt).max(axis=1)  # (N,)
    j = int(np.argmax(iou))
    return [int(v) for v in boxes[j]], float(iou[j])


def best_threshold_indices(ious: np.ndarray, iou_thresholds: Sequence[float]) -> list[int]:
    """Per IoU threshold k (percent), the grid index maximizing ``mean(ious >= k / 100)`` (first on ties).

    ``ious``: (N, T) best IoU per image and CAM threshold.

    >>> best_threshold_indices(np.array([[0.9, 0.6, 0.2], [0.1, 0.6, 0.8]]), (50, 70))
    [1, 0]
    """
    return [int(np.argmax((ious >= k / 100).sum(axis=0))) for k in iou_thresholds]


class PerImageWriter(L.Callback):
    """Write ``per_image.csv`` (and optionally the CAMs) for the test (or validation) epoch.

    Args:
        output_dir: where ``per_image.csv``, ``cams.npz`` and ``cam_pngs/`` go.
        cam_threshold, iou_threshold: the fixed-cut protocol (GT-known / top-1 loc), as CAMLocalization's.
        grid_interval: CAM threshold grid (``np.arange(0, 1, grid_interval)``), as CAMLocalization's.
        iou_thresholds: IoU thresholds in percent for the MaxBoxAccV2 columns.
        stages: stages to write (``"test"``, ``"val"``).
        save_cams: also write ``cams.npz`` and one overlay PNG per image.
        cam_method: how maps are built (:data:`camlab.cam_methods.METHODS`); use CAMLocalization's.
    """

    def __init__(self, output_dir: str, cam_threshold: float = 0.2, iou_threshold: float = 0.5,
                 grid_interval: float = 0.01, iou_thresholds: Sequence[int] = (30, 50, 70),
                 stages: Sequence[str] = ("test",), save_cams: bool = False, cam_method: str = "cam") -> None:
        super().__init__()
        unknown = set(stages) - {"val", "test"}
        if unknown:
            raise ValueError(f"stages lists 'val' and/or 'test'; got {sorted(unknown)}")
        self.output_dir = Path(output_dir)
        self.cam_threshold = float(cam_threshold)
        self.iou_threshold = float(iou_threshold)
        self.thresholds = resolve_thresholds(float(grid_interval))
        self.iou_thresholds = tuple(int(k) for k in iou_thresholds)
        self.stages = tuple(stages)
        self.save_cams = bool(save_cams)
        self.cam_method = check_method(cam_method)
        self._rows: list[dict[str, Any]] = []
        #: paths written by the last epoch: {"csv": ..., "npz": ..., "png_dir": ...}
        self.written: dict[str, Path] = {}

    # ---- per batch -----------------------------------------------------------------------------------
    def _on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                      batch: dict[str, Tensor]) -> None:
        if not isinstance(outputs, dict) or "features" not in outputs:
            raise RuntimeError("PerImageWriter needs the step to return {'logits', 'features'} (CAMClassifier)")
        features, logits = outputs["features"].float(), outputs["logits"].float()  # (B, K, h, w), (B, C)
        labels = batch["label"]  # (B,)
        size = tuple(batch["image"].shape[-2:])
        with torch.no_grad():
            if self.cam_method == "cam":
                raw = pl_module.cam(features, labels)  # (B, h, w)
            else:
                raw = compute_cams(pl_module, features, labels, self.cam_method)  # (B, h, w)
            maps = minmax_normalize(upsample(raw, size)).to("cpu", torch.float32).numpy()  # (B, H, W)
        probs = logits.softmax(dim=1)
        score, pred = probs.max(dim=1)
        boxes, num_boxes = batch["boxes"].cpu(), batch["num_boxes"].cpu()
        ious = best_ious_per_threshold(maps, boxes, num_boxes, self.thresholds, multi_contour=True)  # (B, T)
        u8 = scoremap_to_uint8(maps)  # (B, H, W)
        for i in range(maps.shape[0]):
            gt = boxes[i, : int(num_boxes[i])].numpy()
            box, iou = best_box(u8[i], gt, self.cam_threshold, multi_contour=False)
            self._rows.append({
                "index": int(batch["index"][i]), "label": int(labels[i]), "pred": int(pred[i]),
                "score": float(score[i]), "gt_known_box": box, "gt_known_iou": iou, "gt_boxes": gt,
                "ious": ious[i].astype(np.float64), "cam_raw": raw[i].to("cpu", torch.float32).numpy(),
                "size": size,
            })
        if self.save_cams:
            self._write_pngs(trainer, pl_module, batch, maps, pred, score)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if "test" in self.stages:
            self._on_batch_end(trainer, pl_module, outputs, batch)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if "val" in self.stages and not trainer.sanity_checking:
            self._on_batch_end(trainer, pl_module, outputs, batch)

    # ---- per epoch -----------------------------------------------------------------------------------
    def on_test_epoch_end(self, trainer, pl_module) -> None:
        if "test" in self.stages:
            self._on_epoch_end("test", trainer, pl_module.device)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if "val" in self.stages and not trainer.sanity_checking:
            self._on_epoch_end("val", trainer, pl_module.device)

    def _gather(self, trainer: L.Trainer) -> list[dict[str, Any]]:
        """All ranks' rows on rank 0 (others get []), first occurrence per dataset index, sorted by index."""
        rows = self._rows
        if trainer.world_size > 1:
            import torch.distributed as dist

            parts: list[Any] = [None] * trainer.world_size
            dist.all_gather_object(parts, rows)
            rows = [r for part in parts for r in part] if trainer.is_global_zero else []
        unique: dict[int, dict[str, Any]] = {}
        for r in rows:
            unique.setdefault(r["index"], r)
        return [unique[k] for k in sorted(unique)]

    def _on_epoch_end(self, stage: str, trainer: L.Trainer, device: torch.device) -> None:
        rows = self._gather(trainer)
        self._rows = []
        if not trainer.is_global_zero or not rows:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        ious = np.stack([r["ious"] for r in rows])  # (N, T) float64: an IoU of exactly k/100 must stay >= k/100
        best = best_threshold_indices(ious, self.iou_thresholds)
        names = getattr(trainer.datamodule, "class_names", None) if trainer.datamodule is not None else None
        csv_path = self.output_dir / "per_image.csv"
        u8_maps = []
        header = ["index", "label", "label_name", "pred", "pred_name", "score", "correct",
                  "gt_known_iou", "gt_known_hit", "top1_loc", "gt_known_x0", "gt_known_y0", "gt_known_x1",
                  "gt_known_y1"]
        for k in self.iou_thresholds:
            header += [f"threshold{k}", f"iou{k}", f"hit{k}", f"box{k}_x0", f"box{k}_y0", f"box{k}_x1",
                       f"box{k}_y1"]
        with open(csv_path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            for r in rows:
                # the same ops on the same device as at batch time: the same uint8 map the metrics saw
                raw = torch.from_numpy(r["cam_raw"])[None].to(device)  # (1, h, w)
                u8 = scoremap_to_uint8(minmax_normalize(upsample(raw, r["size"])).cpu().numpy())[0]  # (H, W)
                if self.save_cams:
                    u8_maps.append(u8)
                correct = r["label"] == r["pred"]
                hit = r["gt_known_iou"] >= self.iou_threshold
                row = [r["index"], r["label"], names[r["label"]] if names else r["label"], r["pred"],
                       names[r["pred"]] if names else r["pred"], f"{r['score']:.6g}", int(correct),
                       f"{r['gt_known_iou']:.6f}", int(hit), int(correct and hit), *r["gt_known_box"]]
                for k, t_idx in zip(self.iou_thresholds, best):
                    t = float(self.thresholds[t_idx])
                    box, iou = best_box(u8, r["gt_boxes"], t, multi_contour=True)
                    row += [f"{t:.6g}", f"{iou:.6f}", int(iou >= k / 100), *box]
                w.writerow(row)
        self.written = {"csv": csv_path}
        if self.save_cams:
            npz = self.output_dir / "cams.npz"
            np.savez_compressed(npz, index=np.array([r["index"] for r in rows]),
                                label=np.array([r["label"] for r in rows]),
                                pred=np.array([r["pred"] for r in rows]), cam=np.stack(u8_maps),
                                cam_raw=np.stack([r["cam_raw"] for r in rows]))
            self.written.update(npz=npz, png_dir=self.output_dir / "cam_pngs")
        log.info("per-image rows: %d images -> %s", len(rows), csv_path)

    # ---- PNGs ----------------------------------------------------------------------------------------
    def _write_pngs(self, trainer, pl_module, batch, maps: np.ndarray, pred: Tensor, score: Tensor) -> None:
        """One overlay PNG per image (every rank writes its own images; a padded repeat rewrites the same file)."""
        from camlab.viz import OverlaySample, denormalize, render_panel

        dm = trainer.datamodule
        mean, std = getattr(dm, "mean", (0.0, 0.0, 0.0)), getattr(dm, "std", (1.0, 1.0, 1.0))
        names = getattr(dm, "class_names", None)
        out = self.output_dir / "cam_pngs"
        out.mkdir(parents=True, exist_ok=True)
        images = batch["image"].float().cpu().numpy()
        for i in range(maps.shape[0]):
            r = self._rows[len(self._rows) - maps.shape[0] + i]
            label, p = r["label"], int(pred[i])
            sample = OverlaySample(
                image=denormalize(images[i], mean, std), cam=maps[i],
                gt_boxes=r["gt_boxes"].tolist(),
                pred_box=[float(v) + (1.0 if j >= 2 else 0.0) for j, v in enumerate(r["gt_known_box"])],
                label=names[label] if names else str(label), pred=names[p] if names else str(p),
                score=float(score[i]), index=r["index"])
            render_panel(sample).save(out / f"{r['index']:06d}.png", compress_level=1)
