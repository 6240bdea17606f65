"""How every Hydra entry point runs: ``run_app`` around its body, ``describe_error`` for bad input.

Bad input ends the process with one ``camlab: error: ...`` line, no traceback; the line names the config keys
to set (library messages speak in argument names: :class:`camlab.errors.ConfigError` ``settings``, or the
node Hydra was instantiating).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Iterable

from omegaconf import DictConfig

from camlab.errors import ConfigError, RunInterrupted, TrainingDiverged
from camlab.runtime.config import config_keys
from camlab.runtime.ddp import cleanup_distributed, install_ddp_child_command
from camlab.runtime.process import quiet_duplicate_lightning_logs
from camlab.runtime.trackers import finish_experiment_trackers

# Errors whose message is meant for the user: shown as one line, without a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, KeyError, TypeError)
CAMLAB_ROOT = Path(__file__).resolve().parents[1]  # the camlab package
_ARGUMENT = re.compile(r"\b([a-z_][a-z0-9_]*)=")  # `skip_corrupt=True` in a message
# OSErrors about the disk or the permissions of a path, not camlab bugs: one line naming the path.
DISK_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, getattr(errno, "EDQUOT", errno.ENOSPC)}
log = logging.getLogger("camlab")


def run_app(module: str, fn: Any, cfg: DictConfig, failed_trial: Any = None) -> Any:
    """Run an entry point's body ``fn(cfg)`` as every camlab console script does; return its result.

    DDP child processes re-run ``python -m <module>``; bad input (:class:`ConfigError`, or a library error
    :func:`describe_error` recognises) ends the process with one ``camlab: error: ...`` line and no traceback
    (``HYDRA_FULL_ERROR=1`` shows the traceback) and exit code 1; a run stopped by SIGTERM
    (:class:`~camlab.errors.RunInterrupted`, or Lightning's ``SIGTERMException`` outside training) exits with 143,
    one stopped by Ctrl-C (SIGINT) with 130, each with one line. A diverged run
    (:class:`~camlab.errors.TrainingDiverged`) that is one job of a sweep (``-m``, Optuna) logs its line and
    returns ``failed_trial`` when given (the caller's objective is then NaN: Optuna records a failed trial, the
    sweep goes on). W&B runs are finished and the process group destroyed however ``fn`` ends.
    """
    quiet_duplicate_lightning_logs()
    install_ddp_child_command(module)
    try:
        return fn(cfg)
    except RunInterrupted as err:
        print(f"camlab: error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(err.exit_code) from None
    except (KeyboardInterrupt, SystemExit) as err:
        stopped = _stopped_by_signal(err)
        if stopped is None:
            raise
        name, code = stopped
        print(f"camlab: error: stopped by {name} before the end; the files written before are kept whole (a file "
              f"being written is not left half-written): run it again to finish", file=sys.stderr, flush=True)
        raise SystemExit(code) from None
    except Exception as err:  # noqa: BLE001
        message = describe_error(err, cfg)
        if message is None and os.environ.get("HYDRA_FULL_ERROR") != "1" and peer_failed(err):
            # the process that failed first printed its own line: this one only follows it (no gloo traceback)
            print(f"camlab: error: another process of this DDP run stopped, so this one (rank "
                  f"{os.environ.get('RANK', '?')}) stopped too; the first 'camlab: error' line above says why "
                  f"({_first_line(err)})", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        if message is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        if failed_trial is not None and isinstance(err, TrainingDiverged) and _in_sweep():
            log.error("camlab: error: %s [this sweep job is recorded as failed; the sweep goes on]", message)
            return failed_trial
        raise SystemExit(f"camlab: error: {message}") from None
    finally:
        finish_experiment_trackers()
        cleanup_distributed()


def _stopped_by_signal(err: BaseException) -> tuple[str, int] | None:
    """(signal, exit code) when ``err`` ends a process stopped by SIGTERM or Ctrl-C, else None: Lightning's
    ``SIGTERMException`` (a SystemExit without a code, i.e. exit 0), its ``sys.exit(1)`` after a KeyboardInterrupt,
    or a KeyboardInterrupt raised outside the trainer."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    if isinstance(err, SIGTERMException):
        return "SIGTERM", 143
    if isinstance(err, KeyboardInterrupt) or isinstance(err.__context__, KeyboardInterrupt):
        return "SIGINT (Ctrl-C)", 130
    return None


# what gloo / NCCL raise in a collective whose peer process has gone
_PEER_GONE = re.compile(r"connection closed by peer|connection reset by peer|broken pipe|socket timeout|"
                        r"communicator was aborted|gloo.*(closed|reset|timeout)", re.I)


def peer_failed(err: BaseException) -> bool:
    """Whether ``err`` is a collective failing because another process of the process group has gone."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return False
    text = f"{type(err).__name__}: {err}"
    return isinstance(err, (RuntimeError, OSError, ConnectionError)) and bool(_PEER_GONE.search(text))


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0][:200] if lines else ''}"


def describe_error(err: BaseException, cfg: DictConfig | None = None) -> str | None:
    """A one-line description of a user-fixable error, else None (the caller shows the traceback).

    User-fixable: :class:`ConfigError` (and :class:`~camlab.errors.DataError`); a ``ValueError`` /
    ``TypeError`` / ``KeyError`` / ``FileNotFoundError`` raised while Hydra instantiated a config node; a
    ``ValueError`` raised by camlab's own checks (innermost frame in camlab); a DataLoader worker's re-raised
    error of those kinds; a few library errors about the user's setup (a ``???`` config value, Lightning's
    ``MisconfigurationException``, W&B login/network errors).

    The config keys to set are appended: those of the error's ``settings`` found in ``cfg`` (see
    :func:`camlab.runtime.config.config_keys`), else the node Hydra was instantiating.
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
    if (isinstance(root, ConfigError) or (root is not err and isinstance(root, USER_ERRORS))
            or (type(root) is ValueError and _raised_in_camlab(root))):
        text = str(root.args[0]) if isinstance(root, KeyError) and root.args else str(root)
        message = _unwrap_worker_message(root, text) + _type_hint(root, key)
        settings = getattr(root, "settings", ())
        if not settings and message != text:  # re-raised from a worker: the error's own attributes are lost
            settings = _ARGUMENT.findall(message)
        return f"{message}{_where(cfg, settings, key)}"
    if isinstance(root, FileNotFoundError):
        return str(root)
    if isinstance(root, OSError) and root.errno in DISK_ERRNOS:
        return _disk_error(root, cfg)
    if root is not err and isinstance(root, ImportError) and not (root.name or "").startswith("camlab"):
        # a setting that needs an optional package (trainer.accelerator=tpu needs torch_xla, logger=wandb wandb)
        first = " ".join(str(root).split()) or type(root).__name__
        return f"{first} (a package this setting needs is not installed: install it, or choose another value)" \
               f"{_where(cfg, (), key)}"
    library = _library_user_error(root)
    return None if library is None else f"{library}{_where(cfg, (), key)}"


_WRONG_TYPE = re.compile(r"not supported between instances of '(str|NoneType)'|"
                         r"instances of '\w+' and '(str|NoneType)'|must be real number, not (str|NoneType)")


def _type_hint(err: BaseException, node: str | None) -> str:
    """What a bare TypeError of a library means for the config that made it (it names no key of its own)."""
    if not isinstance(err, TypeError):
        return ""
    where = f" under '{node}'" if node else ""
    text = str(err)
    if _WRONG_TYPE.search(text):
        return f": a value{where} is text or null where a number is expected"
    if "expected str, bytes or os.PathLike object, not NoneType" in text:
        return f": a path{where} is null; give a path"
    return ""


def _in_sweep() -> bool:
    """Whether this process runs one job of a Hydra multirun (a DDP child re-runs its job as a plain run)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # noqa: BLE001 - no Hydra app (a notebook, a test): not a sweep
        return False


def _disk_error(err: OSError, cfg: DictConfig | None) -> str:
    """A full or read-only disk, or a path without permission: the path, the cause and what to do."""
    from camlab.resume import write_advice

    try:
        path = str(err.filename or (cfg.get("paths", {}).get("output_dir") if cfg is not None else None)
                   or "an output file")
    except Exception:  # noqa: BLE001 - an unresolvable interpolation: the error matters more
        path = "an output file"
    verb = "reading or writing" if err.errno in (errno.EACCES, errno.EPERM) else "writing"
    return f"{err.strerror or err} while {verb} {path}: {write_advice(err)}"


def _where(cfg: DictConfig | None, settings: Iterable[str], node: str | None) -> str:
    """`` (config key 'data.skip_corrupt')``: the keys of ``settings`` in ``cfg``, else Hydra's ``node``."""
    keys: list[str] = []
    if cfg is not None and settings:
        try:
            keys = config_keys(cfg, settings, scope=node)
        except Exception:  # noqa: BLE001 - the error being reported matters more than its config keys
            keys = []
    keys = keys or ([node] if node else [])
    if not keys:
        return ""
    return f" (config key{'s' if len(keys) > 1 else ''} {', '.join(repr(k) for k in keys)})"


def _raised_in_camlab(err: BaseException) -> bool:
    """Whether the innermost Python frame of ``err``'s traceback is camlab's own code (a deliberate check)."""
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(CAMLAB_ROOT)


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
