"""Hostile images: every PIL mode and bit depth, truncated / empty / mislabelled files, zero-size and extreme
aspect ratios, directories and symbolic links where an image is expected, decompression bombs.

Readable images must give the right pixels (checked against values worked out by hand here); the others a
one-line :class:`~camlab.errors.DataError` naming the file (or, with ``skip_corrupt``, a skip that is counted).
"""
from __future__ import annotations

import logging
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from camlab.data.custom import CSVDataset
from camlab.data.images import read_rgb, to_rgb
from camlab.errors import ConfigError, DataError

from ._checks import clean, short, snapshot

KW = {"image_size": 16, "resize_size": 20}


def _png(path, width, height, depth, color_type, rows: bytes) -> None:
    """A PNG written byte by byte (PIL cannot write 48-bit RGB or a zero-width image)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


def _palette(path):
    im = Image.new("P", (4, 3), 3)
    im.putpalette([0, 0, 0] * 3 + [10, 20, 30] + [0, 0, 0] * 252)
    im.save(path)


def _gif(path):
    frames = [Image.new("L", (4, 3), v) for v in (60, 200)]
    frames[0].save(path, save_all=True, append_images=frames[1:])


def _rgb48(path):
    px = np.zeros((3, 4, 3), ">u2")
    px[..., 0], px[..., 1], px[..., 2] = 65535, 257 * 100, 300  # high bytes 255, 100, 1
    _png(path, 4, 3, 16, 2, b"".join(b"\x00" + row.tobytes() for row in px))


def _exif(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


# name -> (writer, the RGB pixel (0, 0) read_rgb must give, the orientation it must report)
READABLE = {
    "bilevel.png": (lambda p: Image.new("1", (4, 3), 1).save(p), (255, 255, 255), 1),
    "grey.png": (lambda p: Image.new("L", (4, 3), 77).save(p), (77, 77, 77), 1),
    "grey_alpha.png": (lambda p: Image.new("LA", (4, 3), (90, 0)).save(p), (90, 90, 90), 1),  # alpha dropped
    "palette.png": (_palette, (10, 20, 30), 1),
    "rgba.png": (lambda p: Image.new("RGBA", (4, 3), (200, 10, 10, 0)).save(p), (200, 10, 10), 1),
    "cmyk.tif": (lambda p: Image.new("CMYK", (4, 3), (255, 0, 0, 0)).save(p), (0, 255, 255), 1),
    "cmyk_black.tif": (lambda p: Image.new("CMYK", (4, 3), (0, 0, 0, 255)).save(p), (0, 0, 0), 1),
    "deep16.png": (lambda p: Image.fromarray(np.full((3, 4), 65535, np.uint16)).save(p), (255, 255, 255), 1),
    "int32.tif": (lambda p: Image.fromarray(np.full((3, 4), 13107, np.int32), "I").save(p), (51, 51, 51), 1),
    "rgb48.png": (_rgb48, (255, 100, 1), 1),  # 16 bits per channel: PIL keeps the high byte (v / 257)
    "animated.gif": (_gif, (60, 60, 60), 1),  # the first frame
    "png_named.jpg": (lambda p: Image.new("RGB", (4, 3), (1, 2, 3)).save(p, format="PNG"), (1, 2, 3), 1),
    "jpeg_named.png": (lambda p: Image.new("L", (4, 3), 128).save(p, format="JPEG"), (128, 128, 128), 1),
    "rotated.jpg": (lambda p: Image.new("L", (4, 3), 50).save(p, exif=_exif(6)), (50, 50, 50), 6),
    "broken_exif.jpg": (lambda p: Image.new("L", (4, 3), 50).save(p, exif=b"Exif\x00\x00not a tiff block"),
                        (50, 50, 50), 1),
}
# name -> (writer, words of the error) for files that cannot be read
UNREADABLE = {
    "truncated.png": (lambda p: p.write_bytes(_noise_png(p)[: len(_noise_png(p)) // 2]), "truncated"),
    "truncated.jpg": (lambda p: p.write_bytes(_noise_jpeg()[:300]), "cannot read image"),
    "empty.png": (lambda p: p.write_bytes(b""), "cannot identify image file"),
    "text.jpg": (lambda p: p.write_text("not an image\n"), "cannot identify image file"),
    "zero_width.png": (lambda p: _png(p, 0, 5, 8, 0, b""), "cannot identify image file"),
    "nan.tif": (lambda p: Image.fromarray(np.array([[0.5, np.nan]], np.float32), "F").save(p),
                "has NaN or infinite pixel values"),
    "inf.tif": (lambda p: Image.fromarray(np.array([[0.5, np.inf]], np.float32), "F").save(p),
                "has NaN or infinite pixel values"),
}


def _noise_png(path) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 30, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _noise_jpeg() -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 30, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile_images")
    for name, (write, *_) in {**READABLE, **UNREADABLE}.items():
        write(root / name)
    Image.new("RGB", (20, 12), (90, 90, 90)).save(root / "good.png")
    return root


@pytest.fixture
def quiet_once(monkeypatch):
    monkeypatch.setattr("camlab.data.images._WARNED", set())  # warned once per process: start afresh


def _csv(folder, name, rows, split="val"):
    (folder / name).write_text("path,label,x0,y0,x1,y1,split\n" + "".join(f"{r},{split}\n" for r in rows))
    return name


@pytest.mark.parametrize("name", sorted(READABLE))
def test_every_readable_mode_gives_the_pixels_worked_out_by_hand(folder, name, quiet_once):
    _, expected, orientation = READABLE[name]
    image, got_orientation = read_rgb(folder / name)
    assert image.mode == "RGB" and image.size == (4, 3)  # the stored grid, never rotated
    pixels = np.asarray(image)
    assert tuple(int(v) for v in pixels[0, 0]) == expected
    assert (pixels == pixels[0, 0]).all()  # a flat image stays flat
    assert got_orientation == orientation


@pytest.mark.parametrize("mode, value, expected", [
    ("YCbCr", (255, 128, 128), (255, 255, 255)),
    ("HSV", (0, 255, 255), (255, 0, 0)),
    ("I;16B", 65535, (255, 255, 255)),
    ("LAB", (255, 128, 128), (254, 255, 254)),  # L = 100, a = b = 0: white, to PIL's rounding
])
def test_in_memory_modes_convert_to_their_rgb(mode, value, expected, quiet_once):
    assert tuple(np.asarray(to_rgb(Image.new(mode, (2, 2), value), "x"))[0, 0]) == expected


@pytest.mark.parametrize("values, expected", [
    (np.array([[-100, -50, 100]], np.int32), [0, 64, 255]),  # outside 0..65535: the image's own min..max
    (np.array([[0, 20000, 100000]], np.int32), [0, 51, 255]),  # 50 x 255 / 200 = 63.75; 20000 x 255 / 1e5 = 51
    (np.array([[7.0, 7.0, 7.0]], np.float32), [0, 0, 0]),  # a constant float image of another range: black
])
def test_other_integer_and_float_ranges_are_stretched_from_their_min_max(values, expected, caplog, quiet_once):
    mode = "I" if values.dtype == np.int32 else "F"
    with caplog.at_level(logging.WARNING, logger="camlab.data"):
        rgb = np.asarray(to_rgb(Image.fromarray(values, mode), "odd.tif"))
    assert rgb[0, :, 0].tolist() == expected
    assert "odd.tif is a" in caplog.text and "stretched to 0..255" in caplog.text


def test_a_mode_pil_cannot_convert_is_refused_naming_the_mode():
    with pytest.raises(ValueError, match="conversion from La"):
        to_rgb(Image.new("La", (2, 2)), "x.png")


@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_unreadable_files_are_one_line_naming_the_file(folder, name):
    before = snapshot(folder)
    csv_name = _csv(folder, f"one_{name}.csv", [f"{name},0,0,0,1,1", "good.png,1,0,0,2,2"])
    with pytest.raises(DataError) as err:
        ds = CSVDataset(str(folder), csv_name, "val", **KW)  # the header is read at set-up
        ds[0]  # the pixels when loaded
    short(str(err.value), folder / name, UNREADABLE[name][1], max_lines=1)
    clean(folder, before)


def test_skip_corrupt_skips_and_counts_the_unreadable_ones(folder, caplog):
    name = _csv(folder, "skip.csv", ["truncated.png,0,0,0,1,1", "good.png,1,0,0,2,2", "nan.tif,0,0,0,1,1"])
    ds = CSVDataset(str(folder), name, "val", skip_corrupt=True, **KW)
    with caplog.at_level(logging.WARNING, logger="camlab.data"):
        samples = [ds[0], ds[1]]
    assert [s is None for s in samples] == [True, False]
    assert ds.report()["skipped_unreadable_while_loading"] == 1
    with pytest.raises(DataError, match="nan.tif"):  # NaN pixels are bad data, never skipped silently
        ds[2]


@pytest.mark.parametrize("kind", ["directory", "dangling_link", "link_loop"])
def test_a_path_that_is_no_image_file_is_named_at_set_up(folder, kind):
    name = f"{kind}.png"
    target = folder / name
    if kind == "directory":
        target.mkdir()
    elif kind == "dangling_link":
        target.symlink_to(folder / "gone.png")
    else:
        target.symlink_to(folder / "loop_b.png")
        (folder / "loop_b.png").symlink_to(target)
    csv_name = _csv(folder, f"{kind}.csv", [f"{name},0,0,0,1,1", "good.png,1,0,0,2,2"])
    with pytest.raises(DataError) as err:
        CSVDataset(str(folder), csv_name, "val", **KW)
    words = {"directory": "a directory, not an image file", "dangling_link": "broken symbolic link", "link_loop": "broken symbolic link"}[kind]
    short(str(err.value), target, words, max_lines=1)


def test_a_symbolic_link_to_an_image_reads_the_image(folder):
    (folder / "link.png").symlink_to(folder / "good.png")
    ds = CSVDataset(str(folder), _csv(folder, "link.csv", ["link.png,0,0,0,2,2", "good.png,1,0,0,2,2"]), "val", **KW)
    assert torch_equal(ds[0]["image"], ds[1]["image"])


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


def test_a_decompression_bomb_is_refused_naming_the_file(folder, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)  # good.png has 240 pixels: > 2 x the limit
    with pytest.raises(DataError) as err:  # at set-up: the header is enough
        CSVDataset(str(folder), _csv(folder, "bomb.csv", ["good.png,0,0,0,2,2"]), "val", num_classes=1, **KW)
    short(str(err.value), folder / "good.png", "decompression bomb", "Image.MAX_IMAGE_PIXELS", max_lines=1)
    assert "..." not in str(err.value) and ".." not in str(err.value).replace("...", "")


def test_an_image_of_another_size_than_its_annotations_say_is_named(folder):
    from camlab.data.records import Record, RecordDataset

    record = Record(path=str(folder / "good.png"), label=0, boxes=np.array([[0.0, 0.0, 3.0, 3.0]]), size=(40, 24),
                    source="sizes.txt line 7")
    ds = RecordDataset([record], ["a"], split="val", **KW)
    with pytest.raises(DataError) as err:
        ds[0]
    short(str(err.value), "good.png is 20x12", "sizes.txt line 7", "40x24", max_lines=1)


@pytest.mark.parametrize("size, box, split", [
    ((1, 300), (0, 100, 1, 200), "val"),   # W x H: a 1-pixel-wide strip
    ((300, 1), (100, 0, 200, 1), "val"),
    ((300, 1), (100, 0, 200, 1), "train"),
    ((1, 1), (0, 0, 1, 1), "val"),
])
def test_extreme_aspect_ratios_and_one_pixel_images_keep_their_box(folder, size, box, split):
    name = f"strip_{size[0]}x{size[1]}.png"
    Image.new("L", size, 200).save(folder / name)
    ds = CSVDataset(str(folder), _csv(folder, f"{name}.csv", [f"{name},0,{','.join(map(str, box))}"], split),
                    split, num_classes=1, **KW)
    sample = ds[0]
    assert tuple(sample["image"].shape) == (3, 16, 16)
    if split == "val":  # resized to 16 x 16: the box scales with the image, worked out by hand
        sx, sy = 16 / size[0], 16 / size[1]
        expected = [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy]
        assert sample["boxes"][0].tolist() == pytest.approx(expected)


def test_the_exif_orientation_is_warned_and_counted_not_applied(folder, caplog, quiet_once):
    name = _csv(folder, "exif.csv", ["rotated.jpg,0,0,0,2,2", "good.png,1,0,0,2,2"])
    with caplog.at_level(logging.WARNING, logger="camlab.data"):
        ds = CSVDataset(str(folder), name, "val", **KW)  # val boxes are scored: warned at set-up, with the count
        short(caplog.text, "1 of 2 image(s) have an EXIF orientation", "rotated.jpg (exif.csv line 2), orientation "
              "6 (a quarter turn)", "exif_transpose=True (config key data.exif_transpose)", max_lines=1)
        caplog.clear()
        for _ in range(2):  # two epochs: no second warning, the count stays 1
            ds[0], ds[1]
        assert ds.report()["exif_oriented"] == 1
    assert "EXIF" not in caplog.text


def test_a_training_image_with_an_exif_orientation_is_warned_when_loaded(folder, caplog, quiet_once):
    name = _csv(folder, "exif_train.csv", ["rotated.jpg,0,0,0,2,2", "good.png,1,0,0,2,2"], split="train")
    ds = CSVDataset(str(folder), name, "train", **KW)  # train boxes are not scored: no header scan at set-up
    with caplog.at_level(logging.WARNING, logger="camlab.data"):
        for _ in range(2):
            ds[0], ds[1]
        assert ds.report()["exif_oriented"] == 1
    assert "rotated.jpg has EXIF orientation 6" in caplog.text and "exif_transpose=True" in caplog.text
    assert "1 image(s) have an EXIF orientation" in caplog.text  # the count, at the end


@pytest.fixture(scope="module")
def turned(tmp_path_factory):
    """A 4 x 3 PNG stored with its one white pixel at the top-left, and EXIF orientation 6: viewers show it a
    quarter turn clockwise, 3 x 4 with the pixel at the top-right (x 2, y 0)."""
    root = tmp_path_factory.mktemp("hostile_exif")
    px = np.zeros((3, 4), np.uint8)
    px[0, 0] = 255
    Image.fromarray(px).save(root / "turned.png", exif=_exif(6))
    Image.new("L", (3, 4), 9).save(root / "upright.png")
    return root


def test_exif_transpose_turns_the_pixels_the_size_and_the_box_bounds_upright(turned, caplog):
    image, orientation = read_rgb(turned / "turned.png", exif_transpose=True)
    assert orientation == 6 and image.size == (3, 4)
    assert np.flatnonzero(np.asarray(image)[..., 0].ravel()).tolist() == [2]  # (x 2, y 0) of a 3-wide image
    assert read_rgb(turned / "turned.png")[0].size == (4, 3)  # not asked: as stored
    # a box over the whole upright 3 x 4 image: inside it when turned, past the stored 4 x 3 grid's bottom when not
    name = _csv(turned, "upright.csv", ["turned.png,0,0,0,3,4", "upright.png,1,0,0,3,4"])
    with caplog.at_level(logging.INFO, logger="camlab.data"):
        ds = CSVDataset(str(turned), name, "val", exif_transpose=True, **KW)
    assert ds.records[0].boxes.tolist() == [[0.0, 0.0, 3.0, 4.0]] and ds.counts["clipped_boxes"] == 0
    assert ds.records[0].size == (3, 4) and "turned upright (exif_transpose=True)" in caplog.text
    assert tuple(ds[0]["image"].shape) == (3, 16, 16)  # loads: its size matches the upright one
    stored = CSVDataset(str(turned), name, "val", **KW)
    assert stored.records[0].boxes.tolist() == [[0.0, 0.0, 3.0, 3.0]] and stored.counts["clipped_boxes"] == 1


def test_exif_transpose_must_be_true_or_false(turned):
    with pytest.raises(ConfigError) as err:
        CSVDataset(str(turned), _csv(turned, "flag.csv", ["upright.png,0,0,0,3,4"]), "val", exif_transpose="yes",
                   **KW)
    short(str(err.value), "exif_transpose must be true or false, got 'yes'", max_lines=1)
    assert tuple(err.value.settings) == ("exif_transpose",)


def test_a_file_given_twice_via_links_and_names_loads_both(folder):
    os.link(folder / "good.png", folder / "hardlink.png")
    ds = CSVDataset(str(folder), _csv(folder, "hard.csv", ["hardlink.png,0,0,0,2,2", "good.png,1,0,0,2,2"]), "val",
                    **KW)
    assert len(ds) == 2 and torch_equal(ds[0]["image"], ds[1]["image"])


def test_16bit_and_float_ramps_are_scaled_to_their_range_not_clamped_white(tmp_path, caplog, quiet_once):
    ramp = np.tile(np.arange(20, dtype=np.float64), (12, 1))  # (12, 20): a horizontal ramp
    Image.fromarray((ramp * 3000).astype(np.uint16)).save(tmp_path / "deep16.png")  # 0..57000 of 65535
    Image.fromarray((ramp / 19).astype(np.float32), "F").save(tmp_path / "unit.tif")  # 0..1
    Image.fromarray((ramp * 10 - 50).astype(np.float32), "F").save(tmp_path / "wide.tif")  # -50..140
    with caplog.at_level(logging.WARNING, logger="camlab.data"):
        deep, unit, wide = (np.asarray(read_rgb(tmp_path / n)[0]) for n in ("deep16.png", "unit.tif", "wide.tif"))
    assert Image.open(tmp_path / "deep16.png").mode == "I;16"  # PIL's convert("RGB") makes this all 255
    assert deep[0, :3, 0].tolist() == [0, 12, 23] and deep.max() == 222  # round(3000 k / 65535 * 255)
    assert unit[0, 0, 0] == 0 and unit[0, -1, 0] == 255  # [0, 1] -> 0..255
    assert wide[0, 0, 0] == 0 and wide[0, -1, 0] == 255  # other ranges: the image's own min..max
    assert "deep16.png is a I;16 image: 16-bit values 0..65535 scaled to 0..255" in caplog.text
    assert "unit.tif is a float image: values in [0, 1] scaled" in caplog.text
    assert "wide.tif is a F image with values -50..140: its own min..max stretched" in caplog.text


def test_a_16bit_training_image_reaches_the_batch_as_its_ramp(folder):
    Image.fromarray((np.tile(np.arange(20), (12, 1)) * 3000).astype(np.uint16)).save(folder / "ramp16.png")
    name = _csv(folder, "ramp.csv", ["ramp16.png,0,1,1,9,9", "good.png,1,1,1,9,9"], split="train")
    image = CSVDataset(str(folder), name, "train", train_augment=False, **KW)[0]["image"]  # (3, 16, 16), normalized
    assert float(image[0, :, -1].mean()) > float(image[0, :, 0].mean()) + 1.0  # dark left, bright right
