"""Every on-disk format through its real Hydra config: loads, trains a fast_dev_run, evaluates via the callback."""
from __future__ import annotations

from pathlib import Path

import lightning.pytorch as L
import logging

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict, read_write

import _dataset_fixtures as fx
from camlab.callbacks import CAMLocalization

CONF = Path(__file__).resolve().parents[1] / "conf" / "data"
TINY = ["data.num_classes=3", "data.image_size=32", "data.resize_size=40", "data.batch_size=4",
        "data.num_workers=0", "backbone=tiny_cnn"]


def composed(overrides: list[str], out: Path):
    GlobalHydra.instance().clear()
    with initialize_config_module("camlab.conf", version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg), read_write(cfg):
        cfg.hydra.runtime.output_dir = str(out)
    HydraConfig.instance().set_config(cfg)
    return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])


def fixture_overrides(fmt: str, root: Path) -> tuple[list[str], bool]:
    """(overrides pointing the config at a fresh fixture tree, whether val/test have masks)."""
    if fmt == "cub":
        return [f"data.root={fx.make_cub(root)}"], True
    if fmt.startswith("wsoleval_"):
        name = {"cub": "CUB", "ilsvrc": "ILSVRC", "openimages": "OpenImages"}[fmt.split("_")[1]]
        data, meta = fx.make_wsoleval(root, name)
        return [f"data.root={data}", f"data.metadata_root={meta}"], name == "OpenImages"
    if fmt == "ilsvrc":
        return [f"data.root={fx.make_ilsvrc(root)}"], False
    if fmt == "coco":
        return [f"data.root={fx.make_coco(root)}"], True
    if fmt == "csv":
        return [f"data.root={fx.make_csv(root)}"], False
    raise AssertionError(fmt)


def test_every_disk_config_is_covered():
    disk = {p.stem for p in CONF.glob("*.yaml") if "camlab.data.disk.DiskDataModule" in p.read_text()}
    assert disk == {"cub", "wsoleval_cub", "wsoleval_ilsvrc", "wsoleval_openimages", "ilsvrc", "coco", "csv"}


@pytest.mark.parametrize("fmt", ["cub", "wsoleval_cub", "wsoleval_ilsvrc", "wsoleval_openimages", "ilsvrc", "coco", "csv"])
def test_fast_dev_run_through_the_config(fmt, tmp_path, caplog):
    extra, has_masks = fixture_overrides(fmt, tmp_path / "data")
    if fmt == "csv":  # an image that decodes badly, skipped and reported at the end of fit and of test
        bad = tmp_path / "data" / "images" / "b1.png"
        bad.write_bytes(bad.read_bytes()[:60])
        extra.append("data.skip_corrupt=true")
    cfg = composed([f"data={fmt}", *TINY, *extra], tmp_path / "run")
    dm = instantiate(cfg.data, _convert_="partial")
    model = instantiate(cfg.model, _convert_="partial")
    assert dm.num_classes == model.num_classes == 3
    cam = CAMLocalization(num_overlays=2, output_dir=str(tmp_path / "cams"), log_images=False, write_curves=False,
                          topk=(1,))
    trainer = L.Trainer(fast_dev_run=True, accelerator="cpu", callbacks=[cam], logger=False,
                        enable_progress_bar=False, enable_model_summary=False)
    torch.manual_seed(0)
    caplog.set_level(logging.WARNING, logger="camlab.data")
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm)
    for stage in ("val", "test"):
        results = cam.last_results[stage]
        assert 0.0 <= results["MaxBoxAccV2"] <= 100.0
        assert ("PxAP" in results) == has_masks, sorted(results)
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape[1:] == (3, 32, 32)
    assert (batch["num_boxes"] >= 1).all()
    reports = [r.message for r in caplog.records if "unreadable image(s) while loading" in r.message]
    if fmt == "csv":
        assert len(batch["label"]) == 1  # val = a1 + the skipped b1
        assert reports and "skipped 1 unreadable" in reports[0], reports
    else:
        assert not reports
