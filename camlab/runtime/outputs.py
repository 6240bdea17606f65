"""The run dir must be writable before Hydra creates it: a read-only or full disk is one line, not a traceback.

Hydra makes the run (or sweep) dir and writes ``.hydra/`` before any camlab code runs, so the check is a Hydra
callback (``conf/hydra/default.yaml``), called at the start of a run or a sweep.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback


def check_writable_dir(path: str | os.PathLike, key: str) -> str | None:
    """None if ``path`` is (or can be created as) a folder a file can be written in; else the one-line reason.

    >>> import tempfile; d = Path(tempfile.mkdtemp())
    >>> check_writable_dir(d / "run", "hydra.run.dir") is None
    True
    >>> _ = (d / "file").write_text("x")
    >>> print(check_writable_dir(d / "file" / "run", "hydra.run.dir"))  # doctest: +ELLIPSIS
    cannot create the run dir .../file/run (hydra.run.dir): Not a directory; a file is in the way ...
    """
    from camlab.resume import write_advice

    path = Path(path)
    probe = path / f".camlab-write-test-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        if path.is_dir():
            probe.unlink(missing_ok=True)
        advice = write_advice(err).replace("hydra.run.dir", key)
        return f"cannot create the run dir {path} ({key}): {err.strerror or err}; {advice}"
    return None


class CheckOutputDir(Callback):
    """Before a run or a sweep: its output dir can be created and written, else one line and exit code 1."""

    def _check(self, config: Any, key: str) -> None:
        from omegaconf import OmegaConf

        try:
            path = OmegaConf.select(config, key)
        except Exception:  # noqa: BLE001 - an interpolation Hydra itself will report
            return
        if path is None:
            return
        reason = check_writable_dir(str(path), key)
        if reason is not None:
            print(f"camlab: error: {reason}", file=sys.stderr, flush=True)
            raise SystemExit(1)

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        self._check(config, "hydra.run.dir")

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        self._check(config, "hydra.sweep.dir")
