"""camlab.wsol.WSOLMetrics: every number against the plain reference, the per-image rows, de-duplication by index,
parallel runs, validation."""

from __future__ import annotations

import functools

import cv2
import numpy as np
import pytest
import torch
import torch.distributed as dist

from _wsol_maps import batches, gts, make_dataset
from _wsol_reference import ref_best_ious, ref_boxes, ref_max_box_acc, ref_num_contours, ref_pxap
from camlab.cam import minmax_normalize
from camlab.wsol import ScoreMaps, WSOLMetrics, box_iou_inclusive, gt_boxes_to_int, threshold_grid

GRID = threshold_grid()


@functools.lru_cache(maxsize=None)
def _ref_ious(seed, n, scale, i, thresholds, multi_contour):
    data = _scaled(seed, n, scale)
    return ref_best_ious(data["cams"][i].numpy(), gts(data, i), thresholds, multi_contour)


@functools.lru_cache(maxsize=None)
def _scaled(seed, n, scale):
    data = dict(make_dataset(n=n, seed=seed))
    if scale:  # maxima below 1 on most maps: int(t * max) then sometimes hits a grid level for an off-grid t
        data["cams"] = data["cams"] * torch.linspace(0.3, 1.0, n)[:, None, None]
    return data


def run(metric, data, size=5, **drop):
    for b in batches(data, size):
        metric.update(**{k: v for k, v in b.items() if k not in drop})
    return metric


@pytest.mark.parametrize("size", [5, 13])
def test_box_accuracy_matches_reference(size):
    data = make_dataset()
    metric = run(WSOLMetrics(topk=()), data, size)
    out, rep = metric.compute(), metric.report()
    maps = data["cams"].numpy()
    for multi_contour, name, ious in ((True, "MaxBoxAccV2", (30, 50, 70)), (False, "MaxBoxAcc", (50,))):
        best, curves = ref_max_box_acc(maps, [gts(data, i) for i in range(len(maps))], GRID, ious, multi_contour)
        for k in ious:
            assert out[f"{name}/IoU{k}"].item() == best[k]
            assert rep.curves[f"{name}/IoU{k}"] == curves[k].tolist()
            assert out[f"{name}/best_threshold/IoU{k}"].item() == GRID[int(np.argmax(curves[k]))]
        assert out[name].item() == pytest.approx(np.mean([best[k] for k in ious]), abs=1e-12)
        assert out[name].dtype == torch.float64
    assert out["best_threshold/IoU50"] == out["MaxBoxAccV2/best_threshold/IoU50"]
    assert rep.curves["threshold"] == GRID.tolist()
    assert len(rep.rows["index"]) == len(maps) and not any("num_samples" in k for k in out)
    assert not any("/best_index/" in k for k in out) and "MaxBoxAccV2/best_index/IoU50" in rep.scalars


def test_deduplicates_by_index_and_ignores_order():
    data = make_dataset(n=9)
    a = WSOLMetrics(masks=True)
    a.update(**data)
    b = WSOLMetrics(masks=True)
    perm = torch.tensor([8, 3, 1, 0, 2, 7, 6, 5, 4, 3, 8])  # two repeats, shuffled
    b.update(**{k: v[perm] for k, v in data.items()})
    ra, rb = a.compute(), b.compute()
    assert ra.keys() == rb.keys()
    for key in ra:
        assert torch.equal(ra[key], rb[key]), key
    pa, pb = a.report(), b.report()
    assert pb.rows["index"].tolist() == list(range(9))  # repeats dropped, sorted by index
    assert pa.rows.keys() == pb.rows.keys()
    for key in pa.rows:
        assert np.array_equal(pa.rows[key], pb.rows[key], equal_nan=True), key
    assert pa.per_image() == pb.per_image()
    assert [r["index"] for r in pb.per_image()] == list(range(9))
    # a repeated index keeps its first row: a different map under a repeated index is dropped
    c = WSOLMetrics(masks=True)
    c.update(**data)
    c.update(**{**{k: v[:2] for k, v in data.items()}, "cams": torch.zeros(2, *data["cams"].shape[1:])})
    assert all(torch.equal(v, c.compute()[k]) for k, v in ra.items())


def test_pxap_only_metric_matches_reference():
    data = make_dataset(n=11, seed=1)
    metric = WSOLMetrics(box_metrics=False, masks=True, topk=())
    for b in batches(data, 4):
        metric.update(b["cams"], masks=b["masks"], index=b["index"])
    out, rep = metric.compute(), metric.report()
    assert set(out) == {"PxAP", "PIoU", "PIoU/best_threshold"}
    auc, piou, fg, bg = ref_pxap(data["cams"].numpy(), data["masks"].numpy(), GRID)
    assert out["PxAP"].item() == auc
    assert out["PIoU"].item() == pytest.approx(piou, abs=1e-9)
    tp = np.array([fg[k:].sum() for k in range(len(GRID))])
    fp = np.array([bg[k:].sum() for k in range(len(GRID))])
    np.testing.assert_allclose(rep.curves["PxAP/recall"], tp / fg.sum(), rtol=0, atol=1e-12)
    prec = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    np.testing.assert_allclose(rep.curves["PxAP/precision"], prec, rtol=0, atol=1e-12)
    piou_curve = np.array(rep.curves["PIoU"])
    assert piou_curve.max() == out["PIoU"].item() and out["PIoU/best_threshold"].item() == GRID[piou_curve.argmax()]
    assert set(rep.rows) == {"index", "label", "pred", "score", "cls_hit", "hist", "has_mask"}
    assert np.array_equal(rep.rows["hist"].sum(axis=0), np.stack([fg, bg]))


def test_images_without_masks_are_left_out_of_pxap():
    data = make_dataset(n=10, seed=4)
    a = WSOLMetrics(masks=True, topk=(1,))
    for b in batches(data, 5):
        a.update(**(b if b["index"][0] < 5 else {**b, "masks": None}))
    auc, _, _, _ = ref_pxap(data["cams"][:5].numpy(), data["masks"][:5].numpy(), GRID)
    out = a.compute()
    assert out["PxAP"].item() == auc
    assert a.report().rows["has_mask"].tolist() == [1] * 5 + [0] * 5
    best, _ = ref_max_box_acc(data["cams"].numpy(), [gts(data, i) for i in range(10)], GRID)
    assert out["MaxBoxAccV2/IoU50"].item() == best[50]  # the box metrics still use all ten


def test_topk_localization_matches_plain_reference():
    data = make_dataset(n=17, seed=2, fit=True)
    metric = run(WSOLMetrics(loc_cam_threshold=0.2, loc_iou_threshold=0.5, topk=(1, 5)), data, 6)
    out = metric.compute()
    n = len(data["labels"])
    loc = cls1 = cls5 = loc1 = loc5 = 0
    for i in range(n):
        hit = ref_best_ious(data["cams"][i].numpy(), gts(data, i), [0.2], multi_contour=False)[0] >= 0.5
        order = sorted(range(data["logits"].shape[1]), key=lambda c: -data["logits"][i, c].item())
        in1 = data["labels"][i].item() in order[:1]
        in5 = data["labels"][i].item() in order[:5]
        loc += hit
        cls1 += in1
        cls5 += in5
        loc1 += in1 and hit
        loc5 += in5 and hit
    assert 0 < loc < n and 0 < loc1 < loc
    assert out["gt_known_loc"].item() == loc * 100.0 / n
    assert out["top1_loc"].item() == loc1 * 100.0 / n
    assert out["top5_loc"].item() == loc5 * 100.0 / n
    assert out["top1_cls"].item() == cls1 * 100.0 / n
    assert out["top5_cls"].item() == cls5 * 100.0 / n


@pytest.mark.parametrize("grid,loc_threshold", [(None, 0.2), (None, 0.205), (0.1, 0.35), ([0.3, 0.6], 0.2)])
@pytest.mark.parametrize("max_box_acc", [False, True])
@pytest.mark.parametrize("loc_multi_contour", [False, True])
def test_shared_kernel_run_equals_the_reference(grid, loc_threshold, max_box_acc, loc_multi_contour):
    # one scan per batch over the grid plus the fixed threshold, reused for MaxBoxAcc and GT-known loc: every stored
    # per-image IoU must still equal the plain per-threshold OpenCV reference
    n = 23
    data = _scaled(5, n, True)
    wm = run(WSOLMetrics(grid, max_box_acc=max_box_acc, topk=(1,), loc_cam_threshold=loc_threshold,
                         loc_multi_contour=loc_multi_contour), data, 8, masks=True)
    rows = wm.report().rows
    t = tuple(wm.thresholds.tolist())
    several = 0
    for i in range(n):
        want = _ref_ious(5, n, True, i, (loc_threshold,), loc_multi_contour)[0]
        assert rows["loc_iou"][i] == want, i
        np.testing.assert_array_equal(rows["ious"][i], _ref_ious(5, n, True, i, t, True), err_msg=str(i))
        several += ref_num_contours(data["cams"][i].numpy(), loc_threshold) >= 2
        if max_box_acc:
            np.testing.assert_array_equal(rows["largest"][i], _ref_ious(5, n, True, i, t, False), err_msg=str(i))
    assert several >= 3  # the OpenCV path for several contours is exercised
    assert ("largest" in rows) == max_box_acc and ("MaxBoxAcc" in wm.compute()) == max_box_acc


def test_iou_exactly_half_counts_as_correct():
    cams = torch.zeros(1, 12, 12)
    cams[0, 0:10, 0:9] = 1.0  # box (0, 0, 9, 10) -> 10 x 11 inclusive
    boxes = torch.tensor([[[0.0, 0.0, 4.0, 10.0]]])  # inclusive 5 x 11: IoU 55 / 110 = 0.5
    m = WSOLMetrics(cam_thresholds=[0.5], iou_thresholds=(50, 51), topk=(), loc_cam_threshold=0.5)
    m.update(cams, boxes, torch.tensor([1]), index=torch.tensor([0]))
    out = m.compute()
    assert out["MaxBoxAccV2/IoU50"].item() == 100.0 and out["MaxBoxAccV2/IoU51"].item() == 0.0
    assert out["gt_known_loc"].item() == 100.0  # iou_threshold 0.5 inclusive too


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric WSOLMetrics was called before")
def test_keys_curves_and_missing_inputs():
    data = make_dataset(n=6, seed=3)
    wm = WSOLMetrics(cam_thresholds=0.05, masks=True)
    wm.update(**data)
    out = wm.compute()
    keys = {"MaxBoxAccV2", "MaxBoxAccV2/IoU30", "MaxBoxAccV2/IoU50", "MaxBoxAccV2/IoU70",
            "MaxBoxAccV2/best_threshold/IoU30", "MaxBoxAccV2/best_threshold/IoU50", "MaxBoxAccV2/best_threshold/IoU70",
            "best_threshold/IoU30", "best_threshold/IoU50", "best_threshold/IoU70", "MaxBoxAcc", "MaxBoxAcc/IoU50",
            "MaxBoxAcc/best_threshold/IoU50", "PxAP", "PIoU", "PIoU/best_threshold", "gt_known_loc", "top1_loc",
            "top5_loc", "top1_cls", "top5_cls"}
    assert set(out) == keys
    assert all(v.ndim == 0 and v.dtype == torch.float64 for v in out.values())
    assert out["MaxBoxAcc"] == out["MaxBoxAcc/IoU50"]
    table = wm.report().curves
    assert len(table["threshold"]) == 20
    assert all(len(v) == 20 for v in table.values())
    assert set(table) == {"threshold", "MaxBoxAccV2/IoU30", "MaxBoxAccV2/IoU50", "MaxBoxAccV2/IoU70",
                          "MaxBoxAcc/IoU50", "PxAP/precision", "PxAP/recall", "PIoU"}

    masks_only = WSOLMetrics(cam_thresholds=0.05, masks=True, box_metrics=False)
    masks_only.update(data["cams"], masks=data["masks"], index=data["index"])
    assert set(masks_only.compute()) == {"PxAP", "PIoU", "PIoU/best_threshold"}
    boxes_only = WSOLMetrics(cam_thresholds=0.05, masks=True, topk=())
    boxes_only.update(data["cams"], boxes=data["boxes"], num_boxes=data["num_boxes"], index=data["index"])
    r = boxes_only.compute()
    assert "PxAP" not in r and "MaxBoxAccV2" in r and "gt_known_loc" in r and "top1_loc" not in r
    no_labels = WSOLMetrics(cam_thresholds=0.05, topk=(1,))  # top-k needs logits and labels
    no_labels.update(data["cams"], boxes=data["boxes"], num_boxes=data["num_boxes"], logits=data["logits"],
                     index=data["index"])
    assert "top1_loc" not in no_labels.compute() and "gt_known_loc" in no_labels.compute()
    boxes_only.reset()
    assert boxes_only.compute() == {}
    assert boxes_only.report().rows == {} and boxes_only.report().per_image() == []


def test_state_is_per_sample_rows():
    data = make_dataset(n=5)
    m = WSOLMetrics(masks=True, topk=(1, 5))
    m.update(**data)
    assert torch.cat(m.ious).shape == (5, 100) and torch.cat(m.ious).dtype == torch.float64
    assert torch.cat(m.largest).shape == (5, 100) and torch.cat(m.boxes).shape == (5, 100)  # one int64 per box
    assert torch.cat(m.boxes).dtype == torch.int64 and torch.cat(m.loc_box).dtype == torch.int64
    assert torch.cat(m.loc_iou).shape == (5,) and torch.cat(m.loc_box).shape == (5,)
    assert m.report().rows["boxes"].shape == (5, 100, 4) and m.report().rows["loc_box"].shape == (5, 4)
    assert torch.cat(m.hist).shape == (5, 2, 102) and torch.cat(m.cls_hit).shape == (5, 2)
    for name in ("index", "label", "pred", "score", "has_mask"):
        assert torch.cat(getattr(m, name)).shape == (5,), name
    assert set(m.state_names) == {"index", "label", "pred", "score", "cls_hit", "ious", "boxes", "loc_iou", "loc_box",
                                  "largest", "hist", "has_mask"}
    for attr in ("box_v2", "box_v1", "pxap", "topk_loc", "curves"):
        assert not hasattr(m, attr)


@pytest.mark.parametrize("kwargs", [dict(cam_thresholds=1.5), dict(cam_thresholds=[0.5, 0.2]), dict(cam_thresholds=[]),
                                    dict(iou_thresholds=()), dict(iou_thresholds=(0,)), dict(iou_thresholds=(150,)),
                                    dict(loc_cam_threshold=1.0), dict(loc_cam_threshold=-0.1),
                                    dict(loc_iou_threshold=50), dict(loc_iou_threshold=0), dict(topk=(0,))])
def test_validates_arguments(kwargs):
    with pytest.raises(ValueError):
        WSOLMetrics(**kwargs)


def test_update_rejects_bad_inputs():
    data = make_dataset(n=2)
    m = WSOLMetrics(masks=True)
    args = dict(boxes=data["boxes"], num_boxes=data["num_boxes"])
    with pytest.raises(ValueError, match="index"):
        m.update(data["cams"], **args)
    with pytest.raises(ValueError, match="index"):
        m.update(data["cams"], **args, index=torch.arange(3))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        m.update(data["cams"] * 2, **args, index=data["index"])
    with pytest.raises(ValueError, match="num_boxes"):
        m.update(data["cams"], data["boxes"], torch.tensor([0, 1]), index=data["index"])
    with pytest.raises(ValueError, match="boxes"):
        m.update(data["cams"], index=data["index"])
    with pytest.raises(ValueError, match="masks"):
        m.update(data["cams"], **args, masks=data["masks"][:, :-1], index=data["index"])
    with pytest.raises(ValueError, match="logits"):
        m.update(data["cams"], **args, logits=data["logits"][:1], index=data["index"])
    with pytest.raises(ValueError, match="finite"):
        m.update(data["cams"], torch.full_like(data["boxes"], float("nan")), data["num_boxes"], index=data["index"])
    assert m.compute() == {}  # nothing was stored by the failed updates


def test_empty_batches_and_undefined_pxap():
    wm = WSOLMetrics(masks=True)
    z = torch.zeros(0, dtype=torch.long)
    wm.update(torch.zeros(0, 5, 5), boxes=torch.zeros(0, 1, 4), num_boxes=z,
              masks=torch.zeros(0, 5, 5, dtype=torch.uint8), logits=torch.zeros(0, 3), labels=z, index=z)
    assert wm.compute() == {}
    p = WSOLMetrics(box_metrics=False, masks=True, topk=())
    p.update(torch.rand(2, 4, 4), masks=torch.zeros(2, 4, 4, dtype=torch.uint8), index=torch.arange(2))  # no positive
    out = p.compute()
    assert torch.isnan(out["PxAP"]) and torch.isnan(out["PIoU"]) and torch.isnan(out["PIoU/best_threshold"])


def test_scoremaps_in_place_of_the_tensor_give_the_same_results():
    g = torch.Generator().manual_seed(3)
    raw = torch.randn(6, 10, 12, generator=g) * torch.logspace(-4, 4, 6)[:, None, None] - 3.0
    raw[1] = 2.5  # constant map
    raw[2, 4, 4] = float("nan")  # NaN map
    data = make_dataset(n=6, H=20, W=24)
    data["cams"] = raw.repeat(1, 2, 2)
    a, b = WSOLMetrics(0.05, masks=True, topk=(1,)), WSOLMetrics(0.05, masks=True, topk=(1,))
    a.update(**{**data, "cams": minmax_normalize(data["cams"])})
    b.update(**{**data, "cams": ScoreMaps.normalize(data["cams"])})
    ra, rb = a.compute(), b.compute()
    assert ra.keys() == rb.keys() and all(torch.equal(ra[k], rb[k]) for k in ra)


def test_float64_maps_are_not_rounded_to_float32():
    """wsoleval's evaluator takes float64 maps; rounding them to float32 moves scores across uint8 steps and PxAP
    edges. Hand-worked: s = 0.0039215686274509795 is the largest float64 with s * 255 < 1 (so uint8 0), while
    float32(s) * 255 rounds to 1.0 (uint8 1)."""
    s = 0.0039215686274509795
    assert int(s * 255) == 0 and int(np.float32(s) * np.float32(255)) == 1
    cams = torch.zeros(1, 8, 8, dtype=torch.float64)
    cams[0, 0, 0] = 1.0
    cams[0, 6:8, 6:8] = s
    boxes = torch.tensor([[[6.0, 6.0, 7.0, 7.0]]])  # inclusive 6..7: exactly the 2 x 2 block
    # at t = 0 the foreground is u8 > 0: in float64 only the max pixel (box (0, 0, 1, 1), IoU 0 with the GT);
    # the float32 map also has the block (box (6, 6, 7, 7), IoU 1)
    for dtype, want in ((torch.float64, 0.0), (torch.float32, 100.0)):
        m = WSOLMetrics(cam_thresholds=[0.0], iou_thresholds=(50,), topk=(), loc_cam_threshold=0.0,
                        loc_multi_contour=True)
        m.update(cams.to(dtype), boxes, torch.tensor([1]), index=torch.tensor([0]))
        out = m.compute()
        assert out["MaxBoxAccV2/IoU50"].item() == want and out["gt_known_loc"].item() == want, dtype
    # PxAP: a foreground pixel one float64 step below the edge 0.5 is below the threshold 0.5 (float32 rounds it up
    # to 0.5); a background pixel at 0.75. Thresholds [0, 0.5]: recall at 0.5 is 0 / 1, precision there 0 / 1.
    below = float(np.nextafter(0.5, 0.0))
    assert float(np.float32(below)) == 0.5
    maps = torch.tensor([[[below, 0.75]]], dtype=torch.float64)
    masks = torch.tensor([[[1, 0]]], dtype=torch.uint8)
    for dtype, recall_at_half in ((torch.float64, 0.0), (torch.float32, 1.0)):
        p = WSOLMetrics(cam_thresholds=[0.0, 0.5], box_metrics=False, masks=True, topk=())
        p.update(maps.to(dtype), masks=masks, index=torch.tensor([0]))
        assert p.report().curves["PxAP/recall"][1] == recall_at_half, dtype


# --- per-image rows ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reported():
    data = make_dataset(n=29, seed=7, C=4, fit=True)
    wm = run(WSOLMetrics(masks=True, topk=(1, 2)), data, 6)
    return data, wm.report()


def test_per_image_means_are_the_scalars(reported):
    data, rep = reported
    rows = rep.per_image()
    n = len(rows)
    assert n == 29 and [r["index"] for r in rows] == list(range(29))

    def pct(key):  # the aggregates count hits, then * 100 / n
        return sum(bool(r[key]) for r in rows) * 100.0 / n

    def mean_pct(key):  # the column mean, in percent (equal up to the rounding of mean * 100)
        return float(np.mean([r[key] for r in rows])) * 100

    s = rep.scalars
    for k in (30, 50, 70):
        assert pct(f"hit{k}") == s[f"MaxBoxAccV2/IoU{k}"]
        assert mean_pct(f"hit{k}") == pytest.approx(s[f"MaxBoxAccV2/IoU{k}"], rel=1e-15)
        assert all(r[f"threshold{k}"] == s[f"MaxBoxAccV2/best_threshold/IoU{k}"] for r in rows)
    assert pct("gt_known_hit") == s["gt_known_loc"]
    assert mean_pct("gt_known_hit") == pytest.approx(s["gt_known_loc"], rel=1e-15)
    assert sum(r["correct"] and r["gt_known_hit"] for r in rows) * 100.0 / n == s["top1_loc"]
    assert all(r["top1_loc"] == (r["correct"] and r["gt_known_hit"]) for r in rows)
    assert pct("correct") == s["top1_cls"]
    assert mean_pct("correct") == pytest.approx(s["top1_cls"], rel=1e-15)
    assert 0 < s["top1_loc"] < s["gt_known_loc"] < 100 and 0 < s["MaxBoxAccV2/IoU70"] < s["MaxBoxAccV2/IoU30"] < 100
    for r in rows:
        i = r["index"]
        probs = data["logits"][i].softmax(0)
        assert r["label"] == data["labels"][i].item() and r["pred"] == int(probs.argmax())
        assert r["score"] == pytest.approx(float(probs.max()), rel=1e-6) and r["correct"] == (r["pred"] == r["label"])


def test_per_image_boxes_and_ious_match_the_reference(reported):
    data, rep = reported
    unique = 0
    for r in rep.per_image():
        i = r["index"]
        cam, gt = data["cams"][i].numpy(), gts(data, i)
        gt_int = gt_boxes_to_int(gt)
        for k in (30, 50, 70):
            t = r[f"threshold{k}"]
            assert box_iou_inclusive(r[f"box{k}"], gt_int).max() == r[f"iou{k}"]
            assert r[f"iou{k}"] == ref_best_ious(cam, gt, [t], True)[0]
            assert r[f"box{k}"] in ref_boxes(cam, t, True)
            assert r[f"hit{k}"] == (r[f"iou{k}"] >= k / 100)
        assert r["gt_known_iou"] == ref_best_ious(cam, gt, [0.2], False)[0]
        assert box_iou_inclusive(r["gt_known_box"], gt_int).max() == r["gt_known_iou"]
        assert r["gt_known_hit"] == (r["gt_known_iou"] >= 0.5)
        u8 = (cam * 255).astype(np.uint8)
        contours = cv2.findContours((u8 > int(0.2 * u8.max())).astype(np.uint8), cv2.RETR_TREE,
                                    cv2.CHAIN_APPROX_SIMPLE)[-2]
        areas = [cv2.contourArea(c) for c in contours]
        if areas.count(max(areas)) == 1:
            unique += 1
            assert r["gt_known_box"] == ref_boxes(cam, 0.2, False)[0], i
    assert unique >= 20


def test_parallel_run_is_bit_identical():
    data = make_dataset(n=19, seed=9, H=30, W=40)
    serial = run(WSOLMetrics(masks=True, topk=(1, 3)), data, 7)
    par = run(WSOLMetrics(masks=True, topk=(1, 3), parallel=True), data, 7)
    ra, rb = serial.compute(), par.compute()
    assert ra.keys() == rb.keys() and all(torch.equal(ra[k], rb[k]) for k in ra)
    pa, pb = serial.report(), par.report()
    assert pa.curves == pb.curves and pa.scalars == pb.scalars
    assert pa.rows.keys() == pb.rows.keys()
    for key in pa.rows:
        a, b = pa.rows[key], pb.rows[key]
        assert a.dtype == b.dtype and np.array_equal(a.view(np.uint8), b.view(np.uint8)), key  # bit for bit


# --- a real (one-process gloo) process group: the sync path of compute() / report() --------------
@pytest.mark.parametrize("box_metrics", [False, True])
def test_sync_under_a_process_group_equals_no_group(box_metrics, tmp_path):
    """compute() and report() gather the states through the process group (torchmetrics then replaces each list
    state by one concatenated tensor); with one rank the results must be those without a group. The 2-process
    version is tests/test_metrics_ddp.py."""
    data = make_dataset(n=7, seed=6, fit=True)
    kwargs = dict(cam_thresholds=0.1, masks=True, topk=(1,), box_metrics=box_metrics)
    plain = run(WSOLMetrics(**kwargs), data, 3)
    want, want_rows = plain.compute(), plain.report().rows
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        synced = run(WSOLMetrics(**kwargs), data, 3)
        got, rows = synced.compute(), synced.report().rows
    finally:
        dist.destroy_process_group()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert rows.keys() == want_rows.keys()
    assert all(np.array_equal(rows[k], want_rows[k], equal_nan=True) for k in rows)
    assert isinstance(synced.index, list)  # unsynced afterwards: the metric can be updated again


def test_gt_known_off_skips_the_fixed_threshold_protocol():
    cams = torch.zeros(2, 12, 12)
    cams[:, 2:6, 2:6] = 1.0
    cams[:, 8:11, 8:11] = 0.9  # two components at 0.2: GT-known loc would need OpenCV
    boxes = torch.tensor([[[2.0, 2.0, 6.0, 6.0]], [[8.0, 8.0, 11.0, 11.0]]])
    on, off = WSOLMetrics(topk=()), WSOLMetrics(topk=(), gt_known=False)
    for m in (on, off):
        m.update(cams, boxes, torch.tensor([1, 1]), index=torch.tensor([0, 1]))
    assert "loc_iou" in on.state_names and "loc_iou" not in off.state_names
    assert on.compute()["gt_known_loc"].item() == 50.0 and "gt_known_loc" not in off.compute()
    assert {k: v for k, v in on.compute().items() if k != "gt_known_loc"} == off.compute()
    rows = off.report().per_image()
    assert len(rows) == 2 and "gt_known_iou" not in rows[0] and rows[0]["hit50"] is True
    with pytest.raises(ValueError):
        WSOLMetrics(topk=(0,))
    assert WSOLMetrics(topk=(1,), gt_known=False).loc  # top-k loc needs it
