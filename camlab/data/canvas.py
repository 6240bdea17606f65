"""MNISTCanvas: real MNIST / Fashion-MNIST items on a larger cluttered canvas, with exact boxes and masks.

The 28×28 items are read from the IDX files with torchvision's readers (``read_image_file`` /
``read_label_file``); nothing is ever downloaded. ``root`` is either a plain folder holding the four IDX
files (``.gz`` or not; Debian's ``dataset-fashion-mnist`` installs them in
``/usr/share/datasets/fashion-mnist``) or a torchvision root (``<root>/FashionMNIST/raw/`` or
``<root>/MNIST/raw/``).

A canvas is built like :class:`camlab.data.SyntheticShapes`' images: a background of smooth colour noise and
pixel noise, distractor strokes, scribbles and blobs drawn in the same tones as items (they are not items,
not crops of items, and not in the mask), then the item(s) on top. An item is resized to a random side
(default 20–40 px at 64 px) and alpha-blended in a random dark or light tone: its ink intensity
``a = pixel / 255`` after resizing is the alpha, and ink below ``ink_threshold`` is cut to zero, so the
pixels the item changes are exactly its mask and its box is the tight box of that mask (exact, not an
estimate). Several items of the same class per canvas are an option (``max_items``).

Splits: ``train`` and ``val`` take disjoint index ranges of the IDX train file (``val`` the last
``val_items``), ``test`` the t10k file. Sample ``i`` shows item ``i`` of its split's range, on a canvas that
is a pure function of ``(seed, split, i)``; the split is rendered once into a uint8 cache.
"""
from __future__ import annotations

import functools
import gzip
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from camlab.data.datamodule import WSOLDataModule
from camlab.data.synthetic import RenderedWSOLDataset, hflip_boxes, tight_box
from camlab.errors import ConfigError, DataFilesNotFound

SPLITS = {"train": 0, "val": 1, "test": 2}
ITEM_SIZE = 28
MIN_IMAGE_SIZE = 32
MAX_ITEMS = 4
# torchvision's folder name (under <root>/<name>/raw/) and class names per dataset.
DATASETS = {
    "fashion_mnist": (
        "FashionMNIST",
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    ),
    "mnist": ("MNIST", tuple(str(d) for d in range(10))),
}
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


# ------------------------------------------------------------------------------------------- IDX files
def find_idx_files(root: str | os.PathLike, dataset: str = "fashion_mnist") -> dict[str, tuple[Path, Path]]:
    """The (images, labels) IDX paths of the ``train`` and ``test`` files under ``root``.

    Each file is looked up, in order, as ``<root>/<name>``, ``<root>/<name>.gz``,
    ``<root>/<Folder>/raw/<name>`` and ``<root>/<Folder>/raw/<name>.gz`` (Folder: ``FashionMNIST`` or
    ``MNIST``, torchvision's layout). Raises :class:`DataFilesNotFound` naming every missing file.

    >>> find_idx_files("/no/such/dir")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    camlab.errors.DataFilesNotFound: fashion_mnist root '/no/such/dir' does not exist...
    """
    if dataset not in DATASETS:
        raise ConfigError(f"dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
    folder = DATASETS[dataset][0]
    root = Path(root).expanduser()
    layout = (
        f"expected the 4 IDX files {', '.join(n for pair in IDX_FILES.values() for n in pair)} (each may end in "
        f".gz) directly in the root or in <root>/{folder}/raw/ (torchvision's layout)"
    )
    download = f"torchvision.datasets.{folder}('<dir>', download=True) on a machine with network access"
    if dataset == "fashion_mnist":
        hint = (
            "; get them with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu, installs them in "
            f"/usr/share/datasets/fashion-mnist) or {download}, then set root=<dir>"
        )
    else:
        hint = f"; get them with {download}, then set root=<dir>"
    if not root.is_dir():
        raise DataFilesNotFound(f"{dataset} root '{root}' does not exist or is not a directory: {layout}{hint}",
                                settings=["root"])
    found: dict[str, Path] = {}
    missing = []
    for names in IDX_FILES.values():
        for name in names:
            candidates = [root / name, root / f"{name}.gz", root / folder / "raw" / name, root / folder / "raw" / f"{name}.gz"]
            hit = next((p for p in candidates if p.is_file()), None)
            if hit is None:
                missing.append(name)
            else:
                found[name] = hit
    if missing:
        raise DataFilesNotFound(f"{dataset} root '{root}' lacks {', '.join(missing)}: {layout}{hint}",
                                settings=["root"])
    return {split: (found[images], found[labels]) for split, (images, labels) in IDX_FILES.items()}


@functools.lru_cache(maxsize=4)
def _read_idx_cached(path: str, kind: str, mtime_ns: int) -> torch.Tensor:
    from torchvision.datasets.mnist import read_image_file, read_label_file

    reader = read_image_file if kind == "images" else read_label_file
    try:
        if not path.endswith(".gz"):
            return reader(path)
        # torchvision's readers open plain files only: inflate into a temporary file first.
        with tempfile.TemporaryDirectory(prefix="camlab-idx-") as tmp:
            plain = os.path.join(tmp, os.path.basename(path)[:-3])
            with gzip.open(path, "rb") as src, open(plain, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)
            return reader(plain)
    except (AssertionError, TypeError, ValueError, OSError, EOFError, RuntimeError) as err:
        raise ConfigError(f"'{path}' is not a readable IDX {kind} file ({type(err).__name__}: {err})") from err


def read_idx(path: str | os.PathLike, kind: str) -> torch.Tensor:
    """An IDX file (``.gz`` or plain) read with torchvision: ``images`` N×28×28 uint8 or ``labels`` N int64.

    Repeated reads of the same unchanged file are served from a small in-process cache.
    """
    if kind not in ("images", "labels"):
        raise ValueError(f"kind must be 'images' or 'labels', got {kind!r}")
    p = Path(path)
    return _read_idx_cached(str(p), kind, p.stat().st_mtime_ns)


def load_split_items(root: str | os.PathLike, dataset: str, split: str, val_items: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The items (N×28×28 uint8) and labels (N int64) of a split: train/val share the IDX train file."""
    files = find_idx_files(root, dataset)
    images_path, labels_path = files["test" if split == "test" else "train"]
    images, labels = read_idx(images_path, "images"), read_idx(labels_path, "labels")
    if images.shape[1:] != (ITEM_SIZE, ITEM_SIZE):
        raise ConfigError(f"'{images_path}' holds {tuple(images.shape[1:])} images, expected 28×28")
    if len(images) != len(labels):
        raise ConfigError(f"'{images_path}' has {len(images)} images but '{labels_path}' has {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise ConfigError(f"'{labels_path}' has labels outside 0..9")
    if split == "test":
        return images, labels
    if not 1 <= val_items < len(images):
        raise ConfigError(
            f"val_items={val_items} must be in [1, {len(images) - 1}]: the val split is the last val_items of "
            f"the {len(images)} items of '{images_path}', train the rest"
        )
    cut = len(images) - val_items
    return (images[:cut], labels[:cut]) if split == "train" else (images[cut:], labels[cut:])


# -------------------------------------------------------------------------------------------- dataset
class MNISTCanvas(RenderedWSOLDataset):
    """MNIST / Fashion-MNIST items on a cluttered canvas; exact boxes and masks, deterministic per index.

    Args:
        root: folder with the IDX files (see :func:`find_idx_files`).
        split: ``"train"``, ``"val"`` (both from the IDX train file, disjoint) or ``"test"`` (t10k).
        length: number of samples; sample ``i`` shows item ``i`` of the split. None: every item.
        dataset: ``"fashion_mnist"`` or ``"mnist"`` (class names and the torchvision folder name).
        image_size: canvas side in pixels (>= 32).
        item_size: range of the item's side after resizing; default ``(20, 40) * image_size / 64``.
        max_items: 1..4; each canvas has n in 1..max_items non-overlapping items of the sample's class
            (the extra ones drawn at random from the split's items of that class; sides scale by
            1/sqrt(n); a crowded draw places fewer).
        val_items: how many of the IDX train file's items (the last ones) form the val split.
        ink_threshold: item ink intensity (0..1, after resizing) below which a pixel is not drawn and
            not in the mask.
        seed: the canvas seed.
        hflip: random horizontal flip; default True for ``train`` (use False for digits).
        mean, std: per-channel normalization of the [0, 1] image.

    A sample is a dict: ``image`` 3×H×W float32 (normalized), ``label`` long, ``boxes`` G×4 float32 xyxy
    (continuous convention: ink in columns a..b gives x0=a, x1=b+1), ``mask`` H×W uint8 (1 = ink of the
    items), ``index`` long. The cache keeps ``images`` N×3×S×S uint8, ``instances`` N×S×S uint8 (g + 1 on
    item g), ``boxes``, ``num_boxes``, ``labels`` and ``items`` (the split's item index of each sample).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        length: int | None = None,
        dataset: str = "fashion_mnist",
        image_size: int = 64,
        item_size: Sequence[int] | None = None,
        max_items: int = 1,
        val_items: int = 10000,
        ink_threshold: float = 0.1,
        seed: int = 0,
        hflip: bool | None = None,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
    ) -> None:
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {sorted(SPLITS)}, got {split!r}", settings=["split"])
        if dataset not in DATASETS:
            raise ConfigError(f"dataset must be one of {sorted(DATASETS)}, got {dataset!r}", settings=["dataset"])
        if not isinstance(image_size, int) or image_size < MIN_IMAGE_SIZE:
            raise ConfigError(f"image_size must be an int >= {MIN_IMAGE_SIZE}, got {image_size!r}",
                              settings=["image_size"])
        if length is not None and (not isinstance(length, int) or length < 1):
            raise ConfigError(f"length of the {split} split must be None or an int >= 1, got {length!r}",
                              settings=["length"])
        if not isinstance(max_items, int) or not 1 <= max_items <= MAX_ITEMS:
            raise ConfigError(f"max_items must be an int in [1, {MAX_ITEMS}], got {max_items!r}",
                              settings=["max_items"])
        if not isinstance(val_items, int) or val_items < 1:
            raise ConfigError(f"val_items must be an int >= 1, got {val_items!r}", settings=["val_items"])
        if not 0 < ink_threshold < 1:
            raise ConfigError(f"ink_threshold must be in (0, 1), got {ink_threshold!r}", settings=["ink_threshold"])
        if not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seed must be an int >= 0, got {seed!r}", settings=["seed"])
        if item_size is None:
            item_size = (round(20 * image_size / 64), round(40 * image_size / 64))
        s_lo, s_hi = (int(s) for s in item_size)
        if not 8 <= s_lo <= s_hi <= image_size - 2:
            raise ConfigError(
                f"item_size must satisfy 8 <= low <= high <= image_size - 2 = {image_size - 2}, got {tuple(item_size)}",
                settings=["item_size"],
            )
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ConfigError(
                f"mean and std must have 3 entries with std > 0, got mean={mean}, std={std}", settings=["mean", "std"]
            )

        items, item_labels = load_split_items(root, dataset, split, val_items)
        if length is None:
            length = len(items)
        if length > len(items):
            raise ConfigError(
                f"length={length} but the {dataset} {split} split has only {len(items)} items; set length to at most "
                f"{len(items)} (or None for all of them)",
                settings=["length"],
            )

        self.root = str(root)
        self.split = split
        self.length = length
        self.dataset = dataset
        self.num_classes = 10
        self.class_names = list(DATASETS[dataset][1])
        self.image_size = image_size
        self.item_size = (s_lo, s_hi)
        self.max_items = max_items
        self.val_items = val_items
        self.ink_threshold = float(ink_threshold)
        self.seed = seed
        self.hflip = (split == "train") if hflip is None else bool(hflip)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self._mean_t = torch.tensor(self.mean).view(3, 1, 1)
        self._std_t = torch.tensor(self.std).view(3, 1, 1)

        # The uint8 cache: the whole split rendered once.
        S = image_size
        pool = items.numpy()  # P×28×28 uint8
        pool_labels = item_labels.numpy()
        by_class = [np.flatnonzero(pool_labels == c) for c in range(10)]
        images = np.empty((length, 3, S, S), np.uint8)
        instances = np.empty((length, S, S), np.uint8)
        boxes = np.zeros((length, max_items, 4), np.float32)
        num_boxes = np.empty(length, np.int64)
        for i in range(length):
            rng = np.random.default_rng([seed, SPLITS[split], i])
            n = int(rng.integers(1, max_items + 1))
            extra = rng.choice(by_class[pool_labels[i]], size=n - 1) if n > 1 else []
            glyphs = [pool[i]] + [pool[j] for j in extra]
            try:
                img, inst, bxs = render_canvas(rng, glyphs, S, self.item_size, self.ink_threshold)
            except ValueError as err:
                raise ConfigError(f"{dataset} {split} sample {i}: {err}") from err
            images[i], instances[i] = img, inst
            boxes[i, : len(bxs)] = bxs
            num_boxes[i] = len(bxs)
        self.images = torch.from_numpy(images)  # N×3×S×S uint8
        self.instances = torch.from_numpy(instances)  # N×S×S uint8: 0 background, g + 1 on item g
        self.boxes = torch.from_numpy(boxes)  # N×max_items×4 float32, zero-padded
        self.num_boxes = torch.from_numpy(num_boxes)  # N
        self.labels = item_labels[:length].clone()  # N int64
        self.items = torch.arange(length)  # N: sample i shows item i of the split

    def __repr__(self) -> str:
        return (
            f"MNISTCanvas(root={self.root!r}, dataset={self.dataset!r}, split={self.split!r}, length={self.length}, "
            f"image_size={self.image_size}, item_size={self.item_size}, max_items={self.max_items}, "
            f"seed={self.seed}, hflip={self.hflip})"
        )


# ------------------------------------------------------------------------------------------ rendering
def item_alpha(item: np.ndarray, side: int, ink_threshold: float) -> np.ndarray:
    """A 28×28 uint8 item resized to ``side``×``side`` as float32 alpha in [0, 1]; ink below the cut is 0.

    >>> item = np.zeros((28, 28), np.uint8); item[7:21, 7:21] = 255
    >>> a = item_alpha(item, 56, 0.1)
    >>> a.shape, float(a[28, 28]), float(a[0, 0])
    ((56, 56), 1.0, 0.0)
    """
    interp = cv2.INTER_AREA if side < item.shape[0] else cv2.INTER_LINEAR
    alpha = cv2.resize(item.astype(np.float32) / 255, (side, side), interpolation=interp)  # side×side
    alpha = np.clip(alpha, 0, 1)
    alpha[alpha < ink_threshold] = 0
    return alpha


def _tone(rng: np.random.Generator) -> np.ndarray:
    """A dark or a light colour (items and distractors share this distribution, so tone carries no label)."""
    if rng.random() < 0.5:
        return rng.uniform(0.0, 0.2, 3).astype(np.float32)
    return rng.uniform(0.8, 1.0, 3).astype(np.float32)


def _background(rng: np.random.Generator, S: int) -> np.ndarray:
    """Mid-tone smooth colour noise and pixel noise with ink-like distractors (not items, not in the mask)."""
    base = rng.uniform(0.35, 0.65) + rng.uniform(-0.08, 0.08, 3)
    smooth = cv2.resize(rng.normal(0, 0.06, (5, 5, 3)).astype(np.float32), (S, S), interpolation=cv2.INTER_LINEAR)
    noise = rng.random((S, S, 1), dtype=np.float32)
    img = np.ascontiguousarray((noise - 0.5) * 0.1 + smooth + base.astype(np.float32))  # S×S×3
    s = S / 64
    for _ in range(rng.integers(3, 8)):
        colour = _tone(rng).tolist()
        x, y = rng.uniform(0, S, 2)
        kind = rng.random()
        if kind < 0.4:  # a stroke
            length, a = rng.uniform(6, 18) * s, rng.uniform(0, math.pi)
            p1 = (int(x + length * math.cos(a)), int(y + length * math.sin(a)))
            cv2.line(img, (int(x), int(y)), p1, colour, thickness=max(1, round(rng.uniform(1, 2.5) * s)))
        elif kind < 0.7:  # a scribble: a random 3-5 point polyline
            pts = np.cumsum(rng.normal(0, 5 * s, (int(rng.integers(3, 6)), 2)), 0) + (x, y)
            cv2.polylines(img, [pts.astype(np.int32)], False, colour, thickness=max(1, round(rng.uniform(1, 2) * s)))
        else:  # a blob
            cv2.circle(img, (int(x), int(y)), max(1, round(rng.uniform(1.5, 4) * s)), colour, thickness=-1)
    return img


def render_canvas(
    rng: np.random.Generator,
    items: Sequence[np.ndarray],
    S: int,
    item_size: tuple[int, int],
    ink_threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One canvas: image 3×S×S uint8, instance mask S×S uint8 (g + 1 on item g), boxes G×4 xyxy float32.

    ``items`` are 28×28 uint8; they are placed in non-overlapping squares (fewer if a draw is crowded).
    """
    img = _background(rng, S)
    inst = np.zeros((S, S), np.uint8)
    shrink = 1 / math.sqrt(len(items))
    lo, hi = max(8, round(item_size[0] * shrink)), max(8, round(item_size[1] * shrink))
    placed: list[tuple[int, int, int]] = []
    boxes = []
    for g, item in enumerate(items):
        for _ in range(100):  # rejection sampling of non-overlapping squares (1 px apart)
            side = int(rng.integers(lo, hi + 1))
            x0, y0 = (int(v) for v in rng.integers(0, S - side + 1, 2))
            if all(x0 >= qx + q + 1 or qx >= x0 + side + 1 or y0 >= qy + q + 1 or qy >= y0 + side + 1 for qx, qy, q in placed):
                break
        else:
            if g > 0:  # crowded: fewer items rather than overlapping ones
                break
        alpha = item_alpha(item, side, ink_threshold)  # side×side
        if not alpha.any():
            raise ValueError(f"item {g} has no ink above ink_threshold={ink_threshold} at {side} px")
        placed.append((x0, y0, side))
        colour = _tone(rng)
        win = img[y0 : y0 + side, x0 : x0 + side]  # side×side×3 view
        win += alpha[..., None] * (colour - win)  # alpha blend: untouched where alpha == 0
        inst[y0 : y0 + side, x0 : x0 + side][alpha > 0] = g + 1
        bx0, by0, bx1, by1 = tight_box(alpha > 0)
        boxes.append((bx0 + x0, by0 + y0, bx1 + x0, by1 + y0))
    img = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8).transpose(2, 0, 1)
    return np.ascontiguousarray(img), inst, np.asarray(boxes, np.float32).reshape(-1, 4)


# ------------------------------------------------------------------------------------------ datamodule
def canvas_split(split: str, length: int | None, **options) -> MNISTCanvas:
    """:class:`MNISTCanvas` of ``split`` for :class:`CanvasDataModule`: a bad ``length`` is its ``num_<split>``."""
    try:
        return MNISTCanvas(split=split, length=length, **options)
    except ConfigError as err:
        err.settings = tuple(f"num_{split}" if s == "length" else s for s in err.settings)
        raise


class CanvasDataModule(WSOLDataModule):
    """A :class:`WSOLDataModule` over :class:`MNISTCanvas` train/val/test splits that share their settings.

    Args:
        root, dataset, image_size, item_size, max_items, val_items, ink_threshold, seed, mean, std: as
            :class:`MNISTCanvas` (``seed`` also fixes the training shuffle order).
        num_train, num_val, num_test: canvases per split (sample i shows item i); None: every item.
        hflip: random horizontal flip of the training split (val/test are never flipped).
        **loader_options: the remaining :class:`WSOLDataModule` arguments (batch_size, num_workers, ...).

    The splits are built in ``setup()`` (nothing is read when the module is constructed), so a missing
    root fails there with :class:`DataFilesNotFound`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        dataset: str = "fashion_mnist",
        image_size: int = 64,
        item_size: Sequence[int] | None = None,
        max_items: int = 1,
        val_items: int = 10000,
        ink_threshold: float = 0.1,
        num_train: int | None = 10000,
        num_val: int | None = 2000,
        num_test: int | None = None,
        seed: int = 0,
        hflip: bool = True,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        num_classes: int = 10,
        **loader_options,
    ) -> None:
        if dataset not in DATASETS:
            raise ConfigError(f"dataset must be one of {sorted(DATASETS)}, got {dataset!r}", settings=["dataset"])
        if num_classes != 10:
            raise ConfigError(f"{dataset} has 10 classes, got num_classes={num_classes}", settings=["num_classes"])
        shared = dict(
            root=root, dataset=dataset, image_size=image_size, item_size=item_size, max_items=max_items,
            val_items=val_items, ink_threshold=ink_threshold, seed=seed, mean=tuple(mean), std=tuple(std),
        )
        splits = {
            split: functools.partial(canvas_split, split=split, length=n, hflip=hflip and split == "train", **shared)
            for split, n in (("train", num_train), ("val", num_val), ("test", num_test))
        }
        super().__init__(
            train_dataset=splits["train"], val_dataset=splits["val"], test_dataset=splits["test"],
            num_classes=10, image_size=image_size, class_names=DATASETS[dataset][1], seed=seed, **loader_options,
        )
        self.root = str(root)
