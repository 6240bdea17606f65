"""camlab-predict on a hostile folder: unreadable and AppleDouble files, 16-bit images, URLs, a full disk."""
from __future__ import annotations

import errno
import json
import os
import pathlib

import numpy as np
import pytest
from PIL import Image

from camlab.predict import main


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("messy")
    Image.new("RGB", (40, 30), (200, 10, 10)).save(folder / "good.png")
    Image.fromarray((np.tile(np.arange(40), (30, 1)) * 1500).astype(np.uint16)).save(folder / "deep16.png")
    (folder / "._good.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble metadata")  # macOS resource fork
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


def test_one_unreadable_file_does_not_stop_the_folder(trained, messy, tmp_path, capsys):
    out = tmp_path / "preds"
    with pytest.raises(SystemExit) as exc:
        main([str(trained["ckpt"]), str(messy), "--out", str(out), "--device", "cpu"])
    message = str(exc.value.code)
    assert message.startswith(f"camlab: error: cannot read image {messy / 'broken.jpg'}:")
    assert message.endswith(f"the 2 other image(s) were predicted, the unreadable ones are listed under "
                            f"'unreadable' in {out / 'predictions.json'}") and "\n" not in message
    doc = json.loads((out / "predictions.json").read_text())
    assert [e["image"] for e in doc["images"]] == [str(messy / "deep16.png"), str(messy / "good.png")]
    assert [u["image"] for u in doc["unreadable"]] == [str(messy / "broken.jpg")]
    assert sorted(p.name for p in out.iterdir()) == ["deep16_cam.png", "good_cam.png", "predictions.json"]
    err = capsys.readouterr().err
    assert "skipped 1 hidden file(s)" in err and "first: ._good.png" in err
    # the 16-bit ramp is predicted as a ramp (PIL's convert("RGB") would give a white image)
    from camlab.predict import read_image

    ramp = read_image(messy / "deep16.png")
    assert ramp[:, 0].max() == 0 and ramp[:, -1].min() == round(39 * 1500 / 65535 * 255)


@pytest.mark.parametrize("position", ["image", "model"])
def test_a_url_is_refused_clearly(trained, tmp_path, position):
    url = "https://example.com/cat.jpg"
    argv = [str(trained["ckpt"]), url] if position == "image" else ["https://example.com/m.ckpt", url]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--out", str(tmp_path / "o"), "--device", "cpu"])
    what = "input" if position == "image" else "model file"
    target = url if position == "image" else "https://example.com/m.ckpt"
    assert str(exc.value.code) == (f"camlab: error: {what} {target} is a URL: camlab-predict reads local files "
                                   f"only; download it first (e.g. curl -LO '{target}') and pass the file")
    assert not (tmp_path / "o").exists()


def test_full_disk_leaves_no_partial_predictions_json(trained, messy, tmp_path, monkeypatch):
    real = pathlib.Path.write_text

    def full(self, text, *args, **kwargs):
        real(self, text[:10], *args, **kwargs)  # a part gets written, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pathlib.Path, "write_text", full)
    out = tmp_path / "preds"
    with pytest.raises(SystemExit) as exc:
        main([str(trained["ckpt"]), str(messy / "good.png"), "--out", str(out), "--device", "cpu"])
    assert str(exc.value.code) == (f"camlab: error: cannot write {out / 'predictions.json'}: No space left on "
                                   f"device; free disk space or choose another --out directory")
    assert sorted(p.name for p in out.iterdir()) == ["good_cam.png"]  # no predictions.json, no temporary file
