"""Seeded WSOL evaluation inputs of many kinds: score maps, GT boxes and GT masks, for benchmarks and cross-checks.

    from map_kinds import KINDS, make_kind, make_mix   # run from benchmarks/ (or with it on sys.path)
    data = make_kind("rings", n=32, size=224, dtype=np.float32, seed=0)
    data.maps (n, H, W) float32 in [0, 1], data.boxes (n, 3, 4) float32 xyxy, data.num_boxes (n,) int64 in 1..3,
    data.masks (n, H, W) uint8 (0 background, 1 object, 255 ignore), data.kinds (n,) the kind of each image

Map kinds (each meant to look like something users meet; sizes scale with ``size``, so 64 px and 224 px maps of a
kind look alike):

* ``blobs``: smooth CAM-like maps: 1-3 Gaussians plus 5 % noise on a 7, 14 or 28 px grid (a CNN's last conv
  block), some ReLU-clipped (flat zero areas), upsampled bicubic with OpenCV in the map's dtype (bicubic overshoot
  included) and min-max normalized; the first GT box is around one of the Gaussians.
* ``components``: 10-60 small far-apart Gaussian blobs (0.8-3.5 px at 224 px) on an exactly zero background: many
  components per threshold, each a few pixels wide (multi-instance or spotty CAMs).
* ``noise``: rough maps with hundreds to thousands of components per threshold, in turn (image ``i`` gets
  ``NOISE_VARIANTS[i % 4]``): pixel-attribution-like maps (abs of Gaussian noise blurred 0.5-1.2 px, under a
  smooth envelope; 2 in 4; ~100-400 contours per threshold at 224 px), upsampled low-resolution noise (a 1/4-1/8
  resolution grid, bilinear; 1 in 4) and uniform i.i.d. noise (1 in 4, the 4th; ~3,700 contours per threshold at
  224 px, where wsoleval needs 1.5-3 s per map).
* ``rings``: 1-3 annuli (1.5 px wide and up), modulated along the angle so that high thresholds cut them into arcs,
  sometimes with a weaker blob inside: holes at many thresholds, and components inside holes.
* ``lines``: one-pixel-wide lines, straight and diagonal (8- and 4-connected, some anti-aliased), and closed
  one-pixel outlines (holes enclosed by diagonal pixels), with intensities varying along each line.
* ``ties``: few distinct values exactly on the threshold grid ``k / 100`` and on the uint8 steps ``k / 255`` (in the
  map's dtype), as nested plateaus of a quantized blob map or as a blocky layout; and maps saved as 8-bit images and
  read back (``round(255 m) / 255``): every pixel on a uint8 step.
* ``border``: mass touching the image border: blobs centred on or outside an edge or a corner, ramps whose
  maximum is a whole edge, bright bands along an edge; GT boxes reach the border (right / bottom side up to
  ``size``, which ``int()`` keeps as ``size``, one past the last pixel).
* ``rectangles``: axis-aligned plateaus (1-6 rectangles, stacked or maxed, some box-blurred into ramps).
* ``special``: in turn (``SPECIAL_CASES[i % 9]``): constant maps (raw, not normalized: any value in (0, 1], and
  1), all zeros, a single hot pixel (on zeros, or on a background below one uint8 step), maps whose maximum is
  tiny (below 3/255: uint8 maps of 0-2), all ones but one zero pixel, two hot pixels, an almost constant map (one
  uint8 step below 1 but on a box). Every other kind is
  min-max normalized (``camlab.cam.minmax_normalize`` in the map's dtype, as camlab's pipeline and wsoleval's
  ``normalize_scoremap`` do: a constant map becomes all zeros).

``make_mix`` makes every kind in equal shares, shuffled. The maps of the same ``seed``, ``kind`` and ``size`` in
float32 and float64 differ only by the dtype of the arithmetic (the random draws are the same).

GT: 1-3 boxes per image as float32 ``xyxy`` with fractional parts (``int()`` truncation, wsoleval's ``resize_bbox``
convention, gives the integer inclusive box), the first around one object of the map, each side moved by up to
4 % of the size (IoUs spread around 0.3-0.7), the others around other objects of the map or random. The mask is the
objects' shapes inside the GT boxes (ellipses, or the rectangles), with ignore pixels (255): an ignore box minus the
objects (as OpenImages' ignore regions) or a band along the top.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import torch

from camlab.cam import minmax_normalize

KINDS = ("blobs", "components", "noise", "rings", "lines", "ties", "border", "rectangles", "special")
MAX_BOXES = 3


@dataclasses.dataclass
class MapSet:
    maps: np.ndarray  # (n, H, W) float32 or float64 in [0, 1]
    boxes: np.ndarray  # (n, MAX_BOXES, 4) float32 xyxy, rows past num_boxes are zeros
    num_boxes: np.ndarray  # (n,) int64 in 1..MAX_BOXES
    masks: np.ndarray  # (n, H, W) uint8: 0, 1, 255 (ignore)
    kinds: np.ndarray  # (n,) kind of each image

    def __len__(self) -> int:
        return self.maps.shape[0]

    def subset(self, idx) -> "MapSet":
        return MapSet(self.maps[idx], self.boxes[idx], self.num_boxes[idx], self.masks[idx], self.kinds[idx])

    @staticmethod
    def concat(sets) -> "MapSet":
        return MapSet(*(np.concatenate([getattr(s, f.name) for s in sets]) for f in dataclasses.fields(MapSet)))


# An object of a map: its box (x0, y0, x1, y1) in continuous pixel coordinates (pixel i spans [i, i + 1)) and its
# shape in the GT mask ("ellipse" inscribed in the box or "rect").
Obj = tuple[tuple[float, float, float, float], str]


def _normalize(raw: np.ndarray, dtype) -> np.ndarray:
    """Min-max normalization in ``dtype`` (camlab.cam.minmax_normalize: constant maps become zeros)."""
    return minmax_normalize(torch.from_numpy(np.ascontiguousarray(raw, dtype=dtype))[None])[0].numpy()


def _gauss(size: int, cy: float, cx: float, sy: float, sx: float | None = None) -> np.ndarray:
    sx = sy if sx is None else sx
    y = np.arange(size) + 0.5
    return np.exp(-((y - cy) ** 2) / (2 * sy * sy))[:, None] * np.exp(-((y - cx) ** 2) / (2 * sx * sx))[None, :]


def _ellipse_obj(cx, cy, rx, ry) -> Obj:
    return (cx - rx, cy - ry, cx + rx, cy + ry), "ellipse"


def _blobs(rng, size, dtype, i=0):
    r = int(rng.choice([7, 14, 28]))
    r = min(r, size)
    yy, xx = np.mgrid[0:r, 0:r] + 0.5
    low = np.zeros((r, r))
    objs = []
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = rng.uniform(0.5, r - 0.5, 2)
        sig = rng.uniform(0.06, 0.25) * r
        low += rng.uniform(0.3, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sig * sig))
        f = size / r
        objs.append(_ellipse_obj(cx * f, cy * f, *(rng.uniform(1.2, 2.2, 2) * sig * f)))
    low += 0.05 * rng.random((r, r))
    if rng.random() < 0.4:  # a ReLU'd CAM: flat zero areas, bicubic ringing around them
        low = np.maximum(low - rng.uniform(0.1, 0.5) * low.max(), 0.0)
    m = cv2.resize(low.astype(dtype), (size, size), interpolation=cv2.INTER_CUBIC)
    return _normalize(m, dtype), objs


def _components(rng, size, dtype, i=0):
    s = size / 224
    k = int(rng.integers(10, 61))
    sigmas = np.maximum(rng.uniform(0.8, 3.5, 2) * s, 0.6)
    centers: list[np.ndarray] = []
    mind = 6 * sigmas.max() + 2
    for _ in range(20 * k):
        if len(centers) == k:
            break
        c = rng.uniform(1, size - 1, 2)
        if all(np.hypot(*(c - d)) >= mind for d in centers):
            centers.append(c)
    imp = np.zeros((2, size, size))  # impulses, one image per blob size
    objs = []
    for j, (cy, cx) in enumerate(centers):
        imp[j % 2, int(cy), int(cx)] = rng.uniform(0.3, 1.0)
        objs.append(_ellipse_obj(int(cx) + 0.5, int(cy) + 0.5, 2.5 * sigmas[j % 2], 2.5 * sigmas[j % 2]))
    m = cv2.GaussianBlur(imp[0], (0, 0), sigmas[0]) + cv2.GaussianBlur(imp[1], (0, 0), sigmas[1])
    m[m < 1e-6 * m.max()] = 0.0  # the blur's far tails: an exactly zero background
    rng.shuffle(objs)
    return _normalize(m, dtype), objs


NOISE_VARIANTS = ("attribution", "low-res", "attribution", "uniform")  # image i gets variant i % 4


def _noise(rng, size, dtype, i=0):
    variant = NOISE_VARIANTS[i % len(NOISE_VARIANTS)]
    if variant == "uniform":  # uniform i.i.d.
        m = rng.random((size, size))
    elif variant == "attribution":  # pixel attribution (gradient-like): rough, correlated over ~1 px, an envelope
        g = np.abs(rng.standard_normal((size, size)))
        g = cv2.GaussianBlur(g, (0, 0), rng.uniform(0.5, 1.2))
        cy, cx = rng.uniform(0.2, 0.8, 2) * size
        env = 0.2 + _gauss(size, cy, cx, rng.uniform(0.15, 0.4) * size)
        m = g * env
    else:  # low-resolution noise upsampled
        r = max(4, size // int(rng.choice([4, 8])))
        m = cv2.resize(rng.random((r, r)), (size, size), interpolation=cv2.INTER_LINEAR)
    objs = [_ellipse_obj(*rng.uniform(0.25, 0.75, 2) * size, *rng.uniform(0.1, 0.3, 2) * size)]
    return _normalize(m.astype(dtype), dtype), objs


def _rings(rng, size, dtype, i=0):
    y = np.arange(size) + 0.5
    m = np.zeros((size, size))
    objs = []
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = rng.uniform(0.2, 0.8, 2) * size
        r0 = rng.uniform(0.08, 0.35) * size
        w = max(1.5 * size / 224, rng.uniform(0.01, 0.05) * size)
        rr = np.hypot(y[:, None] - cy, y[None, :] - cx)
        th = np.arctan2(y[:, None] - cy, y[None, :] - cx)
        mod = 1 + rng.uniform(0.1, 0.4) * np.cos(int(rng.integers(1, 7)) * th + rng.uniform(0, 2 * np.pi))
        m = np.maximum(m, rng.uniform(0.5, 1.0) * mod * np.exp(-((rr - r0) ** 2) / (2 * w * w)))
        if rng.random() < 0.4:  # a weaker blob in the hole
            m = np.maximum(m, rng.uniform(0.2, 0.6) * np.exp(-(rr ** 2) / (2 * (0.3 * r0) ** 2)))
        objs.append(_ellipse_obj(cx, cy, r0 + 2 * w, r0 + 2 * w))
    return _normalize(m.astype(dtype), dtype), objs


def _lines(rng, size, dtype, i=0):
    m = np.zeros((size, size))
    objs = []
    r = 7
    field = cv2.resize(rng.uniform(0.2, 1.0, (r, r)), (size, size), interpolation=cv2.INTER_LINEAR)
    for _ in range(int(rng.integers(3, 13))):
        canvas = np.zeros((size, size), np.uint8)
        kind = rng.random()
        line_type = cv2.LINE_8 if rng.random() < 0.6 else (cv2.LINE_4 if rng.random() < 0.5 else cv2.LINE_AA)
        p = rng.integers(0, size, (4, 2))
        if kind < 0.35:  # horizontal or vertical
            if rng.random() < 0.5:
                p[1, 1] = p[0, 1]
            else:
                p[1, 0] = p[0, 0]
            cv2.line(canvas, tuple(map(int, p[0])), tuple(map(int, p[1])), 255, 1, line_type)
            pts = p[:2]
        elif kind < 0.75:  # diagonal, any angle
            cv2.line(canvas, tuple(map(int, p[0])), tuple(map(int, p[1])), 255, 1, line_type)
            pts = p[:2]
        else:  # a closed outline: triangle or quadrilateral, holes enclosed by one-pixel (diagonal) walls
            pts = p[: int(rng.integers(3, 5))]
            cv2.polylines(canvas, [pts.reshape(-1, 1, 2).astype(np.int32)], True, 255, 1, line_type)
        m = np.maximum(m, canvas / 255.0 * field * rng.uniform(0.3, 1.0))
        x0, y0 = pts.min(0)
        x1, y1 = pts.max(0) + 1
        objs.append(((float(x0), float(y0), float(x1), float(y1)), "rect" if kind < 0.35 else "ellipse"))
    return _normalize(m.astype(dtype), dtype), objs


def _tie_values(rng, dtype, k: int) -> np.ndarray:
    """k distinct values among k/100 and k/255 computed in dtype, always with 0 and 1."""
    d = np.dtype(dtype).type
    grid = np.arange(1, 100, dtype=dtype) / d(100)
    steps = np.arange(1, 255, dtype=dtype) / d(255)
    pool = np.unique(np.concatenate([grid, steps]))
    vals = rng.choice(pool, size=min(k - 2, len(pool)), replace=False)
    return np.unique(np.concatenate([vals, np.array([0, 1], dtype=dtype)]))


def _ties(rng, size, dtype, i=0):
    blob, objs = _blobs(rng, size, np.float64)
    v = rng.random()
    if v < 0.4:  # nested plateaus: the blob map quantized to 3-8 tie values (equal areas between levels)
        vals = _tie_values(rng, dtype, int(rng.integers(3, 9)))
        q = np.quantile(blob, np.linspace(0, 1, len(vals) + 1)[1:-1])
        m = vals[np.searchsorted(q, blob, side="right")]
    elif v < 0.7:  # blocky: a random 4-16 px grid of tie values, nearest-upsampled
        vals = _tie_values(rng, dtype, int(rng.integers(3, 9)))
        r = int(rng.integers(4, 17))
        low = rng.choice(vals, (r, r))
        low.flat[rng.integers(0, r * r)] = 1  # the max is present
        m = cv2.resize(low, (size, size), interpolation=cv2.INTER_NEAREST)
        objs = [_ellipse_obj(*rng.uniform(0.25, 0.75, 2) * size, *rng.uniform(0.1, 0.3, 2) * size)]
    else:  # saved as an 8-bit image and read back: every value on a uint8 step
        d = np.dtype(dtype).type
        m = np.round(blob * 255).astype(dtype) / d(255)
    m = np.ascontiguousarray(m, dtype=dtype)
    m.flat[int(np.argmin(m))] = 0  # min 0, max 1: normalization leaves the values as they are
    m.flat[int(np.argmax(m))] = 1
    return _normalize(m, dtype), objs


def _border(rng, size, dtype, i=0):
    y = np.arange(size) + 0.5
    v = rng.random()
    if v < 0.6:  # blobs centred on or outside an edge or a corner
        m = np.zeros((size, size))
        objs = []
        for _ in range(int(rng.integers(1, 3))):
            c = rng.uniform(0, 1, 2)
            side = int(rng.integers(0, 2))
            c[side] = rng.choice([rng.uniform(-0.15, 0.05), rng.uniform(0.95, 1.15)])
            if rng.random() < 0.3:  # corner
                c[1 - side] = rng.choice([rng.uniform(-0.1, 0.05), rng.uniform(0.95, 1.1)])
            cy, cx = c * size
            sy, sx = rng.uniform(0.06, 0.3, 2) * size
            m += rng.uniform(0.5, 1.0) * _gauss(size, cy, cx, sy, sx)
            objs.append(_ellipse_obj(cx, cy, 2 * sx, 2 * sy))
        m += 0.03 * cv2.resize(rng.random((7, 7)), (size, size), interpolation=cv2.INTER_CUBIC)
    elif v < 0.85:  # a ramp: the maximum is a whole edge
        t = (y / size) ** rng.uniform(0.5, 3)
        t = t if rng.random() < 0.5 else t[::-1]
        m = np.repeat(t[None, :], size, 0) if rng.random() < 0.5 else np.repeat(t[:, None], size, 1)
        m = m * (1 + 0.1 * cv2.resize(rng.random((7, 7)), (size, size), interpolation=cv2.INTER_LINEAR))
        objs = [((0.0, 0.0, float(size), float(size)), "rect")]
    else:  # a bright band along one edge
        m = 0.1 * cv2.resize(rng.random((7, 7)), (size, size), interpolation=cv2.INTER_LINEAR)
        k = int(rng.integers(1, max(2, size // 8)))
        edge = int(rng.integers(0, 4))
        sl = [slice(0, k), slice(size - k, size)][edge % 2]
        if edge < 2:
            m[sl, :] += 1
            objs = [((0.0, float(sl.start), float(size), float(sl.stop)), "rect")]
        else:
            m[:, sl] += 1
            objs = [((float(sl.start), 0.0, float(sl.stop), float(size)), "rect")]
    return _normalize(m.astype(dtype), dtype), objs


def _rectangles(rng, size, dtype, i=0):
    m = np.full((size, size), rng.choice([0.0, rng.uniform(0, 0.2)]))
    objs = []
    stack = rng.random() < 0.5
    for _ in range(int(rng.integers(1, 7))):
        x0, y0 = rng.integers(0, size - 1, 2)
        x1 = int(rng.integers(x0 + 1, min(size, x0 + size // 2) + 1))
        y1 = int(rng.integers(y0 + 1, min(size, y0 + size // 2) + 1))
        val = rng.uniform(0.2, 1.0)
        if stack:
            m[y0:y1, x0:x1] += val
        else:
            m[y0:y1, x0:x1] = np.maximum(m[y0:y1, x0:x1], val)
        objs.append(((float(x0), float(y0), float(x1), float(y1)), "rect"))
    if rng.random() < 0.25:
        k = int(rng.integers(3, 10))
        m = cv2.blur(m, (k, k))
    return _normalize(m.astype(dtype), dtype), objs


SPECIAL_CASES = ("zeros", "constant", "ones", "hot-pixel", "hot-pixel-dim-bg", "tiny-max", "ones-but-one",
                 "two-hot-pixels", "almost-constant")


def _special(rng, size, dtype, i=0):
    case = SPECIAL_CASES[i % len(SPECIAL_CASES)]
    d = np.dtype(dtype).type
    m = np.zeros((size, size), dtype)
    hot = tuple(int(v) for v in (rng.integers(0, size, 2) if rng.random() < 0.7
                                 else rng.choice([0, size - 1], 2)))  # sometimes a corner
    if case == "constant":
        m[:] = d(rng.uniform(0.01, 1.0))
    elif case == "ones":
        m[:] = 1
    elif case == "hot-pixel":
        m[hot] = 1
    elif case == "hot-pixel-dim-bg":  # a background below one uint8 step: u8 map 0 but the hot pixel
        m[:] = (rng.random((size, size)) * 0.9 / 255).astype(dtype)
        m[hot] = 1
    elif case == "tiny-max":  # raw small map: max below 3/255
        blob, _ = _blobs(rng, size, np.float64)
        m[:] = (blob * rng.uniform(0.2, 3.0) / 255).astype(dtype)
    elif case == "ones-but-one":
        m[:] = 1
        m[hot] = 0
    elif case == "two-hot-pixels":
        m[hot] = 1
        m[tuple(int(v) for v in rng.integers(0, size, 2))] = d(0.5)
    elif case == "almost-constant":  # raw: 1 on a box, one uint8 step below elsewhere
        m[:] = d(254.5 / 255)
        x0, y0 = rng.integers(0, size - 1, 2)
        m[y0: y0 + size // 3, x0: x0 + size // 3] = 1
    elif case != "zeros":
        raise ValueError(case)
    objs = [_ellipse_obj(*rng.uniform(0.2, 0.8, 2) * size, *rng.uniform(0.05, 0.3, 2) * size)]
    return m, objs


GENERATORS = {"blobs": _blobs, "components": _components, "noise": _noise, "rings": _rings, "lines": _lines,
              "ties": _ties, "border": _border, "rectangles": _rectangles, "special": _special}


def _jitter_box(rng, box, size) -> list[float]:
    x0, y0, x1, y1 = box
    j = rng.uniform(-0.04, 0.04, 4) * size
    x0, x1 = sorted((x0 + j[0], x1 + j[2]))
    y0, y1 = sorted((y0 + j[1], y1 + j[3]))
    b = np.clip([x0, y0, x1, y1], 0.0, float(size))
    if rng.random() < 0.15:  # integer-valued sides, as many datasets' annotations
        b = np.round(b)
    return b.tolist()


def _targets(rng, objs: list[Obj], size: int):
    """(3, 4) float32 boxes, the count, and the (size, size) uint8 mask of one image."""
    n = int(rng.integers(1, MAX_BOXES + 1))
    boxes = np.zeros((MAX_BOXES, 4), np.float32)
    mask = np.zeros((size, size), np.uint8)
    for g in range(n):
        if g < len(objs):
            (box, shape) = objs[g]
            box = _jitter_box(rng, box, size)
        else:
            x0, y0 = rng.uniform(0, size * 0.8, 2)
            w, h = rng.uniform(0.05, 0.5, 2) * size
            box, shape = [x0, y0, min(size, x0 + w), min(size, y0 + h)], "ellipse"
        boxes[g] = box
        x0, y0, x1, y1 = (int(v) for v in boxes[g])  # the inclusive integer box both evaluators see
        x1, y1 = min(x1, size - 1), min(y1, size - 1)
        if shape == "rect":
            mask[y0: y1 + 1, x0: x1 + 1] = 1
        else:
            cv2.ellipse(mask, (((x0 + x1 + 1) / 2, (y0 + y1 + 1) / 2), (x1 - x0 + 1, y1 - y0 + 1), 0), 1, -1)
    v = rng.random()
    if v < 0.5:  # an ignore box minus the objects (OpenImages)
        x0, y0 = rng.integers(0, size - 1, 2)
        w, h = rng.integers(1, size // 2 + 1, 2)
        region = np.zeros_like(mask, dtype=bool)
        region[y0: y0 + h, x0: x0 + w] = True
        mask[region & (mask == 0)] = 255
    elif v < 0.8:  # a band along the top
        band = mask[: int(rng.integers(1, 4))]
        band[band == 0] = 255
    return boxes, n, mask


def make_kind(kind: str, n: int, size: int = 224, dtype=np.float64, seed: int = 0) -> MapSet:
    """``n`` images of one kind (see the module docstring); same seed, kind and size -> same draws in any dtype."""
    if kind not in GENERATORS:
        raise ValueError(f"unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
    rng = np.random.default_rng([seed, KINDS.index(kind), size])
    maps = np.empty((n, size, size), dtype)
    boxes = np.zeros((n, MAX_BOXES, 4), np.float32)
    counts = np.zeros(n, np.int64)
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        m, objs = GENERATORS[kind](rng, size, dtype, i)
        assert m.dtype == dtype and m.min() >= 0 and m.max() <= 1, (kind, i)
        maps[i] = m
        boxes[i], counts[i], masks[i] = _targets(rng, objs, size)
    return MapSet(maps, boxes, counts, masks, np.full(n, kind))


def make_mix(n_per_kind: int, size: int = 224, dtype=np.float64, seed: int = 0, kinds=KINDS) -> MapSet:
    """Every kind in equal shares (``n_per_kind`` each), shuffled (seeded)."""
    data = MapSet.concat([make_kind(k, n_per_kind, size, dtype, seed) for k in kinds])
    order = np.random.default_rng([seed, 1000, size]).permutation(len(data))
    return data.subset(order)


if __name__ == "__main__":  # a quick look: value counts and contours per threshold of each kind
    import argparse

    ap = argparse.ArgumentParser(description="summary of each map kind")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    grid = np.arange(0, 1, 0.01)
    for kind in KINDS:
        d = make_kind(kind, args.n, args.size, np.float64)
        contours = []
        for m in d.maps:
            u8 = (m * 255).astype(np.uint8)
            for t in grid[::10]:
                _, b = cv2.threshold(u8, int(t * u8.max()), 255, cv2.THRESH_BINARY)
                contours.append(len(cv2.findContours(b, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]))
        vals = np.mean([len(np.unique(m)) for m in d.maps])
        ign = np.mean(d.masks == 255) * 100
        fg = np.mean(d.masks == 1) * 100
        print(f"{kind:10s} distinct values {vals:9.0f}  contours/threshold mean {np.mean(contours):7.1f} "
              f"max {np.max(contours):5d}  boxes {d.num_boxes.mean():.1f}  fg {fg:4.1f} %  ignore {ign:4.1f} %")
