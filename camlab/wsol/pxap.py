"""PxAP: per-image score histograms of foreground / background pixels, and PxAP / PIoU from their sums.

wsoleval's convention: raw float64 scores go into a histogram with edges = the CAM thresholds followed by
1, 2, 3 (bins ``[e_i, e_i+1)``, the last one closed); GT mask 1 is foreground, 0 background, anything else
(255) is ignored. Reversed cumulative sums give tp / fp at each edge; PxAP = 100 x the sum of
precision_i x (recall_i - recall_{i-1}) over points predicting something (no interpolation, no anchor).

:func:`pxap_histograms` is the one public histogram function. Inside it: float32 maps on a uniform grid
``k / M`` (the default 0.01 and wsoleval's 0.001, checked edge by edge against the float32 values, not
assumed) take arithmetic bins ``floor(s * M)`` (the float64 product of a float32 is exact) in a branch-free
pass; every other case (float64 maps, other grids) takes the general path: a uniform-grid guess fixed by
comparisons with the edges.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from numba import njit, prange

from camlab.wsol.scoremaps import ScoreMaps

__all__ = ["pxap_bin_edges", "pxap_from_histograms", "pxap_histograms"]


def pxap_bin_edges(thresholds=None) -> np.ndarray:
    """wsoleval's float64 histogram edges: the thresholds, then 1, 2, 3 (bins ``[e_i, e_i+1)``).

    Example:
        >>> pxap_bin_edges([0.0, 0.5])
        array([0. , 0.5, 1. , 2. , 3. ])
    """
    thresholds = np.arange(0, 1, 0.01) if thresholds is None else thresholds
    edges = np.append(np.asarray(thresholds, dtype=np.float64), [1.0, 2.0, 3.0])
    K = edges.shape[0] - 3
    if K < 1 or np.any(np.diff(edges) <= 0) or edges[0] < 0 or edges[K - 1] >= 1:
        raise ValueError("thresholds must be strictly increasing values in [0, 1)")
    return edges


@njit(cache=True, nogil=True)
def _hist_general(scores, masks, edges, out):
    # scores (B, N) float32/float64 (widened exactly), masks (B, N) uint8, out (B, 2, K + 2): np.histogram's
    # bins over edges (the last bin closed, values outside [edges[0], 3] dropped). The bin is guessed as if the
    # thresholds were uniform on [0, 1) and then fixed by comparisons with the edges, so it is exact on any grid
    # and costs one or two compares on the usual ones.
    nb = edges.shape[0] - 1
    K = nb - 2  # thresholds; edges[K] = 1, edges[K + 1] = 2, edges[K + 2] = 3
    for i in range(scores.shape[0]):
        for j in range(scores.shape[1]):
            m = masks[i, j]
            if m > 1:
                continue
            s = np.float64(scores[i, j])
            if not (s >= edges[0] and s <= edges[nb]):
                continue
            if s >= 1.0:
                b = K if s < 2.0 else K + 1
            else:
                b = min(np.int64(s * K), K - 1)
                while edges[b] > s:
                    b -= 1
                while edges[b + 1] <= s:
                    b += 1
            out[i, 1 - m, b] += 1


@njit(cache=True, inline="always")
def _grid_hist_one(scores, masks, M, K, out, sub, idx):
    # One float32 image on a uniform grid k / M (k < K = M): bin floor(s * M) in float64 (exact), s = 1.0 in
    # bin K ([1, 2)). Pass 1 writes each pixel's bin offset by its category (0 fg, 1 bg, 2 dropped) times
    # nb = K + 3, plus 1; pass 2 counts them in four interleaved sub-histograms (breaking the
    # read-modify-write chains of equal bins), then folds them into out (2, K + 2).
    nb = K + 3
    n = scores.shape[0]
    for p in range(n):
        b = min(np.int32(np.float64(scores[p]) * M), np.int32(K))
        m = masks[p]
        c = np.int32(2) - np.int32(m == 0) - np.int32(2) * np.int32(m == 1)
        idx[p] = np.uint16(b + 1 + c * nb)
    sub[:] = 0
    for p in range(n):
        sub[np.uint32((p & 3) * 3 * nb) + np.uint32(idx[p])] += 1
    for q in range(4):
        for c in range(2):
            for b in range(1, nb):
                out[c, b - 1] += sub[(3 * q + c) * nb + b]


@njit(cache=True, nogil=True)
def _hist_grid(scores, masks, M, K, out):
    sub = np.empty(12 * (K + 3), np.int32)
    idx = np.empty(scores.shape[1], np.uint16)
    for i in range(scores.shape[0]):
        _grid_hist_one(scores[i], masks[i], M, K, out[i], sub, idx)


@njit(cache=True, nogil=True, parallel=True)
def _hist_grid_parallel(scores, masks, M, K, out):
    for i in prange(scores.shape[0]):
        sub = np.empty(12 * (K + 3), np.int32)
        idx = np.empty(scores.shape[1], np.uint16)
        _grid_hist_one(scores[i], masks[i], M, K, out[i], sub, idx)


def _edges_f32_up(edges: np.ndarray) -> np.ndarray:
    """Each float64 edge rounded up to float32: for a float32 s, ``s >= edge`` iff ``s >= result``."""
    e32 = edges.astype(np.float32)
    below = e32.astype(np.float64) < edges
    e32[below] = np.nextafter(e32[below], np.float32(np.inf))
    return e32


@functools.lru_cache(maxsize=32)
def _grid_multiplier(edges_bytes: bytes) -> float | None:
    edges = np.frombuffer(edges_bytes, np.float64)
    K = edges.shape[0] - 3
    if K < 1 or K > 20000 or edges[0] != 0.0:  # 3 categories of bins fit the uint16 index
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
    return M if np.array_equal(c, _edges_f32_up(edges[:K])) else None


def uniform_grid_multiplier(edges: np.ndarray) -> float | None:
    """M when the edges are a uniform grid ``k / M`` (k < K = M) *as seen by float32 scores*: for every
    float32 s in [0, 1], ``edges[k] <= s`` exactly when ``s * M >= k``; else None.

    Example:
        >>> uniform_grid_multiplier(pxap_bin_edges(np.arange(0, 1, 0.01))), uniform_grid_multiplier(pxap_bin_edges([0.0, 0.3]))
        (100.0, None)
    """
    return _grid_multiplier(np.ascontiguousarray(edges, np.float64).tobytes())


def pxap_histograms(scoremaps, masks, thresholds=None, parallel: bool = False) -> np.ndarray:
    """Per-image score histograms of foreground and background pixels (ignore pixels dropped).

    Binning equals ``np.histogram(scores.astype(float64), bins=pxap_bin_edges(thresholds))`` (values
    outside [0, 3] dropped, as there).

    Args:
        scoremaps: (B, H, W) float maps (numpy, torch or :class:`~camlab.wsol.ScoreMaps`; an (H, W) map is a
            batch of one).
        masks: (B, H, W) uint8: 1 foreground, 0 background, anything else (255) ignored.
        thresholds: (K,) CAM thresholds; ``np.arange(0, 1, 0.01)`` if None.
        parallel: the images of the batch on numba threads (the uniform-grid path).

    Returns:
        (B, 2, K + 2) int64: ``[:, 0]`` foreground counts, ``[:, 1]`` background counts.

    Example:
        >>> s = np.array([[[0.0, 0.5], [1.0, 0.25]]]); m = np.array([[[1, 0], [1, 255]]], np.uint8)
        >>> pxap_histograms(s, m, thresholds=[0.0, 0.5])
        array([[[1, 0, 1, 0],
                [0, 1, 0, 0]]])
    """
    in_range = isinstance(scoremaps, ScoreMaps)  # checked at conversion
    if in_range:
        scoremaps = scoremaps.maps
    if isinstance(scoremaps, torch.Tensor):
        scoremaps = scoremaps.detach().cpu().numpy()
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().to(torch.uint8).numpy()
    scoremaps, masks = np.asarray(scoremaps), np.asarray(masks)
    if scoremaps.ndim == 2:
        scoremaps, masks = scoremaps[None], masks[None]
    if scoremaps.shape != masks.shape:
        raise ValueError(f"masks {masks.shape} must match score maps {scoremaps.shape}")
    edges = pxap_bin_edges(thresholds)
    K = edges.shape[0] - 3
    B = scoremaps.shape[0]
    out = np.zeros((B, 2, K + 2), dtype=np.int64)
    if scoremaps.size == 0:
        return out
    if scoremaps.dtype not in (np.float32, np.float64):
        scoremaps = scoremaps.astype(np.float64)
    scores = np.ascontiguousarray(scoremaps).reshape(B, -1)
    flat_masks = np.ascontiguousarray(masks).astype(np.uint8, copy=False).reshape(B, -1)
    M = uniform_grid_multiplier(edges) if scores.dtype == np.float32 else None
    if M is not None and (in_range or bool(np.all((scores >= 0) & (scores <= 1)))):
        (_hist_grid_parallel if parallel else _hist_grid)(scores, flat_masks, M, K, out)
    else:
        _hist_general(scores, flat_masks, edges, out)
    return out


def pxap_from_histograms(fg_hist, bg_hist) -> dict:
    """PxAP (percent), precision / recall / pixel-IoU curves from dataset-level histograms.

    ``tp`` and ``fp`` at each edge are reversed cumulative sums (pixels with score >= edge); precision =
    tp / (tp + fp), recall = tp / positives, PxAP = 100 x sum of precision_i x (recall_i - recall_{i-1})
    over points with tp + fp > 0 (wsoleval, no interpolation). The pixel IoU at a threshold is
    tp / (tp + fp + fn) of the binary mask ``score >= t``; ``piou`` is its maximum over the thresholds, in
    percent (not in wsoleval's code; defined here).

    Args:
        fg_hist, bg_hist: (K + 2,) counts over :func:`pxap_bin_edges` bins.

    Returns:
        dict: ``pxap`` (float), ``piou`` (float), ``best_piou_index`` (int); ``precision``, ``recall``,
        ``piou_curve`` (K,) arrays in ascending threshold order (precision 0 where nothing is predicted).

    Raises:
        ValueError: no positive pixel, or nothing predicted, in the histograms.

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
        raise ValueError("PxAP: no positive ground-truth pixel in the evaluated set")
    if ((tp + fp) <= 0).all():
        raise ValueError("PxAP: no positive prediction in the evaluated set")
    predicted = tp + fp
    nonzero = predicted != 0
    precision = tp / np.where(nonzero, predicted, 1.0)
    recall = tp / n_pos
    pxap = 100 * (precision[1:] * np.diff(recall))[nonzero[1:]].sum()
    K = fg.shape[0] - 2
    idx = np.arange(K + 1, 1, -1)  # reversed index K + 1 - k <-> threshold k, ascending
    piou = (tp / (tp + fp + (n_pos - tp)))[idx]
    best = int(np.argmax(piou))
    return {"pxap": float(pxap), "piou": float(piou[best] * 100), "best_piou_index": best,
            "precision": precision[idx], "recall": recall[idx], "piou_curve": piou}
