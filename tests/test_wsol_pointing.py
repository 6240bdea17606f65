"""camlab.wsol.pointing against a plain per-pixel Python reference, and inside WSOLMetrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from camlab.wsol import WSOLMetrics, pointing_from_rows, pointing_rows


def reference(m, gt, mask, tol, topk):
    """The five metrics of one image by plain loops (sorted() as the stable descending order)."""
    H, W = m.shape
    pix = [(y, x) for y in range(H) for x in range(W)]
    best, by, bx = -1.0, 0, 0
    for y, x in pix:
        if m[y, x] > best:
            best, by, bx = float(m[y, x]), y, x
    hit = any(math.hypot(max(g[0] - bx, 0, bx - g[2]), max(g[1] - by, 0, by - g[3])) <= tol for g in gt)
    inside = {(y, x) for g in gt for y in range(max(g[1], 0), min(g[3], H - 1) + 1)
              for x in range(max(g[0], 0), min(g[2], W - 1) + 1)}
    total = sum(float(m[p]) for p in pix)
    energy = sum(float(m[p]) for p in inside) / total if total > 0 else 0.0
    out = [1.0 if (hit and best > 0) else 0.0, energy]
    if mask is None:
        return out + [math.nan] * 3
    kept = [p for p in pix if mask[p] <= 1]
    obj = [p for p in kept if mask[p] == 1]
    if not obj:
        return out + [math.nan] * 3
    tot = sum(float(m[p]) for p in kept)
    order = sorted(kept, key=lambda p: -float(m[p]))  # stable: raster order on ties
    k = min(topk, len(kept))
    objs = set(obj)
    return out + [sum(float(m[p]) for p in obj) / tot if tot > 0 else 0.0,
                  sum(p in objs for p in order[: len(obj)]) / len(obj), sum(p in objs for p in order[:k]) / k]


def dataset(n=24, H=13, W=17, seed=0):
    rng = np.random.default_rng(seed)
    maps = rng.random((n, H, W)).astype(np.float32)
    maps[::3] = np.round(maps[::3] * 4) / 4  # ties, the maximum among them
    maps[1] = 0.0  # an all-zero map: no maximum
    boxes = np.zeros((n, 2, 4))
    num = rng.integers(1, 3, n)
    for i in range(n):
        for g in range(num[i]):
            x0, y0 = rng.uniform(-2, W - 3), rng.uniform(-2, H - 3)
            boxes[i, g] = [max(x0, 0), max(y0, 0), x0 + rng.uniform(1, W / 2), y0 + rng.uniform(1, H / 2)]
    masks = (rng.random((n, H, W)) < 0.3).astype(np.uint8)
    masks[rng.random((n, H, W)) < 0.1] = 255
    masks[2] = 0  # no object pixel: NaN mask metrics
    return maps, boxes, num, masks


@pytest.mark.parametrize("tol,topk", [(0.0, 5), (3.0, 40), (15.0, 10_000)])
def test_rows_equal_the_plain_reference(tol, topk):
    maps, boxes, num, masks = dataset()
    got = pointing_rows(maps, boxes, num, masks, tolerance=tol, topk=topk)
    for i in range(len(maps)):
        gt = [[int(v) for v in b] for b in boxes[i, : num[i]]]
        want = reference(maps[i], gt, masks[i], tol, topk)
        np.testing.assert_allclose(got[i], want, rtol=1e-12, atol=1e-12, equal_nan=True)
    assert got[1, 0] == 0.0 and np.isnan(got[2, 2:]).all()
    assert 0 < got[:, 0].sum() < len(maps)  # hits and misses both occur
    no_masks = pointing_rows(torch.from_numpy(maps), boxes, num, None, tolerance=tol, topk=topk)
    assert np.array_equal(no_masks[:, :2], got[:, :2]) and np.isnan(no_masks[:, 2:]).all()


def test_hand_worked_tolerance_and_ties():
    m = np.zeros((1, 20, 20), np.float32)
    m[0, 10, 18] = 1.0
    box = np.array([[[0.0, 0.0, 10.0, 10.0]]])  # inclusive 0..10: the maximum is 8 px right of it
    assert pointing_rows(m, box, tolerance=7.9)[0, 0] == 0.0
    assert pointing_rows(m, box, tolerance=8.0)[0, 0] == 1.0
    m[0, 5, 5] = 1.0  # a tie earlier in raster order wins
    assert pointing_rows(m, box, tolerance=0)[0, 0] == 1.0
    with pytest.raises(ValueError, match="tolerance"):
        pointing_rows(m, box, tolerance=-1)
    with pytest.raises(ValueError, match="topk"):
        pointing_rows(m, box, topk=0)
    with pytest.raises(ValueError, match="masks"):
        pointing_rows(m, box, masks=np.zeros((1, 20, 19), np.uint8))


def test_in_wsol_metrics_the_aggregates_are_the_row_means():
    maps, boxes, num, masks = dataset(n=20, seed=3)
    metric = WSOLMetrics(masks=True, topk=(), pointing=True, pointing_tolerance=2, topk_pixels=30)
    for s in range(0, 20, 6):
        metric.update(maps[s:s + 6], boxes=boxes[s:s + 6], num_boxes=num[s:s + 6], masks=masks[s:s + 6],
                      index=np.arange(s, min(s + 6, 20)))
    metric.update(maps[:3], boxes=boxes[:3], num_boxes=num[:3], masks=masks[:3], index=[0, 1, 2])  # DDP-like repeats
    report = metric.report()
    rows = pointing_rows(maps, boxes, num, masks, tolerance=2, topk=30)
    assert report.scalars["faith/pointing_game"] == rows[:, 0].mean() * 100
    assert report.scalars["faith/relevance_rank"] == pytest.approx(np.nanmean(rows[:, 3]) * 100, abs=1e-12)
    assert pointing_from_rows(rows) == {k: v for k, v in report.scalars.items() if k.startswith("faith/")}
    per_image = report.per_image()
    assert len(per_image) == 20 and per_image[4]["pointing_game"] == rows[4, 0]
    assert "faith/pointing_game" not in WSOLMetrics(topk=()).compute()
