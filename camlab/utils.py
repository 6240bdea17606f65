"""Glue between Hydra configs and Lightning objects: instantiation, errors, DDP child commands, summaries."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

log = logging.getLogger("camlab")

# Errors whose message is meant for the user: shown as one line, without a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, KeyError, TypeError)
DDP_ENV_VARS = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GLOBAL_RANK", "RANK")


class ConfigError(ValueError):
    """A configuration or input problem the user can fix; reported as one line."""


def instantiate_group(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` node of a config group (callbacks, loggers) into a list."""
    from hydra.utils import instantiate

    if not cfg:
        return []
    objects = []
    for key, node in cfg.items():
        if isinstance(node, DictConfig) and "_target_" in node:
            objects.append(instantiate(node, _convert_="partial"))
        elif node is not None and not isinstance(node, DictConfig):
            raise ConfigError(f"config key '{key}' must be a node with a _target_, got {node!r}")
    return objects


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc <malloc.h> mallopt parameters
MALLOC_ENV = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")


def tune_malloc(mmap_threshold: int = 32 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Keep freed C-heap memory in the process for reuse (glibc only); True if applied.

    A training step allocates and frees the same tensors every step. With glibc's defaults the heap top
    beyond ``2 x`` the largest recently freed block goes back to the OS when it is freed, and every page of
    it is faulted in again (and zeroed by the kernel) at the next step's allocations. Measured with the
    default experiment (2 CPU threads): 4,000-16,000 page faults per step, 10-30 ms of a ~65 ms step,
    varying from run to run with the heap's layout (benchmarks/TRAIN_NOTES.md). Here blocks up to
    ``mmap_threshold`` (glibc's maximum, 32 MiB) come from the heap and up to ``trim_threshold`` of free
    heap top is kept: the pages stay mapped from step to step. Larger blocks are still mapped per
    allocation. Peak memory is unchanged (each step reaches it again); the process keeps it between steps.

    A no-op (False) on other C libraries, and when the environment already sets glibc's malloc knobs
    (``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_THRESHOLD_``, ``GLIBC_TUNABLES``): those win.

    >>> faults = heap_refault_demo()  # (glibc defaults, tuned): page faults of the same alloc/free loop
    >>> faults is None or faults[1] * 10 < faults[0]
    True
    """
    if any(var in os.environ for var in MALLOC_ENV):
        return False
    libc = _glibc()
    if libc is None:
        return False
    # Setting either knob freezes glibc's dynamic thresholds: the mmap threshold must be raised too, or
    # every block over 128 KiB would be mapped and unmapped per allocation.
    return bool(libc.mallopt(M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
                and libc.mallopt(M_TRIM_THRESHOLD, int(trim_threshold)) == 1)


def configure_process(cfg: DictConfig) -> None:
    """Process-wide settings of a run (``camlab-train``; ``benchmarks/bench_train.py`` applies the same)."""
    import torch

    if cfg.get("tune_malloc", True) and tune_malloc():
        log.debug("glibc malloc: freed memory kept for reuse (tune_malloc)")
    if cfg.trainer.get("accelerator") == "cpu":
        torch.set_float32_matmul_precision("high")
    quiet_lightning_tips()


class _NoTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


def quiet_lightning_tips() -> None:
    """Drop Lightning's advertising tips (``💡 Tip: ... try installing litlogger``) from every run's log.

    Example:
        >>> import logging
        >>> quiet_lightning_tips(); quiet_lightning_tips()  # idempotent
        >>> lg = logging.getLogger("lightning.pytorch.utilities.rank_zero")
        >>> [f.filter(logging.makeLogRecord({"msg": m})) for f in lg.filters for m in ("💡 Tip: x", "GPU available")]
        [False, True]
    """
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _NoTips) for f in logger.filters):
        logger.addFilter(_NoTips())


def _glibc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        libc = ctypes.CDLL(None)  # the C library this process already uses
        libc.gnu_get_libc_version  # noqa: B018 - present in glibc only (not musl)
        return libc
    except (OSError, AttributeError):
        return None


def heap_refault_demo(rounds: int = 4) -> tuple[int, int] | None:
    """Page faults of a step-like malloc/free loop in a fresh process, with glibc's defaults and tuned.

    Each round allocates, touches and frees three 8 MiB blocks (as a training step does its activations);
    faults are counted after a first round. None where the C library is not glibc.
    """
    if _glibc() is None:
        return None
    import subprocess

    code = (
        "import ctypes, resource, sys\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "from camlab.utils import tune_malloc\n"
        "libc = ctypes.CDLL(None); libc.malloc.restype = ctypes.c_void_p; libc.free.argtypes = [ctypes.c_void_p]\n"
        "if sys.argv[1] == 'tuned': assert tune_malloc()\n"
        "n = 8 << 20\n"
        "libc.free(libc.malloc(n))  # glibc raises its mmap threshold to 8 MiB here\n"
        "def step():\n"
        "    blocks = [libc.malloc(n) for _ in range(3)]\n"
        "    for b in blocks: ctypes.memset(b, 1, n)\n"
        "    for b in blocks: libc.free(b)\n"
        "step()  # the first step maps its pages either way\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        f"for _ in range({int(rounds)}): step()\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in MALLOC_ENV}
    root = str(Path(__file__).resolve().parents[1])
    faults = []
    for mode in ("default", "tuned"):
        out = subprocess.run([sys.executable, "-c", code, mode, root], env=env, capture_output=True, text=True,
                             check=True)
        faults.append(int(out.stdout.strip()))
    return faults[0], faults[1]


def _raised_in_camlab(err: BaseException) -> bool:
    """Whether the innermost Python frame of ``err``'s traceback is camlab's own code (a deliberate check)."""
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(Path(__file__).resolve().parent)


def _unwrap_worker_message(err: BaseException, text: str) -> str:
    """A DataLoader worker's error re-raised in the main process carries the worker's whole traceback in its
    message ("Caught DataError in DataLoader worker process 0. Original Traceback ..."); keep its last part."""
    if not (text.startswith("Caught ") and "Original Traceback" in text):
        return text
    lines = text.splitlines()
    cls = type(err)
    prefixes = (f"{cls.__module__}.{cls.__qualname__}: ", f"{cls.__qualname__}: ")
    for i in range(len(lines) - 1, -1, -1):
        for prefix in prefixes:
            if lines[i].startswith(prefix):
                return "\n".join([lines[i][len(prefix):], *lines[i + 1:]]).strip()
    return lines[-1].strip()


def _library_user_error(err: BaseException) -> str | None:
    """Errors of libraries (not camlab) that are about the user's setup, with what to do."""
    cls, text = type(err), str(err).strip()
    module = cls.__module__ or ""
    if cls.__name__ == "MissingMandatoryValue" and module.startswith("omegaconf"):
        key = text.rsplit("full_key:", 1)[1].split()[0] if "full_key:" in text else "?"
        return f"config key '{key}' has no value (??? in the config): set it on the command line, e.g. {key}=..."
    if cls.__name__ == "MisconfigurationException":
        first = " ".join(line.strip() for line in text.splitlines() if line.strip())
        if "could not find the monitored key" in first:
            first = first.split(" HINT:")[0] + " Set optimized_metric (the checkpoint's monitor) to one of them."
        if "gpu" in first.lower() and ("no supported" in first.lower() or "not available" in first.lower()):
            first += " (this machine has no usable GPU: run on the CPU with trainer=cpu)"
        return first
    if module.startswith("wandb"):
        first = (text.splitlines()[0] if text else cls.__name__).rstrip(". ")
        return (f"Weights & Biases: {first}. Log in (`wandb login` or WANDB_API_KEY), or run without the "
                f"network: WANDB_MODE=offline (sync later with `wandb sync`) or logger=csv")
    return None


def describe_error(err: BaseException) -> str | None:
    """A one-line description of a user-fixable error, else None (the caller shows the traceback).

    User-fixable: :class:`ConfigError` (and :class:`~camlab.data.records.DataError`); a ``ValueError`` /
    ``TypeError`` / ``KeyError`` / ``FileNotFoundError`` raised while Hydra instantiated a config node (the key
    is named); a ``ValueError`` raised by camlab's own checks (innermost frame in camlab); a DataLoader worker's
    re-raised error of those kinds; a few library errors about the user's setup (a ``???`` config value,
    Lightning's ``MisconfigurationException``, W&B login/network errors).
    """
    from hydra.errors import InstantiationException

    key = None
    root: BaseException = err
    while isinstance(root, InstantiationException):
        msg = str(root)
        if "full_key:" in msg and key is None:
            key = msg.rsplit("full_key:", 1)[1].strip().splitlines()[0]
        if root.__cause__ is None:
            # Hydra's own problem (e.g. a _target_ that cannot be imported): its message is already readable.
            first = msg.strip().splitlines()
            return " ".join(line.strip() for line in first if line.strip())
        root = root.__cause__
    where = f" (config key '{key}')" if key else ""
    if (isinstance(root, ConfigError) or (root is not err and isinstance(root, USER_ERRORS))
            or (type(root) is ValueError and _raised_in_camlab(root))):
        text = str(root.args[0]) if isinstance(root, KeyError) and root.args else str(root)
        return f"{_unwrap_worker_message(root, text)}{where}"
    if isinstance(root, FileNotFoundError):
        return str(root)
    library = _library_user_error(root)
    return None if library is None else f"{library}{where}"


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """``ckpt_path``: null -> None; "last" -> <checkpoint_dir>/last.ckpt (must exist); else an existing file."""
    value = cfg.get("ckpt_path")
    if not value:
        return None
    if value == "last":
        path = Path(cfg.paths.checkpoint_dir) / "last.ckpt"
        if not path.is_file():
            raise ConfigError(
                f"ckpt_path=last but {path} does not exist; reuse the run dir of the run to resume "
                f"(hydra.run.dir=<that dir>) or pass ckpt_path=<file.ckpt>"
            )
        return str(path)
    if not Path(value).is_file():
        raise ConfigError(f"ckpt_path '{value}' is not a file")
    return str(value)


def install_ddp_child_command(module: str) -> None:
    """Make Lightning's DDP re-launch run THIS job's overrides as a plain run in THIS job's output dir.

    Stock Lightning re-runs ``sys.argv``: under ``-m`` every child would run the whole sweep again into a
    second sweep dir (and with the Optuna sweeper ranks would train different hyperparameters). The child
    gets the job's concrete overrides (``HydraConfig.overrides.task``) and ``hydra.run.dir`` = the job's dir.
    """
    from lightning.fabric.strategies.launchers import subprocess_script as fabric_launcher
    from lightning.pytorch.strategies.launchers import subprocess_script as pytorch_launcher

    def _child_command(local_rank: int) -> tuple[list[str], str]:
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

    # Both modules hold a reference (the pytorch one imports the fabric function by name).
    fabric_launcher._hydra_subprocess_cmd = _child_command
    pytorch_launcher._hydra_subprocess_cmd = _child_command


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
                node.id = _stored_wandb_run_id(Path(node.save_dir) / "wandb", write=rank_zero_only.rank == 0)
                node.resume = "allow"


def _stored_wandb_run_id(wandb_dir: Path, write: bool) -> str:
    import uuid

    id_file = wandb_dir / "camlab_run_id"
    if id_file.is_file() and id_file.read_text().strip():
        return id_file.read_text().strip()
    run_id = uuid.uuid4().hex[:8]
    if write:
        wandb_dir.mkdir(parents=True, exist_ok=True)
        id_file.write_text(run_id + "\n")
    return run_id


def finish_experiment_trackers() -> None:
    """End the job's W&B run, so the next job of a multirun starts its own run instead of reusing this one."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


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


def run_app(module: str, fn: Any, cfg: DictConfig) -> Any:
    """Run an entry point's body ``fn(cfg)`` as every camlab console script does; return its result.

    DDP child processes re-run ``python -m <module>``; bad input (:class:`ConfigError`, or a library error
    :func:`describe_error` recognises) ends the process with one ``camlab: error: ...`` line and no traceback
    (``HYDRA_FULL_ERROR=1`` shows the traceback);
    W&B runs are finished and the process group destroyed however ``fn`` ends.
    """
    quiet_duplicate_lightning_logs()
    install_ddp_child_command(module)
    try:
        return fn(cfg)
    except Exception as err:  # noqa: BLE001
        message = describe_error(err)
        if message is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        raise SystemExit(f"camlab: error: {message}") from None
    finally:
        finish_experiment_trackers()
        cleanup_distributed()


def quiet_duplicate_lightning_logs() -> None:
    """Lightning installs its own console handler at import; under Hydra's logging every line then shows twice."""
    import lightning.pytorch  # noqa: F401  (import first, so its handler exists and can be removed)

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "torchmetrics"):
        lg = logging.getLogger(name)
        for handler in list(lg.handlers):
            if type(handler) is logging.StreamHandler:
                lg.removeHandler(handler)
        lg.propagate = True


def _logger_dirs(trainer: Any) -> list[str]:
    dirs = []
    for lg in trainer.loggers:
        name = type(lg).__name__
        path = getattr(lg, "log_dir", None) or getattr(lg, "save_dir", None)
        if name == "CSVLogger" and path:
            dirs.append(f"metrics (CSV)     {Path(path) / 'metrics.csv'}")
        elif path:
            dirs.append(f"{name:<17} {path}")
    return dirs


def print_run_summary(cfg: DictConfig, trainer: Any, metrics: dict[str, float]) -> None:
    """Print where the run's outputs are and its headline numbers (rank 0 only)."""
    if not trainer.is_global_zero:
        return
    out = Path(cfg.paths.output_dir)
    lines = [f"run dir           {out}"]
    ckpt = trainer.checkpoint_callback
    if ckpt is not None:
        if getattr(ckpt, "best_model_path", ""):
            lines.append(f"best checkpoint   {ckpt.best_model_path}")
        last = Path(cfg.paths.checkpoint_dir) / "last.ckpt"
        if last.exists():
            lines.append(f"last checkpoint   {last}")
    lines += _logger_dirs(trainer)
    for cams in (out / "cams" / "overlay_latest.jpg", out / "cams" / "overlay_latest.png"):
        if cams.exists():
            lines.append(f"CAM overlays      {cams}")
            break
    keys = ["val/acc", "val/loc/gt_known_loc", "val/loc/top1_loc", "val/loc/MaxBoxAccV2", "val/loc/PxAP",
            "test/acc", "test/loc/gt_known_loc", "test/loc/MaxBoxAccV2", "test/loc/PxAP"]
    shown = [f"{k}={metrics[k]:.4g}" for k in keys if k in metrics]
    if shown:
        lines.append("metrics           " + "  ".join(shown))
    print("\n".join(["", "camlab: run finished", *("  " + line for line in lines)]), flush=True)
