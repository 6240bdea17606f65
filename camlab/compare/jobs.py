"""Reading the jobs of a sweep for ``camlab-compare``: finding the job dirs, and per job its overrides, metrics,
parameter count, wall time and status (finished / failed / running)."""

from __future__ import annotations

import csv
import math
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from camlab.errors import CompareError

BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
LOG_TIME = re.compile(r"^\[(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}),(\d{3})\]")
# BatchNorm statistics are float tensors of the state_dict but not parameters (Lightning's "Total params").
NOT_PARAMS = ("running_mean", "running_var")


@dataclass
class Job:
    path: Path
    label: str
    overrides: dict[str, str] = field(default_factory=dict)
    series: dict[str, list[tuple[int | None, float]]] = field(default_factory=dict)  # metric -> [(epoch, value)]
    final: dict[str, float] = field(default_factory=dict)
    best: float | None = None
    best_epoch: int | None = None
    x_at_best: float | None = None  # val/acc at the best epoch (the plot's x)
    epochs: int | None = None
    params: int | None = None
    wall_s: float | None = None
    wall_source: str = ""
    status: str = "finished"
    note: str = ""
    config: dict = field(default_factory=dict)  # the job's .hydra/config.yaml ({} when unreadable)


# ----------------------------------------------------------------------------------------------- finding jobs


def _is_job_dir(path: Path) -> bool:
    return (path / ".hydra").is_dir() or (path / "csv" / "metrics.csv").is_file()


def _job_sort_key(path: Path) -> tuple[int, Any]:
    return (0, int(path.name)) if path.name.isdigit() else (1, path.name)


def find_jobs(paths: list[Path]) -> list[tuple[Path, Path | None]]:
    """(job dir, its sweep dir or None) for each path: a sweep dir gives its job dirs, a run/job dir itself."""
    found: list[tuple[Path, Path | None]] = []
    for path in paths:
        if not path.exists():
            raise CompareError(f"{path} does not exist (expected a multirun sweep dir such as "
                               f"outputs/<task>/multiruns/<timestamp>, or a run dir)")
        if not path.is_dir():
            raise CompareError(f"{path} is not a directory (expected a multirun sweep dir or a run dir)")
        if _is_job_dir(path):
            found.append((path, None))
            continue
        jobs = sorted((p for p in path.iterdir() if p.is_dir() and _is_job_dir(p)), key=_job_sort_key)
        if not jobs:
            sweeps = sorted(p for p in path.iterdir() if p.is_dir() and any(
                q.is_dir() and _is_job_dir(q) for q in p.iterdir()))
            hint = f"; it holds {len(sweeps)} sweep dirs, pass one of them (newest: {sweeps[-1]})" if sweeps else ""
            raise CompareError(f"{path} has no job dirs (expected sub-dirs 0/, 1/, ... each with .hydra/ or "
                               f"csv/metrics.csv, as written by camlab-train -m){hint}")
        found += [(job, path) for job in jobs]
    return found


# ----------------------------------------------------------------------------------------------- reading a job


def read_overrides(job_dir: Path) -> dict[str, str]:
    import yaml

    file = job_dir / ".hydra" / "overrides.yaml"
    if not file.is_file():
        return {}
    items = yaml.safe_load(file.read_text()) or []
    result = {}
    for item in items:
        item = str(item)
        if item.startswith("~"):
            result[item[1:].split("=", 1)[0]] = "<deleted>"
            continue
        key, _, value = item.partition("=")
        result[key.lstrip("+")] = value
    return result


def read_config(job_dir: Path) -> dict:
    import yaml

    file = job_dir / ".hydra" / "config.yaml"
    try:
        cfg = yaml.safe_load(file.read_text()) if file.is_file() else None
    except yaml.YAMLError:
        return {}
    return cfg if isinstance(cfg, dict) else {}


def read_metrics(file: Path) -> dict[str, list[tuple[int | None, float]]]:
    """Lightning CSVLogger's sparse table -> {metric: [(epoch, value), ...]} in file order (empty cells skipped)."""
    series: dict[str, list[tuple[int | None, float]]] = {}
    with file.open(newline="") as handle:
        for row in csv.DictReader(handle):
            epoch_text = row.get("epoch") or ""
            try:
                epoch = int(float(epoch_text)) if epoch_text else None
            except ValueError:
                epoch = None
            for key, text in row.items():
                if key in (None, "epoch", "step") or text in (None, ""):
                    continue
                try:
                    value = float(text)
                except ValueError:
                    continue
                series.setdefault(key, []).append((epoch, value))
    return series


def read_metrics_json(file: Path) -> dict[str, list[tuple[int | None, float]]]:
    """camlab-eval's ``metrics.json`` -> {metric: [(None, value)]}: the runs that log no CSV (``maps=``, ``baseline=``)."""
    import json

    metrics = json.loads(file.read_text()).get("metrics") or {}
    return {k: [(None, float(v))] for k, v in metrics.items() if isinstance(v, (int, float))}


def count_params(job_dir: Path) -> int | None:
    ckpt_dir = job_dir / "checkpoints"
    ckpt = ckpt_dir / "last.ckpt"
    if not ckpt.is_file():
        others = sorted(ckpt_dir.glob("*.ckpt")) if ckpt_dir.is_dir() else []
        if not others:
            return None
        ckpt = others[-1]
    import torch

    try:
        try:
            data = torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True)
        except RuntimeError:  # old (non-zip) format cannot be memory-mapped
            data = torch.load(ckpt, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - a truncated checkpoint of a killed job is a status, not a crash
        return None
    state = data.get("state_dict", data) if isinstance(data, dict) else {}
    return sum(t.numel() for k, t in state.items()
               if torch.is_tensor(t) and t.is_floating_point() and not k.endswith(NOT_PARAMS))


def _log_times(log: Path) -> tuple[float, float] | None:
    first = last = None
    with log.open(errors="replace") as handle:
        for line in handle:
            match = LOG_TIME.match(line)
            if match:
                stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").timestamp() + int(match.group(2)) / 1e3
                first = stamp if first is None else first
                last = stamp
    return (first, last) if first is not None else None


def _newest_mtime(job_dir: Path) -> float | None:
    newest = None
    for root, _, files in os.walk(job_dir):
        for name in files:
            try:
                mtime = os.stat(os.path.join(root, name)).st_mtime
            except OSError:
                continue
            newest = mtime if newest is None else max(newest, mtime)
    return newest


def wall_time(job_dir: Path) -> tuple[float | None, str, float | None]:
    """(seconds, source, newest file mtime). Start = first train.log timestamp; end = the newest file in the job
    dir when file times agree with the log (the log has no line after the test loop), else the last log line."""
    newest = _newest_mtime(job_dir)
    logs = [job_dir / "train.log"] if (job_dir / "train.log").is_file() else sorted(job_dir.glob("*.log"))
    stamps = _log_times(logs[0]) if logs else None
    cfg_file = job_dir / ".hydra" / "config.yaml"
    start_file = cfg_file.stat().st_mtime if cfg_file.is_file() else None
    if stamps:
        start, end = stamps
        if newest is not None and start_file is not None and abs(start_file - start) < 120:
            return max(end, newest) - start, "log+mtime", newest
        return end - start, "log", newest
    if start_file is not None and newest is not None:
        return newest - start_file, "mtime", newest
    return None, "", newest


def _expects(cfg: dict) -> tuple[bool, int | None]:
    """(test expected, epochs expected or None when unknown/not applicable)."""
    trainer = cfg.get("trainer") or {}
    if not cfg.get("train", True) or trainer.get("fast_dev_run"):
        return bool(cfg.get("test", False)), None
    max_epochs = trainer.get("max_epochs")
    return bool(cfg.get("test", False)), int(max_epochs) if isinstance(max_epochs, int) and max_epochs > 0 else None


def _is_eval_job(job_dir: Path, cfg: dict) -> bool:
    """A camlab-eval run dir (its config has ``split`` and ``eval``; it writes metrics.json at the end)."""
    return "eval" in cfg and "split" in cfg


def _unreadable_json(file: Path) -> str:
    """Why ``file`` is not a JSON object ("" when it is one)."""
    import json

    try:
        return "" if isinstance(json.loads(file.read_text()), dict) else "not a JSON object"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"{type(err).__name__}: {err}"


def acc_key(sort: str) -> str:
    """The classification accuracy of the sort metric's stage: ``test/acc`` for ``test/...``, else ``val/acc``."""
    return "test/acc" if sort.startswith("test/") else "val/acc"


def read_job(job_dir: Path, label: str, sort: str, ascending: bool, later_job_exists: bool,
             sequential: bool, running_window: float, now: float) -> Job:
    job = Job(path=job_dir, label=label)
    problems = []
    try:
        job.overrides = read_overrides(job_dir)
    except Exception as err:  # noqa: BLE001
        problems.append(f"unreadable overrides.yaml ({err})")
    cfg = job.config = read_config(job_dir)
    metrics_file = job_dir / "csv" / "metrics.csv"
    if not metrics_file.is_file() and _is_eval_job(job_dir, cfg) and (job_dir / "metrics.json").is_file():
        try:
            job.series = read_metrics_json(job_dir / "metrics.json")
        except (ValueError, OSError) as err:
            problems.append(f"unreadable metrics.json ({err})")
    elif metrics_file.is_file():
        try:
            job.series = read_metrics(metrics_file)
        except Exception as err:  # noqa: BLE001
            problems.append(f"unreadable csv/metrics.csv ({err})")
        else:
            if not job.series:  # a header only (killed before the first log) or an empty file
                problems.append("no metrics in csv/metrics.csv (no value logged)")
    else:
        problems.append("no csv/metrics.csv")
    for key, values in job.series.items():
        if key.startswith(("val/", "test/")):
            job.final[key] = values[-1][1]
    # Lightning logs test/ rows with epoch = the number of epochs fitted: count train/val rows only.
    epochs = [e for key, values in job.series.items() if not key.startswith("test/") for e, _ in values
              if e is not None]
    job.epochs = max(epochs) + 1 if epochs else None
    values = [(e, v) for e, v in job.series.get(sort, []) if not math.isnan(v)]
    if values:
        pick = min if ascending else max
        best_epoch, job.best = pick(values, key=lambda ev: ev[1])  # first occurrence wins ties
        job.best_epoch = best_epoch
        acc = acc_key(sort)
        at_epoch = [v for e, v in job.series.get(acc, []) if e == best_epoch]
        job.x_at_best = at_epoch[-1] if at_epoch else job.final.get(acc)
    job.params = count_params(job_dir)
    job.wall_s, job.wall_source, newest = wall_time(job_dir)

    if job.series and not problems and _is_eval_job(job_dir, cfg):
        split = str(cfg.get("split", "test"))
        if not (job_dir / "metrics.json").is_file():
            problems.append("no metrics.json (camlab-eval did not finish)")
        elif _unreadable_json(job_dir / "metrics.json"):  # an empty or cut file is no finished evaluation
            problems.append(f"unreadable metrics.json ({_unreadable_json(job_dir / 'metrics.json')})")
        elif not any(k.startswith(f"{split}/") for k in job.series):
            problems.append(f"no {split}/ metrics")
    elif job.series and not problems:
        test_expected, epochs_expected = _expects(cfg)
        has_val = any(k.startswith("val/") for k in job.series)
        has_test = any(k.startswith("test/") for k in job.series)
        if test_expected and not has_test:
            problems.append("no test/ metrics")
        elif not test_expected and not has_val:
            problems.append("no val/ metrics")
        elif not has_test and epochs_expected and (job.epochs or 0) < epochs_expected:
            problems.append(f"stopped after {job.epochs or 0} of {epochs_expected} epochs")
    if problems:
        job.note = "; ".join(problems)
        recent = newest is not None and now - newest < running_window
        if recent and not (sequential and later_job_exists):
            job.status = "running"
            job.note += f"; last write {now - newest:.0f} s ago"
            if job.wall_s is not None:  # running for (at least) this long
                job.wall_s += now - newest
                job.wall_source += " (so far)"
        else:
            job.status = "failed"
    return job


def _sequential(sweep: Path | None) -> bool:
    """True when the sweep used Hydra's basic launcher (jobs run one after the other)."""
    if sweep is None or not (sweep / "multirun.yaml").is_file():
        return False
    import yaml

    try:
        cfg = yaml.safe_load((sweep / "multirun.yaml").read_text()) or {}
        return cfg["hydra"]["launcher"]["_target_"] == BASIC_LAUNCHER
    except Exception:  # noqa: BLE001
        return False


def collect(paths: list[Path], sort: str, ascending: bool, running_window: float) -> list[Job]:
    found = find_jobs(paths)
    sweeps = {sweep for _, sweep in found}
    parents = {job.parent for job, _ in found}
    now = time.time()
    sequential = {sweep: _sequential(sweep) for sweep in sweeps}
    jobs = []
    for job_dir, sweep in found:
        label = job_dir.name if len(parents) == 1 else f"{job_dir.parent.name}/{job_dir.name}"
        later = sweep is not None and any(s == sweep and _job_sort_key(j) > _job_sort_key(job_dir)
                                          for j, s in found)
        jobs.append(read_job(job_dir, label, sort, ascending, later, sequential[sweep], running_window, now))
    return jobs
