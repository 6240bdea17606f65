"""Bad input on disk: missing root or file, unreadable image (error or counted skip), box outside the image,
class id out of range. Each gives one message naming what is wrong, or a counted, reported fix-up."""
from __future__ import annotations

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
from camlab.data.records import DataError, collate_skipping
from camlab.data.wsoleval import WSOLEvalDataset
from camlab.utils import ConfigError

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
    root = tree("wsol")  # sizes come from image_sizes.txt: the image is first opened when loaded
    bad = root / "dataset/CUB/test/gamma/c1.png"
    bad.write_bytes(b"this is not a PNG")
    args = (str(root / "dataset/CUB"), str(root / "metadata"), "CUB", "test")
    ds = WSOLEvalDataset(*args, num_classes=3, **KW)
    index = [r.path for r in ds.records].index(str(bad))
    with pytest.raises(DataError, match=f"cannot read image {bad}.*data.skip_corrupt=true"):
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
    with pytest.raises(DataError, match="data.num_classes=200 but the annotations define 3 classes; set data.num_classes=3"):
        CUBDataset(str(root), "train", num_classes=200, **KW)


def test_eval_split_image_without_box_or_mask_is_an_error(tree):
    root = tree("csv")
    rows = [r for r in (root / "labels.csv").read_text().splitlines() if not r.startswith("images/c1.png")]
    rows.append("images/c1.png,2,,,,,test")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"c1\.png .* has no box"):
        CSVDataset(str(root), "labels.csv", "test", num_classes=3, **KW)
