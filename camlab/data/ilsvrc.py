"""ILSVRC (ImageNet) in its native layout: train/<wnid>/*.JPEG, validation images + their XML boxes.

The class index of a synset is its line in the synset list (``LOC_synset_mapping.txt``:
``<wnid> <description>``, or one wnid per line). Validation labels come from the XML files (every object of
an image has the image's class; several boxes per image). XML boxes are inclusive pixel bounds, like
wsolevaluation's ILSVRC metadata made from them. ImageNet has no labelled test set: ``val`` and ``test``
are both the validation images (for a held-out selection set use the wsolevaluation layout's ImageNetV2 val).

The Kaggle "ImageNet Object Localization" layout works by overriding the folders:
``train_dir=ILSVRC/Data/CLS-LOC/train val_dir=ILSVRC/Data/CLS-LOC/val val_annotations=ILSVRC/Annotations/CLS-LOC/val``.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from camlab.data.files import IMAGE_EXTENSIONS, list_images, read_lines, require
from camlab.data.records import Record, RecordDataset
from camlab.errors import ConfigError, DataError

LAYOUT = (
    "<root>/{<synsets> ('<wnid> [description]' per line, class index = line order), "
    "<train_dir>/<wnid>/*.JPEG, <val_dir>/<name>.JPEG, <val_annotations>/<name>.xml (PASCAL VOC XML: "
    "filename, size, object/name = wnid, object/bndbox xmin ymin xmax ymax)}"
)


def read_synsets(path: Path) -> tuple[list[str], list[str]]:
    """(wnids, names) from a synset list, in file order."""
    wnids, names = [], []
    for i, line in read_lines(path):
        wnid, _, desc = line.partition(" ")
        if wnid in wnids:
            raise DataError(f"{path} line {i}: synset {wnid} listed twice")
        wnids.append(wnid)
        names.append(desc.strip() or wnid)
    return wnids, names


def parse_voc_xml(path: Path) -> tuple[str, tuple[int, int] | None, list[tuple[str, tuple[float, ...]]]]:
    """(filename, (W, H) or None, [(object name, (xmin, ymin, xmax, ymax)), ...]) of a PASCAL VOC XML."""
    try:
        tree = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise DataError(f"cannot parse annotation {path}: {err}") from None
    except OSError as err:  # a folder named *.xml, no permission
        raise DataError(f"cannot read annotation {path}: {err.strerror or err}") from None
    filename = (tree.findtext("filename") or path.stem).strip()
    size = None
    if tree.find("size") is not None:
        try:
            size = (int(tree.findtext("size/width")), int(tree.findtext("size/height")))
        except (TypeError, ValueError):
            raise DataError(f"{path}: <size> needs integer <width> and <height>") from None
    objects = []
    for obj in tree.iter("object"):
        box = obj.find("bndbox")
        if box is None:
            raise DataError(f"{path}: an <object> without <bndbox>")
        try:
            coords = tuple(float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError):
            raise DataError(f"{path}: a <bndbox> needs numeric xmin, ymin, xmax, ymax") from None
        if not np.isfinite(coords).all():
            raise DataError(f"{path}: <bndbox> {list(coords)} has a NaN or infinite value; fix that file")
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise DataError(f"{path}: an <object> without <name> (its synset, e.g. n01440764)")
        objects.append((name, coords))
    return filename, size, objects


def read_ilsvrc(
    root: str | Path, split: str, synsets: str = "LOC_synset_mapping.txt", train_dir: str = "train",
    val_dir: str = "val", val_annotations: str = "val",
) -> tuple[list[Record], list[str]]:
    """Records of the train split (labels from folders) or val/test (the validation images, XML boxes)."""
    if split not in ("train", "val", "test"):
        raise ConfigError(f"split must be 'train', 'val' or 'test', got {split!r}", settings=["split"])
    root = require(root, "ILSVRC root", LAYOUT)
    wnids, names = read_synsets(require(root / synsets, "ILSVRC synset list", LAYOUT))
    index_of = {w: k for k, w in enumerate(wnids)}
    records = []
    if split == "train":
        train = require(root / train_dir, "ILSVRC train folder", LAYOUT)
        with os.scandir(train) as it:
            folders = sorted(e.name for e in it if e.is_dir())
        filled = set()
        for wnid in folders:
            if wnid not in index_of:
                raise DataError(f"ILSVRC train folder {train / wnid} is not a synset of {synsets}")
            source = f"folder {wnid}"  # one string per class, shared by its ~1,300 records
            for p in list_images(train / wnid):
                records.append(Record(path=str(p), label=index_of[wnid], source=source))
                filled.add(wnid)
        # A class with no training image would be trained on nothing: name its empty (or absent) folder.
        empty = [(w, f"{'no image in' if w in folders else 'no folder'} {train / w}") for w in wnids if w not in filled]
        if empty:
            first = "; ".join(f"{w} (class {index_of[w]}): {why}" for w, why in empty[:3])
            raise DataError(
                f"ILSVRC: {len(empty)} of the {len(wnids)} synsets of {synsets} have no training images: {first}"
                f"{'; ...' if len(empty) > 3 else ''}. Add their images ({', '.join(IMAGE_EXTENSIONS)}), or remove "
                f"those synsets from {synsets} and set num_classes to the number left",
                settings=["num_classes"],
            )
        return records, names

    images = require(root / val_dir, "ILSVRC validation image folder", LAYOUT)
    xml_dir = require(root / val_annotations, "ILSVRC validation annotation folder", LAYOUT)
    xmls = sorted(xml_dir.glob("*.xml"))
    if not xmls:
        raise DataError(f"no .xml annotations in {xml_dir}. Expected layout: {LAYOUT}")
    annotated: dict[str, str] = {}  # image file -> its XML
    for xml in xmls:
        filename, size, objects = parse_voc_xml(xml)
        if not objects:
            raise DataError(f"{xml}: no <object>; every validation image needs its class and box")
        classes = {name for name, _ in objects}
        unknown = classes - set(index_of)
        if unknown:
            raise DataError(f"{xml}: synset {sorted(unknown)[0]} is not in {synsets} ({len(wnids)} classes)")
        if len(classes) > 1:
            raise DataError(f"{xml}: objects of several classes {sorted(classes)}; one class per image is needed")
        name = filename if Path(filename).suffix else f"{filename}.JPEG"
        if name in annotated:
            raise DataError(f"{xml}: annotates {name}, as {annotated[name]} does; one XML per image")
        annotated[name] = xml.name
        records.append(Record(
            path=str(images / name), label=index_of[classes.pop()],
            boxes=np.asarray([c for _, c in objects], dtype=np.float64).reshape(-1, 4),
            size=size, source=str(xml.name),
        ))
    unannotated = [p for p in list_images(images) if p.name not in annotated]
    if unannotated:
        raise DataError(
            f"{len(unannotated)} validation image(s) in {images} have no XML in {xml_dir}, first: {unannotated[0].name}"
        )
    return records, names


class ILSVRCDataset(RecordDataset):
    """ILSVRC from its native layout (see :func:`read_ilsvrc`); keyword arguments of RecordDataset."""

    def __init__(self, root: str, split: str = "train", synsets: str = "LOC_synset_mapping.txt",
                 train_dir: str = "train", val_dir: str = "val", val_annotations: str = "val", **kwargs: Any) -> None:
        records, names = read_ilsvrc(root, split, synsets, train_dir, val_dir, val_annotations)
        kwargs.setdefault("name", "ILSVRC")
        kwargs.setdefault("check_files", split != "train")  # train images were listed from their folders
        super().__init__(records, names, split=split, inclusive_boxes=True, **kwargs)
