"""A tiny camlab-train checkpoint, trained in-process once per test session (tiny_cnn, 32 px, 1 epoch)."""

from __future__ import annotations

import csv
from pathlib import Path

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

# 25 validation images: not a multiple of the batch size (nor of 2 DDP ranks).
DATA = ["data.image_size=32", "data.num_train=48", "data.num_val=25", "data.num_test=20", "data.batch_size=16"]
_CACHE: dict[str, object] = {}


def composed(config: str, overrides: list[str], out_dir: Path) -> DictConfig:
    """The app's config as Hydra composes it, with the run dir set (what ``@hydra.main`` would give)."""
    GlobalHydra.instance().clear()
    with initialize_config_module("camlab.conf", version_base="1.3"):
        cfg = compose(config, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg), read_write(cfg):
        cfg.hydra.runtime.output_dir = str(out_dir)
        cfg.hydra.job.config_name = config
    HydraConfig.instance().set_config(cfg)
    return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])


def tiny_checkpoint(root: Path) -> dict[str, object]:
    """{"run_dir", "ckpt" (best-*.ckpt: the weights of the one validation), "val" (that validation's metrics)}."""
    if "run" not in _CACHE:
        from camlab.train import train

        run_dir = root / "train"
        cfg = composed("train", [*DATA, "backbone.width=4", "trainer.max_epochs=1", "test=false",
                                 "callbacks=[model_checkpoint,cam_localization]",
                                 "callbacks.cam_localization.num_overlays=2",
                                 "callbacks.cam_localization.write_curves=false"], run_dir)
        train(cfg)
        rows = [r for r in csv.DictReader(open(run_dir / "csv" / "metrics.csv")) if r.get("val/loc/MaxBoxAccV2")]
        val = {k: float(v) for k, v in rows[-1].items() if k.startswith("val/") and v != ""}
        (ckpt,) = (run_dir / "checkpoints").glob("best-*.ckpt")
        _CACHE["run"] = {"run_dir": run_dir, "ckpt": ckpt, "val": val}
    return _CACHE["run"]  # type: ignore[return-value]
