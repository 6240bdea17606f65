"""App configs for the matrix, composed by Hydra once per module and varied per case by value overrides.

Composing costs a few hundred ms; most cases only change values, which Hydra's own override parser turns into
typed values applied to a copy of the composed base: what composing each case would give, at a fraction of it.
"""
from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict, read_write


def base_config(config: str, overrides: list[str]) -> DictConfig:
    """``config`` composed with ``overrides`` (Hydra initialised afresh), the hydra node included."""
    GlobalHydra.instance().clear()
    initialize_config_module("camlab.conf", version_base="1.3")
    return compose(config, overrides=overrides, return_hydra_config=True)


def app_config(base: DictConfig, overrides: list[str], out_dir: Path) -> DictConfig:
    """``base`` with the value ``overrides`` applied and the run dir set, as the app sees it (no hydra node)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = base.copy()
    for override in OverridesParser.create().parse_overrides(overrides):
        OmegaConf.update(cfg, override.key_or_group, override.value(), merge=False)
    with open_dict(cfg), read_write(cfg):
        cfg.hydra.runtime.output_dir = str(out_dir)
        cfg.hydra.job.config_name = str(cfg.hydra.job.get("config_name") or "app")
    HydraConfig.instance().set_config(cfg)
    return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
