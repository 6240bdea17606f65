"""Bad input met while a run is set up or under way: one readable line, and the work done so far is kept.

Unit tests of the error reporting (``describe_error``, ``run_app``), of the checks made before anything is
built (numbers, checkpoint files, weights files), and in-process runs for what only a run shows (a wrong
``optimized_metric`` after an epoch, a checkpoint of another model, a failed run's saved state).
"""
from __future__ import annotations

import functools
import os
import re
import zipfile

import pytest
import torch
from omegaconf import OmegaConf
from torch._utils import ExceptionWrapper

from _tiny_checkpoint import DATA, composed, tiny_checkpoint
from camlab.models.backbones import load_state_dict_file, load_torch_file
from camlab.errors import ConfigError, DataError
from camlab.runtime.app import describe_error, run_app
from camlab.train import check_checkpoint_file, check_run_numbers, train


def _raise_in_camlab():
    # a ValueError raised by camlab's own check (its innermost frame is camlab's code)
    from camlab.wsol import resolve_thresholds

    resolve_thresholds(0.0)


def _caught(fn) -> BaseException:
    try:
        fn()
    except BaseException as err:  # noqa: BLE001
        return err
    raise AssertionError("no exception")


# ---- describe_error / run_app ---------------------------------------------------------------------------
def test_value_error_of_a_camlab_check_is_one_line_but_library_and_type_errors_are_not():
    err = _caught(_raise_in_camlab)
    assert describe_error(err) == "cam threshold interval must be in (0, 1), got 0.0"

    def library():
        import numpy as np

        np.linspace(0, 1, num=-1)  # numpy's own ValueError, raised in numpy's Python code

    assert describe_error(_caught(library)) is None  # a traceback: may be a camlab bug, not the user's input

    def bug():
        return len(None)  # a TypeError in camlab-like code is a bug: keep its traceback

    assert describe_error(_caught(bug)) is None


def test_dataloader_worker_error_shows_the_workers_message_only():
    def in_worker():
        raise DataError("cannot read image /data/x.jpg: truncated. Replace or remove the file")

    try:
        in_worker()
    except DataError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    err = _caught(wrapped.reraise)
    assert "Original Traceback" in str(err)  # what torch re-raises in the main process
    assert describe_error(err) == "cannot read image /data/x.jpg: truncated. Replace or remove the file"

    def suggesting():  # the re-raised copy has lost `settings`: the arguments the message writes `name=` count
        raise DataError("cannot read image /data/x.jpg: truncated. Set skip_corrupt=True to skip it",
                        settings=["skip_corrupt"])

    try:
        suggesting()
    except DataError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    cfg = OmegaConf.create({"data": {"skip_corrupt": False, "batch_size": 4}})
    assert describe_error(_caught(wrapped.reraise), cfg) == (
        "cannot read image /data/x.jpg: truncated. Set skip_corrupt=True to skip it (config key 'data.skip_corrupt')")


def test_missing_mandatory_value_names_the_key():
    cfg = OmegaConf.create({"data": {"num_classes": "???"}})
    msg = describe_error(_caught(lambda: cfg.data.num_classes))
    assert "data.num_classes" in msg and "data.num_classes=" in msg


def test_library_setup_errors_say_what_to_do():
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    monitor = MisconfigurationException("`ModelCheckpoint(monitor='val/x')` could not find the monitored key in "
                                        "the returned metrics: ['val/acc']. HINT: Did you call `log('val/x', v)`?")
    msg = describe_error(monitor)
    assert "['val/acc']" in msg and "optimized_metric" in msg and "HINT" not in msg
    gpu = describe_error(MisconfigurationException("No supported gpu backend found!"))
    assert "trainer=cpu" in gpu

    class UsageError(Exception):
        pass

    UsageError.__module__ = "wandb.errors.errors"
    msg = describe_error(UsageError("No API key configured. Use `wandb login` to log in."))
    assert "WANDB_MODE=offline" in msg and "log in.." not in msg
    assert describe_error(RuntimeError("CUDA error: an illegal memory access")) is None


def test_run_app_prints_one_line_unless_hydra_full_error(monkeypatch):
    cfg = OmegaConf.create({})
    with pytest.raises(SystemExit) as exit_:
        run_app("camlab.train", lambda c: _raise_in_camlab(), cfg)
    assert str(exit_.value) == "camlab: error: cam threshold interval must be in (0, 1), got 0.0"
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ValueError, match="interval"):  # the traceback, for whoever debugs camlab
        run_app("camlab.train", lambda c: _raise_in_camlab(), cfg)


# ---- checks before anything is built --------------------------------------------------------------------
def test_run_numbers_must_be_integers():
    check_run_numbers(OmegaConf.create({"seed": 3, "trainer": {"max_epochs": 10, "max_steps": -1}}))
    for cfg, words in [({"seed": "abc"}, "seed must be an integer, got 'abc'"),
                       ({"seed": 1, "trainer": {"max_epochs": "abc"}}, "trainer.max_epochs must be an integer"),
                       ({"seed": 1, "trainer": {"max_epochs": True}}, "trainer.max_epochs must be an integer"),
                       ({"seed": 1, "trainer": {"max_steps": -5}}, "trainer.max_steps must be >= -1")]:
        with pytest.raises(ConfigError, match=words):
            check_run_numbers(OmegaConf.create(cfg))


def test_unreadable_torch_files_name_the_file(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"w": torch.ones(2)}, good)
    assert torch.equal(load_torch_file(good, "checkpoint")["w"], torch.ones(2))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(os.urandom(4096))
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:300])
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    for path in (garbage, truncated, empty):
        with pytest.raises(ConfigError, match=f"cannot read pretrained weights file '{path}'"):
            load_state_dict_file(path)
    # a complete torch file with objects beyond tensors: unpickled fully, with a warning, not refused
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hp": functools.partial(max, 1)}, other)
    with pytest.warns(UserWarning, match="unpickled it fully"):
        assert torch.equal(load_state_dict_file(other)["w"], torch.zeros(1))


def test_checkpoint_file_check_reads_only_the_zip_directory(tmp_path):
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.ones(3)}}, good)
    check_checkpoint_file(str(good))
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[:-200])
    with pytest.raises(ConfigError, match=f"ckpt_path '{truncated}' is not a complete checkpoint"):
        check_checkpoint_file(str(truncated))
    other_zip = tmp_path / "other.ckpt"
    with zipfile.ZipFile(other_zip, "w") as zf:
        zf.writestr("readme.txt", "not a checkpoint")
    with pytest.raises(ConfigError, match="not a torch checkpoint"):
        check_checkpoint_file(str(other_zip), "this run dir's last checkpoint")


def test_bad_callback_thresholds_fail_at_construction():
    from camlab.callbacks import CAMLocalization

    with pytest.raises(ValueError, match="grid_interval .* must be in \\(0, 1\\)"):
        CAMLocalization(grid_interval=0)
    with pytest.raises(ValueError, match="iou_thresholds must be percents"):
        CAMLocalization(iou_thresholds=[30, 150])


# ---- in-process runs -------------------------------------------------------------------------------------
QUICK = [*DATA, "backbone.width=4", "test=false", "callbacks=[model_checkpoint,resume,cam_localization]",
         "callbacks.cam_localization.num_overlays=0", "callbacks.cam_localization.write_curves=false"]


def test_bad_optimizer_argument_is_a_config_error(tmp_path):
    cfg = composed("train", [*QUICK, "trainer.max_epochs=1", "model.optimizer.lr=abc"], tmp_path)
    with pytest.raises(ConfigError, match="optimizer: AdamW rejects its arguments.*check its lr") as err:
        train(cfg)
    assert describe_error(err.value, cfg).endswith("(config key 'model.optimizer')")


@pytest.mark.parametrize("override, message", [
    # raised while the trainer sets up the data (no Hydra node): the error's settings, found in the config
    ("data.val_dataset.max_objects=9", "max_objects of the val split must be an int in [1, 8], got 9 "
                                       "(config key 'data.val_dataset.max_objects')"),
    ("data.image_size=16", "image_size must be an int >= 32, got 16 (config key 'data.image_size')"),
    # raised while Hydra instantiates data: the argument's key, not only the node's
    ("data.batch_size=0", "batch_size must be an int >= 1, got 0 (config key 'data.batch_size')"),
])
def test_library_errors_name_the_config_key_to_set(tmp_path, override, message):
    from hydra.utils import instantiate

    cfg = composed("train", [*QUICK, override], tmp_path)
    err = _caught(lambda: instantiate(cfg.data, _convert_="partial").setup("fit"))
    assert describe_error(err, cfg) == message
    with pytest.raises(SystemExit, match=re.escape(f"camlab: error: {message}")):
        run_app("camlab.train", lambda c: instantiate(c.data, _convert_="partial").setup("fit"), cfg)


def test_truncated_resume_checkpoint_fails_before_training(tmp_path):
    ckpt = tmp_path / "trunc.ckpt"
    torch.save({"state_dict": {}}, ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    cfg = composed("train", [*QUICK, "trainer.max_epochs=1", f"ckpt_path={ckpt}"], tmp_path / "run")
    with pytest.raises(ConfigError, match="is not a complete checkpoint"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing started


def test_checkpoint_of_another_model_is_one_line(tmp_path_factory, tmp_path):
    trained = tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))
    cfg = composed("train", [*QUICK, "trainer.max_epochs=2", "backbone.width=8", f"ckpt_path={trained['ckpt']}"],
                   tmp_path)
    with pytest.raises(ConfigError, match="does not fit the model composed now.*size mismatch"):
        train(cfg)


def test_failed_run_keeps_its_state_and_continues_from_it(tmp_path):
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    first = tmp_path / "first"
    cfg = composed("train", [*QUICK, "trainer.max_epochs=2", "optimized_metric=val/loc/top1loc"], first)
    with pytest.raises(MisconfigurationException, match="could not find the monitored key"):
        train(cfg)  # the typo shows at the end of the first epoch's validation
    saved = first / "checkpoints" / "on_exception.ckpt"
    state = torch.load(saved, map_location="cpu", weights_only=False)
    steps = state["global_step"]
    assert steps == 3 and state["epoch"] == 0  # 48 images / batch 16: the whole first epoch is kept

    cfg = composed("train", [*QUICK, "trainer.max_epochs=2", f"ckpt_path={saved}"], tmp_path / "second")
    metrics = train(cfg)
    last = torch.load(tmp_path / "second" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 2 * steps and last["epoch"] == 1  # one more epoch, not two
    assert "val/loc/top1_loc" in metrics


def test_nothing_is_saved_when_a_run_fails_before_its_first_step(tmp_path):
    cfg = composed("train", [*QUICK, "trainer.max_epochs=1", "model.optimizer.lr=-1"], tmp_path)
    with pytest.raises(ConfigError, match="Invalid learning rate"):
        train(cfg)
    assert not (tmp_path / "checkpoints" / "on_exception.ckpt").exists()


def test_eval_of_a_plain_state_dict_says_how_to_load_it(tmp_path):
    from camlab.eval import evaluate

    sd = tmp_path / "weights.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, sd)
    cfg = composed("eval", [*DATA, "callbacks=[cam_localization]", f"ckpt_path={sd}"], tmp_path / "eval")
    with pytest.raises(ConfigError, match="not a Lightning/camlab checkpoint.*torchvision.arch=<arch>"):
        evaluate(cfg)


def test_failure_checkpoint_does_not_save_under_ddp_or_before_a_step(tmp_path, caplog):
    from types import SimpleNamespace

    from camlab.resume import FailureCheckpoint

    saved = []
    cb = FailureCheckpoint(tmp_path)
    cb.on_train_start(SimpleNamespace(global_step=0), None)

    def trainer(fn="fit", step=5, world=1):
        return SimpleNamespace(state=SimpleNamespace(fn=fn), global_step=step, world_size=world,
                               save_checkpoint=lambda p: saved.append(p))

    cb.on_exception(trainer(world=2), None, RuntimeError("x"))  # a save under DDP could hang
    cb.on_exception(trainer(step=0), None, RuntimeError("x"))  # nothing trained yet
    cb.on_exception(trainer(fn="validate"), None, RuntimeError("x"))  # not fitting
    assert saved == [] and "not saved" in caplog.text
    cb.on_exception(trainer(), None, RuntimeError("x"))
    assert saved == [tmp_path / "on_exception.ckpt"]
    cb.on_train_start(SimpleNamespace(global_step=5), None)  # resumed at step 5, failed before a step of its own
    cb.on_exception(trainer(step=5), None, RuntimeError("x"))
    assert len(saved) == 1


def test_resuming_with_more_steps_than_the_schedule_fails_before_training(tmp_path):
    cfg = composed("train", [*QUICK, "trainer.max_epochs=2"], tmp_path)
    train(cfg)
    last = tmp_path / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    # the same run dir with a longer run: OneCycleLR restored for 6 steps would crash at step 7
    cfg = composed("train", [*QUICK, "trainer.max_epochs=3"], tmp_path)
    with pytest.raises(ConfigError, match="resumes at step 6 with 9 optimizer steps in all, but its checkpoint's "
                                          "OneCycleLR schedule was built for 6 steps") as err:
        train(cfg)
    assert describe_error(err.value, cfg).endswith("(config keys 'trainer.max_epochs', 'backbone.pretrained')")
    assert last.read_bytes() == before  # nothing trained, nothing overwritten
    assert not (tmp_path / "checkpoints" / "on_exception.ckpt").exists()  # the checkpoint it started from is it


def test_many_kinds_of_garbage_are_one_unreadable_line(tmp_path):
    """Random bytes reach different corners of torch's unpickler (IndexError, KeyError, ...): every seed is one line."""
    import random

    for seed in range(40):
        garbage = tmp_path / f"garbage{seed}.pth"
        garbage.write_bytes(random.Random(seed).randbytes(4096))
        with pytest.raises(ConfigError, match=f"cannot read pretrained weights file '{garbage}'"):
            load_state_dict_file(garbage)
