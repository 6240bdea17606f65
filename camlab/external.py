"""Score maps made by another tool, matched to a dataset's images: ``camlab-eval maps=<folder | file.npz>``.

:class:`ExternalMaps` reads one 2-D map per image from

- a folder of ``.npy`` files, searched recursively: wsolevaluation's layout ``<dir>/<image_id>.npy`` (its
  ``np.save(<dir>/<image_id>, map)``, e.g. ``<dir>/val/ILSVRC2012_val_00000001.JPEG.npy``), or
  ``<dir>/<index>.npy``; a file's key is its path below the folder without ``.npy``;
- one ``.npz`` file, keyed by image path or by dataset index (``np.savez(f, **{"val/a.png": m})``,
  ``np.savez(f, **{"0": m})``, or ``np.savez(f, *maps)``: ``arr_<index>``).

Key rule (``key="auto"``): when every key is an integer (``12``, ``000012``, ``arr_12``) the keys are dataset
indices (the ``index`` of the batch); otherwise they are image paths. A path key matches the image whose file
path ends with it, in whole path components, with or without the image's extension: ``val/a1.png`` and
``val/a1`` both match ``<data.root>/val/a1.png``, so wsolevaluation's image ids (paths relative to the image
root) match, and so do paths relative to any folder above the image. ``key="index"`` / ``key="path"`` force a
rule (``path`` for images named by numbers); ``image_id`` is a synonym of ``path``.

Resolution (:func:`fit_map`): a map at the network input size is taken as is; any other map is resized to it,
``bicubic`` (default) as wsolevaluation's ``inference.py`` (``cv2.resize(..., INTER_CUBIC)`` on float64), or
``bilinear`` as camlab resizes its own CAMs (:func:`camlab.cam.upsample`). The whole map is stretched to the
whole input, as the eval transform stretches the image (and its boxes and masks): a map at the original image
resolution, at the CAM's feature resolution or at the input size lands on the same pixels. Random crops and
flips cannot be followed: :func:`check_dataset` refuses a split that uses them. The maps are then min-max
normalized by the metrics' caller (:meth:`camlab.wsol.ScoreMaps.normalize`, wsolevaluation's
``normalize_scoremap``), which leaves an already-normalized map unchanged.

Refused with one line naming the file (:class:`camlab.errors.DataError`): a missing map, a map that is not 2-D
(``(1, H, W)`` and ``(H, W, 1)`` are taken as ``(H, W)``), a non-numeric dtype, NaN or inf values, an
unreadable file. A constant map is scored as an all-zero map (no object), as wsolevaluation's normalize does;
such maps are counted and warned about once by :meth:`ExternalMaps.report`.
"""

from __future__ import annotations

import logging
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from camlab.errors import ConfigError, DataError

__all__ = ["KEYS", "RESIZE", "ExternalMaps", "check_dataset", "dataset_images", "fit_map", "map_shape"]

log = logging.getLogger("camlab.external")

KEYS = ("auto", "index", "path", "image_id")
RESIZE = ("bicubic", "bilinear")
_INDEX_KEY = re.compile(r"(?:arr_)?(\d+)")
_AMBIGUOUS = -1


@dataclass(frozen=True)
class _Entry:
    """Where one map lives: a file, or a member of an .npz; ``name`` is what messages show."""

    key: str
    file: Path
    member: str | None = None

    @property
    def name(self) -> str:
        return f"{self.file}:{self.member}" if self.member else str(self.file)


def map_shape(shape: Sequence[int], name: str) -> tuple[int, int]:
    """(H, W) of a map of array shape ``shape``: 2-D, or 2-D once axes of length 1 are dropped.

    >>> map_shape((1, 7, 9), "m.npy"), map_shape((7, 9, 1), "m.npy")
    ((7, 9), (7, 9))
    >>> map_shape((3, 7, 9), "m.npy")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    camlab.errors.DataError: map m.npy has shape (3, 7, 9): a map must be 2-D (H, W) ...
    """
    dims = [int(d) for d in shape]
    while len(dims) > 2 and dims[0] == 1:
        dims.pop(0)
    while len(dims) > 2 and dims[-1] == 1:
        dims.pop()
    if len(dims) != 2:
        raise DataError(f"map {name} has shape {tuple(int(d) for d in shape)}: a map must be 2-D (H, W) ((1, H, W) "
                        f"and (H, W, 1) are taken as (H, W)); save one map per image (e.g. the target class's)")
    if min(dims) < 1:
        raise DataError(f"map {name} is empty (shape {tuple(int(d) for d in shape)})")
    return dims[0], dims[1]


def _check_dtype(dtype: np.dtype, name: str) -> None:
    if dtype.hasobject or not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)
                               or dtype == np.bool_):
        raise DataError(f"map {name} has dtype {dtype}: a map holds real numbers (float, int or bool); re-save it as "
                        f"float32 or float64")


def fit_map(m: np.ndarray, size: tuple[int, int], resize: str = "bicubic") -> np.ndarray:
    """One 2-D finite map -> (H, W) at ``size``: as is at that size, else resized (see the module docstring).

    A constant map becomes zeros (checked before resizing: interpolation would turn it into rounding noise,
    which min-max normalization would then blow up to [0, 1]). float64 maps stay float64, as do bicubic
    results (computed in float64, as wsolevaluation casts its CAMs); other maps become float32.

    >>> fit_map(np.array([[0.0, 1.0]], np.float32), (1, 4), "bilinear").tolist()
    [[0.0, 0.25, 0.75, 1.0]]
    >>> fit_map(np.full((3, 3), 0.5), (4, 4)).max()
    np.float64(0.0)
    """
    if resize not in RESIZE:
        raise ConfigError(f"maps_resize must be one of {', '.join(RESIZE)}, got {resize!r}")
    H, W = int(size[0]), int(size[1])
    wide = m.dtype == np.float64 or (np.issubdtype(m.dtype, np.integer) and m.dtype.itemsize >= 4)
    m = m.astype(np.float64 if wide else np.float32, copy=False)
    if not m.max() > m.min():
        return np.zeros((H, W), m.dtype)
    if m.shape == (H, W):
        return m
    if resize == "bicubic":
        import cv2

        return cv2.resize(m.astype(np.float64), (W, H), interpolation=cv2.INTER_CUBIC)  # cv2 takes (width, height)
    t = torch.from_numpy(np.ascontiguousarray(m))[None, None]  # (1, 1, h, w), in the map's dtype
    return torch.nn.functional.interpolate(t, size=(H, W), mode="bilinear", align_corners=False)[0, 0].numpy()


def dataset_images(dataset: Any) -> tuple[list[int], list[str] | None]:
    """(the sample ``index`` values of ``dataset``, the image file path of each or None when it has no files).

    A :class:`torch.utils.data.Subset` (``num_val=...``) yields its base dataset's indices.
    """
    base, indices = dataset, list(range(len(dataset)))
    while isinstance(base, torch.utils.data.Subset):
        indices = [int(base.indices[i]) for i in indices]
        base = base.dataset
    records = getattr(base, "records", None)
    if records is None:
        return indices, None
    return indices, [str(records[i].path) for i in indices]


def check_dataset(dataset: Any, split: str) -> None:
    """Refuse a split whose images go through random crops or flips: a saved map cannot follow them."""
    base = dataset
    while isinstance(base, torch.utils.data.Subset):
        base = base.dataset
    random = bool(getattr(base, "train", False)) or bool(getattr(getattr(base, "transform", None), "train", False))
    if not random and hasattr(base, "images") and getattr(base, "hflip", False):
        random = True  # the rendered datasets (synthetic, canvas) flip in __getitem__
    if random:
        raise ConfigError(f"the {split} split's images go through random crops/flips (train_augment or hflip on), "
                          f"which saved maps cannot follow: evaluate with the deterministic eval transform "
                          f"(data.{split}_dataset.train_augment=false / hflip=false)")


def _suffixes(path: str) -> list[str]:
    """Every trailing run of whole components of ``path``, with and without the file's extension."""
    parts = [p for p in PurePath(path).parts if p not in ("/", "\\") and not p.endswith((":\\", ":/"))]
    stem = PurePath(parts[-1]).stem if parts else ""
    out = []
    for n in range(1, len(parts) + 1):
        head = parts[len(parts) - n:-1]
        out.append("/".join([*head, parts[-1]]))
        if stem and stem != parts[-1]:
            out.append("/".join([*head, stem]))
    return out


def _normal_key(key: str) -> str:
    key = key.replace("\\", "/")
    while key.startswith("./"):
        key = key[2:]
    return key.strip("/")


class ExternalMaps:
    """Maps from files, served per batch: ``for_batch(index, (H, W))`` -> (B, H, W) raw maps.

    Args:
        source: a folder of ``.npy`` files or an ``.npz`` file (see the module docstring).
        indices: the dataset's sample indices (the batch's ``index`` values) to serve.
        paths: each index's image file path (None: the dataset has no files; only index keys then).
        key: ``auto`` | ``index`` | ``path`` (``image_id`` = ``path``): how keys name images.
        resize: ``bicubic`` | ``bilinear``: how maps not at the input size are resized.
        split, root: for messages only (the split's name; the folder image paths are shown relative to).

    Every index must have a map (else a :class:`DataError` naming the first missing image and the count); every
    matched map's header (shape, dtype) is read here, its values when served. Maps matching no image are
    ignored (logged). :attr:`constant` counts the constant maps served, ``first_constant`` names the first.
    """

    def __init__(self, source: str | os.PathLike, indices: Sequence[int], paths: Sequence[str] | None = None,
                 key: str = "auto", resize: str = "bicubic", split: str = "eval",
                 root: str | os.PathLike | None = None) -> None:
        if key not in KEYS:
            raise ConfigError(f"maps_key must be one of {', '.join(KEYS)}, got {key!r}")
        if resize not in RESIZE:
            raise ConfigError(f"maps_resize must be one of {', '.join(RESIZE)}, got {resize!r}")
        self.source, self.resize, self.split = Path(source), resize, split
        self._root = Path(root) if root else None
        self._zip: zipfile.ZipFile | None = None
        entries = self._list()
        if not entries:
            raise DataError(f"maps='{self.source}' holds no maps (no .npy file{' member' if self._zip else ''})")
        self.key = self._key_kind(key, entries, paths)
        self._by_index = self._match(entries, list(indices), paths)
        for entry in dict.fromkeys(self._by_index.values()):
            self._check_header(entry)
        self._constant: set[int] = set()
        self.first_constant: str | None = None
        self._cache: tuple[tuple, Tensor] | None = None

    @classmethod
    def for_dataset(cls, source: str | os.PathLike, dataset: Any, key: str = "auto", resize: str = "bicubic",
                    split: str = "eval", root: str | os.PathLike | None = None) -> "ExternalMaps":
        """The maps of every image of ``dataset`` (refused for a split with random crops / flips)."""
        check_dataset(dataset, split)
        indices, paths = dataset_images(dataset)
        return cls(source, indices, paths, key=key, resize=resize, split=split, root=root)

    # ---- listing and matching --------------------------------------------------------------------------
    def _list(self) -> list[_Entry]:
        src = self.source
        if not src.exists():
            raise DataError(f"maps='{src}' does not exist: pass a folder of .npy maps (<dir>/<image_id>.npy or "
                            f"<dir>/<index>.npy) or an .npz file")
        if src.is_dir():
            out = []
            for folder, _, files in os.walk(src, followlinks=True):
                for f in files:
                    if f.endswith(".npy"):
                        p = Path(folder) / f
                        out.append(_Entry(_normal_key(p.relative_to(src).as_posix()[:-4]), p))
            return sorted(out, key=lambda e: e.key)
        if src.suffix == ".npy":
            raise DataError(f"maps='{src}' is one .npy file: pass the folder of one .npy per image, or an .npz file "
                            f"with one array per image")
        try:
            self._zip = zipfile.ZipFile(src)
            names = self._zip.namelist()
        except (OSError, zipfile.BadZipFile, ValueError) as err:
            raise DataError(f"cannot read maps='{src}' as an .npz file ({err}): pass a folder of .npy maps or an "
                            f".npz written by numpy.savez") from None
        return [_Entry(_normal_key(n[:-4] if n.endswith(".npy") else n), src, n) for n in names if not n.endswith("/")]

    def _key_kind(self, key: str, entries: list[_Entry], paths: Sequence[str] | None) -> str:
        if key == "auto":
            key = "index" if all(_INDEX_KEY.fullmatch(e.key) for e in entries) else "path"
        key = "path" if key == "image_id" else key
        if key == "path" and paths is None:
            raise DataError(f"the maps in {self.source} are keyed by image path (e.g. '{entries[0].key}'), but the "
                            f"{self.split} dataset has no image files (a generated dataset): key them by dataset "
                            f"index (<dir>/<index>.npy, or .npz keys '0', '1', ...)")
        return key

    def _image_name(self, path: str) -> str:
        if self._root is not None:
            try:
                return Path(path).relative_to(self._root).as_posix()
            except ValueError:
                pass
        return path

    def _match(self, entries: list[_Entry], indices: list[int], paths: Sequence[str] | None) -> dict[int, _Entry]:
        """index -> its map; every index must have exactly one."""
        found: dict[int, _Entry] = {}
        unmatched: list[_Entry] = []
        ambiguous: list[_Entry] = []
        if self.key == "index":
            wanted = set(indices)
            for e in entries:
                m = _INDEX_KEY.fullmatch(e.key)
                i = int(m.group(1)) if m else None
                if i is None or i not in wanted:
                    unmatched.append(e)
                    continue
                if i in found:
                    raise DataError(f"two maps for dataset index {i}: {found[i].name} and {e.name}; remove one")
                found[i] = e
        else:
            lookup: dict[str, int] = {}
            for i, p in zip(indices, paths):
                for s in dict.fromkeys(_suffixes(p)):
                    lookup[s] = _AMBIGUOUS if lookup.get(s, i) != i else i
            for e in entries:
                i = lookup.get(e.key)
                if i is None:
                    unmatched.append(e)
                elif i == _AMBIGUOUS:
                    ambiguous.append(e)
                elif i in found:
                    raise DataError(f"two maps for image {self._image_name(paths[indices.index(i)])}: {found[i].name} "
                                    f"and {e.name}; remove one")
                else:
                    found[i] = e
        missing = [j for j, i in enumerate(indices) if i not in found]
        if missing:
            raise DataError(self._missing_message(entries, indices, paths, missing, found, unmatched, ambiguous))
        if unmatched or ambiguous:
            extra = unmatched + ambiguous
            log.info("maps: %d map(s) in %s match no image of the %s split and are ignored (e.g. %r)",
                     len(extra), self.source, self.split, extra[0].key)
        return found

    def _expected(self, index: int, path: str | None) -> str:
        key = str(index) if self.key == "index" else self._image_name(path)
        return f"key '{key}' in {self.source}" if self._zip else f"{self.source / key}.npy"

    def _missing_message(self, entries, indices, paths, missing, found, unmatched, ambiguous) -> str:
        n, j = len(indices), missing[0]
        rule = ("dataset indices" if self.key == "index"
                else "image paths (a key matches the image whose path ends with it, extension optional)")
        hint = (f"; the key '{ambiguous[0].key}' ends the paths of several images: use a longer path"
                if ambiguous else "")
        if found:
            first = str(indices[j]) if self.key == "index" else self._image_name(paths[j])
            what = "index" if self.key == "index" else "image"
            return (f"{len(missing)} of the {n} {self.split} images have no map in {self.source} ({len(found)} "
                    f"matched, keys read as {rule}); first missing: {what} {first} (looked for "
                    f"{self._expected(indices[j], paths[j] if paths else None)}){hint}")
        if self.key == "index":
            theirs = f"images have indices {min(indices)}..{max(indices)}"
        else:
            theirs = f"images e.g. '{self._image_name(paths[0])}'"
        stacked = ""
        if len(entries) <= 4:
            shapes = [self._header(e)[0] for e in entries]
            if any(len(s) == 3 and s[0] == n for s in shapes):
                stacked = "; a stacked (N, H, W) array is not read: save one array per image"
        return (f"none of the {len(entries)} maps in {self.source} matches an image of the {self.split} split ({n} "
                f"images; keys read as {rule}): maps e.g. '{entries[0].key}', {theirs}. Are the maps of another split "
                f"or dataset? Key them by image path (as wsolevaluation's image ids) or by dataset index, or force "
                f"the rule with maps_key=index|path{stacked}{hint}")

    # ---- reading -----------------------------------------------------------------------------------------
    def _open(self, entry: _Entry):
        return self._zip.open(entry.member) if entry.member else open(entry.file, "rb")

    def _header(self, entry: _Entry) -> tuple[tuple[int, ...], np.dtype]:
        try:
            with self._open(entry) as f:
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = read(f)
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
            raise DataError(f"cannot read map {entry.name}: not a .npy array ({err}); re-save it with numpy.save "
                            f"(or numpy.savez for an .npz)") from None
        return tuple(shape), dtype

    def _check_header(self, entry: _Entry) -> None:
        shape, dtype = self._header(entry)
        _check_dtype(dtype, entry.name)
        map_shape(shape, entry.name)

    def read(self, index: int) -> np.ndarray:
        """The 2-D map of dataset index ``index``, as stored (checked: 2-D, numeric, finite)."""
        entry = self._by_index.get(int(index))
        if entry is None:
            raise DataError(f"no map for dataset index {index} in {self.source} (it is not an image of the "
                            f"{self.split} split the maps were matched to)")
        try:
            with self._open(entry) as f:
                m = np.lib.format.read_array(f, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise DataError(f"cannot read map {entry.name} ({err}); re-save it with numpy.save") from None
        _check_dtype(m.dtype, entry.name)
        m = m.reshape(map_shape(m.shape, entry.name))
        if m.dtype.kind == "f" and not np.isfinite(m).all():
            bad = "NaN" if np.isnan(m).any() else "inf"
            raise DataError(f"map {entry.name} has {bad} values: fix the tool that wrote it (wsolevaluation would "
                            f"score a NaN map as empty, camlab refuses it rather than hide the bug)")
        return m

    def for_batch(self, index: Tensor, size: tuple[int, int]) -> Tensor:
        """(B, H, W) raw maps of the batch's dataset indices at ``size`` (float32; float64 where a map is float64
        or was resized bicubic), not normalized: the caller min-max normalizes them as it does its own CAMs."""
        idx = tuple(int(i) for i in torch.as_tensor(index).reshape(-1).tolist())
        key = (idx, (int(size[0]), int(size[1])))
        if self._cache is not None and self._cache[0] == key:  # the same batch again (PerImageWriter with save_cams)
            return self._cache[1]
        maps = []
        for i in idx:
            m = self.read(i)
            if not m.max() > m.min() and i not in self._constant:  # a set: DDP padding repeats images
                self._constant.add(i)
                self.first_constant = self.first_constant or self._by_index[i].name
            maps.append(fit_map(m, key[1], self.resize))
        dtype = np.float64 if any(m.dtype == np.float64 for m in maps) else np.float32
        out = torch.from_numpy(np.stack([m.astype(dtype, copy=False) for m in maps])) if maps else (
            torch.zeros((0, *key[1])))
        self._cache = (key, out)
        return out

    def report(self) -> dict[str, Any]:
        """What was read (for ``metrics.json``); warns once about the constant maps."""
        if self.constant:
            log.warning("maps: %d constant map(s) (first: %s) scored as all-zero maps (no object), as wsolevaluation's "
                        "normalize_scoremap does", self.constant, self.first_constant)
        return {"source": str(self.source), "key": self.key, "resize": self.resize, "num_maps": len(self._by_index),
                "constant_maps": self.constant}

    @property
    def constant(self) -> int:
        """How many distinct images' maps served so far were constant."""
        return len(self._constant)

    def describe(self) -> str:
        """One line for ``metrics.json``'s ``source``: the path, key rule and resize mode."""
        return f"maps {self.source} (keys: {self.key}, resize: {self.resize})"

    def close(self) -> None:
        """Close the .npz file (a folder holds no open file)."""
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    def __len__(self) -> int:
        return len(self._by_index)
