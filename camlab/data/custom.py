"""Your own data: a folder of images plus one annotation file, COCO-style JSON or a simple CSV.

COCO JSON (``images``, ``annotations``, ``categories``): boxes ``bbox: [x, y, width, height]`` in pixels
(continuous: ``x + width`` is one past the last pixel), masks as ``segmentation`` polygons or RLE
(compressed or not) or a PNG per image (``"mask_file"`` on the image entry; nonzero = object). Classes are the
``categories`` sorted by id (class index = position). An image's label is the category of its
annotations (all must agree) or, for an image without annotations, its own ``"category_id"``.

CSV ``path,label,x0,y0,x1,y1`` (an optional header row may add ``split`` and ``mask`` columns): one row per
box, repeated for several boxes; empty box fields for an image without a box. ``label`` is a class index
(0-based, checked against ``num_classes``) or a class name (indices follow ``classes`` if given, else the
sorted names).

Splits: an image's ``"split"`` key / ``split`` column (train, val, test) when present, else a deterministic
random split of the images by ``val_fraction`` / ``test_fraction`` / ``seed``.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from camlab.data.masks import MaskSpec
from camlab.data.files import SPLITS, assign_split, read_text, require
from camlab.data.records import Record, RecordDataset
from camlab.errors import ConfigError, DataError

COCO_LAYOUT = (
    "<root>/<images...> and an annotation JSON {images: [{id, file_name, width, height, [split], [mask_file], "
    "[category_id]}], annotations: [{image_id, category_id, bbox: [x, y, w, h], [segmentation]}], "
    "categories: [{id, name}]}"
)
CSV_LAYOUT = "<root>/<images...> and a CSV with rows 'path,label,x0,y0,x1,y1' (optional header: + split, mask)"


def _split_filter(records: list[tuple[str | None, Record]], split: str, where: str, fractions: tuple[float, float, int]):
    """Keep the records of ``split``: by their own split field when any has one, else a random split."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}", settings=["split"])
    given = [s for s, _ in records if s]
    if given:
        for s, r in records:
            if s not in SPLITS:
                raise DataError(f"{where}: {r.source} has split {s!r}; expected one of {SPLITS} on every image")
        return [r for s, r in records if s == split]
    chosen = assign_split([r.path for _, r in records], split, *fractions)
    return [r for _, r in records if r.path in chosen]


# ------------------------------------------------------------------------------------------------- COCO
def read_coco(
    root: str | Path, annotations: str | Path, split: str, val_fraction: float = 0.2, test_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[list[Record], list[str]]:
    """Records of one split of a COCO-style annotation file, and the category names."""
    root = require(root, "image root", COCO_LAYOUT)
    ann_path = require(root / annotations, "COCO annotation file", COCO_LAYOUT)
    try:
        data = json.loads(read_text(ann_path))
    except json.JSONDecodeError as err:
        raise DataError(f"{ann_path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise DataError(f"{ann_path}: the top level must be an object {{images, annotations, categories}}, got a "
                        f"{type(data).__name__}. Expected: {COCO_LAYOUT}")
    for key in ("images", "categories"):
        if key not in data:
            raise DataError(f"{ann_path} has no '{key}' list. Expected: {COCO_LAYOUT}")
    for key in ("images", "categories", "annotations"):
        if not isinstance(data.get(key, []), list):
            raise DataError(f"{ann_path}: '{key}' must be a list of objects, got a {type(data[key]).__name__}. "
                            f"Expected: {COCO_LAYOUT}")
    _check_entries(ann_path, data["categories"], "categories", ("id",))
    _check_entries(ann_path, data["images"], "images", ("id", "file_name"))
    _check_entries(ann_path, data.get("annotations", []), "annotations", ("image_id",))
    for n, c in enumerate(data["categories"]):
        if isinstance(c["id"], bool) or not isinstance(c["id"], (int, float, str)):
            raise DataError(f"{ann_path} categories[{n}]: id must be a number or a string, got {c['id']!r}")
    _check_file_names(ann_path, data["images"])
    categories = sorted(data["categories"], key=lambda c: (str(type(c["id"])), c["id"]))
    index_of = {c["id"]: k for k, c in enumerate(categories)}
    known = [c["id"] for c in categories]  # for messages: sorted, ids of mixed types included
    if len(index_of) < len(categories):
        raise DataError(f"{ann_path}: categories: id {_first_duplicate([c['id'] for c in categories])!r} is listed twice")
    names = [str(c.get("name", c["id"])) for c in categories]

    per_image: dict[Any, list[tuple[int, dict]]] = {}
    for n, ann in enumerate(data.get("annotations", [])):
        where = f"{ann_path.name} annotations[{n}] (id {ann.get('id', '?')})"
        if ann.get("category_id") not in index_of:
            raise DataError(f"{where}: category_id {ann.get('category_id')!r} is not in categories {known}")
        per_image.setdefault(ann.get("image_id"), []).append((n, ann))
    _check_image_ids(ann_path, data["images"], per_image)

    records: list[tuple[str | None, Record]] = []
    for n, img in enumerate(data["images"]):
        where = f"{ann_path.name} images[{n}] ({img['file_name']})"
        anns = per_image.pop(img["id"], [])
        classes = {a["category_id"] for _, a in anns}
        if not anns and "category_id" in img:
            if img["category_id"] not in index_of:
                raise DataError(f"{where}: category_id {img['category_id']!r} is not in categories {known}")
            classes = {img["category_id"]}
        if len(classes) != 1:
            raise DataError(
                f"{where}: {'no annotation and no category_id' if not classes else f'annotations of several categories {sorted(classes)}'}"
                f"; each image needs exactly one class"
            )
        boxes, polygons, rles = [], [], []
        for k, a in anns:
            seg = _coco_segmentation(a.get("segmentation"), f"{ann_path} annotations[{k}] (id {a.get('id', '?')}, "
                                                            f"image {img['file_name']})")
            if isinstance(seg, list):
                polygons += [tuple(p) for p in seg]
            elif isinstance(seg, dict):
                rles.append(seg)
            if a.get("bbox") is not None:
                x, y, w, h = _coco_bbox(a["bbox"], f"{ann_path} annotations[{k}] (id {a.get('id', '?')}, image "
                                                   f"{img['file_name']})")
                boxes.append((x, y, x + w, y + h))
            elif isinstance(seg, list) and seg:
                xs = [v for p in seg for v in p[0::2]]
                ys = [v for p in seg for v in p[1::2]]
                boxes.append((min(xs), min(ys), max(xs), max(ys)))
            else:
                raise DataError(f"{ann_path.name} annotations[{k}]: needs a bbox (or a polygon segmentation)")
        size = None
        if "width" in img and "height" in img:
            w, h = img["width"], img["height"]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer() and v >= 1
                       for v in (w, h)):
                raise DataError(f"{ann_path} images[{n}] ({img['file_name']}): width and height must be integers "
                                f">= 1 (the image's pixels), got {w!r}, {h!r}")
            size = (int(w), int(h))
        mask = None
        if img.get("mask_file") or polygons or rles:
            if polygons and size is None:
                raise DataError(f"{where}: polygon masks need the image's width and height")
            files = (str(root / img["mask_file"]),) if img.get("mask_file") else ()
            mask = MaskSpec(files=files, polygons=tuple(polygons), rles=tuple(rles), source_size=size)
        records.append((img.get("split"), Record(
            path=str(root / img["file_name"]), label=index_of[classes.pop()],
            boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4), size=size, mask=mask, source=where,
        )))
    if per_image:
        raise DataError(f"{ann_path.name}: annotations refer to image_id {next(iter(per_image))!r}, not in images")
    return _split_filter(records, split, str(ann_path), (val_fraction, test_fraction, seed)), names


def _check_entries(path: Path, entries: list, key: str, required: tuple[str, ...]) -> None:
    """Every entry of a COCO list is an object with the ``required`` keys."""
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise DataError(f"{path} {key}[{n}]: expected an object, got {type(entry).__name__} {str(entry)[:60]!r}")
        missing = [r for r in required if r not in entry]
        if missing:
            raise DataError(f"{path} {key}[{n}] has no {' or '.join(repr(m) for m in missing)} "
                            f"(keys: {sorted(entry)[:8]}). Expected: {COCO_LAYOUT}")


def _check_file_names(path: Path, images: list[dict]) -> None:
    """Every image's ``file_name`` is a non-empty string, and no two images name the same file (the image would
    be scored twice)."""
    first: dict[str, int] = {}
    for n, img in enumerate(images):
        name = img["file_name"]
        if not isinstance(name, str) or not name.strip():
            raise DataError(f"{path} images[{n}] (id {img.get('id')!r}): file_name must be a path relative to the "
                            f"image root, got {name!r}")
        if name in first:
            raise DataError(f"{path} images[{n}] (id {img.get('id')!r}): file_name {name!r} is also the file of "
                            f"images[{first[name]}]; list each image once, with all its annotations")
        first[name] = n


def _coco_segmentation(seg: Any, where: str) -> Any:
    """A COCO ``segmentation``: None, polygons (lists of finite x, y pairs) or an RLE object; else a DataError at
    ``where``."""
    if seg is None or isinstance(seg, dict):
        return seg
    if not isinstance(seg, list):
        raise DataError(f"{where}: segmentation must be a list of polygons [[x1, y1, x2, y2, ...], ...] or an RLE "
                        f"object {{size, counts}}, got {str(seg)[:60]!r}")
    for p, poly in enumerate(seg):
        ok = isinstance(poly, list) and len(poly) >= 2 and len(poly) % 2 == 0 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in poly)
        if not ok:
            raise DataError(f"{where}: polygon {p} of its segmentation must be a list of x, y pairs of finite "
                            f"numbers [x1, y1, x2, y2, ...], got {str(poly)[:60]}")
    return seg


def _first_duplicate(values: list) -> Any:
    seen = set()
    for v in values:
        if v in seen:
            return v
        seen.add(v)
    return None


def _check_image_ids(path: Path, images: list[dict], per_image: dict) -> None:
    """Image ids are unique, and every annotation's image_id is one of them (also in type: 1 is not "1")."""
    first: dict[Any, int] = {}
    for n, img in enumerate(images):
        try:
            hash(img["id"])
        except TypeError:
            raise DataError(f"{path} images[{n}] ({img['file_name']}): id must be a number or a string, "
                            f"got {img['id']!r}") from None
        if img["id"] in first:
            raise DataError(f"{path} images[{n}] ({img['file_name']}): id {img['id']!r} is also the id of "
                            f"images[{first[img['id']]}] ({images[first[img['id']]]['file_name']}); image ids must "
                            f"be unique")
        first[img["id"]] = n
    orphans = [i for i in per_image if i not in first]
    if not orphans:
        return
    n_ann, ann = per_image[orphans[0]][0]
    by_text = {str(i): i for i in first}
    if str(orphans[0]) in by_text:
        other = by_text[str(orphans[0])]
        raise DataError(f"{path} annotations[{n_ann}]: image_id {orphans[0]!r} ({type(orphans[0]).__name__}) differs in "
                        f"type from images[{first[other]}] id {other!r} ({type(other).__name__}); write both as the "
                        f"same type (COCO uses integers)")
    raise DataError(f"{path} annotations[{n_ann}]: image_id {orphans[0]!r} is not the id of any image "
                    f"({len(orphans)} image id(s) of annotations are missing from 'images')")


def _coco_bbox(bbox: Any, where: str) -> tuple[float, float, float, float]:
    """A COCO ``[x, y, width, height]`` of finite numbers, width and height >= 0; else a DataError at ``where``."""
    if (isinstance(bbox, (str, bytes)) or not isinstance(bbox, (list, tuple)) or len(bbox) != 4
            or any(isinstance(v, bool) for v in bbox)):
        raise DataError(f"{where}: bbox must be a list of 4 numbers [x, y, width, height], got {bbox!r}")
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise DataError(f"{where}: bbox must be 4 numbers [x, y, width, height], got {bbox!r}") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise DataError(f"{where}: bbox {bbox!r} has a NaN or infinite value; fix or remove that annotation")
    if w < 0 or h < 0:
        raise DataError(f"{where}: bbox {bbox!r} has a negative width or height (COCO is [x, y, width, height])")
    return x, y, w, h


class COCODataset(RecordDataset):
    """A folder of images + a COCO-style JSON (see :func:`read_coco`); keyword arguments of RecordDataset."""

    def __init__(self, root: str, annotations: str, split: str = "train", val_fraction: float = 0.2,
                 test_fraction: float = 0.2, seed: int = 0, **kwargs: Any) -> None:
        records, names = read_coco(root, annotations, split, val_fraction, test_fraction, seed)
        kwargs.setdefault("name", f"COCO {annotations}")
        kwargs.setdefault("check_mask_sizes", True)
        super().__init__(records, names, split=split, inclusive_boxes=False, **kwargs)


# -------------------------------------------------------------------------------------------------- CSV
def read_csv(
    root: str | Path, annotations: str | Path, split: str, classes: Sequence[str] | None = None,
    num_classes: int | None = None, val_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0,
) -> tuple[list[Record], list[str]]:
    """Records of one split of a ``path,label,x0,y0,x1,y1`` CSV, and the class names."""
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 1):
        raise ConfigError(f"num_classes must be an integer >= 1 (or None: from the labels), got {num_classes!r}",
                          settings=["num_classes"])
    root = require(root, "image root", CSV_LAYOUT)
    ann_path = require(root / annotations, "CSV annotation file", CSV_LAYOUT)
    text = read_text(ann_path)  # UTF-8, a byte-order mark dropped (else the header's "path" would not match)
    try:
        rows = [(i, [c.strip() for c in row]) for i, row in enumerate(csv.reader(io.StringIO(text, newline="")), 1)
                if any(c.strip() for c in row)]
    except csv.Error as err:
        raise DataError(f"{ann_path}: not a readable CSV ({err}). Expected: {CSV_LAYOUT}") from None
    if not rows:
        raise DataError(f"{ann_path} is empty. Expected: {CSV_LAYOUT}")
    columns = ["path", "label", "x0", "y0", "x1", "y1"]
    if rows[0][1][0].lower() == "path":
        columns = [c.lower() for c in rows[0][1]]
        missing = [c for c in ("path", "label", "x0", "y0", "x1", "y1") if c not in columns]
        if missing:
            raise DataError(f"{ann_path} line 1: header lacks {missing}. Expected: {CSV_LAYOUT}")
        rows = rows[1:]
    col = {c: k for k, c in enumerate(columns)}

    parsed = []
    for i, row in rows:
        if len(row) != len(columns):
            raise DataError(f"{ann_path} line {i}: expected {len(columns)} fields ({','.join(columns)}), got {len(row)}")
        coords = [row[col[c]] for c in ("x0", "y0", "x1", "y1")]
        if any(coords) and not all(coords):
            raise DataError(f"{ann_path} line {i}: give all of x0,y0,x1,y1 or none")
        try:
            box = tuple(float(v) for v in coords) if all(coords) else None
        except ValueError:
            raise DataError(f"{ann_path} line {i}: box coordinates must be numbers, got {coords}") from None
        if box is not None and not all(math.isfinite(v) for v in box):
            raise DataError(f"{ann_path} line {i}: box {coords} of {row[col['path']]} has a NaN or infinite "
                            f"coordinate; fix or remove that row")
        parsed.append((i, row[col["path"]], row[col["label"]], box,
                       row[col["split"]] if "split" in col else None, row[col["mask"]] if "mask" in col else ""))

    labels = [p[2] for p in parsed]
    numeric = classes is None and all(v.lstrip("-").isdigit() for v in labels)
    if numeric:
        k = num_classes if num_classes is not None else max(int(v) for v in labels) + 1
        names = [str(c) for c in range(k)]
    else:
        names = list(classes) if classes is not None else sorted(set(labels))
        if classes is None and num_classes is not None and int(num_classes) != len(names):
            raise DataError(_names_vs_num_classes(ann_path, parsed, names, int(num_classes)), settings=["num_classes"])
    index_of = {n: c for c, n in enumerate(names)}

    by_path: dict[str, tuple[str | None, Record]] = {}
    for i, path, label, box, split_value, mask in parsed:
        if numeric:
            label_idx = int(label)
            if not 0 <= label_idx < len(names):
                raise DataError(f"{ann_path} line {i}: class {label_idx} is out of range [0, {len(names)})")
        elif label not in index_of:
            raise DataError(f"{ann_path} line {i}: class {label!r} is not one of the classes {names}")
        else:
            label_idx = index_of[label]
        if path not in by_path:
            by_path[path] = (split_value, Record(
                path=str(root / path), label=label_idx, boxes=np.zeros((0, 4)), source=f"{ann_path.name} line {i}",
                mask=MaskSpec(files=(str(root / mask),)) if mask else None,
            ))
        s, rec = by_path[path]
        if rec.label != label_idx or s != split_value:
            raise DataError(f"{ann_path} line {i}: {path} has another label or split on an earlier line ({rec.source})")
        if box is not None:
            rec.boxes = np.vstack([rec.boxes, np.asarray(box, dtype=np.float64)[None]])
    return _split_filter(list(by_path.values()), split, str(ann_path), (val_fraction, test_fraction, seed)), names


def _names_vs_num_classes(ann_path: Path, parsed: list, names: list[str], num_classes: int) -> str:
    """``num_classes`` differs from the number of label names: the names with their image counts, and the
    rarest names (likely typos when there are more names than classes) with the line of their first row."""
    images: dict[str, set[str]] = {n: set() for n in names}
    first_line: dict[str, int] = {}
    for i, path, label, *_ in parsed:
        images[label].add(path)
        first_line.setdefault(label, i)
    by_count = sorted(names, key=lambda n: -len(images[n]))  # stable: ties keep the sorted order
    listed = ", ".join(f"{n}: {len(images[n])}" for n in by_count[:20]) + (", ..." if len(names) > 20 else "")
    msg = (f"{ann_path}: num_classes={num_classes} but its labels name {len(names)} classes "
           f"(images per class: {listed})")
    if len(names) > num_classes:
        rare = by_count[num_classes:][::-1][:5]
        where = ", ".join(f"{n!r} ({len(images[n])} image(s), first on line {first_line[n]})" for n in rare)
        msg += (f". A rare name may be a typo of another class: {where}; correct it in {ann_path.name}, or set "
                f"num_classes={len(names)} if every name is a class")
    else:
        msg += f"; set num_classes={len(names)}"
    return msg


class CSVDataset(RecordDataset):
    """A folder of images + a ``path,label,x0,y0,x1,y1`` CSV (see :func:`read_csv`); RecordDataset kwargs."""

    def __init__(self, root: str, annotations: str, split: str = "train", classes: Sequence[str] | None = None,
                 val_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0,
                 num_classes: int | None = None, **kwargs: Any) -> None:
        records, names = read_csv(root, annotations, split, classes, num_classes, val_fraction, test_fraction, seed)
        kwargs.setdefault("name", f"CSV {annotations}")
        kwargs.setdefault("check_mask_sizes", True)
        super().__init__(records, names, split=split, inclusive_boxes=False, num_classes=num_classes, **kwargs)
