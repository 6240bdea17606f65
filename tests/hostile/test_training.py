"""Hostile events while a run is under way: a diverging loss, non-finite weights, SIGTERM and Ctrl-C (SIGINT)
during fit, evaluation and set-up.

Each stops with one ``camlab: error:`` line naming where and what to do, a non-zero exit code (1; 143 for
SIGTERM, 130 for SIGINT: 128 + the signal, the shell's convention), and keeps every checkpoint written before:
never replaced by NaN weights or a partial file.
"""
from __future__ import annotations

import os
import signal

import lightning.pytorch as L
import pytest
import torch

from _tiny_checkpoint import DATA, composed
from camlab.errors import TrainingDiverged
from camlab.runtime.app import describe_error, run_app
from camlab.train import train

from ._checks import clean, short, snapshot

QUICK = [*DATA, "backbone.width=4", "test=false", "callbacks=[model_checkpoint,resume,cam_localization]",
         "callbacks.cam_localization.num_overlays=0", "callbacks.cam_localization.write_curves=false"]
STEPS_PER_EPOCH = 3  # 48 train images, batch 16
HERE = __name__  # for _target_ of the helper callbacks below


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


class SendSignal(L.Callback):
    """Test helper: this process gets ``signum`` after training step ``step``, or after validation / test batch
    ``val_batch`` / ``test_batch`` (as from a scheduler's scancel / kill, or Ctrl-C)."""

    def __init__(self, signum: int = 15, step: int = -1, val_batch: int = -1, test_batch: int = -1) -> None:
        self.signum, self.step, self.val_batch, self.test_batch = signum, step, val_batch, test_batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx == self.val_batch and not trainer.sanity_checking:
            os.kill(os.getpid(), self.signum)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx == self.test_batch:
            os.kill(os.getpid(), self.signum)


@pytest.fixture
def keep_sigint():
    """Lightning ignores SIGINT after handling one (for its shutdown): give the test process its handler back."""
    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


def _files(run_dir):
    ckpts = run_dir / "checkpoints"
    return {p.name: p.read_bytes() for p in ckpts.iterdir()} if ckpts.is_dir() else {}


def _finite(path) -> bool:
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    return all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())


def _poison(**kw):
    return [f"+callbacks.poison._target_={HERE}.PoisonWeights", *(f"+callbacks.poison.{k}={v}" for k, v in kw.items())]


def _signal(**kw):
    return [f"+callbacks.signal._target_={HERE}.SendSignal", *(f"+callbacks.signal.{k}={v}" for k, v in kw.items())]


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
    short(str(exc.value.code), "camlab: error: the training loss is nan at epoch 0, step 2", max_lines=1)


def test_nan_loss_in_a_later_epoch_keeps_the_last_finite_checkpoints(tmp_path):
    cfg = composed("train", [*QUICK, "trainer.max_epochs=3", *_poison(step=STEPS_PER_EPOCH + 1)], tmp_path)
    with pytest.raises(TrainingDiverged, match=r"loss is nan at epoch 1, step 4 \(batch 1\)"):
        train(cfg)
    files = _files(tmp_path)
    assert set(files) == {"last.ckpt", "best-epoch000.ckpt"}  # epoch 0's, untouched; no on_exception.ckpt
    for name in files:
        assert _finite(tmp_path / "checkpoints" / name)
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == STEPS_PER_EPOCH
    clean(tmp_path)


def test_patience_skips_that_many_nonfinite_losses_in_a_row_then_stops(tmp_path):
    cfg = composed("train", [*QUICK, "trainer.max_epochs=1", "model.nonfinite_patience=1", *_poison(step=1)], tmp_path)
    with pytest.warns(UserWarning, match=r"step 1 \(batch 1\): batch skipped \(1 in a row, nonfinite_patience=1\)"):
        with pytest.raises(TrainingDiverged, match=r"at epoch 0, step 2 \(batch 2\)"):  # batch 1 skipped
            train(cfg)


def test_nonfinite_weights_with_a_finite_loss_are_never_saved(tmp_path):
    # epoch 1's losses were finite, but the weights are NaN at its validation: last.ckpt/best must not take them
    cfg = composed("train", [*QUICK, "trainer.max_epochs=3", *_poison(before_val_of_epoch=1)], tmp_path)
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
@pytest.mark.parametrize("signum, code, name", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "SIGINT")])
def test_a_signal_during_fit_saves_the_state_and_exits_128_plus_it(tmp_path, capsys, keep_sigint, signum, code, name):
    cfg = composed("train", [*QUICK, "trainer.max_epochs=2", *_signal(signum=int(signum), step=2)], tmp_path)
    with pytest.raises(SystemExit) as exc:
        run_app("camlab.train", train, cfg)
    assert exc.value.code == code  # a scheduler sees a failed job
    saved = tmp_path / "checkpoints" / "on_exception.ckpt"
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"camlab: error: stopped by {name}")
    short(last, "at epoch 0, step 2", f"its state is saved in {saved}: continue with ckpt_path={saved}", max_lines=1)
    assert torch.load(saved, weights_only=False)["global_step"] == 2
    clean(tmp_path)


def test_sigterm_while_only_validating_says_no_checkpoint_was_written(tmp_path, capsys, trained):
    cfg = composed("train", [*QUICK, "train=false", f"ckpt_path={trained['ckpt']}", "data.eval_batch_size=4",
                             *_signal(val_batch=0)], tmp_path)
    with pytest.raises(SystemExit) as exc:
        run_app("camlab.train", train, cfg)
    assert exc.value.code == 143
    short(capsys.readouterr().err.strip().splitlines()[-1], "camlab: error: stopped by SIGTERM at epoch 0, step 0",
          "no checkpoint was written yet", max_lines=1)
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("signum, code, name", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "SIGINT")])
def test_a_signal_during_camlab_eval_exits_128_plus_it_and_keeps_what_was_there(tmp_path, capsys, keep_sigint,
                                                                               trained, signum, code, name):
    from camlab.eval import evaluate

    out = tmp_path / "eval"
    out.mkdir()
    (out / "metrics.json").write_text('{"from": "an earlier evaluation"}\n')
    before = snapshot(out)
    cfg = composed("eval", [*DATA, "data.eval_batch_size=4", f"ckpt_path={trained['ckpt']}",
                            "callbacks.cam_localization.faithfulness.stages=[]",
                            *_signal(signum=int(signum), test_batch=0)], out)
    with pytest.raises(SystemExit) as exc:
        run_app("camlab.eval", evaluate, cfg)
    assert exc.value.code == code  # not 0: Lightning's SIGTERMException is a SystemExit without a code
    last = capsys.readouterr().err.strip().splitlines()[-1]
    short(last, f"camlab: error: stopped by {name}", "run it again to finish", max_lines=1)
    clean(out, before)  # the old metrics.json whole; no per_image.csv half-written


def test_ctrl_c_before_training_starts_is_one_line_and_130(tmp_path, capsys):
    cfg = composed("train", QUICK, tmp_path)

    def interrupted(c):
        raise KeyboardInterrupt  # e.g. while the data is set up

    with pytest.raises(SystemExit) as exc:
        run_app("camlab.train", interrupted, cfg)
    assert exc.value.code == 130
    short(capsys.readouterr().err, "camlab: error: stopped by SIGINT (Ctrl-C)", max_lines=1)
