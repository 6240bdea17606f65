"""camlab.metrics: the Metric classes against the plain reference, de-duplication, validation."""

import os
import threading
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _wsol_reference import ref_best_ious, ref_max_box_acc, ref_num_contours, ref_pxap
from camlab.localization import normalize_cams, threshold_grid
from camlab.metrics import BoxAccuracy, PxAP, TopKLocalization, UpdateWorker, WSOLMetrics

GRID = threshold_grid()


def make_dataset(n=13, H=28, W=36, G=3, C=6, seed=0):
    """Smooth CAM-like maps with boxes (padded), masks with ignore pixels, logits and labels."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 1, 5, 6, generator=g)
    cams = normalize_cams(F.interpolate(low, (H, W), mode="bilinear", align_corners=False)[:, 0])
    num = torch.randint(1, G + 1, (n,), generator=g)
    xy0 = torch.rand(n, G, 2, generator=g) * torch.tensor([W * 0.6, H * 0.6])
    wh = 2 + torch.rand(n, G, 2, generator=g) * torch.tensor([W * 0.5, H * 0.5])
    boxes = torch.cat([xy0, (xy0 + wh).minimum(torch.tensor([W, H]))], dim=2)
    boxes[torch.arange(G)[None, :] >= num[:, None]] = 0  # padding
    masks = (torch.rand(n, H, W, generator=g) < cams).to(torch.uint8)
    masks[torch.rand(n, H, W, generator=g) < 0.05] = 255
    logits = torch.randn(n, C, generator=g)
    labels = torch.randint(0, C, (n,), generator=g)
    return dict(cams=cams, boxes=boxes, num_boxes=num, masks=masks, logits=logits, labels=labels,
                index=torch.arange(n))


def batches(data, size):
    n = data["cams"].shape[0]
    for s in range(0, n, size):
        yield {k: v[s : s + size] for k, v in data.items()}


def gts(data, i):
    return data["boxes"][i, : data["num_boxes"][i]].numpy()


@pytest.mark.parametrize("multi_contour", [True, False])
def test_box_accuracy_matches_reference(multi_contour):
    data = make_dataset()
    ious = (30, 50, 70) if multi_contour else (50,)
    metric = BoxAccuracy(iou_thresholds=ious, multi_contour=multi_contour)
    for b in batches(data, 5):
        metric.update(b["cams"], b["boxes"], b["num_boxes"], b["index"])
    out = metric.compute()
    maps = data["cams"].numpy()
    best, curves = ref_max_box_acc(maps, [gts(data, i) for i in range(len(maps))], GRID, ious, multi_contour)
    name = "MaxBoxAccV2" if multi_contour else "MaxBoxAcc"
    for k in ious:
        assert out[f"{name}/IoU{k}"].item() == best[k]
        np.testing.assert_array_equal(out[f"{name}/curve/IoU{k}"].numpy(), curves[k])
        assert out[f"{name}/best_threshold/IoU{k}"].item() == GRID[int(np.argmax(curves[k]))]
    assert out[name].item() == pytest.approx(np.mean([best[k] for k in ious]), abs=1e-12)
    assert out[f"{name}/num_samples"].item() == len(maps)


def test_box_accuracy_deduplicates_by_index_and_ignores_order():
    data = make_dataset(n=9)
    a = BoxAccuracy()
    a.update(data["cams"], data["boxes"], data["num_boxes"], data["index"])
    b = BoxAccuracy()
    perm = torch.tensor([8, 3, 1, 0, 2, 7, 6, 5, 4, 3, 8])  # two repeats, shuffled
    b.update(data["cams"][perm], data["boxes"][perm], data["num_boxes"][perm], perm)
    ra, rb = a.compute(), b.compute()
    assert ra.keys() == rb.keys()
    for key in ra:
        assert torch.equal(ra[key], rb[key]), key


def test_pxap_metric_matches_reference():
    data = make_dataset(n=11, seed=1)
    metric = PxAP()
    for b in batches(data, 4):
        metric.update(b["cams"], b["masks"], b["index"])
    out = metric.compute()
    auc, piou, fg, bg = ref_pxap(data["cams"].numpy(), data["masks"].numpy(), GRID)
    assert out["PxAP"].item() == auc
    assert out["PIoU"].item() == pytest.approx(piou, abs=1e-9)
    tp = np.array([fg[k:].sum() for k in range(len(GRID))])
    fp = np.array([bg[k:].sum() for k in range(len(GRID))])
    np.testing.assert_allclose(out["PxAP/recall"].numpy(), tp / fg.sum(), rtol=0, atol=1e-12)
    prec = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    np.testing.assert_allclose(out["PxAP/precision"].numpy(), prec, rtol=0, atol=1e-12)


def test_topk_localization_matches_plain_reference():
    data = make_dataset(n=17, seed=2)
    metric = TopKLocalization(cam_threshold=0.2, iou_threshold=0.5, topk=(1, 5))
    for b in batches(data, 6):
        metric.update(b["cams"], b["boxes"], b["num_boxes"], b["logits"], b["labels"], b["index"])
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
    assert out["gt_known_loc"].item() == pytest.approx(loc * 100 / n, abs=1e-9)
    assert out["top1_loc"].item() == pytest.approx(loc1 * 100 / n, abs=1e-9)
    assert out["top5_loc"].item() == pytest.approx(loc5 * 100 / n, abs=1e-9)
    assert out["top1_cls"].item() == pytest.approx(cls1 * 100 / n, abs=1e-9)
    assert out["top5_cls"].item() == pytest.approx(cls5 * 100 / n, abs=1e-9)


@pytest.mark.parametrize("grid,loc_threshold", [(None, 0.2), (None, 0.205), (0.1, 0.35), ([0.3, 0.6], 0.2)])
@pytest.mark.parametrize("max_box_acc", [False, True])
@pytest.mark.parametrize("loc_multi_contour", [False, True])
def test_wsol_metrics_shared_kernel_run_equals_the_reference(grid, loc_threshold, max_box_acc, loc_multi_contour):
    # WSOLMetrics runs the all-contour kernel once per batch and reuses it for MaxBoxAcc and top-k loc (where the
    # image's cut level for loc_threshold is a grid level; elsewhere its own run): every stored per-image IoU
    # must still equal the plain per-threshold OpenCV reference
    data = make_dataset(n=23, seed=5)
    # maxima below 1 on most maps: int(t * max) then sometimes hits a grid level for an off-grid t, sometimes not
    data["cams"] = data["cams"] * torch.linspace(0.3, 1.0, 23)[:, None, None]
    wm = WSOLMetrics(grid, max_box_acc=max_box_acc, topk=(1,), loc_cam_threshold=loc_threshold,
                     loc_multi_contour=loc_multi_contour)
    for b in batches(data, 8):
        wm.update(b["cams"], boxes=b["boxes"], num_boxes=b["num_boxes"], logits=b["logits"], labels=b["labels"],
                  index=b["index"])
    loc_iou = torch.cat(wm.topk_loc.loc_iou).numpy()
    v2 = torch.cat(wm.box_v2.ious).numpy()
    several = 0
    for i in range(23):
        cam = data["cams"][i].numpy()
        want = ref_best_ious(cam, gts(data, i), [loc_threshold], multi_contour=loc_multi_contour)[0]
        assert loc_iou[i] == pytest.approx(want, abs=1e-12), i
        assert np.allclose(v2[i], ref_best_ious(cam, gts(data, i), wm.thresholds, multi_contour=True), atol=1e-12)
        several += ref_num_contours(cam, loc_threshold) >= 2
    assert several >= 3  # the OpenCV fallback for several contours is exercised
    if max_box_acc:
        v1 = torch.cat(wm.box_v1.ious).numpy()
        for i in range(23):
            want = ref_best_ious(data["cams"][i].numpy(), gts(data, i), wm.thresholds, multi_contour=False)
            assert np.allclose(v1[i], want, atol=1e-12), i


def test_iou_exactly_half_counts_as_correct():
    cams = torch.zeros(1, 12, 12)
    cams[0, 0:10, 0:9] = 1.0  # box (0, 0, 9, 10) -> 10 x 11 inclusive
    boxes = torch.tensor([[[0.0, 0.0, 4.0, 10.0]]])  # inclusive 5 x 11: IoU 55 / 110 = 0.5
    m = BoxAccuracy(cam_thresholds=[0.5], iou_thresholds=(50, 51))
    m.update(cams, boxes, torch.tensor([1]), torch.tensor([0]))
    out = m.compute()
    assert out["MaxBoxAccV2/IoU50"].item() == 100.0 and out["MaxBoxAccV2/IoU51"].item() == 0.0


def test_wsol_metrics_keys_curves_and_missing_inputs():
    data = make_dataset(n=6, seed=3)
    wm = WSOLMetrics(cam_thresholds=0.05, masks=True)
    wm.update(**data)
    out = wm.compute()
    for key in ["MaxBoxAccV2", "MaxBoxAccV2/IoU30", "MaxBoxAccV2/IoU50", "MaxBoxAccV2/IoU70",
                "best_threshold/IoU50", "MaxBoxAcc", "MaxBoxAcc/IoU50", "PxAP", "PIoU", "gt_known_loc",
                "top1_loc", "top5_loc", "top1_cls", "top5_cls"]:
        assert key in out and out[key].ndim == 0, key
    assert out["MaxBoxAcc"] == out["MaxBoxAcc/IoU50"]
    table = wm.curves()
    assert len(table["threshold"]) == 20
    assert all(len(v) == 20 for v in table.values())
    assert {"MaxBoxAccV2/IoU50", "MaxBoxAcc/IoU50", "PxAP/precision", "PxAP/recall", "PIoU"} <= table.keys()

    masks_only = WSOLMetrics(cam_thresholds=0.05, masks=True)
    masks_only.update(data["cams"], masks=data["masks"], index=data["index"])
    assert set(masks_only.compute()) == {"PxAP", "PIoU", "PIoU/best_threshold"}
    boxes_only = WSOLMetrics(cam_thresholds=0.05, masks=True, topk=())
    boxes_only.update(data["cams"], boxes=data["boxes"], num_boxes=data["num_boxes"], index=data["index"])
    r = boxes_only.compute()
    assert "PxAP" not in r and "MaxBoxAccV2" in r and "top1_loc" not in r
    boxes_only.reset()
    assert boxes_only.compute() == {}


def test_state_is_per_sample_rows():
    data = make_dataset(n=5)
    m = BoxAccuracy()
    m.update(data["cams"], data["boxes"], data["num_boxes"], data["index"])
    assert torch.cat(m.ious).shape == (5, 100) and torch.cat(m.ious).dtype == torch.float64


@pytest.mark.parametrize("kwargs", [dict(cam_thresholds=1.5), dict(cam_thresholds=[0.5, 0.2]),
                                    dict(cam_thresholds=[]), dict(iou_thresholds=()),
                                    dict(iou_thresholds=(0,)), dict(iou_thresholds=(150,))])
def test_box_accuracy_validates_arguments(kwargs):
    with pytest.raises(ValueError):
        BoxAccuracy(**kwargs)


@pytest.mark.parametrize("kwargs", [dict(cam_threshold=1.0), dict(iou_threshold=50), dict(topk=(0,)),
                                    dict(topk=())])
def test_topk_validates_arguments(kwargs):
    with pytest.raises(ValueError):
        TopKLocalization(**kwargs)


def test_update_rejects_bad_inputs():
    data = make_dataset(n=2)
    m = BoxAccuracy()
    with pytest.raises(ValueError, match="index"):
        m.update(data["cams"], data["boxes"], data["num_boxes"], None)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        m.update(data["cams"] * 2, data["boxes"], data["num_boxes"], data["index"])
    with pytest.raises(ValueError, match="num_boxes"):
        m.update(data["cams"], data["boxes"], torch.tensor([0, 1]), data["index"])
    with pytest.raises(ValueError, match="masks"):
        PxAP().update(data["cams"], data["masks"][:, :-1], data["index"])


def test_empty_batches_and_undefined_pxap():
    wm = WSOLMetrics(masks=True)
    z = torch.zeros(0, dtype=torch.long)
    wm.update(torch.zeros(0, 5, 5), boxes=torch.zeros(0, 1, 4), num_boxes=z, masks=torch.zeros(0, 5, 5, dtype=torch.uint8),
              logits=torch.zeros(0, 3), labels=z, index=z)
    assert wm.compute() == {}
    p = PxAP()
    p.update(torch.rand(2, 4, 4), torch.zeros(2, 4, 4, dtype=torch.uint8), torch.arange(2))  # no positive pixel
    with pytest.warns(RuntimeWarning, match="PxAP is undefined"):
        out = p.compute()
    assert torch.isnan(out["PxAP"]) and torch.isnan(out["PIoU"])


def test_scoremaps_normalize_is_bit_identical_to_minmax_normalize():
    from camlab.metrics import ScoreMaps

    g = torch.Generator().manual_seed(3)
    raw = torch.randn(9, 13, 17, generator=g) * torch.logspace(-4, 4, 9)[:, None, None] - 3.0
    raw[1] = 2.5  # constant map
    raw[2, 4, 4] = float("nan")  # NaN map
    raw[3] = -raw[3].abs()
    sm = ScoreMaps.normalize(raw)
    ref = normalize_cams(raw).numpy()
    assert np.array_equal(sm.maps.view(np.uint32), ref.view(np.uint32))  # bit for bit, zeros included
    assert np.array_equal(sm.u8, (ref * 255).astype(np.uint8))
    assert sm.vmax.tolist() == [int(m.max()) for m in sm.u8]
    with pytest.raises(ValueError, match="normalized"):
        ScoreMaps.normalize(torch.tensor([[[0.0, float("inf")]]]))  # (inf - 0) / inf is NaN
    # every metric takes the converted maps in place of the tensor, with the same results
    data = make_dataset(n=6, H=20, W=24)
    data["cams"] = raw[:6, :, :].repeat(1, 2, 2)[:, :20, :24]
    a, b = WSOLMetrics(0.05, masks=True, topk=(1,)), WSOLMetrics(0.05, masks=True, topk=(1,))
    a.update(**{**data, "cams": normalize_cams(data["cams"])})
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
        m = BoxAccuracy(cam_thresholds=[0.0], iou_thresholds=(50,))
        m.update(cams.to(dtype), boxes, torch.tensor([1]), torch.tensor([0]))
        assert m.compute()["MaxBoxAccV2/IoU50"].item() == want, dtype
    # PxAP: a foreground pixel one float64 step below the edge 0.5 is below the threshold 0.5 (float32 rounds it up
    # to 0.5); a background pixel at 0.75. Thresholds [0, 0.5]: recall at 0.5 is 0 / 1, precision there 0 / 1.
    below = float(np.nextafter(0.5, 0.0))
    assert float(np.float32(below)) == 0.5
    maps = torch.tensor([[[below, 0.75]]], dtype=torch.float64)
    masks = torch.tensor([[[1, 0]]], dtype=torch.uint8)
    for dtype, recall_at_half in ((torch.float64, 0.0), (torch.float32, 1.0)):
        p = PxAP(cam_thresholds=[0.0, 0.5])
        p.update(maps.to(dtype), masks, torch.tensor([0]))
        r = p.compute()
        assert r["PxAP/recall"].tolist()[1] == recall_at_half, dtype
    # ScoreMaps.normalize keeps float64 raw maps in float64: bit-identical to minmax_normalize in float64
    from camlab.metrics import ScoreMaps

    raw = torch.randn(3, 5, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    raw[1] = 4.0
    sm = ScoreMaps.normalize(raw)
    ref = normalize_cams(raw).numpy()
    assert sm.maps.dtype == np.float64 and np.array_equal(sm.maps.view(np.uint64), ref.view(np.uint64))
    assert np.array_equal(sm.u8, (ref * 255).astype(np.uint8)) and sm.vmax.tolist() == [255, 0, 255]


# --- background updates -------------------------------------------------------------------------------
def test_update_worker_keeps_order_and_reraises_the_first_error():
    out = []
    w = UpdateWorker(max_pending=1)
    for i in range(50):
        w.submit(out.append, i)
    w.join()
    assert out == list(range(50))

    def fail(msg):
        raise KeyError(msg)

    w = UpdateWorker(max_pending=4)
    gate = threading.Event()
    w.submit(gate.wait)  # holds the worker until all three calls below are queued
    w.submit(fail, "first")
    w.submit(fail, "second")  # skipped: the worker stops running calls after a failure
    w.submit(out.append, -1)
    gate.set()
    with pytest.raises(KeyError, match="first"):
        w.join()
    assert out[-1] == 49
    w.join()  # raised once
    w.submit(fail, "at submit")
    w._queue.join()  # the failing call has run: the next submit re-raises instead of queueing
    with pytest.raises(KeyError, match="at submit"):
        w.submit(out.append, -2)
    w.submit(out.append, 50)
    w.close()
    assert out[-1] == 50 and -1 not in out and -2 not in out
    assert w._thread is None
    w.submit(fail, "dropped")
    w.close(raise_errors=False)  # cleanup path: no exception
    import pickle

    pickle.loads(pickle.dumps(w))  # a callback holding a worker stays picklable
    with pytest.raises(ValueError):
        UpdateWorker(max_pending=0)


def test_metric_updates_on_the_worker_are_bit_identical():
    data = make_dataset(n=23, H=24, W=30)
    direct, threaded = (WSOLMetrics(masks=True, topk=(1, 2)) for _ in range(2))
    worker = UpdateWorker()
    for b in batches(data, 4):
        direct.update(**b)
        worker.submit(threaded.update, **b)
    worker.join()
    ra, rb = direct.compute(), threaded.compute()
    assert ra.keys() == rb.keys() and all(torch.equal(ra[k], rb[k]) for k in ra)
    assert direct.curves() == threaded.curves()
    maps = data["cams"].numpy()
    best, _ = ref_max_box_acc(maps, [gts(data, i) for i in range(len(maps))], GRID, (30, 50, 70), True)
    assert rb["MaxBoxAccV2"].item() == pytest.approx(np.mean([best[k] for k in (30, 50, 70)]), abs=1e-12)
    bad = next(batches(data, 4))
    worker.submit(threaded.update, **{**bad, "num_boxes": torch.zeros(4, dtype=torch.long)})
    with pytest.raises(ValueError, match="num_boxes"):
        worker.join()
    worker.close()


def _tiny_validation_setup(num_val=40, overrides=("data.image_size=32", "data.num_train=8", "data.num_test=8",
                                                   "data.batch_size=8")):
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    GlobalHydra.instance().clear()
    with initialize_config_module("camlab.conf", version_base="1.3"):
        cfg = compose("train", overrides=["backbone.width=4", f"data.num_val={num_val}", *overrides])
    GlobalHydra.instance().clear()
    torch.manual_seed(0)
    return instantiate(cfg.data, _convert_="partial"), instantiate(cfg.model, _convert_="partial")


def _validate(model, dm, cb):
    import lightning.pytorch as L

    trainer = L.Trainer(accelerator="cpu", logger=False, callbacks=[cb], enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False)
    trainer.validate(model, datamodule=dm, verbose=False)


def test_callback_background_worker_equals_main_thread(tmp_path):
    from PIL import Image

    from camlab.callbacks import CAMLocalization

    dm, model = _tiny_validation_setup()
    out = {}
    # 50 > 40 images: the grid is drawn at the epoch end
    runs = ((True, 3, "png", "auto"), (False, 3, "png", False), (True, 50, "jpg", "auto"), (False, 50, "png", "auto"),
            (True, 4, "png", True))
    for bg, n_overlays, fmt, par in runs:
        d = tmp_path / f"{bg}_{n_overlays}"
        cb = CAMLocalization(num_overlays=n_overlays, output_dir=str(d), background=bg, topk=(1,), overlay_format=fmt,
                             parallel=par)
        _validate(model, dm, cb)
        assert cb._parallel is (par is True)  # "auto" stays serial when the model runs on the CPU
        assert cb._metrics["val"].box_v2.parallel is cb._metrics["val"].pxap.parallel is cb._parallel
        assert cb._worker._thread is None  # stopped at teardown
        assert sorted(p.name for p in d.glob("overlay_*")) == [f"overlay_epoch000.{fmt}", f"overlay_latest.{fmt}"]
        grid = np.asarray(Image.open(d / f"overlay_epoch000.{fmt}"))
        assert (d / f"overlay_epoch000.{fmt}").read_bytes() == (d / f"overlay_latest.{fmt}").read_bytes()
        assert (d / "curves_val_epoch000.csv").is_file() and Image.open(d / "curves_val.png").size == (720, 280)
        out[bg, n_overlays] = cb.last_results["val"], grid
    assert {"MaxBoxAccV2", "PxAP", "top1_loc"} <= set(out[True, 3][0])
    assert out[True, 3][0] == out[False, 3][0] == out[True, 50][0] == out[True, 4][0]  # exactly equal floats
    # the same numbers straight from the model: CAM of the GT class, upsampled, min-max normalized
    plain = WSOLMetrics(0.01, masks=True, topk=(1,), max_box_acc=False)
    model.eval()
    with torch.no_grad():
        for b in dm.val_dataloader():
            o = model(b["image"])
            cams = normalize_cams(F.interpolate(model.cam(o["features"], b["label"])[:, None], b["image"].shape[-2:],
                                                mode="bilinear", align_corners=False)[:, 0])
            plain.update(cams, boxes=b["boxes"], num_boxes=b["num_boxes"], masks=b["mask"], logits=o["logits"],
                         labels=b["label"], index=b["index"])
    assert {k: float(v) for k, v in plain.compute().items()} == out[True, 3][0]
    assert np.array_equal(out[True, 3][1], out[False, 3][1])  # the same overlay grid, pixel for pixel
    assert out[True, 50][1].shape[0] > out[True, 3][1].shape[0]  # 40 tiles, not 3
    jpg, png = out[True, 50][1].astype(int), out[False, 50][1].astype(int)  # JPEG: lossy, close to the PNG
    assert jpg.shape == png.shape and np.abs(jpg - png).mean() < 3


def test_callback_worker_error_fails_the_validation(tmp_path):
    from camlab.callbacks import CAMLocalization

    dm, model = _tiny_validation_setup(num_val=24)
    cb = CAMLocalization(num_overlays=0, output_dir=str(tmp_path), background=True)
    calls = []

    class Failing:
        def update(self, **kwargs):
            calls.append(kwargs["index"][0].item())
            if len(calls) == 2:
                raise RuntimeError("update failed on the worker")

    cb._stage_metrics = lambda stage, device: Failing()
    with pytest.raises(RuntimeError, match="update failed on the worker"):
        _validate(model, dm, cb)
    assert calls == [0, 8]  # the third batch is not updated after the failure
    assert cb._worker._thread is None



def test_callback_parallel_auto_follows_the_accelerator_and_cpus(monkeypatch):
    from types import SimpleNamespace

    import numba

    from camlab.callbacks import CAMLocalization

    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    gpu, cpu = SimpleNamespace(device=torch.device("cuda", 0)), SimpleNamespace(device=torch.device("cpu"))
    one, four = SimpleNamespace(num_devices=1), SimpleNamespace(num_devices=4)
    auto = CAMLocalization()
    assert auto._resolve_parallel(one, gpu) == (True, 16)  # GPU forward: 16 idle cores
    assert auto._resolve_parallel(four, gpu) == (True, 4)  # 4 processes on the node share them
    assert auto._resolve_parallel(one, cpu) == (False, 16)  # the CPU forward needs the cores
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert auto._resolve_parallel(one, gpu) == (False, 3)  # too few granted CPUs
    assert CAMLocalization(parallel=True)._resolve_parallel(one, cpu) == (True, 3)
    with pytest.raises(ValueError, match="parallel must be true, false or 'auto'"):
        CAMLocalization(parallel="yes")


@pytest.mark.skipif(not os.path.isdir("/proc/self/task") or torch.get_num_threads() < 2,
                    reason="counts the process's OS threads (Linux) with an OpenMP team of 2+")
def test_callback_worker_thread_starts_no_openmp_team():
    """The worker gets numpy/numba/OpenCV work only: a torch op large enough for OpenMP there (the CAM einsum and
    upsampling used to run there) gave the process a second OpenMP team, libgomp then throttled its spin-waiting,
    and the default run's training epochs ran ~18 % slower (benchmarks/bench_run.py)."""
    import lightning.pytorch as L

    from camlab.callbacks import CAMLocalization

    # 16 x 64 x 64 maps: above torch's grain size for a parallel region
    dm, model = _tiny_validation_setup(32, ("data.num_train=16", "data.num_test=16", "data.batch_size=16"))

    def threads():
        return set(os.listdir("/proc/self/task"))  # thread ids: a thread of an earlier test ending does not count

    class Count(L.Callback):
        def on_validation_epoch_end(self, trainer, pl_module):
            self.during = threads()  # after CAMLocalization joined its worker, before teardown closes it

    def validate(callbacks):
        L.Trainer(accelerator="cpu", logger=False, callbacks=callbacks, enable_progress_bar=False,
                  enable_model_summary=False, enable_checkpointing=False).validate(model, datamodule=dm, verbose=False)

    validate([])  # the main thread's OpenMP team exists from here on
    before, count = threads(), Count()
    validate([CAMLocalization(num_overlays=4, output_dir=None, background=True, topk=(1,)), count])
    assert len(count.during - before) == 1  # the worker thread, and no team of its own
