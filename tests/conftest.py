"""Test-wide settings: offline, headless, deterministic, and bounded threads on a 2-core machine."""

import os

# Never reach the network from tests: W&B offline, no hub downloads, headless plotting.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_DISABLE_GIT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HYDRA_FULL_ERROR", "0")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """The tiny trained checkpoint the eval and predict tests share (trained once per test process)."""
    from _tiny_checkpoint import tiny_checkpoint

    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))
