"""camlab-predict: a checkpoint + images or a folder -> one overlay PNG and one JSON entry per image."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from _tiny_checkpoint import tiny_checkpoint
from camlab.predict import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


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
