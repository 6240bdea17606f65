"""DDP through the real train app: 2 gloo CPU processes on an odd-sized validation set give exactly the
single-process localization metrics (DistributedSampler pads 41 samples to 42; camlab de-duplicates by index);
a multirun of DDP jobs; every WSOL training method under 2 processes."""

from __future__ import annotations

import csv
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from camlab.methods.base import step_seed
from test_train_app import TINY, only_dir, run


def last_val_row(run_dir: Path) -> dict[str, float]:
    rows = [r for r in csv.DictReader(open(run_dir / "csv" / "metrics.csv")) if r.get("val/loc/MaxBoxAccV2")]
    assert rows, f"no validation metrics in {run_dir}"
    return {k: float(v) for k, v in rows[-1].items() if k.startswith("val/loc/") and v != ""}


@pytest.mark.slow
def test_ddp_two_processes_equal_single_process_on_odd_val_set(tmp_path):
    # 1. a short single-process training run gives a checkpoint
    res = run(["debug=limit", "trainer.max_epochs=1", "test=false", "task_name=fit", *TINY], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    ckpt = only_dir(tmp_path / "outputs" / "fit" / "runs") / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()

    common = ["train=false", "test=false", f"ckpt_path={ckpt}", "data.num_val=41", "data.eval_batch_size=8",
              "callbacks.cam_localization.max_box_acc=[val]", *TINY[:1], *TINY[3:]]
    # 2. validation in one process
    res = run([*common, "task_name=single"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    single = last_val_row(only_dir(tmp_path / "outputs" / "single" / "runs"))
    # 3. the same validation in 2 DDP processes (gloo on CPU), launched by Lightning from the Hydra app
    res = run([*common, "task_name=ddp", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"],
              cwd=tmp_path, timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    ddp_dir = only_dir(tmp_path / "outputs" / "ddp" / "runs")
    ddp = last_val_row(ddp_dir)

    for key in ["val/loc/MaxBoxAccV2", "val/loc/MaxBoxAcc", "val/loc/PxAP", "val/loc/gt_known_loc",
                "val/loc/top1_loc"]:
        assert key in single, key
    assert ddp == single
    # both ranks ran inside this job's dir: rank 1's Hydra log is there, no second run dir was created
    assert (ddp_dir / "train_ddp_process_1.log").is_file()


@pytest.mark.slow
def test_multirun_times_ddp_runs_each_job_once_with_both_ranks_in_its_dir(tmp_path):
    args = ["-m", "model.optimizer.lr=0.001,0.003", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
            "debug=limit", "trainer.max_epochs=1", "test=false", "data.num_val=33", *TINY]
    res = run(args, cwd=tmp_path, timeout=500)
    assert res.returncode == 0, res.stderr[-3000:]
    sweep = only_dir(tmp_path / "outputs" / "train" / "multiruns")  # exactly one sweep dir
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [j.name for j in jobs] == ["0", "1"]
    for job, lr in zip(jobs, ["0.001", "0.003"]):
        rank0 = (job / "train.log").read_text()
        rank1 = (job / "train_ddp_process_1.log").read_text()
        for text, rank in ((rank0, 0), (rank1, 1)):
            line = next(ln for ln in text.splitlines() if f"rank {rank} overrides:" in ln)
            assert f"model.optimizer.lr={lr}" in line, line
        assert (job / "csv" / "metrics.csv").is_file()


WSOL_WORKER = Path(__file__).resolve().parent / "_ddp_wsol_worker.py"


@pytest.mark.slow
def test_every_wsol_method_trains_under_two_gloo_processes_with_per_rank_seeds(tmp_path):
    """Every method of the wsol group trains in one 2-process gloo group (the ranks of _ddp_wsol_worker.py, one
    start-up for all methods): finite losses, the same parameters on both ranks after training (gradients were
    all-reduced: every new head took part in the step), and HaS hid on each rank exactly the cells that rank's
    (seed, rank, epoch, batch) generator draws, differently on the two ranks."""
    methods = ["has", "cutmix", "adl", "acol", "spg"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    here = str(Path(__file__).resolve().parent)
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK")}
    env.update(WANDB_MODE="disabled", PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([here, env.get("PYTHONPATH", "")]))
    procs = [subprocess.Popen([sys.executable, str(WSOL_WORKER), str(r), str(port), str(tmp_path), *methods],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(2)]
    outs = [p.communicate(timeout=500) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-3000:] for _, err in outs]
    for method in methods:
        job = tmp_path / method
        rows = list(csv.DictReader(open(job / "csv" / "metrics.csv")))
        losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
        assert len(losses) == 2 and all(math.isfinite(v) for v in losses), (method, losses)
        assert any(r.get("val/loc/MaxBoxAccV2") for r in rows), method
        p0, p1 = (torch.load(job / f"params_rank{r}.pt", weights_only=True) for r in (0, 1))
        assert p0.keys() == p1.keys() and all(torch.equal(p0[k], p1[k]) for k in p0), method
        if method in ("acol", "spg"):
            assert any(k.startswith("wsol_method.") for k in p0), method  # its heads are trained under DDP too
    seen = {r: torch.load(tmp_path / "has" / f"seen_zeros_rank{r}.pt", weights_only=True) for r in (0, 1)}
    for rank, rows in seen.items():
        assert [(e, b) for e, b, _ in rows] == [(0, 0), (0, 1)]
        for epoch, index, zeros in rows:
            g = torch.Generator().manual_seed(step_seed(0, rank, epoch, index))
            cells = torch.rand((8, 8, 8), generator=g) < 0.5  # 32 px in cells of 4
            assert torch.equal(zeros, cells.repeat_interleave(4, 1).repeat_interleave(4, 2)), (rank, epoch, index)
    assert not torch.equal(seen[0][0][2], seen[1][0][2])
