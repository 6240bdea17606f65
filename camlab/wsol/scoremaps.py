"""Score maps: thresholds, the uint8 maps the box metrics threshold, their maxima and cut levels.

Conventions of the public WSOL benchmark (clovaai/wsolevaluation, "wsoleval"):

* a score map is a float map in [0, 1] (min-max normalized CAM); NaN or values outside are rejected;
* ``u8 = (map * 255).astype(uint8)``: truncation, computed in the map's own dtype. wsoleval takes float64
  maps; a float32 map's float32 product truncates to the same integer as the float64 product of its exact
  float64 copy (tested for the float32 values around every k / 255), so both dtypes get wsoleval's numbers.
  float64 maps are never rounded to float32 (that would move scores across PxAP edges and uint8 steps);
* the threshold grid is ``np.arange(0, 1, interval)`` (not exactly k * interval);
* at threshold ``t`` a pixel is foreground iff ``u8 > int(t * u8.max())``: the *cut level* of the image.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from numba import njit
from torch import Tensor

from camlab.cam import minmax_normalize

__all__ = ["RANGE_ERROR", "ScoreMaps", "check_scoremaps", "cut_levels", "resolve_thresholds", "scoremap_to_uint8",
           "threshold_grid"]

RANGE_ERROR = ("score maps must be in [0, 1] without NaN (min-max normalize them, e.g. camlab.cam.minmax_normalize; "
               "divide 0-255 maps by 255)")


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


def resolve_thresholds(cam_thresholds=None) -> np.ndarray:
    """None -> ``np.arange(0, 1, 0.01)``; a float -> ``np.arange(0, 1, interval)``; a sequence as is.

    Example:
        >>> len(resolve_thresholds(None)), len(resolve_thresholds(0.1)), resolve_thresholds([0.2, 0.5]).tolist()
        (100, 10, [0.2, 0.5])
    """
    if cam_thresholds is None:
        return threshold_grid(0.01)
    if isinstance(cam_thresholds, bool):
        raise ValueError(f"cam_thresholds must be None, an interval or a sequence, got {cam_thresholds}")
    if isinstance(cam_thresholds, (float, int)):
        if not 0 < float(cam_thresholds) < 1:
            raise ValueError(f"cam threshold interval must be in (0, 1), got {cam_thresholds}")
        return threshold_grid(float(cam_thresholds))
    grid = np.asarray(list(cam_thresholds), dtype=np.float64)
    if grid.ndim != 1 or grid.size == 0:
        raise ValueError("cam_thresholds must be None, an interval, or a non-empty 1-D sequence")
    if (grid < 0).any() or (grid >= 1).any() or (np.diff(grid) <= 0).any():
        raise ValueError(f"cam_thresholds must be strictly increasing values in [0, 1), got {grid.tolist()}")
    return grid


def scoremap_to_uint8(scoremaps: np.ndarray) -> np.ndarray:
    """``(map * 255).astype(uint8)`` in the map's dtype (truncation; float32 maps stay float32).

    Example:
        >>> scoremap_to_uint8(np.array([[0.0, 0.5, 0.999, 1.0]], dtype=np.float32))
        array([[  0, 127, 254, 255]], dtype=uint8)
    """
    return (scoremaps * 255).astype(np.uint8)


def cut_levels(vmax, thresholds) -> np.ndarray:
    """Cut levels ``int(t * max)`` per image and threshold (foreground is ``u8 > level``): (B, T) int64.

    Args:
        vmax: (B,) uint8 maxima of the maps (or one int).
        thresholds: (T,) CAM thresholds.

    Example:
        >>> cut_levels([200, 7], [0.0, 0.5, 0.99]).tolist()
        [[0, 100, 198], [0, 3, 6]]
    """
    vmax = np.atleast_1d(np.asarray(vmax, dtype=np.float64))
    thresholds = np.asarray(thresholds, dtype=np.float64)
    return np.trunc(vmax[:, None] * thresholds[None, :]).astype(np.int64)


@njit(cache=True, nogil=True)
def _u8_f32(maps, bits, u8, vmax):
    # maps (B, N) float32 and the same memory as uint32 bits: u8 = trunc(map * 255) in float32 (numpy's
    # product), vmax (B,) per-image max of u8. Returns whether every value is in [0, 1]: a float32 in
    # [0, 1] (or -0.0) has bits <= those of 1.0; NaN and negatives do not. Branch-free, so it vectorizes.
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
def _u8_f64(maps, u8, vmax):
    # maps (B, N) float64: u8 = trunc(map * 255) (the float64 product, as numpy's), vmax (B,); returns whether
    # every value is in [0, 1] (NaN fails both comparisons)
    ok = True
    for i in range(maps.shape[0]):
        mx = np.int32(0)
        good = True
        for p in range(maps.shape[1]):
            v = maps[i, p]
            good &= (v >= 0.0) & (v <= 1.0)
            u = np.int32(v * 255.0)  # garbage where out of range: then the whole batch is refused
            u8[i, p] = u
            mx = max(mx, u)
        vmax[i] = mx
        ok &= good
    return ok


@njit(cache=True, nogil=True)
def _in_unit_range(flat):
    for i in range(flat.shape[0]):
        v = flat[i]
        if not (v >= 0.0 and v <= 1.0):  # NaN fails both
            return False
    return True


@njit(cache=True, nogil=True)
def _normalize_u8_f32(cams, out, u8, vmax):
    # cams (B, N) float32 raw maps -> out: min-max normalized with the same float32 operations as
    # camlab.cam.minmax_normalize ((v - min) / (max - min); NaN or constant -> zeros), so bit-identical;
    # u8 / vmax as in _u8_f32. Returns whether every normalized value is in [0, 1] (an inf breaks it).
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


def check_scoremaps(maps) -> None:
    """Raise ValueError unless every value is in [0, 1] (no NaN), as wsoleval's evaluator requires.

    Example:
        >>> check_scoremaps(np.array([[0.0, 1.0]], np.float32))
        >>> check_scoremaps(np.array([[0.0, 1.5]]))
        Traceback (most recent call last):
        ...
        ValueError: score maps must be in [0, 1] without NaN (min-max normalize them, e.g. camlab.cam.minmax_normalize; divide 0-255 maps by 255)
    """
    flat = np.ascontiguousarray(maps).reshape(-1)
    if flat.dtype not in (np.float32, np.float64):
        flat = flat.astype(np.float64)
    if flat.size and not _in_unit_range(flat):
        raise ValueError(RANGE_ERROR)


def _as_numpy_maps(cams) -> np.ndarray:
    """(B, H, W) numpy maps from a tensor or array (a single (H, W) map becomes a batch of one); float64 stays
    float64, every other dtype becomes float32 (exactly: uint8 / 255 is not done here, values are taken as is)."""
    if isinstance(cams, Tensor):
        cams = cams.detach().to("cpu")
        cams = cams.numpy() if cams.dtype == torch.float64 else cams.to(torch.float32).numpy()
    cams = np.asarray(cams)
    if cams.ndim == 2:
        cams = cams[None]
    if cams.ndim != 3:
        raise ValueError(f"score maps must be (B, H, W), got shape {cams.shape}")
    if cams.dtype != np.float64:
        cams = cams.astype(np.float32)
    return np.ascontiguousarray(cams)


class ScoreMaps:
    """A batch of score maps converted once: (B, H, W) maps in [0, 1], their uint8 maps and maxima.

    ``ScoreMaps(maps)`` takes maps already in [0, 1] (numpy or torch; float64 stays float64, other dtypes
    become float32) and checks the range (ValueError otherwise). :meth:`normalize` takes *raw* maps and
    min-max normalizes them with the same operations as :func:`camlab.cam.minmax_normalize` in the maps'
    dtype (bit-identical), for float32 in the same pass as the uint8 conversion. Every metric function
    and :class:`~camlab.wsol.WSOLMetrics` accepts one in place of the maps, so a batch is converted once.

    Attributes: ``maps`` (B, H, W) float32/float64, ``u8`` (B, H, W) uint8, ``vmax`` (B,) int64, ``shape``.

    Example:
        >>> sm = ScoreMaps.normalize(torch.tensor([[[1.0, 3.0], [2.0, 3.0]]]))
        >>> sm.maps.tolist(), sm.u8.tolist(), sm.vmax.tolist()
        ([[[0.0, 1.0], [0.5, 1.0]]], [[[0, 255], [127, 255]]], [255])
        >>> sm.levels([0.5]).tolist()
        [[127]]
    """

    def __init__(self, maps, *, normalize: bool = False) -> None:
        maps = _as_numpy_maps(maps)
        B = maps.shape[0]
        if normalize and maps.dtype == np.float64:
            maps = minmax_normalize(torch.from_numpy(maps)).numpy()
        u8 = np.zeros(maps.shape, np.uint8)
        vmax = np.zeros(B, np.int64)
        if maps.size:
            flat, flat_u8 = maps.reshape(B, -1), u8.reshape(B, -1)
            if maps.dtype == np.float64:
                ok = _u8_f64(flat, flat_u8, vmax)
            elif normalize:
                out = np.empty(flat.shape, np.float32)
                ok = _normalize_u8_f32(flat, out, flat_u8, vmax)
                maps = out.reshape(maps.shape)
            else:
                ok = _u8_f32(flat, flat.view(np.uint32), flat_u8, vmax)
            if not ok:
                raise ValueError(RANGE_ERROR)
        self.maps, self.u8, self.vmax = maps, u8, vmax
        self.shape = maps.shape

    @classmethod
    def normalize(cls, cams) -> "ScoreMaps":
        """Raw (B, H, W) maps -> min-max normalized score maps (see the class docstring)."""
        return cls(cams, normalize=True)

    @classmethod
    def of(cls, maps) -> "ScoreMaps":
        """``maps`` itself if it is a ScoreMaps, else ``ScoreMaps(maps)``."""
        return maps if isinstance(maps, ScoreMaps) else cls(maps)

    def levels(self, thresholds: Sequence[float]) -> np.ndarray:
        """(B, T) cut levels of these maps at the thresholds (:func:`cut_levels`)."""
        return cut_levels(self.vmax, thresholds)

    def __len__(self) -> int:
        return self.shape[0]
