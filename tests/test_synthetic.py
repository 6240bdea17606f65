"""SyntheticShapes: exact boxes/masks (also after flips), determinism, balance, textures, bad input."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from camlab.data.synthetic import CLASSES, MAX_CLASSES, SyntheticShapes, hflip_boxes, tight_box


@pytest.fixture(scope="module")
def single() -> SyntheticShapes:
    return SyntheticShapes("val", length=300, num_classes=MAX_CLASSES, seed=3, hflip=True)


@pytest.fixture(scope="module")
def multi() -> SyntheticShapes:
    return SyntheticShapes("train", length=200, num_classes=MAX_CLASSES, seed=4, max_objects=4, hflip=True)


def _check_sample_against_instances(sample: dict, inst: torch.Tensor) -> None:
    """Each box is the tight box of its own object's pixels; the mask is their union."""
    n = len(sample["boxes"])
    assert n == int(inst.max())
    assert torch.equal(sample["mask"], (inst > 0).to(torch.uint8))
    for g in range(n):
        assert tight_box(inst == g + 1) == tuple(sample["boxes"][g].tolist())


def test_boxes_are_tight_boxes_of_masks(single: SyntheticShapes) -> None:
    for i in range(len(single)):
        boxes = single.boxes[i, : single.num_boxes[i]]
        assert single.num_boxes[i] == 1
        assert tight_box(single.instances[i]) == tuple(boxes[0].tolist())
        # the continuous convention, checked without tight_box: ink in columns x0..x1-1 and rows y0..y1-1
        x0, y0, x1, y1 = (int(v) for v in boxes[0].tolist())
        m = single.instances[i] > 0
        assert m[:, x0].any() and m[:, x1 - 1].any() and m[y0].any() and m[y1 - 1].any()
        assert m[y0:y1, x0:x1].sum() == m.sum()
        # the padding rows of the cache are zero
        assert not single.boxes[i, single.num_boxes[i]:].any()


def test_boxes_follow_the_flip(single: SyntheticShapes, multi: SyntheticShapes) -> None:
    torch.manual_seed(0)
    flipped = 0
    for ds in (single, multi):
        for i in range(len(ds)):
            s = ds[i]
            inst = ds.instances[i]
            was_flipped = not torch.equal(s["mask"], (inst > 0).to(torch.uint8))
            if was_flipped:
                inst = inst.flip(-1)
                # the image moved with the mask: un-normalized it equals the mirrored cache
                img = (s["image"] * 0.5 + 0.5) * 255
                assert torch.allclose(img, ds.images[i].flip(-1).float(), atol=1e-3)
            flipped += was_flipped
            _check_sample_against_instances(s, inst)
    assert 150 < flipped < 350  # about half of 500 (a symmetric mask can hide a flip, rarely)


def test_multiple_objects_each_boxed_and_disjoint(multi: SyntheticShapes) -> None:
    counts = multi.num_boxes.bincount(minlength=5)
    assert counts[0] == 0 and (counts[1:5] > 0).all(), counts  # 1..4 objects all occur
    for i in range(len(multi)):
        n = int(multi.num_boxes[i])
        inst = multi.instances[i]
        assert set(inst.unique().tolist()) == set(range(n + 1))  # every object has pixels, none hides another
        for g in range(n):
            assert tight_box(inst == g + 1) == tuple(multi.boxes[i, g].tolist())


def test_boxes_and_masks_inside_image_at_other_sizes() -> None:
    for size in (32, 96):
        ds = SyntheticShapes("test", length=40, image_size=size)
        b = ds.boxes[ds.boxes.abs().sum(-1) > 0]
        assert (b >= 0).all() and (b <= size).all() and (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        s = ds[0]
        assert s["image"].shape == (3, size, size) and s["mask"].shape == (size, size)
        # object radius scales with the image: boxes span roughly 2 * (10..24) * size / 64 (the thinnest
        # shape, an ellipse on its side, is 2 * 0.55 r wide)
        widths = b[:, 2] - b[:, 0]
        assert widths.min() >= 1.1 * 10 * size / 64 - 1 and widths.max() <= 2.2 * 24 * size / 64 + 1


def test_hflip_boxes_matches_torchvision() -> None:
    from torchvision import tv_tensors
    from torchvision.transforms.v2 import functional as F

    boxes = torch.tensor([[0.0, 3.0, 5.0, 9.0], [10.0, 0.0, 17.0, 4.0]])
    ref = F.horizontal_flip(tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(20, 17)))
    assert torch.equal(hflip_boxes(boxes, 17), ref.as_subclass(torch.Tensor))


def _digest(ds: SyntheticShapes) -> list[str]:
    return [hashlib.sha1(ds.images[i].numpy().tobytes()).hexdigest() for i in range(len(ds))]


def test_determinism_seeds_and_splits() -> None:
    a = SyntheticShapes("train", length=60, seed=7)
    b = SyntheticShapes("train", length=60, seed=7)
    c = SyntheticShapes("train", length=60, seed=8)
    for name in ("images", "instances", "boxes", "num_boxes", "labels"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(a.images, c.images) and not torch.equal(a.boxes, c.boxes)
    # a sample depends on (seed, split, index) only, not on the split's length
    longer = SyntheticShapes("train", length=90, seed=7)
    assert torch.equal(longer.images[:60], a.images)
    # eval splits are not augmented: the same index gives the same tensor twice
    v = SyntheticShapes("val", length=60, seed=7)
    assert torch.equal(v[5]["image"], v[5]["image"]) and not v.hflip and a.hflip
    t = SyntheticShapes("test", length=60, seed=7)
    digests = [set(_digest(d)) for d in (a, v, t)]
    assert len(set.union(*digests)) == 180  # no image repeats within or across splits


def test_class_balance_and_names() -> None:
    ds = SyntheticShapes("train", length=103, num_classes=5)
    counts = ds.labels.bincount(minlength=5)
    assert counts.min() >= 20 and counts.max() <= 21
    assert ds.class_names == [f"{s}/{t}" for s, t in CLASSES[:5]]
    assert len({s for s, _ in CLASSES}) == len({t for _, t in CLASSES}) == MAX_CLASSES  # all distinct


def test_stripe_textures_are_oriented() -> None:
    """A classical texture statistic separates horizontal (class 0) from vertical (class 5) stripes."""
    ds = SyntheticShapes("val", length=60, num_classes=6, hflip=False)
    for i in range(len(ds)):
        label = int(ds.labels[i])
        if label not in (0, 5):
            continue
        img = ds.images[i].float().mean(0)  # H×W grey
        inner = ds.instances[i] > 0
        inner = inner[1:, 1:] & inner[:-1, 1:] & inner[1:, :-1]  # pixels whose both diffs are in-object
        gy = (img[1:, 1:] - img[:-1, 1:]).abs()[inner].mean()
        gx = (img[1:, 1:] - img[1:, :-1]).abs()[inner].mean()
        assert (gy > 2 * gx) if label == 0 else (gx > 2 * gy), (i, label, gx, gy)


def test_normalization_and_sample_types(single: SyntheticShapes) -> None:
    s = single[1]
    assert s["image"].dtype == torch.float32 and s["label"].dtype == torch.long
    assert s["boxes"].dtype == torch.float32 and s["mask"].dtype == torch.uint8 and int(s["index"]) == 1
    assert -1.0 <= float(s["image"].min()) and float(s["image"].max()) <= 1.0
    custom = SyntheticShapes("val", length=2, mean=(0.1, 0.2, 0.3), std=(0.2, 0.3, 0.4))
    x = custom[0]["image"]
    ref = custom.images[0].float() / 255
    back = x * torch.tensor(custom.std).view(3, 1, 1) + torch.tensor(custom.mean).view(3, 1, 1)
    assert torch.allclose(back, ref, atol=1e-5)
    with pytest.raises(IndexError):
        custom[2]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"num_classes": 1}, "num_classes"),
        ({"num_classes": MAX_CLASSES + 1}, "num_classes"),
        ({"image_size": 16}, "image_size"),
        ({"image_size": 40, "radius_range": (10, 24)}, "radius_range"),
        ({"radius_range": (3, 10)}, "radius_range"),
        ({"radius_range": (20, 10)}, "radius_range"),
        ({"max_objects": 0}, "max_objects"),
        ({"length": 0}, "length"),
        ({"split": "dev"}, "split"),
        ({"seed": -1}, "seed"),
        ({"std": (0.5, 0.0, 0.5)}, "std"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        SyntheticShapes(**{"length": 4, **kwargs})
