"""Hostile inputs of the other entry points: ``camlab-predict`` (missing, corrupt or wrong-kind model files, empty
and messy folders, URLs, bad options, a full disk), ``camlab-eval`` (checkpoints, maps, options) and
``camlab-compare`` (empty or foreign dirs, broken job files, an unknown ``--sort``, an unusable ``--out``).

All in-process through the entry points' ``main`` / ``run_app``: exit code, one line naming the file or option,
nothing written (or every readable image written and the others listed), nothing written before lost.
"""
from __future__ import annotations

import errno
import json
import os
import pathlib
import random
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from _tiny_checkpoint import DATA
from camlab.compare import main as compare_main
from camlab.predict import main as predict_main

from ._checks import clean, short, snapshot
from ._compose import app_config, base_config


@pytest.fixture(scope="module")
def files(tmp_path_factory, trained):
    """Model files of every wrong kind, image folders of every mess, next to the real tiny checkpoint."""
    d = tmp_path_factory.mktemp("hostile_inputs")
    ckpt = trained["ckpt"]
    (d / "random.ckpt").write_bytes(random.Random(0).randbytes(3000))
    (d / "truncated.ckpt").write_bytes(ckpt.read_bytes()[:2000])
    (d / "empty.ckpt").write_bytes(b"")
    with zipfile.ZipFile(d / "zip.ckpt", "w") as zf:
        zf.writestr("readme.txt", "not a checkpoint")
    torch.save({"fc.weight": torch.zeros(2, 2), "fc.bias": torch.zeros(2)}, d / "state_dict.pth")
    (d / "images").mkdir()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(d / "images" / "good.png")
    (d / "messy").mkdir()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(d / "messy" / "good.png")
    Image.fromarray((np.tile(np.arange(40), (30, 1)) * 1500).astype(np.uint16)).save(d / "messy" / "deep16.png")
    (d / "messy" / "._good.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble metadata")  # macOS resource fork
    (d / "messy" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (d / "messy" / "gone.png").symlink_to(d / "nowhere.png")
    (d / "empty_dir").mkdir()
    (d / "hidden_only").mkdir()
    (d / "hidden_only" / ".thumb.png").write_bytes(b"x")
    (d / "a_file").write_text("not a folder\n")
    (d / "names_latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    (d / "names_two.txt").write_text("a\nb\n")
    (d / "text.jpg").write_text("hello\n")
    return d


def _predict(argv):
    """camlab-predict ARGV in this process: its SystemExit (None when it ended without one)."""
    try:
        predict_main([*argv, "--device", "cpu"] if "--device" not in argv else argv)
    except SystemExit as exc:
        return exc
    return None


# ---- camlab-predict: model files and options ------------------------------------------------------------------
PREDICT = {  # case -> (argv with {d} = the files folder, {ckpt} = the good checkpoint; words of the one line)
    "model_missing": (["{d}/nope.ckpt", "{d}/images"], ["model file {d}/nope.ckpt not found"]),
    "model_is_a_run_dir": (["{run}", "{d}/images"], ["model file {run} is a directory",
                                                    "give the checkpoint file itself"]),
    "model_random_bytes": (["{d}/random.ckpt", "{d}/images"], ["cannot read checkpoint '{d}/random.ckpt'",
                                                              "not a complete torch file"]),
    "model_truncated": (["{d}/truncated.ckpt", "{d}/images"], ["cannot read checkpoint '{d}/truncated.ckpt'"]),
    "model_empty": (["{d}/empty.ckpt", "{d}/images"], ["cannot read checkpoint '{d}/empty.ckpt'"]),
    "model_foreign_zip": (["{d}/zip.ckpt", "{d}/images"], ["cannot read checkpoint '{d}/zip.ckpt'"]),
    "state_dict_without_torchvision": (["{d}/state_dict.pth", "{d}/images"],
                                       ["'{d}/state_dict.pth' is not a camlab-train checkpoint", "--torchvision ARCH"]),
    "camlab_ckpt_as_torchvision": (["--torchvision", "resnet18", "--weights", "{ckpt}", "{d}/images"],
                                   ["'{ckpt}' is not a torchvision resnet18 state dict: no 'fc.weight' key"]),
    "torchvision_without_weights": (["--torchvision", "resnet18", "{d}/images"],
                                    ["--torchvision ARCH needs --weights <state-dict file>"]),
    "torchvision_unknown_arch": (["--torchvision", "resnet999", "--weights", "{d}/state_dict.pth", "{d}/images"],
                                 ["torchvision arch 'resnet999' is not supported as a CAM model"]),
    "model_url": (["https://example.com/m.ckpt", "{d}/images"],
                  ["model file https://example.com/m.ckpt is a URL: camlab-predict reads local files only",
                   "curl -LO"]),
    "image_url": (["{ckpt}", "https://example.com/cat.jpg"],
                  ["input https://example.com/cat.jpg is a URL", "download it first"]),
    "only_a_model": (["{ckpt}"], ["give a model file and at least one image or folder"]),
    "empty_folder": (["{ckpt}", "{d}/empty_dir"], ["no image files (.jpg", "in directory {d}/empty_dir"]),
    "hidden_files_only": (["{ckpt}", "{d}/hidden_only"], ["no image files", "in directory {d}/hidden_only"]),
    "input_missing": (["{ckpt}", "{d}/nope"], ["input {d}/nope does not exist"]),
    "out_is_a_file": (["{ckpt}", "{d}/images", "--out", "{d}/a_file"],
                      ["--out {d}/a_file is an existing file, not a directory"]),
    "out_inside_a_file": (["{ckpt}", "{d}/images", "--out", "{d}/a_file/preds"],
                          ["--out {d}/a_file/preds is inside {d}/a_file, an existing file"]),
    "threshold_range": (["{ckpt}", "{d}/images", "--threshold", "1.5"], ["--threshold must be in [0, 1), got 1.5"]),
    "threshold_nan": (["{ckpt}", "{d}/images", "--threshold", "nan"], ["--threshold must be in [0, 1), got nan"]),
    "topk_zero": (["{ckpt}", "{d}/images", "--topk", "0"], ["--topk must be >= 1, got 0"]),
    "class_names_missing": (["{ckpt}", "{d}/images", "--class-names", "{d}/nope.txt"],
                            ["class names file '{d}/nope.txt' not found"]),
    "class_names_latin1": (["{ckpt}", "{d}/images", "--class-names", "{d}/names_latin1.txt"],
                           ["cannot read --class-names file {d}/names_latin1.txt: not UTF-8 text"]),
    "class_names_count": (["{ckpt}", "{d}/images", "--class-names", "{d}/names_two.txt"],
                          ["class names file '{d}/names_two.txt' has 2 names but the model has 5 classes"]),
}


@pytest.mark.parametrize("case", sorted(PREDICT))
def test_predict_refuses_bad_models_and_options_in_one_line_writing_nothing(files, trained, tmp_path, case):
    argv, words = PREDICT[case]
    subs = {"d": files, "ckpt": trained["ckpt"], "run": trained["run_dir"]}
    argv = [a.format(**subs) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "preds")]
    exc = _predict(argv)
    assert exc is not None and str(exc.code).startswith("camlab: error: ")
    short(str(exc.code), *(w.format(**subs) for w in words), max_lines=1)
    assert not (tmp_path / "preds").exists()


@pytest.mark.parametrize("option, value, words", [
    ("--device", "bogus", "argument --device: 'bogus' is not a torch device"),
    ("--batch-size", "0", "argument --batch-size: must be >= 1, got 0"),
    ("--image-size", "0", "argument --image-size: must be >= 1, got 0"),
    ("--cam-method", "bogus", "argument --cam-method: invalid choice: 'bogus'"),
])
def test_predict_option_errors_are_argparse_usage_and_exit_2(files, trained, tmp_path, capsys, option, value, words):
    exc = _predict([str(trained["ckpt"]), str(files / "images"), "--out", str(tmp_path / "p"), option, value])
    assert exc.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == f"camlab-predict: error: {words}" or words in err.strip().splitlines()[-1]
    assert "Traceback" not in err and not (tmp_path / "p").exists()


# ---- camlab-predict: messy folders, a full disk ------------------------------------------------------------------
def test_one_unreadable_file_does_not_stop_the_folder(files, trained, tmp_path, capsys):
    messy, out = files / "messy", tmp_path / "preds"
    exc = _predict([str(trained["ckpt"]), str(messy), "--out", str(out)])
    message = short(str(exc.code), f"camlab: error: cannot read image {messy / 'broken.jpg'}:", "(and 1 more)",
                    max_lines=1)
    assert message.endswith(f"the 2 other image(s) were predicted, the unreadable ones are listed under "
                            f"'unreadable' in {out / 'predictions.json'}")
    doc = json.loads((out / "predictions.json").read_text())
    assert [e["image"] for e in doc["images"]] == [str(messy / "deep16.png"), str(messy / "good.png")]
    assert [u["image"] for u in doc["unreadable"]] == [str(messy / "broken.jpg"), str(messy / "gone.png")]
    assert sorted(p.name for p in out.iterdir()) == ["deep16_cam.png", "good_cam.png", "predictions.json"]
    err = capsys.readouterr().err
    assert "skipped 1 hidden file(s)" in err and "first: ._good.png" in err
    clean(out)
    # the 16-bit ramp is predicted as a ramp (PIL's convert("RGB") would give a white image)
    from camlab.predict import read_image

    ramp = read_image(messy / "deep16.png")
    assert ramp[:, 0].max() == 0 and ramp[:, -1].min() == round(39 * 1500 / 65535 * 255)


def test_only_unreadable_images_write_just_the_list(files, trained, tmp_path):
    out = tmp_path / "preds"
    exc = _predict([str(trained["ckpt"]), str(files / "text.jpg"), "--out", str(out)])
    short(str(exc.code), f"cannot identify image file '{files / 'text.jpg'}'", "the 0 other image(s) were predicted",
          max_lines=1)
    doc = json.loads((out / "predictions.json").read_text())
    assert doc["images"] == [] and [u["image"] for u in doc["unreadable"]] == [str(files / "text.jpg")]


def test_a_rerun_replaces_the_old_predictions_whole(files, trained, tmp_path):
    out = tmp_path / "preds"
    out.mkdir()
    (out / "predictions.json").write_text('{"images": ["from an earlier run"]}\n')
    (out / "notes.txt").write_text("mine\n")
    assert _predict([str(trained["ckpt"]), str(files / "images"), "--out", str(out)]) is None
    assert [e["image"] for e in json.loads((out / "predictions.json").read_text())["images"]] == [
        str(files / "images" / "good.png")]
    assert (out / "notes.txt").read_text() == "mine\n"  # not ours: untouched
    clean(out)


def test_a_full_disk_leaves_no_partial_predictions_json(files, trained, tmp_path, monkeypatch):
    from camlab import atomic

    real_replace = atomic.os.replace

    def full(src, dst):  # the overlay lands; predictions.json's rename finds the disk full
        if str(dst).endswith("predictions.json"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", full)
    out = tmp_path / "preds"
    exc = _predict([str(trained["ckpt"]), str(files / "images" / "good.png"), "--out", str(out)])
    assert str(exc.code) == (f"camlab: error: cannot write {out / 'predictions.json'}: No space left on device; "
                             f"free disk space or choose another --out directory")
    assert sorted(p.name for p in out.iterdir()) == ["good_cam.png"]  # no predictions.json, no temporary file


# ---- camlab-eval ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def eval_base():
    return base_config("eval", [*DATA, "callbacks.cam_localization.faithfulness.stages=[]"])


def _eval(base, overrides, out):
    from camlab.eval import evaluate
    from camlab.runtime.app import run_app

    with pytest.raises(SystemExit) as exc:
        run_app("camlab.eval", evaluate, app_config(base, overrides, out))
    return str(exc.value.code)


@pytest.fixture(scope="module")
def maps(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile_maps")
    (d / "empty").mkdir()
    rng = np.random.default_rng(0)
    np.savez(d / "nan.npz", **{str(i): np.full((8, 8), np.nan, np.float32) for i in range(20)})
    np.savez(d / "rgb.npz", **{str(i): np.zeros((8, 8, 3), np.float32) for i in range(20)})
    np.savez(d / "few.npz", **{str(i): rng.random((8, 8), np.float32) for i in range(5)})
    np.savez(d / "ok.npz", **{str(i): rng.random((8, 8), np.float32) for i in range(20)})
    (d / "corrupt.npz").write_bytes(b"PK\x03\x04 not a zip")
    return d


EVAL = {  # case -> (overrides with {d}, {m}, {ckpt}; words of the one line)
    "no_model": ([], ["ckpt_path is required: camlab-eval ckpt_path=<file.ckpt>"]),
    "ckpt_missing": (["ckpt_path=/nonexistent.ckpt"], ["ckpt_path '/nonexistent.ckpt' is not a file"]),
    "ckpt_is_a_folder": (["ckpt_path={d}"], ["ckpt_path '{d}' is not a file"]),
    "ckpt_random_bytes": (["ckpt_path={d}/random.ckpt"], ["cannot read checkpoint '{d}/random.ckpt'"]),
    "ckpt_truncated": (["ckpt_path={d}/truncated.ckpt"], ["cannot read checkpoint '{d}/truncated.ckpt'"]),
    "ckpt_empty": (["ckpt_path={d}/empty.ckpt"], ["cannot read checkpoint '{d}/empty.ckpt'"]),
    "ckpt_foreign_zip": (["ckpt_path={d}/zip.ckpt"], ["cannot read checkpoint '{d}/zip.ckpt'"]),
    "state_dict_as_ckpt": (["ckpt_path={d}/state_dict.pth"], ["'{d}/state_dict.pth' is not a Lightning/camlab "
                                                             "checkpoint", "torchvision.arch=<arch>"]),
    "torchvision_without_weights": (["torchvision.arch=resnet18"], ["torchvision.arch=resnet18 needs "
                                                                    "torchvision.weights="]),
    "torchvision_and_ckpt": (["torchvision.arch=resnet18", "torchvision.weights={d}/state_dict.pth",
                              "ckpt_path={ckpt}"], ["pass either ckpt_path or torchvision.arch"]),
    "camlab_ckpt_as_torchvision": (["torchvision.arch=resnet18", "torchvision.weights={ckpt}"],
                                   ["is not a torchvision resnet18 state dict"]),
    "split": (["ckpt_path={ckpt}", "split=bogus"], ["split must be one of test, val, got 'bogus'"]),
    "flag_text": (["ckpt_path={ckpt}", "model_from_checkpoint=maybe"],
                  ["model_from_checkpoint must be true or false, got 'maybe'"]),
    "save_cams_text": (["ckpt_path={ckpt}", "eval.save_cams=yes"], ["eval.save_cams must be true or false"]),
    "data_of_other_classes": (["ckpt_path={ckpt}", "data.num_classes=3"],
                              ["the data has 3 classes but the model has 5"]),
    "maps_missing": (["maps=/nonexistent"], ["maps='/nonexistent' does not exist"]),
    "maps_empty_folder": (["maps={m}/empty"], ["maps='{m}/empty' holds no maps"]),
    "maps_nan": (["maps={m}/nan.npz"], ["map {m}/nan.npz:0.npy has NaN values"]),
    "maps_not_2d": (["maps={m}/rgb.npz"], ["map {m}/rgb.npz:0.npy has shape (8, 8, 3): a map must be 2-D"]),
    "maps_corrupt": (["maps={m}/corrupt.npz"], ["cannot read maps='{m}/corrupt.npz' as an .npz file"]),
    "maps_too_few": (["maps={m}/few.npz"], ["15 of the 20 test images have no map in {m}/few.npz"]),
    "maps_too_few_with_model": (["maps={m}/few.npz", "ckpt_path={ckpt}"], ["15 of the 20 test images have no map"]),
    "maps_key": (["maps={m}/ok.npz", "maps_key=bogus"], ["maps_key must be one of auto, index, path"]),
    "maps_resize": (["maps={m}/ok.npz", "maps_resize=bogus"], ["maps_resize must be one of bicubic, bilinear"]),
}


@pytest.mark.parametrize("case", sorted(EVAL))
def test_eval_refuses_bad_inputs_in_one_line_writing_nothing(files, maps, trained, eval_base, tmp_path, case):
    overrides, words = EVAL[case]
    subs = {"d": files, "m": maps, "ckpt": trained["ckpt"]}
    out = tmp_path / "eval"
    message = _eval(eval_base, [o.format(**subs) for o in overrides], out)
    assert message.startswith("camlab: error: ")
    short(message, *(w.format(**subs) for w in words), max_lines=1)
    assert not (out / "metrics.json").exists() and not (out / "per_image.csv").exists()
    clean(out)


# ---- camlab-compare ------------------------------------------------------------------------------------------------
def _job(path, metrics="epoch,step,val/acc,val/loc/MaxBoxAccV2\n0,2,0.5,40\n1,5,0.6,45\n", config=None,
         eval_json=None):
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "config.yaml").write_text(config or "train: true\ntest: false\ntrainer:\n  max_epochs: 2\n")
    (path / ".hydra" / "overrides.yaml").write_text(f"- model.optimizer.lr=0.00{path.name}\n")
    (path / "csv").mkdir()
    (path / "csv" / "metrics.csv").write_text(metrics)
    if eval_json is not None:
        (path / "metrics.json").write_text(eval_json)


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile_compare")
    for job in ("0", "1"):
        _job(d / "sweep" / job)
    evals = {"0": "", "1": "{\"split\": \"test\", \"metr", "2": json.dumps({"split": "test", "metrics": {}})}
    for job, text in evals.items():  # an empty and a cut metrics.json: no finished evaluation
        _job(d / "evals" / job, metrics="epoch,step,test/acc,test/loc/MaxBoxAccV2\n0,0,0.5,40\n",
             config="split: test\neval: {save_cams: false}\n", eval_json=text)
    (d / "empty").mkdir()
    _job(d / "parent" / "sweep_a" / "0")
    (d / "a_file").write_text("x\n")
    return d


def _compare(argv, capsys):
    try:
        compare_main([str(a) for a in argv])
        code = 0
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.err, captured.out


@pytest.mark.parametrize("case, argv, words", [
    ("missing", ["{d}/nope"], ["{d}/nope does not exist (expected a multirun sweep dir"]),
    ("a_file", ["{d}/a_file"], ["{d}/a_file is not a directory"]),
    ("empty_dir", ["{d}/empty"], ["{d}/empty has no job dirs"]),
    ("dir_of_sweeps", ["{d}/parent"], ["{d}/parent has no job dirs", "pass one of them (newest: {d}/parent/sweep_a)"]),
    ("unknown_sort", ["{d}/sweep", "--sort", "val/nope", "--no-files"],
     ["--sort val/nope: no job logged it; logged: val/acc, val/loc/MaxBoxAccV2"]),
    ("out_is_a_file", ["{d}/sweep", "--out", "{d}/a_file"], ["--out {d}/a_file is a file, not a directory"]),
    ("bad_window", ["{d}/sweep", "--running-window", "abc"], ["argument --running-window: invalid float value"]),
])
def test_compare_refuses_bad_inputs_in_one_line_exit_2(sweeps, capsys, case, argv, words):
    before = snapshot(sweeps)
    code, err, out = _compare([a.format(d=sweeps) for a in argv], capsys)
    assert code == 2
    last = err.strip().splitlines()[-1]
    short(last, "camlab-compare: error: ", *(w.format(d=sweeps) for w in words), max_lines=1)
    assert "Traceback" not in err and "wrote" not in out  # refused before any work: no table, no file
    clean(sweeps, before, allow_new=False)


def test_compare_marks_an_eval_job_with_a_broken_metrics_json_failed(sweeps, capsys):
    code, err, out = _compare([sweeps / "evals", "--sort", "test/loc/MaxBoxAccV2", "--no-files", "--running-window", "0"],
                              capsys)  # its files are new: not "running"
    assert code == 0
    assert "job 0: failed: unreadable metrics.json (JSONDecodeError" in out
    assert "job 1: failed: unreadable metrics.json (JSONDecodeError" in out
    assert "job 2:" not in out  # the whole one is finished


def test_compare_on_a_full_disk_keeps_the_old_comparison_and_says_where(sweeps, tmp_path, capsys, monkeypatch):
    from camlab import atomic

    out = tmp_path / "cmp"
    out.mkdir()
    (out / "comparison.csv").write_text("an earlier comparison\n")
    before = snapshot(out)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "replace", full)
    code, err, _ = _compare([sweeps / "sweep", "--out", out], capsys)
    assert code == 2
    short(err, f"camlab-compare: error: {out / 'comparison.csv'}: No space left on device", max_lines=1)
    clean(out, before, allow_new=False)


def test_compare_on_a_read_only_out_names_it(sweeps, tmp_path, capsys, monkeypatch):
    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(pathlib.Path, "mkdir", read_only)
    code, err, _ = _compare([sweeps / "sweep", "--out", tmp_path / "ro"], capsys)
    assert code == 2
    short(err, f"camlab-compare: error: {tmp_path / 'ro'}: Read-only file system", max_lines=1)
