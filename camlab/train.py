"""Training entry point: ``camlab-train [overrides]`` or ``python -m camlab.train [overrides]``.

Composes ``conf/train.yaml`` (shipped inside the package as ``camlab.conf``), instantiates data, model,
callbacks, loggers and trainer, fits, tests the best checkpoint, and returns the metric named by
``optimized_metric`` (for Hydra sweepers such as Optuna).
"""

from __future__ import annotations

import logging
import os

import hydra
from omegaconf import DictConfig, OmegaConf

from camlab.resume import last_checkpoint
from camlab.utils import (
    configure_process,
    configure_wandb,
    instantiate_group,
    print_run_summary,
    resolve_ckpt_path,
    run_app,
)

log = logging.getLogger("camlab.train")


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit (and test) the configured model; returns the final metrics as plain floats."""
    import lightning.pytorch as L
    from hydra.utils import instantiate

    from hydra.core.hydra_config import HydraConfig

    rank = int(os.environ.get("LOCAL_RANK", 0))
    log.info("rank %d overrides: %s", rank, " ".join(HydraConfig.get().overrides.task))
    seed = L.seed_everything(cfg.seed, workers=True)  # recorded: logged here and in every logger's hparams
    log.info("seed %d", seed)
    configure_process(cfg)  # glibc malloc tuning (tune_malloc), CPU matmul precision

    datamodule = instantiate(cfg.data, _convert_="partial")
    model = instantiate(cfg.model, _convert_="partial")
    if hasattr(model, "run_config"):  # saved in checkpoints (camlab-eval / camlab-predict rebuild from it)
        model.run_config = OmegaConf.to_container(cfg, resolve=True)
    callbacks = instantiate_group(cfg.get("callbacks"))
    configure_wandb(cfg)  # W&B name/group from the job, run id kept in the run dir (resume continues the run)
    loggers = instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    for lg in trainer.loggers:
        lg.log_hyperparams({**OmegaConf.to_container(cfg, resolve=True), "seed": seed})

    ckpt_path = resolve_ckpt_path(cfg)
    if ckpt_path is None and cfg.get("train", True):
        # A reused run dir (hydra.run.dir=<old run>, a requeued SLURM job) continues from its last checkpoint.
        ckpt_path = last_checkpoint(cfg.paths.checkpoint_dir)
        if ckpt_path:
            log.info("resuming from %s (this run dir already has a last checkpoint)", ckpt_path)
    if cfg.get("train", True):
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    else:
        if ckpt_path is None:
            log.warning("train=false and no ckpt_path: validating randomly initialised weights")
        trainer.validate(model, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}

    if cfg.get("test", False):
        best = getattr(trainer.checkpoint_callback, "best_model_path", "") if trainer.checkpoint_callback else ""
        test_ckpt = best if (cfg.get("train", True) and best) else ckpt_path
        trainer.test(model, datamodule=datamodule, ckpt_path=test_ckpt)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})

    print_run_summary(cfg, trainer, metrics)
    return metrics


@hydra.main(version_base="1.3", config_path="pkg://camlab.conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = run_app("camlab.train", train, cfg)  # one-line errors for bad input, trackers finished
    # The sweep objective (Optuna). A NaN (diverged run) is returned as NaN: Optuna records that trial as
    # failed and the search goes on.
    return metrics.get(cfg.get("optimized_metric")) if cfg.get("optimized_metric") else None


if __name__ == "__main__":
    main()
