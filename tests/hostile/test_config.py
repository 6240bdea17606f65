"""Hostile config values: unknown keys and group options, override grammar, wrong types and ranges, bad enum values
of cam_method / threshold / pool / data / trainer keys, strings where booleans belong.

Composition errors go through the real ``camlab-train`` entry point, in-process (Hydra's own message: a few lines
naming the key or the option, exit code 1, no run dir created). Set-up errors go through ``run_app`` around
``train`` on a config composed once per case (one ``camlab: error:`` line naming the config key, exit code 1,
no checkpoint written).
"""
from __future__ import annotations

import logging
import sys

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from camlab.runtime.app import run_app

from ._checks import clean, short
from ._compose import app_config, base_config

TINY = ["data.image_size=32", "data.num_train=8", "data.num_val=4", "data.num_test=4", "data.batch_size=4",
        "debug=fast", "callbacks.cam_localization.faithfulness.stages=[]"]


def _camlab_train(monkeypatch, tmp_path, capsys, argv, main=None):
    """``camlab-train ARGV`` in this process: (exit code, stderr)."""
    from camlab.train import main as train_main

    GlobalHydra.instance().clear()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["camlab-train", *argv])
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level  # Hydra configures its logging once it starts a run
    try:
        with pytest.raises(SystemExit) as exc:
            (main or train_main)()
    finally:
        root.handlers[:], root.level = handlers, level
        GlobalHydra.instance().clear()
    return exc.value.code, capsys.readouterr().err


COMPOSITION = {  # overrides -> (the exception Hydra raises, the words its message must contain)
    "unknown_key": (["foo=1"], ["Could not override 'foo'", "+foo=1"]),
    "unknown_nested_key": (["data.foo=1"], ["Could not override 'data.foo'", "+data.foo=1"]),
    "typo_in_trainer_key": (["trainer.gradient_clip_vall=1"], ["'trainer.gradient_clip_vall'"]),
    "typo_in_callback_key": (["callbacks.cam_localization.grid_intervall=0.1"],
                             ["'callbacks.cam_localization.grid_intervall'"]),
    "append_existing_key": (["+seed=1"], ["Could not append to config. An item is already at 'seed'"]),
    "grammar_two_equals": (["data.batch_size=abc=2"], ["mismatched input '='"]),
    "grammar_open_list": (["trainer.max_epochs=[1"], ["no viable alternative at input '[1'"]),
    **{f"bad_{group}": ([f"{group}=bogus"], [f"Could not find '{group}/bogus'", f"Available options in '{group}'"])
       for group in ("data", "backbone", "pool", "cam_method", "threshold", "logger", "trainer")},
}


@pytest.mark.parametrize("case", sorted(COMPOSITION))
def test_composition_errors_name_the_key_or_the_option(case):
    from hydra.errors import HydraException

    overrides, words = COMPOSITION[case]
    if not GlobalHydra.instance().is_initialized():
        initialize_config_module("camlab.conf", version_base="1.3")
    with pytest.raises(HydraException) as err:  # what camlab-train prints (Hydra's text; the CLI cases below)
        compose("train", overrides=overrides)
    short(str(err.value), *words, max_lines=25)  # a group's options are listed, one a line


@pytest.mark.parametrize("argv, words", [
    (["foo=1"], ["Could not override 'foo'"]),
    (["cam_method=gradcampp"], ["Could not find 'cam_method/gradcampp'", "gradcam_pp"]),
])
def test_camlab_train_prints_hydras_lines_and_exits_1_writing_nothing(monkeypatch, tmp_path, capsys, argv, words):
    code, err = _camlab_train(monkeypatch, tmp_path, capsys, argv)
    assert code == 1
    short(err, *words, "HYDRA_FULL_ERROR=1", max_lines=25)
    assert not any(tmp_path.iterdir())  # no run dir, no log


def test_eval_composition_errors_are_hydras_lines_too(monkeypatch, tmp_path, capsys):
    from camlab.eval import main

    code, err = _camlab_train(monkeypatch, tmp_path, capsys, ["splitt=val"], main=main)
    assert code == 1
    short(err, "Could not override 'splitt'", max_lines=12)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("where", ["run", "sweep"])
def test_a_run_dir_inside_a_file_is_one_line_before_hydra_writes(monkeypatch, tmp_path, capsys, where):
    (tmp_path / "taken").write_text("a file\n")
    argv = [f"hydra.{where}.dir={tmp_path / 'taken' / 'run'}", *TINY] + (["-m"] if where == "sweep" else [])
    code, err = _camlab_train(monkeypatch, tmp_path, capsys, argv)
    assert code == 1
    short(err, f"camlab: error: cannot create the run dir {tmp_path / 'taken' / 'run'} (hydra.{where}.dir)",
          "a file is in the way", max_lines=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"] and (tmp_path / "taken").read_text() == "a file\n"


# ---- set-up errors: composed once per case, run by run_app as camlab-train runs its body ------------------------
@pytest.fixture(scope="module")
def tiny_base():
    return base_config("train", TINY)


CAM = "callbacks.cam_localization"
SETUP = {  # overrides -> words of the one line (the config key among them)
    "pool": (["model.pool=xyz"], ["pool must be one of ('gap', 'gmp'), got 'xyz'", "'model'"]),
    "cam_method": ([f"{CAM}.cam_method=bogus"], ["Unknown CAM method 'bogus'", f"'{CAM}'"]),
    "batch_size_negative": (["data.batch_size=-1"], ["batch_size must be an int >= 1, got -1", "'data.batch_size'"]),
    "batch_size_text": (["data.batch_size=abc"], ["batch_size must be an int >= 1, got 'abc'", "'data.batch_size'"]),
    "num_classes_zero": (["data.num_classes=0"], ["num_classes must be None or an int >= 2", "'data.num_classes'"]),
    "num_classes_too_many": (["data.num_classes=99"], ["num_classes must be an int in [2, 10], got 99",
                                                       "'data.num_classes'"]),
    "image_size_text": (["data.image_size=abc"], ["image_size must be an int >= 32, got 'abc'", "'data.image_size'"]),
    "image_size_small": (["data.image_size=16"], ["image_size must be an int >= 32, got 16", "'data.image_size'"]),
    "num_workers": (["data.num_workers=-1"], ["num_workers must be an int >= 0", "'data.num_workers'"]),
    "num_val_zero": (["data.num_val=0"], ["num_val must be None or an int >= 1", "'data.num_val'"]),
    "data_seed": (["data.seed=abc"], ["seed must be an int >= 0, got 'abc'", "'data.seed'"]),
    "split_length": (["data.train_dataset.length=abc"], ["length of the train split must be an int >= 1",
                                                         "'data.train_dataset.length'"]),
    "max_objects": (["data.val_dataset.max_objects=9"], ["max_objects of the val split must be an int in [1, 8]",
                                                         "'data.val_dataset.max_objects'"]),
    "seed": (["seed=abc"], ["seed must be an integer, got 'abc'"]),
    "max_epochs_text": (["trainer.max_epochs=abc"], ["trainer.max_epochs must be an integer, got 'abc'"]),
    "max_epochs_negative": (["trainer.max_epochs=-5"], ["trainer.max_epochs must be >= -1 (-1: no limit), got -5"]),
    "max_epochs_fraction": (["trainer.max_epochs=1.5"], ["trainer.max_epochs must be an integer, got 1.5"]),
    "precision": (["trainer.precision=17"], ["Precision 17 is invalid", "'trainer'"]),
    "accelerator_missing_package": (["trainer.accelerator=tpu"], ["torch_xla", "a package this setting needs is not "
                                                                             "installed", "'trainer'"]),
    "devices_zero": (["trainer.devices=0"], ["Trainer(devices=0)", "'trainer'"]),
    "train_flag_text": (["train=abc"], ["train must be true or false, got 'abc'"]),
    "test_flag_no": (["test=no"], ["test must be true or false, got 'no'"]),
    "tune_malloc_text": (["tune_malloc=maybe"], ["tune_malloc must be true or false, got 'maybe'"]),
    "lr_text": (["model.optimizer.lr=abc"], ["AdamW rejects its arguments", "'model.optimizer'"]),
    "lr_null": (["model.optimizer.lr=null"], ["AdamW rejects its arguments", "'model.optimizer'"]),
    "weight_decay_text": (["model.optimizer.weight_decay=abc"], ["AdamW rejects its arguments", "'model.optimizer'"]),
    "patience_text": (["model.nonfinite_patience=abc"], ["nonfinite_patience must be an integer >= 0, got 'abc'",
                                                         "'model.nonfinite_patience'"]),
    "patience_negative": (["model.nonfinite_patience=-1"], ["nonfinite_patience must be an integer >= 0, got -1"]),
    "width_zero": (["backbone.width=0"], ["tiny_cnn width must be >= 1, got 0", "'model.backbone'"]),
    "width_text": (["backbone.width=abc"], ["a value under 'model.backbone' is text or null where a number is "
                                            "expected"]),
    "cam_threshold_range": (["threshold.cam_threshold=1.5"], ["cam_threshold must be in [0, 1), got 1.5", f"'{CAM}'"]),
    "cam_threshold_text": (["threshold.cam_threshold=abc"], [f"a value under '{CAM}' is text or null"]),
    "iou_threshold_percent": (["threshold.iou_threshold=50"], ["iou_threshold is a fraction in (0, 1], e.g. 0.5",
                                                               "got 50", f"'{CAM}'"]),
    "iou_threshold_negative": (["threshold.iou_threshold=-1"], ["iou_threshold is a fraction", "got -1"]),
    "grid_interval": (["threshold.grid_interval=0"], ["grid_interval (the CAM threshold step) must be in (0, 1)"]),
    "iou_thresholds_range": (["threshold.iou_thresholds=[30,150]"], ["iou_thresholds must be percents in (0, 100]",
                                                                     "[30, 150]"]),
    "iou_thresholds_fractions": (["threshold.iou_thresholds=[0.3,0.5]"], ["iou_thresholds must be percents"]),
    "topk": ([f"{CAM}.topk=[0]"], ["topk must be positive integers, got (0,)"]),
    "num_overlays": ([f"{CAM}.num_overlays=-1"], ["num_overlays must be an integer >= 0, got -1", f"'{CAM}'"]),
    "overlay_format": ([f"{CAM}.overlay_format=gif"], ["overlay_format must be 'jpg' or 'png', got 'gif'"]),
    "background_text": ([f"{CAM}.background=maybe"], ["background must be true or false, got 'maybe'"]),
    "parallel_text": ([f"{CAM}.parallel=sometimes"], ["parallel must be true, false or 'auto', got 'sometimes'"]),
    "max_box_acc_stage": ([f"{CAM}.max_box_acc=[foo]"], ["max_box_acc lists stages among 'val', 'test'"]),
    "faith_steps": ([f"{CAM}.faithfulness.steps=0"], ["faithfulness.steps (insertion / deletion stages) must be >= 1"]),
    "faith_metric": ([f"{CAM}.faithfulness.metrics=[nope]"], ["faithfulness.metrics lists some of"]),
    "faith_stage": ([f"{CAM}.faithfulness.stages=[foo]"], ["faithfulness.stages lists stages among"]),
    "pointing_tolerance": ([f"{CAM}.pointing_tolerance=-1"], ["pointing_tolerance must be >= 0 px"]),
    "save_top_k_text": (["callbacks.model_checkpoint.save_top_k=abc"], ["a value under 'callbacks.model_checkpoint' "
                                                                        "is text or null"]),
    "csv_logger_dir_null": (["logger.csv.save_dir=null"], ["a path under 'logger.csv' is null; give a path"]),
    "ckpt_path_missing": (["ckpt_path=/nonexistent/x.ckpt"], ["ckpt_path '/nonexistent/x.ckpt' is not a file"]),
    "ckpt_path_last_without_run": (["ckpt_path=last"], ["ckpt_path=last but", "last.ckpt does not exist",
                                                        "hydra.run.dir=<that dir>"]),
}
FORMATS = {  # other data groups: their own mandatory keys and roots
    "csv_without_num_classes": (["data=csv", "debug=fast"], ["config key 'data.num_classes' has no value",
                                                             "data.num_classes=..."]),
    "cub_root_missing": (["data=cub", "data.root=/nonexistent/cub", "debug=fast"],
                         ["CUB-200-2011 root not found: /nonexistent/cub"]),
    # the cam_method group's own keys are top-level keys, interpolated into the callback: the line names them
    "scorecam_batch_size_zero": (["cam_method=scorecam", "cam_method.batch_size=0", "debug=fast"],
                                 ["cam_method.batch_size must be an integer >= 1", "(config key 'cam_method.batch_size')"]),
    "smoothgradcampp_sigma_negative": (["cam_method=smoothgradcampp", "cam_method.sigma=-1", "debug=fast"],
                                       ["cam_method.sigma must be a number >= 0", "(config key 'cam_method.sigma')"]),
    "scorecam_unknown_key": (["cam_method=scorecam", "+cam_method.foo=1", "debug=fast"],
                             ["cam_method=scorecam has no key foo", "(config key 'cam_method.foo')"]),
}


@pytest.mark.parametrize("case", sorted(SETUP) + sorted(FORMATS))
def test_setup_errors_are_one_line_naming_the_key_and_write_no_checkpoint(tiny_base, tmp_path, capsys, case):
    overrides, words = SETUP[case] if case in SETUP else FORMATS[case]
    from camlab.train import train

    out = tmp_path / "run"
    cfg = app_config(tiny_base if case in SETUP else base_config("train", overrides), overrides if case in SETUP else [],
                     out)
    with pytest.raises(SystemExit) as exc:
        run_app("camlab.train", train, cfg)
    message = str(exc.value.code)  # SystemExit("camlab: error: ...") exits with code 1
    assert message.startswith("camlab: error: ")
    short(message, *words, max_lines=1)
    assert not (out / "checkpoints").exists()
    clean(out)
    assert "Traceback" not in capsys.readouterr().err
