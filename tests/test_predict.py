"""camlab-predict: a checkpoint + images or a folder -> one overlay PNG and one JSON entry per image."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from camlab.predict import main


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three validation images saved losslessly at 32 px (their tensors known), one non-square, a text file."""
    from camlab.data import SyntheticShapes

    folder = tmp_path_factory.mktemp("images")
    ds = SyntheticShapes("val", length=3, num_classes=5, image_size=32, seed=0, hflip=False)
    for i in range(2):
        Image.fromarray(ds.images[i].permute(1, 2, 0).numpy()).save(folder / f"val{i}.png")
    rgb = ds.images[2].permute(1, 2, 0).numpy()
    Image.fromarray(np.repeat(np.repeat(rgb, 2, axis=0), 3, axis=1)).save(folder / "wide.png")  # 64 x 96
    (folder / "notes.txt").write_text("not an image")
    return folder, ds


def test_predict_writes_one_overlay_and_one_json_entry_per_image(trained, images, tmp_path):
    from camlab.models.pretrained import load_checkpoint

    folder, ds = images
    out = tmp_path / "preds"
    main([str(trained["ckpt"]), str(folder), "--out", str(out), "--topk", "3", "--device", "cpu"])
    doc = json.loads((out / "predictions.json").read_text())
    assert [e["image"] for e in doc["images"]] == [str(folder / n) for n in ("val0.png", "val1.png", "wide.png")]
    assert sorted(p.name for p in out.glob("*.png")) == ["val0_cam.png", "val1_cam.png", "wide_cam.png"]
    assert doc["input_size"] == [32, 32]
    # the lossless 32 px files give exactly the dataset tensors: scores are the model's softmax on them
    model = load_checkpoint(trained["ckpt"])
    with torch.no_grad():
        probs = model(torch.stack([ds[0]["image"], ds[1]["image"]]))["logits"].softmax(dim=1)
    for i, entry in enumerate(doc["images"][:2]):
        preds = entry["predictions"]
        assert [p["rank"] for p in preds] == [1, 2, 3]
        assert [p["class"] for p in preds] == probs[i].argsort(descending=True)[:3].tolist()
        assert [p["score"] for p in preds] == pytest.approx(probs[i].sort(descending=True).values[:3].tolist(),
                                                           abs=1e-5)
        assert preds[0]["name"] == model.class_names[preds[0]["class"]]
    wide = doc["images"][2]
    assert (wide["width"], wide["height"]) == (96, 64)
    assert Image.open(out / "wide_cam.png").size == (96, 64 + 14)  # the overlay keeps the original size + caption
    for p in wide["predictions"]:  # boxes in original pixels: inside the image, x scaled by 3 and y by 2
        x0, y0, x1, y1 = p["box"]
        assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 64
        assert x0 % 3 == 0 and x1 % 3 == 0 and y0 % 2 == 0 and y1 % 2 == 0


def test_corrupt_image_is_one_clear_error_naming_it(trained, tmp_path, capsys):
    good, bad = tmp_path / "good.png", tmp_path / "broken.jpg"
    Image.new("RGB", (40, 40), (200, 10, 10)).save(good)
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    with pytest.raises(SystemExit) as exc:
        main([str(trained["ckpt"]), str(good), str(bad), "--out", str(tmp_path / "o"), "--device", "cpu"])
    message = str(exc.value.code)
    assert message.startswith(f"camlab: error: cannot read image {bad}:")
    assert "\n" not in message and "Traceback" not in capsys.readouterr().err


def test_bad_inputs_are_clear_errors(trained, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        ([str(trained["ckpt"]), str(tmp_path / "missing.png")], "input .*missing.png does not exist"),
        ([str(trained["ckpt"]), str(empty)], "no image files"),
        ([str(tmp_path / "nope.ckpt"), str(empty)], "nope.ckpt"),
        (["--torchvision", "resnet18", str(empty)], "--torchvision ARCH needs --weights"),
    ]
    for argv, pattern in cases:
        with pytest.raises(SystemExit, match=f"camlab: error: .*{pattern}"):
            main([*argv, "--out", str(tmp_path / "o")])


# ---- bad options and model files: one `camlab: error:` / argparse line naming the culprit, never a traceback ----
def _argparse_error(capsys, argv: list[str]) -> str:
    """Run main(argv), expecting argparse's usage error (exit 2); return its stderr."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("value", ["-2", "0"])
def test_batch_size_below_one_is_refused_not_a_silent_empty_run(trained, images, tmp_path, capsys, value):
    out = tmp_path / "o"
    err = _argparse_error(capsys, [str(trained["ckpt"]), str(images[0]), "--out", str(out), "--batch-size", value])
    assert f"argument --batch-size: must be >= 1, got {int(value)}" in err
    assert not out.exists()  # nothing written (before: exit 0 with "images": [])


def test_unknown_device_names_the_flag_and_lists_examples(trained, images, tmp_path, capsys):
    err = _argparse_error(capsys, [str(trained["ckpt"]), str(images[0]), "--out", str(tmp_path / "o"),
                                   "--device", "gpu"])
    assert "argument --device: 'gpu' is not a torch device" in err and "cuda:1" in err and "cpu" in err


def test_device_strings_torch_accepts_pass_the_parser():
    from camlab.predict import parse_args

    for value in ("auto", "cpu", "cpu:0", "cuda", "cuda:1", "mps"):
        assert parse_args(["m.ckpt", "x.png", "--device", value]).device == value


def test_out_naming_an_existing_file_is_a_clear_error(trained, images, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    for out in (afile, afile / "sub"):
        with pytest.raises(SystemExit) as exc:
            main([str(trained["ckpt"]), str(images[0]), "--out", str(out), "--device", "cpu"])
        message = str(exc.value.code)
        assert message.startswith(f"camlab: error: --out {out} ") and "not a directory" in message
        assert "Traceback" not in capsys.readouterr().err
    assert afile.read_text() == "keep me"


def test_image_size_zero_names_the_flag(trained, images, tmp_path, capsys):
    err = _argparse_error(capsys, [str(trained["ckpt"]), str(images[0]), "--out", str(tmp_path / "o"),
                                   "--image-size", "0"])
    assert "argument --image-size: must be >= 1, got 0" in err


@pytest.mark.parametrize("kind", ["truncated", "garbage", "image"])
def test_unreadable_model_file_is_one_line_naming_it(trained, images, tmp_path, capsys, kind):
    folder = images[0]
    if kind == "truncated":
        model = tmp_path / "trunc.ckpt"
        data = trained["ckpt"].read_bytes()
        model.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        model = tmp_path / "garbage.ckpt"
        model.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    else:
        model = folder / "val0.png"
    with pytest.raises(SystemExit) as exc:
        main([str(model), str(folder), "--out", str(tmp_path / "o"), "--device", "cpu"])
    message = str(exc.value.code)
    assert message.startswith("camlab: error: ") and str(model) in message and "\n" not in message
    assert "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_raw_torch_load_errors_are_wrapped_naming_the_file(trained, images, tmp_path, monkeypatch):
    """Whatever torch.load raises for a foreign file (not only camlab's ConfigError) becomes one line."""
    import pickle

    import camlab.models.pretrained as pretrained

    errors = [RuntimeError("PytorchStreamReader failed reading zip archive: failed finding central directory\n"
                           "frame #0: c10::Error ..."), pickle.UnpicklingError("invalid load key, '\\xff'."),
              EOFError("Ran out of input")]
    for error in errors:
        def fail(*args, _error=error, **kwargs):
            raise _error
        monkeypatch.setattr(pretrained, "load_cam_model", fail)
        with pytest.raises(SystemExit) as exc:
            main([str(trained["ckpt"]), str(images[0]), "--out", str(tmp_path / "o"), "--device", "cpu"])
        message = str(exc.value.code)
        first = str(error).splitlines()[0]
        assert message == (f"camlab: error: cannot read checkpoint {trained['ckpt']}: {type(error).__name__}: "
                           f"{first}; is it a camlab .ckpt or a state dict (with --torchvision ARCH --weights)?")


def test_class_names_file_not_utf8_names_it(trained, images, tmp_path):
    names = tmp_path / "names.txt"
    names.write_bytes(b"cat\n\xff\xfe\x97dog\n")
    with pytest.raises(SystemExit, match=f"camlab: error: cannot read --class-names file {names}: not UTF-8"):
        main([str(trained["ckpt"]), str(images[0]), "--out", str(tmp_path / "o"), "--device", "cpu",
              "--class-names", str(names)])


def test_exif_transpose_predicts_the_upright_image_and_the_default_the_stored_one(trained, images, tmp_path, capsys):
    folder, ds = images
    stored = Image.fromarray(np.asarray(Image.open(folder / "wide.png")))  # 96 wide x 64 high
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed a quarter turn clockwise: upright it is 64 wide x 96 high
    shot = tmp_path / "in" / "shot.png"
    shot.parent.mkdir()
    stored.save(shot, exif=exif.tobytes())
    main([str(trained["ckpt"]), str(shot), "--out", str(tmp_path / "as_stored"), "--device", "cpu"])
    note = capsys.readouterr().err
    assert "1 image(s) have an EXIF orientation" in note and "--exif-transpose" in note
    main([str(trained["ckpt"]), str(shot), "--out", str(tmp_path / "upright"), "--device", "cpu", "--exif-transpose"])
    assert "EXIF orientation" not in capsys.readouterr().err  # asked for: no note
    as_stored = json.loads((tmp_path / "as_stored" / "predictions.json").read_text())
    upright = json.loads((tmp_path / "upright" / "predictions.json").read_text())
    assert (as_stored["images"][0]["width"], as_stored["images"][0]["height"]) == (96, 64)
    assert (upright["images"][0]["width"], upright["images"][0]["height"]) == (64, 96)
    assert upright["exif_transpose"] is True and as_stored["exif_transpose"] is False
    assert upright["exif_oriented"] == as_stored["exif_oriented"] == [str(shot)]
    assert Image.open(tmp_path / "upright" / "shot_cam.png").size[0] < Image.open(
        tmp_path / "as_stored" / "shot_cam.png").size[0]  # the overlay is drawn on the upright image


def test_data_warnings_reach_the_terminal_as_camlab_notes(trained, tmp_path):
    """In a real process (no logging set up, unlike under pytest) a 16-bit image's warning is a ``camlab: note:``
    line beside predict's own lines, not a bare log message."""
    import subprocess
    import sys

    deep = tmp_path / "deep.png"
    Image.fromarray((np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 60)).save(deep)
    done = subprocess.run([sys.executable, "-m", "camlab.predict", str(trained["ckpt"]), str(deep), "--out",
                           str(tmp_path / "out"), "--device", "cpu"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    notes = [line for line in done.stderr.splitlines() if "I;16" in line]
    assert len(notes) == 1 and notes[0].startswith(f"camlab: note: {deep} is a I;16 image: 16-bit values"), done.stderr
