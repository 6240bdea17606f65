"""Localization primitives for CAM evaluation: normalization, box extraction, IoU, PxAP histograms.

Default semantics reproduce clovaai/wsolevaluation ("wsoleval") exactly, quirks included, so numbers
compare with published tables (see ``benchmarks/METRICS_NOTES.md``):

* score maps are float maps in [0, 1]; ``u8 = (map * 255).astype(uint8)`` (truncation, computed in the
  map's own dtype). wsoleval's evaluator takes float64 maps only; for a float32 map the float32 product truncates
  to the same integer as the float64 product of its (exact) float64 copy (tested for the float32 values around
  every k / 255), so float32 and float64 maps both get wsoleval's numbers;
* at threshold ``t`` a pixel is foreground iff ``u8 > int(t * u8.max())`` (strict, relative);
* contours are OpenCV tree-mode contours: one outer contour per 8-connected foreground component and
  one hole contour per 4-connected background component that does not touch the image border (its box
  is the hole's pixel box grown by one pixel on each side);
* a contour whose pixels span columns ``px0..px1`` and rows ``py0..py1`` gives the box
  ``(px0, py0, min(px1 + 1, W - 1), min(py1 + 1, H - 1))`` (``cv2.boundingRect`` then wsoleval's clip);
  no contour at all gives ``(0, 0, 0, 0)``;
* IoU treats boxes as inclusive integer pixel bounds (``+1`` on widths and heights); union <= 0 -> 0;
* camlab's ground-truth boxes are continuous torchvision ``xyxy`` floats; they are passed through
  ``int()`` truncation and then treated as inclusive bounds, which is exactly what wsoleval does with
  its (already integer) metadata boxes. A continuous box ``[0, 10)`` thus becomes the inclusive box
  ``0..10`` (11 pixels): the same one-pixel quirk wsoleval has on CUB/ILSVRC.

Fast path: :func:`best_ious_all_contours` gives, per image, the best IoU over *all* contours at every
grid threshold (MaxBoxAccV2) without one OpenCV call per threshold. Only the distinct cut levels matter;
a pixel's level index ("rank") says at which of them it is foreground. One forward and one backward pass
per row give, for every level, the row's first and last foreground column (from the prefix and suffix
maxima of the ranks, branch-free) and the row's *gaps*: a column is background enclosed by foreground on
both sides of its row exactly at the levels ``[rank, min(prefix max, suffix max))``, and the changes of
that range along the row are recorded as events, bucketed by level. A level without events has at most
one run per row: its components are chains of consecutive rows whose runs touch, and nothing is enclosed,
so there is no hole; it costs one step per row. The other levels cut each row's ``[first, last]`` by its
gaps and join the runs by union-find (foreground 8-connected; gaps 4-connected, a gap touching a
background column outside a neighbour row's ``[first, last]`` reaches the border, the rest are holes).
A numba kernel (``cache=True``) does all of it.

The largest-contour variant (MaxBoxAcc, and top-k loc at one threshold) needs ``cv2.contourArea`` (a
polygon area through contour pixel centres), which the run labelling does not give. The kernel also
counts the contours (components plus holes) of every level, and the components alone with the best IoU of
their boxes: where there is at most one contour, it is the largest, and its IoU is the all-contour one;
where there is one component (and any number of holes), its outer border is the largest contour (a hole's
border lies inside it; checked against OpenCV on 2,717 random one-component masks with holes and in the
tests), and its IoU is the component's. Only levels with several components go to ``cv2.findContours``, once per *distinct* level, cropped to the foreground's bounding box and skipped
when the mask did not change since the previous such level.
"""

from __future__ import annotations

import functools
from typing import Sequence

import cv2
import numpy as np
import torch
from numba import njit, prange

from camlab.cam import minmax_normalize, upsample

__all__ = [
    "normalize_cams",
    "upsample_cams",
    "threshold_grid",
    "scoremap_to_uint8",
    "check_scoremaps",
    "threshold_levels",
    "boxes_at_threshold",
    "gt_boxes_to_int",
    "box_iou_inclusive",
    "best_ious_all_contours",
    "best_ious_largest_contour",
    "best_ious_per_threshold",
    "pxap_bin_edges",
    "pxap_histograms",
    "pxap_from_histograms",
]


# ----------------------------------------------------------------------------------------------------
# score maps
# ----------------------------------------------------------------------------------------------------
# One implementation, in camlab.cam; re-exported here under the names the metric docs use.
normalize_cams = minmax_normalize
upsample_cams = upsample


def threshold_grid(interval: float = 0.01) -> np.ndarray:
    """CAM threshold grid ``np.arange(0, 1, interval)`` (wsoleval's; not exactly k * interval).

    Example:
        >>> g = threshold_grid(0.01)
        >>> len(g), g[35] == 0.35, g[35] > 0.35
        (100, np.False_, np.True_)
    """
    if not (0.0 < float(interval) < 1.0):
        raise ValueError(f"interval must be in (0, 1), got {interval}")
    return np.arange(0, 1, interval)


def scoremap_to_uint8(scoremaps: np.ndarray) -> np.ndarray:
    """``(map * 255).astype(uint8)`` in the map's dtype (truncation; float32 maps stay float32).

    Args:
        scoremaps: (..., H, W) float array in [0, 1].

    Example:
        >>> scoremap_to_uint8(np.array([[0.0, 0.5, 0.999, 1.0]], dtype=np.float32))
        array([[  0, 127, 254, 255]], dtype=uint8)
    """
    return (scoremaps * 255).astype(np.uint8)


def threshold_levels(thresholds: Sequence[float], u8_max: int) -> np.ndarray:
    """Integer cut levels ``int(t * u8_max)`` per threshold; foreground is ``u8 > level``.

    Example:
        >>> threshold_levels([0.0, 0.5, 0.99], 200)
        array([  0, 100, 198])
    """
    return np.array([int(float(t) * int(u8_max)) for t in thresholds], dtype=np.int64)


@njit(cache=True, nogil=True)
def _valid_unit_range(maps):
    # one pass: every value in [0, 1] (NaN fails both comparisons)
    flat = maps.reshape(-1)
    for i in range(flat.shape[0]):
        v = flat[i]
        if not (v >= 0.0 and v <= 1.0):
            return False
    return True


@njit(cache=True, nogil=True)
def _u8_unit_f32(maps, bits, u8, vmax):
    # maps (B, N) float32 and the same memory as uint32 bits; writes u8 = (map * 255) truncated (float32
    # product, as numpy's), vmax (B,) per-image max of u8. Returns whether every value is in [0, 1]: a
    # float32 in [0, 1] (or -0.0) has bits <= those of 1.0; NaN and negatives do not. Branch-free: one
    # vectorized pass.
    ok = True
    for i in range(maps.shape[0]):
        mx = np.int32(0)
        bad = False
        for p in range(maps.shape[1]):
            u = np.int32(maps[i, p] * np.float32(255.0))
            u8[i, p] = u
            mx = max(mx, u)
            b = bits[i, p]
            bad |= (b > np.uint32(0x3F800000)) & (b != np.uint32(0x80000000))
        vmax[i] = mx
        ok &= not bad
    return ok


@njit(cache=True, nogil=True)
def _normalize_u8_f32(cams, out, u8, vmax):
    # cams (B, N) float32 raw maps -> out: min-max normalized maps, the same float32 operations as
    # camlab.cam.minmax_normalize ((v - min) / (max - min); a map with a NaN, or constant, becomes zeros),
    # so bit-identical; u8 / vmax as in _u8_unit_f32. Returns whether every normalized value is in [0, 1].
    ok = True
    for i in range(cams.shape[0]):
        lo = cams[i, 0]
        hi = cams[i, 0]
        nan = False
        for p in range(cams.shape[1]):
            v = cams[i, p]
            lo = min(lo, v)
            hi = max(hi, v)
            nan |= v != v
        if nan or not hi > lo:
            out[i, :] = 0.0
            u8[i, :] = 0
            vmax[i] = 0
            continue
        d = hi - lo
        mx = np.int32(0)
        good = True
        for p in range(cams.shape[1]):
            s = (cams[i, p] - lo) / d
            out[i, p] = s
            good &= (s >= np.float32(0.0)) & (s <= np.float32(1.0))
            u = np.int32(s * np.float32(255.0))
            u8[i, p] = u
            mx = max(mx, u)
        vmax[i] = mx
        ok &= good
    return ok


def _scoremaps_u8(maps: np.ndarray, check: bool) -> tuple[np.ndarray, np.ndarray]:
    """(B, H, W) float maps -> (uint8 maps as :func:`scoremap_to_uint8`, (B,) int64 max of each).

    float32 maps take one fused pass that also checks the range; with ``check`` a value outside [0, 1]
    (or NaN) raises ValueError.
    """
    B = maps.shape[0]
    if maps.dtype == np.float32 and maps.size:
        flat = np.ascontiguousarray(maps).reshape(B, -1)
        u8 = np.empty(flat.shape, np.uint8)
        vmax = np.empty(B, np.int64)
        ok = _u8_unit_f32(flat, flat.view(np.uint32), u8, vmax)
        if check and not ok:
            raise ValueError("score maps must be in [0, 1] without NaN (see normalize_cams)")
        return u8.reshape(maps.shape), vmax
    if check:
        check_scoremaps(maps)
    u8 = scoremap_to_uint8(maps)
    vmax = u8.reshape(B, -1).max(axis=1).astype(np.int64) if u8.size else np.zeros(B, np.int64)
    return u8, vmax


def _normalize_scoremaps(cams: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B, H, W) raw float32 maps -> (min-max normalized float32 maps, uint8 maps, (B,) int64 maxima).

    Bit-identical to :func:`normalize_cams` then :func:`scoremap_to_uint8`; ValueError if a normalized
    value falls outside [0, 1] (an infinite raw value).
    """
    B = cams.shape[0]
    flat = np.ascontiguousarray(cams, dtype=np.float32).reshape(B, -1)
    out = np.empty(flat.shape, np.float32)
    u8 = np.empty(flat.shape, np.uint8)
    vmax = np.zeros(B, np.int64)
    if flat.size and not _normalize_u8_f32(flat, out, u8, vmax):
        raise ValueError("score maps must be in [0, 1] without NaN (see normalize_cams)")
    return out.reshape(cams.shape), u8.reshape(cams.shape), vmax


def check_scoremaps(maps: np.ndarray) -> None:
    """Raise ValueError unless every value is in [0, 1] (no NaN), as wsoleval's evaluator requires.

    Example:
        >>> check_scoremaps(np.array([[0.0, 1.0]], np.float32))
        >>> check_scoremaps(np.array([[0.0, 1.5]]))
        Traceback (most recent call last):
        ...
        ValueError: score maps must be in [0, 1] without NaN (see normalize_cams)
    """
    maps = np.ascontiguousarray(maps)
    if maps.dtype == np.float32 and maps.size:
        flat = maps.reshape(1, -1)
        ok = _u8_unit_f32(flat, flat.view(np.uint32), np.empty(flat.shape, np.uint8), np.empty(1, np.int64))
    else:
        ok = _valid_unit_range(maps)
    if not ok:
        raise ValueError("score maps must be in [0, 1] without NaN (see normalize_cams)")


# ----------------------------------------------------------------------------------------------------
# boxes at one threshold (cv2, the reference semantics) and IoU
# ----------------------------------------------------------------------------------------------------
def _contours(binary: np.ndarray, offset: tuple[int, int] = (0, 0)):
    # findContours returns (image, contours, hierarchy) in OpenCV 3 and (contours, hierarchy) after.
    return cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE, offset=offset)[-2]


def _contour_box(contour: np.ndarray, width: int, height: int) -> list[int]:
    x, y, w, h = cv2.boundingRect(contour)
    return [x, y, min(x + w, width - 1), min(y + h, height - 1)]


def boxes_at_threshold(scoremap_u8: np.ndarray, threshold: float, multi_contour: bool = True) -> np.ndarray:
    """Boxes of a uint8 score map at one CAM threshold (wsoleval semantics, via OpenCV).

    Args:
        scoremap_u8: (H, W) uint8 map (see :func:`scoremap_to_uint8`).
        threshold: CAM threshold in [0, 1); foreground is ``u8 > int(threshold * u8.max())``.
        multi_contour: every tree-mode contour (holes included) if True, else only the contour with the
            largest ``cv2.contourArea`` (first one on ties).

    Returns:
        (N, 4) int64 boxes ``x0, y0, x1, y1``; ``[[0, 0, 0, 0]]`` when there is no contour.

    Example:
        >>> m = np.zeros((6, 6), np.uint8); m[1:5, 1:5] = 200; m[2:4, 2:4] = 0
        >>> boxes_at_threshold(m, 0.5)  # a ring: outer box; hole pixels 2..3 grown by 1, then +w
        array([[1, 1, 5, 5],
               [1, 1, 5, 5]])
        >>> boxes_at_threshold(m, 0.5, multi_contour=False)
        array([[1, 1, 5, 5]])
    """
    height, width = scoremap_u8.shape
    level = int(float(threshold) * int(scoremap_u8.max()))
    binary = (scoremap_u8 > level).astype(np.uint8)
    contours = _contours(binary)
    if len(contours) == 0:
        return np.zeros((1, 4), dtype=np.int64)
    if not multi_contour:
        areas = [cv2.contourArea(c) for c in contours]
        contours = [contours[int(np.argmax(areas))]]
    return np.array([_contour_box(c, width, height) for c in contours], dtype=np.int64)


def gt_boxes_to_int(boxes: np.ndarray | torch.Tensor) -> np.ndarray:
    """Continuous ``xyxy`` float boxes -> wsoleval's inclusive integer boxes by ``int()`` truncation.

    Example:
        >>> gt_boxes_to_int(torch.tensor([[1.9, 2.0, 10.5, 7.99]]))
        array([[ 1,  2, 10,  7]])
    """
    if isinstance(boxes, torch.Tensor):
        boxes = boxes.detach().cpu().numpy()
    return np.trunc(np.asarray(boxes, dtype=np.float64)).astype(np.int64)


def box_iou_inclusive(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of inclusive integer boxes (``+1`` on sides); a union <= 0 gives 0.

    Args:
        boxes_a: (A, 4) ints ``x0, y0, x1, y1``.
        boxes_b: (B, 4) ints.

    Returns:
        (A, B) float64.

    Example:
        >>> box_iou_inclusive(np.array([[0, 0, 9, 9]]), np.array([[0, 0, 4, 9], [20, 20, 29, 29]]))
        array([[0.5, 0. ]])
    """
    a = np.asarray(boxes_a, dtype=np.int64)[:, None, :]  # (A, 1, 4)
    b = np.asarray(boxes_b, dtype=np.int64)[None, :, :]  # (1, B, 4)
    iw = np.maximum(0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1)
    ih = np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    union = area_a + area_b - inter
    ok = union > 0
    return np.where(ok, inter / np.where(ok, union, 1), 0.0)


# ----------------------------------------------------------------------------------------------------
# fast path: all thresholds at once (numba)
# ----------------------------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def _find(parent, x):
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


@njit(cache=True, inline="always")
def _best_iou_box(x0, y0, x1, y1, gt, n_gt):
    # Inclusive-box IoU of one box against the first n_gt GT boxes; best value.
    best = 0.0
    area = (x1 - x0 + 1) * (y1 - y0 + 1)
    for g in range(n_gt):
        gx0, gy0, gx1, gy1 = gt[g, 0], gt[g, 1], gt[g, 2], gt[g, 3]
        iw = min(x1, gx1) - max(x0, gx0) + 1
        ih = min(y1, gy1) - max(y0, gy0) + 1
        if iw < 0:
            iw = 0
        if ih < 0:
            ih = 0
        inter = iw * ih
        union = area + (gx1 - gx0 + 1) * (gy1 - gy0 + 1) - inter
        if union > 0:
            v = inter / union
            if v > best:
                best = v
    return best


@njit(cache=True)
def _grow(a, size):
    b = np.empty(size, a.dtype)
    b[: a.shape[0]] = a
    return b


@njit(cache=True)
def _level_ranks(levels):
    """Distinct cut levels (clamped to [-1, 255]) -> (rank LUT, level index per cut value + 1, count).

    ``rank[v]`` is the number of distinct levels below the uint8 value v, so a pixel is foreground at the
    j-th level (ascending) iff ``rank[u8] > j``.
    """
    used = np.zeros(257, np.bool_)
    for k in range(levels.shape[0]):
        used[min(max(levels[k], -1), 255) + 1] = True
    index = np.full(257, -1, np.int64)
    n = 0
    for i in range(257):
        if used[i]:
            index[i] = n
            n += 1
    rank = np.zeros(256, np.int32)
    c = 0
    for v in range(256):
        if used[v]:  # level v - 1 lies below v
            c += 1
        rank[v] = c
    return rank, index, n


@njit(cache=True)
def _row_scan(u8, rank, n, L, R, rmax):
    """One forward pass per row over the pixels and one backward pass over its runs of equal rank: run ends
    per level, and the enclosed-gap events.

    Writes ``L[j, y]`` / ``R[j, y]`` (first / last foreground column of row y at level j, for j <
    ``rmax[y]``, the rank of the row's max). Returns the gap events as level ranges ``[lo, hi)`` with a
    boundary position (the gap membership differs between columns pos - 1 and pos at those levels), per
    row the end offset into them, and their count. A level without events has at most one run per row.
    """
    H, W = u8.shape
    lastF = np.empty(n + 2, np.int32)
    lastB = np.empty(n + 2, np.int32)
    run_rank = np.empty(W, np.int32)
    run_end = np.empty(W, np.int32)  # last column of each run of equal rank
    run_pmax = np.empty(W, np.int32)  # prefix max of the ranks up to the end of the run
    row_cap = 2 * (W + 1) + 2  # at most two level ranges per column boundary
    cap = row_cap + H * W // 4
    elo = np.empty(cap, np.int32)
    ehi = np.empty(cap, np.int32)
    ex = np.empty(cap, np.int32)
    rowend = np.empty(H, np.int64)
    ne = 0
    for y in range(H):
        if ne + row_cap > cap:
            cap = 2 * cap
            elo = _grow(elo, cap)
            ehi = _grow(ehi, cap)
            ex = _grow(ex, cap)
        # forward: prefix max of the ranks; lastF[m] = last column whose prefix max (before it) is m,
        # i.e. the column where the prefix max rises above m: the first foreground column of level m.
        # The row is also cut into runs of equal rank (branch-free: the run index k moves on a change).
        lastF[:] = -1
        pm = 0
        k = -1
        prev = -1
        for x in range(W):
            r = rank[u8[y, x]]
            lastF[pm] = x
            pm = max(pm, r)
            k += r != prev
            prev = r
            run_rank[k] = r
            run_end[k] = x
        rmax[y] = pm
        cur = 0
        for j in range(pm):  # levels the prefix max jumped over start at the same column
            cur = max(cur, lastF[j])
            L[j, y] = cur
        m = 0
        for q in range(k + 1):
            m = max(m, run_rank[q])
            run_pmax[q] = m
        # backward: suffix max, last foreground column per level, and the gaps. Column x is background
        # enclosed by foreground on both sides of its row ("gap") at the levels [r, t), t = min(prefix max,
        # suffix max); every background run between two foreground runs is made of such columns. Within a
        # run of equal rank r, t and hence the gap levels are the same in every column, so only a run's last
        # column can start or end gap levels, and only there can the suffix max rise: one step per run gives
        # the same events and run ends as one step per column.
        lastB[:] = W
        sm = 0
        pa = 0
        pb = 0  # gap levels [pa, pb) of the run to the right (none right of the row)
        for q in range(k, -1, -1):
            r = run_rank[q]
            x = run_end[q]
            lastB[sm] = x
            sm = max(sm, r)
            t = min(run_pmax[q], sm)
            if t > r or pb > pa:
                a = r
                b = max(t, r)
                # the levels where [pa, pb) and [a, b) differ: at most two ranges (branch-free)
                dis = (pb <= a) | (b <= pa)
                lo1 = pa if dis else min(pa, a)
                hi1 = pb if dis else max(pa, a)
                lo2 = a if dis else min(pb, b)
                hi2 = b if dis else max(pb, b)
                elo[ne] = lo1
                ehi[ne] = hi1
                ex[ne] = x + 1
                ne += hi1 > lo1
                elo[ne] = lo2
                ehi[ne] = hi2
                ex[ne] = x + 1
                ne += hi2 > lo2
                pa = a
                pb = b
            else:
                pa = r
                pb = r
        cur = W
        for j in range(pm):
            cur = min(cur, lastB[j])
            R[j, y] = cur
        rowend[y] = ne
    return elo, ehi, ex, rowend, ne


@njit(cache=True)
def _events_by_level(elo, ehi, ex, rowend, ne, n):
    """Counting sort of the gap events by level, each range expanded: (start offsets per level, rows,
    positions). Stable: within a level, rows ascending and positions descending within a row."""
    H = rowend.shape[0]
    start = np.zeros(n + 2, np.int64)
    for e in range(ne):  # per-level counts from a difference array
        start[elo[e] + 1] += 1
        start[ehi[e] + 1] -= 1
    for j in range(n):
        start[j + 1] += start[j]
    for j in range(n):
        start[j + 1] += start[j]
    fill = start[:n].copy()
    total = start[n]
    sy = np.empty(total, np.int32)
    sx = np.empty(total, np.int32)
    e = 0
    for y in range(H):
        while e < rowend[y]:
            x = ex[e]
            for j in range(elo[e], ehi[e]):
                p = fill[j]
                sy[p] = y
                sx[p] = x
                fill[j] = p + 1
            e += 1
    return start, sy, sx


@njit(cache=True)
def _chain_level(j, yf, yl, L, R, rmax, W, H, gt, n_gt):
    """(best IoU, number of contours) at a level where every row has at most one run: the components are
    chains of consecutive rows whose runs touch (8-connected), and no background is enclosed (no hole)."""
    best = 0.0
    count = 0
    opened = False
    pa = 0
    pb = 0
    bx0 = 0
    bx1 = 0
    by0 = 0
    for y in range(yf, yl + 2):
        live = y <= yl and rmax[y] > j
        a = 0
        b = 0
        if live:
            a = L[j, y]
            b = R[j, y]
            if opened and a <= pb + 1 and pa <= b + 1:
                bx0 = min(bx0, a)
                bx1 = max(bx1, b)
                pa = a
                pb = b
                continue
        if opened:  # close the chain that ended at row y - 1
            v = _best_iou_box(bx0, by0, min(bx1 + 1, W - 1), min(y, H - 1), gt, n_gt)
            if v > best:
                best = v
            count += 1
            opened = False
        if live:
            opened = True
            bx0 = a
            bx1 = b
            by0 = y
            pa = a
            pb = b
    return best, count


@njit(cache=True, inline="always")
def _merge_box(bb, ra, rb):
    bb[rb, 0] = min(bb[rb, 0], bb[ra, 0])
    bb[rb, 1] = min(bb[rb, 1], bb[ra, 1])
    bb[rb, 2] = max(bb[rb, 2], bb[ra, 2])
    bb[rb, 3] = max(bb[rb, 3], bb[ra, 3])


@njit(cache=True)
def _general_level(j, yf, yl, e0, e1, sy, sx, L, R, rmax, W, H, gt, n_gt, buf):
    """(best IoU, number of contours, best IoU of the components alone, number of components) over the
    components and holes of one level whose rows may hold several runs.

    A row's runs are [L, R] cut by its gaps (level events in pairs, right to left). Runs of consecutive
    rows join by union-find over nodes (8-connected); a single run under a single touching run extends
    that run's node. Gaps join 4-connected; a gap that touches a background column outside a neighbour
    row's [L, R] (or a row without foreground, or the image border) reaches the border, the others are
    holes, whose box is their pixel box grown by one.
    """
    par, bb, gpar, gbb, gborder, cx0, cx1, cnode, px0, px1, pnode, hx0, hx1, gnode, phx0, phx1, pgnode = buf
    best = 0.0
    nf = 0
    ngn = 0
    pc = 0
    pgc = 0
    e = e0
    y = yf - 1
    while y < yl:
        y += 1
        if rmax[y] <= j:
            pc = 0
            pgc = 0
            continue
        e_start = e
        while e < e1 and sy[e] == y:
            e += 1
        k = (e - e_start) // 2  # gaps in this row
        right = R[j, y]
        for q in range(k):
            b_right = sx[e_start + 2 * q]
            b_left = sx[e_start + 2 * q + 1]
            cx0[k - q] = b_right
            cx1[k - q] = right
            hx0[k - 1 - q] = b_left
            hx1[k - 1 - q] = b_right - 1
            right = b_left - 1
        cx0[0] = L[j, y]
        cx1[0] = right
        cc = k + 1
        if cc == 1 and pc == 1 and cx0[0] <= px1[0] + 1 and px0[0] <= cx1[0] + 1:
            # a single run under a single touching run, and the rows after it that are the same (no gap,
            # touching): one chain step each, then one update of the component's box
            a = cx0[0]
            b = cx1[0]
            lo = a
            hi = b
            while y < yl and rmax[y + 1] > j and (e >= e1 or sy[e] != y + 1):
                a2 = L[j, y + 1]
                b2 = R[j, y + 1]
                if a2 > b + 1 or a > b2 + 1:
                    break
                y += 1
                a = a2
                b = b2
                lo = min(lo, a)
                hi = max(hi, b)
            cx0[0] = a
            cx1[0] = b
            root = _find(par, pnode[0])
            bb[root, 0] = min(bb[root, 0], lo)
            bb[root, 2] = max(bb[root, 2], hi)
            bb[root, 3] = y
            cnode[0] = root
        else:
            for q in range(cc):
                par[nf] = nf
                bb[nf, 0] = cx0[q]
                bb[nf, 1] = y
                bb[nf, 2] = cx1[q]
                bb[nf, 3] = y
                cnode[q] = nf
                nf += 1
            i = 0
            q = 0
            while i < pc and q < cc:
                if px0[i] <= cx1[q] + 1 and cx0[q] <= px1[i] + 1:
                    ra = _find(par, pnode[i])
                    rb = _find(par, cnode[q])
                    if ra != rb:
                        par[ra] = rb
                        _merge_box(bb, ra, rb)
                if px1[i] < cx1[q]:
                    i += 1
                else:
                    q += 1
        for q in range(k):
            g0 = hx0[q]
            g1 = hx1[q]
            gpar[ngn] = ngn
            gbb[ngn, 0] = g0
            gbb[ngn, 1] = y
            gbb[ngn, 2] = g1
            gbb[ngn, 3] = y
            bd = y == 0 or y == H - 1
            if not bd:
                bd = (rmax[y - 1] <= j or g0 < L[j, y - 1] or g1 > R[j, y - 1]
                      or rmax[y + 1] <= j or g0 < L[j, y + 1] or g1 > R[j, y + 1])
            gborder[ngn] = bd
            gnode[q] = ngn
            ngn += 1
        i = 0
        q = 0
        while i < pgc and q < k:
            if phx0[i] <= hx1[q] and hx0[q] <= phx1[i]:
                ra = _find(gpar, pgnode[i])
                rb = _find(gpar, gnode[q])
                if ra != rb:
                    gpar[ra] = rb
                    _merge_box(gbb, ra, rb)
                    gborder[rb] = gborder[rb] or gborder[ra]
            if phx1[i] < hx1[q]:
                i += 1
            else:
                q += 1
        for q in range(cc):  # this row becomes the previous one (loops: slice copies allocate)
            px0[q] = cx0[q]
            px1[q] = cx1[q]
            pnode[q] = cnode[q]
        pc = cc
        for q in range(k):
            phx0[q] = hx0[q]
            phx1[q] = hx1[q]
            pgnode[q] = gnode[q]
        pgc = k
    count = 0
    for r in range(nf):
        if par[r] == r:
            v = _best_iou_box(bb[r, 0], bb[r, 1], min(bb[r, 2] + 1, W - 1), min(bb[r, 3] + 1, H - 1), gt, n_gt)
            best = max(best, v)
            count += 1
    best_comp = best
    ncomp = count
    for r in range(ngn):
        if gpar[r] == r and not gborder[r]:
            v = _best_iou_box(gbb[r, 0] - 1, gbb[r, 1] - 1, min(gbb[r, 2] + 2, W - 1), min(gbb[r, 3] + 2, H - 1),
                              gt, n_gt)
            best = max(best, v)
            count += 1
    return best, count, best_comp, ncomp


@njit(cache=True)
def _all_contours_levels(u8, levels, gt, n_gt, out, counts, comp_out, comp_counts):
    """Best IoU over all tree-mode contours at each cut level (see the module docstring).

    u8 (H, W) uint8; levels (K,) cut levels (foreground is ``u8 > level``); gt (G, 4) inclusive ints,
    the first n_gt valid; out (K,) float64 and counts (K,) int64 (the number of contours: components plus
    holes), written; comp_out (K,) float64 and comp_counts (K,) int64: the same over the 8-connected
    components alone (no hole boxes), written.
    """
    H, W = u8.shape
    rank, index, n = _level_ranks(levels)
    L = np.empty((n, H), np.int32)
    R = np.empty((n, H), np.int32)
    rmax = np.zeros(H, np.int32)
    elo, ehi, ex, rowend, ne = _row_scan(u8, rank, n, L, R, rmax)
    start, sy, sx = _events_by_level(elo, ehi, ex, rowend, ne, n)
    cap = H + sy.shape[0] // 2 + 2  # nodes of one level: at most one per run
    wr = W // 2 + 2  # runs (and gaps) of one row
    buf = (np.empty(cap, np.int32), np.empty((cap, 4), np.int32), np.empty(cap, np.int32),
           np.empty((cap, 4), np.int32), np.empty(cap, np.bool_), np.empty(wr, np.int32), np.empty(wr, np.int32),
           np.empty(wr, np.int32), np.empty(wr, np.int32), np.empty(wr, np.int32), np.empty(wr, np.int32),
           np.empty(wr, np.int32), np.empty(wr, np.int32), np.empty(wr, np.int32), np.empty(wr, np.int32),
           np.empty(wr, np.int32), np.empty(wr, np.int32))
    best = np.zeros(n, np.float64)
    cnt = np.zeros(n, np.int64)
    cbest = np.zeros(n, np.float64)
    ccnt = np.zeros(n, np.int64)
    empty = _best_iou_box(0, 0, 0, 0, gt, n_gt)  # no contour: the box (0, 0, 0, 0)
    yf = 0
    yl = H - 1
    for j in range(n):
        # rows with foreground at level j lie in [yf, yl], a range that only shrinks as j grows
        while yf <= yl and rmax[yf] <= j:
            yf += 1
        while yl >= yf and rmax[yl] <= j:
            yl -= 1
        if yf > yl:
            best[j] = empty
            cbest[j] = empty
        elif start[j] == start[j + 1]:
            best[j], cnt[j] = _chain_level(j, yf, yl, L, R, rmax, W, H, gt, n_gt)  # no holes
            cbest[j] = best[j]
            ccnt[j] = cnt[j]
        else:
            best[j], cnt[j], cbest[j], ccnt[j] = _general_level(j, yf, yl, start[j], start[j + 1], sy, sx, L, R, rmax,
                                                                W, H, gt, n_gt, buf)
    for k in range(out.shape[0]):
        j = index[min(max(levels[k], -1), 255) + 1]
        out[k] = best[j]
        counts[k] = cnt[j]
        comp_out[k] = cbest[j]
        comp_counts[k] = ccnt[j]


@njit(cache=True, nogil=True)
def _all_contours_serial(u8, levels, gt, n_gt, out, counts, comp_out, comp_counts):
    for i in range(u8.shape[0]):
        _all_contours_levels(u8[i], levels[i], gt[i], n_gt[i], out[i], counts[i], comp_out[i], comp_counts[i])


@njit(cache=True, nogil=True, parallel=True)
def _all_contours_parallel(u8, levels, gt, n_gt, out, counts, comp_out, comp_counts):
    for i in prange(u8.shape[0]):
        _all_contours_levels(u8[i], levels[i], gt[i], n_gt[i], out[i], counts[i], comp_out[i], comp_counts[i])


def _all_contours_batch(u8, levels, gt, n_gt, out, parallel=False, counts=None, comp_out=None, comp_counts=None):
    """Fill ``out`` (B, K) with the best all-contour IoU per image and level; ``counts`` (B, K) int64, when
    given, gets the number of tree-mode contours there (components plus holes); ``comp_out`` (B, K) float64
    and ``comp_counts`` (B, K) int64, when given, the best IoU over the components' boxes alone and their
    number."""
    if counts is None:
        counts = np.empty(levels.shape, np.int64)
    if comp_out is None:
        comp_out = np.empty(levels.shape, np.float64)
    if comp_counts is None:
        comp_counts = np.empty(levels.shape, np.int64)
    (_all_contours_parallel if parallel else _all_contours_serial)(u8, levels, gt, n_gt, out, counts, comp_out,
                                                                   comp_counts)


def _as_maps(scoremaps) -> np.ndarray:
    if isinstance(scoremaps, torch.Tensor):
        scoremaps = scoremaps.detach().cpu().numpy()
    scoremaps = np.asarray(scoremaps)
    if scoremaps.ndim == 2:
        scoremaps = scoremaps[None]
    if scoremaps.ndim != 3:
        raise ValueError(f"scoremaps must be (B, H, W), got shape {scoremaps.shape}")
    return scoremaps


def _prepare_gt(gt_boxes, num_boxes, B: int) -> tuple[np.ndarray, np.ndarray]:
    gt = gt_boxes_to_int(gt_boxes)
    if gt.ndim == 2:
        gt = gt[None]
    if gt.shape[0] != B or gt.shape[-1] != 4:
        raise ValueError(f"boxes must be (B, G, 4) with B={B}, got shape {gt.shape}")
    if num_boxes is None:
        n_gt = np.full(B, gt.shape[1], dtype=np.int64)
    else:
        n_gt = np.asarray(num_boxes.detach().cpu() if isinstance(num_boxes, torch.Tensor) else num_boxes,
                          dtype=np.int64).reshape(B)
    if (n_gt < 1).any() or (n_gt > gt.shape[1]).any():
        raise ValueError("every image needs 1 <= num_boxes <= G ground-truth boxes")
    return np.ascontiguousarray(gt), n_gt


def _cut_levels(vmax: np.ndarray, thresholds) -> np.ndarray:
    # int(float(t) * int(max)) per image: the same float64 products, truncated toward zero
    thresholds = np.asarray(thresholds, dtype=np.float64)
    return np.trunc(vmax.astype(np.float64)[:, None] * thresholds[None, :]).astype(np.int64)


def _prepare(scoremaps, gt_boxes, num_boxes, thresholds, u8=None, vmax=None):
    """(u8 maps, int GT boxes, valid GT counts, cut levels) of a batch; u8/vmax may come precomputed."""
    if u8 is None:
        u8, vmax = _scoremaps_u8(_as_maps(scoremaps), check=False)
    gt, n_gt = _prepare_gt(gt_boxes, num_boxes, u8.shape[0])
    return u8, gt, n_gt, _cut_levels(vmax, thresholds)


def best_ious_all_contours(scoremaps, gt_boxes, num_boxes=None, thresholds=None) -> np.ndarray:
    """Per image and threshold, the best IoU over all tree-mode contours x GT boxes (MaxBoxAccV2).

    Run-length labelling of every level from the rank crossings (see module docstring); equals
    wsoleval's per-threshold OpenCV procedure exactly.

    Args:
        scoremaps: (B, H, W) float maps in [0, 1] (numpy or torch).
        gt_boxes: (B, G, 4) continuous ``xyxy`` boxes, truncated by :func:`gt_boxes_to_int`.
        num_boxes: (B,) valid boxes per image (the rest is padding); all G if None.
        thresholds: (K,) CAM thresholds; :func:`threshold_grid` () if None.

    Returns:
        (B, K) float64 best IoU.

    Example:
        >>> m = np.zeros((1, 8, 8), np.float32); m[0, 2:6, 2:6] = 1.0
        >>> best_ious_all_contours(m, np.array([[[2.0, 2.0, 6.0, 6.0]]]), thresholds=[0.5])
        array([[1.]])
    """
    thresholds = threshold_grid() if thresholds is None else thresholds
    u8, gt, n_gt, levels = _prepare(scoremaps, gt_boxes, num_boxes, thresholds)
    out = np.zeros(levels.shape, dtype=np.float64)
    _all_contours_batch(u8, levels, gt, n_gt, out)
    return out


def best_ious_largest_contour(scoremaps, gt_boxes, num_boxes=None, thresholds=None) -> np.ndarray:
    """Per image and threshold, the best IoU of the largest-``contourArea`` contour's box (MaxBoxAcc).

    Levels where the mask has at most one 8-connected component take the kernel's IoU of that component's box
    (its outer border is the largest contour, holes lie inside it). The others use ``cv2.findContours`` once per distinct level (not per threshold), on the crop
    around the foreground, reusing the previous result when the mask did not change: the polygon area of a
    traced contour is not a run-labelling quantity.

    Args, Returns: as :func:`best_ious_all_contours`.

    Example:
        >>> m = np.zeros((1, 8, 8), np.float32); m[0, 1:3, 1:3] = 1.0; m[0, 4:8, 4:8] = 1.0
        >>> best_ious_largest_contour(m, np.array([[[1.0, 1.0, 3.0, 3.0]]]), thresholds=[0.5])
        array([[0.]])
    """
    thresholds = threshold_grid() if thresholds is None else thresholds
    return _largest_contour_ious(*_prepare(scoremaps, gt_boxes, num_boxes, thresholds))


def _largest_contour_ious(u8, gt, n_gt, levels, parallel: bool = False, comp_ious=None, comp_counts=None
                          ) -> np.ndarray:
    B, H, W = u8.shape
    # Where the mask has one component (with any number of holes), its outer border is the largest contour
    # (a hole's border lies inside it), so the IoU is that component's box's, from the kernel; no component
    # gives the empty box's IoU, also from the kernel. OpenCV only where there are several components.
    # ``comp_ious`` / ``comp_counts``: the kernel's component output for these levels, when already computed.
    if comp_ious is None:
        comp_ious = np.zeros(levels.shape, dtype=np.float64)
        comp_counts = np.empty(levels.shape, np.int64)
        _all_contours_batch(u8, levels, gt, n_gt, np.empty(levels.shape, np.float64), parallel=parallel,
                            comp_out=comp_ious, comp_counts=comp_counts)
    out = np.array(comp_ious, dtype=np.float64)
    several = comp_counts >= 2
    for i in np.flatnonzero(several.any(axis=1)):
        img = u8[i]
        gti = gt[i, : n_gt[i]].tolist()
        row_max = img.max(axis=1)
        col_max = img.max(axis=0)
        todo = sorted(set(levels[i][several[i]].tolist()))
        n_above = (np.cumsum(np.bincount(img.ravel(), minlength=256)[::-1])[::-1]  # pixels >= v
                   if len(todo) > 1 else None)
        cache: dict[int, float] = {}
        prev_count, prev_val = -1, 0.0
        for L in todo:
            if n_above is not None:
                n_fg = int(n_above[L + 1]) if L < 255 else 0
                if n_fg == prev_count:  # nested masks of equal size are equal
                    cache[L] = prev_val
                    continue
            # crop to the foreground: same contours, same order, shifted back by offset
            ys = np.flatnonzero(row_max > L)
            xs = np.flatnonzero(col_max > L)
            y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
            _, binary = cv2.threshold(img[y0:y1, x0:x1], L, 255, cv2.THRESH_BINARY)
            contours = _contours(binary, offset=(x0, y0))
            areas = [cv2.contourArea(c) for c in contours]
            box = _contour_box(contours[areas.index(max(areas))], W, H)  # first of the largest
            val = max(_iou_py(box, g) for g in gti)
            cache[L] = val
            if n_above is not None:
                prev_count, prev_val = n_fg, val
        out[i, several[i]] = [cache[L] for L in levels[i][several[i]].tolist()]
    return out


def _iou_py(a, b) -> float:
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = iw * ih
    union = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - inter
    return inter / union if union > 0 else 0.0


def best_ious_per_threshold(scoremaps, gt_boxes, num_boxes=None, thresholds=None,
                            multi_contour: bool = True) -> np.ndarray:
    """Dispatch to :func:`best_ious_all_contours` or :func:`best_ious_largest_contour`.

    Example:
        >>> m = np.zeros((1, 8, 8), np.float32); m[0, 2:6, 2:6] = 1.0
        >>> best_ious_per_threshold(m, np.array([[[2.0, 2.0, 6.0, 6.0]]]), thresholds=[0.5, 0.9],
        ...                         multi_contour=False)
        array([[1., 1.]])
    """
    fn = best_ious_all_contours if multi_contour else best_ious_largest_contour
    return fn(scoremaps, gt_boxes, num_boxes, thresholds)


# ----------------------------------------------------------------------------------------------------
# PxAP
# ----------------------------------------------------------------------------------------------------
def pxap_bin_edges(thresholds=None) -> np.ndarray:
    """wsoleval's float64 histogram edges: the thresholds, then 1, 2, 3 (bins ``[e_i, e_i+1)``).

    Example:
        >>> pxap_bin_edges([0.0, 0.5])
        array([0. , 0.5, 1. , 2. , 3. ])
    """
    thresholds = threshold_grid() if thresholds is None else thresholds
    return np.append(np.asarray(thresholds, dtype=np.float64), [1.0, 2.0, 3.0])


@njit(cache=True, nogil=True)
def _pxap_hist_batch(scores, masks, edges, lut, out):
    # scores (B, N) float64, masks (B, N) uint8, edges (K + 3,) = thresholds then 1, 2, 3,
    # lut (1025,) bin of u / 1024, out (B, 2, K + 2) int64. Bin b: edges[b] <= s < edges[b + 1],
    # the last bin closed, values outside [edges[0], 3] dropped (as np.histogram does).
    K = edges.shape[0] - 3
    for i in range(scores.shape[0]):
        for j in range(scores.shape[1]):
            m = masks[i, j]
            if m > 1:
                continue
            s = np.float64(scores[i, j])
            if s >= 1.0:
                if s < 2.0:
                    b = K
                elif s <= 3.0:
                    b = K + 1
                else:
                    continue
            elif s >= 0.0:
                b = lut[int(s * 1024.0)]  # s * 1024 is exact: its floor is the bucket
                while b + 1 < K and edges[b + 1] <= s:
                    b += 1
                if b < 0:
                    continue
            else:
                continue
            out[i, 1 - m, b] += 1


_PXAP_LUT_SIZE = 4096  # buckets of [0, 1] for the histogram of maps known to lie in [0, 1]


@njit(cache=True, inline="always")
def _grid_index(s, m, M, K, nb):
    # PxAP bin of a float32 s in [0, 1] on a uniform grid k / M (see _uniform_grid_multiplier), offset by the
    # pixel's category (0 fg, 1 bg, 2 dropped) times nb = K + 3, plus 1 (the sub-histogram layout)
    b = min(np.int32(np.float64(s) * M), np.int32(K))  # the float64 product is exact; s = 1.0: bin K, [1, 2)
    c = np.int32(2) - np.int32(m == 0) - np.int32(2) * np.int32(m == 1)
    return np.uint16(b + 1 + c * nb)


@njit(cache=True, inline="always")
def _scatter_index(idx, n, nb, sub, out):
    # out (2, K + 2) += the histogram of idx[:n] (from _grid_index), through four interleaved sub-histograms
    # (they break the read-modify-write chains of equal bins)
    sub[:] = 0
    for p in range(n):
        sub[np.uint32((p & 3) * 3 * nb) + np.uint32(idx[p])] += 1
    for q in range(4):
        for c in range(2):
            for b in range(1, nb):
                out[c, b - 1] += sub[(3 * q + c) * nb + b]


@njit(cache=True, inline="always")
def _pxap_hist_unit_one(scores, masks, e32, lut, cat, out, sub, idx):
    # One image. scores (N,) float32 in [0, 1]; masks (N,) uint8; e32 (K + 3,) float32: the edges rounded up to
    # float32 (for a float32 s, s >= edge <=> s >= e32); lut (S + 1,) uint16: 1 + bin of k / S (0: below the
    # first edge); cat (256,) uint8: 0 foreground, 1 background, 2 dropped; out (2, K + 2), added to;
    # sub (4 * 3 * (K + 3),) int32 and idx (N,) uint16 scratch. Needs at most one edge inside any bucket
    # (edge spacing > 1 / S): one compare then fixes the bin. Two branch-free passes: float32 bins first
    # (s * S is exact: S is a power of two), then four interleaved sub-histograms (they break the
    # read-modify-write chains of equal bins).
    nb = e32.shape[0]
    S = np.float32(lut.shape[0] - 1)
    n = scores.shape[0]
    for p in range(n):
        s = scores[p]
        b = lut[np.uint32(s * S)]
        idx[p] = b + np.uint16(e32[b] <= s) + np.uint16(cat[masks[p]]) * np.uint16(nb)
    _scatter_index(idx, n, nb, sub, out)


@njit(cache=True, nogil=True)
def _pxap_hist_unit(scores, masks, e32, lut, cat, out):
    # scores (B, N) float32, masks (B, N), out (B, 2, K + 2): _pxap_hist_unit_one per image
    sub = np.empty(12 * e32.shape[0], np.int32)
    idx = np.empty(scores.shape[1], np.uint16)
    for i in range(scores.shape[0]):
        _pxap_hist_unit_one(scores[i], masks[i], e32, lut, cat, out[i], sub, idx)


@njit(cache=True, nogil=True, parallel=True)
def _pxap_hist_unit_parallel(scores, masks, e32, lut, cat, out):
    # the same over the images on numba threads (each image its own scratch)
    for i in prange(scores.shape[0]):
        sub = np.empty(12 * e32.shape[0], np.int32)
        idx = np.empty(scores.shape[1], np.uint16)
        _pxap_hist_unit_one(scores[i], masks[i], e32, lut, cat, out[i], sub, idx)


@njit(cache=True, inline="always")
def _pxap_hist_grid_one(scores, masks, M, K, out, sub, idx):
    # _pxap_hist_unit_one for a uniform grid (thresholds k / M, k < K = M; see _uniform_grid_multiplier): the bin of
    # a float32 s in [0, 1] is floor(s * M), the product taken in float64, where it is exact (24 + 30 bits < 53).
    # No table lookups, so the first pass vectorizes; the category is arithmetic.
    nb = K + 3
    for p in range(scores.shape[0]):
        idx[p] = _grid_index(scores[p], masks[p], M, K, nb)
    _scatter_index(idx, scores.shape[0], nb, sub, out)


@njit(cache=True, nogil=True)
def _pxap_hist_grid(scores, masks, M, K, out):
    sub = np.empty(12 * (K + 3), np.int32)
    idx = np.empty(scores.shape[1], np.uint16)
    for i in range(scores.shape[0]):
        _pxap_hist_grid_one(scores[i], masks[i], M, K, out[i], sub, idx)


@njit(cache=True, nogil=True, parallel=True)
def _pxap_hist_grid_parallel(scores, masks, M, K, out):
    for i in prange(scores.shape[0]):
        sub = np.empty(12 * (K + 3), np.int32)
        idx = np.empty(scores.shape[1], np.uint16)
        _pxap_hist_grid_one(scores[i], masks[i], M, K, out[i], sub, idx)


@functools.lru_cache(maxsize=32)
def _uniform_grid_multiplier_cached(edges_bytes: bytes) -> float | None:
    edges = np.frombuffer(edges_bytes, np.float64)
    K = edges.shape[0] - 3
    if K < 1 or K > 20000 or edges[0] != 0.0:  # bins of 3 categories fit the uint16 index
        return None
    M = float(K)
    k = np.arange(K, dtype=np.float64)
    # c_k: the smallest float32 c with c * M >= k (exact float64 products); float32(k / M) is within half a
    # float32 step of k / M, so one step up or down finds it
    c = (k / M).astype(np.float32)
    low = c.astype(np.float64) * M < k
    c[low] = np.nextafter(c[low], np.float32(np.inf))
    prev = np.nextafter(c, np.float32(-np.inf))
    high = prev.astype(np.float64) * M >= k
    c[high] = prev[high]
    prev = np.nextafter(c, np.float32(-np.inf))
    if not ((c.astype(np.float64) * M >= k).all() and (prev.astype(np.float64) * M < k).all()):
        return None
    # the grid's own cut for each edge: the smallest float32 s with s >= edge (as float64)
    return M if np.array_equal(c, _edges_f32_up(edges[:K])) else None


def _uniform_grid_multiplier(edges: np.ndarray) -> float | None:
    """M when the PxAP edges are a uniform grid ``k / M`` (k < K = M) *as seen by float32 scores*: for every
    float32 s in [0, 1], ``edges[k] <= s`` exactly when ``s * M >= k``; else None. True of ``np.arange(0, 1, 1/M)``
    grids (the default 0.01 and wsoleval's 0.001), checked edge by edge, not assumed."""
    return _uniform_grid_multiplier_cached(np.ascontiguousarray(edges, np.float64).tobytes())


def _edges_f32_up(edges: np.ndarray) -> np.ndarray:
    """Each float64 edge rounded up to float32: for a float32 s, ``s >= edge`` iff ``s >= result``."""
    e32 = edges.astype(np.float32)  # round to nearest
    below = e32.astype(np.float64) < edges
    e32[below] = np.nextafter(e32[below], np.float32(np.inf))
    return e32


def _pxap_histograms_unit(maps: np.ndarray, masks: np.ndarray, thresholds, parallel: bool = False) -> np.ndarray:
    """:func:`pxap_histograms` of (B, H, W) maps already checked to lie in [0, 1]; (B, 2, K + 2) int64.

    ``parallel``: the images of the batch on numba threads.
    """
    edges = pxap_bin_edges(thresholds)
    K = edges.shape[0] - 3
    if K < 1 or np.any(np.diff(edges) <= 0) or edges[0] < 0 or edges[K - 1] >= 1:
        raise ValueError("thresholds must be strictly increasing values in [0, 1)")
    B = maps.shape[0]
    out = np.zeros((B, 2, K + 2), dtype=np.int64)
    if maps.size == 0:
        return out
    if maps.dtype != np.float32:
        return pxap_histograms(maps, masks, thresholds)
    flat_maps = np.ascontiguousarray(maps).reshape(B, -1)
    flat_masks = np.ascontiguousarray(masks, np.uint8).reshape(B, -1)
    M = _uniform_grid_multiplier(edges)
    if M is not None:  # the default grids: arithmetic bins, no table
        (_pxap_hist_grid_parallel if parallel else _pxap_hist_grid)(flat_maps, flat_masks, M, K, out)
        return out
    if np.diff(edges[: K + 1]).min(initial=1.0) <= 1.0 / _PXAP_LUT_SIZE:
        return pxap_histograms(maps, masks, thresholds)  # edges too dense for one fix-up compare
    lut = np.searchsorted(edges[: K + 1], np.arange(_PXAP_LUT_SIZE + 1) / _PXAP_LUT_SIZE, side="right")
    cat = np.full(256, 2, np.uint8)
    cat[1], cat[0] = 0, 1
    kernel = _pxap_hist_unit_parallel if parallel else _pxap_hist_unit
    kernel(flat_maps, flat_masks, _edges_f32_up(edges), lut.astype(np.uint16), cat, out)
    return out


def pxap_histograms(scoremaps, masks, thresholds=None) -> np.ndarray:
    """Per-image score histograms of foreground and background pixels (ignore pixels dropped).

    Binning equals ``np.histogram(scores.astype(float64), bins=pxap_bin_edges(thresholds))``.

    Args:
        scoremaps: (B, H, W) float maps in [0, 1].
        masks: (B, H, W) uint8: 1 foreground, 0 background, anything else (255) ignored.
        thresholds: (K,) CAM thresholds; :func:`threshold_grid` () if None.

    Returns:
        (B, 2, K + 2) int64: ``[:, 0]`` foreground counts, ``[:, 1]`` background counts.

    Example:
        >>> s = np.array([[[0.0, 0.5], [1.0, 0.25]]]); m = np.array([[[1, 0], [1, 255]]], np.uint8)
        >>> pxap_histograms(s, m, thresholds=[0.0, 0.5])
        array([[[1, 0, 1, 0],
                [0, 1, 0, 0]]])
    """
    if isinstance(scoremaps, torch.Tensor):
        scoremaps = scoremaps.detach().cpu().numpy()
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    scoremaps = np.asarray(scoremaps)
    masks = np.asarray(masks)
    if scoremaps.ndim == 2:
        scoremaps, masks = scoremaps[None], masks[None]
    if scoremaps.shape != masks.shape:
        raise ValueError(f"masks {masks.shape} must match scoremaps {scoremaps.shape}")
    B = scoremaps.shape[0]
    edges = pxap_bin_edges(thresholds)
    if scoremaps.dtype not in (np.float32, np.float64):
        scoremaps = scoremaps.astype(np.float64)
    npix = int(np.prod(scoremaps.shape[1:]))
    scores = np.ascontiguousarray(scoremaps.reshape(B, npix))  # float32 is widened exactly in the kernel
    m = np.ascontiguousarray(masks.reshape(B, npix)).astype(np.uint8, copy=False)
    K = edges.shape[0] - 3
    if K < 1 or np.any(np.diff(edges) <= 0) or edges[0] < 0 or edges[K - 1] >= 1:
        raise ValueError("thresholds must be strictly increasing values in [0, 1)")
    lut = (np.searchsorted(edges[:K], np.arange(1025) / 1024.0, side="right") - 1).astype(np.int64)
    out = np.zeros((B, 2, K + 2), dtype=np.int64)
    _pxap_hist_batch(scores, m, edges, lut, out)
    return out


def pxap_from_histograms(fg_hist: np.ndarray, bg_hist: np.ndarray) -> dict[str, np.ndarray | float]:
    """PxAP (percent), precision/recall/pixel-IoU curves from dataset-level histograms.

    ``tp`` and ``fp`` at each edge are reversed cumulative sums (pixels with score >= edge);
    precision = tp / (tp + fp), recall = tp / positives, PxAP = 100 * sum of
    precision_i * (recall_i - recall_{i-1}) over points with tp + fp > 0 (wsoleval, no interpolation).
    The pixel IoU at a threshold is tp / (tp + fp + fn) of the binary mask ``score >= t``; ``PIoU`` is its
    maximum over the thresholds, in percent.

    Args:
        fg_hist, bg_hist: (K + 2,) counts over :func:`pxap_bin_edges` bins.

    Returns:
        dict: ``pxap`` (float), ``piou`` (float), ``best_piou_index`` (int); ``precision``, ``recall``,
        ``piou_curve`` (K,) arrays in ascending threshold order (precision 0 where nothing is predicted).

    Example:
        >>> r = pxap_from_histograms(np.array([0, 2, 0, 0]), np.array([1, 0, 0, 0]))
        >>> float(r["pxap"]), float(r["piou"]), r["recall"].tolist()
        (100.0, 100.0, [1.0, 1.0])
    """
    fg = np.asarray(fg_hist, dtype=np.float64)
    bg = np.asarray(bg_hist, dtype=np.float64)
    n_pos = fg.sum()
    tp = fg[::-1].cumsum()  # scores >= edge, from the top edge down
    fp = bg[::-1].cumsum()
    if n_pos <= 0:
        raise RuntimeError("PxAP: no positive ground-truth pixel in the evaluated set")
    if ((tp + fp) <= 0).all():
        raise RuntimeError("PxAP: no positive prediction in the evaluated set")
    predicted = tp + fp
    nonzero = predicted != 0
    precision = tp / np.where(nonzero, predicted, 1.0)
    recall = tp / n_pos
    pxap = (precision[1:] * np.diff(recall))[nonzero[1:]].sum()
    pxap *= 100
    # curves at the K thresholds, ascending: reversed index K + 1 - k <-> threshold k
    K = fg.shape[0] - 2
    idx = np.arange(K + 1, 1, -1)
    fn = n_pos - tp
    piou = tp / (tp + fp + fn)
    piou_k = piou[idx]
    best = int(np.argmax(piou_k))
    return {
        "pxap": float(pxap),
        "piou": float(piou_k[best] * 100),
        "best_piou_index": best,
        "precision": precision[idx],
        "recall": recall[idx],
        "piou_curve": piou_k,
    }
