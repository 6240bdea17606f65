"""The CAM localization callback: CAMs from the validation forward pass -> WSOL metrics, curves, overlays."""

from __future__ import annotations

import inspect
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from camlab.atomic import write_bytes
from camlab.cam import upsample
from camlab.cam_methods import check_method, check_options, compute_cams
from camlab.faith import FaithfulnessMetrics
from camlab.worker import UpdateWorker
from camlab.wsol import ScoreMaps, WSOLMetrics, WSOLReport, boxes_at_threshold
from camlab.wsol.boxes import prediction_to_xyxy
from camlab.viz import (OverlaySample, denormalize, encode_jpeg, encode_png, plot_curves, plot_faith_curves,
                        render_grid, wandb_image, write_curves_csv)

log = logging.getLogger(__name__)


class CAMLocalization(L.Callback):
    """Localization metrics and CAM overlays on every validation (and test) epoch.

    The model's ``validation_step`` returns ``{"logits", "features"}`` from its one forward pass; this callback
    builds the CAMs from those features and the linear head (no second pass, no hooks), upsamples them
    bilinearly to the input size, min-max normalizes them and updates the metrics in
    :class:`camlab.wsol.WSOLMetrics`. Metrics are logged as ``<stage>/loc/<name>`` (e.g.
    ``val/loc/MaxBoxAccV2``, ``val/loc/PxAP``, ``val/loc/top1_loc``), in percent like the WSOL benchmark; with
    ``pointing`` (on by default) the map-only metrics of :mod:`camlab.wsol.pointing` as ``<stage>/faith/<name>``.

    Each epoch, rank 0 renders a fixed sample of images (the first ``num_overlays`` its validation loader
    yields; the loader does not shuffle, so the sample is the same every epoch) as a grid image under
    ``output_dir`` (``overlay_format``: ``"jpg"``, quality 90, the default, or lossless ``"png"``, slower to
    encode) and sends it to TensorBoard / W&B when those loggers are active. The per-threshold curves
    go to ``output_dir/curves_<stage>_epoch<NNN>.csv`` every epoch, and the last epoch's plot to
    ``output_dir/curves_<stage>.png`` at the end of the run (teardown).

    ``max_box_acc`` names the stages that also compute MaxBoxAcc (largest contour, IoU 50). Its box needs the
    polygon area of the contours at every threshold level where the mask has several components (OpenCV there, the
    slowest metric), so by default it runs on the test split only; MaxBoxAccV2, PxAP and top-k loc run every
    validation epoch. ``last_reports[stage]`` keeps the last epoch's :class:`camlab.wsol.WSOLReport` (scalars,
    curves, per-image rows) for :class:`camlab.per_image.PerImageWriter`.

    The protocol's thresholds (Choe et al., CVPR 2020): every validation epoch records the CAM thresholds where its
    curves peak (``val_thresholds``, :meth:`camlab.wsol.WSOLReport.chosen_thresholds`); they are part of this
    callback's checkpoint state, so a checkpoint carries those of its own validation epoch, and the test split is
    also scored at them: ``test/loc/MaxBoxAccV2@val``, ``test/loc/top1_loc@val``, ``test/loc/PIoU@val`` ... next to
    the oracle numbers, which take the test split's own best thresholds.

    ``faithfulness`` (a mapping: ``stages``, by default ``[test]``, plus the arguments of
    :class:`camlab.faith.FaithfulnessMetrics`) runs the model-based faithfulness metrics on those stages: Average
    Drop / Increase in Confidence, insertion / deletion and ROAD of the same maps, with extra forward passes of the
    model on its device (on the main thread, after the batch's maps), logged as ``<stage>/faith/<name>``, their
    curves to ``output_dir/faith_<curve>_<stage>_epoch<NNN>.csv`` and ``faith_<stage>.png`` (teardown), their
    per-image values to the report's columns (``per_image.csv``). ``None`` or ``stages: []``: off.

    ``cam_method`` picks how the maps are built from those features (:data:`camlab.cam_methods.METHODS`):
    ``"cam"`` (the linear head's CAM), the gradient methods (``"gradcam"``, ``"gradcam_pp"``, ``"hirescam"`` ...,
    which re-run only the pooling + head with autograd), ``"ablationcam"``, ``"eigencam"``, and ``"scorecam"`` /
    ``"smoothgradcampp"``, which run the model again on the batch's images (see :mod:`camlab.cam_methods`). Metrics,
    curves and overlays all use the same method. ``cam_options``: the method's options (the ``cam_method`` config
    group's keys besides ``name``, e.g. Score-CAM's ``batch_size``; :func:`camlab.cam_methods.check_options`).

    ``background=True`` (the default): the main thread only builds and upsamples the CAMs (torch); their
    normalization, the metric updates and the overlay grid (render + encode) run on one worker thread
    (:class:`camlab.worker.UpdateWorker`, FIFO), overlapping the next batch's forward pass: the numba
    kernels and OpenCV release the GIL. The worker is joined before ``compute()``; results are identical
    to ``background=False`` (the same calls in the same order), and an exception raised on the worker is
    re-raised on the main thread at the next batch or at the epoch end.

    ``parallel`` runs the MaxBoxAccV2 and PxAP kernels over the images of a batch on numba threads (identical
    results). ``"auto"`` (the default) turns it on when the model runs on a GPU, whose forward pass leaves the
    CPU cores idle, and at least 4 of the process's CPUs (its affinity mask: what SLURM or the container grants)
    remain per device of the node; it then uses that many threads. On a CPU run the forward pass needs the cores.
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
        pointing: bool = True,
        pointing_tolerance: float = 15.0,
        topk_pixels: int = 1000,
        cam_method: str = "cam",
        cam_options: dict | None = None,
        background: bool = True,
        overlay_format: str = "jpg",
        parallel: bool | str = "auto",
        faithfulness: dict | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= cam_threshold < 1.0:
            raise ValueError(f"cam_threshold must be in [0, 1), got {cam_threshold}")
        self.cam_threshold = float(cam_threshold)
        self.iou_threshold = float(iou_threshold)
        if not 0.0 < self.iou_threshold <= 1.0:  # 50 (a percent) would count no hit: a silently wrong GT-known loc
            raise ValueError(f"iou_threshold is a fraction in (0, 1], e.g. 0.5 (iou_thresholds are percents); got "
                             f"{iou_threshold}")
        for name, flag in (("log_images", log_images), ("write_curves", write_curves), ("pointing", pointing),
                           ("background", background)):
            if not isinstance(flag, bool):  # bool("no") is True
                raise ValueError(f"{name} must be true or false, got {flag!r}")
        if isinstance(num_overlays, bool) or not isinstance(num_overlays, int) or num_overlays < 0:
            raise ValueError(f"num_overlays must be an integer >= 0, got {num_overlays!r}")
        self.grid_interval = float(grid_interval)
        if not 0.0 < self.grid_interval < 1.0:
            raise ValueError(f"grid_interval (the CAM threshold step) must be in (0, 1), e.g. 0.01; got {grid_interval}")
        self.iou_thresholds = tuple(int(v) for v in iou_thresholds)
        if not self.iou_thresholds or any(not 0 < k <= 100 for k in self.iou_thresholds):
            raise ValueError(f"iou_thresholds must be percents in (0, 100], e.g. [30, 50, 70]; got {list(iou_thresholds)}")
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
        self.pointing, self.pointing_tolerance, self.topk_pixels = bool(pointing), float(pointing_tolerance), int(topk_pixels)
        if not (self.pointing_tolerance >= 0 and self.topk_pixels >= 1):
            raise ValueError(f"pointing_tolerance must be >= 0 px and topk_pixels >= 1, got {pointing_tolerance}, "
                             f"{topk_pixels}")
        self.cam_method = check_method(cam_method)
        self.cam_options = check_options(self.cam_method, {k: v for k, v in dict(cam_options or {}).items()
                                                           if k != "name"})
        self.background = bool(background)
        fmt = str(overlay_format).lower().removeprefix(".")
        if fmt not in ("jpg", "jpeg", "png"):
            raise ValueError(f"overlay_format must be 'jpg' or 'png', got {overlay_format!r}")
        self.overlay_format = "jpg" if fmt == "jpeg" else fmt
        if parallel not in (True, False, "auto"):
            raise ValueError(f"parallel must be true, false or 'auto', got {parallel!r}")
        self.parallel = parallel
        faith = dict(faithfulness or {})
        stages = faith.pop("stages", ("test",) if faith else ())
        self.faith_max_images = faith.pop("max_images", None)
        if self.faith_max_images is not None and int(self.faith_max_images) < 1:
            raise ValueError(f"faithfulness.max_images must be >= 1 or null (all), got {self.faith_max_images}")
        unknown = set(stages) - {"val", "test"}
        if unknown:
            raise ValueError(f"faithfulness.stages lists stages among 'val', 'test'; got {sorted(unknown)}")
        self.faith_stages = tuple(stages)
        # sequences as lists (a Hydra ListConfig too), so the options pickle and print plainly
        self.faith_options = {k: v if v is None or isinstance(v, (str, int, float)) else list(v) for k, v in faith.items()}
        known = set(inspect.signature(FaithfulnessMetrics.__init__).parameters) - {"self", "kwargs"}
        unknown = sorted(set(self.faith_options) - known)
        if unknown:
            raise ValueError(f"faithfulness has no key {', '.join(unknown)}; its keys: stages, max_images, "
                             f"{', '.join(sorted(known))}")
        try:
            FaithfulnessMetrics(**self.faith_options)  # bad options fail here, not mid-epoch
        except ValueError as err:
            raise ValueError(f"faithfulness.{err}") from None
        self._faith: dict[str, FaithfulnessMetrics] = {}
        self._parallel, self._numba_threads = False, 1  # resolved in setup()
        self._worker = UpdateWorker(max_pending=2, name="camlab-cam-metrics")
        self._metrics: dict[str, Any] = {}
        self._overlays: list[OverlaySample] = []
        self._overlays_taken = 0  # overlay samples requested this epoch (the worker may not have built them yet)
        self._grid = None  # the overlay grid of this epoch once rendered (and saved) on the worker
        self.last_results: dict[str, dict[str, float]] = {}
        #: the last epoch's full report per stage (scalars, curves, per-image rows), on every rank
        self.last_reports: dict[str, WSOLReport] = {}
        self._last_curves: dict[str, tuple[dict, int]] = {}  # per stage: the last epoch's curves, for the plot
        #: maps made elsewhere, scored instead of the model's: an object with ``for_batch(index, (H, W))`` ->
        #: (B, H, W) float maps (:class:`camlab.external.ExternalMaps`); None = the model's ``cam_method`` maps
        self.map_source = None
        #: the CAM thresholds chosen on the last validation epoch (applied to the test split) and that epoch
        self.val_thresholds: dict[str, float] = {}
        self.val_thresholds_epoch: int | None = None

    # ---- metric objects ------------------------------------------------------------------------------
    def _new_metrics(self, stage: str) -> WSOLMetrics:
        return WSOLMetrics(
            cam_thresholds=self.grid_interval,
            iou_thresholds=self.iou_thresholds,
            max_box_acc=stage in self.max_box_acc,
            masks=True,
            topk=self.topk,
            loc_cam_threshold=self.cam_threshold,
            loc_iou_threshold=self.iou_threshold,
            pointing=self.pointing,
            pointing_tolerance=self.pointing_tolerance,
            topk_pixels=self.topk_pixels,
            parallel=self._parallel,
        )

    def _resolve_parallel(self, trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[bool, int]:
        """(numba threads on?, how many): ``auto`` turns them on when the model runs off the CPU (its forward pass
        leaves the cores idle) and at least 4 of this process's CPUs remain per device of the node."""
        import numba

        try:
            cpus = len(os.sched_getaffinity(0))  # what SLURM / taskset / the container grant, not the host's count
        except AttributeError:  # not on Linux
            cpus = os.cpu_count() or 1
        threads = max(1, min(numba.config.NUMBA_NUM_THREADS, cpus // max(1, int(getattr(trainer, "num_devices", 1)))))
        on = threads >= 4 and pl_module.device.type != "cpu" if self.parallel == "auto" else bool(self.parallel)
        return on, threads

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Fresh metric objects per setup: under ddp_spawn, state tensors created before the spawn would be shared.
        self._worker.close(raise_errors=False)
        self._parallel, self._numba_threads = self._resolve_parallel(trainer, pl_module)
        num_classes = getattr(pl_module, "num_classes", None)
        if num_classes is not None:
            self.topk = tuple(k for k in self.topk if k <= num_classes)
        self._metrics = {s: self._new_metrics(s).to(pl_module.device) for s in ("val", "test")}
        self._faith = {s: FaithfulnessMetrics(**self.faith_options).to(pl_module.device) for s in self.faith_stages}

    def _stage_metrics(self, stage: str, device: torch.device) -> Any:
        # Called on the worker thread when background=True: nothing else may touch the metric meanwhile
        # (Metric.to rebuilds the list states).
        m = self._metrics.get(stage)
        if m is None:
            m = self._metrics[stage] = self._new_metrics(stage)
        return m.to(device)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._worker.close()
        # The curve plot of each stage's last epoch, once per run: a matplotlib figure costs far more than the
        # per-epoch CSV, and on a CPU run every core is busy with the training.
        last, self._last_curves = self._last_curves, {}
        for name, (curves, epoch) in last.items():
            if name.startswith("faith_"):
                plot_faith_curves(curves, self.output_dir / f"{name}.png", title=f"{name[6:]} epoch {epoch}")
            else:
                plot_curves(curves, self.output_dir / f"curves_{name}.png", title=f"{name} epoch {epoch}")

    def state_dict(self) -> dict[str, Any]:
        """The val-chosen CAM thresholds, saved in checkpoints (a checkpoint's test split is scored at its own)."""
        return {"val_thresholds": dict(self.val_thresholds), "val_epoch": self.val_thresholds_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.map_source is None:  # chosen on the model's own maps: not for maps made elsewhere
            self.load_val_thresholds(state_dict.get("val_thresholds") or {}, state_dict.get("val_epoch"))

    def load_val_thresholds(self, thresholds: dict[str, float], epoch: int | None = None) -> None:
        """Use ``thresholds`` (e.g. a checkpoint's) for the test split's ``@val`` numbers; they must lie on this
        callback's threshold grid."""
        from camlab.errors import ConfigError
        from camlab.wsol import resolve_thresholds
        from camlab.wsol.functional import threshold_index

        grid = resolve_thresholds(self.grid_interval)
        for name, value in thresholds.items():
            try:
                threshold_index(grid, value)
            except ValueError:
                raise ConfigError(f"the val-chosen CAM threshold {name}={value} is not on the grid of grid_interval="
                                  f"{self.grid_interval:g}: use the grid_interval it was chosen with",
                                  settings=["grid_interval"]) from None
        self.val_thresholds, self.val_thresholds_epoch = dict(thresholds), epoch

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._worker.close(raise_errors=False)  # the run is failing already: stop the worker quietly

    # ---- per batch -----------------------------------------------------------------------------------
    def _on_batch_end(self, stage: str, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                      batch: dict[str, torch.Tensor]) -> None:
        if not isinstance(outputs, dict) or "features" not in outputs:
            raise RuntimeError(
                f"CAMLocalization needs the {stage}_step to return {{'logits', 'features'}} from its forward pass; "
                f"got {type(outputs).__name__}. Use camlab.models.CAMClassifier or return those keys."
            )
        size = tuple(batch["image"].shape[-2:])
        take = 0  # overlay samples from this batch
        if stage == "val" and trainer.is_global_zero and self._overlays_taken < self.num_overlays:
            take = min(self.num_overlays - self._overlays_taken, batch["label"].shape[0])
            self._overlays_taken += take
            dm = trainer.datamodule
            meta = (getattr(dm, "mean", (0.0, 0.0, 0.0)), getattr(dm, "std", (1.0, 1.0, 1.0)),
                    getattr(dm, "class_names", None), trainer.current_epoch)
        keys = ("label", "boxes", "num_boxes", "mask", "index")
        part = {k: batch[k] for k in keys if k in batch}
        if take:
            part["overlay_images"], part["overlay_meta"] = batch["image"][:take], meta
        # The maps are built here, on the main thread, for every method: gradient methods run autograd in
        # Lightning's context, and a torch op large enough for OpenMP on the worker thread would give the process a
        # second OpenMP team; libgomp then counts more threads than CPUs and throttles its spin-waiting, which slows
        # the training epochs (benchmarks/METRICS_NOTES.md).
        with torch.no_grad():
            maps = self._cam_maps(pl_module, outputs["features"], outputs["logits"], part, size, take, batch["image"])
        if stage in self._faith:
            self._faith_update(stage, trainer, pl_module, batch["image"], maps[0], part)
        work = BatchWork(stage, pl_module, outputs["logits"], part, take, *maps)
        if self.background:
            self._worker.submit(self._update, work)
        else:
            self._update(work)

    def _faith_update(self, stage, trainer, pl_module, images, maps, part) -> None:
        """The model-based faithfulness rows of the batch's images with dataset index < ``max_images``: extra
        forward passes of the model, on its device, in the trainer's precision."""
        index = part["index"]
        if self.faith_max_images is not None:
            keep = index < int(self.faith_max_images)  # by dataset index: the same images under DDP
            if not bool(keep.any()):
                return
            images, maps, part = images[keep], maps[keep], {"label": part["label"][keep], "index": index[keep]}
        context = getattr(trainer.precision_plugin, "forward_context", None)
        with (context() if context else torch.no_grad()), torch.no_grad():
            self._faith[stage].update(pl_module, images, maps, part["label"], part["index"])

    def _cam_maps(self, pl_module, features, logits, part, size, take, images=None) -> tuple:
        """(B, H, W) raw upsampled maps of the GT classes, and those of the predicted classes of the first
        ``take`` images with their softmax scores and classes (for the overlays)."""
        features, logits = features.float(), logits.float()
        if self.map_source is not None:  # maps made elsewhere (camlab-eval maps=...): one map per image
            maps = self.map_source.for_batch(part["index"], size).to(features.device)
            if not take:
                return maps, None, None, None
            score, pred = logits[:take].softmax(dim=1).max(dim=1)
            return maps, maps[:take], score, pred
        maps = upsample(self._raw_cams(pl_module, features, part["label"], images), size)
        if not take:
            return maps, None, None, None
        score, pred = logits[:take].softmax(dim=1).max(dim=1)
        return maps, upsample(self._raw_cams(pl_module, features[:take], pred,
                                             None if images is None else images[:take]), size), score, pred

    def _update(self, work: "BatchWork") -> None:
        """One batch's normalization, metric updates and overlays: on the worker thread when ``background=True``.

        The maps come from :meth:`_cam_maps` on the main thread; the work here is numpy / numba / OpenCV, plus torch
        ops on tensors too small for a parallel region (no OpenMP team on the worker thread).
        """
        part, take = work.part, work.take
        if self._parallel:  # numba's thread count is per calling thread
            import numba

            numba.set_num_threads(self._numba_threads)
        with torch.inference_mode():  # as Lightning's evaluation loop (thread-local, so set here too)
            # (B, H, W) maps normalized on the CPU in one pass that also makes their uint8 copies (bit-identical
            # to minmax_normalize)
            cams_gt = ScoreMaps.normalize(work.maps)
            self._stage_metrics(work.stage, work.pl_module.device).update(
                cams=cams_gt, logits=work.logits.float(), labels=part["label"], boxes=part.get("boxes"),
                num_boxes=part.get("num_boxes"), masks=part.get("mask"), index=part["index"])
            if take:
                gt = ([part["boxes"][i, : int(part["num_boxes"][i])].tolist() for i in range(take)]
                      if "boxes" in part else [[] for _ in range(take)])
                self._add_overlays(part["overlay_images"], work.pred_maps, gt, part["label"][:take], work.pred,
                                   work.score, part["index"][:take], part["overlay_meta"])

    def _raw_cams(self, pl_module: L.LightningModule, features: torch.Tensor, classes: torch.Tensor,
                  images: torch.Tensor | None = None) -> torch.Tensor:
        if self.cam_method == "cam":
            return pl_module.cam(features, classes)  # (B, h, w): the default path, one einsum
        return compute_cams(pl_module, features, classes, self.cam_method, images=images,
                            options=self.cam_options)  # (B, h, w)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.sanity_checking:
            return
        self._on_batch_end("val", trainer, pl_module, outputs, batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._on_batch_end("test", trainer, pl_module, outputs, batch)

    # ---- per epoch -----------------------------------------------------------------------------------
    def _on_epoch_end(self, stage: str, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._worker.join()  # every batch's update has run (re-raises a worker exception)
        metrics = self._metrics.get(stage)
        if metrics is None or not metrics.update_called:
            return
        report = metrics.report()  # every rank reports (one collective sync inside)
        values = {k: float(v) for k, v in report.scalars.items() if "/best_index/" not in k}
        faith_curves = {}
        if stage in self._faith and self._faith[stage].update_called:
            faith = self._faith[stage].report()  # every rank, like the report above
            values.update({f"faith/{k}": v for k, v in faith.scalars.items()})
            report.scalars.update({f"faith/{k}": v for k, v in faith.scalars.items()})
            report.add_columns(faith.rows["index"], faith.columns())
            faith_curves = faith.curves
            self._faith[stage].reset()
        if stage == "val":
            self.val_thresholds, self.val_thresholds_epoch = report.chosen_thresholds(), trainer.current_epoch
        elif self.val_thresholds:
            at_val = report.at_thresholds(self.val_thresholds)
            values.update(at_val)
            report.scalars.update(at_val)
        self.last_results[stage], self.last_reports[stage] = values, report
        pl_module.log_dict({(f"{stage}/{k}" if k.startswith("faith/") else f"{stage}/loc/{k}"): v
                            for k, v in values.items()}, sync_dist=False)
        curves = report.curves
        metrics.reset()
        if trainer.is_global_zero:
            self._write_outputs(stage, trainer, curves)
            if faith_curves:
                self._write_faith_curves(stage, trainer, faith_curves)
        if stage == "val":
            self._overlays, self._overlays_taken, self._grid = [], 0, None

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        self._on_epoch_end("val", trainer, pl_module)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._on_epoch_end("test", trainer, pl_module)

    # ---- overlays ------------------------------------------------------------------------------------
    def _add_overlays(self, images, cams, gt, labels, pred, score, index, meta) -> None:
        """Overlay samples (predicted-class maps, upsampled, raw); renders and saves the grid once complete."""
        mean, std, names, epoch = meta
        images = images.detach().float().cpu().numpy()
        maps = ScoreMaps.normalize(cams)  # bit-identical to minmax_normalize, with the uint8 maps
        cams = maps.maps
        labels, pred, score, index = labels.tolist(), pred.tolist(), score.tolist(), index.tolist()
        for i in range(len(cams)):
            self._overlays.append(
                OverlaySample(
                    image=denormalize(images[i], mean, std),
                    cam=cams[i],
                    gt_boxes=gt[i],
                    pred_box=prediction_to_xyxy(boxes_at_threshold(
                        maps.u8[i], self.cam_threshold, multi_contour=False)[0]),
                    label=names[labels[i]] if names else str(labels[i]),
                    pred=names[pred[i]] if names else str(pred[i]),
                    score=float(score[i]),
                    index=int(index[i]),
                )
            )
        if len(self._overlays) >= self.num_overlays:
            self._grid = self._save_grid(epoch)

    def _save_grid(self, epoch: int, samples: list[OverlaySample] | None = None):
        """Render the overlay grid of ``samples`` (default: this epoch's); write ``overlay_epoch<NNN>.<fmt>`` and
        ``overlay_latest.<fmt>``."""
        grid = render_grid(self._overlays if samples is None else samples)
        if self.output_dir is not None:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            fmt = self.overlay_format
            data = encode_png(np.asarray(grid)) if fmt == "png" else encode_jpeg(np.asarray(grid))
            write_bytes(self.output_dir / f"overlay_epoch{epoch:03d}.{fmt}", data)  # atomic: no partial image
            write_bytes(self.output_dir / f"overlay_latest.{fmt}", data)
        return grid

    @rank_zero_only
    def _write_outputs(self, stage: str, trainer: L.Trainer, curves: dict[str, list[float]]) -> None:
        """The epoch's curve files, overlay grid and images.

        With ``background=True`` the files and the grid's TensorBoard image are written on the worker, which is
        joined before the next ``compute()`` and closed in ``teardown`` (its exceptions re-raised here, like the
        updates'). So what they need is taken now: the next epoch refills ``self._overlays`` and moves the step.
        """
        epoch, step = trainer.current_epoch, trainer.global_step
        samples = list(self._overlays) if stage == "val" else []
        # the writer is created on this thread if need be; SummaryWriter.add_image may then run on the worker
        tensorboards = ([lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
                        if samples and self.log_images else [])
        job = dict(stage=stage, epoch=epoch, step=step, curves=curves if self.write_curves else {}, samples=samples,
                   grid=self._grid, tensorboards=tensorboards)
        if self.background:
            self._worker.submit(self._write_files, **job)
        else:
            self._write_files(**job)
        if samples and self.log_images:
            self._log_images(trainer, samples, curves)

    def _write_files(self, stage, epoch, step, curves, samples, grid, tensorboards) -> None:
        """Curve CSV (the plot of the last one is drawn at teardown), the overlay grid (rendered here when the epoch had fewer images than ``num_overlays``)
        and its TensorBoard image: on the worker thread when ``background=True``."""
        out = self.output_dir
        if out is not None and curves:
            out.mkdir(parents=True, exist_ok=True)
            write_curves_csv(curves, out / f"curves_{stage}_epoch{epoch:03d}.csv")
            self._last_curves[stage] = (curves, epoch)  # plotted at teardown
        if samples and grid is None and (out is not None or tensorboards):
            grid = self._save_grid(epoch, samples)
        for writer in tensorboards:
            writer.add_image("val/cam_overlays", np.asarray(grid), step, dataformats="HWC")

    def _write_faith_curves(self, stage: str, trainer: L.Trainer, tables: dict[str, dict]) -> None:
        """The faithfulness curves (insertion / deletion, ROAD): one CSV per table and epoch, the plot at teardown,
        W&B tables (main thread)."""
        epoch = trainer.current_epoch
        if self.output_dir is not None and self.write_curves:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            for name, table in tables.items():
                write_curves_csv(table, self.output_dir / f"faith_{name}_{stage}_epoch{epoch:03d}.csv")
            self._last_curves[f"faith_{stage}"] = (tables, epoch)
        for logger in trainer.loggers if self.log_images else ():
            if isinstance(logger, WandbLogger):
                import wandb

                for name, table in tables.items():
                    cols = list(table)
                    data = [list(r) for r in zip(*(table[c] for c in cols))]
                    logger.experiment.log({f"{stage}/faith_curves/{name}": wandb.Table(columns=cols, data=data),
                                           "trainer/global_step": trainer.global_step})

    def _log_images(self, trainer: L.Trainer, samples: list[OverlaySample], curves: dict[str, list[float]]) -> None:
        """The overlays (with their boxes) and the curve table to W&B, from the main thread: ``Run.log`` takes no
        lock around its step counter, and Lightning logs the metrics from this thread."""
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                images = [wandb_image(s) for s in samples]
                logger.experiment.log({"val/cam_overlays": images, "trainer/global_step": trainer.global_step})
                if curves:
                    cols = list(curves)
                    table = wandb.Table(columns=cols, data=[list(r) for r in zip(*(curves[c] for c in cols))])
                    logger.experiment.log({"val/loc_curves": table, "trainer/global_step": trainer.global_step})


@dataclass
class BatchWork:
    """One batch's work for :meth:`CAMLocalization._update` (what crosses the worker queue)."""

    stage: str
    pl_module: Any
    logits: torch.Tensor
    part: dict  # the batch's label, boxes, num_boxes, mask, index (+ overlay images and meta)
    take: int  # overlay samples from this batch
    maps: torch.Tensor  # (B, H, W) raw upsampled GT-class maps
    pred_maps: torch.Tensor | None  # (take, H, W) raw upsampled predicted-class maps
    score: torch.Tensor | None  # (take,) softmax score of the prediction
    pred: torch.Tensor | None  # (take,) predicted classes
