"""The WSOL protocol of Choe et al. (CVPR 2020): the full-supervision budget (``data.val_per_class``), CAM
thresholds chosen on val and applied to test (``test/loc/*@val``, stored in checkpoints), and the center baseline
(``camlab-eval baseline=center``). Each number is checked against a hand-worked example or a plain loop."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

import _dataset_fixtures as fx
from _tiny_checkpoint import DATA, composed
from _wsol_reference import ref_best_ious, ref_max_box_acc
from camlab.data import SyntheticShapes, WSOLDataModule
from camlab.errors import ConfigError
from camlab.eval import evaluate
from camlab.runtime.app import describe_error
from camlab.wsol import WSOLMetrics, threshold_grid
from camlab.wsol.baseline import center_gaussian
from camlab.wsol.functional import box_accuracy_at, piou_at

EVAL = [*DATA, "callbacks=[cam_localization]", "callbacks.cam_localization.num_overlays=2",
        "callbacks.cam_localization.faithfulness.stages=[]"]  # the model-based faithfulness passes are not tested here


# ---- the full-supervision budget ---------------------------------------------------------------------------------
def val_labels(dm) -> list[int]:
    ds = dm.dataset("val")
    return [int(ds[i]["label"]) for i in range(len(ds))]


def test_val_per_class_keeps_n_per_class_seeded_and_nested():
    def dm(n, seed=0):
        return WSOLDataModule(val_dataset=lambda: SyntheticShapes(split="val", length=40, num_classes=4, image_size=32),
                              val_per_class=n, seed=seed)

    picked = {n: dm(n).dataset("val").indices for n in (2, 5)}
    assert Counter(val_labels(dm(5))) == {0: 5, 1: 5, 2: 5, 3: 5}
    assert picked[2] == dm(2).dataset("val").indices  # the same draw every time (every DDP rank builds it alike)
    assert set(picked[2]) < set(picked[5]) and picked[5] == sorted(picked[5])
    assert dm(5, seed=1).dataset("val").indices != picked[5]
    assert len(dm(0).dataset("val")) == 40  # 0: the whole split
    full = SyntheticShapes(split="val", length=40, num_classes=4, image_size=32)
    sub = dm(5).dataset("val")
    j = sub.indices[3]
    assert sub[3]["index"] == j and torch.equal(sub[3]["image"], full[j]["image"])  # the dataset index is kept
    with pytest.raises(ConfigError, match="val_per_class must be an int >= 0"):
        dm(-1)


def test_val_per_class_on_disk_reads_the_records_and_names_a_short_class(tmp_path):
    specs = [fx.Spec(f"v{i}", (30, 24), label, [(4, 4, 20, 18)], "val")
             for i, label in enumerate([0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2])]
    specs += [fx.Spec("t0", (30, 24), 0, [(4, 4, 20, 18)], "train"), fx.Spec("s0", (30, 24), 1, [(2, 2, 9, 9)], "test")]
    data, meta = fx.make_wsoleval(tmp_path, "CUB", specs)
    base = ["data=wsoleval_cub", f"data.root={data}", f"data.metadata_root={meta}", "data.num_classes=3",
            "data.image_size=32", "data.num_workers=0", "seed=3"]
    from hydra.utils import instantiate

    def val(n):
        return instantiate(composed("train", [*base, f"data.val_per_class={n}"], tmp_path).data).dataset("val")

    ds = val(3)
    labels = [ds.dataset.records[i].label for i in ds.indices]
    assert Counter(labels) == {0: 3, 1: 3, 2: 3} and ds.indices == val(3).indices
    cfg = composed("train", [*base, "data.val_per_class=4"], tmp_path)
    with pytest.raises(ConfigError) as err:
        instantiate(cfg.data).dataset("val")
    line = describe_error(err.value, cfg)
    assert "val_per_class=4 but class 1 (1) has only 3 val images" in line and "data.val_per_class" in line


def test_val_per_class_on_native_cub_and_its_held_out_val(tmp_path):
    """The native CUB layout: val = the test split (records), or data.val_from=train (a held-out Subset of train)."""
    from hydra.utils import instantiate

    specs = [fx.Spec(f"t{i}", (30, 24), label, [(4, 4, 20, 18)], "test") for i, label in enumerate([0, 0, 0, 1, 1, 2, 2, 2])]
    specs += [fx.Spec(f"r{i}", (30, 24), i % 3, [(2, 2, 9, 9)], "train") for i in range(30)]
    root = fx.make_cub(tmp_path / "CUB", segmentations=False, specs=specs)
    base = ["data=cub", f"data.root={root}", "data.num_classes=3", "data.image_size=32", "data.resize_size=32",
            "data.num_workers=0"]

    def labels(extra):
        ds = instantiate(composed("train", [*base, *extra], tmp_path).data).dataset("val")
        return [int(ds[i]["label"]) for i in range(len(ds))], ds.indices

    got, picked = labels(["data.val_per_class=2"])
    assert Counter(got) == {0: 2, 1: 2, 2: 2} and picked == labels(["data.val_per_class=2"])[1]
    held, _ = labels(["data.val_from=train", "data.val_fraction=0.5", "data.val_per_class=3"])
    assert Counter(held) == {0: 3, 1: 3, 2: 3}
    with pytest.raises(ConfigError, match="class 1 .* has only 2 val images"):
        labels(["data.val_per_class=3"])


# ---- thresholds chosen on val, applied to test --------------------------------------------------------------------
def nested_map(size: int = 32) -> np.ndarray:
    """1.0 on a small square, 0.5 on a large one around it, 0 elsewhere."""
    m = np.zeros((size, size), np.float32)
    m[2:30, 2:30] = 0.5
    m[12:18, 12:18] = 1.0
    return m


BIG, SMALL = [2.0, 2.0, 29.0, 29.0], [12.0, 12.0, 17.0, 17.0]  # inclusive pixel bounds of the two squares


def scored(gts: list, labels_right: list[bool]) -> WSOLMetrics:
    n = len(gts)
    m = WSOLMetrics(cam_thresholds=0.25, masks=True, topk=(1,))
    maps = torch.from_numpy(np.stack([nested_map()] * n))
    boxes = torch.tensor([[g] for g in gts])
    masks = torch.zeros(n, 32, 32, dtype=torch.uint8)
    for i, g in enumerate(gts):
        x0, y0, x1, y1 = (int(v) for v in g)
        masks[i, y0:y1 + 1, x0:x1 + 1] = 1
    logits = torch.tensor([[1.0, 0.0] if right else [0.0, 1.0] for right in labels_right])
    m.update(maps, boxes=boxes, num_boxes=torch.ones(n, dtype=torch.long), masks=masks, logits=logits,
             labels=torch.zeros(n, dtype=torch.long), index=torch.arange(n))
    return m


def test_val_chosen_thresholds_on_a_hand_worked_example():
    """Grid 0, .25, .5, .75: u8 0.5 -> 127, so thresholds 0 and .25 box the large square, .5 and .75 the small one.
    Val: 3 images of the large object, 1 of the small -> every IoU picks threshold 0 (3 of 4 right). Test: 1 large,
    3 small -> the oracle takes .5 (75 %), the val-chosen threshold 0 gives 25 %."""
    val = scored([BIG, BIG, BIG, SMALL], [True] * 4).report()
    chosen = val.chosen_thresholds()
    assert {k: chosen[k] for k in ("IoU30", "IoU50", "IoU70", "loc")} == {"IoU30": 0.0, "IoU50": 0.0, "IoU70": 0.0,
                                                                           "loc": 0.0}
    test = scored([BIG, SMALL, SMALL, SMALL], [True, True, False, True]).report()
    assert test.scalars["MaxBoxAccV2"] == 75.0 and test.scalars["MaxBoxAccV2/best_threshold/IoU50"] == 0.5
    at = test.at_thresholds(chosen)
    assert at["MaxBoxAccV2@val"] == 25.0 and at["MaxBoxAccV2@val/IoU70"] == 25.0
    assert at["gt_known_loc@val"] == 25.0 and at["top1_loc@val"] == 25.0  # image 0: large, right class
    # pixel IoU, by hand: {score >= t} is everything at t = 0, the large square (28 x 28) at .25, the small (6 x 6)
    # at .5. Val masks: 3 large + 1 small; t = .25 gives (3 * 784 + 36) / (4 * 784) = 0.7615 (t = 0: 0.7615 * 784 /
    # 1024; t = .5: (3 * 36 + 36) / (3 * 784 + 36) = 0.0601), so val picks .25; on test (1 large, 3 small):
    # (784 + 3 * 36) / (4 * 784) = 28.44 %
    assert chosen["PIoU"] == 0.25
    assert at["PIoU@val"] == pytest.approx(100 * (784 + 3 * 36) / (4 * 784))
    assert at["PIoU@val"] == pytest.approx(piou_at(test.rows["hist"], test.thresholds, 0.25))


def test_at_thresholds_need_the_grid_they_were_chosen_on():
    ious = np.array([[0.9, 0.2], [0.1, 0.6]])
    assert box_accuracy_at(ious, [0.0, 0.5], {50: 0.5}, (50,))["MaxBoxAccV2@val"] == 50.0
    with pytest.raises(ValueError, match="not on this grid"):
        box_accuracy_at(ious, [0.0, 0.5], {50: 0.3}, (50,))
    from camlab.callbacks import CAMLocalization

    with pytest.raises(ConfigError, match="grid_interval=0.01"):
        CAMLocalization(grid_interval=0.01).load_val_thresholds({"IoU50": 0.125})


def curve_at(run: Path, stage: str, column: str, threshold: float) -> float:
    (file,) = sorted((run / "cams").glob(f"curves_{stage}_epoch*.csv"))[-1:]
    rows = list(csv.DictReader(file.open()))
    (row,) = [r for r in rows if float(r["threshold"]) == pytest.approx(threshold, abs=1e-9)]
    return float(row[column])


def test_checkpoint_stores_the_val_thresholds_and_eval_applies_them_to_test(trained, tmp_path):
    stored = torch.load(trained["ckpt"], weights_only=False)["callbacks"]["CAMLocalization"]
    val = trained["val"]  # what training logged for that validation epoch
    for k in (30, 50, 70):
        assert stored["val_thresholds"][f"IoU{k}"] == pytest.approx(val[f"val/loc/MaxBoxAccV2/best_threshold/IoU{k}"])
    assert stored["val_thresholds"]["PIoU"] == pytest.approx(val["val/loc/PIoU/best_threshold"])
    out = tmp_path / "auto"
    summary = evaluate(composed("eval", [*EVAL, f"ckpt_path={trained['ckpt']}"], out))
    assert summary["val_thresholds"]["source"] == "the checkpoint (its validation epoch 0)"
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    for k in (30, 50, 70):  # the test split's accuracy curve read at the val-chosen threshold
        t = stored["val_thresholds"][f"IoU{k}"]
        assert metrics[f"test/loc/MaxBoxAccV2@val/IoU{k}"] == pytest.approx(
            curve_at(out, "test", f"MaxBoxAccV2/IoU{k}", t), abs=1e-4)
        assert metrics[f"test/loc/MaxBoxAccV2@val/IoU{k}"] <= metrics[f"test/loc/MaxBoxAccV2/IoU{k}"] + 1e-4
    assert "test/loc/top1_loc@val" in metrics and "test/loc/PIoU@val" in metrics
    # eval.val_thresholds=val scores the same val split first: the same thresholds, the same @val numbers
    again = evaluate(composed("eval", [*EVAL, f"ckpt_path={trained['ckpt']}", "eval.val_thresholds=val",
                                       "callbacks.cam_localization.write_curves=false"], tmp_path / "val"))
    assert again["val_thresholds"]["source"] == "the val split of this evaluation"
    assert again["val_thresholds"]["thresholds"] == pytest.approx(stored["val_thresholds"])
    assert again["metrics"]["test/loc/MaxBoxAccV2@val"] == metrics["test/loc/MaxBoxAccV2@val"]
    assert not any(k.startswith("val/") for k in again["metrics"])
    with pytest.raises(ConfigError, match="eval.val_thresholds must be one of auto, val"):
        evaluate(composed("eval", [*EVAL, f"ckpt_path={trained['ckpt']}", "eval.val_thresholds=test"], tmp_path))


# ---- the center baseline ------------------------------------------------------------------------------------------
def test_center_gaussian_is_the_stated_formula():
    H, W = 6, 10
    m = center_gaussian(H, W, sigma=0.7)
    for y in range(H):
        for x in range(W):
            u, v = (2 * x + 1) / W - 1, (2 * y + 1) / H - 1
            assert m[y, x] == pytest.approx(np.exp(-(u * u + v * v) / (2 * 0.49)), rel=1e-6)


def test_center_baseline_scores_every_map_only_metric_and_its_val_thresholds(tmp_path):
    summary = evaluate(composed("eval", [*DATA, "baseline=center"], tmp_path))
    metrics = summary["metrics"]
    assert summary["source"].startswith("center baseline") and "classification" in summary["not_measured"]
    assert not any(k.endswith(("/acc", "top1_loc", "top1_loc@val")) for k in metrics)
    for key in ("MaxBoxAccV2", "MaxBoxAcc", "PxAP", "PIoU", "gt_known_loc", "MaxBoxAccV2@val", "PIoU@val"):
        assert f"test/loc/{key}" in metrics, key
    assert {"test/faith/pointing_game", "test/faith/energy_pointing_game", "test/faith/relevance_mass"} <= set(metrics)
    # a plain loop over the same images: the centred map of every image against its boxes
    grid = threshold_grid(0.01)
    centre = center_gaussian(32, 32)
    centre = (centre - centre.min()) / (centre.max() - centre.min())
    ious = {}
    for split, n in (("val", 25), ("test", 20)):
        ds = SyntheticShapes(split=split, length=n, num_classes=5, image_size=32)
        gts = [ds[i]["boxes"].numpy() for i in range(n)]
        ious[split] = np.stack([ref_best_ious(centre, g, grid, True) for g in gts])
        if split == "test":
            best, _ = ref_max_box_acc([centre] * n, gts, grid)
            assert metrics["test/loc/MaxBoxAccV2"] == pytest.approx(np.mean(list(best.values())))
    for k in (30, 50, 70):  # val's first best threshold, then test's accuracy there
        j = int(np.argmax((ious["val"] >= k / 100).sum(axis=0)))
        assert summary["val_thresholds"]["thresholds"][f"IoU{k}"] == pytest.approx(grid[j])
        assert metrics[f"test/loc/MaxBoxAccV2@val/IoU{k}"] == pytest.approx((ious["test"][:, j] >= k / 100).mean() * 100)
    with pytest.raises(ConfigError, match="baseline must be one of center"):
        evaluate(composed("eval", [*DATA, "baseline=corner"], tmp_path))
