"""Experiment trackers of a job: the W&B run's identity (name, group, a run id kept in the run dir) and its end."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

from omegaconf import DictConfig

from camlab.atomic import write_text


def configure_wandb(cfg: DictConfig) -> None:
    """Give the job's W&B logger (if any) its identity: name, group and a run id kept in the run dir.

    Unset ``name`` -> the job's overrides (``hydra.job.override_dirname``), or ``task_name`` without any;
    unset ``group`` -> ``task_name`` for a single run, ``<task_name>-<sweep dir name>`` for the jobs of a
    multirun (one group per sweep); unset ``id`` -> the id stored in ``<save_dir>/wandb/camlab_run_id``
    when the run dir is reused (a resumed or requeued run continues the same W&B run, ``resume="allow"``),
    else a new id, stored there (by rank 0).
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from lightning.pytorch.utilities import rank_zero_only
    from omegaconf import open_dict

    nodes = [n for n in (cfg.get("logger") or {}).values()
             if isinstance(n, DictConfig) and str(n.get("_target_", "")).endswith("WandbLogger")]
    if not nodes:
        return
    hc = HydraConfig.get()
    for node in nodes:
        with open_dict(node):
            if not node.get("name"):
                node.name = hc.job.override_dirname or cfg.task_name
            if not node.get("group"):
                multirun = hc.mode == RunMode.MULTIRUN
                node.group = f"{cfg.task_name}-{Path(hc.sweep.dir).name}" if multirun else cfg.task_name
            if not node.get("id"):
                node.id = stored_wandb_run_id(Path(node.save_dir) / "wandb", write=rank_zero_only.rank == 0)
                node.resume = "allow"


def stored_wandb_run_id(wandb_dir: Path, write: bool) -> str:
    """The run id kept in ``<wandb_dir>/camlab_run_id``; a new one (stored there when ``write``) if none.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()) / "wandb"
    >>> first = stored_wandb_run_id(d, write=True)
    >>> stored_wandb_run_id(d, write=False) == first, len(first)
    (True, 8)
    """
    id_file = wandb_dir / "camlab_run_id"
    if id_file.is_file() and id_file.read_text().strip():
        return id_file.read_text().strip()
    run_id = uuid.uuid4().hex[:8]
    if write:
        wandb_dir.mkdir(parents=True, exist_ok=True)
        write_text(id_file, run_id + "\n")  # atomic: a full disk leaves no empty id file
    return run_id


def finish_experiment_trackers() -> None:
    """End the job's W&B run, so the next job of a multirun starts its own run instead of reusing this one."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
