"""Tiny on-disk dataset trees, one writer per format, with known labels, splits, boxes and masks.

Every image is a dark background (grey 20) with bright patches (grey 235) exactly where its boxes say, so a
test can check that a transformed box still sits on its patch. Images are small and non-square.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

BG, FG = 20, 235
CLASSES = ["alpha", "beta", "gamma"]


@dataclass
class Spec:
    name: str
    size: tuple[int, int]  # (W, H)
    label: int
    patches: list[tuple[int, int, int, int]]  # continuous xyxy: pixels x0..x1-1, y0..y1-1
    split: str


SPECS = [
    Spec("a0", (40, 28), 0, [(6, 5, 22, 19)], "train"),
    Spec("b0", (28, 44), 1, [(4, 10, 20, 36)], "train"),
    Spec("c0", (52, 36), 2, [(20, 8, 46, 30)], "train"),
    Spec("a1", (36, 30), 0, [(3, 3, 15, 14), (20, 12, 33, 27)], "val"),
    Spec("b1", (30, 50), 1, [(6, 8, 24, 40)], "val"),
    Spec("c1", (48, 32), 2, [(10, 6, 40, 26)], "test"),
    Spec("a2", (44, 26), 0, [(2, 4, 18, 22), (26, 2, 42, 14)], "test"),
]


def draw(spec: Spec) -> np.ndarray:
    W, H = spec.size
    img = np.full((H, W, 3), BG, np.uint8)
    for x0, y0, x1, y1 in spec.patches:
        img[y0:y1, x0:x1] = FG
    return img


def instance_masks(spec: Spec, value: int = 255) -> list[np.ndarray]:
    W, H = spec.size
    out = []
    for x0, y0, x1, y1 in spec.patches:
        m = np.zeros((H, W), np.uint8)
        m[y0:y1, x0:x1] = value
        out.append(m)
    return out


def save(img: np.ndarray, path: Path, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, format=fmt, quality=98) if fmt == "JPEG" else Image.fromarray(img).save(path, format=fmt)


def inclusive(patch: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = patch
    return x0, y0, x1 - 1, y1 - 1


# ----------------------------------------------------------------------------------------------- CUB
def make_cub(root: Path, segmentations: bool = True, specs: list[Spec] = SPECS) -> Path:
    """CUB-200-2011 layout; split: train = 1, val/test = 0 (CUB's val is its test split)."""
    root.mkdir(parents=True, exist_ok=True)
    class_dirs = [f"{k + 1:03d}.{c.capitalize()}_bird" for k, c in enumerate(CLASSES)]
    (root / "classes.txt").write_text("".join(f"{k + 1} {d}\n" for k, d in enumerate(class_dirs)))
    images, labels, splits, boxes = [], [], [], []
    for i, s in enumerate(specs, 1):
        rel = f"{class_dirs[s.label]}/{s.name}.jpg"
        save(draw(s), root / "images" / rel, "JPEG")
        images.append(f"{i} {rel}\n")
        labels.append(f"{i} {s.label + 1}\n")
        splits.append(f"{i} {1 if s.split == 'train' else 0}\n")
        for p in s.patches:
            x0, y0, x1, y1 = inclusive(p)
            boxes.append(f"{i} {x0}.0 {y0}.0 {x1 - x0}.0 {y1 - y0}.0\n")
        if segmentations:
            seg = np.maximum.reduce(instance_masks(s))
            ring = np.zeros_like(seg)  # soft annotator disagreement around the object: below the 127 cut
            for x0, y0, x1, y1 in s.patches:
                ring[max(y0 - 1, 0):y1 + 1, max(x0 - 1, 0):x1 + 1] = 100
            save(np.maximum(seg, ring), root / "segmentations" / f"{class_dirs[s.label]}/{s.name}.png")
    for name, lines in (("images.txt", images), ("image_class_labels.txt", labels),
                        ("train_test_split.txt", splits), ("bounding_boxes.txt", boxes)):
        (root / name).write_text("".join(lines))
    return root


# ------------------------------------------------------------------------------------------ wsoleval
def make_wsoleval(root: Path, dataset: str = "CUB", specs: list[Spec] = SPECS) -> tuple[Path, Path]:
    """(image root, metadata root) in wsolevaluation's layout; OpenImages gets instance + ignore masks."""
    data, meta = root / "dataset" / dataset, root / "metadata"
    for split in ("train", "val", "test"):
        d = meta / dataset / split
        d.mkdir(parents=True, exist_ok=True)
        ids, labels, sizes, loc = [], [], [], []
        for s in (x for x in specs if x.split == split):
            image_id = f"{split}/{CLASSES[s.label]}/{s.name}.png"
            save(draw(s), data / image_id)
            ids.append(f"{image_id}\n")
            labels.append(f"{image_id},{s.label}\n")
            sizes.append(f"{image_id},{s.size[0]},{s.size[1]}\n")
            if dataset == "OpenImages":
                if split == "train":
                    continue
                ignore = np.zeros((s.size[1], s.size[0]), np.uint8)
                ignore[:, : s.size[0] // 4] = 255  # an ignore box on the left quarter
                ignore_id = image_id.replace(".png", "_ignore.png")
                save(ignore, data / ignore_id)
                for k, m in enumerate(instance_masks(s)):
                    mask_id = image_id.replace(".png", f"_m{k}.png")
                    save(m, data / mask_id)
                    loc.append(f"{image_id},{mask_id},{ignore_id if k == 0 else ''}\n")
            else:
                loc += [f"{image_id},{','.join(map(str, inclusive(p)))}\n" for p in s.patches]
        (d / "image_ids.txt").write_text("".join(ids))
        (d / "class_labels.txt").write_text("".join(labels))
        if dataset != "OpenImages":
            (d / "image_sizes.txt").write_text("".join(sizes))
        if loc:
            (d / "localization.txt").write_text("".join(loc))
    return data, meta


# -------------------------------------------------------------------------------------------- ILSVRC
WNIDS = ["n01440764", "n01443537", "n01484850"]


def make_ilsvrc(root: Path, specs: list[Spec] = SPECS) -> Path:
    """train/<wnid>/*.JPEG (train specs); val/*.JPEG + val/*.xml (val and test specs)."""
    (root / "train").mkdir(parents=True, exist_ok=True)
    (root / "val").mkdir(parents=True, exist_ok=True)
    # A synset list in a different order than the folders sort: the list defines the index.
    order = [2, 0, 1]
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{WNIDS[k]} {CLASSES[k]}, a fish\n" for k in order))
    for s in specs:
        if s.split == "train":
            save(draw(s), root / "train" / WNIDS[s.label] / f"{WNIDS[s.label]}_{s.name}.JPEG", "JPEG")
            continue
        name = f"ILSVRC2012_val_{s.name}"
        save(draw(s), root / "val" / f"{name}.JPEG", "JPEG")
        objs = "".join(
            f"<object><name>{WNIDS[s.label]}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
            f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for b in map(inclusive, s.patches))
        (root / "val" / f"{name}.xml").write_text(
            f"<annotation><filename>{name}</filename><size><width>{s.size[0]}</width>"
            f"<height>{s.size[1]}</height><depth>3</depth></size>{objs}</annotation>")
    return root


def ilsvrc_label(spec_label: int) -> int:
    """Class index of a spec label under make_ilsvrc's synset order."""
    return [2, 0, 1].index(spec_label)


# ---------------------------------------------------------------------------------------------- COCO
def rle_encode_string(mask: np.ndarray) -> dict:
    """Reference COCO compressed RLE encoder (column-major runs, delta + 5-bit chunks), for the tests."""
    flat = mask.T.reshape(-1).astype(np.uint8)
    counts, cur, run = [], 0, 0
    for v in flat:
        if v != cur:
            counts.append(run)
            cur, run = v, 0
        run += 1
    counts.append(run)
    chars = []
    for i, c in enumerate(counts):
        x = c - counts[i - 2] if i > 2 else c
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5
            more = not ((x == 0 and not ch & 0x10) or (x == -1 and ch & 0x10))
            if more:
                ch |= 0x20
            chars.append(chr(ch + 48))
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": "".join(chars)}


def make_coco(root: Path, specs: list[Spec] = SPECS) -> Path:
    """images/*.png + annotations.json: polygons, compressed RLE, uncompressed RLE, a PNG mask; split keys."""
    images, anns = [], []
    for i, s in enumerate(specs):
        save(draw(s), root / "images" / f"{s.name}.png")
        entry = {"id": 100 + i, "file_name": f"images/{s.name}.png", "width": s.size[0], "height": s.size[1],
                 "split": s.split}
        kind = i % 4
        if kind == 3:
            save(np.maximum.reduce(instance_masks(s)), root / "masks" / f"{s.name}.png")
            entry["mask_file"] = f"masks/{s.name}.png"
        images.append(entry)
        for x0, y0, x1, y1 in s.patches:
            ann = {"id": len(anns) + 1, "image_id": 100 + i, "category_id": [7, 11, 20][s.label],
                   "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 0}
            m = np.zeros((s.size[1], s.size[0]), np.uint8)
            m[y0:y1, x0:x1] = 1
            if kind == 0:
                ann["segmentation"] = [[x0, y0, x1 - 1, y0, x1 - 1, y1 - 1, x0, y1 - 1]]
            elif kind == 1:
                ann["segmentation"] = rle_encode_string(m)
            elif kind == 2:
                enc = rle_encode_string(m)  # same runs, uncompressed
                from camlab.data.masks import rle_counts_from_string
                ann["segmentation"] = {"size": enc["size"], "counts": rle_counts_from_string(enc["counts"])}
            anns.append(ann)
    cats = [{"id": 20, "name": "gamma"}, {"id": 7, "name": "alpha"}, {"id": 11, "name": "beta"}]
    (root / "annotations.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root


# ----------------------------------------------------------------------------------------------- CSV
def make_csv(root: Path, names: bool = True, header: bool = True, specs: list[Spec] = SPECS,
             masks: bool = False) -> Path:
    """images/*.png + labels.csv (class names or indices; repeated rows for several boxes; split column;
    with ``masks`` a mask column naming masks/<name>.png, the union of the patches, 255 = object)."""
    rows = [f"path,label,x0,y0,x1,y1,split{',mask' if masks else ''}\n"] if header else []
    for s in specs:
        save(draw(s), root / "images" / f"{s.name}.png")
        if masks:
            save(np.maximum.reduce(instance_masks(s)), root / "masks" / f"{s.name}.png")
        label = CLASSES[s.label] if names else str(s.label)
        extra = (f",{s.split}" + (f",masks/{s.name}.png" if masks else "")) if header else ""
        for x0, y0, x1, y1 in s.patches:
            rows.append(f"images/{s.name}.png,{label},{x0},{y0},{x1},{y1}{extra}\n")
    (root / "labels.csv").write_text("".join(rows))
    return root
