"""Every config option composes, and the composed objects instantiate (without training)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict, read_write

CONF = Path(__file__).resolve().parents[1] / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def composed(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_module("camlab.conf", version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg), read_write(cfg):
        cfg.hydra.runtime.output_dir = "/tmp/camlab-config-test"
    HydraConfig.instance().set_config(cfg)
    return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiment_configs_compose_and_build(experiment):
    cfg = composed([f"experiment={experiment}"])
    OmegaConf.to_container(cfg, resolve=True)
    model = instantiate(cfg.model, _convert_="partial")
    dm = instantiate(cfg.data, _convert_="partial")
    assert model.num_classes == dm.num_classes == cfg.data.num_classes


@pytest.mark.parametrize("group", ["logger", "trainer", "threshold", "pool", "model", "callbacks", "debug"])
def test_every_group_option_composes(group):
    for option in options(group):
        cfg = composed([f"{group}={option}"])
        OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves


def test_default_experiment_is_the_cpu_synthetic_tiny_cnn():
    cfg = composed([])
    assert cfg.backbone.name == "tiny_cnn"
    assert cfg.data._target_ == "camlab.data.WSOLDataModule"
    assert cfg.trainer.accelerator == "cpu"
    assert list(cfg.logger) == ["csv"]
    assert cfg.optimized_metric == "val/loc/top1_loc"
