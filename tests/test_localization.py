"""camlab.localization: hand-worked examples and random maps against a plain per-threshold reference."""

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _wsol_reference import ref_best_ious, ref_gt, ref_iou, ref_num_contours, ref_pxap
from camlab.localization import (
    _all_contours_batch,
    _cut_levels,
    _prepare_gt,
    _scoremaps_u8,
    best_ious_all_contours,
    best_ious_largest_contour,
    box_iou_inclusive,
    boxes_at_threshold,
    gt_boxes_to_int,
    normalize_cams,
    pxap_from_histograms,
    pxap_histograms,
    scoremap_to_uint8,
    threshold_grid,
    upsample_cams,
)

GRID = threshold_grid()


def both(m, gt, thresholds=GRID):
    """(all-contour, largest-contour) best IoU curves of one float map against float GT boxes."""
    m = np.asarray(m, np.float32)[None]
    gt = np.asarray(gt, np.float64)[None]
    return (best_ious_all_contours(m, gt, thresholds=thresholds)[0],
            best_ious_largest_contour(m, gt, thresholds=thresholds)[0])


# --- score maps ----------------------------------------------------------------------------------
def test_grid_is_arange():
    g = threshold_grid(0.01)
    assert len(g) == 100 and np.array_equal(g, np.arange(0, 1, 0.01))
    assert g[35] != 0.35  # one float step above k/100: wsoleval's grid, not k/100
    with pytest.raises(ValueError):
        threshold_grid(0)


def test_normalize_constant_and_nan_maps_become_zero():
    cams = torch.stack([torch.full((4, 5), 3.0), torch.arange(20.0).view(4, 5), torch.ones(4, 5)])
    cams[2, 1, 1] = float("nan")
    out = normalize_cams(cams)
    assert torch.equal(out[0], torch.zeros(4, 5)) and torch.equal(out[2], torch.zeros(4, 5))
    assert out[1].min() == 0 and out[1].max() == 1 and out[1, 0, 1] == pytest.approx(1 / 19)


def test_upsample_shape_and_align_corners_false():
    x = torch.rand(2, 3, 4)
    y = upsample_cams(x, (6, 8))
    assert y.shape == (2, 6, 8)
    assert torch.allclose(y, F.interpolate(x[:, None], (6, 8), mode="bilinear", align_corners=False)[:, 0])


def test_uint8_truncates():
    assert scoremap_to_uint8(np.array([0.999, 0.5, 1.0], np.float32)).tolist() == [254, 127, 255]


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
    f32 = scoremap_to_uint8(v)
    f64 = np.floor(v.astype(np.float64) * 255.0).astype(np.int64)  # exact: a float32 times 255 fits in float64
    assert np.array_equal(f32.astype(np.int64), f64)
    # a float64 map keeps its own product (no rounding to float32 on the way)
    s = 0.0039215686274509795  # the largest float64 with s * 255 < 1; float32(s) * 255 rounds to 1
    assert scoremap_to_uint8(np.array([s])).tolist() == [0]
    assert scoremap_to_uint8(np.array([s], np.float32)).tolist() == [1]


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
    zero = normalize_cams(torch.from_numpy(const)[None])[0].numpy()
    assert boxes_at_threshold(scoremap_to_uint8(zero), 0.0).tolist() == [[0, 0, 0, 0]]
    v2, v1 = both(zero, [[0.0, 0.0, 1.9, 1.9]])  # box (0,0,0,0) vs inclusive (0,0,1,1): 1 / 4
    assert (v2 == 0.25).all() and (v1 == 0.25).all()


def test_nan_map_after_normalization_scores_as_empty():
    cam = torch.rand(1, 6, 6)
    cam[0, 0, 0] = float("nan")
    m = normalize_cams(cam)[0].numpy()
    v2, _ = both(m, [[0.0, 0.0, 0.0, 0.0]])
    assert (v2 == 1).all()


def test_two_gt_boxes_take_the_best():
    m = np.zeros((12, 12), np.float32)
    m[2:6, 2:6] = 1.0  # box (2, 2, 6, 6)
    v2, v1 = both(m, [[0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 6.0, 6.0]])
    assert (v2 == 1).all() and (v1 == 1).all()


def test_iou_exactly_half_and_degenerate():
    assert box_iou_inclusive(np.array([[0, 0, 9, 9]]), np.array([[0, 0, 4, 9]]))[0, 0] == 0.5
    assert box_iou_inclusive(np.array([[5, 5, 4, 4]]), np.array([[5, 5, 3, 3]]))[0, 0] == 0.0  # union <= 0
    assert box_iou_inclusive(np.array([[0, 0, 0, 0]]), np.array([[0, 0, 0, 0]]))[0, 0] == 1.0


def test_gt_truncation():
    assert gt_boxes_to_int(np.array([[0.0, 1.99, 10.0, 7.5]])).tolist() == [[0, 1, 10, 7]]


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
    # a U: two runs per row joined by the bottom row (union-find across rows)
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
    rng = np.random.default_rng(len(rows[0]))
    H, W = m.shape
    for gt in [np.array([b], np.float64) for b in boxes] + [_random_boxes(rng, H, W) for _ in range(3)]:
        v2, _ = both(m, gt)
        np.testing.assert_array_equal(v2, ref_best_ious(m, gt, GRID, multi_contour=True))


def test_thresholds_outside_unit_interval_match_reference():
    # a negative cut keeps every pixel; a cut at or above the max keeps none: box (0, 0, 0, 0)
    rng = np.random.default_rng(2)
    m = _random_map(rng, 17, 23, "blobs+noise")
    gt = np.array([[0.0, 0.0, 22.0, 16.0], [3.0, 4.0, 9.0, 12.0]])
    thresholds = np.array([0.5, -0.3, 1.0, 1.7, 0.0, -2.0, 0.99])
    got = best_ious_all_contours(m[None], gt[None], thresholds=thresholds)[0]
    np.testing.assert_array_equal(got, ref_best_ious(m, gt, thresholds, multi_contour=True))
    assert got[1] == ref_best_ious(np.ones_like(m), gt, [0.0], True)[0]  # every pixel foreground


# --- random maps against the plain reference ----------------------------------------------------
def _random_map(rng, H, W, kind):
    if kind == "smooth":  # low-resolution noise upsampled, like a CAM
        h, w = rng.integers(2, 9, 2)
        low = torch.tensor(rng.random((1, 1, h, w)), dtype=torch.float32)
        m = F.interpolate(low, (H, W), mode="bilinear", align_corners=False)[0, 0]
        return normalize_cams(m[None])[0].numpy()
    if kind == "blobs+noise":
        yy, xx = np.mgrid[:H, :W]
        m = sum(np.exp(-((yy - rng.uniform(-2, H + 2)) ** 2 + (xx - rng.uniform(-2, W + 2)) ** 2)
                       / rng.uniform(4, 40)) for _ in range(3))
        m = m + 0.2 * rng.random((H, W))
        return (m / m.max()).astype(np.float32)
    if kind == "ring":
        yy, xx = np.mgrid[:H, :W]
        r = np.hypot(yy - rng.uniform(0, H), xx - rng.uniform(0, W))
        m = np.exp(-((r - rng.uniform(2, 8)) ** 2) / 6) + 0.3 * rng.random((H, W))
        return (m / m.max()).astype(np.float32)
    if kind == "noise":
        return rng.random((H, W)).astype(np.float32)
    if kind == "ties":  # few distinct values: plateaus, equal areas, many holes
        return (rng.integers(0, 4, (H, W)) / 3).astype(np.float32)
    if kind == "dim":  # all scores below 1/255 except none: no contour at any threshold
        return np.full((H, W), 0.003, np.float32)
    if kind == "multi-blob":  # several peaks in the same rows: many levels with two or more runs per row
        yy, xx = np.mgrid[:H, :W]
        m = sum(rng.uniform(0.3, 1) * np.exp(-((yy - rng.uniform(0, H)) ** 2 + (xx - rng.uniform(0, W)) ** 2)
                                            / rng.uniform(2, 30)) for _ in range(6))
        return (m / m.max()).astype(np.float32)
    if kind == "border-rings":  # rings centred near an edge or corner: holes next to the image border
        yy, xx = np.mgrid[:H, :W]
        cy, cx = rng.choice([0, H - 1]) + rng.uniform(-2, 2), rng.choice([0, W - 1]) + rng.uniform(-2, 2)
        r = np.hypot(yy - cy, xx - cx)
        m = np.cos(r / rng.uniform(1, 3)) ** 2 + 0.1 * rng.random((H, W))
        return (m / m.max()).astype(np.float32)
    raise ValueError(kind)


def _random_boxes(rng, H, W):
    G = int(rng.integers(1, 4))
    xs = np.sort(rng.uniform(0, W, (G, 2)), axis=1)
    ys = np.sort(rng.uniform(0, H, (G, 2)), axis=1)
    return np.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], axis=1)


KINDS = ["smooth", "blobs+noise", "ring", "noise", "ties", "dim", "multi-blob", "border-rings"]


def _check_kernel_counts(m, gt):
    """The kernel's per-level side outputs against OpenCV: the number of tree-mode contours (components plus
    holes), the number of 8-connected components (``cv2.connectedComponentsWithStats``) and the best IoU over
    the components' boxes alone. MaxBoxAcc and top-k loc skip OpenCV where there is one component."""
    u8, vmax = _scoremaps_u8(m[None], check=True)
    levels = _cut_levels(vmax, GRID)
    counts = np.full(levels.shape, -1, np.int64)
    comp_counts = np.full(levels.shape, -1, np.int64)
    comp_out = np.full(levels.shape, -1.0)
    _all_contours_batch(u8, levels, *_prepare_gt(gt[None], None, 1), np.zeros(levels.shape), counts=counts,
                        comp_out=comp_out, comp_counts=comp_counts)
    assert counts[0].tolist() == [ref_num_contours(m, t) for t in GRID]
    H, W = m.shape
    for k, level in enumerate(levels[0]):
        n, _, stats, _ = cv2.connectedComponentsWithStats((u8[0] > level).astype(np.uint8), connectivity=8)
        boxes = [[x, y, min(x + w, W - 1), min(y + h, H - 1)] for x, y, w, h, _ in stats[1:].tolist()]
        assert comp_counts[0, k] == n - 1
        want = max(ref_iou(b, g) for b in (boxes or [[0, 0, 0, 0]]) for g in ref_gt(gt))
        assert comp_out[0, k] == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_random_maps_match_reference(kind):
    rng = np.random.default_rng(KINDS.index(kind))
    for _ in range(12):
        H, W = (int(v) for v in rng.integers(6, 40, 2))
        m = _random_map(rng, H, W, kind)
        gt = _random_boxes(rng, H, W)
        v2, v1 = both(m, gt)
        np.testing.assert_array_equal(v2, ref_best_ious(m, gt, GRID, multi_contour=True))
        np.testing.assert_array_equal(v1, ref_best_ious(m, gt, GRID, multi_contour=False))
        _check_kernel_counts(m, gt)


def test_batched_padded_boxes_at_224_match_reference():
    rng = np.random.default_rng(7)
    B, H, W, G = 4, 224, 224, 3
    maps = np.stack([_random_map(rng, H, W, "smooth") for _ in range(B)])
    boxes = np.zeros((B, G, 4))
    num = np.array([1, 3, 2, 1])
    for i in range(B):
        boxes[i, : num[i]] = _random_boxes(rng, H, W)[:1].repeat(num[i], 0) + rng.uniform(0, 5, (num[i], 4))
    thresholds = GRID[::7]
    fast = best_ious_all_contours(torch.from_numpy(maps), torch.from_numpy(boxes), torch.from_numpy(num),
                                  thresholds)
    large = best_ious_largest_contour(maps, boxes, num, thresholds)
    for i in range(B):
        np.testing.assert_array_equal(fast[i], ref_best_ious(maps[i], boxes[i, : num[i]], thresholds, True))
        np.testing.assert_array_equal(large[i], ref_best_ious(maps[i], boxes[i, : num[i]], thresholds, False))


# --- PxAP ---------------------------------------------------------------------------------------
def test_pxap_histogram_bins_grid_values_like_numpy():
    rng = np.random.default_rng(3)
    on_grid = np.concatenate([GRID, GRID.astype(np.float32).astype(np.float64), [0.35, 0.7, 1.0, 0.0]])
    s = np.concatenate([on_grid, rng.random(2000)]).astype(np.float32)  # float32 maps, as camlab's
    n = s.size - s.size % 8
    s = s[:n].reshape(1, 8, -1)
    m = rng.choice(np.array([0, 1, 255], np.uint8), size=s.shape)
    hist = pxap_histograms(s, m)
    edges = np.append(GRID, [1.0, 2.0, 3.0])
    s64 = s.astype(np.float64)
    np.testing.assert_array_equal(hist[0, 0], np.histogram(s64[m == 1], bins=edges)[0])
    np.testing.assert_array_equal(hist[0, 1], np.histogram(s64[m == 0], bins=edges)[0])


@pytest.mark.parametrize("thresholds", [GRID, threshold_grid(0.05), threshold_grid(0.001), [0.0, 1 / 3, 2 / 3],
                                        [0.2, 0.5, 0.9], np.sort(np.r_[0.3, 0.3 + 1e-5, 0.7])])
def test_pxap_unit_histogram_matches_numpy(thresholds):
    # the metric's branch-free paths (maps known in [0, 1]): arithmetic bins for the uniform grids (the first four),
    # a table and one compare for the others; the last grid is too dense for the table (fallback)
    from camlab.localization import _pxap_histograms_unit, _uniform_grid_multiplier, pxap_bin_edges

    uniform = _uniform_grid_multiplier(pxap_bin_edges(thresholds))
    assert uniform == (len(thresholds) if len(thresholds) in (100, 20, 1000) or thresholds[1] == 1 / 3 else None)

    rng = np.random.default_rng(4)
    t = np.asarray(thresholds, np.float64)
    t32 = t.astype(np.float32)  # the float32 neighbours of every edge: the kernel compares in float32
    near = np.concatenate([t32, np.nextafter(t32, np.float32(0)), np.nextafter(t32, np.float32(2))]).astype(np.float64)
    on_edges = np.concatenate([t, near, np.nextafter(t, 0), [0.0, 1.0, 0.3, 1 - 2**-24, 2**-24]])
    s = np.concatenate([np.clip(on_edges, 0, 1), rng.random(3000)]).astype(np.float32)
    s = s[: s.size - s.size % 6].reshape(3, 2, -1)
    m = rng.choice(np.array([0, 1, 255, 7], np.uint8), size=s.shape)
    edges = np.append(t, [1.0, 2.0, 3.0])
    # float32 maps serially and on numba threads, float64 maps (general kernel)
    for hist in (_pxap_histograms_unit(s, m, thresholds), _pxap_histograms_unit(s, m, thresholds, parallel=True),
                 _pxap_histograms_unit(s.astype(np.float64), m, thresholds)):
        for i in range(3):
            s64 = s[i].astype(np.float64)
            np.testing.assert_array_equal(hist[i, 0], np.histogram(s64[m[i] == 1], bins=edges)[0])
            np.testing.assert_array_equal(hist[i, 1], np.histogram(s64[m[i] == 0], bins=edges)[0])


def test_fused_uint8_conversion_and_range_check():
    from camlab.localization import _scoremaps_u8, check_scoremaps

    rng = np.random.default_rng(6)
    maps = rng.random((3, 9, 11)).astype(np.float32)
    maps[0, 0, :4] = [0.0, 1.0, -0.0, np.float32(0.99999994)]
    for m in (maps, maps.astype(np.float64), maps[:, ::2, 1:]):  # float32, float64, non-contiguous
        u8, vmax = _scoremaps_u8(m, check=True)
        np.testing.assert_array_equal(u8, scoremap_to_uint8(m))
        assert vmax.tolist() == [int(u8[i].max()) for i in range(3)]
    for bad in (np.nan, -1e-30, 1.0000001, np.inf):
        b = maps.copy()
        b[1, 4, 5] = bad
        with pytest.raises(ValueError, match="in \\[0, 1\\]"):
            _scoremaps_u8(b, check=True)
        with pytest.raises(ValueError):
            check_scoremaps(b)
        _scoremaps_u8(b, check=False)  # the public box functions convert without checking


def test_pxap_hand_worked():
    # 2 positives scored 0.9, 0.4; 2 negatives scored 0.6, 0.1; thresholds 0, 0.5
    s = np.array([[[0.9, 0.4], [0.6, 0.1]]])
    m = np.array([[[1, 1], [0, 0]]], np.uint8)
    hist = pxap_histograms(s, m, [0.0, 0.5])
    r = pxap_from_histograms(hist[0, 0], hist[0, 1])
    # t=0.5: tp 1 fp 1 (P 0.5, R 0.5); t=0: tp 2 fp 2 (P 0.5, R 1): AP = 0.5*0.5 + 0.5*0.5
    assert r["pxap"] == 50.0
    assert r["precision"].tolist() == [0.5, 0.5] and r["recall"].tolist() == [1.0, 0.5]
    assert r["piou"] == 50.0  # t=0: 2/(2+2+0); t=0.5: 1/(1+1+1)


def test_pxap_random_matches_reference():
    rng = np.random.default_rng(11)
    maps = np.stack([_random_map(rng, 30, 20, k) for k in ["smooth", "ring", "noise", "ties"] * 3])
    masks = (rng.random(maps.shape) < 0.4).astype(np.uint8)
    masks[rng.random(maps.shape) < 0.1] = 255
    for thresholds in (GRID, threshold_grid(0.05)):
        hist = pxap_histograms(maps, masks, thresholds).sum(axis=0)
        r = pxap_from_histograms(hist[0], hist[1])
        auc, piou, fg, bg = ref_pxap(maps, masks, thresholds)
        np.testing.assert_array_equal(hist[0], fg)
        np.testing.assert_array_equal(hist[1], bg)
        assert r["pxap"] == auc
        assert r["piou"] == pytest.approx(piou, abs=1e-12)


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (2, 7), (3, 3)])
def test_thin_maps_match_reference(shape):
    rng = np.random.default_rng(sum(shape))
    for _ in range(8):
        m = rng.random(shape).astype(np.float32)
        m[m < 0.3] = 0
        gt = np.array([[0.0, 0.0, rng.uniform(0, shape[1]), rng.uniform(0, shape[0])]])
        v2, v1 = both(m, gt)
        np.testing.assert_array_equal(v2, ref_best_ious(m, gt, GRID, multi_contour=True))
        np.testing.assert_array_equal(v1, ref_best_ious(m, gt, GRID, multi_contour=False))
        _check_kernel_counts(m, gt)


def test_empty_batch():
    assert best_ious_all_contours(np.zeros((0, 5, 5), np.float32), np.zeros((0, 1, 4))).shape == (0, 100)
    assert best_ious_largest_contour(np.zeros((0, 5, 5), np.float32), np.zeros((0, 1, 4))).shape == (0, 100)
    assert pxap_histograms(np.zeros((0, 5, 5), np.float32), np.zeros((0, 5, 5), np.uint8)).shape == (0, 2, 102)


def test_batch_levels_equal_threshold_levels():
    # the vectorized per-image cut levels of the fast path equal int(t * u8.max()) threshold by threshold
    from camlab.localization import _prepare, threshold_levels

    rng = np.random.default_rng(5)
    maps = rng.random((40, 7, 9)).astype(np.float32) * rng.random((40, 1, 1)).astype(np.float32)
    maps[0] = 0.0
    maps[1, 0, 0] = 1.0
    for thresholds in (GRID, threshold_grid(0.05), np.sort(rng.random(37))):
        u8, _, _, levels = _prepare(maps, np.zeros((40, 1, 4)), None, thresholds)
        for i in range(40):
            np.testing.assert_array_equal(levels[i], threshold_levels(thresholds, int(u8[i].max())))
