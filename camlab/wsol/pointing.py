"""Localisation-evaluation metrics of a map against its boxes or mask, with no extra forward pass.

Per image, from the score map (in [0, 1]) and the GT boxes (inclusive integer boxes, :mod:`camlab.wsol.boxes`)
or the GT mask (1 object, 0 background, other values ignored):

* **pointing game** (Zhang et al. 2016): a hit when the map's maximum lies in a GT box, or within
  ``tolerance`` pixels of one (Euclidean distance from the pixel to the box; the paper uses 15 px at 224).
  Several maxima: the first in raster order (``argmax``). A map with no maximum above 0 (all zeros: a
  constant or NaN map after min-max normalization) is a miss;
* **energy-based pointing game** (Wang et al. 2020, Score-CAM): the share of the map's mass inside the union
  of the GT boxes; 0 for an all-zero map;
* **relevance mass accuracy** (Arras et al. 2022): the same share inside the GT mask, ignore pixels left out
  of both sums;
* **relevance rank accuracy** (Arras et al. 2022): with K the number of mask pixels, the share of the map's
  K highest pixels that lie in the mask (ignore pixels left out; ties broken by raster order, as a stable sort;
  the K-th highest value is found in O(N) by value buckets, not by sorting);
* **top-k intersection** (Theiner et al. 2021): the share of the map's k highest pixels in the mask (k clipped
  to the pixels that are not ignored; ties as above).

Mask metrics are NaN for an image without a mask or without any object pixel. Aggregates are means over the
images, in percent (:func:`pointing_from_rows`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from camlab.wsol.boxes import inclusive_gt
from camlab.wsol.scoremaps import ScoreMaps

__all__ = ["POINTING_NAMES", "pointing_from_rows", "pointing_rows"]

#: the per-image row columns, in order
POINTING_NAMES = ("pointing_game", "energy_pointing_game", "relevance_mass", "relevance_rank", "topk_intersection")


@njit(cache=True, nogil=True)
def _box_rows(maps, gt, n_gt, tolerance, out):
    # maps (B, H, W) float; gt (B, G, 4) inclusive; out (B, 2): pointing hit, energy share in the boxes' union
    B, H, W = maps.shape
    inside = np.zeros((H, W), np.bool_)
    for i in range(B):
        m = maps[i]
        best = -1.0
        by = 0
        bx = 0
        total = 0.0
        for y in range(H):
            for x in range(W):
                v = m[y, x]
                total += v
                if v > best:
                    best = v
                    by = y
                    bx = x
        inside[:, :] = False
        hit = False
        for g in range(n_gt[i]):
            x0 = max(gt[i, g, 0], 0)
            y0 = max(gt[i, g, 1], 0)
            x1 = min(gt[i, g, 2], W - 1)
            y1 = min(gt[i, g, 3], H - 1)
            if x0 <= x1 and y0 <= y1:
                inside[y0:y1 + 1, x0:x1 + 1] = True
            dx = max(gt[i, g, 0] - bx, 0, bx - gt[i, g, 2])
            dy = max(gt[i, g, 1] - by, 0, by - gt[i, g, 3])
            if dx * dx + dy * dy <= tolerance * tolerance:
                hit = True
        out[i, 0] = 1.0 if (hit and best > 0.0) else 0.0
        mass = 0.0
        for y in range(H):
            for x in range(W):
                if inside[y, x]:
                    mass += m[y, x]
        out[i, 1] = mass / total if total > 0.0 else 0.0


_BUCKETS = 4096  # value buckets of the selection: int(v * 4096) is non-decreasing in v, so buckets keep the order


@njit(cache=True, inline="always")
def _top_in(vals, objs, n, k, hist, members):
    # How many of the k highest of vals[:n] (values in [0, 1]; ties broken by position, as a stable descending
    # sort) have objs set. The k-th highest value is found in O(n): the bucket that holds it from the histogram
    # ``hist`` of the values' buckets, then an exact sort of that bucket's few values only.
    if k >= n:
        c = 0
        for p in range(n):
            c += objs[p]
        return c
    b = _BUCKETS - 1
    seen = 0
    while seen + hist[b] < k:
        seen += hist[b]
        b -= 1
    m = 0
    for p in range(n):
        if min(np.int64(vals[p] * _BUCKETS), _BUCKETS - 1) == b:
            members[m] = vals[p]
            m += 1
    v = np.sort(members[:m])[m - (k - seen)]  # the k-th highest value
    above = 0
    c = 0
    for p in range(n):
        if vals[p] > v:
            above += 1
            c += objs[p]
    ties = k - above
    for p in range(n):
        if ties == 0:
            break
        if vals[p] == v:
            ties -= 1
            c += objs[p]
    return c


@njit(cache=True, nogil=True)
def _mask_rows(maps, masks, topk, out):
    # maps (B, N) float in [0, 1], masks (B, N) uint8; out (B, 3): relevance mass, relevance rank, top-k
    # intersection; NaN without an object pixel. Ignore pixels (mask > 1) are left out of everything.
    N = maps.shape[1]
    vals = np.empty(N, np.float64)
    objs = np.empty(N, np.int64)
    members = np.empty(N, np.float64)
    hist = np.empty(_BUCKETS, np.int64)
    for i in range(maps.shape[0]):
        n = 0
        K = 0
        total = 0.0
        mass = 0.0
        hist[:] = 0
        for p in range(N):
            m = masks[i, p]
            if m <= 1:
                s = np.float64(maps[i, p])
                vals[n] = s
                objs[n] = m
                hist[min(np.int64(s * _BUCKETS), _BUCKETS - 1)] += 1
                n += 1
                K += m
                total += s
                if m == 1:
                    mass += s
        if K == 0:
            out[i, 0] = np.nan
            out[i, 1] = np.nan
            out[i, 2] = np.nan
            continue
        out[i, 0] = mass / total if total > 0.0 else 0.0
        out[i, 1] = _top_in(vals, objs, n, K, hist, members) / K
        k = min(topk, n)
        out[i, 2] = _top_in(vals, objs, n, k, hist, members) / k


def pointing_rows(maps, boxes, num_boxes=None, masks=None, tolerance: float = 15.0, topk: int = 1000) -> np.ndarray:
    """Per-image rows of the five metrics (columns :data:`POINTING_NAMES`): (B, 5) float64.

    Args:
        maps: (B, H, W) score maps in [0, 1] (numpy, torch or :class:`~camlab.wsol.ScoreMaps`).
        boxes, num_boxes: the GT boxes (continuous xyxy, padded) and their counts, as everywhere in camlab.wsol.
        masks: (B, H, W) uint8 GT masks (1 object, 0 background, other values ignored), or None (NaN columns).
        tolerance: the pointing game's tolerance in pixels (0: the maximum must lie in a box).
        topk: k of the top-k intersection.

    Example:
        >>> m = np.zeros((1, 8, 8), np.float32); m[0, 2:4, 2:4] = 1.0; m[0, 6, 6] = 0.5
        >>> mask = np.zeros((1, 8, 8), np.uint8); mask[0, 2:4, 2:4] = 1
        >>> pointing_rows(m, np.array([[[2.0, 2.0, 3.9, 3.9]]]), masks=mask, tolerance=0, topk=4).round(3).tolist()
        [[1.0, 0.889, 0.889, 1.0, 1.0]]
    """
    if not float(tolerance) >= 0:
        raise ValueError(f"tolerance must be a number of pixels >= 0, got {tolerance}")
    if int(topk) < 1:
        raise ValueError(f"topk must be a number of pixels >= 1, got {topk}")
    maps = ScoreMaps.of(maps)
    gt, n_gt = inclusive_gt(boxes, num_boxes, len(maps))
    out = np.full((len(maps), len(POINTING_NAMES)), np.nan)
    if len(maps) == 0:
        return out
    box_out = np.zeros((len(maps), 2))
    _box_rows(maps.maps, gt, n_gt, float(tolerance), box_out)
    out[:, :2] = box_out
    if masks is not None:
        masks = masks.detach().cpu().numpy() if hasattr(masks, "detach") else np.asarray(masks)
        if masks.shape != maps.shape:
            raise ValueError(f"masks {masks.shape} must match the maps {maps.shape}")
        mask_out = np.zeros((len(maps), 3))
        _mask_rows(maps.maps.reshape(len(maps), -1), np.ascontiguousarray(masks, np.uint8).reshape(len(maps), -1),
                   int(topk), mask_out)
        out[:, 2:] = mask_out
    return out


def pointing_from_rows(rows) -> dict:
    """Means over the images (percent) of the columns of :func:`pointing_rows`, keyed ``faith/<name>``; a mask
    metric is left out when no image has a value (no masks).

    Example:
        >>> pointing_from_rows(np.array([[1.0, 0.5, np.nan, np.nan, np.nan], [0.0, 0.25, np.nan, np.nan, np.nan]]))
        {'faith/pointing_game': 50.0, 'faith/energy_pointing_game': 37.5}
    """
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, len(POINTING_NAMES))
    out = {}
    for j, name in enumerate(POINTING_NAMES):
        col = rows[:, j][~np.isnan(rows[:, j])]
        if col.size:
            out[f"faith/{name}"] = float(col.mean() * 100)
    return out
