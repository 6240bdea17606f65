"""camlab.wsol.levels: both all-threshold kernels against each other and against the plain OpenCV reference on
every kind of map; the per-image dispatch; largest_contour; batches, padding, parallel runs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from _wsol_maps import KINDS, random_boxes, random_map, smooth
from _wsol_reference import ref_best_ious, ref_boxes, ref_gt, ref_iou, ref_num_contours
from camlab.wsol import box_iou_inclusive, largest_contour, scan_levels, threshold_grid
from camlab.wsol.boxes import inclusive_gt
from camlab.wsol.levels import EVENT_BUDGET
from camlab.wsol.rowscan import scan_rows

GRID = threshold_grid()
COARSE = np.arange(0, 1, 0.05)
KERNELS = ("rows", "unionfind")
# maps per kind; the kinds with many contours per level take the coarse grid (the reference is Python per contour)
N_MAPS = {"noise": 24, "rings": 30, "tiny": 30, "special": 30}
THRESHOLDS = {"noise": COARSE, "rings": COARSE, "blobs": COARSE, "border": COARSE}


def ref_components(scoremap, threshold):
    """Boxes of the 8-connected components alone, through OpenCV: the top level of RETR_CCOMP (outer borders;
    a component inside another's hole is top level too, which RETR_EXTERNAL would drop), cross-checked against
    connectedComponentsWithStats. Empty when there is none."""
    H, W = scoremap.shape
    u8 = (scoremap * 255).astype(np.uint8)
    binary = (u8 > int(threshold * np.max(u8))).astype(np.uint8)
    contours, hier = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)[-2:]
    boxes = []
    for c, h in zip(contours, hier[0] if hier is not None else []):
        if h[3] == -1:
            x, y, w, hh = cv2.boundingRect(c)
            boxes.append([x, y, min(x + w, W - 1), min(y + hh, H - 1)])
    n, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    assert n - 1 == len(boxes)
    assert sorted(boxes) == sorted([x, y, min(x + w, W - 1), min(y + h, H - 1)] for x, y, w, h, _ in stats[1:].tolist())
    return boxes


class Case:
    """The maps of one kind, their GT boxes, each kernel's scan and the reference, computed once per module."""

    def __init__(self, kind):
        rng = np.random.default_rng(KINDS.index(kind) + 100)
        self.kind = kind
        self.thresholds = THRESHOLDS.get(kind, GRID)
        self.maps = [random_map(rng, kind) for _ in range(N_MAPS.get(kind, 20))]
        self.gts = [random_boxes(rng, *m.shape) for m in self.maps]
        self.scans = {k: [scan_levels(m[None], g[None], thresholds=self.thresholds, kernel=k)
                          for m, g in zip(self.maps, self.gts)] for k in (*KERNELS, "auto")}
        self.ref_all, self.ref_n, self.ref_box_sets, self.ref_comp, self.ref_ncomp = [], [], [], [], []
        self.ref_comp_sets, self.ref_largest, self.ref_largest_box, self.rows_took = [], [], [], []
        for m, g in zip(self.maps, self.gts):
            # the reference depends on t only through its cut level int(t * u8.max()): run it once per level
            vmax = int((m * 255).astype(np.uint8).max())
            level = [int(t * vmax) for t in self.thresholds]
            reps = sorted({lv: t for t, lv in reversed(list(zip(self.thresholds, level)))}.items())
            t = [v for _, v in reps]
            at = [[lv for lv, _ in reps].index(lv) for lv in level]
            gi = ref_gt(g)
            comps = [ref_components(m, v) for v in t]
            for out, vals in (
                    (self.ref_all, ref_best_ious(m, g, t, multi_contour=True)),
                    (self.ref_largest, ref_best_ious(m, g, t, multi_contour=False)),
                    (self.ref_largest_box, [ref_boxes(m, v, multi_contour=False)[0] for v in t]),
                    (self.ref_n, [ref_num_contours(m, v) for v in t]),
                    (self.ref_box_sets, [{tuple(b) for b in ref_boxes(m, v, multi_contour=True)} for v in t]),
                    (self.ref_ncomp, [len(c) for c in comps]),
                    (self.ref_comp_sets, [{tuple(b) for b in (c or [[0, 0, 0, 0]])} for c in comps]),
                    (self.ref_comp, [max(ref_iou(b, q) for b in (c or [[0, 0, 0, 0]]) for q in gi) for c in comps])):
                out.append([vals[j] for j in at])
            self.rows_took.append(rows_kernel_takes(m, g, self.thresholds))


def rows_kernel_takes(m, g, thresholds) -> bool:
    """Whether scan_levels' dispatch keeps this image on the row kernel (its gap events within the budget)."""
    T = len(thresholds)
    gt, n_gt = inclusive_gt(g[None], None, 1)
    u8 = (m * 255).astype(np.uint8)
    levels = np.array([int(t * int(u8.max())) for t in thresholds], np.int64)
    return scan_rows(u8, levels, gt[0], n_gt[0], np.int64(EVENT_BUDGET * m.shape[0] * m.shape[1]), np.zeros((2, T)),
                     np.zeros((2, T, 4), np.int32), np.zeros((2, T), np.int64))


_CASES: dict[str, Case] = {}


def get_case(kind) -> Case:
    if kind not in _CASES:
        _CASES[kind] = Case(kind)
    return _CASES[kind]


@pytest.fixture(scope="module", params=KINDS)
def case(request):
    return get_case(request.param)


@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_ious_and_counts_equal_the_reference(case, kernel):
    for i, s in enumerate(case.scans[kernel]):
        np.testing.assert_array_equal(s.iou[0, 0], case.ref_all[i], err_msg=f"{case.kind} map {i}: all contours")
        np.testing.assert_array_equal(s.count[0, 0], case.ref_n[i], err_msg=f"{case.kind} map {i}: contour counts")
        np.testing.assert_array_equal(s.iou[0, 1], case.ref_comp[i], err_msg=f"{case.kind} map {i}: components")
        np.testing.assert_array_equal(s.count[0, 1], case.ref_ncomp[i], err_msg=f"{case.kind} map {i}: components")


def test_kernels_equal_each_other_and_auto_equals_both(case):
    for i, (r, u, a) in enumerate(zip(*(case.scans[k] for k in ("rows", "unionfind", "auto")))):
        for s in (u, a):
            assert np.array_equal(s.iou, r.iou) and np.array_equal(s.count, r.count), (case.kind, i)
            assert np.array_equal(s.levels, r.levels) and np.array_equal(s.gt, r.gt)
        # the dispatch is per image: auto's boxes are those of the kernel that its event budget picks
        assert np.array_equal(a.box, r.box if case.rows_took[i] else u.box), (case.kind, i)


@pytest.mark.parametrize("kernel", KERNELS)
def test_every_box_reproduces_its_iou_and_is_a_reference_box(case, kernel):
    for i, s in enumerate(case.scans[kernel]):
        for k in range(len(case.thresholds)):
            for c, sets in ((0, case.ref_box_sets), (1, case.ref_comp_sets)):
                box = s.box[0, c, k]
                assert box_iou_inclusive(box, s.gt[0]).max() == s.iou[0, c, k], (case.kind, i, c, k)
                assert tuple(box.tolist()) in sets[i][k], (case.kind, i, c, k, box, sets[i][k])


@pytest.mark.parametrize("kernel", KERNELS)
def test_largest_contour_equals_the_reference(case, kernel):
    for i, (m, s) in enumerate(zip(case.maps, case.scans[kernel])):
        iou, box = largest_contour(s, m)
        np.testing.assert_array_equal(iou[0], case.ref_largest[i], err_msg=f"{case.kind} map {i}")
        np.testing.assert_array_equal(box[0], case.ref_largest_box[i], err_msg=f"{case.kind} map {i}")
        cols = np.arange(0, len(case.thresholds), 3)
        iou_c, box_c = largest_contour(s, m, cols)
        assert np.array_equal(iou_c, iou[:, cols]) and np.array_equal(box_c, box[:, cols])


def test_the_map_kinds_reach_what_they_are_for():
    """Each kind must exercise its case, else the tests above could pass without testing it."""
    cases = get_case
    holes = {k: sum(int((np.array(n) > np.array(c)).sum()) for n, c in zip(cases(k).ref_n, cases(k).ref_ncomp))
             for k in KINDS}
    assert all(holes[k] > 20 for k in ("noise", "rings", "lines", "border", "ties")), holes
    many = {k: max(max(c) for c in cases(k).ref_ncomp) for k in KINDS}
    assert many["noise"] > 30 and many["blobs"] >= 3 and many["lines"] >= 3, many
    empty = sum(int((np.array(n) == 0).sum()) for n in cases("special").ref_n)  # levels without any contour
    assert empty > 100
    # holes inside components inside holes: more holes than components at some level of a nested-ring map
    assert any((np.array(n) - np.array(c) >= 2).any() for n, c in zip(cases("rings").ref_n, cases("rings").ref_ncomp))
    assert {m.shape for m in cases("tiny").maps} >= {(1, 1), (2, 2), (3, 3), (1, 23), (23, 1)}
    # the budget sends the rough maps to the union-find kernel and keeps others on the row kernel
    took = {k: sum(cases(k).rows_took) for k in KINDS}
    assert took["noise"] < len(cases("noise").maps) and took["lines"] > 0 and took["plateaus"] > 0, took


# --- hand-made cases the random kinds may miss ---------------------------------------------------
def _binary(rows):
    return np.array([[1.0 if ch == "#" else 0.0 for ch in r] for r in rows], np.float32)


@pytest.mark.parametrize("rows", [
    ["#.#.#", ".#.#.", "#.#.#"],  # a checkerboard: one 8-connected component; the inner background pixel is a hole
    [".#.", "#.#", ".#."],  # a diamond: the centre is a hole (4-connected background enclosed by diagonals)
    ["#####", "#...#", "#.#.#", "#...#", "#####"],  # a component inside a hole
    ["#######", "#.....#", "#.###.#", "#.#.#.#", "#.###.#", "#.....#", "#######"],  # hole in a component in a hole
    ["##.##", "#...#", "##.##"],  # a gap to the border in the middle row: no hole
    ["....", ".##.", "....", "...."],
    ["#"], ["."], ["#.#"], ["#", ".", "#"],
])
@pytest.mark.parametrize("kernel", KERNELS)
def test_binary_shapes_against_the_reference(rows, kernel):
    m = _binary(rows)
    H, W = m.shape
    gt = np.array([[0.0, 0.0, W, H], [1.0, 1.0, 2.0, 2.0]])
    s = scan_levels(m[None], gt[None], thresholds=[0.0, 0.5], kernel=kernel)
    for k, t in enumerate([0.0, 0.5]):
        assert s.count[0, 0, k] == ref_num_contours(m, t)
        assert s.count[0, 1, k] == len(ref_components(m, t))
        assert s.iou[0, 0, k] == ref_best_ious(m, gt, [t], True)[0]


def test_thresholds_outside_the_unit_interval_match_reference():
    # scan_levels takes any 1-D array as is: a negative cut keeps every pixel; a cut at or above the max keeps
    # none (box (0, 0, 0, 0))
    rng = np.random.default_rng(2)
    m = random_map(rng, "blobs", 17, 23)
    gt = np.array([[0.0, 0.0, 22.0, 16.0], [3.0, 4.0, 9.0, 12.0]])
    thresholds = np.array([0.5, -0.3, 1.0, 1.7, 0.0, -2.0, 0.99])
    for kernel in ("auto", *KERNELS):
        s = scan_levels(m[None], gt[None], thresholds=thresholds, kernel=kernel)
        np.testing.assert_array_equal(s.all_ious[0], ref_best_ious(m, gt, thresholds, multi_contour=True))
        assert s.count[0, 0].tolist() == [ref_num_contours(m, t) for t in thresholds]
        assert s.all_ious[0, 1] == ref_best_ious(np.ones_like(m), gt, [0.0], True)[0]  # every pixel foreground
        assert s.count[0, :, 2].tolist() == [0, 0] and s.box[0, :, 2].tolist() == [[0, 0, 0, 0]] * 2


def test_unsorted_thresholds_equal_sorted():
    rng = np.random.default_rng(8)
    m = random_map(rng, "rings", 30, 30)
    gt = random_boxes(rng, 30, 30)
    perm = rng.permutation(len(COARSE))
    a = scan_levels(m[None], gt[None], thresholds=COARSE)
    b = scan_levels(m[None], gt[None], thresholds=COARSE[perm])
    assert np.array_equal(a.iou[..., perm], b.iou) and np.array_equal(a.count[..., perm], b.count)


def test_batched_padded_boxes_at_224_match_reference():
    rng = np.random.default_rng(7)
    B, H, W, G = 4, 224, 224, 3
    maps = np.stack([smooth(rng, H, W) for _ in range(B)])
    boxes = np.zeros((B, G, 4))
    num = np.array([1, 3, 2, 1])
    for i in range(B):
        boxes[i, : num[i]] = random_boxes(rng, H, W, 1).repeat(num[i], 0) + rng.uniform(0, 5, (num[i], 4))
    thresholds = GRID[::7]
    scans = [scan_levels(torch.from_numpy(maps), torch.from_numpy(boxes), torch.from_numpy(num), thresholds,
                         kernel=k) for k in ("auto", *KERNELS)]
    large = largest_contour(scans[0], maps)[0]
    for i in range(B):
        gt = boxes[i, : num[i]]
        want = ref_best_ious(maps[i], gt, thresholds, True)
        for s in scans:
            np.testing.assert_array_equal(s.all_ious[i], want)
        np.testing.assert_array_equal(large[i], ref_best_ious(maps[i], gt, thresholds, False))
    assert scans[0].n_gt.tolist() == num.tolist()


def test_batch_equals_one_image_at_a_time_and_parallel_is_bit_identical():
    rng = np.random.default_rng(9)
    kinds = [k for k in KINDS if k != "tiny"]
    maps = np.stack([random_map(rng, kinds[i % len(kinds)], 24, 31) for i in range(30)])
    boxes = np.stack([random_boxes(rng, 24, 31, 3) for _ in range(30)])
    num = rng.integers(1, 4, 30)
    for kernel in ("auto", *KERNELS):
        serial = scan_levels(maps, boxes, num, GRID, kernel=kernel)
        par = scan_levels(maps, boxes, num, GRID, parallel=True, kernel=kernel)
        for f in ("levels", "iou", "box", "count", "gt", "n_gt"):
            assert np.array_equal(getattr(serial, f), getattr(par, f)), (kernel, f)
        for i in (0, 7, 29):
            one = scan_levels(maps[i : i + 1], boxes[i : i + 1], num[i : i + 1], GRID, kernel=kernel)
            assert np.array_equal(one.iou[0], serial.iou[i]) and np.array_equal(one.box[0], serial.box[i])


def test_empty_batch_and_bad_arguments():
    s = scan_levels(np.zeros((0, 5, 5), np.float32), np.zeros((0, 1, 4)))
    assert s.iou.shape == (0, 2, 100) and s.box.shape == (0, 2, 100, 4) and s.count.shape == (0, 2, 100)
    assert largest_contour(s, np.zeros((0, 5, 5), np.float32))[0].shape == (0, 100)
    m = np.zeros((1, 5, 5), np.float32)
    with pytest.raises(ValueError, match="kernel"):
        scan_levels(m, np.zeros((1, 1, 4)), kernel="opencv")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        scan_levels(m + 2, np.zeros((1, 1, 4)))
    with pytest.raises(ValueError, match="num_boxes"):
        scan_levels(m, np.zeros((1, 2, 4)), num_boxes=[3])
    with pytest.raises(ValueError, match="finite"):
        scan_levels(m, np.full((1, 1, 4), np.nan))
