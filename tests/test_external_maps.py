"""camlab-eval maps=...: saved maps of another tool scored like camlab's own, in every layout, with one-line errors.

One tiny wsolevaluation-format OpenImages tree (non-square images, boxes from instance masks, an ignore region,
so every metric incl. PxAP runs) and one tiny model trained on it, shared by the module.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import _dataset_fixtures as fx
from _tiny_checkpoint import composed
from _wsol_reference import ref_max_box_acc, ref_pxap
from camlab.cam import upsample
from camlab.errors import ConfigError, DataError
from camlab.eval import evaluate
from camlab.external import ExternalMaps, check_dataset, fit_map
from camlab.runtime.app import describe_error

S = 32  # network input side
LOC_ONLY = ("pred", "pred_name", "score", "correct", "top1_loc")  # the CSV columns that need a model


def make_specs() -> list[fx.Spec]:
    rng = np.random.default_rng(0)
    specs = []
    for split, n in (("train", 6), ("val", 12), ("test", 5)):
        for i in range(n):
            W, H = int(rng.integers(24, 57)), int(rng.integers(24, 57))
            patches = []
            for _ in range(1 + (i % 3 == 0)):
                x0, y0 = int(rng.integers(W // 4, W - 10)), int(rng.integers(0, H - 10))
                patches.append((x0, y0, int(rng.integers(x0 + 4, W)), int(rng.integers(y0 + 4, H))))
            specs.append(fx.Spec(f"{split[0]}{i}", (W, H), i % 3, patches, split))
    return specs


SPECS = make_specs()
VAL = [s for s in SPECS if s.split == "val"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("wsoleval")
    data, meta = fx.make_wsoleval(root, "OpenImages", SPECS)
    ids = {split: (meta / "OpenImages" / split / "image_ids.txt").read_text().split() for split in ("val", "test")}
    overrides = ["data=wsoleval_openimages", f"data.root={data}", f"data.metadata_root={meta}", "data.num_classes=3",
                 f"data.image_size={S}", "data.resize_size=40", "data.batch_size=5", "data.num_workers=0"]
    return {"root": root, "data": data, "ids": ids, "overrides": overrides}


@pytest.fixture(scope="module")
def trained(tree, tmp_path_factory):
    from camlab.train import train

    run = tmp_path_factory.mktemp("train")
    train(composed("train", [*tree["overrides"], "backbone=tiny_cnn", "backbone.width=4", "trainer.max_epochs=1",
                             "test=false", "callbacks=[model_checkpoint,cam_localization]",
                             "callbacks.cam_localization.num_overlays=2",
                             "callbacks.cam_localization.write_curves=false"], run))
    (ckpt,) = (run / "checkpoints").glob("best-*.ckpt")
    return ckpt


def eval_args(tree, *extra: str) -> list[str]:
    return [*tree["overrides"], "split=val", "callbacks=[cam_localization]", "callbacks.cam_localization.num_overlays=2",
            "callbacks.cam_localization.write_curves=false", *extra]


def run_eval(tree, out: Path, *extra: str) -> tuple[dict, list[dict]]:
    summary = evaluate(composed("eval", eval_args(tree, *extra), out))
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(summary))
    with open(out / "per_image.csv", newline="") as f:
        return summary, list(csv.DictReader(f))


@pytest.fixture(scope="module")
def model_eval(tree, trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("model_eval")
    summary, rows = run_eval(tree, out, f"ckpt_path={trained}", "eval.save_cams=true")
    return {"summary": summary, "rows": rows, "cams": dict(np.load(out / "cams.npz"))}


def soft_map(spec: fx.Spec, seed: int) -> np.ndarray:
    """A float64 map at the image's original resolution: the blurred objects plus noise (not normalized)."""
    W, H = spec.size
    m = np.zeros((H, W))
    for x0, y0, x1, y1 in spec.patches:
        m[y0:y1, x0:x1] += 1.0
    m = cv2.GaussianBlur(m, (5, 5), 1.5) + 0.2 * np.random.default_rng(seed).random((H, W))
    return 3.0 * m + 0.5


def write_folder(folder: Path, names: list[str], maps: list[np.ndarray]) -> Path:
    for name, m in zip(names, maps):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        np.save(folder / f"{name}.npy", m)
    return folder


@pytest.fixture(scope="module")
def soft(tree, tmp_path_factory):
    """The soft maps of the val images in wsolevaluation's layout (<dir>/<image_id>.npy), scored by maps=."""
    maps = [soft_map(s, i) for i, s in enumerate(VAL)]
    folder = write_folder(tmp_path_factory.mktemp("soft"), tree["ids"]["val"], maps)
    summary, rows = run_eval(tree, tmp_path_factory.mktemp("soft_eval"), f"maps={folder}")
    return {"maps": maps, "folder": folder, "summary": summary, "rows": rows}


def loc_metrics(summary: dict) -> dict:
    return {k: v for k, v in summary["metrics"].items() if k.startswith(("val/loc/", "val/faith/"))}


# ---- the model path and the maps path are one computation -------------------------------------------------------
def test_wsoleval_layout_folder_scores_exactly_like_the_model_path(tree, model_eval, tmp_path):
    """The model's own raw CAMs, saved as <dir>/<image_id>.npy and resized bilinear as camlab does: same numbers."""
    cams = model_eval["cams"]
    assert cams["index"].tolist() == list(range(len(VAL))) and cams["cam_raw"].shape[1:] != (S, S)
    folder = write_folder(tmp_path / "maps", tree["ids"]["val"], list(cams["cam_raw"]))
    summary, rows = run_eval(tree, tmp_path / "eval", f"maps={folder}", "maps_resize=bilinear")
    model = model_eval["summary"]["metrics"]
    assert summary["maps"]["key"] == "path" and summary["maps"]["num_maps"] == len(VAL)
    ours = loc_metrics(summary)
    expected = {k: v for k, v in model.items() if k in ours}
    assert {"val/loc/MaxBoxAccV2", "val/loc/MaxBoxAcc", "val/loc/PxAP", "val/loc/gt_known_loc",
            "val/faith/pointing_game"} <= set(expected)
    # exactly, up to the float32 that Lightning's self.log stores the model path's numbers in
    assert {k: np.float32(v) for k, v in ours.items()} == {k: np.float32(v) for k, v in expected.items()}
    # what needs logits is not invented: no classification, no top-k loc, empty prediction cells
    assert "val/acc" in model and "val/loc/top1_loc" in model
    assert not {"val/acc", "val/loc/top1_loc", "val/loc/top5_loc"} & set(summary["metrics"])
    assert "no logits" in summary["not_measured"]
    assert len(rows) == len(model_eval["rows"])
    for mine, theirs in zip(rows, model_eval["rows"]):
        assert set(mine) <= set(theirs)  # the model path may add model-based columns (camlab.faith)
        assert {k: v for k, v in mine.items() if k not in LOC_ONLY} == {
            k: theirs[k] for k in mine if k not in LOC_ONLY}
        assert all(mine[k] == "" for k in LOC_ONLY) and theirs["pred"] != ""


def test_checkpoint_with_maps_keeps_the_classification_and_scores_the_maps(tree, trained, model_eval, soft, tmp_path):
    summary, rows = run_eval(tree, tmp_path, f"ckpt_path={trained}", f"maps={soft['folder']}")
    model, maps_only = model_eval["summary"]["metrics"], loc_metrics(soft["summary"])
    assert summary["metrics"]["val/acc"] == model["val/acc"]
    assert {k: np.float32(v) for k, v in loc_metrics(summary).items() if k in maps_only} == {
        k: np.float32(v) for k, v in maps_only.items()}  # Lightning logs float32
    assert summary["metrics"]["val/loc/MaxBoxAccV2"] != model["val/loc/MaxBoxAccV2"]  # not the model's maps
    assert "maps" in summary and "classification of the model" in summary["source"]
    # per image: the model's prediction, the maps' boxes; top1_loc = correct and GT-known hit
    for mine, theirs, loc in zip(rows, model_eval["rows"], soft["rows"]):
        assert [mine[k] for k in ("pred", "score", "correct")] == [theirs[k] for k in ("pred", "score", "correct")]
        assert {k: mine[k] for k in loc if k not in LOC_ONLY} == {k: v for k, v in loc.items() if k not in LOC_ONLY}
        assert int(mine["top1_loc"]) == (int(mine["correct"]) and int(mine["gt_known_hit"]))
    hits = sum(int(r["top1_loc"]) for r in rows) * 100.0 / len(rows)
    assert summary["metrics"]["val/loc/top1_loc"] == pytest.approx(hits, abs=1e-5)  # logged as float32


# ---- the resize rule, against an independent computation --------------------------------------------------------
def test_original_resolution_maps_are_scored_as_wsolevaluation_resizes_and_normalizes_them(tree, soft):
    """Reference: cv2 INTER_CUBIC to the input size in float64, normalize_scoremap, then the plain metric code."""
    from camlab.data.wsoleval import WSOLEvalDataset

    ds = WSOLEvalDataset(str(tree["data"]), str(tree["root"] / "metadata"), "OpenImages", "val", num_classes=3,
                         image_size=S, resize_size=40)
    ref = []
    for m in soft["maps"]:
        r = cv2.resize(m, (S, S), interpolation=cv2.INTER_CUBIC)
        r = r - r.min()
        ref.append(r / r.max())
    samples = [ds[i] for i in range(len(ds))]
    thresholds = np.arange(0, 1, 0.01)
    best, _ = ref_max_box_acc(ref, [s["boxes"].numpy() for s in samples], thresholds)
    pxap = ref_pxap(ref, [s["mask"].numpy() for s in samples], thresholds)[0]
    got = soft["summary"]["metrics"]
    for k in (30, 50, 70):
        assert got[f"val/loc/MaxBoxAccV2/IoU{k}"] == pytest.approx(best[k], abs=1e-9), k
    assert got["val/loc/PxAP"] == pytest.approx(pxap, abs=1e-9)
    assert 0 < got["val/loc/MaxBoxAccV2"] < 100 and 0 < got["val/loc/PxAP"] < 100  # a test that could fail


def test_maps_at_the_input_size_are_taken_as_is_and_bilinear_is_camlabs_upsample(tmp_path):
    rng = np.random.default_rng(1)
    at_size = rng.random((S, S))
    small = rng.random((7, 5)).astype(np.float32)
    np.savez(tmp_path / "m.npz", **{"0": at_size, "1": at_size[None].astype(np.float32), "2": small})
    ext = ExternalMaps(tmp_path / "m.npz", indices=[0, 1, 2], resize="bilinear")
    out = ext.for_batch(torch.tensor([0, 1]), (S, S))
    assert out.dtype == torch.float64 and torch.equal(out[0], torch.from_numpy(at_size))  # float64 never rounded
    assert torch.equal(out[1], torch.from_numpy(at_size.astype(np.float32)).double())  # (1, H, W) taken as (H, W)
    resized = ext.for_batch(torch.tensor([2]), (S, S + 8))
    assert resized.dtype == torch.float32 and torch.equal(resized[0], upsample(torch.from_numpy(small)[None], (S, S + 8))[0])
    bicubic = fit_map(small, (S, S + 8))
    assert np.array_equal(bicubic, cv2.resize(small.astype(np.float64), (S + 8, S), interpolation=cv2.INTER_CUBIC))


def test_every_layout_gives_the_same_rows(tree, soft, tmp_path):
    """npz by image path / by index / positional, folder of <index>.npy, ids without the image extension."""
    ids, maps = tree["ids"]["val"], soft["maps"]
    np.savez(tmp_path / "by_path.npz", **dict(zip(ids, maps)))
    np.savez(tmp_path / "by_index.npz", **{str(i): m for i, m in enumerate(maps)})
    np.savez(tmp_path / "positional.npz", *maps)
    variants = {
        "by_path.npz": "path", "by_index.npz": "index", "positional.npz": "index",
        write_folder(tmp_path / "index_dir", [f"{i:06d}" for i in range(len(maps))], maps): "index",
        write_folder(tmp_path / "no_ext", [i.rsplit(".", 1)[0] for i in ids], maps): "path",
        write_folder(tmp_path / "tail", [i.split("/", 1)[1] for i in ids], maps): "path",  # <class>/<file>
    }
    for n, (source, key) in enumerate(variants.items()):
        path = tmp_path / source if isinstance(source, str) else source
        summary, rows = run_eval(tree, tmp_path / f"eval{n}", f"maps={path}")
        assert summary["maps"]["key"] == key, source
        assert summary["metrics"] == soft["summary"]["metrics"], source
        assert rows == soft["rows"], source
    forced, _ = run_eval(tree, tmp_path / "forced", f"maps={tmp_path / 'by_path.npz'}", "maps_key=image_id")
    assert forced["metrics"] == soft["summary"]["metrics"]


def test_constant_maps_score_as_empty_maps_with_one_warning(tree, soft, tmp_path, caplog):
    maps = list(soft["maps"])
    maps[2], maps[5] = np.full((9, 11), 0.3), np.zeros((S, S), np.float32)  # bicubic would turn 0.3 into noise
    folder = write_folder(tmp_path / "maps", tree["ids"]["val"], maps)
    with caplog.at_level(logging.WARNING, logger="camlab.external"):
        summary, rows = run_eval(tree, tmp_path / "eval", f"maps={folder}")
    warnings = [r.getMessage() for r in caplog.records if r.name == "camlab.external"]
    assert len(warnings) == 1 and warnings[0].startswith("maps: 2 constant map(s)") and "no object" in warnings[0]
    assert summary["maps"]["constant_maps"] == 2
    for i in (2, 5):  # no contour at any threshold: wsolevaluation's box (0, 0, 0, 0)
        assert [rows[i][f"box50_{c}"] for c in ("x0", "y0", "x1", "y1")] == ["0", "0", "0", "0"]
    gt_known = [c for c in rows[0] if c.startswith("gt_known")]  # at the fixed threshold: per image
    for i in (0, 1, 3):
        assert [rows[i][c] for c in gt_known] == [soft["rows"][i][c] for c in gt_known]


# ---- bad input: one line each -----------------------------------------------------------------------------------
def error_line(tree, out: Path, *extra: str) -> str:
    cfg = composed("eval", eval_args(tree, *extra), out)
    with pytest.raises(ConfigError) as info:
        evaluate(cfg)
    line = describe_error(info.value, cfg)
    assert line is not None and "\n" not in line
    return line


def broken_folder(tree, soft, folder: Path, i: int, value) -> Path:
    shutil.copytree(soft["folder"], folder)
    target = folder / f"{tree['ids']['val'][i]}.npy"
    if isinstance(value, bytes):
        target.write_bytes(value)
    else:
        np.save(target, value)
    return target


def test_missing_map_names_the_first_and_the_count(tree, soft, tmp_path):
    shutil.copytree(soft["folder"], tmp_path / "maps")
    for i in (3, 7):
        (tmp_path / "maps" / f"{tree['ids']['val'][i]}.npy").unlink()
    line = error_line(tree, tmp_path / "eval", f"maps={tmp_path / 'maps'}")
    assert line.startswith(f"2 of the {len(VAL)} val images have no map in {tmp_path / 'maps'} ({len(VAL) - 2} matched")
    assert f"first missing: image {tree['ids']['val'][3]} (looked for {tmp_path / 'maps' / tree['ids']['val'][3]}.npy)" in line


@pytest.mark.parametrize("case, value, expected", [
    ("three channels", np.zeros((3, 30, 30)), "has shape (3, 30, 30): a map must be 2-D (H, W)"),
    ("strings", np.array([["a", "b"], ["c", "d"]]), "has dtype <U1: a map holds real numbers"),
    ("NaN", np.where(np.eye(30) > 0, np.nan, 0.5), "has NaN values: fix the tool that wrote it"),
    ("inf", np.where(np.eye(30) > 0, np.inf, 0.5), "has inf values"),
    ("not npy", b"PK\x03\x04 not a numpy file", "not a .npy array"),
])
def test_bad_map_files_name_the_file(tree, soft, tmp_path, case, value, expected):
    target = broken_folder(tree, soft, tmp_path / "maps", 4, value)
    line = error_line(tree, tmp_path / "eval", f"maps={tmp_path / 'maps'}")
    assert f"map {target}" in line and expected in line, line


def test_truncated_npy_names_the_file(tree, soft, tmp_path):
    target = broken_folder(tree, soft, tmp_path / "maps", 1, soft["maps"][1])
    target.write_bytes(target.read_bytes()[:-40])  # a valid header, short data: read when the batch is scored
    line = error_line(tree, tmp_path / "eval", f"maps={tmp_path / 'maps'}")
    assert line.startswith(f"cannot read map {target} (") and "re-save it with numpy.save" in line


def test_maps_of_another_split_show_both_sides(tree, soft, tmp_path):
    test_maps = write_folder(tmp_path / "test_maps", tree["ids"]["test"], [np.ones((4, 4))] * len(tree["ids"]["test"]))
    line = error_line(tree, tmp_path / "e1", f"maps={test_maps}")
    assert line.startswith(f"none of the {len(tree['ids']['test'])} maps in {test_maps} matches an image of the val "
                           f"split ({len(VAL)} images; keys read as image paths")
    assert f"maps e.g. '{tree['ids']['test'][0]}', images e.g. '{tree['ids']['val'][0]}'" in line
    np.savez(tmp_path / "far.npz", **{str(100 + i): m for i, m in enumerate(soft["maps"])})
    line = error_line(tree, tmp_path / "e2", f"maps={tmp_path / 'far.npz'}")
    assert "keys read as dataset indices): maps e.g. '100', images have indices 0..11" in line


def test_bad_sources_and_settings(tree, soft, tmp_path):
    assert "does not exist: pass a folder of .npy maps" in error_line(tree, tmp_path / "e1", f"maps={tmp_path / 'no'}")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    assert f"cannot read maps='{tmp_path / 'bad.npz'}' as an .npz file" in error_line(
        tree, tmp_path / "e2", f"maps={tmp_path / 'bad.npz'}")
    assert "maps_key must be one of auto, index, path, image_id, got 'name'" in error_line(
        tree, tmp_path / "e3", f"maps={soft['folder']}", "maps_key=name")
    assert "maps_resize must be one of bicubic, bilinear" in error_line(
        tree, tmp_path / "e4", f"maps={soft['folder']}", "maps_resize=area")
    (tmp_path / "empty").mkdir()
    assert "holds no maps" in error_line(tree, tmp_path / "e5", f"maps={tmp_path / 'empty'}")


def test_keys_that_fit_several_images_or_a_dataset_without_files(tmp_path):
    np.save(tmp_path / "x.png.npy", np.eye(3))
    with pytest.raises(DataError, match="the key 'x.png' ends the paths of several images: use a longer path"):
        ExternalMaps(tmp_path, [0, 1], ["/r/a/x.png", "/r/b/x.png"])
    with pytest.raises(DataError, match="keyed by image path .* has no image files"):
        ExternalMaps(tmp_path, [0, 1], None)
    np.save(tmp_path / "1.npy", np.eye(3)), np.save(tmp_path / "01.npy", np.eye(3))
    with pytest.raises(DataError, match="two maps for dataset index 1"):
        ExternalMaps(tmp_path, [0, 1], key="index")


def test_random_flips_are_refused():
    from camlab.data import SyntheticShapes

    with pytest.raises(ConfigError, match="random crops/flips"):
        check_dataset(SyntheticShapes("val", length=2, num_classes=2, image_size=32, hflip=True), "val")
    check_dataset(SyntheticShapes("val", length=2, num_classes=2, image_size=32, hflip=False), "val")


@pytest.mark.slow
def test_the_command_line_prints_one_error_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "camlab.eval", f"maps={tmp_path / 'nope'}", "data.num_val=4",
                          "data.image_size=32", "split=val", f"hydra.run.dir={tmp_path / 'run'}"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith(f"camlab: error: maps='{tmp_path / 'nope'}' does not exist")
