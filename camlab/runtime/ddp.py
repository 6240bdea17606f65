"""DDP under Hydra: the command Lightning's launcher runs for each child process, and the clean-up after a job."""

from __future__ import annotations

import os
import sys

DDP_ENV_VARS = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GLOBAL_RANK", "RANK")


def install_ddp_child_command(module: str) -> None:
    """Make Lightning's DDP re-launch run THIS job's overrides as a plain run in THIS job's output dir.

    Stock Lightning re-runs ``sys.argv``: under ``-m`` every child would run the whole sweep again into a
    second sweep dir (and with the Optuna sweeper ranks would train different hyperparameters). The child
    gets the job's concrete overrides (``HydraConfig.overrides.task``) and ``hydra.run.dir`` = the job's dir.
    """
    from lightning.fabric.strategies.launchers import subprocess_script as fabric_launcher
    from lightning.pytorch.strategies.launchers import subprocess_script as pytorch_launcher

    def child_command(local_rank: int) -> tuple[list[str], str]:
        from hydra.core.hydra_config import HydraConfig
        from hydra.utils import get_original_cwd

        hc = HydraConfig.get()
        out_dir = hc.runtime.output_dir
        command = [sys.executable, "-m", module, f"--config-name={hc.job.config_name}"]
        command += list(hc.overrides.task)
        command += [
            f'hydra.run.dir="{out_dir}"',
            f"hydra.job.name=train_ddp_process_{local_rank}",
            "hydra.output_subdir=null",
            "hydra.mode=RUN",  # hparams_search configs set MULTIRUN: a child must not start a sweep of its own
        ]
        return command, get_original_cwd()

    # Lightning's hook for Hydra jobs. Both modules hold a reference (the pytorch one imports the fabric
    # function by name), so both are replaced.
    fabric_launcher._hydra_subprocess_cmd = child_command
    pytorch_launcher._hydra_subprocess_cmd = child_command


def cleanup_distributed() -> None:
    """After a job: destroy the process group and forget the DDP env, so the next multirun job starts clean."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - best effort at teardown
        pass
    if os.environ.get("LOCAL_RANK", "0") == "0":
        for var in DDP_ENV_VARS:
            os.environ.pop(var, None)
