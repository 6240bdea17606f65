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

from camlab.errors import ConfigError, RunInterrupted
from camlab.resume import FailureCheckpoint, last_checkpoint, use_atomic_checkpoints
from camlab.runtime.app import run_app
from camlab.runtime.config import check_flags, instantiate_group, resolve_ckpt_path
from camlab.runtime.process import configure_process
from camlab.runtime.summary import print_run_summary
from camlab.runtime.trackers import configure_wandb

log = logging.getLogger("camlab.train")


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit (and test) the configured model; returns the final metrics as plain floats."""
    import lightning.pytorch as L
    from hydra.utils import instantiate

    from hydra.core.hydra_config import HydraConfig

    rank = int(os.environ.get("LOCAL_RANK", 0))
    log.info("rank %d overrides: %s", rank, " ".join(HydraConfig.get().overrides.task))
    check_run_numbers(cfg)
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
    use_atomic_checkpoints(trainer)  # a failed save (full disk, a kill) leaves the previous checkpoint intact

    for lg in trainer.loggers:
        lg.log_hyperparams({**OmegaConf.to_container(cfg, resolve=True), "seed": seed})

    ckpt_path = resolve_ckpt_path(cfg)
    where = "ckpt_path"
    if ckpt_path is None and cfg.get("train", True):
        # A reused run dir (hydra.run.dir=<old run>, a requeued SLURM job) continues from its last checkpoint.
        ckpt_path = last_checkpoint(cfg.paths.checkpoint_dir)
        where = "this run dir's last checkpoint"
        if ckpt_path:
            log.info("resuming from %s (this run dir already has a last checkpoint)", ckpt_path)
    if ckpt_path:
        check_checkpoint_file(ckpt_path, where)
    if cfg.get("train", True) and cfg.trainer.get("max_epochs") == 0:
        log.warning("trainer.max_epochs=0: nothing is trained (the test, if any, runs on the initial weights)")
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    try:
        if cfg.get("train", True):
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        else:
            if ckpt_path is None:
                log.warning("train=false and no ckpt_path: validating randomly initialised weights")
            trainer.validate(model, datamodule=datamodule, ckpt_path=ckpt_path)
    except SIGTERMException:  # Lightning's: a SystemExit without a code, which would exit 0
        raise RunInterrupted(_interrupted_message(trainer)) from None
    except SystemExit as err:  # Lightning ends Ctrl-C with sys.exit(1), after the failure checkpoint is saved
        if not isinstance(err.__context__, KeyboardInterrupt):
            raise
        raise RunInterrupted(_interrupted_message(trainer, "SIGINT (Ctrl-C)"), exit_code=130) from None
    except RuntimeError as err:
        if not ckpt_path or "Error(s) in loading state_dict" not in str(err):
            raise
        first = " ".join(str(err).split())[:300]
        raise ConfigError(f"{where} '{ckpt_path}' does not fit the model composed now: run with the overrides of "
                          f"the run that wrote it (backbone, data.num_classes, model ...), or start a new run dir "
                          f"({first} ...)") from None
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}

    if cfg.get("test", False):
        best = getattr(trainer.checkpoint_callback, "best_model_path", "") if trainer.checkpoint_callback else ""
        test_ckpt = best if (cfg.get("train", True) and best) else ckpt_path
        trainer.test(model, datamodule=datamodule, ckpt_path=test_ckpt)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})

    print_run_summary(cfg, trainer, metrics)
    return metrics


def _interrupted_message(trainer, signal_name: str = "SIGTERM") -> str:
    """Where a run stopped by a signal left its state, and how to continue."""
    where = f"epoch {trainer.current_epoch}, step {trainer.global_step}"
    saved = next((cb.saved for cb in trainer.callbacks if isinstance(cb, FailureCheckpoint) and cb.saved), None)
    last = last_checkpoint(trainer.checkpoint_callback.dirpath) if trainer.checkpoint_callback else None
    if saved:
        keep = f"its state is saved in {saved}: continue with ckpt_path={saved}"
    elif last:
        keep = f"continue from its last epoch with ckpt_path={last} (or rerun in the same run dir)"
    else:
        keep = "no checkpoint was written yet"
    return f"stopped by {signal_name} at {where}; {keep}"


def check_run_numbers(cfg: DictConfig) -> None:
    """Values the run needs before anything is built: integers ``seed``, ``trainer.max_epochs``/``max_steps``;
    booleans ``train``, ``test``, ``tune_malloc``."""
    checks = [("seed", cfg.get("seed"))]
    trainer = cfg.get("trainer") or {}
    checks += [(f"trainer.{k}", trainer.get(k)) for k in ("max_epochs", "max_steps")]
    for key, value in checks:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        if key.startswith("trainer.") and value is not None and value < -1:
            raise ConfigError(f"{key} must be >= -1 (-1: no limit), got {value}")
    check_flags(cfg, ("train", "test", "tune_malloc"))


def check_checkpoint_file(path: str, where: str = "ckpt_path") -> None:
    """A checkpoint Lightning will restore must be a complete torch zip file: a truncated or foreign file is a
    one-line error naming it (cheap: reads the zip's central directory, not the tensors)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        raise ConfigError(f"{where} '{path}' is not a complete checkpoint (truncated, or not a torch .ckpt: {err}); "
                          f"pass another file, or delete it to start over") from None
    if not any(n.endswith("data.pkl") for n in names):
        raise ConfigError(f"{where} '{path}' is a zip file but not a torch checkpoint (no data.pkl)")


@hydra.main(version_base="1.3", config_path="pkg://camlab.conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    # One-line errors for bad input, trackers finished; a diverged job of a sweep gives {} (no metric).
    metrics = run_app("camlab.train", train, cfg, failed_trial={})
    # The sweep objective (Optuna). None (a diverged job) is recorded by hydra's Optuna sweeper as a failed
    # trial (hparams_search/optuna_loc.yaml sets max_failure_rate so that the search goes on). Not NaN: optuna
    # 2.10 rejects a NaN value twice, and the second rejection ends the sweep.
    return metrics.get(cfg.get("optimized_metric")) if cfg.get("optimized_metric") else None


if __name__ == "__main__":
    main()
