"""Resuming a killed run exactly: the checkpoint to continue from, and the random state Lightning does not save.

A Lightning checkpoint holds weights, optimizer, scheduler and loop counters, but not the global random number
generators. After a resume, ``seed_everything`` puts them back at the start of the run, so the epochs after the
checkpoint would see other augmentations (flips) than an uninterrupted run. ``RandomStateCheckpoint`` saves
every rank's global RNG states (torch, CUDA, numpy, Python) in the checkpoint and puts them back on restore.
(The training shuffle order is the datamodule's: ``WSOLDataModule.state_dict`` keeps its generator.)
"""

from __future__ import annotations

import errno
import logging
import random
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from camlab.atomic import atomic_write
from camlab.errors import OutputError, TrainingDiverged

log = logging.getLogger("camlab.resume")


def last_checkpoint(checkpoint_dir: str | Path) -> str | None:
    """``<checkpoint_dir>/last.ckpt`` if it exists (the run dir is being reused: continue that run), else None.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> last_checkpoint(d) is None
    True
    >>> _ = (d / "last.ckpt").write_bytes(b"x")
    >>> last_checkpoint(d) == str(d / "last.ckpt")
    True
    """
    path = Path(checkpoint_dir) / "last.ckpt"
    return str(path) if path.is_file() else None


def global_rng_state() -> dict[str, Any]:
    """This process's global RNG states, as tensors and plain values (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`global_rng_state`.

    >>> s = global_rng_state(); a = (torch.rand(2), np.random.rand(), random.random())
    >>> set_global_rng_state(s); b = (torch.rand(2), np.random.rand(), random.random())
    >>> bool(torch.equal(a[0], b[0])) and a[1:] == b[1:]
    True
    """
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RandomStateCheckpoint(L.Callback):
    """Save the global random state of every rank with each checkpoint; restore it when a run resumes.

    Under DDP every rank's state is gathered (checkpoints are dumped on all ranks, written by rank 0) and each
    rank gets its own back; a checkpoint from a different world size restores rank 0's state on every rank.
    Lightning restores callbacks before it builds the training loader and its first iterator, the same point
    in the random sequence as right after the save in an uninterrupted run.
    """

    def state_dict(self) -> dict[str, Any]:
        mine = global_rng_state()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            ranks: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(ranks, mine)
        else:
            ranks = [mine]
        return {"ranks": ranks}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        ranks = state_dict["ranks"]
        dist = torch.distributed.is_available() and torch.distributed.is_initialized()
        rank = torch.distributed.get_rank() if dist else 0
        set_global_rng_state(ranks[rank] if rank < len(ranks) else ranks[0])


class FailureCheckpoint(L.Callback):
    """When training stops on an error (bad data met mid-epoch, a wrong ``optimized_metric``, Ctrl-C), save the
    state reached to ``<dirpath>/on_exception.ckpt`` so the work is not lost: fix the cause, then continue with
    ``ckpt_path=<that file>``.

    Only single-process runs: saving gathers every rank's random state, and under DDP the other ranks may be
    stuck in a collective, so a save there could hang; DDP runs keep their ``last.ckpt`` of the last epoch.
    Nothing is saved before this process's first optimizer step (a resumed run that fails at once keeps the
    checkpoint it started from), or outside ``fit``.
    """

    def __init__(self, dirpath: str | Path, filename: str = "on_exception") -> None:
        super().__init__()
        self.path = Path(dirpath) / f"{filename}.ckpt"
        self._start_step: int | None = None  # the step training started from (after a restore)
        self.saved: Path | None = None  # the file written at the failure, if any

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start_step = trainer.global_step

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if trainer.state.fn != "fit" or self._start_step is None or trainer.global_step <= self._start_step:
            return  # nothing trained by this process: the checkpoint it started from (if any) holds it all
        if isinstance(exception, (TrainingDiverged, OutputError)):
            return  # diverged weights are not worth keeping; a full or read-only disk would refuse them anyway
        if trainer.world_size > 1:
            log.warning("the run failed under DDP: its state is not saved at the failure (a save there could "
                        "hang); resume from the last epoch's checkpoint")
            return
        try:
            trainer.save_checkpoint(self.path)
        except Exception as err:  # noqa: BLE001 - never hide the original error behind a failed save
            log.warning("the run failed and its state could not be saved to %s (%s)", self.path, err)
            return
        self.saved = self.path
        log.warning("the run failed after %d optimizer step(s); its state is saved in %s: once the cause is "
                    "fixed, continue with ckpt_path=%s", trainer.global_step, self.path, self.path)


def write_advice(err: OSError) -> str:
    """What to do about an output that could not be written, by its cause (full disk, read-only, no permission)."""
    if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return "free disk space there, or write the run elsewhere (hydra.run.dir=<dir on another disk>)"
    if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "make that folder writable, or write the run elsewhere (hydra.run.dir=<writable dir>)"
    if err.errno in (errno.ENOTDIR, errno.EEXIST):
        return "a file is in the way of that path: move it, or write the run elsewhere (hydra.run.dir=<dir>)"
    return "check that disk, or write the run elsewhere (hydra.run.dir=<dir>)"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file beside the target, flushed to disk, then renamed over it.

    A save that fails (full disk, read-only folder, a kill) leaves the previous file as it was and no partial
    or empty file: Lightning's own save stages the bytes in the system temp dir and copies them over the target
    when that is another filesystem, which a full disk interrupts half-way. A failed save is an
    :class:`~camlab.errors.OutputError` naming the file. Remote paths (``s3://`` ...) keep Lightning's save.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(path, "wb", fsync=True) as f:
                torch.save(checkpoint, f)
        except OSError as err:
            raise OutputError(f"cannot write checkpoint {path}: {err.strerror or err}; {write_advice(err)} "
                              f"(the checkpoints written before are intact)") from None


def use_atomic_checkpoints(trainer: L.Trainer) -> None:
    """Make ``trainer`` save through :class:`AtomicCheckpointIO` (unless a custom checkpoint plugin is set)."""
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
