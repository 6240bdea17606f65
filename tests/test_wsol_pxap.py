"""camlab.wsol.pxap: the histogram paths against np.histogram, PxAP / PIoU against the plain reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _wsol_maps import random_map
from _wsol_reference import ref_pxap
from camlab.wsol import ScoreMaps, pxap_bin_edges, pxap_from_histograms, pxap_histograms, threshold_grid
from camlab.wsol.pxap import uniform_grid_multiplier

GRID = threshold_grid()


def np_hist(s, m, thresholds):
    """wsoleval's binning: np.histogram of the float64 scores per class, edges = thresholds + [1, 2, 3]."""
    edges = np.append(np.asarray(thresholds, np.float64), [1.0, 2.0, 3.0])
    s64 = np.asarray(s).astype(np.float64)
    return np.stack([np.histogram(s64[m == 1], bins=edges)[0], np.histogram(s64[m == 0], bins=edges)[0]])


def test_bin_edges():
    assert pxap_bin_edges([0.0, 0.5]).tolist() == [0.0, 0.5, 1.0, 2.0, 3.0]
    assert np.array_equal(pxap_bin_edges(), np.append(GRID, [1.0, 2.0, 3.0]))
    for bad in ([], [0.5, 0.2], [0.2, 0.2], [-0.1, 0.5], [0.5, 1.0]):
        with pytest.raises(ValueError):
            pxap_bin_edges(bad)


def test_histogram_bins_grid_values_like_numpy():
    rng = np.random.default_rng(3)
    on_grid = np.concatenate([GRID, GRID.astype(np.float32).astype(np.float64), [0.35, 0.7, 1.0, 0.0]])
    s = np.concatenate([on_grid, rng.random(2000)]).astype(np.float32)  # float32 maps, as camlab's
    n = s.size - s.size % 8
    s = s[:n].reshape(1, 8, -1)
    m = rng.choice(np.array([0, 1, 255], np.uint8), size=s.shape)
    hist = pxap_histograms(s, m)
    assert hist.shape == (1, 2, 102) and hist.dtype == np.int64
    np.testing.assert_array_equal(hist[0], np_hist(s, m, GRID))


@pytest.mark.parametrize("thresholds", [GRID, threshold_grid(0.05), threshold_grid(0.001), [0.0, 1 / 3, 2 / 3],
                                        [0.2, 0.5, 0.9], np.sort(np.r_[0.3, 0.3 + 1e-5, 0.7]), [0.0, 0.3]])
def test_histograms_match_numpy_on_both_paths(thresholds):
    # float32 maps on a uniform grid k / M take the arithmetic path (the first four grids), every other case the
    # general one; serial and parallel, numpy, torch and ScoreMaps inputs
    uniform = uniform_grid_multiplier(pxap_bin_edges(thresholds))
    assert uniform == (len(thresholds) if len(thresholds) in (100, 20, 1000) or thresholds[1] == 1 / 3 else None)

    rng = np.random.default_rng(4)
    t = np.asarray(thresholds, np.float64)
    t32 = t.astype(np.float32)  # the float32 neighbours of every edge
    near = np.concatenate([t32, np.nextafter(t32, np.float32(0)), np.nextafter(t32, np.float32(2))]).astype(np.float64)
    on_edges = np.concatenate([t, near, np.nextafter(t, 0), [0.0, 1.0, 0.3, 1 - 2**-24, 2**-24]])
    s = np.concatenate([np.clip(on_edges, 0, 1), rng.random(3000)]).astype(np.float32)
    s = s[: s.size - s.size % 6].reshape(3, 2, -1)
    m = rng.choice(np.array([0, 1, 255, 7], np.uint8), size=s.shape)
    want = np.stack([np_hist(s[i], m[i], t) for i in range(3)])
    for hist in (pxap_histograms(s, m, thresholds), pxap_histograms(s, m, thresholds, parallel=True),
                 pxap_histograms(ScoreMaps(s), m, thresholds),
                 pxap_histograms(torch.from_numpy(s), torch.from_numpy(m), t),
                 pxap_histograms(s.astype(np.float64), m, thresholds)):
        np.testing.assert_array_equal(hist, want)
    s64 = s.astype(np.float64)  # float64 maps are binned as float64 values, not float32 neighbours
    s64[0, 0, : len(t)] = np.nextafter(t, 0)
    np.testing.assert_array_equal(pxap_histograms(s64, m, thresholds),
                                  np.stack([np_hist(s64[i], m[i], t) for i in range(3)]))


def test_histograms_of_values_outside_the_unit_interval_match_numpy():
    # not score maps, but the function bins like np.histogram: below 0 and above 3 dropped, [1, 2), [2, 3]
    s = np.array([[[-0.5, 0.0, 0.999, 1.0, 1.5, 2.0, 3.0, 3.5, np.nan]]], np.float32)
    m = np.ones_like(s, np.uint8)
    for x in (s, s.astype(np.float64)):
        np.testing.assert_array_equal(pxap_histograms(x, m)[0], np_hist(x, m, GRID))


def test_hand_worked():
    # 2 positives scored 0.9, 0.4; 2 negatives scored 0.6, 0.1; thresholds 0, 0.5
    s = np.array([[[0.9, 0.4], [0.6, 0.1]]])
    m = np.array([[[1, 1], [0, 0]]], np.uint8)
    hist = pxap_histograms(s, m, [0.0, 0.5])
    assert hist.tolist() == [[[1, 1, 0, 0], [1, 1, 0, 0]]]
    r = pxap_from_histograms(hist[0, 0], hist[0, 1])
    # t=0.5: tp 1 fp 1 (P 0.5, R 0.5); t=0: tp 2 fp 2 (P 0.5, R 1): AP = 0.5*0.5 + 0.5*0.5
    assert r["pxap"] == 50.0
    assert r["precision"].tolist() == [0.5, 0.5] and r["recall"].tolist() == [1.0, 0.5]
    assert r["piou"] == 50.0 and r["best_piou_index"] == 0  # t=0: 2/(2+2+0); t=0.5: 1/(1+1+1)
    assert r["piou_curve"].tolist() == [0.5, 1 / 3]


def test_undefined_pxap_raises_value_error():
    with pytest.raises(ValueError, match="no positive ground-truth"):
        pxap_from_histograms(np.zeros(4), np.array([1, 0, 0, 0]))
    with pytest.raises(ValueError, match="no positive ground-truth"):
        pxap_from_histograms(np.zeros(4), np.zeros(4))


def test_random_maps_match_reference():
    rng = np.random.default_rng(11)
    maps = np.stack([random_map(rng, k, 30, 20) for k in ["smooth", "rings", "noise", "ties", "border"] * 3])
    masks = (rng.random(maps.shape) < 0.4).astype(np.uint8)
    masks[rng.random(maps.shape) < 0.1] = 255
    for thresholds in (GRID, threshold_grid(0.05), threshold_grid(0.001), [0.0, 0.25, 0.6]):
        for x in (maps, maps.astype(np.float64)):
            hist = pxap_histograms(x, masks, thresholds).sum(axis=0)
            r = pxap_from_histograms(hist[0], hist[1])
            auc, piou, fg, bg = ref_pxap(x, masks, thresholds)
            np.testing.assert_array_equal(hist[0], fg)
            np.testing.assert_array_equal(hist[1], bg)
            assert r["pxap"] == auc
            assert r["piou"] == pytest.approx(piou, abs=1e-12)


def test_empty_and_bad_inputs():
    assert pxap_histograms(np.zeros((0, 5, 5), np.float32), np.zeros((0, 5, 5), np.uint8)).shape == (0, 2, 102)
    one = pxap_histograms(np.full((3, 4), 0.5, np.float32), np.ones((3, 4), np.uint8), [0.0, 0.5])  # one (H, W) map
    assert one.tolist() == [[[0, 12, 0, 0], [0, 0, 0, 0]]]
    with pytest.raises(ValueError, match="masks"):
        pxap_histograms(np.zeros((1, 5, 5), np.float32), np.zeros((1, 5, 4), np.uint8))
