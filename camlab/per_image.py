"""Per-image localization rows of an evaluation: one CSV line per dataset image, exact under DDP.

:class:`PerImageWriter` is a Lightning callback for ``trainer.test`` / ``trainer.validate`` beside
:class:`camlab.callbacks.CAMLocalization`. It writes that callback's per-image rows (the rows its
:class:`~camlab.wsol.WSOLMetrics` keeps, gathered from every rank and de-duplicated by dataset ``index``), so
the CSV and the logged metrics are one computation:

- ``mean(hit{k}) * 100``         = ``MaxBoxAccV2/IoU{k}`` (``threshold{k}`` = its best threshold on this split)
- ``mean(gt_known_hit) * 100``   = ``gt_known_loc``; ``mean(top1_loc) * 100`` = ``top1_loc``
- ``mean(correct) * 100``        = ``top1_cls``
- ``mean(pointing_game) * 100``  = ``faith/pointing_game``, and so on for the other map-only metrics
  (:mod:`camlab.wsol.pointing`; empty cells where an image has no mask)

Boxes are ``x0 y0 x1 y1`` inclusive integer pixels of the network input (wsoleval's convention, see
:mod:`camlab.wsol.boxes`); ``box{k}`` is a box of the map at ``threshold{k}`` with the best IoU (one of them on
ties). With ``save_cams`` the maps are also written: ``cams.npz`` (``index``, ``label``, ``pred``, ``cam`` = the
uint8 GT-class score maps the metrics threshold, ``cam_raw`` = the raw maps at feature resolution) and one
overlay PNG per image under ``cam_pngs/<index>.png`` (the GT class's CAM, GT boxes in green, the GT-known box in
red).
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

from camlab.cam import upsample
from camlab.cam_methods import compute_cams
from camlab.callbacks import CAMLocalization
from camlab.viz import OverlaySample, denormalize, render_panel
from camlab.wsol import POINTING_NAMES, ScoreMaps, loc_ious
from camlab.wsol.boxes import prediction_to_xyxy

log = logging.getLogger(__name__)


class PerImageWriter(L.Callback):
    """Write ``per_image.csv`` (and optionally the CAMs) for the test (or validation) epoch.

    Args:
        output_dir: where ``per_image.csv``, ``cams.npz`` and ``cam_pngs/`` go.
        stages: stages to write (``"test"``, ``"val"``).
        save_cams: also write ``cams.npz`` and one overlay PNG per image.

    The rows, thresholds and CAM method are the :class:`~camlab.callbacks.CAMLocalization` callback's, which must
    be in the same trainer.
    """

    def __init__(self, output_dir: str, stages: Sequence[str] = ("test",), save_cams: bool = False) -> None:
        super().__init__()
        unknown = set(stages) - {"val", "test"}
        if unknown:
            raise ValueError(f"stages lists 'val' and/or 'test'; got {sorted(unknown)}")
        self.output_dir = Path(output_dir)
        self.stages = tuple(stages)
        self.save_cams = bool(save_cams)
        self._cams: list[dict[str, Any]] = []
        #: paths written by the last epoch: {"csv": ..., "npz": ..., "png_dir": ...}
        self.written: dict[str, Path] = {}

    @staticmethod
    def _source(trainer: L.Trainer) -> CAMLocalization:
        for cb in trainer.callbacks:
            if isinstance(cb, CAMLocalization):
                return cb
        raise RuntimeError("PerImageWriter writes the rows of a CAMLocalization callback: add one to the trainer's "
                           "callbacks (callbacks=[cam_localization, ...])")

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._source(trainer)  # fail before the epoch, not after it

    # ---- maps, only with save_cams -------------------------------------------------------------------
    def _on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                      batch: dict[str, Tensor]) -> None:
        source = self._source(trainer)
        features = outputs["features"].float()  # (B, K, h, w)
        labels = batch["label"]
        with torch.no_grad():
            raw = (pl_module.cam(features, labels) if source.cam_method == "cam"
                   else compute_cams(pl_module, features, labels, source.cam_method))  # (B, h, w)
            maps = ScoreMaps.normalize(upsample(raw, tuple(batch["image"].shape[-2:])))  # as the metrics' maps
        iou, box = loc_ious(maps, batch["boxes"], batch["num_boxes"], source.cam_threshold)  # the GT-known box
        score, pred = outputs["logits"].float().softmax(dim=1).max(dim=1)
        self._write_pngs(trainer, batch, maps, box, pred, score)
        for i in range(len(maps)):
            self._cams.append({"index": int(batch["index"][i]), "label": int(labels[i]), "pred": int(pred[i]),
                               "cam": maps.u8[i], "cam_raw": raw[i].to("cpu", torch.float32).numpy()})

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if "test" in self.stages and self.save_cams:
            self._on_batch_end(trainer, pl_module, outputs, batch)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if "val" in self.stages and self.save_cams and not trainer.sanity_checking:
            self._on_batch_end(trainer, pl_module, outputs, batch)

    # ---- at the end ----------------------------------------------------------------------------------
    def on_test_end(self, trainer, pl_module) -> None:
        if "test" in self.stages:
            self._write("test", trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if "val" in self.stages and not trainer.sanity_checking:
            self._write("val", trainer)

    def _gather_cams(self, trainer: L.Trainer) -> list[dict[str, Any]]:
        """All ranks' maps on rank 0 (others get []), first occurrence per dataset index, sorted by index."""
        rows = self._cams
        if trainer.world_size > 1:
            import torch.distributed as dist

            parts: list[Any] = [None] * trainer.world_size
            dist.all_gather_object(parts, rows)
            rows = [r for part in parts for r in part] if trainer.is_global_zero else []
        unique: dict[int, dict[str, Any]] = {}
        for r in rows:
            unique.setdefault(r["index"], r)
        return [unique[k] for k in sorted(unique)]

    def _write(self, stage: str, trainer: L.Trainer) -> None:
        cams = self._gather_cams(trainer) if self.save_cams else []
        self._cams = []
        report = self._source(trainer).last_reports.get(stage)
        if not trainer.is_global_zero or report is None or not report.rows:
            return
        rows = report.per_image()
        names = getattr(trainer.datamodule, "class_names", None) if trainer.datamodule is not None else None
        self.output_dir.mkdir(parents=True, exist_ok=True)
        csv_path = self.output_dir / "per_image.csv"
        ks = [f"{k:g}" for k in report.iou_thresholds]
        header = ["index", "label", "label_name", "pred", "pred_name", "score", "correct", "gt_known_iou",
                  "gt_known_hit", "top1_loc", "gt_known_x0", "gt_known_y0", "gt_known_x1", "gt_known_y1"]
        for k in ks:
            header += [f"threshold{k}", f"iou{k}", f"hit{k}", f"box{k}_x0", f"box{k}_y0", f"box{k}_x1", f"box{k}_y1"]
        faith = [name for name in POINTING_NAMES if rows and name in rows[0]]
        header += faith

        def name(c: int) -> Any:
            return names[c] if names and 0 <= c < len(names) else c

        with open(csv_path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            for r in rows:
                line = [r["index"], r["label"], name(r["label"]), r["pred"], name(r["pred"]), f"{r['score']:.6g}",
                        int(r["correct"])]
                if "gt_known_iou" in r:
                    line += [f"{r['gt_known_iou']:.6f}", int(r["gt_known_hit"]), int(r["top1_loc"]), *r["gt_known_box"]]
                else:  # GT-known loc off (the callback's topk is empty): empty cells, never invented values
                    line += [""] * 7
                for k in ks:
                    line += [f"{r[f'threshold{k}']:.6g}", f"{r[f'iou{k}']:.6f}", int(r[f"hit{k}"]), *r[f"box{k}"]]
                line += ["" if r[name] != r[name] else f"{r[name]:.6g}" for name in faith]  # NaN (no mask): empty
                w.writerow(line)
        self.written = {"csv": csv_path}
        if self.save_cams and cams:
            npz = self.output_dir / "cams.npz"
            np.savez_compressed(npz, index=np.array([c["index"] for c in cams]),
                                label=np.array([c["label"] for c in cams]), pred=np.array([c["pred"] for c in cams]),
                                cam=np.stack([c["cam"] for c in cams]), cam_raw=np.stack([c["cam_raw"] for c in cams]))
            self.written.update(npz=npz, png_dir=self.output_dir / "cam_pngs")
        log.info("per-image rows: %d images -> %s", len(rows), csv_path)

    def _write_pngs(self, trainer, batch, maps: ScoreMaps, box: np.ndarray, pred: Tensor, score: Tensor) -> None:
        """One overlay PNG per image (every rank writes its own images; a padded repeat rewrites the same file)."""
        dm = trainer.datamodule
        mean, std = getattr(dm, "mean", (0.0, 0.0, 0.0)), getattr(dm, "std", (1.0, 1.0, 1.0))
        names = getattr(dm, "class_names", None)
        out = self.output_dir / "cam_pngs"
        out.mkdir(parents=True, exist_ok=True)
        images = batch["image"].float().cpu().numpy()
        for i in range(len(maps)):
            label, p, index = int(batch["label"][i]), int(pred[i]), int(batch["index"][i])
            gt = batch["boxes"][i, : int(batch["num_boxes"][i])].tolist()
            sample = OverlaySample(
                image=denormalize(images[i], mean, std), cam=maps.maps[i], gt_boxes=gt,
                pred_box=prediction_to_xyxy(box[i]), label=names[label] if names else str(label),
                pred=names[p] if names else str(p), score=float(score[i]), index=index)
            render_panel(sample).save(out / f"{index:06d}.png", compress_level=1)
