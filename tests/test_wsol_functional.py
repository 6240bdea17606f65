"""camlab.wsol.functional against the plain reference, on numpy float32 / float64, torch and ScoreMaps inputs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from _wsol_maps import KINDS, random_boxes, random_map
from _wsol_reference import ref_best_ious, ref_boxes, ref_max_box_acc, ref_pxap
from camlab.wsol import (ScoreMaps, best_ious, box_accuracy, gt_known_loc, loc_ious, localization_accuracy,
                         max_box_acc, pxap, pxap_from_rows, threshold_grid, topk_hits)
from camlab.wsol.functional import check_iou_thresholds

GRID = threshold_grid()
H, W, N = 21, 26, 30


def _data():
    rng = np.random.default_rng(21)
    kinds = [k for k in KINDS if k != "tiny"]
    maps32 = np.stack([random_map(rng, kinds[i % len(kinds)], H, W) for i in range(N)])
    # float64 maps with float64 values (not float32 ones widened): a power of the maps, renormalized
    m64 = maps32.astype(np.float64) ** 1.37
    mx = m64.reshape(N, -1).max(axis=1)
    maps64 = m64 / np.where(mx > 0, mx, 1.0)[:, None, None]
    # and values just below a uint8 step k / 255 or a PxAP edge, where rounding to float32 would cross it
    below = []
    for edge in np.r_[np.arange(1, 256) / 255, GRID[1:]]:
        v = np.nextafter(edge, 0.0)
        while v * 255 >= round(edge * 255) and edge * 255 == round(edge * 255):
            v = np.nextafter(v, 0.0)
        below.append(v)
    plant = rng.random(maps64.shape) < 0.15
    maps64[plant] = rng.choice(np.array(below), int(plant.sum()))
    num = rng.integers(1, 4, N)
    boxes = np.zeros((N, 3, 4))
    for i in range(N):
        boxes[i, : num[i]] = random_boxes(rng, H, W, int(num[i]))
    masks = (rng.random((N, H, W)) < maps32 * 0.9 + 0.05).astype(np.uint8)
    masks[rng.random((N, H, W)) < 0.08] = 255
    return maps32, maps64, boxes, num, masks


MAPS32, MAPS64, BOXES, NUM, MASKS = _data()
GTS = [BOXES[i, : NUM[i]] for i in range(N)]
INPUTS = {"float32": lambda: MAPS32, "float64": lambda: MAPS64, "torch": lambda: torch.from_numpy(MAPS32),
          "torch64": lambda: torch.from_numpy(MAPS64), "scoremaps": lambda: ScoreMaps(MAPS32)}
REF_MAPS = {"float32": MAPS32, "float64": MAPS64, "torch": MAPS32, "torch64": MAPS64, "scoremaps": MAPS32}


def test_float64_maps_differ_from_their_float32_rounding():
    # else the float64 cases below would not test that float64 maps keep their own uint8 values and bins
    assert ((MAPS64 * 255).astype(np.uint8) != (MAPS64.astype(np.float32) * 255).astype(np.uint8)).sum() > 100
    edges = np.append(GRID, [1.0, 2.0, 3.0])
    bins64, bins32 = np.searchsorted(edges, MAPS64, "right"), np.searchsorted(edges, MAPS64.astype(np.float32), "right")
    assert (bins64 != bins32).sum() > 100


@pytest.mark.parametrize("dtype", list(INPUTS))
@pytest.mark.parametrize("multi_contour", [True, False])
def test_best_ious_and_max_box_acc_match_reference(dtype, multi_contour):
    maps, ref = INPUTS[dtype](), REF_MAPS[dtype]
    boxes, num = (torch.from_numpy(BOXES), torch.from_numpy(NUM)) if dtype.startswith("torch") else (BOXES, NUM)
    thresholds = threshold_grid(0.05)
    ious = best_ious(maps, boxes, num, thresholds, multi_contour=multi_contour)
    assert ious.shape == (N, len(thresholds)) and ious.dtype == np.float64
    for i in range(N):
        np.testing.assert_array_equal(ious[i], ref_best_ious(ref[i], GTS[i], thresholds, multi_contour), err_msg=str(i))
    iou_thresholds = (30, 50, 70) if multi_contour else (50,)
    out = max_box_acc(maps, boxes, num, 0.05, iou_thresholds, multi_contour)
    best, curves = ref_max_box_acc(list(ref), GTS, thresholds, iou_thresholds, multi_contour)
    name = "MaxBoxAccV2" if multi_contour else "MaxBoxAcc"
    for k in iou_thresholds:
        assert out[f"{name}/IoU{k}"] == best[k]
        np.testing.assert_array_equal(out[f"{name}/curve/IoU{k}"], curves[k])
        assert out[f"{name}/best_threshold/IoU{k}"] == thresholds[int(np.argmax(curves[k]))]
        assert out[f"{name}/best_index/IoU{k}"] == int(np.argmax(curves[k]))
    assert out[name] == np.mean([best[k] for k in iou_thresholds])
    assert 0 < out[name] < 100  # a real mix of hits and misses


def test_max_box_acc_default_grid():
    out = max_box_acc(MAPS32, BOXES, NUM)
    best, curves = ref_max_box_acc(list(MAPS32), GTS, GRID)
    assert [out[f"MaxBoxAccV2/IoU{k}"] for k in (30, 50, 70)] == [best[k] for k in (30, 50, 70)]
    assert len(out["MaxBoxAccV2/curve/IoU50"]) == 100


@pytest.mark.parametrize("dtype", list(INPUTS))
def test_pxap_matches_reference(dtype):
    masks = torch.from_numpy(MASKS) if dtype.startswith("torch") else MASKS
    for thresholds in (None, 0.05, [0.0, 0.3, 0.31, 0.8]):
        grid = GRID if thresholds is None else (np.arange(0, 1, 0.05) if thresholds == 0.05 else thresholds)
        out = pxap(INPUTS[dtype](), masks, thresholds)
        auc, piou, fg, bg = ref_pxap(REF_MAPS[dtype], MASKS, grid)
        assert out["PxAP"] == auc
        assert out["PIoU"] == pytest.approx(piou, abs=1e-12)
        assert out["PIoU/best_threshold"] == grid[int(np.argmax(out["PIoU/curve"]))]
        tp = np.array([fg[k:].sum() for k in range(len(grid))])
        fp = np.array([bg[k:].sum() for k in range(len(grid))])
        np.testing.assert_allclose(out["PxAP/recall"], tp / fg.sum(), rtol=0, atol=1e-12)
        prec = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
        np.testing.assert_allclose(out["PxAP/precision"], prec, rtol=0, atol=1e-12)


def test_pxap_undefined_is_nan():
    out = pxap(MAPS32[:2], np.zeros((2, H, W), np.uint8))
    assert set(out) == {"PxAP", "PIoU", "PIoU/best_threshold"} and all(np.isnan(v) for v in out.values())
    assert np.isnan(pxap_from_rows(np.zeros((0, 2, 102), np.int64), GRID)["PxAP"])


def _largest_at(m, t):
    """The reference's largest-contour box at t, and whether it is the only contour of that area."""
    u8 = (m * 255).astype(np.uint8)
    binary = (u8 > int(t * u8.max())).astype(np.uint8)
    contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
    areas = [cv2.contourArea(c) for c in contours]
    return ref_boxes(m, t, multi_contour=False)[0], len(areas) < 2 or areas.count(max(areas)) == 1


@pytest.mark.parametrize("dtype", list(INPUTS))
@pytest.mark.parametrize("cam_threshold, multi_contour", [(0.2, False), (0.2, True), (0.555, False), (0.0, False)])
def test_loc_ious_and_gt_known_loc_match_reference(dtype, cam_threshold, multi_contour):
    maps, ref = INPUTS[dtype](), REF_MAPS[dtype]
    iou, box = loc_ious(maps, BOXES, NUM, cam_threshold, multi_contour)
    assert iou.shape == (N,) and box.shape == (N, 4)
    want = np.array([ref_best_ious(ref[i], GTS[i], [cam_threshold], multi_contour)[0] for i in range(N)])
    np.testing.assert_array_equal(iou, want)
    unique = 0
    for i in range(N):
        if multi_contour:
            assert box[i].tolist() in ref_boxes(ref[i], cam_threshold, True)
        else:
            b, only = _largest_at(ref[i], cam_threshold)
            unique += only
            if only:
                assert box[i].tolist() == b, i
    assert multi_contour or unique >= N // 2
    for iou_threshold in (0.5, 0.3):
        got = gt_known_loc(maps, BOXES, NUM, cam_threshold, iou_threshold, multi_contour)
        assert got == (want >= iou_threshold).sum() * 100.0 / N


def test_topk_hits_and_localization_accuracy_match_plain_python():
    g = torch.Generator().manual_seed(2)
    logits, labels = torch.randn(N, 7, generator=g), torch.randint(0, 7, (N,), generator=g)
    hits = topk_hits(logits, labels, (1, 3, 10))
    assert hits.shape == (N, 3) and hits.dtype == bool
    loc = loc_ious(MAPS32, BOXES, NUM)[0]
    for i in range(N):
        order = sorted(range(7), key=lambda c: -logits[i, c].item())
        assert hits[i].tolist() == [labels[i].item() in order[:k] for k in (1, 3, 10)]
    assert hits[:, 2].all()  # k above the number of classes: clamped
    out = localization_accuracy(loc, hits, (1, 3, 10))
    hit = loc >= 0.5
    assert out["gt_known_loc"] == hit.sum() * 100.0 / N == gt_known_loc(MAPS32, BOXES, NUM)
    for j, k in enumerate((1, 3, 10)):
        assert out[f"top{k}_loc"] == (hits[:, j] & hit).sum() * 100.0 / N
        assert out[f"top{k}_cls"] == hits[:, j].sum() * 100.0 / N
    assert localization_accuracy(np.zeros(0)) == {}
    with pytest.raises(ValueError):
        topk_hits(logits[:3], labels, (1,))


def test_box_accuracy_aggregate():
    r = box_accuracy(np.array([[0.9, 0.6, 0.2], [0.1, 0.6, 0.8]]), [0.1, 0.2, 0.3], (50, 70))
    assert r["MaxBoxAccV2/IoU50"] == 100.0 and r["MaxBoxAccV2/best_threshold/IoU50"] == 0.2
    assert r["MaxBoxAccV2/IoU70"] == 50.0 and r["MaxBoxAccV2/best_threshold/IoU70"] == 0.1  # first on ties
    assert r["MaxBoxAccV2"] == 75.0
    half = box_accuracy(np.array([[0.5], [0.49999999]]), [0.2], (50,), name="X")
    assert half["X/IoU50"] == 50.0 and set(half) == {"X", "X/IoU50", "X/best_threshold/IoU50", "X/best_index/IoU50",
                                                     "X/curve/IoU50"}
    assert box_accuracy(np.zeros((0, 3)), [0.1, 0.2, 0.3]) == {}
    for bad in ((), (0,), (150,), (-5,)):
        with pytest.raises(ValueError):
            check_iou_thresholds(bad)


def test_bad_arguments():
    with pytest.raises(ValueError, match="cam_threshold"):
        loc_ious(MAPS32, BOXES, NUM, cam_threshold=1.0)
    with pytest.raises(ValueError):
        max_box_acc(MAPS32, BOXES, NUM, thresholds=[0.5, 0.2])
    with pytest.raises(ValueError):
        max_box_acc(MAPS32, BOXES, NUM, iou_thresholds=(0,))
    with pytest.raises(ValueError, match="percents"):  # a fraction where a percent is meant would score IoU 0.5 %
        max_box_acc(MAPS32, BOXES, NUM, iou_thresholds=(0.5,))
    with pytest.raises(ValueError, match="divide 0-255 maps by 255"):
        max_box_acc((MAPS32 * 255).astype(np.uint8), BOXES, NUM)
    with pytest.raises(ValueError, match="at most 32767 px"):
        best_ious(np.zeros((1, 32768, 1), np.float32), np.zeros((1, 1, 4)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pxap(MAPS32 * 2, MASKS)


def test_topk_ties_rank_by_class_index_so_top1_is_the_argmax():
    # hand-worked: logits [1, 3, 3, 0]; argmax (first maximum) is class 1, so class 2 is ranked second
    logits = np.array([[1.0, 3.0, 3.0, 0.0]] * 4)
    labels = np.array([1, 2, 0, 3])
    assert topk_hits(logits, labels, (1, 2, 3)).tolist() == [[True, True, True], [False, True, True],
                                                               [False, False, True], [False, False, False]]
    from camlab.wsol.functional import softmax_prediction

    pred, score = softmax_prediction(logits)
    assert pred.tolist() == [1, 1, 1, 1]
    assert score[0] == pytest.approx(np.exp(3) / (np.exp(1) + 2 * np.exp(3) + 1))
