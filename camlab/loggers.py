"""Loggers that survive a resumed run: a CSV logger that appends to the run dir's metrics.csv.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when its directory is reused, so a run resumed
in its own run dir (``ckpt_path=last``, a requeued SLURM job) would silently lose every row logged before the
interruption. ``CSVLogger`` here keeps them and appends; rows logged between the last checkpoint and the
interruption stay too (the resumed run logs those steps again after them). Where the file is rewritten (a new
metric widens the header) the new file replaces the old one atomically: a full disk never loses the old rows.
"""

from __future__ import annotations

import csv
import io

from lightning.pytorch.loggers import CSVLogger as _LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_warn

from camlab.atomic import write_text


class AppendingExperimentWriter(ExperimentWriter):
    """``ExperimentWriter`` that continues an existing ``metrics.csv`` instead of deleting it.

    >>> import tempfile, pathlib
    >>> d = tempfile.mkdtemp()
    >>> w = AppendingExperimentWriter(d); w.log_metrics({"a": 1.0}, step=0); w.save()
    >>> w = AppendingExperimentWriter(d); w.log_metrics({"b": 2.0}, step=1); w.save()
    >>> print(pathlib.Path(d, "metrics.csv").read_text().replace("\\r", ""), end="")
    a,b,step
    1.0,,0
    ,2.0,1
    """

    def _check_log_dir_exists(self) -> None:
        # Lightning deletes metrics.csv here; instead adopt its header, so new rows are appended under it
        # (a new metric name rewrites the file with the wider header, old rows included).
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            text = file.read()
        if text and not text.endswith("\n"):
            # a run killed mid-write leaves half a row: drop it (said in the log), or the next row joins it
            cut = text.rfind("\n") + 1
            rank_zero_warn(f"{self.metrics_file_path}: dropped an incomplete last line {text[cut:][:80]!r}")
            text = text[:cut]
            self._write_whole(text)
        self.metrics_keys = next(csv.reader(text.splitlines()), [])

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        # Lightning rewrites the file in place when a new metric appears: a full disk there would lose every row
        # logged before. The new file is written beside it and renamed over it (camlab.atomic).
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            rows = list(csv.DictReader(file))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
        self._write_whole(buffer.getvalue())

    def _write_whole(self, text: str) -> None:
        if "://" in str(self.metrics_file_path):  # a remote filesystem (fsspec): no rename there
            with self._fs.open(self.metrics_file_path, "w", newline="") as file:
                file.write(text)
            return
        write_text(self.metrics_file_path, text, newline="")


class CSVLogger(_LightningCSVLogger):
    """Lightning's ``CSVLogger`` (same arguments) whose ``metrics.csv`` is appended to, never deleted."""

    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingExperimentWriter:
        if self._experiment is not None:
            return self._experiment
        self._fs.makedirs(self.root_dir, exist_ok=True)
        self._experiment = AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
