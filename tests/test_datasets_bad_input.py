"""Bad input on disk: missing root or file, unreadable image (error or counted skip), box outside the image,
class id out of range. Each gives one message naming what is wrong, or a counted, reported fix-up."""
from __future__ import annotations

import functools
import logging
import shutil

import numpy as np
import pytest
from torch.utils.data import DataLoader

import _dataset_fixtures as fx
from camlab.data.cub import CUBDataset
from camlab.data.custom import COCODataset, CSVDataset
from camlab.data.disk import DiskDataModule
from camlab.data.ilsvrc import ILSVRCDataset
from camlab.data.records import collate_skipping
from camlab.data.wsoleval import WSOLEvalDataset
from camlab.errors import ConfigError, DataError

KW = {"image_size": 32, "resize_size": 40}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    base = tmp_path_factory.mktemp("pristine")
    fx.make_cub(base / "cub")
    fx.make_wsoleval(base / "wsol", "CUB")
    fx.make_ilsvrc(base / "ilsvrc")
    fx.make_coco(base / "coco")
    fx.make_csv(base / "csv", names=False)
    return base


@pytest.fixture
def tree(pristine, tmp_path):
    """A fresh copy of a pristine fixture tree, free to break."""
    def copy(name: str):
        dst = tmp_path / name
        shutil.copytree(pristine / name, dst)
        return dst
    return copy


def test_data_errors_are_one_line_config_errors():
    assert issubclass(DataError, ConfigError)  # the train app prints `camlab: error: <message>`, no traceback


def test_missing_root_names_it_and_the_layout(tmp_path):
    cases = [
        (lambda: CUBDataset(str(tmp_path / "nope"), "train", **KW), "CUB-200-2011 root not found"),
        (lambda: ILSVRCDataset(str(tmp_path / "nope"), "val", **KW), "ILSVRC root not found"),
        (lambda: WSOLEvalDataset(str(tmp_path), str(tmp_path / "meta"), "CUB", "test", **KW), "metadata folder"),
        (lambda: COCODataset(str(tmp_path / "nope"), "a.json", "train", **KW), "image root not found"),
    ]
    for make, words in cases:
        with pytest.raises(DataError) as err:
            make()
        msg = str(err.value)
        assert words in msg and "Expected layout" in msg and str(tmp_path) in msg, msg


@pytest.mark.parametrize("name, build, missing", [
    ("cub", lambda r: CUBDataset(str(r), "train", **KW), "bounding_boxes.txt"),
    ("cub", lambda r: CUBDataset(str(r), "train", **KW), "classes.txt"),
    ("wsol", lambda r: WSOLEvalDataset(str(r / "dataset/CUB"), str(r / "metadata"), "CUB", "test", num_classes=3, **KW),
     "metadata/CUB/test/class_labels.txt"),
    ("wsol", lambda r: WSOLEvalDataset(str(r / "dataset/CUB"), str(r / "metadata"), "CUB", "val", num_classes=3, **KW),
     "metadata/CUB/val/localization.txt"),
    ("ilsvrc", lambda r: ILSVRCDataset(str(r), "train", **KW), "LOC_synset_mapping.txt"),
    ("coco", lambda r: COCODataset(str(r), "annotations.json", "train", **KW), "annotations.json"),
    ("csv", lambda r: CSVDataset(str(r), "labels.csv", "train", num_classes=3, **KW), "labels.csv"),
])
def test_missing_annotation_file_names_it(tree, name, build, missing):
    root = tree(name)
    (root / missing).unlink()
    with pytest.raises(DataError) as err:
        build(root)
    assert str(root / missing) in str(err.value) and "Expected layout" in str(err.value)


def test_missing_image_errors_or_is_skipped_and_counted(tree, caplog):
    root = tree("csv")
    (root / "images" / "a0.png").unlink()
    with pytest.raises(DataError, match=r"1 image file\(s\) of the train split not found, first: .*a0\.png"):
        CSVDataset(str(root), "labels.csv", "train", num_classes=3, **KW)
    with caplog.at_level(logging.WARNING, logger="camlab.data"):
        ds = CSVDataset(str(root), "labels.csv", "train", num_classes=3, skip_corrupt=True, **KW)
    assert len(ds) == 2 and ds.report()["skipped_missing"] == 1
    assert [r.message for r in caplog.records if "skipped 1 missing" in r.message and "a0.png" in r.message]


def test_unreadable_image_errors_naming_the_file_or_is_skipped_and_reported(tree, caplog):
    root = tree("wsol")
    bad = root / "dataset/CUB/test/gamma/c1.png"
    bad.write_bytes(bad.read_bytes()[:60])  # truncated: its header reads at set-up, decoding fails when loaded
    args = (str(root / "dataset/CUB"), str(root / "metadata"), "CUB", "test")
    ds = WSOLEvalDataset(*args, num_classes=3, **KW)
    index = [r.path for r in ds.records].index(str(bad))
    with pytest.raises(DataError, match=f"cannot read image {bad}.*skip_corrupt=True"):
        ds[index]

    dm = DiskDataModule(root=args[0], test_dataset=_wsol_factory(args), image_size=32,
                        resize_size=40, skip_corrupt=True, num_classes=3, batch_size=8)
    dm.setup("test")
    batches = list(dm.test_dataloader())
    assert sum(len(b["label"]) for b in batches) == len(dm.dataset("test")) - 1
    with caplog.at_level(logging.WARNING, logger="camlab.data"):
        dm.teardown("test")
    assert [r for r in caplog.records if "skipped 1 unreadable image(s) while loading" in r.message]


def _wsol_factory(args):
    import functools

    return functools.partial(WSOLEvalDataset, metadata_root=args[1], dataset=args[2], split=args[3])


def test_unreadable_image_is_counted_across_loader_workers(tree):
    root = tree("csv")
    for name in ("b1", "c1"):  # truncated files: the header reads (set-up passes), decoding fails
        path = root / "images" / f"{name}.png"
        path.write_bytes(path.read_bytes()[:60])
    ds = CSVDataset(str(root), "labels.csv", "val", num_classes=3, skip_corrupt=True, **KW)  # a1, b1
    ds_test = CSVDataset(str(root), "labels.csv", "test", num_classes=3, skip_corrupt=True, **KW)  # c1, a2
    n = 0
    for d in (ds, ds_test):
        loader = DataLoader(d, batch_size=1, num_workers=2, collate_fn=lambda s: s)
        n += sum(s[0] is None for s in loader)
    assert n == 2
    assert ds.num_skipped_while_loading == 1 and ds_test.num_skipped_while_loading == 1  # counted in workers
    batch = collate_skipping([None, ds[0]])
    assert batch["image"].shape[0] == 1


def test_unreadable_header_at_setup_errors_or_is_skipped(tree, caplog):
    root = tree("cub")  # CUB has no sizes file: headers are read at set-up to clip boxes
    bad = next((root / "images").rglob("c0.jpg"))
    bad.write_bytes(b"garbage")
    with pytest.raises(DataError, match=f"cannot read image {bad}"):
        CUBDataset(str(root), "train", **KW)
    with caplog.at_level(logging.WARNING, logger="camlab.data"):
        ds = CUBDataset(str(root), "train", skip_corrupt=True, **KW)
    assert len(ds) == 2 and ds.report()["skipped_unreadable_at_setup"] == 1
    assert [r for r in caplog.records if "skipped 1 unreadable image(s)" in r.message]


def test_box_outside_the_image_is_clipped_counted_and_warned_once(tree, caplog):
    root = tree("csv")
    rows = (root / "labels.csv").read_text().splitlines()
    # a0 is 40x28: one box past the right/bottom edges, one entirely outside on the left.
    assert rows[1].startswith("images/a0.png,")
    rows[1] = "images/a0.png,0,6,5,45,30,train"
    rows.insert(2, "images/a0.png,0,-9,2,-3,8,train")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    with caplog.at_level(logging.WARNING, logger="camlab.data"):
        ds = CSVDataset(str(root), "labels.csv", "train", num_classes=3, **KW)
    rec = next(r for r in ds.records if r.path.endswith("a0.png"))
    np.testing.assert_array_equal(rec.boxes, [[6, 5, 40, 28], [0, 2, 0, 8]])  # continuous boxes clip to W, H
    warnings = [r.message for r in caplog.records if "clipped" in r.message]
    assert len(warnings) == 1
    assert "clipped 2 box(es)" in warnings[0] and "1 of them entirely outside" in warnings[0]
    assert ds.report()["clipped_boxes"] == 2


def test_inclusive_boxes_clip_to_the_last_pixel(tree):
    root = tree("wsol")
    loc = root / "metadata/CUB/test/localization.txt"
    lines = loc.read_text().splitlines()
    image_id = lines[0].split(",")[0]  # c1: 48x32
    lines[0] = f"{image_id},10,6,48,32"
    loc.write_text("\n".join(lines) + "\n")
    ds = WSOLEvalDataset(str(root / "dataset/CUB"), str(root / "metadata"), "CUB", "test", num_classes=3, **KW)
    rec = next(r for r in ds.records if r.path.endswith(image_id))
    assert rec.boxes[0].tolist() == [10, 6, 47, 31]


@pytest.mark.parametrize("name, edit, build, words", [
    ("csv", lambda r: _replace(r / "labels.csv", "images/b0.png,1,", "images/b0.png,5,"),
     lambda r: CSVDataset(str(r), "labels.csv", "train", num_classes=3, **KW), "labels.csv line 3: class 5 is out of range [0, 3)"),
    ("wsol", lambda r: _replace(r / "metadata/CUB/train/class_labels.txt", "b0.png,1", "b0.png,3"),
     lambda r: WSOLEvalDataset(str(r / "dataset/CUB"), str(r / "metadata"), "CUB", "train", num_classes=3, **KW),
     "class_labels.txt line 2: class 3 is out of range [0, 3)"),
    ("cub", lambda r: _replace(r / "image_class_labels.txt", "2 2\n", "2 9\n"),
     lambda r: CUBDataset(str(r), "train", **KW), "image_class_labels.txt line 2: class id 9 is not in classes.txt"),
    ("coco", lambda r: _replace(r / "annotations.json", '"category_id": 11', '"category_id": 12'),
     lambda r: COCODataset(str(r), "annotations.json", "train", **KW), "annotations[1] (id 2): category_id 12 is not in"),
])
def test_class_id_out_of_range_names_the_line(tree, name, edit, build, words):
    root = tree(name)
    edit(root)
    with pytest.raises(DataError) as err:
        build(root)
    assert words in str(err.value), str(err.value)


def _replace(path, old, new):
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


def test_declared_num_classes_must_match_the_annotations(tree):
    root = tree("cub")
    with pytest.raises(DataError, match="num_classes=200 but the annotations define 3 classes; set num_classes=3"):
        CUBDataset(str(root), "train", num_classes=200, **KW)


def test_eval_split_image_without_box_or_mask_is_an_error(tree):
    root = tree("csv")
    rows = [r for r in (root / "labels.csv").read_text().splitlines() if not r.startswith("images/c1.png")]
    rows.append("images/c1.png,2,,,,,test")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"c1\.png .* has no box"):
        CSVDataset(str(root), "labels.csv", "test", num_classes=3, **KW)


# ------------------------------------------------------------------------------------------------- masks
def _csv_with_masks(tmp_path):
    return fx.make_csv(tmp_path / "csvm", masks=True)


def test_unreadable_mask_fails_at_setup_naming_it(tmp_path):
    root = _csv_with_masks(tmp_path)
    bad = root / "masks" / "a1.png"  # a val image's mask: garbage bytes
    bad.write_bytes(b"this is not a PNG")
    with pytest.raises(DataError) as err:
        CSVDataset(str(root), "labels.csv", "val", num_classes=3, **KW)
    msg = str(err.value)
    assert f"cannot read mask file {bad}" in msg and "a1.png" in msg and "masks=False" in msg, msg
    CSVDataset(str(root), "labels.csv", "train", num_classes=3, **KW)  # train loads no mask ('auto'): not read


def test_mask_that_fails_to_decode_while_loading_is_a_data_error(tmp_path):
    root = _csv_with_masks(tmp_path)
    bad = root / "masks" / "b1.png"
    bad.write_bytes(bad.read_bytes()[:50])  # the header reads (set-up passes), the pixels do not
    ds = CSVDataset(str(root), "labels.csv", "val", num_classes=3, **KW)
    index = [r.path for r in ds.records].index(str(root / "images" / "b1.png"))
    with pytest.raises(DataError, match=f"cannot read mask file {bad}.*masks=False"):
        ds[index]


def _resize_png(path, size):
    from PIL import Image

    with Image.open(path) as im:
        im.resize(size, Image.NEAREST).save(path)


def test_mask_size_differing_from_its_image_is_warned_once_with_the_count(tmp_path, caplog):
    root = _csv_with_masks(tmp_path)
    _resize_png(root / "masks" / "a1.png", (18, 15))  # a1 is 36x30: half size
    _resize_png(root / "masks" / "b1.png", (50, 30))  # b1 is 30x50: transposed
    with caplog.at_level(logging.WARNING, logger="camlab.data"):
        ds = CSVDataset(str(root), "labels.csv", "val", num_classes=3, **KW)
    warnings = [r.message for r in caplog.records if "differ in size" in r.message]
    assert len(warnings) == 1, warnings
    assert "2 mask(s) differ in size from their image" in warnings[0]
    assert f"{root / 'masks' / 'a1.png'} is 18x15 but {root / 'images' / 'a1.png'} is 36x30" in warnings[0]
    assert ds.report()["mask_size_mismatch"] == 2
    assert ds[0]["mask"].shape == (KW["image_size"],) * 2  # still loads: stretched, as wsolevaluation does
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="camlab.data"):
        ds = CSVDataset(str(root), "labels.csv", "test", num_classes=3, **KW)  # masks of the right size
    assert ds.report()["mask_size_mismatch"] == 0 and not [r for r in caplog.records if "differ" in r.message]


def test_openimages_masks_of_another_size_are_the_benchmark_convention_not_warned(tmp_path, caplog):
    data, meta = fx.make_wsoleval(tmp_path / "oi", "OpenImages")
    mask = next(data.rglob("test/*/*_m0.png"))
    _resize_png(mask, (20, 20))
    with caplog.at_level(logging.WARNING, logger="camlab.data"):
        ds = WSOLEvalDataset(str(data), str(meta), "OpenImages", "test", num_classes=3, **KW)
    assert ds.use_masks and ds.report()["mask_size_mismatch"] == 0
    assert not [r for r in caplog.records if "differ in size" in r.message]


def test_coco_rle_of_the_wrong_size_or_malformed(tree, caplog):
    import json

    root = tree("coco")
    data = json.loads((root / "annotations.json").read_text())
    test_ids = {img["id"] for img in data["images"] if img["split"] == "test"}
    rles = [a for a in data["annotations"] if a["image_id"] in test_ids and isinstance(a.get("segmentation"), dict)]
    assert rles
    rles[0]["segmentation"]["size"] = [rles[0]["segmentation"]["size"][1], rles[0]["segmentation"]["size"][0]]
    (root / "annotations.json").write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="camlab.data"):
        ds = COCODataset(str(root), "annotations.json", "test", **KW)  # h*w unchanged: a transposed RLE
    assert ds.report()["mask_size_mismatch"] == 1
    assert [r for r in caplog.records if "1 mask(s) differ in size" in r.message and "RLE segmentation" in r.message]

    rles[0]["segmentation"]["size"] = [3, 3]  # runs no longer fill h x w: an error at set-up, not at loading
    (root / "annotations.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"RLE segmentation 1 of .*images\[\d\].*RLE counts sum to \d+, expected h\*w = 9"):
        COCODataset(str(root), "annotations.json", "test", **KW)


# ------------------------------------------------------------------------------------------------ classes
def test_ilsvrc_class_without_training_images_names_its_folder(tree):
    root = tree("ilsvrc")
    wnid = fx.WNIDS[1]
    for image in (root / "train" / wnid).iterdir():
        image.unlink()
    with pytest.raises(DataError) as err:
        ILSVRCDataset(str(root), "train", **KW)
    msg = str(err.value)
    assert f"{wnid} (class {fx.ilsvrc_label(1)}): no image in {root / 'train' / wnid}" in msg, msg
    assert "1 of the 3 synsets" in msg and "remove those synsets" in msg and "set num_classes" in msg
    (root / "train" / wnid).rmdir()
    with pytest.raises(DataError, match=f"no folder {root / 'train' / wnid}"):
        ILSVRCDataset(str(root), "train", **KW)
    ILSVRCDataset(str(root), "val", **KW)  # val does not need every class


def test_class_without_training_images_is_warned(tree, caplog):
    root = tree("csv")
    _replace(root / "labels.csv", "images/c0.png,2,20,8,46,30,train", "images/c0.png,2,20,8,46,30,val")
    with caplog.at_level(logging.WARNING, logger="camlab.data"):
        ds = CSVDataset(str(root), "labels.csv", "train", num_classes=3, **KW)
    assert ds.report()["classes_without_images"] == 1
    assert [r for r in caplog.records if "1 of 3 classes have no training image (2)" in r.message]


def test_num_classes_mismatch_lists_names_with_counts_and_the_likely_typo(tmp_path):
    root = fx.make_csv(tmp_path / "named")
    _replace(root / "labels.csv", "images/b1.png,beta,", "images/b1.png,btea,")  # a typo'd name
    with pytest.raises(DataError) as err:
        CSVDataset(str(root), "labels.csv", "train", num_classes=3, **KW)
    msg = str(err.value)
    line = next(i for i, row in enumerate((root / "labels.csv").read_text().splitlines(), 1) if "btea" in row)
    assert "num_classes=3 but its labels name 4 classes" in msg, msg
    assert "alpha: 3, gamma: 2, beta: 1, btea: 1" in msg, msg  # images per class, most first
    assert f"typo of another class: 'btea' (1 image(s), first on line {line})" in msg, msg
    assert "set num_classes=4 if every name is a class" in msg
    with pytest.raises(DataError) as err:  # more classes declared than named: no typo suspected
        fx.make_csv(tmp_path / "named2")
        CSVDataset(str(tmp_path / "named2"), "labels.csv", "train", num_classes=5, **KW)
    assert "set num_classes=3" in str(err.value) and "typo" not in str(err.value)


# ------------------------------------------------------------------------------------------------ options
def test_bad_split_fractions_name_the_arguments(tmp_path):
    root = fx.make_csv(tmp_path / "nosplit", header=False)
    with pytest.raises(ConfigError) as err:
        CSVDataset(str(root), "labels.csv", "train", num_classes=3, val_fraction=0.9, test_fraction=0.5, **KW)
    assert "val_fraction=0.9, test_fraction=0.5" in str(err.value)
    assert err.value.settings == ("val_fraction", "test_fraction")
    dm = DiskDataModule(root=str(root), annotations="labels.csv", num_classes=3, val_fraction=0.2, test_fraction=-0.1,
                        train_dataset=functools.partial(CSVDataset, split="train"), **KW)
    with pytest.raises(ConfigError, match="test_fraction=-0.1") as err:
        dm.setup("fit")  # raised while the trainer sets up: must be a ConfigError (one line), not a ValueError
    assert err.value.settings == ("train_dataset.val_fraction", "train_dataset.test_fraction")


def test_option_errors_raised_at_setup_are_config_errors_naming_the_argument(tree):
    # The messages speak in the raising object's argument names; `settings` names those arguments (an entry
    # point turns them into config keys: tests/test_run_errors.py).
    from camlab.data.canvas import CanvasDataModule, MNISTCanvas
    from camlab.data.datamodule import WSOLDataModule
    from camlab.data.synthetic import SyntheticShapes

    root = tree("csv")
    cases = [
        (lambda: SyntheticShapes("train", length=4, image_size=16), "image_size must be", ("image_size",)),
        (lambda: SyntheticShapes("val", length=4, max_objects=9), "max_objects of the val split", ("max_objects",)),
        (lambda: SyntheticShapes("train", length=4, num_classes=11), "num_classes must be", ("num_classes",)),
        (lambda: MNISTCanvas(root, "train", max_items=9), "max_items must be", ("max_items",)),
        (lambda: CSVDataset(str(root), "labels.csv", "train", num_classes=3, image_size=64, resize_size=32),
         "resize_size must be", ("resize_size",)),
        (lambda: CSVDataset(str(root), "labels.csv", "train", num_classes=3, masks="yes", **KW), "masks must be",
         ("masks",)),
        (lambda: WSOLDataModule(SyntheticShapes("train", length=4), num_train=5).dataset("train"), "num_train=5",
         ("num_train",)),
        (lambda: WSOLDataModule(SyntheticShapes("train", length=4), image_size=32).dataset("train"),
         "image_size=32", ("image_size",)),
        (lambda: WSOLDataModule(val_dataset=functools.partial(SyntheticShapes, "val", length=4, max_objects=9))
         .dataset("val"), "max_objects", ("val_dataset.max_objects",)),  # the data module's argument first
        (lambda: CanvasDataModule(root, num_val=0).dataset("val"), "length of the val split",
         ("val_dataset.num_val",)),  # the canvas module's own name for a split's length
        (lambda: CUBDataset(str(tree("cub")), "train", val_from="val", **KW), "val_from must be", ("val_from",)),
    ]
    for make, words, settings in cases:
        with pytest.raises(ConfigError) as err:
            make()
        assert words in str(err.value) and err.value.settings == settings, (str(err.value), err.value.settings)


# -------------------------------------------------------------------------------------- boxes off the image
def test_eval_box_wholly_outside_its_image_is_an_error(tree):
    root = tree("csv")
    rows = (root / "labels.csv").read_text().splitlines()
    rows.append("images/a1.png,0,40,3,50,14,val")  # a1 is 36x30: x0 = 40 is past its right edge
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError) as err:
        CSVDataset(str(root), "labels.csv", "val", num_classes=3, **KW)
    msg = str(err.value)
    assert f"box [40.0, 3.0, 50.0, 14.0] of {root / 'images' / 'a1.png'} (labels.csv line" in msg, msg
    assert "wholly outside its 36x30 image" in msg and "fix or remove the box" in msg

    root = tree("wsol")  # inclusive boxes: x0 = W - 1 is the last column (kept), x0 = W is outside
    loc = root / "metadata/CUB/test/localization.txt"
    lines = loc.read_text().splitlines()
    image_id = lines[0].split(",")[0]  # c1: 48x32
    args = (str(root / "dataset/CUB"), str(root / "metadata"), "CUB", "test")
    loc.write_text("\n".join([f"{image_id},47,6,60,20", *lines[1:]]) + "\n")
    ds = WSOLEvalDataset(*args, num_classes=3, **KW)
    assert next(r for r in ds.records if r.path.endswith(image_id)).boxes[0].tolist() == [47, 6, 47, 20]
    loc.write_text("\n".join([f"{image_id},48,6,60,20", *lines[1:]]) + "\n")
    with pytest.raises(DataError, match=r"box \[48\.0, 6\.0, 60\.0, 20\.0\] .* wholly outside its 48x32 image"):
        WSOLEvalDataset(*args, num_classes=3, **KW)
