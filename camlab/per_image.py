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
red). With external maps (``camlab-eval ckpt_path=... maps=...``: the callback's ``map_source``) those are the maps
written, ``cam_raw`` then at the input size. :func:`write_per_image_csv` writes the CSV for both camlab-eval paths.
Every file is written atomically (:mod:`camlab.atomic`): a failed write leaves no partial file.
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

from camlab.atomic import atomic_write
from camlab.cam import upsample
from camlab.cam_methods import compute_cams
from camlab.callbacks import CAMLocalization
from camlab.viz import OverlaySample, denormalize, render_panel
from camlab.wsol import POINTING_NAMES, ScoreMaps, WSOLReport, loc_ious
from camlab.wsol.boxes import prediction_to_xyxy

log = logging.getLogger(__name__)


def per_image_header(report: WSOLReport) -> list[str]:
    """The columns of ``per_image.csv`` for ``report``: its IoU thresholds, the map-only metrics it measured and its
    extra per-image ``columns`` (e.g. the model-based faithfulness metrics)."""
    rows = report.rows
    header = ["index", "label", "label_name", "pred", "pred_name", "score", "correct", "gt_known_iou",
              "gt_known_hit", "top1_loc", "gt_known_x0", "gt_known_y0", "gt_known_x1", "gt_known_y1"]
    for k in (f"{k:g}" for k in report.iou_thresholds):
        header += [f"threshold{k}", f"iou{k}", f"hit{k}", f"box{k}_x0", f"box{k}_y0", f"box{k}_x1", f"box{k}_y1"]
    return header + [name for name in POINTING_NAMES if "faith" in rows] + list(report.columns)


def write_per_image_csv(path: str | Path, report: WSOLReport, class_names: Sequence[str] | None = None) -> int:
    """Write ``report``'s per-image rows as ``per_image.csv`` (the columns of :func:`per_image_header`); returns
    the number of rows. Used by :class:`PerImageWriter` and by ``camlab-eval maps=...`` without a checkpoint.

    Cells that were not measured stay empty, never invented: ``pred``, ``pred_name``, ``score``, ``correct`` and
    ``top1_loc`` when the maps came without a model (no logits); the GT-known columns when GT-known loc was off;
    a map-only metric of an image without a mask.
    """
    rows = report.per_image()
    header = per_image_header(report)
    ks = [f"{k:g}" for k in report.iou_thresholds]
    faith = [name for name in POINTING_NAMES if name in header] + list(report.columns)  # float cells

    def name(c: int) -> Any:
        return class_names[c] if class_names and 0 <= c < len(class_names) else c

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            line = [r["index"], r["label"], name(r["label"])]
            predicted = r["pred"] >= 0  # -1: no logits (external maps without a checkpoint)
            line += ([r["pred"], name(r["pred"]), f"{r['score']:.6g}", int(r["correct"])] if predicted else [""] * 4)
            if "gt_known_iou" in r:
                line += [f"{r['gt_known_iou']:.6f}", int(r["gt_known_hit"]), int(r["top1_loc"]) if predicted else "",
                         *r["gt_known_box"]]
            else:  # GT-known loc off (the callback's topk is empty): empty cells, never invented values
                line += [""] * 7
            for k in ks:
                line += [f"{r[f'threshold{k}']:.6g}", f"{r[f'iou{k}']:.6f}", int(r[f"hit{k}"]), *r[f"box{k}"]]
            line += ["" if r[m] != r[m] else f"{r[m]:.6g}" for m in faith]  # NaN (no mask, not measured): empty
            w.writerow(line)
    return len(rows)


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
        size = tuple(batch["image"].shape[-2:])
        with torch.no_grad():
            if source.map_source is not None:  # camlab-eval maps=...: the maps the callback scores, at the input size
                raw = source.map_source.for_batch(batch["index"], size)  # (B, H, W)
                maps = ScoreMaps.normalize(raw)
            else:
                raw = (pl_module.cam(features, labels) if source.cam_method == "cam"
                       else compute_cams(pl_module, features, labels, source.cam_method, images=batch["image"],
                                         options=source.cam_options))  # (B, h, w)
                maps = ScoreMaps.normalize(upsample(raw, size))  # as the metrics' maps
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
        names = getattr(trainer.datamodule, "class_names", None) if trainer.datamodule is not None else None
        csv_path = self.output_dir / "per_image.csv"
        n = write_per_image_csv(csv_path, report, names)
        self.written = {"csv": csv_path}
        if self.save_cams and cams:
            npz = self.output_dir / "cams.npz"
            with atomic_write(npz, "wb") as f:
                np.savez_compressed(f, index=np.array([c["index"] for c in cams]),
                                    label=np.array([c["label"] for c in cams]), pred=np.array([c["pred"] for c in cams]),
                                    cam=np.stack([c["cam"] for c in cams]), cam_raw=np.stack([c["cam_raw"] for c in cams]))
            self.written.update(npz=npz, png_dir=self.output_dir / "cam_pngs")
        log.info("per-image rows: %d images -> %s", n, csv_path)

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
            with atomic_write(out / f"{index:06d}.png", "wb") as f:
                render_panel(sample).save(f, format="PNG", compress_level=1)
