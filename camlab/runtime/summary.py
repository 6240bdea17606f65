"""The end-of-run summary of ``camlab-train``: where the run's outputs are and its headline numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

HEADLINE_METRICS = ("val/acc", "val/loc/gt_known_loc", "val/loc/top1_loc", "val/loc/MaxBoxAccV2", "val/loc/PxAP",
                    "test/acc", "test/loc/gt_known_loc", "test/loc/MaxBoxAccV2", "test/loc/PxAP")


def logger_dirs(trainer: Any) -> list[str]:
    """One summary line per logger that writes files: its kind and where."""
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
    lines += logger_dirs(trainer)
    for cams in (out / "cams" / "overlay_latest.jpg", out / "cams" / "overlay_latest.png"):
        if cams.exists():
            lines.append(f"CAM overlays      {cams}")
            break
    shown = [f"{k}={metrics[k]:.4g}" for k in HEADLINE_METRICS if k in metrics]
    if shown:
        lines.append("metrics           " + "  ".join(shown))
    print("\n".join(["", "camlab: run finished", *("  " + line for line in lines)]), flush=True)
