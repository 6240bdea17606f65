"""Hostile data on disk: image modes and bit depths, EXIF orientation, non-finite / zero-area boxes, annotation
files in other encodings or of the wrong structure. Each is read correctly (and said so) or refused with one
line naming the file and the entry."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from PIL import Image

from camlab.data.custom import COCODataset, CSVDataset
from camlab.data.cub import read_cub
from camlab.data.images import read_rgb, to_rgb
from camlab.errors import DataError

KW = {"image_size": 16, "resize_size": 20}
HEADER = "path,label,x0,y0,x1,y1,split\n"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Tiny images of several modes, shared by the tests (each test writes its own annotation file)."""
    root = tmp_path_factory.mktemp("hostile_data")
    ramp = np.tile(np.arange(20, dtype=np.float64), (12, 1))  # (12, 20): a horizontal ramp
    Image.fromarray((ramp * 3000).astype(np.uint16)).save(root / "deep16.png")  # 0..57000 of 65535
    Image.fromarray((ramp / 19).astype(np.float32), "F").save(root / "unit.tif")  # 0..1
    Image.fromarray((ramp * 10 - 50).astype(np.float32), "F").save(root / "wide.tif")  # -50..140
    nan = (ramp / 19).astype(np.float32)
    nan[3, 4] = np.nan
    Image.fromarray(nan, "F").save(root / "nan.tif")
    Image.fromarray(np.full((12, 20, 3), 90, np.uint8)).save(root / "rgb.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(np.full((12, 20, 3), 90, np.uint8)).save(root / "rotated.jpg", exif=exif.tobytes())
    return root


def _csv(folder, name, rows, header=HEADER, encoding="utf-8", bom=False):
    text = header + "".join(rows)
    (folder / name).write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode(encoding))
    return name


# ---- image modes -----------------------------------------------------------------------------------------
def test_16bit_and_float_images_are_scaled_to_their_range_not_clamped_white(folder, caplog, monkeypatch):
    monkeypatch.setattr("camlab.data.images._WARNED", set())  # warned once per process: start afresh
    with caplog.at_level(logging.WARNING, logger="camlab.data"):
        deep = np.asarray(read_rgb(folder / "deep16.png")[0])
        unit = np.asarray(read_rgb(folder / "unit.tif")[0])
        wide = np.asarray(read_rgb(folder / "wide.tif")[0])
    assert Image.open(folder / "deep16.png").mode == "I;16"  # PIL's convert("RGB") makes this all 255
    assert deep.shape == (12, 20, 3) and (deep[..., 0] == deep[..., 2]).all()
    assert deep[0].tolist()[:3] == [[0] * 3, [12] * 3, [23] * 3]  # round(3000 k / 65535 * 255)
    assert deep.max() == round(57000 / 65535 * 255)
    assert unit[0, 0, 0] == 0 and unit[0, -1, 0] == 255  # [0, 1] -> 0..255
    assert wide[0, 0, 0] == 0 and wide[0, -1, 0] == 255  # other ranges: the image's own min..max
    text = caplog.text
    assert "deep16.png is a I;16 image: 16-bit values 0..65535 scaled to 0..255" in text
    assert "unit.tif is a float image: values in [0, 1] scaled" in text
    assert "wide.tif is a F image with values -50..140: its own min..max stretched" in text


def test_nan_pixels_are_refused_naming_the_file_in_the_dataset(folder):
    name = _csv(folder, "nanpix.csv", ["nan.tif,0,1,1,9,9,train\n", "rgb.png,1,1,1,9,9,train\n"])
    ds = CSVDataset(str(folder), name, "train", **KW)
    with pytest.raises(DataError, match=r"image .*nan\.tif \(F\) has NaN or infinite pixel values"):
        ds[0]
    assert float(ds[1]["image"].std(dim=(1, 2)).max()) == pytest.approx(0.0, abs=1e-5)  # the flat RGB image reads


def test_a_16bit_training_image_reaches_the_batch_as_its_ramp(folder):
    name = _csv(folder, "deep.csv", ["deep16.png,0,1,1,9,9,train\n", "rgb.png,1,1,1,9,9,train\n"])
    ds = CSVDataset(str(folder), name, "train", train_augment=False, **KW)
    image = ds[0]["image"]  # (3, 16, 16), normalized
    assert float(image[0, :, -1].mean()) > float(image[0, :, 0].mean()) + 1.0  # dark left, bright right


def test_mode_conversion_pil_cannot_do_is_refused_naming_the_file(folder):
    with pytest.raises(ValueError, match="conversion from La"):
        to_rgb(Image.new("La", (2, 2)), "x.png")  # the dataset wraps it: "cannot read image x.png: ..."


# ---- EXIF orientation ------------------------------------------------------------------------------------
def test_exif_rotated_images_are_read_as_stored_warned_once_and_counted(folder, caplog, monkeypatch):
    monkeypatch.setattr("camlab.data.images._WARNED", set())
    name = _csv(folder, "exif.csv", ["rotated.jpg,0,1,1,9,9,val\n", "rgb.png,1,1,1,9,9,val\n"])
    ds = CSVDataset(str(folder), name, "val", **KW)
    with caplog.at_level(logging.WARNING, logger="camlab.data"):
        for _ in range(2):  # two epochs: still one image
            ds[0], ds[1]
        counts = ds.report()
    assert read_rgb(folder / "rotated.jpg")[0].size == (20, 12)  # the stored grid, not the upright 12 x 20
    assert counts["exif_oriented"] == 1
    assert "rotated.jpg has EXIF orientation 6" in caplog.text and "does not apply it" in caplog.text
    assert "1 image(s) have an EXIF orientation" in caplog.text


# ---- ground truth ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("row, split, words", [
    ("rgb.png,0,1,nan,9,9", "val", r"nan\.?csv line 2: box \['1', 'nan', '9', '9'\] of rgb.png has a NaN or infinite"),
    ("rgb.png,0,1,1,inf,9", "train", r"line 2: box .* of rgb.png has a NaN or infinite coordinate"),
    ("rgb.png,0,4,1,4,9", "val", r"box \[4.0, 1.0, 4.0, 9.0\] of .*rgb.png \(bad.csv line 2\) has zero area"),
    ("rgb.png,0,5,1,4,9", "train", r"has x1 < x0 or y1 < y0; give boxes as x0, y0, x1, y1"),
])
def test_bad_boxes_name_the_annotation_line_and_the_image(folder, row, split, words):
    name = _csv(folder, "bad.csv", [f"{row},{split}\n", "rgb.png,1,1,1,9,9,train\n".replace("rgb.png", "deep16.png")])
    with pytest.raises(DataError, match=words.replace(r"nan\.?csv", r"bad\.csv")):
        CSVDataset(str(folder), name, split, num_classes=2, **KW)


def test_zero_area_training_boxes_are_counted_and_warned(folder, caplog):
    name = _csv(folder, "flat.csv", ["rgb.png,0,4,1,4,9,train\n", "deep16.png,1,1,1,9,9,train\n"])
    with caplog.at_level(logging.WARNING, logger="camlab.data"):
        ds = CSVDataset(str(folder), name, "train", **KW)
    assert ds.counts["zero_area_boxes"] == 1
    assert "1 box(es) have zero area" in caplog.text and "rgb.png (flat.csv line 2)" in caplog.text


def test_nan_box_in_cub_names_bounding_boxes_line(tmp_path):
    import _dataset_fixtures as fx

    root = fx.make_cub(tmp_path / "cub", segmentations=False)
    lines = (root / "bounding_boxes.txt").read_text().splitlines()
    lines[1] = lines[1].split()[0] + " 1 nan 4 4"
    (root / "bounding_boxes.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"bounding_boxes.txt line 2: box \['1', 'nan', '4', '4'\] .* NaN"):
        read_cub(root, "train")


# ---- annotation files ------------------------------------------------------------------------------------
def test_latin1_csv_names_the_file_line_and_byte(folder):
    name = _csv(folder, "latin1.csv", ["rgb.png,caf\xe9,1,1,9,9,train\n"], encoding="latin-1")
    with pytest.raises(DataError, match=r"latin1.csv is not UTF-8 text: byte 0xe9 at line 2, column 12; save it as "
                                        r"UTF-8 \(e.g. iconv -f latin1"):
        CSVDataset(str(folder), name, "train", **KW)


def test_csv_with_a_byte_order_mark_reads_its_header_and_paths(folder):
    name = _csv(folder, "bom.csv", ["rgb.png,0,1,1,9,9,train\n", "deep16.png,1,1,1,9,9,train\n"], bom=True)
    ds = CSVDataset(str(folder), name, "train", **KW)
    assert [r.path for r in ds.records] == [str(folder / "rgb.png"), str(folder / "deep16.png")]


def _coco(folder, name, images=None, annotations=None, categories=None, raw=None):
    doc = raw if raw is not None else {
        "images": images if images is not None else [{"id": 1, "file_name": "rgb.png"}, {"id": 2, "file_name": "deep16.png"}],
        "annotations": annotations if annotations is not None else [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]},
            {"id": 11, "image_id": 2, "category_id": 2, "bbox": [1, 1, 5, 5]}],
        "categories": categories if categories is not None else [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    (folder / name).write_text(json.dumps(doc))
    return name


@pytest.mark.parametrize("kind, words", [
    ("no_file_name", r"c.json images\[1\] has no 'file_name' \(keys: \['id'\]\)"),
    ("images_dict", r"c.json: 'images' must be a list of objects, got a dict"),
    ("top_list", r"c.json: the top level must be an object"),
    ("bbox_string", r"c.json annotations\[0\] \(id 10, image rgb.png\): bbox must be a list of 4 numbers .*'1,1,5,5'"),
    ("bbox_three", r"annotations\[1\] \(id 11, image deep16.png\): bbox must be a list of 4 numbers .*\[1, 1, 5\]"),
    ("bbox_nan", r"annotations\[0\] \(id 10, image rgb.png\): bbox \[1, nan, 5, 5\] has a NaN or infinite value"),
    ("duplicate_id", r"images\[1\] \(deep16.png\): id 1 is also the id of images\[0\] \(rgb.png\); image ids must be"),
    ("string_id", r"annotations\[0\]: image_id 1 \(int\) differs in type from images\[0\] id '1' \(str\)"),
    ("category_no_id", r"c.json categories\[1\] has no 'id'"),
    ("image_not_object", r"c.json images\[0\]: expected an object, got str 'rgb.png'"),
])
def test_malformed_coco_names_the_file_and_the_entry(folder, kind, words):
    images = [{"id": 1, "file_name": "rgb.png"}, {"id": 2, "file_name": "deep16.png"}]
    anns = [{"id": 10, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]},
            {"id": 11, "image_id": 2, "category_id": 2, "bbox": [1, 1, 5, 5]}]
    kw: dict = {}
    if kind == "no_file_name":
        kw["images"] = [images[0], {"id": 2}]
    elif kind == "images_dict":
        kw["images"] = {"1": images[0]}
    elif kind == "top_list":
        kw["raw"] = [images]
    elif kind == "bbox_string":
        kw["annotations"] = [{**anns[0], "bbox": "1,1,5,5"}, anns[1]]
    elif kind == "bbox_three":
        kw["annotations"] = [anns[0], {**anns[1], "bbox": [1, 1, 5]}]
    elif kind == "bbox_nan":
        kw["annotations"] = [{**anns[0], "bbox": [1, float("nan"), 5, 5]}, anns[1]]
    elif kind == "duplicate_id":
        kw["images"] = [images[0], {**images[1], "id": 1}]
    elif kind == "string_id":
        kw["images"] = [{**images[0], "id": "1"}, {**images[1], "id": "2"}]
    elif kind == "category_no_id":
        kw["categories"] = [{"id": 1, "name": "a"}, {"name": "b"}]
    elif kind == "image_not_object":
        kw["images"] = ["rgb.png", images[1]]
    name = _coco(folder, "c.json", **kw)
    with pytest.raises(DataError, match=words) as err:
        COCODataset(str(folder), name, "train", val_fraction=0.0, test_fraction=0.0, **KW)
    assert "\n" not in str(err.value)


def test_wellformed_coco_of_the_same_helper_loads(folder):  # the cases above differ from it in one entry each
    ds = COCODataset(str(folder), _coco(folder, "ok.json"), "train", val_fraction=0.0, test_fraction=0.0, **KW)
    assert len(ds) == 2 and ds.records[0].boxes.tolist() == [[1.0, 1.0, 6.0, 6.0]]
