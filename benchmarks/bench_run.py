"""What CAM + localization metrics add to the default run end to end (``camlab-train``: 10 epochs, test at the end).

Runs ``python -m camlab.train`` as a subprocess, alternating two variants in every round (order rotated):

* ``default``: the configuration as shipped (CAMLocalization on validation and test: MaxBoxAccV2, PxAP, top-k
  loc and GT-known loc every validation epoch, MaxBoxAcc on the test split, curves and overlays);
* ``no CAM``: the same run without the callback (``~callbacks.cam_localization``) and with the checkpoint
  monitoring ``val/acc`` instead of a localization metric.

Each process's wall time counts everything a user waits for (start-up, dataset rendering, training, validation,
test, writing). A small timing callback (written to the temporary directory, added with ``+callbacks.phase_timer``)
also reports the time inside the training, validation and test epochs, and how many OS threads the process has at
the start of the last training epoch. The figures are medians of the per-round ratios (the machine is shared:
compare within one run).

    python benchmarks/bench_run.py [--rounds 3] [overrides ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

TIMER = """
import os, sys, time
import lightning.pytorch as L

class PhaseTimer(L.Callback):
    def __init__(self):
        self.acc, self.start, self.threads = {"train": 0.0, "val": 0.0, "test": 0.0}, {}, 0

    def _begin(self, k):
        self.start[k] = time.perf_counter()

    def _end(self, k):
        self.acc[k] += time.perf_counter() - self.start[k]

    def on_train_epoch_start(self, *a):
        self.threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else -1
        self._begin("train")

    def on_train_epoch_end(self, *a): self._end("train")
    def on_validation_epoch_start(self, *a): self._begin("val")
    def on_validation_epoch_end(self, *a): self._end("val")
    def on_test_epoch_start(self, *a): self._begin("test")
    def on_test_epoch_end(self, *a): self._end("test")

    def teardown(self, trainer, pl_module, stage):
        print("PHASES", self.acc["train"], self.acc["val"], self.acc["test"], self.threads, file=sys.stderr, flush=True)
"""
VARIANTS = {"default": [], "no CAM": ["~callbacks.cam_localization", "optimized_metric=val/acc"]}


def run_once(extra: list[str], root: str) -> tuple[float, float, float, float, int]:
    """(wall, train, val, test seconds, threads at the last training epoch) of one ``camlab.train`` process."""
    env = dict(os.environ, CAMLAB_ROOT=root, WANDB_MODE="disabled",
               PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "camlab.train", "+callbacks.phase_timer._target_=bench_phase_timer."
                           "PhaseTimer", *extra], env=env, cwd=root, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"camlab.train {' '.join(extra)} failed:\n{proc.stderr[-3000:]}")
    phases = [line.split()[1:] for line in proc.stderr.splitlines() if line.startswith("PHASES")][-1]
    return (elapsed, *map(float, phases[:3]), int(phases[3]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("overrides", nargs="*", help="Hydra overrides applied to both variants")
    args = ap.parse_args()
    runs: dict[str, list[tuple]] = {k: [] for k in VARIANTS}
    with tempfile.TemporaryDirectory() as root:
        with open(os.path.join(root, "bench_phase_timer.py"), "w") as f:
            f.write(TIMER)
        for r in range(args.rounds):
            order = list(VARIANTS)[r % 2:] + list(VARIANTS)[: r % 2]
            for k in order:
                runs[k].append(run_once(VARIANTS[k] + args.overrides, root))
            print(f"round {r}: " + "; ".join(
                f"{k} {w:.1f} s (train {tr:.1f}, val {va:.1f}, test {te:.1f}; {th} threads)"
                for k, (w, tr, va, te, th) in ((k, runs[k][-1]) for k in VARIANTS))
                + f"  (order {'/'.join(order)}, load {os.getloadavg()[0]:.2f})", flush=True)
    print()
    for i, part in enumerate(("whole run", "training epochs", "validation epochs", "test epoch")):
        ratios = [a[i] / b[i] for a, b in zip(runs["default"], runs["no CAM"]) if b[i] > 0]
        if not ratios:
            continue
        print(f"{part:18s}: default {statistics.median(x[i] for x in runs['default']):6.1f} s, no CAM "
              f"{statistics.median(x[i] for x in runs['no CAM']):6.1f} s; CAM + metrics add "
              f"{100 * (statistics.median(ratios) - 1):+.1f}% (rounds {', '.join(f'{100 * (x - 1):+.1f}%' for x in ratios)})")


if __name__ == "__main__":
    main()
