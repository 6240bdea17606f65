"""The CAM localization callback: CAMs from the validation forward pass -> WSOL metrics, curves, overlays."""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from camlab.cam import minmax_normalize, upsample
from camlab.cam_methods import check_method, compute_cams
from camlab.viz import OverlaySample, denormalize, render_grid

log = logging.getLogger(__name__)


class CAMLocalization(L.Callback):
    """Localization metrics and CAM overlays on every validation (and test) epoch.

    The model's ``validation_step`` returns ``{"logits", "features"}`` from its one forward pass; this callback
    builds the CAMs from those features and the linear head (no second pass, no hooks), upsamples them
    bilinearly to the input size, min-max normalizes them and updates the metrics in
    :class:`camlab.metrics.WSOLMetrics`. Metrics are logged as ``<stage>/loc/<name>`` (e.g.
    ``val/loc/MaxBoxAccV2``, ``val/loc/PxAP``, ``val/loc/top1_loc``), in percent like the WSOL benchmark.

    Each epoch, rank 0 renders a fixed sample of images (the first ``num_overlays`` its validation loader
    yields; the loader does not shuffle, so the sample is the same every epoch) as a PNG grid under
    ``output_dir`` and sends it to TensorBoard / W&B when those loggers are active. The per-threshold curves
    go to ``output_dir/curves_<stage>_epoch<NNN>.csv`` and a PNG plot.

    ``max_box_acc`` names the stages that also compute MaxBoxAcc (largest contour, IoU 50). Its box needs the
    polygon area of every contour at every threshold (OpenCV once per threshold level, ~4 ms per 64 px image),
    so by default it runs on the test split only; MaxBoxAccV2, PxAP and top-k loc run every validation epoch.

    ``cam_method`` picks how the maps are built from those features (:data:`camlab.cam_methods.METHODS`):
    ``"cam"`` (the linear head's CAM), ``"gradcam"``, ``"gradcam_pp"``, ``"xgradcam"``, ``"layercam"``; the
    gradient methods re-run only the pooling + head with autograd (see :mod:`camlab.cam_methods`). Metrics,
    curves and overlays all use the same method.
    """

    def __init__(
        self,
        cam_threshold: float = 0.2,
        iou_threshold: float = 0.5,
        grid_interval: float = 0.01,
        iou_thresholds: tuple[int, ...] | list[int] = (30, 50, 70),
        num_overlays: int = 16,
        output_dir: str | None = None,
        log_images: bool = True,
        write_curves: bool = True,
        max_box_acc: tuple[str, ...] | list[str] | bool = ("test",),
        topk: tuple[int, ...] | list[int] = (1, 5),
        cam_method: str = "cam",
    ) -> None:
        super().__init__()
        if not 0.0 <= cam_threshold < 1.0:
            raise ValueError(f"cam_threshold must be in [0, 1), got {cam_threshold}")
        self.cam_threshold = float(cam_threshold)
        self.iou_threshold = float(iou_threshold)
        self.grid_interval = float(grid_interval)
        self.iou_thresholds = tuple(int(v) for v in iou_thresholds)
        self.num_overlays = int(num_overlays)
        self.output_dir = Path(output_dir) if output_dir else None
        self.log_images = log_images
        self.write_curves = write_curves
        if isinstance(max_box_acc, bool):
            max_box_acc = ("val", "test") if max_box_acc else ()
        unknown = set(max_box_acc) - {"val", "test"}
        if unknown:
            raise ValueError(f"max_box_acc lists stages among 'val', 'test'; got {sorted(unknown)}")
        self.max_box_acc = tuple(max_box_acc)
        self.topk = tuple(int(k) for k in topk)
        self.cam_method = check_method(cam_method)
        self._metrics: dict[str, Any] = {}
        self._overlays: list[OverlaySample] = []
        self.last_results: dict[str, dict[str, float]] = {}

    # ---- metric objects ------------------------------------------------------------------------------
    def _new_metrics(self, stage: str) -> Any:
        from camlab.metrics import WSOLMetrics

        return WSOLMetrics(
            cam_thresholds=self.grid_interval,
            iou_thresholds=self.iou_thresholds,
            max_box_acc=stage in self.max_box_acc,
            masks=True,
            topk=self.topk,
            loc_cam_threshold=self.cam_threshold,
            loc_iou_threshold=self.iou_threshold,
        )

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Fresh metric objects per setup: under ddp_spawn, state tensors created before the spawn would be shared.
        num_classes = getattr(pl_module, "num_classes", None)
        if num_classes is not None:
            self.topk = tuple(k for k in self.topk if k <= num_classes)
        self._metrics = {s: self._new_metrics(s).to(pl_module.device) for s in ("val", "test")}

    def _stage_metrics(self, stage: str, pl_module: L.LightningModule) -> Any:
        m = self._metrics.get(stage)
        if m is None:
            m = self._metrics[stage] = self._new_metrics(stage)
        return m.to(pl_module.device)

    # ---- per batch -----------------------------------------------------------------------------------
    def _on_batch_end(self, stage: str, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                      batch: dict[str, torch.Tensor]) -> None:
        if not isinstance(outputs, dict) or "features" not in outputs:
            raise RuntimeError(
                f"CAMLocalization needs the {stage}_step to return {{'logits', 'features'}} from its forward pass; "
                f"got {type(outputs).__name__}. Use camlab.models.CAMClassifier or return those keys."
            )
        features, logits = outputs["features"].float(), outputs["logits"].float()
        labels = batch["label"]
        size = tuple(batch["image"].shape[-2:])
        with torch.no_grad():
            from camlab.metrics import ScoreMaps

            # (B, H, W) maps normalized on the CPU in one pass that also makes their uint8 copies; bit-identical
            # to minmax_normalize (tests/test_metrics.py)
            cams_gt = ScoreMaps.normalize(upsample(self._raw_cams(pl_module, features, labels), size))
            metrics = self._stage_metrics(stage, pl_module)
            metrics.update(
                cams=cams_gt,
                logits=logits,
                labels=labels,
                boxes=batch.get("boxes"),
                num_boxes=batch.get("num_boxes"),
                masks=batch.get("mask"),
                index=batch["index"],
            )
            if stage == "val" and trainer.is_global_zero and len(self._overlays) < self.num_overlays:
                self._collect_overlays(trainer, pl_module, features, logits, batch, size)

    def _raw_cams(self, pl_module: L.LightningModule, features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        if self.cam_method == "cam":
            return pl_module.cam(features, classes)  # (B, h, w): the default path, one einsum
        return compute_cams(pl_module, features, classes, self.cam_method)  # (B, h, w)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.sanity_checking:
            return
        self._on_batch_end("val", trainer, pl_module, outputs, batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._on_batch_end("test", trainer, pl_module, outputs, batch)

    # ---- per epoch -----------------------------------------------------------------------------------
    def _on_epoch_end(self, stage: str, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = self._metrics.get(stage)
        if metrics is None or not any(m.update_called for m in metrics._metrics()):
            return
        results = metrics.compute()  # every rank computes (collective sync inside)
        values = {k: float(v) for k, v in results.items()}
        self.last_results[stage] = values
        pl_module.log_dict({f"{stage}/loc/{k}": v for k, v in values.items()}, sync_dist=False)
        curves = metrics.curves()
        metrics.reset()
        if trainer.is_global_zero:
            self._write_outputs(stage, trainer, curves)
        self._overlays = []

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        self._on_epoch_end("val", trainer, pl_module)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._on_epoch_end("test", trainer, pl_module)

    # ---- overlays ------------------------------------------------------------------------------------
    def _collect_overlays(self, trainer, pl_module, features, logits, batch, size) -> None:
        from camlab.localization import boxes_at_threshold, scoremap_to_uint8

        dm = trainer.datamodule
        mean = getattr(dm, "mean", (0.0, 0.0, 0.0))
        std = getattr(dm, "std", (1.0, 1.0, 1.0))
        names = getattr(dm, "class_names", None)
        probs = logits.softmax(dim=1)
        score, pred = probs.max(dim=1)
        take = min(self.num_overlays - len(self._overlays), logits.shape[0])
        cams = minmax_normalize(upsample(self._raw_cams(pl_module, features[:take], pred[:take]), size)).cpu().numpy()
        for i in range(take):
            gt = batch["boxes"][i, : int(batch["num_boxes"][i])].tolist() if "boxes" in batch else []
            label, p = int(batch["label"][i]), int(pred[i])
            self._overlays.append(
                OverlaySample(
                    image=denormalize(batch["image"][i].float().cpu().numpy(), mean, std),
                    cam=cams[i],
                    gt_boxes=gt,
                    pred_box=[float(v) for v in boxes_at_threshold(
                        scoremap_to_uint8(cams[i]), self.cam_threshold, multi_contour=False)[0]],
                    label=names[label] if names else str(label),
                    pred=names[p] if names else str(p),
                    score=float(score[i]),
                    index=int(batch["index"][i]),
                )
            )

    @rank_zero_only
    def _write_outputs(self, stage: str, trainer: L.Trainer, curves: dict[str, list[float]]) -> None:
        epoch = trainer.current_epoch
        out = self.output_dir
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
        if self.write_curves and out is not None and curves:
            csv_path = out / f"curves_{stage}_epoch{epoch:03d}.csv"
            write_curves_csv(curves, csv_path)
            plot_curves(curves, out / f"curves_{stage}.png", title=f"{stage} epoch {epoch}")
        if stage == "val" and self._overlays:
            grid = render_grid(self._overlays)
            if out is not None:
                epoch_png = out / f"overlay_epoch{epoch:03d}.png"
                grid.save(epoch_png, compress_level=1)
                shutil.copyfile(epoch_png, out / "overlay_latest.png")
            if self.log_images:
                self._log_images(trainer, grid, curves)

    def _log_images(self, trainer: L.Trainer, grid, curves: dict[str, list[float]]) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("val/cam_overlays", np.asarray(grid), trainer.global_step,
                                            dataformats="HWC")
            elif isinstance(logger, WandbLogger):
                import wandb

                images = [wandb_image(s) for s in self._overlays]
                logger.experiment.log({"val/cam_overlays": images, "trainer/global_step": trainer.global_step})
                if curves:
                    cols = list(curves)
                    table = wandb.Table(columns=cols, data=[list(r) for r in zip(*(curves[c] for c in cols))])
                    logger.experiment.log({"val/loc_curves": table, "trainer/global_step": trainer.global_step})


def wandb_image(sample: OverlaySample):
    """A ``wandb.Image`` of the CAM overlay with ground-truth and predicted boxes (pixel domain)."""
    import wandb

    from camlab.viz import heatmap_overlay

    def box(b, caption, cls_id):
        return {"position": {"minX": float(b[0]), "minY": float(b[1]), "maxX": float(b[2]), "maxY": float(b[3])},
                "domain": "pixel", "class_id": cls_id, "box_caption": caption}

    boxes = {"ground_truth": {"box_data": [box(b, sample.label, 0) for b in sample.gt_boxes],
                              "class_labels": {0: "ground truth", 1: "prediction"}}}
    if sample.pred_box is not None:
        boxes["predictions"] = {"box_data": [box(sample.pred_box, f"{sample.pred} {sample.score:.2f}", 1)],
                                "class_labels": {0: "ground truth", 1: "prediction"}}
    return wandb.Image(heatmap_overlay(sample.image, sample.cam), boxes=boxes,
                       caption=f"#{sample.index} {sample.label} -> {sample.pred} ({sample.score:.2f})")


def write_curves_csv(curves: dict[str, list[float]], path: Path) -> Path:
    cols = list(curves)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for row in zip(*(curves[c] for c in cols)):
            w.writerow([f"{v:.6g}" for v in row])
    return path


def plot_curves(curves: dict[str, list[float]], path: Path, title: str = "") -> Path:
    """Box accuracy per CAM threshold (one line per IoU) and the pixel precision-recall curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    t = curves.get("threshold", [])
    for key, values in curves.items():
        if key.startswith("MaxBoxAcc"):
            axes[0].plot(t, values, label=key)
    axes[0].set_xlabel("CAM threshold")
    axes[0].set_ylabel("box accuracy (%)")
    axes[0].legend(fontsize=7)
    if "PxAP/recall" in curves and "PxAP/precision" in curves:
        axes[1].plot(curves["PxAP/recall"], curves["PxAP/precision"])
        axes[1].set_xlabel("pixel recall")
        axes[1].set_ylabel("pixel precision")
    else:
        axes[1].set_axis_off()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
