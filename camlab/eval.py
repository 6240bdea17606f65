"""Evaluation entry point: ``camlab-eval ckpt_path=<file.ckpt> [overrides]`` or ``python -m camlab.eval ...``.

Composes ``conf/eval.yaml``, rebuilds the model (from the run config stored in a camlab-train checkpoint, from
the composed groups, or from a torchvision state dict), runs ``trainer.test`` (``split=test``) or
``trainer.validate`` (``split=val``) with the CAMLocalization callback (the same metrics, de-duplicated under
DDP, as training logs) and :class:`camlab.per_image.PerImageWriter`, then writes ``metrics.json`` in the run
dir and prints where everything is.

``maps=<folder | file.npz>`` scores score maps made elsewhere (:mod:`camlab.external`, docs/external_maps.md):
with a model, the callback scores those maps instead of the model's (classification stays the model's); without
one, :func:`evaluate_maps` scores them in a plain loop over the split (no trainer, no classification).
``baseline=center`` scores the center baseline (:mod:`camlab.wsol.baseline`) the same way.

On the test split the numbers are also given at the CAM thresholds chosen on the val split (``test/loc/*@val``,
the protocol of Choe et al., CVPR 2020): a camlab-train checkpoint stores those of its validation epoch;
``eval.val_thresholds=val`` (the default for the center baseline) scores the val split first and takes its.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from camlab.atomic import write_text
from camlab.errors import ConfigError
from camlab.runtime.app import run_app
from camlab.runtime.config import check_flags, instantiate_group
from camlab.runtime.process import configure_process

log = logging.getLogger("camlab.eval")
SPLITS = ("test", "val")
VAL_THRESHOLDS = ("auto", "val")
NO_VAL_THRESHOLDS = ("no val-chosen thresholds (no test/loc/*@val numbers): {why}; set eval.val_thresholds=val to "
                     "choose them on the val split first")


def build_model(cfg: DictConfig) -> tuple[Any, str | None, str, dict]:
    """``(model, ckpt_path for trainer.test or None, description, stored)`` from ``ckpt_path`` / ``torchvision.*``;
    ``stored``: the CAMLocalization state a camlab-train checkpoint carries (its val-chosen thresholds), else {}."""
    from hydra.utils import instantiate

    from camlab.models.pretrained import from_torchvision, is_camlab_checkpoint, load_checkpoint, read_checkpoint

    tv = cfg.get("torchvision") or {}
    ckpt = cfg.get("ckpt_path")
    if tv.get("arch"):
        if ckpt:
            raise ConfigError("pass either ckpt_path or torchvision.arch/torchvision.weights, not both")
        if not tv.get("weights"):
            raise ConfigError(f"torchvision.arch={tv.arch} needs torchvision.weights=<local state-dict file>")
        model = from_torchvision(tv.arch, tv.weights, class_names=tv.get("class_names"))
        return model, None, f"torchvision {tv.arch} from {tv.weights}", {}
    if not ckpt:
        raise ConfigError("ckpt_path is required: camlab-eval ckpt_path=<file.ckpt> (or torchvision.arch=... "
                          "torchvision.weights=<file.pth>, or maps=<folder|file.npz> to score saved maps)")
    if not Path(ckpt).is_file():
        raise ConfigError(f"ckpt_path '{ckpt}' is not a file")
    if cfg.get("model_from_checkpoint", True):
        contents = read_checkpoint(ckpt)
        if is_camlab_checkpoint(contents):
            stored = (contents.get("callbacks") or {}).get("CAMLocalization") or {}
            return (load_checkpoint(ckpt, contents), None, f"checkpoint {ckpt} (model from its stored run config)",
                    stored)
        if not (isinstance(contents, dict) and isinstance(contents.get("state_dict"), dict)):
            raise ConfigError(f"ckpt_path '{ckpt}' is not a Lightning/camlab checkpoint (no 'state_dict' entry); "
                              f"for a torchvision state dict pass torchvision.arch=<arch> torchvision.weights={ckpt}")
    model = instantiate(cfg.model, _convert_="partial")
    # a Lightning checkpoint: trainer.test(ckpt_path=...) restores the callbacks' states itself
    return model, str(ckpt), f"checkpoint {ckpt} (model from the composed backbone/model config)", {}


def check_data(model: Any, datamodule: Any, image_size: Any) -> None:
    """The data's classes must be the model's; a different input size is allowed but reported."""
    n_data = getattr(datamodule, "num_classes", None)
    if n_data is not None and n_data != model.num_classes:
        raise ConfigError(f"the data has {n_data} classes but the model has {model.num_classes}: evaluate on "
                          f"data with the model's label set (data.num_classes=...)")
    spec = getattr(model, "input_spec", None)
    size = image_size
    if spec is not None and size is not None and tuple(spec.size_hw) != _hw(size):
        log.warning("the model's input size is %s (its training data / weights) but the data is at image_size=%s",
                    spec.image_size, size)


def _hw(size: Any) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def val_threshold_mode(cfg: DictConfig) -> str:
    """``eval.val_thresholds``: ``auto`` (a checkpoint's stored ones; the center baseline scores val first) | ``val``."""
    mode = (cfg.get("eval") or {}).get("val_thresholds", "auto")
    if mode not in VAL_THRESHOLDS:
        raise ConfigError(f"eval.val_thresholds must be one of {', '.join(VAL_THRESHOLDS)}, got {mode!r}")
    return mode


def map_source(cfg: DictConfig, datamodule: Any, split: str) -> Any:
    """What ``maps=`` or ``baseline=`` scores for ``split``: :class:`camlab.external.ExternalMaps` or the
    :class:`camlab.wsol.baseline.CenterBaseline`."""
    baseline = cfg.get("baseline")
    if baseline is None:
        return open_maps(cfg, datamodule, split)
    from camlab.wsol.baseline import BASELINES, CenterBaseline

    if baseline not in BASELINES:
        raise ConfigError(f"baseline must be one of {', '.join(BASELINES)} (or null), got {baseline!r}")
    if cfg.get("maps"):
        raise ConfigError(f"pass either maps=... or baseline={baseline}, not both")
    try:
        return CenterBaseline(cfg.get("baseline_sigma", 1.0))
    except ValueError as err:
        raise ConfigError(str(err)) from None


def has_model(cfg: DictConfig) -> bool:
    """Whether the config names a model (``ckpt_path`` or ``torchvision.arch``)."""
    return bool(cfg.get("ckpt_path") or (cfg.get("torchvision") or {}).get("arch"))


def open_maps(cfg: DictConfig, datamodule: Any, split: str) -> Any:
    """The :class:`camlab.external.ExternalMaps` of ``cfg.maps`` for every image of ``split``."""
    from camlab.external import ExternalMaps

    return ExternalMaps.for_dataset(cfg.maps, datamodule.dataset(split), key=cfg.get("maps_key") or "auto",
                                    resize=cfg.get("maps_resize") or "bicubic", split=split,
                                    root=getattr(datamodule, "root", None))


def write_summary(cfg: DictConfig, summary: dict[str, Any], written: dict[str, Path], note: str | None = None) -> None:
    """``metrics.json`` in the run dir, and the closing lines on stdout (where everything is, the main numbers)."""
    out, split, metrics = Path(cfg.paths.output_dir), summary["split"], summary["metrics"]
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "metrics.json", json.dumps(summary, indent=2) + "\n")  # atomic: an old file stays whole
    lines = [f"run dir           {out}", f"metrics (JSON)    {out / 'metrics.json'}"]
    for key, label in (("csv", "per-image rows"), ("npz", "CAMs (npz)"), ("png_dir", "CAM overlays")):
        if key in written:
            lines.append(f"{label:<17} {written[key]}")
    if "maps" in summary:
        lines.append(f"scored maps       {summary['maps']['source']} ({summary['maps']['num_maps']} maps, keys: "
                     f"{summary['maps']['key']})")
    keys = [f"{split}/acc", f"{split}/loc/gt_known_loc", f"{split}/loc/top1_loc", f"{split}/loc/MaxBoxAccV2",
            f"{split}/loc/MaxBoxAccV2@val", f"{split}/loc/MaxBoxAcc", f"{split}/loc/PxAP"]
    shown = [f"{k}={metrics[k]:.4g}" for k in keys if k in metrics]
    if shown:
        lines.append("metrics           " + "  ".join(shown))
    if note:
        lines.append(note)
    print("\n".join(["", "camlab: evaluation finished", *("  " + line for line in lines)]), flush=True)


def score_maps(cam: Any, datamodule: Any, split: str, source: Any) -> Any:
    """The :class:`camlab.wsol.WSOLReport` of ``source``'s maps of ``split`` (no logits), with the callback ``cam``'s
    thresholds, in a plain loop over the split's loader."""
    from rich.progress import track

    from camlab.wsol import ScoreMaps, WSOLMetrics

    metrics = WSOLMetrics(cam_thresholds=cam.grid_interval, iou_thresholds=cam.iou_thresholds,
                          max_box_acc=split in cam.max_box_acc, masks=True, topk=(), gt_known=True,
                          loc_cam_threshold=cam.cam_threshold, loc_iou_threshold=cam.iou_threshold,
                          pointing=cam.pointing, pointing_tolerance=cam.pointing_tolerance, topk_pixels=cam.topk_pixels)
    loader = datamodule.test_dataloader() if split == "test" else datamodule.val_dataloader()
    for batch in track(loader, description=f"scoring maps ({split})", total=len(loader), transient=True):
        maps = ScoreMaps.normalize(source.for_batch(batch["index"], tuple(batch["image"].shape[-2:])))
        metrics.update(cams=maps, boxes=batch.get("boxes"), num_boxes=batch.get("num_boxes"),
                       masks=batch.get("mask"), labels=batch["label"], index=batch["index"])
    return metrics.report()


def evaluate_maps(cfg: DictConfig) -> dict[str, Any]:
    """``maps=...`` or ``baseline=center`` without a model: every box / mask / map-only metric of the maps, in a
    plain loop over the split's loader, with the cam_localization callback's settings; ``metrics.json`` +
    ``per_image.csv`` as :func:`evaluate` writes them (no classification, top-k loc or ``pred`` columns: there are
    no logits). On the test split with ``eval.val_thresholds=val`` (the baseline's default) the val split's maps
    are scored first and the test split also at their best thresholds (``test/loc/*@val``)."""
    import lightning.pytorch as L
    from hydra.utils import instantiate

    from camlab.callbacks import CAMLocalization
    from camlab.per_image import write_per_image_csv

    split = cfg.get("split", "test")
    mode = val_threshold_mode(cfg)
    L.seed_everything(cfg.seed, workers=True)
    configure_process(cfg)
    node = (cfg.get("callbacks") or {}).get("cam_localization")
    # the callback's settings (validated by it): the same thresholds as the model path
    cam = instantiate(node, output_dir=None) if node is not None else CAMLocalization(max_box_acc=True, pointing=True)
    if cfg.get("eval", {}).get("save_cams"):
        log.warning("eval.save_cams is ignored with maps= and no checkpoint (the maps are already files)")
    datamodule = instantiate(cfg.data, _convert_="partial")
    datamodule.setup("test" if split == "test" else "validate")
    external = map_source(cfg, datamodule, split)
    first_val = split == "test" and (mode == "val" or cfg.get("baseline") is not None)
    chosen: dict[str, Any] = {}
    try:
        if first_val:
            datamodule.setup("validate")
            source = map_source(cfg, datamodule, "val")
            try:
                chosen = score_maps(cam, datamodule, "val", source).chosen_thresholds()
            finally:
                source.close()
        report = score_maps(cam, datamodule, split, external)
    finally:
        external.close()
        datamodule.teardown("test")
    report.scalars.update(report.at_thresholds(chosen))
    values = {(f"{split}/{k}" if k.startswith("faith/") else f"{split}/loc/{k}"): float(v)
              for k, v in report.scalars.items() if "/best_index/" not in k}
    summary = {
        "split": split,
        "source": external.describe(),
        "num_images": len(datamodule.dataset(split)),
        "world_size": 1,
        "metrics": values,
        "maps": external.report(),
        "not_measured": "classification, top-1/top-5 loc (no checkpoint: no logits)",
    }
    if split == "test":
        summary["val_thresholds"] = ({"source": "the val split of this evaluation", "thresholds": chosen} if chosen
                                     else {"source": None, "note": NO_VAL_THRESHOLDS.format(why="maps= scores the test "
                                                                                            "split only by default")})
    written = {}
    if report.rows:
        written["csv"] = Path(cfg.paths.output_dir) / "per_image.csv"
        write_per_image_csv(written["csv"], report, getattr(datamodule, "class_names", None))
    note = ("no checkpoint: no classification or top-1/top-5 loc (pass ckpt_path as well for those)"
            if cfg.get("baseline") is None else "center baseline: no model, no classification or top-1/top-5 loc")
    write_summary(cfg, summary, written, note=note)
    return summary


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate and write ``metrics.json`` (+ ``per_image.csv``); returns the written summary."""
    import lightning.pytorch as L
    from hydra.utils import instantiate

    split = cfg.get("split", "test")
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    check_flags(cfg, ("tune_malloc", "model_from_checkpoint", "eval.save_cams"))  # "no" would count as true
    mode = val_threshold_mode(cfg)
    if (cfg.get("maps") or cfg.get("baseline") is not None) and not has_model(cfg):
        return evaluate_maps(cfg)
    model, trainer_ckpt, source, stored = build_model(cfg)
    L.seed_everything(cfg.seed, workers=True)
    configure_process(cfg)  # as camlab-train: glibc malloc tuning (tune_malloc), CPU matmul precision
    datamodule = instantiate(cfg.data, _convert_="partial")
    check_data(model, datamodule, cfg.data.get("image_size"))
    callbacks = instantiate_group(cfg.get("callbacks"))
    loggers = instantiate_group(cfg.get("logger"))
    external = None
    cam = next((c for c in callbacks if type(c).__name__ == "CAMLocalization"), None)
    if cfg.get("maps") or cfg.get("baseline") is not None:
        if cam is None:
            raise ConfigError("maps=... / baseline=... with a model is scored by the cam_localization callback: keep "
                              "it in callbacks (callbacks=[cam_localization, ...])")
        external = cam.map_source = map_source(cfg, datamodule, split)
        source += f" + {external.describe()} (localization of these maps; classification of the model)"
    # a checkpoint's thresholds were chosen on its model's maps: other maps choose their own on val
    first_val = split == "test" and cam is not None and (mode == "val" or cfg.get("baseline") is not None)
    if split == "test" and external is None and not first_val and stored.get("val_thresholds"):
        cam.load_val_thresholds(stored["val_thresholds"], stored.get("val_epoch"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for lg in trainer.loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    run = trainer.test if split == "test" else trainer.validate
    try:
        if first_val:  # the val split's thresholds; the test run then keeps them (and the weights loaded here)
            if external is not None:
                cam.map_source = map_source(cfg, datamodule, "val")
            trainer.validate(model, datamodule=datamodule, ckpt_path=trainer_ckpt)
            if external is not None:
                cam.map_source.close()
                cam.map_source = external
            trainer_ckpt = None
        run(model, datamodule=datamodule, ckpt_path=trainer_ckpt)
    except RuntimeError as err:
        if trainer_ckpt is None or "state_dict" not in str(err):
            raise
        first = str(err).strip().splitlines()[0]
        raise ConfigError(f"checkpoint '{trainer_ckpt}' does not fit the model composed from backbone={cfg.backbone.name}"
                          f" and model/pool: pass the training run's backbone/model overrides ({first})") from None
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()
                if v.numel() == 1 and not (first_val and k.startswith("val/"))}

    writer = next((c for c in callbacks if type(c).__name__ == "PerImageWriter"), None)
    summary = {
        "split": split,
        "source": source,
        "num_images": len(datamodule.dataset(split)) if hasattr(datamodule, "dataset") else None,
        "world_size": trainer.world_size,
        "metrics": metrics,
    }
    if split == "test" and cam is not None:
        summary["val_thresholds"] = thresholds_summary(cam, first_val, bool(cfg.get("ckpt_path")))
    if external is not None:
        summary["maps"] = external.report()
        external.close()
    if trainer.is_global_zero:
        write_summary(cfg, summary, writer.written if writer is not None else {})
    return summary


def thresholds_summary(cam: Any, first_val: bool, has_checkpoint: bool) -> dict[str, Any]:
    """``metrics.json``'s ``val_thresholds``: where the test split's ``@val`` thresholds came from, and them."""
    if not cam.val_thresholds:
        why = "the checkpoint stores none" if has_checkpoint else "a torchvision classifier has none"
        return {"source": None, "note": NO_VAL_THRESHOLDS.format(why=why)}
    where = ("the val split of this evaluation" if first_val else
             f"the checkpoint (its validation epoch {cam.val_thresholds_epoch})")
    return {"source": where, "epoch": cam.val_thresholds_epoch, "thresholds": dict(cam.val_thresholds)}


@hydra.main(version_base="1.3", config_path="pkg://camlab.conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    run_app("camlab.eval", evaluate, cfg)  # one-line errors for bad input, trackers finished

if __name__ == "__main__":
    main()
