"""Hostile events during training: a diverging loss, non-finite weights, SIGTERM, a full or read-only disk.

Each run stops with one line (``camlab: error: ...``) naming where and what to change, a non-zero exit code,
and keeps every checkpoint written before (never replaced by a NaN or a partial file).
"""
from __future__ import annotations

import errno
import logging
import os
import signal

import lightning.pytorch as L
import pytest
import torch

from _tiny_checkpoint import DATA, composed
from camlab.errors import OutputError, RunInterrupted, TrainingDiverged
from camlab.runtime.app import describe_error, run_app
from camlab.train import train

QUICK = [*DATA, "backbone.width=4", "test=false", "callbacks=[model_checkpoint,resume,cam_localization]",
         "callbacks.cam_localization.num_overlays=0", "callbacks.cam_localization.write_curves=false"]
STEPS_PER_EPOCH = 3  # 48 train images, batch 16


class PoisonWeights(L.Callback):
    """Test helper: sets every weight to NaN at ``step`` (before its batch), or before a validation with
    ``before_val_of_epoch`` (the loss of that epoch stayed finite; only the weights are bad)."""

    def __init__(self, step: int = -1, before_val_of_epoch: int = -1) -> None:
        self.step, self.epoch = step, before_val_of_epoch

    def _poison(self, pl_module):
        with torch.no_grad():
            for p in pl_module.parameters():
                p.fill_(float("nan"))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            self._poison(pl_module)

    def on_validation_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            self._poison(pl_module)


class SendSigterm(L.Callback):
    """Test helper: this process gets SIGTERM at ``step`` (as from a scheduler's scancel / kill)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def _files(run_dir):
    ckpts = run_dir / "checkpoints"
    return {p.name: p.read_bytes() for p in ckpts.iterdir()} if ckpts.is_dir() else {}


def _finite(path) -> bool:
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    return all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())


# ---- non-finite loss ------------------------------------------------------------------------------------
def test_diverging_learning_rate_stops_at_the_first_nan_loss_naming_step_and_lr(tmp_path):
    cfg = composed("train", [*QUICK, "trainer.max_epochs=3", "model.optimizer.lr=1e12"], tmp_path)
    with pytest.raises(TrainingDiverged) as err:
        train(cfg)
    text = str(err.value)
    assert "the training loss is nan at epoch 0, step 2 (batch 2): the run diverged" in text
    assert "Lower the learning rate (lr now" in text and "\n" not in text
    assert describe_error(err.value, cfg).endswith("(config key 'model.optimizer.lr')")
    assert _files(tmp_path) == {}  # no checkpoint of the diverged weights, not even on_exception.ckpt

    with pytest.raises(SystemExit) as exc:  # as camlab-train ends: one line, exit code 1
        run_app("camlab.train", train, cfg)
    assert str(exc.value.code).startswith("camlab: error: the training loss is nan at epoch 0, step 2")


def test_nan_loss_in_a_later_epoch_keeps_the_last_finite_checkpoints(tmp_path):
    poison = ["+callbacks.poison._target_=test_hostile2_train.PoisonWeights", f"+callbacks.poison.step={STEPS_PER_EPOCH + 1}"]
    cfg = composed("train", [*QUICK, "trainer.max_epochs=3", *poison], tmp_path)
    with pytest.raises(TrainingDiverged, match=r"loss is nan at epoch 1, step 4 \(batch 1\)"):
        train(cfg)
    files = _files(tmp_path)
    assert set(files) == {"last.ckpt", "best-epoch000.ckpt"}  # epoch 0's, untouched; no on_exception.ckpt
    for name in files:
        assert _finite(tmp_path / "checkpoints" / name)
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == STEPS_PER_EPOCH


def test_patience_skips_that_many_nonfinite_losses_in_a_row_then_stops(tmp_path):
    poison = ["+callbacks.poison._target_=test_hostile2_train.PoisonWeights", "+callbacks.poison.step=1"]
    cfg = composed("train", [*QUICK, "trainer.max_epochs=1", "model.nonfinite_patience=1", *poison], tmp_path)
    with pytest.warns(UserWarning, match=r"step 1 \(batch 1\): batch skipped \(1 in a row, nonfinite_patience=1\)"):
        with pytest.raises(TrainingDiverged, match=r"at epoch 0, step 2 \(batch 2\)"):  # batch 1 skipped
            train(cfg)
    with pytest.raises(Exception, match="nonfinite_patience must be an integer >= 0"):
        train(composed("train", [*QUICK, "model.nonfinite_patience=-1"], tmp_path / "bad"))


def test_nonfinite_weights_with_a_finite_loss_are_never_saved(tmp_path):
    # epoch 1's losses were finite, but the weights are NaN at its validation: last.ckpt/best must not take them
    poison = ["+callbacks.poison._target_=test_hostile2_train.PoisonWeights", "+callbacks.poison.before_val_of_epoch=1"]
    cfg = composed("train", [*QUICK, "trainer.max_epochs=3", *poison], tmp_path)
    with pytest.raises(TrainingDiverged, match="the weights are no longer finite"):
        train(cfg)
    files = _files(tmp_path)
    assert set(files) == {"last.ckpt", "best-epoch000.ckpt"} and all(_finite(tmp_path / "checkpoints" / n) for n in files)


def test_a_diverged_sweep_job_is_a_failed_trial_and_the_sweep_goes_on(tmp_path, caplog):
    from hydra import compose, initialize_config_module

    from camlab.train import main

    cfg = composed("train", [*QUICK, "trainer.max_epochs=1", "model.optimizer.lr=1e12", "hydra.mode=MULTIRUN"],
                   tmp_path)
    # no SystemExit (which would end the whole sweep): the objective is None, a failed trial for hydra's Optuna
    # sweeper ("Return value must be float-castable"), which goes on at max_failure_rate 1.0
    assert main.__wrapped__(cfg) is None
    assert "camlab: error: the training loss is nan" in caplog.text and "recorded as failed" in caplog.text
    with initialize_config_module("camlab.conf", version_base="1.3"):
        sweep = compose("train", overrides=["hparams_search=optuna_loc"], return_hydra_config=True)
    assert sweep.hydra.sweeper.max_failure_rate == 1.0


# ---- signals ---------------------------------------------------------------------------------------------
def test_sigterm_saves_the_state_and_exits_143(tmp_path, capsys):
    kill = ["+callbacks.kill._target_=test_hostile2_train.SendSigterm", "+callbacks.kill.step=2",
            "callbacks=[model_checkpoint,resume,cam_localization]"]
    cfg = composed("train", [*QUICK, "trainer.max_epochs=2", *kill], tmp_path)
    with pytest.raises(SystemExit) as exc:
        run_app("camlab.train", train, cfg)
    assert exc.value.code == 143  # 128 + SIGTERM: a scheduler sees a failed job
    saved = tmp_path / "checkpoints" / "on_exception.ckpt"
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"camlab: error: stopped by SIGTERM at epoch 0, step 2; its state is saved in {saved}: " \
                      f"continue with ckpt_path={saved}"
    assert torch.load(saved, weights_only=False)["global_step"] == 2


# ---- filesystems -----------------------------------------------------------------------------------------
def test_full_disk_during_a_checkpoint_save_is_one_line_and_leaves_no_partial_file(tmp_path, monkeypatch):
    cfg = composed("train", [*QUICK, "trainer.max_epochs=3"], tmp_path)
    real_save = torch.save
    calls = {"n": 0}

    def save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:  # epoch 0's best and last are written; then the disk is full
            if hasattr(f, "write"):
                f.write(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(OutputError) as err:
        train(cfg)
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert str(err.value).startswith(f"cannot write checkpoint {tmp_path / 'checkpoints'}")
    assert "No space left on device; free disk space there" in str(err.value)
    monkeypatch.setattr(torch, "save", real_save)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["best-epoch000.ckpt", "last.ckpt"]  # no on_exception.ckpt, no temporary file
    assert torch.load(last, weights_only=False)["global_step"] == STEPS_PER_EPOCH  # the epoch-0 file, intact
    with pytest.raises(SystemExit, match="camlab: error: cannot write checkpoint .*No space left"):
        run_app("camlab.train", lambda c: (_ for _ in ()).throw(err.value), cfg)


def test_disk_errors_of_any_output_name_the_path():
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/runs/x/csv/metrics.csv")
    assert describe_error(full) == ("No space left on device while writing /runs/x/csv/metrics.csv: free disk "
                                    "space there, or write the run elsewhere (hydra.run.dir=<dir on another disk>)")
    readonly = OSError(errno.EROFS, os.strerror(errno.EROFS), "/ro/run")
    assert describe_error(readonly).startswith("Read-only file system while writing /ro/run: make that folder")
    assert describe_error(OSError(errno.EIO, "Input/output error")) is None  # not a disk-space or permission case


def test_a_run_dir_that_cannot_be_written_is_one_line_before_hydra_writes(tmp_path, monkeypatch, capsys):
    from omegaconf import OmegaConf

    from camlab.runtime.outputs import CheckOutputDir

    (tmp_path / "file").write_text("x")
    cfg = OmegaConf.create({"hydra": {"run": {"dir": str(tmp_path / "file" / "run")}}})
    with pytest.raises(SystemExit) as exc:
        CheckOutputDir().on_run_start(config=cfg)
    assert exc.value.code == 1
    assert capsys.readouterr().err.strip() == (
        f"camlab: error: cannot create the run dir {tmp_path / 'file' / 'run'} (hydra.run.dir): Not a directory; a "
        f"file is in the way of that path: move it, or write the run elsewhere (hydra.run.dir=<dir>)")

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr("pathlib.Path.mkdir", read_only)
    cfg = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "sweep")}}})
    with pytest.raises(SystemExit):
        CheckOutputDir().on_multirun_start(config=cfg)
    assert "(hydra.sweep.dir): Read-only file system; make that folder writable, or write the run elsewhere " \
           "(hydra.sweep.dir=<writable dir>)" in capsys.readouterr().err
    assert not (tmp_path / "sweep").exists()
