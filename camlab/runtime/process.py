"""Process-wide settings of a run: glibc malloc tuning, CPU matmul precision, quieter Lightning logs."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("camlab")

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc <malloc.h> mallopt parameters
MALLOC_ENV = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")


def configure_process(cfg: Any) -> None:
    """Process-wide settings of a run (``camlab-train``, ``camlab-eval``; ``benchmarks/bench_train.py`` applies the
    same): ``tune_malloc`` (config key, default true), ``float32`` matmul precision "high" on the CPU, no
    Lightning tips."""
    import torch

    if cfg.get("tune_malloc", True) and tune_malloc():
        log.debug("glibc malloc: freed memory kept for reuse (tune_malloc)")
    if cfg.trainer.get("accelerator") == "cpu":
        torch.set_float32_matmul_precision("high")
    quiet_lightning_tips()


def tune_malloc(mmap_threshold: int = 32 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Keep freed C-heap memory in the process for reuse (glibc only); True if applied.

    A training step allocates and frees the same tensors every step. With glibc's defaults the heap top
    beyond ``2 x`` the largest recently freed block goes back to the OS when it is freed, and every page of
    it is faulted in again (and zeroed by the kernel) at the next step's allocations: thousands of page
    faults per step, a large and run-to-run varying part of a small model's step time on the CPU
    (benchmarks/TRAIN_NOTES.md). Here blocks up to ``mmap_threshold`` (glibc's maximum, 32 MiB) come from
    the heap and up to ``trim_threshold`` of free heap top is kept: the pages stay mapped from step to step.
    Larger blocks are still mapped per allocation. Peak memory is unchanged (each step reaches it again);
    the process keeps it between steps.

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


def _glibc() -> Any:
    """The C library of this process (``ctypes.CDLL``) if it is glibc, else None."""
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
        "from camlab.runtime.process import tune_malloc\n"
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
    root = str(Path(__file__).resolve().parents[2])  # the folder holding the camlab package
    faults = []
    for mode in ("default", "tuned"):
        out = subprocess.run([sys.executable, "-c", code, mode, root], env=env, capture_output=True, text=True,
                             check=True)
        faults.append(int(out.stdout.strip()))
    return faults[0], faults[1]


class _NoTips(logging.Filter):
    """Drops Lightning's advertising tips (records starting with ``💡 Tip:``)."""

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


def quiet_duplicate_lightning_logs() -> None:
    """Lightning installs its own console handler at import; under Hydra's logging every line then shows twice."""
    import lightning.pytorch  # noqa: F401  (import first, so its handler exists and can be removed)

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "torchmetrics"):
        lg = logging.getLogger(name)
        for handler in list(lg.handlers):
            if type(handler) is logging.StreamHandler:
                lg.removeHandler(handler)
        lg.propagate = True
