"""Every on-disk format: labels, splits, and boxes/masks that land on the known pixels after each transform."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import _dataset_fixtures as fx
from camlab.data.cub import CUBDataset
from camlab.data.custom import COCODataset, CSVDataset
from camlab.data.ilsvrc import ILSVRCDataset
from camlab.data.wsoleval import WSOLEvalDataset

S, R = 32, 40  # input size, train resize size
FORMATS = ["cub", "wsoleval_cub", "wsoleval_ilsvrc", "wsoleval_openimages", "ilsvrc", "coco", "csv"]


def build(fmt: str, root: Path, split: str, **kw):
    """The dataset of ``split`` for a fixture tree of format ``fmt`` (written under root on first use)."""
    kw = {"image_size": S, "resize_size": R, **kw}
    if fmt == "cub":
        if not (root / "classes.txt").exists():
            fx.make_cub(root)
        return CUBDataset(str(root), split, **kw)
    if fmt.startswith("wsoleval_"):
        name = {"cub": "CUB", "ilsvrc": "ILSVRC", "openimages": "OpenImages"}[fmt.split("_")[1]]
        data, meta = root / "dataset" / name, root / "metadata"
        if not meta.exists():
            fx.make_wsoleval(root, name)
        return WSOLEvalDataset(str(data), str(meta), name, split, num_classes=3, **kw)
    if fmt == "ilsvrc":
        if not (root / "train").exists():
            fx.make_ilsvrc(root)
        return ILSVRCDataset(str(root), split, **kw)
    if fmt == "coco":
        if not (root / "annotations.json").exists():
            fx.make_coco(root)
        return COCODataset(str(root), "annotations.json", split, **kw)
    if fmt == "csv":
        if not (root / "labels.csv").exists():
            fx.make_csv(root)
        return CSVDataset(str(root), "labels.csv", split, **kw)
    raise AssertionError(fmt)


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    return tmp_path_factory.mktemp("trees")


def expected(fmt: str, split: str) -> list[tuple[str, int]]:
    """(image stem, class index) of a split, from the fixture specs."""
    want_split = split
    if fmt in ("ilsvrc", "cub") and split != "train":
        want_split = None  # CUB: val = test = the non-train images; ILSVRC: both are the validation images
    out = []
    for s in fx.SPECS:
        if want_split is None and s.split == "train" or want_split is not None and s.split != want_split:
            continue
        label = fx.ilsvrc_label(s.label) if fmt == "ilsvrc" else s.label
        out.append((s.name, label))
    return sorted(out)


def stem(path: str) -> str:
    name = Path(path).stem
    return name.split("_")[-1]  # ILSVRC names carry a prefix


def gray(sample, ds) -> np.ndarray:
    mean = torch.tensor(ds.mean).view(3, 1, 1)
    std = torch.tensor(ds.std).view(3, 1, 1)
    return (sample["image"] * std + mean).mean(0).numpy()  # S×S in [0, 1]


def assert_on_patch(region: np.ndarray, boxes: np.ndarray, margin: float, need_inner: bool = True) -> None:
    """Pixels well inside each box are in ``region``; pixels well outside every box are not."""
    H, W = region.shape
    cy, cx = np.mgrid[0:H, 0:W] + 0.5
    near = np.zeros_like(region, dtype=bool)
    any_inner = False
    for x0, y0, x1, y1 in boxes:
        inner = (cx > x0 + margin) & (cx < x1 - margin) & (cy > y0 + margin) & (cy < y1 - margin)
        near |= (cx > x0 - margin) & (cx < x1 + margin) & (cy > y0 - margin) & (cy < y1 + margin)
        assert region[inner].all(), (x0, y0, x1, y1)
        any_inner |= bool(inner.any())
    assert any_inner or not need_inner, "no box keeps an inside: the check would be vacuous"
    assert not region[~near].any(), "patch pixels outside every box"


@pytest.mark.parametrize("fmt", FORMATS)
def test_labels_splits_and_boxes_on_pixels(fmt, trees):
    root = trees / fmt
    for split in ("train", "val", "test"):
        # masks="auto" loads no train masks; masks=True makes them follow the random crop and flip too
        train_masks = split == "train" and fmt in ("cub", "coco")
        ds = build(fmt, root, split, masks=True if train_masks else "auto")
        has_mask = train_masks or (split != "train" and fmt in ("cub", "coco", "wsoleval_openimages"))
        assert sorted((stem(r.path), r.label) for r in ds.records) == expected(fmt, split), split
        assert ds.num_classes == 3 and len(ds.class_names) == 3
        for i in range(len(ds)):
            r = ds.records[i]
            rounds = 3 if split == "train" else 1  # random crops and flips
            for _ in range(rounds):
                sample = ds[i]
                assert sample["image"].shape == (3, S, S) and sample["label"] == r.label
                assert int(sample["index"]) == i
                spec = next(s for s in fx.SPECS if s.name == stem(r.path))
                scale = R / min(spec.size) if split == "train" else S / min(spec.size)
                margin = 1.0 + scale  # interpolation blur + inclusive boxes' last pixel
                boxes = sample["boxes"].numpy()
                if fmt in ("wsoleval_openimages", "ilsvrc") and split == "train":
                    assert boxes.shape == (0, 4)  # its train split: labels only
                    continue
                assert len(boxes) == len(spec.patches)
                assert_on_patch(gray(sample, ds) > 0.5, boxes, margin, need_inner=split != "train")
                assert ("mask" in sample) == has_mask
                if has_mask:
                    assert sample["mask"].shape == (S, S) and sample["mask"].dtype == torch.uint8
                    assert_on_patch(sample["mask"].numpy() == 1, boxes, margin, need_inner=split != "train")


@pytest.mark.parametrize("fmt", ["cub", "wsoleval_cub", "wsoleval_ilsvrc", "ilsvrc"])
def test_eval_boxes_are_wsolevaluation_integers(fmt, trees):
    """int() of an eval box = wsolevaluation's resize_bbox, int(x * 224 / W), on the inclusive patch bounds."""
    ds = build(fmt, trees / fmt, "test")
    for i, r in enumerate(ds.records):
        spec = next(s for s in fx.SPECS if s.name == stem(r.path))
        W, H = spec.size
        want = [[int(x0 * S / W), int(y0 * S / H), int(x1 * S / W), int(y1 * S / H)]
                for x0, y0, x1, y1 in map(fx.inclusive, spec.patches)]
        got = np.trunc(ds[i]["boxes"].numpy()).astype(int).tolist()
        assert got == want


def test_float64_box_scaling_truncates_like_wsolevaluation_where_float32_does_not():
    from torchvision import tv_tensors
    from torchvision.transforms.v2 import functional as TF

    from camlab.data.transforms import scale_boxes

    ours_bad = v2_bad = 0
    for W in range(100, 700, 3):
        x = np.arange(W, dtype=np.float64)
        boxes = np.stack([x, x, x, x], 1)
        ref = np.array([int(v * 224 / W) for v in x])  # wsolevaluation resize_bbox
        ours = np.trunc(scale_boxes(boxes, (W, W), (224, 224)).astype(np.float32)[:, 0])
        bb = tv_tensors.BoundingBoxes(torch.from_numpy(boxes).float(), format="XYXY", canvas_size=(W, W))
        theirs = np.trunc(TF.resize(bb, [224, 224]).as_subclass(torch.Tensor)[:, 0].numpy())
        ours_bad += int((ours != ref).sum())
        v2_bad += int((theirs != ref).sum())
    assert ours_bad == 0
    assert v2_bad > 0  # why the eval path scales boxes itself


def test_openimages_masks_equal_wsolevaluation_get_mask(trees):
    """Eval masks: per-instance cv2 nearest resize to S, > 0.5, union; ignore minus objects = 255."""
    ds = build("wsoleval_openimages", trees / "wsoleval_openimages", "test")
    saw_ignore = False
    for i, r in enumerate(ds.records):
        inst = [cv2.resize(np.float32(cv2.imread(f, cv2.IMREAD_GRAYSCALE)), (S, S), interpolation=cv2.INTER_NEAREST) > 0.5
                for f in r.mask.files]
        fg = np.stack(inst).any(0)
        ign = cv2.resize(np.float32(cv2.imread(r.mask.ignore_file, cv2.IMREAD_GRAYSCALE)), (S, S),
                         interpolation=cv2.INTER_NEAREST) > 0.5
        want = fg.astype(np.uint8) + 255 * (ign & ~fg).astype(np.uint8)
        got = ds[i]["mask"].numpy()
        np.testing.assert_array_equal(got, want)
        saw_ignore |= bool((got == 255).any())
    assert saw_ignore


def test_cub_segmentation_threshold_drops_soft_border(trees):
    ds = build("cub", trees / "cub", "test")
    r = ds.records[0]
    spec = next(s for s in fx.SPECS if s.name == stem(r.path))
    full = r.mask.render(*spec.size)  # at the image's own size
    want = np.maximum.reduce(fx.instance_masks(spec, 1))
    np.testing.assert_array_equal(full, want)  # the grey-100 ring (< 128) is background


def test_csv_integer_labels_without_header(tmp_path):
    fx.make_csv(tmp_path, names=False, header=False)
    parts = [CSVDataset(str(tmp_path), "labels.csv", s, num_classes=3, image_size=S, resize_size=R,
                        val_fraction=0.25, test_fraction=0.25) for s in ("train", "val", "test")]
    paths = [sorted(r.path for r in p.records) for p in parts]
    assert sum(len(p) for p in paths) == len(fx.SPECS) and len(set(sum(paths, []))) == len(fx.SPECS)
    assert [len(p) for p in paths] == [3, 2, 2]
    for p in parts:
        for r in p.records:
            spec = next(s for s in fx.SPECS if s.name == stem(r.path))
            assert r.label == spec.label
            np.testing.assert_array_equal(r.boxes, np.asarray(spec.patches, dtype=float))


def test_coco_category_order_and_mask_kinds(trees):
    parts = [build("coco", trees / "coco", split) for split in ("train", "val", "test")]
    assert parts[0].class_names == ["alpha", "beta", "gamma"]  # categories sorted by id 7, 11, 20
    records = [r for p in parts for r in p.records]
    kinds = {bool(r.mask.polygons) * 1 + bool(r.mask.rles) * 2 + bool(r.mask.files) * 4 for r in records}
    assert kinds == {1, 2, 4}  # polygon, RLE (compressed and plain) and PNG masks all loaded


def test_rle_decoding_against_a_reference_encoder():
    from camlab.data.masks import rle_decode

    rng = np.random.default_rng(0)
    for _ in range(20):
        h, w = rng.integers(1, 40, 2)
        m = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        np.testing.assert_array_equal(rle_decode(fx.rle_encode_string(m)), m)
    big = np.zeros((300, 400), np.uint8)
    big[10:290, 5:395] = 1  # long runs: several 5-bit chunks and negative deltas
    np.testing.assert_array_equal(rle_decode(fx.rle_encode_string(big)), big)


def test_eval_transform_normalizes_with_imagenet_statistics():
    from PIL import Image

    from camlab.data.transforms import WSOLTransform

    img = Image.new("RGB", (50, 30), (200, 100, 50))
    out, boxes, mask = WSOLTransform(image_size=16)(img, np.array([[5.0, 3.0, 25.0, 15.0]]))
    want = [(200 / 255 - 0.485) / 0.229, (100 / 255 - 0.456) / 0.224, (50 / 255 - 0.406) / 0.225]
    assert out.shape == (3, 16, 16) and out.dtype == torch.float32 and mask is None
    for c in range(3):
        assert torch.allclose(out[c], torch.full((16, 16), want[c]), atol=1e-6)
    assert torch.allclose(boxes, torch.tensor([[5 * 16 / 50, 3 * 16 / 30, 25 * 16 / 50, 15 * 16 / 30]]))


def test_cub_val_from_train_holds_out_part_of_train(trees):
    root = trees / "cub"
    parts = {s: build("cub", root, s, val_from="train", val_fraction=0.34) for s in ("train", "val", "test")}
    train_names = {s.name for s in fx.SPECS if s.split == "train"}
    got = {s: {stem(r.path) for r in parts[s].records} for s in parts}
    assert len(got["val"]) == 1 and got["train"] | got["val"] == train_names and not got["train"] & got["val"]
    assert got["test"] == {s.name for s in fx.SPECS if s.split != "train"}
