"""camlab-eval: a checkpoint + a data config -> metrics.json, per_image.csv (and CAMs), exact under DDP."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _tiny_checkpoint import DATA, composed
from camlab.eval import evaluate
from camlab.errors import ConfigError

EVAL = [*DATA, "callbacks=[cam_localization]", "callbacks.cam_localization.num_overlays=2",
        "callbacks.cam_localization.write_curves=false"]


@pytest.fixture(scope="module")
def evaluated(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    cfg = composed("eval", [*EVAL, f"ckpt_path={trained['ckpt']}", "split=val", "eval.save_cams=true"], out)
    summary = evaluate(cfg)
    return out, summary


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_eval_reproduces_the_validation_metrics_of_the_same_weights(trained, evaluated):
    out, summary = evaluated
    written = json.loads((out / "metrics.json").read_text())
    assert written == json.loads(json.dumps(summary))
    assert written["split"] == "val" and written["num_images"] == 25
    metrics, val = written["metrics"], trained["val"]
    common = [k for k in val if k.startswith("val/loc/") or k in ("val/acc", "val/loss")]
    assert {"val/acc", "val/loc/MaxBoxAccV2", "val/loc/PxAP", "val/loc/gt_known_loc", "val/loc/top1_loc"} <= set(common)
    for key in common:
        assert metrics[key] == pytest.approx(val[key], rel=1e-6, abs=1e-9), key
    # evaluation also computes the slow largest-contour MaxBoxAcc, which training skips on val
    assert "val/loc/MaxBoxAcc" in metrics and "val/loc/MaxBoxAcc" not in val


def test_per_image_csv_agrees_with_the_json_aggregate(evaluated):
    out, _ = evaluated
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    rows = read_rows(out / "per_image.csv")
    assert [int(r["index"]) for r in rows] == list(range(25))
    n = len(rows)
    for k in (30, 50, 70):
        hits = sum(int(r[f"hit{k}"]) for r in rows)
        assert hits * 100.0 / n == pytest.approx(metrics[f"val/loc/MaxBoxAccV2/IoU{k}"], abs=1e-4), k
        best = metrics[f"val/loc/MaxBoxAccV2/best_threshold/IoU{k}"]
        assert all(float(r[f"threshold{k}"]) == pytest.approx(best, abs=1e-6) for r in rows), k
        for r in rows:  # the hit is the row's own IoU against k, and the box is inside the 32 px input
            assert int(r[f"hit{k}"]) == (float(r[f"iou{k}"]) >= k / 100 - 1e-9)
            x0, y0, x1, y1 = (int(r[f"box{k}_{c}"]) for c in ("x0", "y0", "x1", "y1"))
            assert 0 <= x0 <= x1 <= 31 and 0 <= y0 <= y1 <= 31
    correct = [int(r["pred"]) == int(r["label"]) for r in rows]
    loc = [int(r["gt_known_hit"]) for r in rows]
    assert [int(r["correct"]) for r in rows] == [int(c) for c in correct]
    assert sum(loc) * 100.0 / n == pytest.approx(metrics["val/loc/gt_known_loc"], abs=1e-4)
    assert sum(c and h for c, h in zip(correct, loc)) * 100.0 / n == pytest.approx(metrics["val/loc/top1_loc"],
                                                                                   abs=1e-4)
    assert sum(correct) / n == pytest.approx(metrics["val/acc"], abs=1e-6)
    assert all(int(r["gt_known_hit"]) == (float(r["gt_known_iou"]) >= 0.5) for r in rows)
    # the map-only metrics: logged as val/faith/<name>, one column each (the synthetic data has masks)
    for name in ("pointing_game", "energy_pointing_game", "relevance_mass", "relevance_rank", "topk_intersection"):
        mean = sum(float(r[name]) for r in rows) * 100.0 / n
        assert mean == pytest.approx(metrics[f"val/faith/{name}"], abs=1e-4), name


def test_per_image_iou_is_the_inclusive_box_iou_with_the_ground_truth(evaluated):
    """Independent check of one column: recompute IoU from the CSV box and the dataset's GT box by hand."""
    from camlab.data import SyntheticShapes

    out, _ = evaluated
    ds = SyntheticShapes("val", length=25, num_classes=5, image_size=32, seed=0, hflip=False)
    for r in read_rows(out / "per_image.csv"):
        gt = [int(v) for v in ds[int(r["index"])]["boxes"][0].tolist()]  # int() truncation, inclusive bounds
        box = [int(r[f"box50_{c}"]) for c in ("x0", "y0", "x1", "y1")]
        iw = max(0, min(box[2], gt[2]) - max(box[0], gt[0]) + 1)
        ih = max(0, min(box[3], gt[3]) - max(box[1], gt[1]) + 1)
        union = (box[2] - box[0] + 1) * (box[3] - box[1] + 1) + (gt[2] - gt[0] + 1) * (gt[3] - gt[1] + 1) - iw * ih
        assert float(r["iou50"]) == pytest.approx(iw * ih / union, abs=1e-6)
        assert int(r["label"]) == int(ds[int(r["index"])]["label"])


def test_faithfulness_rows_are_the_functional_metrics_of_the_saved_maps(trained, evaluated):
    """The eval's model-based faith/* columns equal camlab.faith's functions on the same model, images and maps (the
    raw maps of cams.npz upsampled as the callback does): the callback wiring, DDP dedupe and the CSV columns."""
    import torch

    from camlab.cam import upsample
    from camlab.faith import FaithfulnessMetrics, auc, average_drop_increase, insertion_deletion
    from camlab.models.pretrained import load_checkpoint

    out, _ = evaluated
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    rows = read_rows(out / "per_image.csv")
    npz = np.load(out / "cams.npz")
    cfg = composed("eval", [*EVAL, f"ckpt_path={trained['ckpt']}", "split=val"], out / "again")
    from hydra.utils import instantiate

    dm = instantiate(cfg.data, _convert_="partial")
    dm.setup("validate")
    model = load_checkpoint(trained["ckpt"]).eval()
    images, labels, index = [], [], []
    for batch in dm.val_dataloader():
        images.append(batch["image"]), labels.append(batch["label"]), index.append(batch["index"])
    images, labels, index = torch.cat(images), torch.cat(labels), torch.cat(index)
    order = np.argsort(npz["index"])
    assert npz["index"][order].tolist() == index.tolist() == list(range(25))
    maps = upsample(torch.from_numpy(npz["cam_raw"][order]).float(), tuple(images.shape[-2:]))
    opts = cfg.callbacks.cam_localization.faithfulness
    with torch.no_grad():
        drop, inc, _ = average_drop_increase(model, images, maps, labels)
        ins, dele = insertion_deletion(model, images, maps, labels, steps=opts.steps)
    col = {k: np.array([float(r[k]) for r in rows]) for k in ("average_drop", "insertion_auc", "deletion_auc",
                                                               "road_morf", "increase_in_confidence")}
    np.testing.assert_allclose(col["average_drop"], 100 * drop.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(col["increase_in_confidence"], 100 * inc.numpy())
    np.testing.assert_allclose(col["insertion_auc"], 100 * auc(ins).numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(col["deletion_auc"], 100 * auc(dele).numpy(), rtol=1e-4, atol=1e-6)
    for key in ("average_drop", "insertion_auc", "deletion_auc", "road_morf"):
        assert metrics[f"val/faith/{key}"] == pytest.approx(col[key].mean(), rel=1e-5), key
    assert FaithfulnessMetrics().groups == ("drop_increase", "insertion_deletion", "road")


def test_save_cams_writes_npz_and_one_png_per_image(evaluated):
    out, _ = evaluated
    cams = np.load(out / "cams.npz")
    assert cams["index"].tolist() == list(range(25))
    assert cams["cam"].shape == (25, 32, 32) and cams["cam"].dtype == np.uint8
    assert (cams["cam"].reshape(25, -1).max(axis=1) == 255).all()  # min-max normalized, then uint8
    assert cams["cam_raw"].shape[0] == 25 and cams["cam_raw"].ndim == 3
    assert sorted(p.name for p in (out / "cam_pngs").glob("*.png")) == [f"{i:06d}.png" for i in range(25)]


def test_model_from_the_composed_config_when_asked(trained, evaluated, tmp_path):
    """model_from_checkpoint=false: the backbone/model groups build the model, Lightning loads the weights."""
    args = [*EVAL, f"ckpt_path={trained['ckpt']}", "split=val", "model_from_checkpoint=false", "backbone.width=4"]
    summary = evaluate(composed("eval", args, tmp_path / "ok"))
    assert summary["source"].endswith("(model from the composed backbone/model config)")
    reference = json.loads((evaluated[0] / "metrics.json").read_text())["metrics"]
    assert summary["metrics"]["val/loc/MaxBoxAccV2"] == reference["val/loc/MaxBoxAccV2"]
    with pytest.raises(ConfigError, match="does not fit the model composed from backbone=tiny_cnn"):
        evaluate(composed("eval", [*args[:-1], "backbone.width=8"], tmp_path / "wrong"))


def test_eval_needs_a_checkpoint_file(tmp_path):
    with pytest.raises(ConfigError, match="ckpt_path is required"):
        evaluate(composed("eval", EVAL, tmp_path))
    with pytest.raises(ConfigError, match="ckpt_path '.*nope.ckpt' is not a file"):
        evaluate(composed("eval", [*EVAL, f"ckpt_path={tmp_path / 'nope.ckpt'}"], tmp_path))


def test_eval_rejects_data_with_another_label_set(trained, tmp_path):
    cfg = composed("eval", [*EVAL, f"ckpt_path={trained['ckpt']}", "data.num_classes=3"], tmp_path)
    with pytest.raises(ConfigError, match="data has 3 classes but the model has 5"):
        evaluate(cfg)


@pytest.mark.slow
def test_ddp_eval_equals_single_process_and_writes_each_image_once(trained, evaluated, tmp_path):
    """2 gloo processes through the app: 25 images padded to 26 by DistributedSampler; rows and metrics exact."""
    out = tmp_path / "ddp"
    args = [*EVAL, f"ckpt_path={trained['ckpt']}", "split=val", "trainer=ddp", "trainer.accelerator=cpu",
            "trainer.devices=2", f"hydra.run.dir={out}"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    res = subprocess.run([sys.executable, "-m", "camlab.eval", *args], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    single_dir, _ = evaluated
    single = json.loads((single_dir / "metrics.json").read_text())["metrics"]
    ddp = json.loads((out / "metrics.json").read_text())
    assert ddp["world_size"] == 2
    for key, value in single.items():
        if key.startswith("val/loc/"):
            assert ddp["metrics"][key] == pytest.approx(value, abs=1e-9), key
    rows, ref = read_rows(out / "per_image.csv"), read_rows(single_dir / "per_image.csv")
    assert len(rows) == 25
    assert rows == ref


@pytest.mark.slow
def test_eval_sweep_over_cam_methods_then_compare(trained, tmp_path):
    """`camlab-eval -m cam_method=cam,gradcam` on one checkpoint, then camlab-compare: both jobs finished, ranked."""
    from camlab.compare import main as compare_main

    sweep = tmp_path / "sweep"
    args = ["-m", *EVAL, f"ckpt_path={trained['ckpt']}", "split=val", "cam_method=cam,gradcam",
            f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    res = subprocess.run([sys.executable, "-m", "camlab.eval", *args], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = {job: json.loads((sweep / job / "metrics.json").read_text())["metrics"] for job in "01"}
    compare_main([str(sweep), "--sort", "val/loc/MaxBoxAccV2"])
    rows = {r["job"]: r for r in csv.DictReader((sweep / "comparison.csv").open())}
    assert {rows[j]["cam_method"] for j in "01"} == {"cam", "gradcam"}
    for job in "01":
        assert rows[job]["status"] == "finished", rows[job]
        assert float(rows[job]["val/loc/MaxBoxAccV2"]) == pytest.approx(metrics[job]["val/loc/MaxBoxAccV2"])
    ranked = [r["job"] for r in csv.DictReader((sweep / "comparison.csv").open())]
    assert ranked == sorted("01", key=lambda j: -metrics[j]["val/loc/MaxBoxAccV2"])
    # ranked by a faithfulness metric where lower is better: ascending without --ascending
    compare_main([str(sweep), "--sort", "val/faith/deletion_auc"])
    ranked = [r["job"] for r in csv.DictReader((sweep / "comparison.csv").open())]
    assert ranked == sorted("01", key=lambda j: metrics[j]["val/faith/deletion_auc"])
    assert metrics["0"]["val/faith/deletion_auc"] != metrics["1"]["val/faith/deletion_auc"]
    (sweep / "1" / "metrics.json").unlink()  # an eval job that did not finish is reported, not dropped
    compare_main([str(sweep), "--sort", "val/loc/MaxBoxAccV2", "--running-window", "0"])
    rows = {r["job"]: r for r in csv.DictReader((sweep / "comparison.csv").open())}
    assert rows["1"]["status"] == "failed" and "metrics.json" in rows["1"]["note"]
