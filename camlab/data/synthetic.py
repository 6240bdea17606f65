"""SyntheticShapes: an embedded, procedural WSOL dataset with exact boxes and masks.

Every class is a (shape, texture) pair; colours are random per sample so colour carries no label, and
every class has a texture of its own (a solid-filled class learns "no texture" and its CAM lights the
background). Objects sit on a low-contrast noisy background with small solid distractor strokes and
blobs that are not objects and not in the mask.

A sample is a pure function of (seed, split, index): its RNG is ``np.random.default_rng([seed,
split_id, index])``. The whole split is rendered once, at construction, into a uint8 cache
(5k images at 64 px: ~60 MB), so ``__getitem__`` only flips and normalizes.
"""
from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from camlab.errors import ConfigError

# (shape, texture) per class; the texture set is closed under horizontal flip (diagonal stripes take a
# random +-45 degrees per sample) so flip augmentation never turns one class's texture into another's.
CLASSES: tuple[tuple[str, str], ...] = (
    ("disk", "horizontal stripes"),
    ("square", "checkerboard"),
    ("triangle", "dots"),
    ("ring", "diagonal stripes"),
    ("cross", "grid"),
    ("star", "vertical stripes"),
    ("ellipse", "concentric rings"),
    ("diamond", "wavy stripes"),
    ("hexagon", "speckle"),
    ("half-disk", "sunburst"),
)
MAX_CLASSES = len(CLASSES)
MAX_OBJECTS = 8
MIN_IMAGE_SIZE = 32
SPLITS = {"train": 0, "val": 1, "test": 2}
# Objects must fit inside the image: a shape of radius r extends at most 1.05 r from its centre (the
# rotated cross), and we keep a 1 px border.
_EXTENT = 1.1


class RenderedWSOLDataset(Dataset):
    """A dataset rendered once into memory: uint8 images, instance masks, padded boxes, labels.

    Subclasses fill ``images`` (N×3×S×S uint8), ``instances`` (N×S×S uint8: 0 background, g + 1 on object g),
    ``boxes`` (N×G×4 float32, zero-padded), ``num_boxes`` (N), ``labels`` (N int64), ``length``,
    ``image_size``, ``hflip`` and the normalization tensors ``_mean_t``/``_std_t`` (3×1×1); items follow the
    batch contract of :func:`camlab.data.collate_wsol` (``image``, ``label``, ``boxes``, ``mask``, ``index``).
    """

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for length {self.length}")
        index = index % self.length
        img, mask = self.images[index], (self.instances[index] > 0).to(torch.uint8)  # 3×S×S, S×S
        boxes = self.boxes[index, : self.num_boxes[index]].clone()  # G×4
        if self.hflip and torch.rand(()) < 0.5:  # torch RNG: seeded by seed_everything / per worker
            img, mask = img.flip(-1), mask.flip(-1)
            boxes = hflip_boxes(boxes, self.image_size)
        image = (img.float().div_(255) - self._mean_t) / self._std_t
        return {
            "image": image,
            "label": self.labels[index],
            "boxes": boxes,
            "mask": mask,
            "index": torch.tensor(index, dtype=torch.long),
        }


class SyntheticShapes(RenderedWSOLDataset):
    """Procedural textured shapes on clutter, deterministic from ``(seed, split, index)``.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``; splits draw from disjoint RNG streams.
        length: number of samples (>= 1).
        num_classes: 2..10 classes, the first ``num_classes`` of :data:`CLASSES`.
        image_size: square side in pixels (>= 32).
        max_objects: 1..8; each sample has n in 1..max_objects non-overlapping objects of its class
            (uniform; radii scale by 1/sqrt(n) so they fit; a crowded draw may place fewer).
        radius_range: object radius range in pixels; default ``(10, 24) * image_size / 64``.
        seed: the dataset seed.
        hflip: random horizontal flip (image, boxes and mask together); default True for ``train``.
        mean, std: per-channel normalization applied to the [0, 1] image.

    A sample is a dict: ``image`` 3×H×W float32 (normalized), ``label`` long, ``boxes`` G×4 float32
    xyxy (continuous pixel convention: ink in columns a..b gives x0=a, x1=b+1), ``mask`` H×W uint8
    (1 = union of the objects), ``index`` long.

    >>> ds = SyntheticShapes("val", length=10, num_classes=5, image_size=64, seed=0)
    >>> s = ds[3]
    >>> s["image"].shape, s["label"].item(), s["boxes"].shape, s["mask"].dtype
    (torch.Size([3, 64, 64]), 3, torch.Size([1, 4]), torch.uint8)
    """

    def __init__(
        self,
        split: str = "train",
        length: int = 5000,
        num_classes: int = 5,
        image_size: int = 64,
        max_objects: int = 1,
        radius_range: Sequence[float] | None = None,
        seed: int = 0,
        hflip: bool | None = None,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
    ) -> None:
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {sorted(SPLITS)}, got {split!r}", settings=["split"])
        if not isinstance(length, int) or length < 1:
            raise ConfigError(f"length of the {split} split must be an int >= 1, got {length!r}", settings=["length"])
        if not isinstance(num_classes, int) or not 2 <= num_classes <= MAX_CLASSES:
            raise ConfigError(f"num_classes must be an int in [2, {MAX_CLASSES}], got {num_classes!r}",
                              settings=["num_classes"])
        if not isinstance(image_size, int) or image_size < MIN_IMAGE_SIZE:
            raise ConfigError(f"image_size must be an int >= {MIN_IMAGE_SIZE}, got {image_size!r}",
                              settings=["image_size"])
        if not isinstance(max_objects, int) or not 1 <= max_objects <= MAX_OBJECTS:
            raise ConfigError(f"max_objects of the {split} split must be an int in [1, {MAX_OBJECTS}], got "
                              f"{max_objects!r}", settings=["max_objects"])
        if not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seed must be an int >= 0, got {seed!r}", settings=["seed"])
        if radius_range is None:
            radius_range = (10 * image_size / 64, 24 * image_size / 64)
        r_lo, r_hi = (float(r) for r in radius_range)
        r_max_allowed = (image_size / 2 - 1) / _EXTENT
        if not 4 <= r_lo <= r_hi <= r_max_allowed:
            raise ConfigError(
                f"radius_range of the {split} split must satisfy 4 <= low <= high <= {r_max_allowed:.1f} (the "
                f"largest radius that fits image_size={image_size}), got {tuple(radius_range)}",
                settings=["radius_range"],
            )
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ConfigError(
                f"mean and std of the {split} split must have 3 entries with std > 0, got mean={mean}, std={std}",
                settings=["mean", "std"],
            )

        self.split = split
        self.length = length
        self.num_classes = num_classes
        self.image_size = image_size
        self.max_objects = max_objects
        self.radius_range = (r_lo, r_hi)
        self.seed = seed
        self.hflip = (split == "train") if hflip is None else bool(hflip)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.class_names = [f"{shape}/{texture}" for shape, texture in CLASSES[:num_classes]]
        self._mean_t = torch.tensor(self.mean).view(3, 1, 1)
        self._std_t = torch.tensor(self.std).view(3, 1, 1)

        # The uint8 cache: the whole split rendered once.
        S = image_size
        images = np.empty((length, 3, S, S), np.uint8)
        masks = np.empty((length, S, S), np.uint8)
        boxes = np.zeros((length, max_objects, 4), np.float32)
        num_boxes = np.empty(length, np.int64)
        labels = np.arange(length, dtype=np.int64) % num_classes  # exactly balanced
        grid = _Grid(S)
        for i in range(length):
            rng = np.random.default_rng([seed, SPLITS[split], i])
            img, msk, bxs = render_sample(rng, int(labels[i]), grid, self.radius_range, max_objects)
            images[i], masks[i] = img, msk
            boxes[i, : len(bxs)] = bxs
            num_boxes[i] = len(bxs)
        self.images = torch.from_numpy(images)  # N×3×S×S uint8
        self.instances = torch.from_numpy(masks)  # N×S×S uint8: 0 background, g + 1 for object g
        self.boxes = torch.from_numpy(boxes)  # N×max_objects×4 float32, zero-padded
        self.num_boxes = torch.from_numpy(num_boxes)  # N
        self.labels = torch.from_numpy(labels)  # N

    def __repr__(self) -> str:
        return (
            f"SyntheticShapes(split={self.split!r}, length={self.length}, num_classes={self.num_classes}, "
            f"image_size={self.image_size}, max_objects={self.max_objects}, seed={self.seed}, hflip={self.hflip})"
        )


def hflip_boxes(boxes: torch.Tensor, width: int | float) -> torch.Tensor:
    """Mirror xyxy boxes (continuous convention) in an image of the given width.

    >>> hflip_boxes(torch.tensor([[0., 1., 3., 4.]]), 10).tolist()
    [[7.0, 1.0, 10.0, 4.0]]
    """
    out = boxes.clone()
    out[..., 0] = width - boxes[..., 2]
    out[..., 2] = width - boxes[..., 0]
    return out


def tight_box(mask: np.ndarray | torch.Tensor) -> tuple[float, float, float, float]:
    """The tight xyxy box of the nonzero pixels of an H×W mask, continuous convention.

    >>> m = np.zeros((5, 6), np.uint8); m[1:3, 2:5] = 1
    >>> tight_box(m)
    (2.0, 1.0, 5.0, 3.0)
    """
    m = np.asarray(mask) != 0
    cols, rows = np.flatnonzero(m.any(0)), np.flatnonzero(m.any(1))
    if cols.size == 0:
        raise ValueError("tight_box of an empty mask")
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


# --------------------------------------------------------------------------------------------- rendering
class _Grid:
    """Pixel-centre coordinates, shared by every sample of a given size."""

    def __init__(self, size: int) -> None:
        self.size = size
        c = np.arange(size, dtype=np.float32) + 0.5
        self.yy, self.xx = np.meshgrid(c, c, indexing="ij")  # S×S each


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean S×S mask of a shape of radius ``r`` centred at the origin of (dx, dy)."""
    if shape in ("ellipse", "half-disk"):
        a = rng.uniform(0, 2 * math.pi)  # full rotation: these shapes are not confused by it
    else:
        a = rng.uniform(-math.pi / 12, math.pi / 12)  # +-15 degrees: a square stays a square
    ca, sa = math.cos(a), math.sin(a)
    u, v = ca * dx + sa * dy, -sa * dx + ca * dy
    d2 = u * u + v * v
    if shape == "disk":
        return d2 <= r * r
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.75 * r
    if shape == "triangle":  # equilateral, circumradius r, apex up (image y grows downward)
        m = v <= r / 2
        for t in (math.pi / 6, 5 * math.pi / 6):  # outward normals of the two slanted edges
            m &= (math.cos(t) * u - math.sin(t) * v) <= r / 2
        return m
    if shape == "ring":
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        w = 0.3 * r
        return ((au <= w) & (av <= r)) | ((av <= w) & (au <= r))
    if shape == "star":  # 5 points; radius is a triangle wave in angle between r and 0.45 r
        theta = np.arctan2(v, u) + math.pi / 2
        frac = (theta / (2 * math.pi / 5)) % 1.0
        rho = 0.45 * r + 0.55 * r * np.abs(1 - 2 * frac)
        return d2 <= rho * rho
    if shape == "ellipse":
        return (u / r) ** 2 + (v / (0.55 * r)) ** 2 <= 1
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= r
    if shape == "hexagon":
        m = np.ones_like(u, dtype=bool)
        for k in range(3):
            t = k * math.pi / 3
            m &= np.abs(math.cos(t) * u + math.sin(t) * v) <= r * math.cos(math.pi / 6)
        return m
    if shape == "half-disk":
        return (d2 <= r * r) & (v <= 0.2 * r)
    raise AssertionError(shape)


def _texture(
    texture: str, xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, scale: float, rng: np.random.Generator
) -> np.ndarray:
    """Boolean two-tone pattern at pixel centres (xx, yy); periods are ``scale`` × those at 64 px."""
    s = scale
    p = rng.uniform(4.5, 6.5) * s  # period in pixels
    ph = rng.uniform(0, p)
    if texture == "horizontal stripes":
        return (yy + ph) % p < p / 2
    if texture == "vertical stripes":
        return (xx + ph) % p < p / 2
    if texture == "checkerboard":
        q = p / 2
        return (np.floor((xx + ph) / q) + np.floor((yy + rng.uniform(0, q)) / q)) % 2 == 0
    if texture == "dots":
        P = p + 1 * s
        ox, oy = (xx + ph) % P - P / 2, (yy + rng.uniform(0, P)) % P - P / 2
        return ox * ox + oy * oy <= (0.33 * P) ** 2
    if texture == "diagonal stripes":
        sign = 1.0 if rng.random() < 0.5 else -1.0
        return ((xx + sign * yy) / math.sqrt(2) + ph) % p < p / 2
    if texture == "grid":
        w = 1.5 * s
        return ((xx + ph) % p < w) | ((yy + rng.uniform(0, p)) % p < w)
    if texture == "concentric rings":
        return (np.hypot(xx - cx, yy - cy) + ph) % p < p / 2
    if texture == "wavy stripes":
        amp, lam = 1.6 * s, rng.uniform(7, 10) * s
        return (yy + amp * np.sin(2 * math.pi * xx / lam + rng.uniform(0, 2 * math.pi)) + ph) % p < p / 2
    if texture == "speckle":  # random 2×2-pixel blocks (scaled)
        b = max(2, round(2 * s))
        h, w = xx.shape
        cells = rng.random((-(-h // b), -(-w // b))) < 0.5
        return np.repeat(np.repeat(cells, b, 0), b, 1)[:h, :w]
    if texture == "sunburst":
        theta = np.arctan2(yy - cy, xx - cx) + rng.uniform(0, 2 * math.pi)
        return np.floor(theta / (2 * math.pi / 12)) % 2 == 0
    raise AssertionError(texture)


def _background(rng: np.random.Generator, S: int) -> np.ndarray:
    """Low-contrast clutter: a random base colour, smooth colour noise, pixel noise, solid distractors."""
    base = rng.uniform(0.25, 0.75, 3).astype(np.float32)
    smooth = cv2.resize(rng.normal(0, 0.07, (5, 5, 3)).astype(np.float32), (S, S), interpolation=cv2.INTER_LINEAR)
    noise = rng.random((S, S, 1), dtype=np.float32)  # grey pixel noise, uniform: sd ~0.03
    img = (noise - 0.5) * 0.1 + smooth + base  # S×S×3
    s = S / 64
    for _ in range(rng.integers(2, 7)):
        colour = np.clip(base + np.where(rng.random(3) < 0.5, -1, 1) * rng.uniform(0.1, 0.3, 3), 0, 1).tolist()
        x, y = rng.uniform(0, S, 2)
        if rng.random() < 0.5:  # a stroke
            length, a = rng.uniform(6, 16) * s, rng.uniform(0, math.pi)
            p0 = (int(x), int(y))
            p1 = (int(x + length * math.cos(a)), int(y + length * math.sin(a)))
            cv2.line(img, p0, p1, colour, thickness=max(1, round(rng.uniform(1, 2.5) * s)))
        else:  # a blob
            cv2.circle(img, (int(x), int(y)), max(1, round(rng.uniform(1.5, 3.5) * s)), colour, thickness=-1)
    return img


def _two_tones(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A light and a dark random colour (either may be the pattern's foreground)."""
    light = rng.uniform(0.55, 1.0, 3).astype(np.float32)
    dark = rng.uniform(0.0, 0.45, 3).astype(np.float32)
    return (light, dark) if rng.random() < 0.5 else (dark, light)


def render_sample(
    rng: np.random.Generator,
    label: int,
    grid: _Grid,
    radius_range: tuple[float, float],
    max_objects: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one sample: image 3×S×S uint8, instance mask S×S uint8 (g + 1 on object g), boxes G×4 xyxy."""
    S = grid.size
    shape, texture = CLASSES[label]
    img = _background(rng, S)
    mask = np.zeros((S, S), np.uint8)
    n_obj = int(rng.integers(1, max_objects + 1))
    # n objects share the image: radii shrink by 1/sqrt(n) (not below 4 px) so that they fit.
    shrink = 1 / math.sqrt(n_obj)
    r_lo, r_hi = max(4.0, radius_range[0] * shrink), max(4.0, radius_range[1] * shrink)
    placed: list[tuple[float, float, float]] = []
    boxes = []
    for k in range(n_obj):
        for _ in range(100):  # rejection sampling of non-overlapping discs of radius EXTENT * r
            r = rng.uniform(r_lo, r_hi)
            m = _EXTENT * r + 1
            cx, cy = rng.uniform(m, S - m, 2)
            if all(math.hypot(cx - x, cy - y) > _EXTENT * (r + q) + 1 for x, y, q in placed):
                break
        else:
            if k > 0:  # crowded: fewer objects rather than overlapping ones
                break
        placed.append((cx, cy, r))
        # Work in the object's window only: the disc of radius m around the centre is inside the image.
        y0, y1, x0, x1 = int(cy - m), int(math.ceil(cy + m)), int(cx - m), int(math.ceil(cx + m))
        xx, yy = grid.xx[y0:y1, x0:x1], grid.yy[y0:y1, x0:x1]
        obj = _shape_mask(shape, xx - cx, yy - cy, r, rng)
        pattern = _texture(texture, xx, yy, cx, cy, S / 64, rng)
        fg, bg = _two_tones(rng)
        img[y0:y1, x0:x1][obj] = np.where(pattern[obj][:, None], fg, bg)
        mask[y0:y1, x0:x1][obj] = k + 1
        bx0, by0, bx1, by1 = tight_box(obj)
        boxes.append((bx0 + x0, by0 + y0, bx1 + x0, by1 + y0))
    img = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8).transpose(2, 0, 1)
    return np.ascontiguousarray(img), mask, np.asarray(boxes, np.float32).reshape(-1, 4)
