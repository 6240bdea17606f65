"""Hostile annotation files of every format (CSV, COCO JSON, CUB, ILSVRC XML, wsolevaluation metadata): other
encodings, byte-order marks, missing keys, wrong types and shapes, duplicate ids, NaN / negative / zero-area boxes,
boxes outside their image, empty files, folders where files are expected.

Each case edits one thing of a well-formed tiny dataset and must end in one :class:`~camlab.errors.DataError`
line naming the file and the entry (line, list index or id), reading nothing into a record, writing nothing.
"""
from __future__ import annotations

import json
import logging
import re
import shutil

import pytest

import _dataset_fixtures as fx
from camlab.data.cub import CUBDataset
from camlab.data.custom import COCODataset, CSVDataset
from camlab.data.ilsvrc import ILSVRCDataset
from camlab.data.wsoleval import WSOLEvalDataset
from camlab.errors import ConfigError, DataError

from ._checks import clean, short, snapshot

KW = {"image_size": 16, "resize_size": 20}
WSOL_TEST = "metadata/CUB/test"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile_annotations")
    fx.make_csv(root / "csv")
    fx.make_coco(root / "coco")
    fx.make_cub(root / "cub", segmentations=False)
    fx.make_ilsvrc(root / "ilsvrc")
    fx.make_wsoleval(root / "wsol")
    return root


# ---- edits: each changes one thing of a pristine tree ------------------------------------------------------------
def replace(name, old, new):
    def edit(root):
        path = root / name
        text = path.read_text()
        assert old in text, (name, old)
        path.write_text(text.replace(old, new, 1))
    return edit


def append(name, line):
    def edit(root):
        path = root / name
        path.write_text(path.read_text() + line)
    return edit


def write(name, data: bytes | str):
    def edit(root):
        path = root / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return edit


def encode(name, encoding):
    def edit(root):
        path = root / name
        path.write_bytes(path.read_text().encode(encoding))
    return edit


def folder_instead(name):
    def edit(root):
        (root / name).unlink()
        (root / name).mkdir()
    return edit


def drop_line(name, start):
    def edit(root):
        path = root / name
        path.write_text("".join(line for line in path.read_text().splitlines(True) if not line.startswith(start)))
    return edit


def coco(change):
    def edit(root):
        doc = json.loads((root / "annotations.json").read_text())
        change(doc)
        (root / "annotations.json").write_text(json.dumps(doc))
    return edit


def first_xml(change):
    def edit(root):
        xml = sorted((root / "val").glob("*.xml"))[0]
        xml.write_text(change(xml.read_text()))
    return edit


# ---- loaders --------------------------------------------------------------------------------------------------------
def csv_ds(split="train", **kw):
    return lambda root: CSVDataset(str(root), "labels.csv", split, num_classes=kw.pop("num_classes", 3), **kw, **KW)


def coco_ds(split="train", **kw):
    return lambda root: COCODataset(str(root), "annotations.json", split, **kw, **KW)


def cub_ds(split="train", **kw):
    return lambda root: CUBDataset(str(root), split, **kw, **KW)


def ilsvrc_ds(split="val"):
    return lambda root: ILSVRCDataset(str(root), split, **KW)


def wsol_ds(split="test"):
    return lambda root: WSOLEvalDataset(str(root / "dataset/CUB"), str(root / "metadata"), "CUB", split,
                                        num_classes=3, **KW)


A0 = "images/a0.png,alpha,6,5,22,19"  # the first data line of labels.csv (line 2)
A1 = "images/a1.png,alpha,3,3,15,14"  # a val image's first box (line 5)
# case -> (format, edit, loader, words the one-line message must contain)
CASES = {
    # CSV
    "csv_latin1": ("csv", lambda r: (r / "labels.csv").write_bytes(
        (r / "labels.csv").read_bytes().replace(b"alpha", "alph\xe9".encode("latin-1"), 1)), csv_ds(),
        ["labels.csv is not UTF-8 text: byte 0xe9 at line 2", "iconv"]),
    "csv_utf16": ("csv", encode("labels.csv", "utf-16"), csv_ds(), ["labels.csv is UTF-16 text", "iconv -f utf-16"]),
    "csv_folder": ("csv", folder_instead("labels.csv"), csv_ds(), ["labels.csv is a directory, not a file"]),
    "csv_missing": ("csv", lambda r: (r / "labels.csv").unlink(), csv_ds(), ["CSV annotation file not found",
                                                                            "labels.csv"]),
    "csv_empty": ("csv", write("labels.csv", ""), csv_ds(), ["labels.csv is empty"]),
    "csv_header_only": ("csv", write("labels.csv", "path,label,x0,y0,x1,y1,split\n"), csv_ds(),
                        ["CSV labels.csv", "the train split has no images"]),
    "csv_header_lacks_column": ("csv", replace("labels.csv", "path,label,x0,y0,x1,y1", "path,label,x0,y0,x1"),
                                csv_ds(), ["labels.csv line 1: header lacks ['y1']"]),
    "csv_field_count": ("csv", replace("labels.csv", A0, A0 + ",extra"), csv_ds(),
                        ["labels.csv line 2: expected 7 fields", "got 8"]),
    "csv_unclosed_quote": ("csv", replace("labels.csv", A0, '"' + A0), csv_ds(), ["labels.csv line 2: expected 7"]),
    "csv_text_coordinate": ("csv", replace("labels.csv", A0, "images/a0.png,alpha,6,five,22,19"), csv_ds(),
                            ["labels.csv line 2: box coordinates must be numbers", "'five'"]),
    "csv_partial_box": ("csv", replace("labels.csv", A0, "images/a0.png,alpha,6,5,,"), csv_ds(),
                        ["labels.csv line 2: give all of x0,y0,x1,y1 or none"]),
    "csv_nan_box": ("csv", replace("labels.csv", A1, "images/a1.png,alpha,3,nan,15,14"), csv_ds("val"),
                    ["labels.csv line 5: box ['3', 'nan', '15', '14'] of images/a1.png has a NaN"]),
    "csv_inf_box": ("csv", replace("labels.csv", A0, "images/a0.png,alpha,6,5,inf,19"), csv_ds(),
                    ["labels.csv line 2: box", "NaN or infinite coordinate"]),
    "csv_corners_swapped": ("csv", replace("labels.csv", A1, "images/a1.png,alpha,15,3,3,14"), csv_ds("val"),
                            ["box [15.0, 3.0, 3.0, 14.0] of", "a1.png (labels.csv line 5) has x1 < x0"]),
    "csv_zero_area_val": ("csv", replace("labels.csv", A1, "images/a1.png,alpha,3,3,3,14"), csv_ds("val"),
                          ["a1.png (labels.csv line 5) has zero area", "val split"]),
    "csv_box_outside_val": ("csv", replace("labels.csv", A1, "images/a1.png,alpha,300,300,400,400"), csv_ds("val"),
                            ["a1.png (labels.csv line 5) lies wholly outside its 36x30 image"]),
    "csv_class_out_of_range": ("csv", lambda r: fx.make_csv(r, names=False) and replace(
        "labels.csv", "images/a0.png,0,", "images/a0.png,5,")(r), csv_ds(),
        ["labels.csv line 2: class 5 is out of range [0, 3)"]),
    "csv_negative_class": ("csv", lambda r: fx.make_csv(r, names=False) and replace(
        "labels.csv", "images/a0.png,0,", "images/a0.png,-1,")(r), csv_ds(),
        ["labels.csv line 2: class -1 is out of range"]),
    "csv_class_typo": ("csv", replace("labels.csv", "images/b0.png,beta", "images/b0.png,betta"), csv_ds(),
                       ["labels.csv: num_classes=3 but its labels name 4 classes", "'betta'", "first on line 3"]),
    "csv_split_value": ("csv", replace("labels.csv", ",train", ",training"), csv_ds(),
                        ["labels.csv line 2 has split 'training'"]),
    "csv_conflicting_label": ("csv", replace("labels.csv", "images/a1.png,alpha,20", "images/a1.png,beta,20"),
                              csv_ds("val"), ["labels.csv line 6: images/a1.png has another label or split",
                                              "line 5"]),
    "csv_missing_image": ("csv", lambda r: (r / "images" / "a0.png").unlink(), csv_ds(),
                          ["1 image file(s) of the train split not found", "a0.png (labels.csv line 2)"]),
    "csv_image_is_folder": ("csv", lambda r: ((r / "images" / "a0.png").unlink(), (r / "images" / "a0.png").mkdir()),
                            csv_ds(), ["a0.png (labels.csv line 2, a directory, not an image file)"]),
    "csv_mask_column_missing_file": ("csv", lambda r: fx.make_csv(r, masks=True) and (
        r / "masks" / "a1.png").unlink(), csv_ds("val"), ["mask file not found", "masks/a1.png", "labels.csv line 5"]),
    "csv_num_classes_text": ("csv", lambda r: None, csv_ds(num_classes="three"),
                             ["num_classes must be an integer >= 1", "'three'"]),
    # COCO
    "coco_not_json": ("coco", write("annotations.json", "{images: []}"), coco_ds(),
                      ["annotations.json is not valid JSON", "line 1 column 2"]),
    "coco_empty": ("coco", write("annotations.json", ""), coco_ds(), ["annotations.json is not valid JSON"]),
    "coco_folder": ("coco", folder_instead("annotations.json"), coco_ds(), ["annotations.json is a directory"]),
    "coco_latin1": ("coco", lambda r: (r / "annotations.json").write_bytes(
        (r / "annotations.json").read_bytes().replace(b"alpha", b"alph\xe9")), coco_ds(),
        ["annotations.json is not UTF-8 text: byte 0xe9"]),
    "coco_utf16": ("coco", encode("annotations.json", "utf-16"), coco_ds(), ["annotations.json is UTF-16 text"]),
    "coco_no_images": ("coco", coco(lambda d: d.pop("images")), coco_ds(), ["annotations.json has no 'images' list"]),
    "coco_no_categories": ("coco", coco(lambda d: d.pop("categories")), coco_ds(),
                           ["annotations.json has no 'categories' list"]),
    "coco_annotations_dict": ("coco", coco(lambda d: d.update(annotations={})), coco_ds(),
                              ["'annotations' must be a list of objects, got a dict"]),
    "coco_top_level_list": ("coco", lambda r: (r / "annotations.json").write_text("[]"), coco_ds(),
                            ["annotations.json: the top level must be an object", "got a list"]),
    "coco_images_dict": ("coco", coco(lambda d: d.update(images={"1": d["images"][0]})), coco_ds(),
                         ["annotations.json: 'images' must be a list of objects, got a dict"]),
    "coco_image_not_object": ("coco", coco(lambda d: d["images"].__setitem__(0, "images/a0.png")), coco_ds(),
                              ["annotations.json images[0]: expected an object, got str 'images/a0.png'"]),
    "coco_no_file_name": ("coco", coco(lambda d: d["images"][1].pop("file_name")), coco_ds(),
                          ["annotations.json images[1] has no 'file_name'", "(keys: ["]),
    "coco_category_no_id": ("coco", coco(lambda d: d["categories"][1].pop("id")), coco_ds(),
                            ["annotations.json categories[1] has no 'id'"]),
    "coco_duplicate_image_id": ("coco", coco(lambda d: d["images"][1].update(id=100)), coco_ds(),
                                ["images[1] (images/b0.png): id 100 is also the id of images[0] (images/a0.png)"]),
    "coco_string_image_ids": ("coco", coco(lambda d: [im.update(id=str(im["id"])) for im in d["images"]]), coco_ds(),
                              ["annotations[0]: image_id 100 (int) differs in type from images[0] id '100' (str)"]),
    "coco_bbox_string": ("coco", coco(lambda d: d["annotations"][0].update(bbox="6,5,16,14")), coco_ds(),
                         ["annotations[0] (id 1, image images/a0.png): bbox must be a list of 4 numbers", "'6,5,16,14'"]),
    "coco_bbox_three_numbers": ("coco", coco(lambda d: d["annotations"][1].update(bbox=[1, 1, 5])), coco_ds(),
                                ["annotations[1] (id 2, image images/b0.png): bbox must be a list of 4", "[1, 1, 5]"]),
    "coco_bbox_nan": ("coco", coco(lambda d: d["annotations"][0].update(bbox=[1, float("nan"), 5, 5])), coco_ds(),
                      ["annotations[0] (id 1, image images/a0.png): bbox [1, nan, 5, 5] has a NaN or infinite"]),
    "coco_file_name_null": ("coco", coco(lambda d: d["images"][0].update(file_name=None)), coco_ds(),
                            ["annotations.json images[0] (id 100): file_name must be a path", "got None"]),
    "coco_file_name_number": ("coco", coco(lambda d: d["images"][0].update(file_name=5)), coco_ds(),
                              ["images[0] (id 100): file_name must be a path", "got 5"]),
    "coco_duplicate_file_name": ("coco", coco(lambda d: d["images"][1].update(file_name="images/a0.png")), coco_ds(),
                                 ["images[1] (id 101): file_name 'images/a0.png' is also the file of images[0]"]),
    "coco_width_text": ("coco", coco(lambda d: d["images"][0].update(width="wide")), coco_ds(),
                        ["images[0] (images/a0.png): width and height must be integers >= 1", "'wide'"]),
    "coco_width_fraction": ("coco", coco(lambda d: d["images"][0].update(width=40.7)), coco_ds(),
                            ["images[0] (images/a0.png): width and height must be integers", "40.7"]),
    "coco_width_zero": ("coco", coco(lambda d: d["images"][0].update(width=0)), coco_ds(),
                        ["images[0] (images/a0.png): width and height must be integers >= 1", "got 0"]),
    "coco_width_wrong": ("coco", coco(lambda d: d["images"][0].update(width=41)), coco_ds(),
                         ["a0.png is 40x28 but its annotations (annotations.json images[0]", "say 41x28"]),
    "coco_category_id_list": ("coco", coco(lambda d: d["categories"][0].update(id=[1])), coco_ds(),
                              ["annotations.json categories[0]: id must be a number or a string, got [1]"]),
    "coco_category_id_types": ("coco", coco(lambda d: d["categories"][0].update(id="20")), coco_ds(),
                               ["category_id 20 is not in categories [7, 11, '20']"]),
    "coco_category_twice": ("coco", coco(lambda d: d["categories"].append({"id": 7, "name": "again"})), coco_ds(),
                            ["annotations.json: categories: id 7 is listed twice"]),
    "coco_annotation_no_category": ("coco", coco(lambda d: d["annotations"][0].pop("category_id")), coco_ds(),
                                    ["annotations.json annotations[0] (id 1): category_id None is not in categories"]),
    "coco_image_id_null": ("coco", coco(lambda d: d["annotations"][0].update(image_id=None)), coco_ds(),
                           ["annotations[0]: image_id None is not the id of any image"]),
    "coco_bbox_negative": ("coco", coco(lambda d: d["annotations"][0].update(bbox=[1, 1, -2, 3])), coco_ds(),
                           ["annotations[0] (id 1, image images/a0.png): bbox [1, 1, -2, 3] has a negative width"]),
    "coco_bbox_object": ("coco", coco(lambda d: d["annotations"][0].update(bbox={"x": 1})), coco_ds(),
                         ["annotations[0] (id 1, image images/a0.png): bbox must be a list of 4 numbers"]),
    "coco_bbox_booleans": ("coco", coco(lambda d: d["annotations"][0].update(bbox=[True, 1, 2, 3])), coco_ds(),
                           ["annotations[0] (id 1, image images/a0.png): bbox must be a list of 4 numbers"]),
    "coco_bbox_zero_area_val": ("coco", coco(lambda d: d["annotations"][3].update(bbox=[3, 3, 0, 11])), coco_ds("val"),
                                ["a1.png", "has zero area"]),
    "coco_segmentation_text": ("coco", coco(lambda d: d["annotations"][0].update(segmentation="abc")), coco_ds(),
                               ["annotations[0] (id 1, image images/a0.png): segmentation must be a list of polygons"]),
    "coco_polygon_odd": ("coco", coco(lambda d: d["annotations"][0].update(segmentation=[[1, 2, 3]])), coco_ds(),
                         ["annotations[0] (id 1, image images/a0.png): polygon 0 of its segmentation must be"]),
    "coco_polygon_text": ("coco", coco(lambda d: d["annotations"][0].update(segmentation=[["a", "b", "c", "d"]])),
                          coco_ds(), ["annotations[0] (id 1, image images/a0.png): polygon 0", "['a', 'b'"]),
    "coco_mask_file_missing": ("coco", coco(lambda d: d["images"][3].update(mask_file="masks/none.png")),
                               coco_ds("val"), ["mask file not found", "masks/none.png", "annotations.json images[3]"]),
    "coco_split_value": ("coco", coco(lambda d: d["images"][0].update(split="dev")), coco_ds(),
                         ["annotations.json images[0] (images/a0.png) has split 'dev'"]),
    # CUB
    "cub_duplicate_image_id": ("cub", append("images.txt", "1 001.Alpha_bird/b0.jpg\n"), cub_ds(),
                               ["images.txt line 8: id 1 is also on line 1"]),
    "cub_duplicate_class_id": ("cub", append("classes.txt", "1 again\n"), cub_ds(),
                               ["classes.txt line 4: id 1 is also on line 1"]),
    "cub_duplicate_label_line": ("cub", append("image_class_labels.txt", "1 2\n"), cub_ds(),
                                 ["image_class_labels.txt line 8: id 1 is also on line 1"]),
    "cub_split_value": ("cub", replace("train_test_split.txt", "1 1\n", "1 2\n"), cub_ds(),
                        ["train_test_split.txt line 1: is_training_image must be 1 (train) or 0 (test), got '2'"]),
    "cub_one_field": ("cub", replace("images.txt", "1 001", "1001"), cub_ds(),
                      ["images.txt line 1: expected 2 fields"]),
    "cub_text_box": ("cub", replace("bounding_boxes.txt", "1 6.0", "1 six"), cub_ds(),
                     ["bounding_boxes.txt line 1: expected '<id> <x> <y> <w> <h>'", "'six'"]),
    "cub_nan_box": ("cub", replace("bounding_boxes.txt", "1 6.0", "1 nan"), cub_ds(),
                    ["bounding_boxes.txt line 1: box ['nan'", "of image id 1 has a NaN"]),
    "cub_negative_width": ("cub", replace("bounding_boxes.txt", "1 6.0 5.0 15.0", "1 6.0 5.0 -15.0"), cub_ds(),
                           ["a0.jpg (CUB image id 1) has x1 < x0"]),
    "cub_box_unknown_image": ("cub", append("bounding_boxes.txt", "99 1 1 2 2\n"), cub_ds(),
                              ["bounding_boxes.txt line 10: image id 99 is not in images.txt"]),
    "cub_label_unknown_image": ("cub", append("image_class_labels.txt", "99 1\n"), cub_ds(),
                                ["image_class_labels.txt line 8: image id 99 is not in images.txt"]),
    "cub_label_unknown_class": ("cub", replace("image_class_labels.txt", "1 1\n", "1 9\n"), cub_ds(),
                                ["image_class_labels.txt line 1: class id 9 is not in classes.txt"]),
    "cub_image_without_label": ("cub", drop_line("image_class_labels.txt", "2 "), cub_ds(),
                                ["CUB image id 2 of images.txt has no line in image_class_labels.txt"]),
    "cub_test_image_without_box": ("cub", drop_line("bounding_boxes.txt", "4 "), cub_ds("test"),
                                   ["a1.jpg (CUB image id 4) has no box"]),
    "cub_latin1": ("cub", lambda r: (r / "classes.txt").write_bytes(
        (r / "classes.txt").read_bytes() + "4 caf\xe9\n".encode("latin-1")), cub_ds(),
        ["classes.txt is not UTF-8 text: byte 0xe9 at line 4, column 6"]),
    "cub_table_is_folder": ("cub", folder_instead("classes.txt"), cub_ds(), ["classes.txt is a directory"]),
    "cub_no_images_folder": ("cub", lambda r: shutil.rmtree(r / "images"), cub_ds(), ["CUB images folder not found"]),
    "cub_segmentations_required": ("cub", lambda r: None, cub_ds("test", segmentations=True),
                                   ["CUB segmentations folder not found"]),
    # ILSVRC
    "ilsvrc_broken_xml": ("ilsvrc", first_xml(lambda t: "<annotation><object>"), ilsvrc_ds(),
                          ["cannot parse annotation", "ILSVRC2012_val_a1.xml: no element found"]),
    "ilsvrc_no_bndbox": ("ilsvrc", first_xml(lambda t: t.replace("bndbox>", "bbox>")), ilsvrc_ds(),
                         ["ILSVRC2012_val_a1.xml: an <object> without <bndbox>"]),
    "ilsvrc_no_name": ("ilsvrc", first_xml(lambda t: t.replace("name>", "nam>")), ilsvrc_ds(),
                       ["ILSVRC2012_val_a1.xml: an <object> without <name>"]),
    "ilsvrc_text_coordinate": ("ilsvrc", first_xml(lambda t: t.replace("<xmin>", "<xmin>a", 1)), ilsvrc_ds(),
                               ["ILSVRC2012_val_a1.xml: a <bndbox> needs numeric"]),
    "ilsvrc_nan_coordinate": ("ilsvrc", first_xml(lambda t: re.sub(r"<xmin>\d+", "<xmin>nan", t, count=1)),
                              ilsvrc_ds(), ["ILSVRC2012_val_a1.xml: <bndbox> [nan,", "NaN or infinite"]),
    "ilsvrc_corners_swapped": ("ilsvrc", first_xml(lambda t: re.sub(r"<xmax>\d+", "<xmax>-5", t, count=1)),
                               ilsvrc_ds(), ["ILSVRC2012_val_a1.JPEG (ILSVRC2012_val_a1.xml) has x1 < x0"]),
    "ilsvrc_size_text": ("ilsvrc", first_xml(lambda t: t.replace("<width>", "<width>w")), ilsvrc_ds(),
                         ["ILSVRC2012_val_a1.xml: <size> needs integer <width> and <height>"]),
    "ilsvrc_no_object": ("ilsvrc", first_xml(lambda t: "<annotation><filename>x</filename></annotation>"),
                         ilsvrc_ds(), ["ILSVRC2012_val_a1.xml: no <object>"]),
    "ilsvrc_unknown_synset": ("ilsvrc", first_xml(lambda t: t.replace("<name>n0", "<name>n9")), ilsvrc_ds(),
                              ["ILSVRC2012_val_a1.xml: synset n9", "is not in LOC_synset_mapping.txt"]),
    "ilsvrc_xml_is_folder": ("ilsvrc", lambda r: (r / "val" / "zz.xml").mkdir(), ilsvrc_ds(),
                             ["cannot read annotation", "zz.xml: Is a directory"]),
    "ilsvrc_two_xml_one_image": ("ilsvrc", lambda r: shutil.copy(sorted((r / "val").glob("*.xml"))[0],
                                                                 r / "val" / "zz.xml"), ilsvrc_ds(),
                                 ["zz.xml: annotates ILSVRC2012_val_a1.JPEG, as ILSVRC2012_val_a1.xml does"]),
    "ilsvrc_image_without_xml": ("ilsvrc", lambda r: shutil.copy(sorted((r / "val").glob("*.JPEG"))[0],
                                                                 r / "val" / "extra.JPEG"), ilsvrc_ds(),
                                 ["1 validation image(s) in", "have no XML", "first: extra.JPEG"]),
    "ilsvrc_synset_twice": ("ilsvrc", append("LOC_synset_mapping.txt", "n01440764 again\n"), ilsvrc_ds(),
                            ["LOC_synset_mapping.txt line 4: synset n01440764 listed twice"]),
    "ilsvrc_foreign_train_folder": ("ilsvrc", lambda r: (r / "train" / "n99999999").mkdir(), ilsvrc_ds("train"),
                                    ["train/n99999999 is not a synset of LOC_synset_mapping.txt"]),
    "ilsvrc_empty_class_folder": ("ilsvrc", lambda r: [p.unlink() for p in (r / "train" / "n01440764").iterdir()],
                                  ilsvrc_ds("train"), ["no image in", "train/n01440764"]),
    # wsolevaluation metadata
    "wsol_duplicate_image_id": ("wsol", lambda r: append(f"{WSOL_TEST}/image_ids.txt", "test/gamma/c1.png\n")(r),
                                wsol_ds(), ["image_ids.txt line 3: test/gamma/c1.png is also on line 1"]),
    "wsol_duplicate_label": ("wsol", append(f"{WSOL_TEST}/class_labels.txt", "test/gamma/c1.png,1\n"), wsol_ds(),
                             ["class_labels.txt line 3: test/gamma/c1.png is also on line 1"]),
    "wsol_label_text": ("wsol", replace(f"{WSOL_TEST}/class_labels.txt", ",2", ",two"), wsol_ds(),
                        ["class_labels.txt line 1: class 'two' is not an integer"]),
    "wsol_label_range": ("wsol", replace(f"{WSOL_TEST}/class_labels.txt", ",2", ",7"), wsol_ds(),
                         ["class_labels.txt line 1: class 7 is out of range [0, 3)"]),
    "wsol_size_text": ("wsol", replace(f"{WSOL_TEST}/image_sizes.txt", ",48,", ",w,"), wsol_ds(),
                       ["image_sizes.txt line 1: width and height must be integers"]),
    "wsol_size_wrong": ("wsol", replace(f"{WSOL_TEST}/image_sizes.txt", ",48,", ",49,"), wsol_ds(),
                        ["c1.png is 48x32 but its annotations (image_ids.txt line 1) say 49x32"]),
    "wsol_fractional_box": ("wsol", replace(f"{WSOL_TEST}/localization.txt", ",10,", ",10.5,"), wsol_ds(),
                            ["localization.txt line 1: box coordinates must be integers"]),
    "wsol_field_count": ("wsol", append(f"{WSOL_TEST}/localization.txt", "x,1,2\n"), wsol_ds(),
                         ["localization.txt line 4: expected 5 comma-separated fields"]),
    "wsol_box_unknown_image": ("wsol", append(f"{WSOL_TEST}/localization.txt", "nope.png,1,1,2,2\n"), wsol_ds(),
                               ["localization.txt line 4: nope.png is not in image_ids.txt"]),
    "wsol_no_localization": ("wsol", lambda r: (r / WSOL_TEST / "localization.txt").unlink(), wsol_ds(),
                             ["wsolevaluation localization.txt not found"]),
    "wsol_image_without_label": ("wsol", drop_line(f"{WSOL_TEST}/class_labels.txt", "test/gamma/c1.png"), wsol_ds(),
                                 ["image_ids.txt line 1: test/gamma/c1.png has no line in class_labels.txt"]),
    "wsol_ids_is_folder": ("wsol", folder_instead(f"{WSOL_TEST}/image_ids.txt"), wsol_ds(),
                           ["image_ids.txt is a directory"]),
    "wsol_unknown_dataset": ("wsol", lambda r: None, lambda r: WSOLEvalDataset(
        str(r / "dataset/CUB"), str(r / "metadata"), "Foo", "test", num_classes=3, **KW),
                             ["wsolevaluation metadata folder (Foo, test) not found"]),
    "wsol_missing_image": ("wsol", lambda r: (r / "dataset/CUB/test/gamma/c1.png").unlink(), wsol_ds(),
                           ["c1.png (image_ids.txt line 1)", "not found"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_bad_annotation_is_one_line_naming_file_and_entry(pristine, tmp_path, case):
    fmt, edit, load, words = CASES[case]
    root = tmp_path / fmt
    shutil.copytree(pristine / fmt, root)
    edit(root)
    before = snapshot(root)
    with pytest.raises(ConfigError) as err:
        load(root)[0]  # set-up, then the first sample
    assert isinstance(err.value, DataError) or case == "csv_num_classes_text"
    short(str(err.value), *words, max_lines=1)
    clean(root, before, allow_new=False)  # reading annotations writes nothing, changes nothing


@pytest.mark.parametrize("fmt, edit, load", [
    ("csv", lambda r: (r / "labels.csv").write_bytes(b"\xef\xbb\xbf" + (r / "labels.csv").read_bytes()), csv_ds()),
    ("coco", lambda r: (r / "annotations.json").write_bytes(b"\xef\xbb\xbf" + (r / "annotations.json").read_bytes()),
     coco_ds()),
    ("wsol", lambda r: (r / WSOL_TEST / "image_ids.txt").write_bytes(
        b"\xef\xbb\xbf" + (r / WSOL_TEST / "image_ids.txt").read_bytes()), wsol_ds()),
    ("cub", lambda r: (r / "images.txt").write_bytes(b"\xef\xbb\xbf" + (r / "images.txt").read_bytes()), cub_ds()),
    ("wsol", lambda r: [p.write_bytes(p.read_bytes().replace(b"\n", b"\r\n")) for p in (r / WSOL_TEST).iterdir()],
     wsol_ds()),
])
def test_byte_order_marks_and_windows_line_ends_read_the_same_records(pristine, tmp_path, fmt, edit, load):
    plain = load(pristine / fmt)
    root = tmp_path / fmt
    shutil.copytree(pristine / fmt, root)
    edit(root)
    marked = load(root)
    rel = lambda ds: [(r.path.replace(str(root), "").replace(str(pristine / fmt), ""), r.label, r.boxes.tolist())
                      for r in ds.records]
    assert rel(marked) == rel(plain) and len(plain) > 0


def test_a_zero_area_training_box_is_counted_and_warned_not_an_error(pristine, tmp_path, caplog):
    root = tmp_path / "csv"
    shutil.copytree(pristine / "csv", root)
    replace("labels.csv", A0, "images/a0.png,alpha,6,5,6,19")(root)
    with caplog.at_level(logging.WARNING, logger="camlab.data"):
        ds = CSVDataset(str(root), "labels.csv", "train", num_classes=3, **KW)
    assert ds.counts["zero_area_boxes"] == 1
    short(next(r.message for r in caplog.records if "zero area" in r.message), "a0.png (labels.csv line 2)")


def test_a_training_box_outside_its_image_is_clipped_and_warned(pristine, tmp_path, caplog):
    root = tmp_path / "csv"
    shutil.copytree(pristine / "csv", root)
    replace("labels.csv", A0, "images/a0.png,alpha,-6,-5,-1,-2")(root)
    with caplog.at_level(logging.WARNING, logger="camlab.data"):
        ds = CSVDataset(str(root), "labels.csv", "train", num_classes=3, **KW)
    assert ds.counts["clipped_boxes"] == 1 and ds.counts["emptied_boxes"] == 1
    assert ds.records[0].boxes.tolist() == [[0.0, 0.0, 0.0, 0.0]]
    short(next(r.message for r in caplog.records if "clipped" in r.message), "a0.png (labels.csv line 2)",
          "entirely outside")
