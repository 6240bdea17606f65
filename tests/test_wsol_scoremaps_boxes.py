"""camlab.wsol.scoremaps and camlab.wsol.boxes: thresholds, uint8 maps, cut levels, ScoreMaps, box conventions and
hand-worked box examples (through boxes_at_threshold and best_ious) against the plain reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _wsol_maps import random_boxes, random_map
from _wsol_reference import ref_best_ious, ref_boxes, ref_iou
from camlab.cam import minmax_normalize, upsample
from camlab.wsol import (ScoreMaps, best_ious, box_iou_inclusive, boxes_at_threshold, check_scoremaps, cut_levels,
                         gt_boxes_to_int, resolve_thresholds, scoremap_to_uint8, threshold_grid)
from camlab.wsol.boxes import inclusive_gt, prediction_to_xyxy
from camlab.wsol.scoremaps import RANGE_ERROR

GRID = threshold_grid()


def both(m, gt, thresholds=GRID):
    """(all-contour, largest-contour) best IoU curves of one float map against float GT boxes."""
    m = np.asarray(m, np.float32)[None]
    gt = np.asarray(gt, np.float64)[None]
    return (best_ious(m, gt, thresholds=thresholds)[0],
            best_ious(m, gt, thresholds=thresholds, multi_contour=False)[0])


# --- thresholds ------------------------------------------------------------------------------------
def test_grid_is_arange():
    g = threshold_grid(0.01)
    assert len(g) == 100 and np.array_equal(g, np.arange(0, 1, 0.01))
    assert g[35] != 0.35  # one float step above k/100: wsoleval's grid, not k/100
    for bad in (0, 1, -0.1, 1.5):
        with pytest.raises(ValueError):
            threshold_grid(bad)


def test_resolve_thresholds():
    assert np.array_equal(resolve_thresholds(None), np.arange(0, 1, 0.01))
    assert np.array_equal(resolve_thresholds(0.05), np.arange(0, 1, 0.05))
    assert resolve_thresholds([0.2, 0.5]).tolist() == [0.2, 0.5]
    assert resolve_thresholds((0.0,)).dtype == np.float64
    for bad in (1.5, 0, [], [0.5, 0.2], [0.2, 0.2], [-0.1, 0.5], [0.5, 1.0], [[0.1, 0.2]]):
        with pytest.raises(ValueError):
            resolve_thresholds(bad)
    with pytest.raises(ValueError, match="interval"):  # a bool is not an interval
        resolve_thresholds(True)


# --- score maps ----------------------------------------------------------------------------------
def test_normalize_constant_and_nan_maps_become_zero():
    cams = torch.stack([torch.full((4, 5), 3.0), torch.arange(20.0).view(4, 5), torch.ones(4, 5)])
    cams[2, 1, 1] = float("nan")
    for raw in (cams, cams.double()):
        sm = ScoreMaps.normalize(raw)
        assert (sm.maps[0] == 0).all() and (sm.maps[2] == 0).all() and sm.vmax.tolist() == [0, 255, 0]
        assert sm.maps[1].min() == 0 and sm.maps[1].max() == 1 and sm.maps[1, 0, 1] == pytest.approx(1 / 19)


def test_upsample_shape_and_align_corners_false():
    x = torch.rand(2, 3, 4)
    y = upsample(x, (6, 8))
    assert y.shape == (2, 6, 8)
    assert torch.allclose(y, F.interpolate(x[:, None], (6, 8), mode="bilinear", align_corners=False)[:, 0])


def test_uint8_truncates():
    assert scoremap_to_uint8(np.array([0.999, 0.5, 1.0], np.float32)).tolist() == [254, 127, 255]
    assert ScoreMaps(np.array([[[0.999, 0.5, 1.0]]], np.float32)).u8.tolist() == [[[254, 127, 255]]]


def test_uint8_of_float32_maps_equals_the_float64_product():
    """wsoleval's evaluator multiplies float64 maps by 255. For float32 maps camlab multiplies in float32; that
    truncates to the same integer for every float32 value in [0, 1]: a difference needs a product within half a
    float32 step of an integer k, i.e. a value within about half a step of k / 255, so the values around every
    k / 255 (here 64 steps each way) are all the candidates."""
    vals = []
    for k in range(256):
        v = np.float32(k / 255)
        lo = hi = v
        vals.append(v)
        for _ in range(64):
            lo, hi = np.nextafter(lo, np.float32(-1)), np.nextafter(hi, np.float32(2))
            vals += [lo, hi]
    v = np.array(vals, np.float32)
    v = v[(v >= 0) & (v <= 1)]
    assert len(v) > 32000
    f64 = np.floor(v.astype(np.float64) * 255.0).astype(np.int64)  # exact: a float32 times 255 fits in float64
    assert np.array_equal(scoremap_to_uint8(v).astype(np.int64), f64)
    assert np.array_equal(ScoreMaps(v[None, None]).u8[0, 0].astype(np.int64), f64)  # the fused kernel too
    # a float64 map keeps its own product (no rounding to float32 on the way)
    s = 0.0039215686274509795  # the largest float64 with s * 255 < 1; float32(s) * 255 rounds to 1
    assert scoremap_to_uint8(np.array([s])).tolist() == [0]
    assert scoremap_to_uint8(np.array([s], np.float32)).tolist() == [1]
    assert ScoreMaps(np.array([[[s]]])).u8.tolist() == [[[0]]]
    assert ScoreMaps(np.array([[[s]]], np.float32)).u8.tolist() == [[[1]]]


def test_scoremaps_conversion_and_range_check():
    rng = np.random.default_rng(6)
    maps = rng.random((3, 9, 11)).astype(np.float32)
    maps[0, 0, :4] = [0.0, 1.0, -0.0, np.float32(0.99999994)]
    for m in (maps, maps.astype(np.float64), maps[:, ::2, 1:], torch.from_numpy(maps), torch.from_numpy(maps).half()):
        sm = ScoreMaps(m)
        ref = np.asarray(m.float().numpy() if isinstance(m, torch.Tensor) else m)
        assert sm.maps.dtype == (np.float64 if ref.dtype == np.float64 else np.float32)
        np.testing.assert_array_equal(sm.u8, scoremap_to_uint8(ref))
        assert sm.vmax.tolist() == [int(sm.u8[i].max()) for i in range(3)] and sm.shape == ref.shape and len(sm) == 3
        assert ScoreMaps.of(sm) is sm
    assert ScoreMaps(maps[0]).shape == (1, 9, 11)  # one (H, W) map is a batch of one
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        ScoreMaps(maps[None])
    for bad in (np.nan, -1e-30, 1.0000001, np.inf, -np.inf):
        b = maps.copy()
        b[1, 4, 5] = bad
        for m in (b, b.astype(np.float64), torch.from_numpy(b)):
            with pytest.raises(ValueError, match=r"in \[0, 1\]") as err:
                ScoreMaps(m)
            assert str(err.value) == RANGE_ERROR
        with pytest.raises(ValueError):
            check_scoremaps(b)
        with pytest.raises(ValueError):  # the public box functions check the range too
            best_ious(b, np.zeros((3, 1, 4)))
    check_scoremaps(maps)
    check_scoremaps(np.zeros((0, 4, 4)))
    empty = ScoreMaps(np.zeros((2, 0, 5), np.float32))
    assert empty.vmax.tolist() == [0, 0]


def test_scoremaps_normalize_is_bit_identical_to_minmax_normalize():
    g = torch.Generator().manual_seed(3)
    raw = torch.randn(9, 13, 17, generator=g) * torch.logspace(-4, 4, 9)[:, None, None] - 3.0
    raw[1] = 2.5  # constant map
    raw[2, 4, 4] = float("nan")  # NaN map
    raw[3] = -raw[3].abs()
    sm = ScoreMaps.normalize(raw)
    ref = minmax_normalize(raw).numpy()
    assert np.array_equal(sm.maps.view(np.uint32), ref.view(np.uint32))  # bit for bit, zeros included
    assert np.array_equal(sm.u8, (ref * 255).astype(np.uint8))
    assert sm.vmax.tolist() == [int(m.max()) for m in sm.u8]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ScoreMaps.normalize(torch.tensor([[[0.0, float("inf")]]]))  # (inf - 0) / inf is NaN
    # float64 raw maps stay float64: bit-identical to minmax_normalize in float64
    raw = torch.randn(3, 5, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    raw[1] = 4.0
    sm = ScoreMaps.normalize(raw)
    ref = minmax_normalize(raw).numpy()
    assert sm.maps.dtype == np.float64 and np.array_equal(sm.maps.view(np.uint64), ref.view(np.uint64))
    assert np.array_equal(sm.u8, (ref * 255).astype(np.uint8)) and sm.vmax.tolist() == [255, 0, 255]


def test_cut_levels_equal_int_t_times_max():
    # the vectorized per-image cut levels equal int(t * u8.max()) threshold by threshold, in plain Python
    rng = np.random.default_rng(5)
    maps = rng.random((40, 7, 9)).astype(np.float32) * rng.random((40, 1, 1)).astype(np.float32)
    maps[0] = 0.0
    maps[1, 0, 0] = 1.0
    sm = ScoreMaps(maps)
    for thresholds in (GRID, threshold_grid(0.05), threshold_grid(0.001), np.sort(rng.random(37))):
        levels = sm.levels(thresholds)
        assert levels.shape == (40, len(thresholds)) and levels.dtype == np.int64
        assert np.array_equal(levels, cut_levels(sm.vmax, thresholds))
        for i in range(40):
            vmax = int(scoremap_to_uint8(maps[i]).max())
            assert levels[i].tolist() == [int(t * vmax) for t in thresholds]
    assert cut_levels(255, [0.35, 0.36]).tolist() == [[89, 91]]  # int(0.35 * 255) = int(89.25); 0.36 * 255 = 91.8


# --- boxes: conventions ---------------------------------------------------------------------------
def test_iou_exactly_half_and_degenerate():
    assert box_iou_inclusive(np.array([[0, 0, 9, 9]]), np.array([[0, 0, 4, 9]]))[0, 0] == 0.5
    assert box_iou_inclusive(np.array([[5, 5, 4, 4]]), np.array([[5, 5, 3, 3]]))[0, 0] == 0.0  # union <= 0
    assert box_iou_inclusive(np.array([[0, 0, 0, 0]]), np.array([[0, 0, 0, 0]]))[0, 0] == 1.0
    assert box_iou_inclusive(np.zeros((0, 4)), np.zeros((3, 4))).shape == (0, 3)
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 20, (30, 4)), rng.integers(0, 20, (20, 4))
    assert box_iou_inclusive(a, b).tolist() == [[ref_iou(x, y) for y in b.tolist()] for x in a.tolist()]


def test_gt_truncation_and_validation():
    assert gt_boxes_to_int(np.array([[0.0, 1.99, 10.0, 7.5]])).tolist() == [[0, 1, 10, 7]]
    assert gt_boxes_to_int(torch.tensor([[1.9, 2.0, 10.5, 7.99]])).tolist() == [[1, 2, 10, 7]]
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(ValueError, match="finite"):
            gt_boxes_to_int(np.array([[0.0, 0.0, bad, 1.0]]))
    gt, n = inclusive_gt(np.zeros((2, 3, 4)), None, 2)
    assert gt.shape == (2, 3, 4) and n.tolist() == [3, 3]
    gt, n = inclusive_gt(torch.tensor([[0.5, 0.5, 3.5, 3.5]]), torch.tensor([1]), 1)  # one (G, 4) image
    assert gt.tolist() == [[[0, 0, 3, 3]]] and n.tolist() == [1]
    z = np.zeros((2, 3, 4))
    for boxes, num in ((z, [1, 4]), (z, [0, 1]), (z, [1]), (np.zeros((3, 3, 4)), None), (np.zeros((2, 3, 5)), None)):
        with pytest.raises(ValueError):
            inclusive_gt(boxes, num, 2)
    assert prediction_to_xyxy(np.array([2, 2, 6, 6])) == [2.0, 2.0, 6.0, 6.0]


# --- boxes: hand-worked examples ------------------------------------------------------------------
def test_square_blob_box_at_every_threshold():
    m = np.zeros((10, 12), np.float32)
    m[2:6, 3:8] = 1.0  # rows 2..5, columns 3..7
    u8 = scoremap_to_uint8(m)
    for t in GRID:
        assert boxes_at_threshold(u8, t).tolist() == [[3, 2, 8, 6]]  # x1 = 7 + 1, y1 = 5 + 1
    v2, v1 = both(m, [[3.0, 2.0, 8.0, 6.0]])
    assert (v2 == 1).all() and (v1 == 1).all()


def test_strict_relative_threshold():
    m = np.zeros((10, 10), np.float32)
    m[2:8, 2:8] = 0.5  # u8 127
    m[4:6, 4:6] = 1.0  # u8 255
    u8 = scoremap_to_uint8(m)
    # int(0.49 * 255) = 124 < 127: the outer square; int(0.5 * 255) = 127: 127 > 127 is false
    assert boxes_at_threshold(u8, 0.49).tolist() == [[2, 2, 8, 8]]
    assert boxes_at_threshold(u8, 0.50).tolist() == [[4, 4, 6, 6]]
    # relative to the map's max: halving the whole map changes nothing
    assert boxes_at_threshold(scoremap_to_uint8(m / 2), 0.49).tolist() == [[2, 2, 8, 8]]
    v2, _ = both(m, [[2.0, 2.0, 8.0, 8.0]], [0.49, 0.5])
    assert v2.tolist() == [1.0, 9 / 49]  # (4, 4, 6, 6) inside the inclusive 7 x 7 GT
    v2h, _ = both(m / 2, [[2.0, 2.0, 8.0, 8.0]], [0.49, 0.5])
    assert v2h.tolist() == v2.tolist()


def test_two_blobs_largest_vs_all():
    m = np.zeros((12, 12), np.float32)
    m[1:5, 1:5] = 1.0  # 4x4, contourArea 9
    m[8:10, 8:10] = 1.0  # 2x2, contourArea 1
    u8 = scoremap_to_uint8(m)
    assert sorted(boxes_at_threshold(u8, 0.5).tolist()) == [[1, 1, 5, 5], [8, 8, 10, 10]]
    assert boxes_at_threshold(u8, 0.5, multi_contour=False).tolist() == [[1, 1, 5, 5]]
    v2, v1 = both(m, [[8.0, 8.0, 10.0, 10.0]])
    assert (v2 == 1).all()
    assert (v1 == 0).all()  # boxes 1..5 and 8..10 do not overlap


def test_box_touching_border_is_clipped():
    m = np.zeros((8, 10), np.float32)
    m[5:8, 6:10] = 1.0  # touches the bottom-right corner
    assert boxes_at_threshold(scoremap_to_uint8(m), 0.3).tolist() == [[6, 5, 9, 7]]  # x+w = 10 -> 9
    v2, v1 = both(m, [[6.0, 5.0, 9.0, 7.0]])
    assert (v2 == 1).all() and (v1 == 1).all()


def test_constant_map_and_empty_map():
    const = np.full((6, 7), 0.5, np.float32)
    assert boxes_at_threshold(scoremap_to_uint8(const), 0.9).tolist() == [[0, 0, 6, 5]]
    zero = ScoreMaps.normalize(torch.from_numpy(const)[None]).maps[0]
    assert (zero == 0).all()
    assert boxes_at_threshold(scoremap_to_uint8(zero), 0.0).tolist() == [[0, 0, 0, 0]]
    v2, v1 = both(zero, [[0.0, 0.0, 1.9, 1.9]])  # box (0,0,0,0) vs inclusive (0,0,1,1): 1 / 4
    assert (v2 == 0.25).all() and (v1 == 0.25).all()
    v2, v1 = both(const, [[0.0, 0.0, 7.0, 6.0]])  # whole map: (0, 0, 6, 5) vs (0, 0, 7, 6): 42 / 56
    assert (v2 == 0.75).all() and (v1 == 0.75).all()


def test_nan_map_after_normalization_scores_as_empty():
    cam = torch.rand(1, 6, 6)
    cam[0, 0, 0] = float("nan")
    m = ScoreMaps.normalize(cam).maps[0]
    v2, v1 = both(m, [[0.0, 0.0, 0.0, 0.0]])
    assert (v2 == 1).all() and (v1 == 1).all()


def test_two_gt_boxes_take_the_best():
    m = np.zeros((12, 12), np.float32)
    m[2:6, 2:6] = 1.0  # box (2, 2, 6, 6)
    v2, v1 = both(m, [[0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 6.0, 6.0]])
    assert (v2 == 1).all() and (v1 == 1).all()


def test_ring_gives_hole_box():
    m = np.zeros((9, 9), np.float32)
    m[1:8, 1:8] = 1.0
    m[3:6, 3:6] = 0.0  # hole pixels 3..5
    u8 = scoremap_to_uint8(m)
    # outer: pixels 1..7 -> (1, 1, 8, 8); hole: 3..5 grown to 2..6 -> (2, 2, 7, 7)
    assert sorted(boxes_at_threshold(u8, 0.5).tolist()) == [[1, 1, 8, 8], [2, 2, 7, 7]]
    v2, v1 = both(m, [[2.0, 2.0, 7.0, 7.0]])
    assert (v2 == 1).all()
    assert np.allclose(v1, 36 / 64)  # the outer box only: 6x6 inside 8x8


def test_one_pixel_line_has_zero_contour_area():
    m = np.zeros((10, 12), np.float32)
    m[1, 1:9] = 1.0  # 8-pixel line: contourArea 0
    m[5:7, 5:7] = 1.0  # 2x2 block: contourArea 1, wins though smaller in pixels
    u8 = scoremap_to_uint8(m)
    assert boxes_at_threshold(u8, 0.5, multi_contour=False).tolist() == [[5, 5, 7, 7]]
    _, v1 = both(m, [[5.0, 5.0, 7.0, 7.0]])
    assert (v1 == 1).all()


def _binary(rows):
    """A float map from strings: '#' = 1.0, '.' = 0.0."""
    return np.array([[1.0 if c == "#" else 0.0 for c in r] for r in rows], np.float32)


@pytest.mark.parametrize("rows, boxes", [
    # single-run rows, 8-connected across a diagonal step: one chain, one box
    (["###....", "...###.", "......#"], [[0, 0, 6, 2]]),  # x1 = 6 + 1 clipped to W - 1
    # single-run rows that do not touch: two chains
    (["##.....", "....###", "......."], [[0, 0, 2, 1], [4, 1, 6, 2]]),
    # a U: two runs per row joined by the bottom row
    (["#...#", "#...#", "#####", "....."], [[0, 0, 4, 3]]),  # the U's inside reaches the top
    # a C open to the top: the gap's upper neighbour row has background outside its [first, last]
    (["#.....", "#..#..", "####..", "......"], [[0, 0, 4, 3]]),
    # a ring touching the right and bottom border: outer box plus the hole grown by one
    ([".....", ".....", "..###", "..#.#", "..###"], [[2, 2, 4, 4], [2, 2, 4, 4]]),
    # two holes side by side in one component
    (["#######", "#.#.#.#", "#######", "......."], [[0, 0, 6, 3], [0, 0, 3, 3], [2, 0, 5, 3], [4, 0, 6, 3]]),
])
def test_binary_shapes_boxes_match_reference(rows, boxes):
    m = _binary(rows)
    u8 = scoremap_to_uint8(m)
    assert sorted(boxes_at_threshold(u8, 0.5).tolist()) == sorted(boxes)
    assert sorted(boxes_at_threshold(u8, 0.5).tolist()) == sorted(ref_boxes(m, 0.5, True))
    rng = np.random.default_rng(len(rows[0]))
    H, W = m.shape
    for gt in [np.array([b], np.float64) for b in boxes] + [random_boxes(rng, H, W) for _ in range(3)]:
        v2, v1 = both(m, gt)
        np.testing.assert_array_equal(v2, ref_best_ious(m, gt, GRID, multi_contour=True))
        np.testing.assert_array_equal(v1, ref_best_ious(m, gt, GRID, multi_contour=False))


def test_boxes_at_threshold_equals_the_reference_on_random_maps():
    rng = np.random.default_rng(12)
    for kind in ("blobs", "rings", "lines", "ties", "special"):
        for _ in range(6):
            m = random_map(rng, kind)
            u8 = scoremap_to_uint8(m)
            for t in (0.0, 0.2, 0.5, 0.77):
                assert boxes_at_threshold(u8, t).tolist() == ref_boxes(m, t, True), (kind, t)
                assert boxes_at_threshold(u8, t, multi_contour=False).tolist() == ref_boxes(m, t, False), (kind, t)
