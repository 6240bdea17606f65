"""The wsolevaluation metadata layout (Choe et al., CVPR 2020) for CUB, ILSVRC and OpenImages.

``<metadata_root>/<dataset>/<split>/`` holds, one image per line (``<image_id>`` is a path relative to
the image root):

- ``image_ids.txt``: ``<image_id>``
- ``class_labels.txt``: ``<image_id>,<class index>``
- ``image_sizes.txt`` (CUB, ILSVRC): ``<image_id>,<width>,<height>``
- ``localization.txt``: boxes ``<image_id>,<x0>,<y0>,<x1>,<y1>`` (inclusive integer pixels, one line per
  box) for CUB / ILSVRC, or masks ``<image_id>,<mask png>,<ignore png>`` (one line per instance, the ignore
  file on the first line only) for OpenImages, mask paths relative to ``mask_root``.

Splits: ``train``, ``val`` (the paper's *train-fullsup*: CUBV2 / ImageNetV2 / OpenImages val, for choosing
hyperparameters) and ``test``. Masks follow wsolevaluation's ``get_mask``: instance pixels > 0 are object,
the ignore region minus the objects is 255. OpenImages has no boxes: its val/test images get the tight box
of each instance mask (camlab's addition, so the box metrics also run; PxAP is the benchmark's number).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from camlab.data.masks import MaskSpec
from camlab.data.files import read_lines, require
from camlab.data.records import Record, RecordDataset
from camlab.errors import ConfigError, DataError

NUM_CLASSES = {"CUB": 200, "ILSVRC": 1000, "OpenImages": 100}
LAYOUT = (
    "<metadata_root>/<dataset>/<split>/{image_ids.txt: '<image_id>', class_labels.txt: '<image_id>,<class>', "
    "image_sizes.txt: '<image_id>,<w>,<h>' (CUB, ILSVRC), localization.txt: '<image_id>,<x0>,<y0>,<x1>,<y1>' "
    "or '<image_id>,<mask>,<ignore>' (OpenImages)}; images at <root>/<image_id>, masks at <mask_root>/<mask>"
)


def _csv(path: Path, n_fields: int, ids: set[str] | None = None, unique: bool = True) -> list[tuple[int, list[str]]]:
    """(line number, fields) of a metadata file; its image id once per file with ``unique``, and one of ``ids``
    (image_ids.txt) when given: a DataError naming the line otherwise."""
    rows, seen = [], {}
    for i, line in read_lines(path):
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != n_fields:
            raise DataError(f"{path} line {i}: expected {n_fields} comma-separated fields, got {line!r}")
        if unique and parts[0] in seen:
            raise DataError(f"{path} line {i}: {parts[0]} is also on line {seen[parts[0]]}; each image once")
        if ids is not None and parts[0] not in ids:
            raise DataError(f"{path} line {i}: {parts[0]} is not in image_ids.txt")
        seen.setdefault(parts[0], i)
        rows.append((i, parts))
    return rows


def read_wsoleval(
    root: str | Path, metadata_root: str | Path, dataset: str, split: str,
    num_classes: int | None = None, mask_root: str | Path | None = None,
) -> tuple[list[Record], list[str]]:
    """Records of ``<metadata_root>/<dataset>/<split>`` with images under ``root``; class names '0'..'K-1'."""
    if split not in ("train", "val", "test"):
        raise ConfigError(f"split must be 'train', 'val' or 'test', got {split!r}", settings=["split"])
    root = require(root, f"wsolevaluation {dataset} image root", LAYOUT)
    meta = require(Path(metadata_root) / dataset / split, f"wsolevaluation metadata folder ({dataset}, {split})", LAYOUT)
    mask_root = Path(mask_root) if mask_root else root
    if num_classes is None:
        if dataset not in NUM_CLASSES:
            raise ConfigError(f"num_classes is needed for dataset {dataset!r} (known: {sorted(NUM_CLASSES)})",
                              settings=["num_classes"])
        num_classes = NUM_CLASSES[dataset]

    ids_file = require(meta / "image_ids.txt", "wsolevaluation image_ids.txt", LAYOUT)
    labels_file = require(meta / "class_labels.txt", "wsolevaluation class_labels.txt", LAYOUT)
    ids = [image_id for _, (image_id,) in _csv(ids_file, 1)]  # each once: a repeated image would count twice
    known = set(ids)
    labels: dict[str, int] = {}
    for i, (image_id, value) in _csv(labels_file, 2):
        try:
            label = int(value)
        except ValueError:
            raise DataError(f"{labels_file} line {i}: class {value!r} is not an integer") from None
        if not 0 <= label < num_classes:
            raise DataError(f"{labels_file} line {i}: class {label} is out of range [0, {num_classes})")
        labels[image_id] = label

    sizes: dict[str, tuple[int, int]] = {}
    if (meta / "image_sizes.txt").is_file():
        for i, (image_id, w, h) in _csv(meta / "image_sizes.txt", 3):
            try:
                sizes[image_id] = (int(w), int(h))
            except ValueError:
                raise DataError(f"{meta / 'image_sizes.txt'} line {i}: width and height must be integers, "
                                f"got {w!r}, {h!r}") from None

    boxes: dict[str, list[tuple[float, ...]]] = {}
    masks: dict[str, list[str]] = {}
    ignores: dict[str, str] = {}
    loc = meta / "localization.txt"
    if loc.is_file():
        lines = read_lines(loc)
        n_fields = len(lines[0][1].split(",")) if lines else 5
        if n_fields == 5:
            for i, parts in _csv(loc, 5, known, unique=False):
                try:
                    boxes.setdefault(parts[0], []).append(tuple(float(int(v)) for v in parts[1:]))
                except ValueError:
                    raise DataError(f"{loc} line {i}: box coordinates must be integers, got {parts[1:]}") from None
        else:
            for i, (image_id, mask, ignore) in _csv(loc, 3, known, unique=False):
                masks.setdefault(image_id, []).append(str(mask_root / mask))
                if ignore:
                    if image_id in ignores:
                        raise DataError(f"{loc} line {i}: a second ignore mask for {image_id}")
                    ignores[image_id] = str(mask_root / ignore)
    elif split != "train":
        require(loc, "wsolevaluation localization.txt", LAYOUT)

    records = []
    for n, image_id in enumerate(ids, 1):
        if image_id not in labels:
            raise DataError(f"{ids_file} line {n}: {image_id} has no line in {labels_file.name}")
        mask = MaskSpec(files=tuple(masks[image_id]), ignore_file=ignores.get(image_id)) if image_id in masks else None
        records.append(Record(
            path=str(root / image_id), label=labels[image_id],
            boxes=np.asarray(boxes.get(image_id, []), dtype=np.float64).reshape(-1, 4),
            size=sizes.get(image_id), mask=mask, source=f"{ids_file.name} line {n}",
        ))
    return records, [str(k) for k in range(num_classes)]


class WSOLEvalDataset(RecordDataset):
    """One split of a wsolevaluation-layout dataset (see :func:`read_wsoleval`); RecordDataset kwargs."""

    def __init__(self, root: str, metadata_root: str, dataset: str, split: str = "train",
                 num_classes: int | None = None, mask_root: str | None = None, **kwargs: Any) -> None:
        records, names = read_wsoleval(root, metadata_root, dataset, split, num_classes, mask_root)
        kwargs.setdefault("name", f"wsolevaluation {dataset}")
        super().__init__(records, names, split=split, inclusive_boxes=True, num_classes=num_classes, **kwargs)
