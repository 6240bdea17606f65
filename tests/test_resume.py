"""Kill-and-resume: a run SIGKILLed mid-epoch and resumed from its last checkpoint ends exactly where an
uninterrupted run with the same seed ends (deterministic CPU), keeps its earlier CSV rows and its W&B run."""

from __future__ import annotations

import csv
import os
import signal
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch

from test_train_app import run
from test_wsol_methods import one_thread  # noqa: F401 - a fixture

HERE = Path(__file__).resolve().parent
ARGS = [
    "data.num_train=48", "data.num_val=16", "data.num_test=16", "data.batch_size=16",
    "callbacks.cam_localization.num_overlays=2", "callbacks.rich_progress_bar=null",
    "trainer.max_epochs=4", "trainer.deterministic=true", "trainer.log_every_n_steps=1", "test=true",
]


class KillAt(L.Callback):
    """Test-only: SIGKILL this process (no cleanup, like a preempted job) at the first of `points`
    ("epoch:batch") that lies after the epoch the run started in (a resumed run is not killed again there)."""

    def __init__(self, points: list[str]) -> None:
        self.points = [tuple(int(x) for x in p.split(":")) for p in points]
        self.start_epoch: int | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.start_epoch is None:
            self.start_epoch = trainer.current_epoch
        if (trainer.current_epoch, batch_idx) in self.points and trainer.current_epoch > self.start_epoch:
            os.kill(os.getpid(), signal.SIGKILL)


def rows(run_dir: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(open(run_dir / "csv" / "metrics.csv", newline="")))


def final_by(rows_: list[dict[str, str]], key: str, prefix: str) -> dict[tuple[str, str], dict[str, str]]:
    """Last row per (epoch, step) among rows that have `key`, restricted to columns starting with `prefix`."""
    out = {}
    for r in rows_:
        if r.get(key):
            out[(r["epoch"], r["step"])] = {k: v for k, v in r.items() if k.startswith(prefix) and v != ""}
    return out


def ckpt_epoch(run_dir: Path) -> int:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["epoch"]


@pytest.mark.slow
def test_killed_run_resumes_to_exactly_the_uninterrupted_result(tmp_path):
    env = {"PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    full_dir, job = tmp_path / "full", tmp_path / "killed"
    res = run([*ARGS, f"hydra.run.dir={full_dir}"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]

    killer = ["logger=many", "+callbacks.kill._target_=test_resume.KillAt", '+callbacks.kill.points=["1:1","2:1"]',
              f"hydra.run.dir={job}"]
    # 1. fresh run, SIGKILLed in epoch 1 (after one batch): last.ckpt is from epoch 0
    res = run([*ARGS, *killer], cwd=tmp_path, env=env)
    assert res.returncode == -signal.SIGKILL, res.stderr[-3000:]
    assert ckpt_epoch(job) == 0
    rows_after_kill_1 = rows(job)
    # 2. resumed explicitly (ckpt_path=last), SIGKILLed again in epoch 2: last.ckpt is from epoch 1
    res = run([*ARGS, *killer, "ckpt_path=last"], cwd=tmp_path, env=env)
    assert res.returncode == -signal.SIGKILL, res.stderr[-3000:]
    assert ckpt_epoch(job) == 1
    rows_after_kill_2 = rows(job)
    # 3. the same command in the same run dir without ckpt_path (a requeued job): resumes by itself, finishes
    res = run([*ARGS, *killer], cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resuming from {job / 'checkpoints' / 'last.ckpt'}" in (job / "train.log").read_text()
    resumed, full = rows(job), rows(full_dir)

    # every validation epoch, every training step (the last value logged for it) and the test metrics equal
    for key, prefix in (("val/loss", "val/"), ("train/loss", "train/"), ("test/acc", "test/")):
        got, want = final_by(resumed, key, prefix), final_by(full, key, prefix)
        assert got and got == want, (key, got, want)
    assert len(final_by(full, "val/loss", "val/")) == 4 and len(final_by(full, "train/loss", "train/")) == 12

    # no silent data loss: the rows written before each kill are still the file's first rows (then appended)
    assert len(rows_after_kill_1) < len(rows_after_kill_2) < len(resumed)
    assert rows_after_kill_2[: len(rows_after_kill_1)] == [
        {k: r.get(k, "") for k in rows_after_kill_2[0]} for r in rows_after_kill_1]
    assert [{k: r[k] for k in rows_after_kill_2[0]} for r in resumed[: len(rows_after_kill_2)]] == rows_after_kill_2

    # one W&B run continued three times: three offline segments with the id stored in the run dir
    run_id = (job / "wandb" / "camlab_run_id").read_text().strip()
    segments = sorted((job / "wandb").glob("offline-run-*"))
    assert len(segments) == 3 and {s.name.rsplit("-", 1)[1] for s in segments} == {run_id}


class Stopped(Exception):
    """Test-only: the in-process stand-in for a kill."""


class StopAt(L.Callback):
    """Test-only: raise :class:`Stopped` at the start of batch ``batch`` of epoch ``epoch`` of a fresh run."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.at, self.fresh = (epoch, batch), None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.fresh is None:
            self.fresh = trainer.global_step == 0
        if self.fresh and (trainer.current_epoch, batch_idx) == self.at:
            raise Stopped


# Every method: the data-side ones draw with a torch (has) or numpy (cutmix) generator, adl draws in its hooks,
# acol and spg add heads to the optimizer and the checkpoint.
@pytest.mark.parametrize("method", ["has", "cutmix", "adl", "acol", "spg"])
def test_a_run_with_a_wsol_method_resumes_to_exactly_the_uninterrupted_weights(method, tmp_path, one_thread):
    """In-process and smaller than the SIGKILL test above: the run is stopped by an exception in epoch 1 and
    everything it built is dropped, as by a kill; a new run resumes from its last.ckpt (epoch 0). The methods draw
    from (seed, rank, epoch, batch), so the weights after the last epoch equal the uninterrupted run's bit for bit."""
    from _tiny_checkpoint import DATA, composed
    from camlab.models.pretrained import load_checkpoint
    from camlab.train import train

    args = [*DATA[:2], "data.num_val=8", "data.batch_size=16", "backbone.width=4", f"wsol={method}",
            "trainer.max_epochs=2", "trainer.deterministic=true", "test=false", "logger=[]", "callbacks=[resume]"]
    train(composed("train", args, tmp_path / "full"))
    stop = ["+callbacks.stop._target_=test_resume.StopAt", "+callbacks.stop.epoch=1", "+callbacks.stop.batch=1"]
    with pytest.raises(Stopped):
        train(composed("train", [*args, *stop], tmp_path / "killed"))
    assert ckpt_epoch(tmp_path / "killed") == 0
    torch.manual_seed(1234)  # a new process starts from other global random states
    train(composed("train", [*args, *stop, "ckpt_path=last"], tmp_path / "killed"))

    full, resumed = (torch.load(p / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
                     for p in (tmp_path / "full", tmp_path / "killed"))
    assert resumed["epoch"] == full["epoch"] == 1 and resumed["global_step"] == full["global_step"] == 6
    assert full["state_dict"].keys() == resumed["state_dict"].keys()
    assert all(torch.equal(full["state_dict"][k], resumed["state_dict"][k]) for k in full["state_dict"])
    model = load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.ckpt")  # the method is rebuilt from it
    assert model.wsol_method.spec() == full["hyper_parameters"]["wsol"] and model.wsol_method.name == method
