"""One generic dataset for every on-disk format: a list of :class:`Record` in, the camlab sample dict out.

Each format (CUB, wsolevaluation metadata, ILSVRC, COCO JSON, CSV) is a small *reader* that turns its files
into records (image path, label, boxes in xyxy pixels of the ORIGINAL image, optional mask source) and class
names. :class:`RecordDataset` does everything else once: file checks, box clipping, image loading (PIL),
mask rendering, the v2 transforms and the accounting of what was clipped or skipped, reported to the user
(a warning at the end of set-up; skips of unreadable images while loading are reported by ``report()``,
which ``WSOLDataModule.teardown`` calls).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, get_worker_info

from camlab.data.collate import collate_wsol
from camlab.data.files import SPLITS
from camlab.data.images import (TURNED, UNREADABLE, read_header, read_rgb, unreadable_error, warn_exif_orientation,
                                 why_not_a_file)
from camlab.data.masks import MaskSpec, rle_counts, tight_boxes
from camlab.data.transforms import IMAGENET_MEAN, IMAGENET_STD, WSOLTransform
from camlab.errors import ConfigError, DataError

log = logging.getLogger("camlab.data")

_MAX_WORKER_SLOTS = 64


NO_BOXES = np.zeros((0, 4))
NO_BOXES.setflags(write=False)  # shared by every record without a box (ILSVRC train: 1.28 M records)


@dataclass(slots=True)
class Record:
    """One image of a split.

    Args:
        path: image file.
        label: class index in ``[0, num_classes)``.
        boxes: G×4 float64 xyxy in pixels of the original image (G may be 0).
        size: (W, H) declared by the annotations, or None (read from the image header when boxes need it).
        mask: where the image's mask comes from, or None.
        source: where the record was read from (e.g. ``images.txt line 12``), for error messages.
    """

    path: str
    label: int
    boxes: np.ndarray = field(default_factory=lambda: NO_BOXES)
    size: tuple[int, int] | None = None
    mask: MaskSpec | None = None
    source: str = ""


def collate_skipping(samples: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """``collate_wsol`` over the samples that are not None (unreadable images skipped with skip_corrupt)."""
    kept = [s for s in samples if s is not None]
    if not kept:
        raise DataError("every image of a batch was unreadable (skip_corrupt=True skipped them all)",
                        settings=["skip_corrupt"])
    return collate_wsol(kept)


class RecordDataset(Dataset):
    """Images + labels + boxes (+ masks) from records, through the WSOL train or eval transform.

    Args:
        records: the split's images (see :class:`Record`).
        class_names: one name per class.
        split: 'train', 'val' or 'test' (the train split gets the random-crop pipeline).
        image_size: network input side S; ``resize_size``: resize side before the random crop (train).
        train_augment: None: the train pipeline on the train split only; True / False force it.
        hflip: random horizontal flips in the train pipeline.
        masks: 'auto': masks on val/test when every record has one (an error when only some have), none on
            the train split (no training loss uses them; rendering them slows loading);
            True: masks on every split (an error where one is missing); False: no masks.
        skip_corrupt: skip unreadable images (counted and reported) instead of raising an error.
        exif_transpose: turn images with an EXIF orientation upright (as viewers show them) before anything else:
            for boxes drawn on the upright image. By default images are read as stored (the WSOL benchmarks'
            boxes are on the stored grid); the val and test splits then warn at set-up with the count of such
            images, the train split when it loads them.
        inclusive_boxes: boxes are inclusive pixel bounds (x1 = last pixel; wsolevaluation, CUB, ILSVRC XML)
            rather than continuous (x1 = one past the last pixel; COCO, CSV). Sets the clip bound (W-1 or W).
        num_classes: declared class count; must equal ``len(class_names)``.
        check_files: check every image file exists at set-up (readers that listed a folder skip it).
        check_mask_sizes: warn (once, with the count) where a mask's size differs from its image's (the
            user formats, whose masks are drawn on the image; wsolevaluation's OpenImages masks may differ
            by design: every mask is resized to the input size on its own).
        name: the dataset's name in messages.
    """

    def __init__(
        self,
        records: Sequence[Record],
        class_names: Sequence[str],
        split: str = "train",
        image_size: int = 224,
        resize_size: int | None = 256,
        train_augment: bool | None = None,
        hflip: bool = True,
        masks: bool | str = "auto",
        skip_corrupt: bool = False,
        inclusive_boxes: bool = True,
        num_classes: int | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        check_files: bool = True,
        check_mask_sizes: bool = False,
        name: str = "dataset",
        exif_transpose: bool = False,
    ) -> None:
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {SPLITS}, got {split!r}", settings=["split"])
        if masks not in (True, False, "auto"):
            raise ConfigError(f"masks must be True, False or 'auto', got {masks!r}", settings=["masks"])
        self.name, self.split = name, split
        self.class_names = [str(c) for c in class_names]
        if num_classes is not None and int(num_classes) != len(self.class_names):
            raise DataError(
                f"{name}: num_classes={num_classes} but the annotations define {len(self.class_names)} "
                f"classes; set num_classes={len(self.class_names)}",
                settings=["num_classes"],
            )
        self.num_classes = len(self.class_names)
        self.image_size = image_size
        self.train = (split == "train") if train_augment is None else bool(train_augment)
        self.transform = WSOLTransform(image_size, resize_size, train=self.train, hflip=hflip, mean=mean, std=std)
        self.mean, self.std = self.transform.mean, self.transform.std
        self.skip_corrupt = bool(skip_corrupt)
        if not isinstance(exif_transpose, bool):
            raise ConfigError(f"exif_transpose must be true or false, got {exif_transpose!r}",
                              settings=["exif_transpose"])
        self.exif_transpose = exif_transpose
        self.inclusive_boxes = bool(inclusive_boxes)
        self.counts = {"skipped_missing": 0, "skipped_unreadable_at_setup": 0, "clipped_boxes": 0, "emptied_boxes": 0,
                       "mask_size_mismatch": 0, "classes_without_images": 0, "zero_area_boxes": 0,
                       "exif_oriented_at_setup": 0}
        self._first: dict[str, str] = {}

        records = list(records)
        if not records:
            raise DataError(f"{name}: the {split} split has no images")
        records = self._check_files(records, check_files)
        self.use_masks = self._mask_mode(records, masks)
        records = self._sizes_and_clipping(records)
        if self.use_masks:
            self._check_masks(records, check_mask_sizes)
        if split == "train":
            per_class = np.bincount(np.asarray([r.label for r in records], dtype=np.int64), minlength=self.num_classes)
            empty = [self.class_names[k] for k in np.flatnonzero(per_class == 0)]
            self.counts["classes_without_images"] = len(empty)
            if empty:
                self._first["classes_without_images"] = ", ".join(empty[:5]) + (", ..." if len(empty) > 5 else "")
        else:
            for r in records:
                if len(r.boxes) == 0 and not (self.use_masks and r.mask is not None):
                    raise DataError(
                        f"{name}: {r.path} ({r.source}) has no box; the val and test splits need a box "
                        f"(or a mask) per image for the localization metrics"
                    )
        self.records = records
        # Unreadable images met while loading, one slot per DataLoader worker (shared memory, no races); the
        # same for the distinct images with an EXIF orientation (counted at their first load only).
        self._skipped = torch.zeros(_MAX_WORKER_SLOTS, dtype=torch.int64).share_memory_()
        self._oriented = torch.zeros(_MAX_WORKER_SLOTS, dtype=torch.int64).share_memory_()
        self._oriented_seen = torch.zeros(len(records), dtype=torch.bool).share_memory_()
        self._warned_skip = False
        self._report_setup()

    # ------------------------------------------------------------------------------------------ set-up
    def _check_files(self, records: list[Record], check_files: bool) -> list[Record]:
        for r in records:
            for p in r.mask.paths if r.mask is not None else ():
                if not os.path.isfile(p):
                    raise DataError(f"{self.name}: mask file not found: {p} (for {r.path}, {r.source})")
        if not check_files:
            return records
        missing = [r for r in records if not os.path.isfile(r.path)]
        if missing and not self.skip_corrupt:
            raise DataError(
                f"{self.name}: {len(missing)} image file(s) of the {self.split} split not found, first: "
                f"{missing[0].path} ({missing[0].source}{why_not_a_file(missing[0].path)}); fix the root/paths, "
                f"or set skip_corrupt=True to skip missing and unreadable images (counted and reported)",
                settings=["skip_corrupt"],
            )
        if missing:
            self.counts["skipped_missing"] = len(missing)
            self._first["skipped_missing"] = missing[0].path
            gone = {id(r) for r in missing}
            records = [r for r in records if id(r) not in gone]
        return records

    def _mask_mode(self, records: list[Record], masks: bool | str) -> bool:
        with_mask = sum(r.mask is not None for r in records)
        if masks is False or (masks == "auto" and (with_mask == 0 or self.split == "train")):
            return False
        if with_mask < len(records):
            first = next(r for r in records if r.mask is None)
            raise DataError(
                f"{self.name}: {len(records) - with_mask} of {len(records)} {self.split} images have no mask "
                f"(first: {first.path}, {first.source}); a batch needs a mask for every image or none: add "
                f"the masks or set masks=False",
                settings=["masks"],
            )
        return True

    def _sizes_and_clipping(self, records: list[Record]) -> list[Record]:
        # val / test boxes are scored: every header is read there, for its EXIF orientation (warned at set-up)
        scan = self.split != "train"
        kept = []
        for r in records:
            if len(r.boxes) == 0 and not scan:
                kept.append(r)
                continue
            self._check_box_values(r)
            size = r.size
            if size is None or scan:
                try:
                    header, orientation = read_header(r.path, self.exif_transpose)
                except UNREADABLE as err:
                    if not self.skip_corrupt:
                        raise unreadable_error(r.path, err) from None
                    self.counts["skipped_unreadable_at_setup"] += 1
                    self._first.setdefault("skipped_unreadable_at_setup", r.path)
                    continue
                size = size or header
                if orientation != 1:
                    self.counts["exif_oriented_at_setup"] += 1
                    self._first.setdefault("exif_oriented_at_setup", f"{r.path} ({r.source}), orientation "
                                           f"{orientation}{' (a quarter turn)' if orientation in TURNED else ''}")
            if len(r.boxes) == 0:
                kept.append(replace(r, size=tuple(size)))
                continue
            W, H = size
            hi = np.array([W - 1, H - 1, W - 1, H - 1] if self.inclusive_boxes else [W, H, W, H], dtype=np.float64)
            clipped = np.clip(r.boxes, 0.0, hi)
            changed = (clipped != r.boxes).any(1)
            if changed.any():
                b = r.boxes  # wholly outside: covers no pixel (inclusive bounds: x0 > W-1; continuous: x0 >= W)
                if self.inclusive_boxes:
                    outside = (b[:, 0] > hi[0]) | (b[:, 1] > hi[1]) | (b[:, 2] < 0) | (b[:, 3] < 0)
                else:
                    outside = (b[:, 0] >= W) | (b[:, 1] >= H) | (b[:, 2] <= 0) | (b[:, 3] <= 0)
                if outside.any() and self.split != "train":
                    raise DataError(
                        f"{self.name}: box {b[outside][0].tolist()} of {r.path} ({r.source}) lies wholly outside its "
                        f"{W}x{H} image; the {self.split} split's boxes are scored by the localization metrics, so "
                        f"fix or remove the box (boxes that only cross the border are clipped)"
                    )
                self.counts["clipped_boxes"] += int(changed.sum())
                first = f"{b[changed][0].tolist()} of {r.path} ({r.source}), image {W}x{H}"
                self._first.setdefault("clipped_boxes", first)
                self.counts["emptied_boxes"] += int(outside.sum())
            kept.append(replace(r, boxes=clipped, size=(W, H)))
        return kept

    def _check_box_values(self, r: Record) -> None:
        """NaN / inverted boxes are errors; zero-area ones too in val / test (scored), counted in train."""
        finite = np.isfinite(r.boxes).all(1)
        if not finite.all():
            raise DataError(f"{self.name}: box {r.boxes[~finite][0].tolist()} of {r.path} ({r.source}) has a NaN "
                            f"or infinite coordinate; fix or remove that box in the annotations")
        bad = (r.boxes[:, 2] < r.boxes[:, 0]) | (r.boxes[:, 3] < r.boxes[:, 1])
        if bad.any():
            raise DataError(f"{self.name}: box {r.boxes[bad][0].tolist()} of {r.path} ({r.source}) has x1 < x0 or "
                            f"y1 < y0; give boxes as x0, y0, x1, y1 (top-left, then bottom-right corner)")
        # Continuous boxes (x1 one past the last pixel) with x1 == x0 cover no pixel; inclusive ones cover one.
        flat = np.zeros(len(r.boxes), bool) if self.inclusive_boxes else (
            (r.boxes[:, 2] == r.boxes[:, 0]) | (r.boxes[:, 3] == r.boxes[:, 1]))
        if flat.any():
            if self.split != "train":
                raise DataError(
                    f"{self.name}: box {r.boxes[flat][0].tolist()} of {r.path} ({r.source}) has zero area (x1 == x0 "
                    f"or y1 == y0); the {self.split} split's boxes are scored by the localization metrics, so fix "
                    f"or remove the box")
            self.counts["zero_area_boxes"] += int(flat.sum())
            self._first.setdefault("zero_area_boxes", f"{r.boxes[flat][0].tolist()} of {r.path} ({r.source})")

    def _check_masks(self, records: list[Record], check_sizes: bool) -> None:
        """Every mask file's header opens (a broken file fails here, not after a training epoch); with
        ``check_sizes``, count the masks whose size differs from their image's (warned in ``_report_setup``)."""
        for r in records:
            sizes = []
            for p in r.mask.paths:
                try:
                    with Image.open(p) as im:  # header only
                        sizes.append((p, tuple(im.size)))
                except UNREADABLE as err:
                    raise DataError(
                        f"{self.name}: cannot read mask file {p} (for {r.path}, {r.source}): {err}. Replace the "
                        f"file, or set masks=False to use no masks (no PxAP)",
                        settings=["masks"],
                    ) from None
            for k, rle in enumerate(r.mask.rles):
                try:
                    h, w, _ = rle_counts(rle)
                except ValueError as err:
                    raise DataError(f"{self.name}: RLE segmentation {k + 1} of {r.path} ({r.source}): {err}") from None
                sizes.append((f"the RLE segmentation of {r.source}", (w, h)))
            if not check_sizes or not sizes:
                continue
            size = r.size
            if size is None:
                try:
                    size = read_header(r.path, self.exif_transpose)[0]
                except UNREADABLE as err:
                    if not self.skip_corrupt:
                        raise unreadable_error(r.path, err) from None
                    continue  # skipped (and counted) when it is loaded
            for what, (w, h) in sizes:
                if (w, h) != tuple(size):
                    self.counts["mask_size_mismatch"] += 1
                    first = f"{what} is {w}x{h} but {r.path} is {size[0]}x{size[1]}"
                    self._first.setdefault("mask_size_mismatch", first)

    def _report_setup(self) -> None:
        c, first = self.counts, self._first
        if c["clipped_boxes"]:
            extra = f", {c['emptied_boxes']} of them entirely outside (now empty)" if c["emptied_boxes"] else ""
            log.warning(
                "%s (%s): clipped %d box(es) that extended past their image%s; first: %s",
                self.name, self.split, c["clipped_boxes"], extra, first["clipped_boxes"],
            )
        if c["zero_area_boxes"]:
            log.warning(
                "%s (train): %d box(es) have zero area (x1 == x0 or y1 == y0); first: %s. Training uses only the "
                "labels, so they do no harm there, but check the annotation tool's export",
                self.name, c["zero_area_boxes"], first["zero_area_boxes"],
            )
        if c["exif_oriented_at_setup"]:
            turn = ("turned upright (exif_transpose=True): their boxes and sizes are taken as given on the upright "
                    "image" if self.exif_transpose else "read as stored (exif_transpose=False), so their boxes must "
                    "be on the stored pixel grid; if they were drawn on the upright image (as viewers show it), set "
                    "exif_transpose=True (config key data.exif_transpose)")
            (log.info if self.exif_transpose else log.warning)(
                "%s (%s): %d of %d image(s) have an EXIF orientation (displayed rotated or mirrored), first: %s; "
                "%s", self.name, self.split, c["exif_oriented_at_setup"], len(self.records), first[
                    "exif_oriented_at_setup"], turn)
        if c["mask_size_mismatch"]:
            log.warning(
                "%s (%s): %d mask(s) differ in size from their image; first: %s. Each mask is stretched to the "
                "input size on its own, which is right only for a mask of the whole image at another resolution: "
                "check them, and resize them to their images' sizes",
                self.name, self.split, c["mask_size_mismatch"], first["mask_size_mismatch"],
            )
        if c["classes_without_images"]:
            log.warning(
                "%s (train): %d of %d classes have no training image (%s): the model cannot learn them; check the "
                "labels, the splits and num_classes",
                self.name, c["classes_without_images"], self.num_classes, first["classes_without_images"],
            )
        for key, what in (("skipped_missing", "missing"), ("skipped_unreadable_at_setup", "unreadable")):
            if c[key]:
                log.warning(
                    "%s (%s): skipped %d %s image(s) (skip_corrupt=True); first: %s",
                    self.name, self.split, c[key], what, first[key],
                )

    # --------------------------------------------------------------------------------------- reporting
    @property
    def num_skipped_while_loading(self) -> int:
        return int(self._skipped.sum())

    @property
    def num_exif_oriented(self) -> int:
        """Images with an EXIF orientation: found at set-up (val, test), or when loaded (train)."""
        return self.counts["exif_oriented_at_setup"] or int(self._oriented.sum())

    def report(self) -> dict[str, int]:
        """Counts of what was clipped or skipped; logs a warning when unreadable images were skipped or images
        with an EXIF orientation were read (as stored, the orientation not applied)."""
        counts = {**self.counts, "skipped_unreadable_while_loading": self.num_skipped_while_loading,
                  "exif_oriented": self.num_exif_oriented}
        at_load = int(self._oriented.sum())  # the train split's (val / test ones were warned at set-up)
        if counts["skipped_unreadable_while_loading"]:
            log.warning(
                "%s (%s): skipped %d unreadable image(s) while loading (skip_corrupt=True)",
                self.name, self.split, counts["skipped_unreadable_while_loading"],
            )
        if at_load:
            log.warning(
                "%s (%s): %d image(s) have an EXIF orientation (displayed rotated or mirrored); they were read as "
                "stored, so their boxes must be on the stored pixel grid (the first one was named when loaded; "
                "exif_transpose=True turns them upright)", self.name, self.split, at_load,
            )
        return counts

    # ----------------------------------------------------------------------------------------- loading
    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        r = self.records[index]
        info = get_worker_info()
        slot = (0 if info is None else info.id + 1) % _MAX_WORKER_SLOTS
        try:
            image, orientation = read_rgb(r.path, self.exif_transpose)
        except DataError:
            raise  # NaN pixels: not a file to skip silently
        except UNREADABLE as err:
            if not self.skip_corrupt:
                raise unreadable_error(r.path, err) from None
            self._skipped[slot] += 1
            if not self._warned_skip:
                self._warned_skip = True
                log.warning("%s: skipping unreadable image %s (%s); the total is reported at the end", self.name, r.path, err)
            return None
        if orientation != 1 and self.split == "train" and not self.exif_transpose and not self._oriented_seen[index]:
            self._oriented_seen[index] = True
            self._oriented[slot] += 1
            warn_exif_orientation(r.path, orientation)
        if r.size is not None and tuple(image.size) != tuple(r.size):
            raise DataError(
                f"{self.name}: {r.path} is {image.size[0]}x{image.size[1]} but its annotations ({r.source}) "
                f"say {r.size[0]}x{r.size[1]}"
            )
        boxes = r.boxes
        render = r.mask.render if (self.use_masks and r.mask is not None) else None
        if len(boxes) == 0 and render is not None and self.split != "train":
            W, H = image.size  # no box annotated: the tight boxes of the mask's instances
            boxes = tight_boxes(r.mask.instances(W, H), self.inclusive_boxes)
        tensor, boxes_t, mask = self.transform(image, boxes, render)
        sample: dict[str, Any] = {
            "image": tensor,  # 3×S×S
            "label": torch.tensor(r.label, dtype=torch.long),
            "boxes": boxes_t,  # G×4 input pixels
            "index": torch.tensor(index, dtype=torch.long),
        }
        if mask is not None:
            sample["mask"] = mask  # S×S uint8
        return sample

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, images={len(self)}, "
            f"classes={self.num_classes}, masks={self.use_masks}, transform={self.transform!r})"
        )
