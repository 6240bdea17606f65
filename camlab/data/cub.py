"""CUB-200-2011 in its native layout (any number of classes), with the optional segmentation masks.

Boxes ``x y width height`` become ``(x, y, x + width, y + height)`` treated as inclusive pixel bounds, the
conversion wsolevaluation's CUB metadata was made with, so numbers compare with its tables. CUB has no
validation split: ``val`` is the test split unless ``val_from: train`` is set (a held-out part of train).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from camlab.data.masks import MaskSpec
from camlab.data.files import assign_split, read_lines, require
from camlab.data.records import Record, RecordDataset
from camlab.errors import ConfigError, DataError

LAYOUT = (
    "<root>/{images.txt: '<id> <class dir>/<file>.jpg', image_class_labels.txt: '<id> <class id>', "
    "train_test_split.txt: '<id> <1 train | 0 test>', bounding_boxes.txt: '<id> <x> <y> <width> <height>', "
    "classes.txt: '<class id> <name>', images/<class dir>/<file>.jpg, optional segmentations/<class dir>/<file>.png}"
)


def _table(path: Path, n_fields: int, ids: dict[str, str] | None = None, unique: bool = True,
           ) -> list[tuple[int, list[str]]]:
    """(line number, fields) of a CUB table; its first field (an id) once per file with ``unique``, and one of
    the image ids of ``ids`` (images.txt) when given: a DataError naming the line otherwise."""
    rows, seen = [], {}
    for i, line in read_lines(path):
        parts = line.split()
        if len(parts) < n_fields:
            raise DataError(f"{path} line {i}: expected {n_fields} fields, got {line!r}")
        if unique and parts[0] in seen:
            raise DataError(f"{path} line {i}: id {parts[0]} is also on line {seen[parts[0]]}; each id once")
        if ids is not None and parts[0] not in ids:
            raise DataError(f"{path} line {i}: image id {parts[0]} is not in images.txt")
        seen.setdefault(parts[0], i)
        rows.append((i, parts))
    return rows


def read_cub(
    root: str | Path, split: str, segmentations: bool | str = "auto", val_from: str = "test",
    val_fraction: float = 0.1, seed: int = 0,
) -> tuple[list[Record], list[str]]:
    """Records of one split of CUB-200-2011 and the class names (``classes.txt`` order).

    ``segmentations``: 'auto' uses ``segmentations/`` when that folder exists; True requires it.
    ``val_from``: 'test' (val = the test split, the common WSOL practice) or 'train' (a ``val_fraction``
    part of the train split, chosen with ``seed``; train then excludes it).
    """
    root = require(root, "CUB-200-2011 root", LAYOUT)
    files = {n: require(root / n, f"CUB file {n}", LAYOUT) for n in (
        "images.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt", "classes.txt")}
    require(root / "images", "CUB images folder", LAYOUT)
    if split not in ("train", "val", "test"):
        raise ConfigError(f"split must be 'train', 'val' or 'test', got {split!r}", settings=["split"])
    if val_from not in ("test", "train"):
        raise ConfigError(f"val_from must be 'test' or 'train', got {val_from!r}", settings=["val_from"])

    class_ids, class_names = [], []
    for i, parts in _table(files["classes.txt"], 2):
        class_ids.append(parts[0])
        class_names.append(" ".join(parts[1:]))
    index_of = {cid: k for k, cid in enumerate(class_ids)}

    paths = {parts[0]: parts[1] for _, parts in _table(files["images.txt"], 2)}
    labels: dict[str, int] = {}
    for i, parts in _table(files["image_class_labels.txt"], 2, paths):
        if parts[1] not in index_of:
            raise DataError(
                f"{files['image_class_labels.txt']} line {i}: class id {parts[1]} is not in classes.txt "
                f"({len(class_ids)} classes)"
            )
        labels[parts[0]] = index_of[parts[1]]
    is_train = {}
    for i, parts in _table(files["train_test_split.txt"], 2, paths):
        if parts[1] not in ("0", "1"):
            raise DataError(f"{files['train_test_split.txt']} line {i}: is_training_image must be 1 (train) or 0 "
                            f"(test), got {parts[1]!r}")
        is_train[parts[0]] = parts[1] == "1"
    boxes: dict[str, list[tuple[float, ...]]] = {}
    for i, parts in _table(files["bounding_boxes.txt"], 5, paths, unique=False):
        try:
            x, y, w, h = (float(v) for v in parts[1:5])
        except ValueError:
            raise DataError(f"{files['bounding_boxes.txt']} line {i}: expected '<id> <x> <y> <w> <h>', got {parts}") from None
        if not np.isfinite([x, y, w, h]).all():
            raise DataError(f"{files['bounding_boxes.txt']} line {i}: box {parts[1:5]} of image id {parts[0]} has a NaN "
                            f"or infinite value; fix that line")
        boxes.setdefault(parts[0], []).append((x, y, x + w, y + h))

    seg_dir = root / "segmentations"
    use_seg = seg_dir.is_dir() if segmentations == "auto" else bool(segmentations)
    if use_seg:
        require(seg_dir, "CUB segmentations folder", LAYOUT)

    for image_id in paths:
        for table, what in ((labels, "image_class_labels.txt"), (is_train, "train_test_split.txt")):
            if image_id not in table:
                raise DataError(f"CUB image id {image_id} of images.txt has no line in {what}")
    train_ids = [k for k in paths if is_train[k]]
    if split == "test" or (split == "val" and val_from == "test"):
        ids = [k for k in paths if not is_train[k]]
    elif val_from == "train":
        held_out = assign_split(train_ids, "val", val_fraction, 0.0, seed)
        ids = [k for k in train_ids if (k in held_out) == (split == "val")]
    else:
        ids = train_ids

    records = []
    for image_id in ids:
        rel = paths[image_id]
        mask = None
        if use_seg:
            mask = MaskSpec(files=(str(seg_dir / Path(rel).with_suffix(".png")),), threshold=127)
        records.append(Record(
            path=str(root / "images" / rel), label=labels[image_id],
            boxes=np.asarray(boxes.get(image_id, []), dtype=np.float64).reshape(-1, 4),
            mask=mask, source=f"CUB image id {image_id}",
        ))
    return records, class_names


class CUBDataset(RecordDataset):
    """CUB-200-2011 from its native layout (see :func:`read_cub`); keyword arguments of RecordDataset."""

    def __init__(self, root: str, split: str = "train", segmentations: bool | str = "auto",
                 val_from: str = "test", val_fraction: float = 0.1, seed: int = 0, **kwargs: Any) -> None:
        records, names = read_cub(root, split, segmentations, val_from, val_fraction, seed)
        kwargs.setdefault("name", "CUB-200-2011")
        super().__init__(records, names, split=split, inclusive_boxes=True, **kwargs)
