"""camlab.viz: overlays, the curve CSV and plot, and the callback writing them on its worker thread."""

import threading

import numpy as np
import pytest
from PIL import ImageDraw

from camlab.viz import OverlaySample, caption_font, heatmap_overlay, render_grid


def test_caption_font_is_loaded_once_per_thread():
    here = caption_font()
    assert caption_font() is here
    other = []
    t = threading.Thread(target=lambda: other.append(caption_font()))
    t.start()
    t.join()
    assert other[0] is not here  # a FreeType face is not shared between threads
    assert ImageDraw.Draw(render_grid([_sample()])).textbbox((0, 0), "ok", font=here)[2] > 0


def _sample():
    img = np.zeros((8, 8, 3), np.uint8)
    cam = np.zeros((8, 8), np.float32)
    cam[2:6, 2:6] = 1.0
    return OverlaySample(image=img, cam=cam, gt_boxes=[[2.0, 2.0, 6.0, 6.0]], pred_box=None, label="a", pred="a",
                         score=1.0, index=0)


def test_heatmap_overlay_blends_the_jet_colour_by_hand():
    img = np.full((1, 2, 3), 100, np.uint8)
    out = heatmap_overlay(img, np.array([[0.0, 1.0]]))
    # jet at 0 is dark blue (0, 0, 127.5) and at 1 dark red (127.5, 0, 0); half and half with grey 100
    assert out[0, 0].tolist() == [50, 50, 114] and out[0, 1].tolist() == [114, 50, 50]


# ---- curve plots and files ------------------------------------------------------------------------------------------
def _curves(pxap=True):
    t = [i / 20 for i in range(20)]
    table = {"threshold": t,
             "MaxBoxAccV2/IoU30": [90.0] * 20, "MaxBoxAccV2/IoU50": [60.0] * 20, "MaxBoxAccV2/IoU70": [30.0] * 20}
    if pxap:
        table.update({"PxAP/precision": [1.0 - r / 2 for r in t[::-1]], "PxAP/recall": t[::-1], "PIoU": [10.0] * 20})
    return table


def _match(rgb, colour, tol=12):
    return np.abs(rgb.astype(int) - np.asarray(colour)).max(axis=-1) <= tol


def _has_colour(rgb, colour):
    return bool(_match(rgb, colour).any())


def _hex(name):
    from matplotlib.colors import to_rgb

    return [round(255 * v) for v in to_rgb(name)]


def test_plot_curves_draws_one_line_per_iou_on_the_left_and_precision_recall_on_the_right(tmp_path):
    from PIL import Image

    from camlab.viz import CURVE_COLORS, PLOT_SIZE, PR_COLOR, plot_curves

    path = plot_curves(_curves(), tmp_path / "c.png", title="val epoch 3")
    rgb = np.asarray(Image.open(path).convert("RGB"))
    assert path == tmp_path / "c.png" and (rgb.shape[1], rgb.shape[0]) == PLOT_SIZE
    left, right = rgb[:, : int(0.67 * PLOT_SIZE[0])], rgb[:, int(0.69 * PLOT_SIZE[0]):]  # (with its legend)
    for colour in CURVE_COLORS[:3]:  # the three IoU lines, and not in the right panel
        assert _has_colour(left, _hex(colour)) and not _has_colour(right, _hex(colour)), colour
    assert not _has_colour(left, _hex(CURVE_COLORS[3]))  # only three IoUs
    assert _has_colour(right, _hex(PR_COLOR)) and not _has_colour(left, _hex(PR_COLOR))
    # the flat 90, 60 and 30 % lines, top to bottom: the rows holding most of each colour's pixels
    rows = [np.median(np.nonzero(_match(left, _hex(c)))[0]) for c in CURVE_COLORS[:3]]
    assert rows == sorted(rows) and rows[2] - rows[0] > 50, rows


def test_plot_curves_without_masks_leaves_the_right_panel_blank(tmp_path):
    from PIL import Image

    from camlab.viz import PLOT_SIZE, PR_COLOR, plot_curves

    rgb = np.asarray(Image.open(plot_curves(_curves(pxap=False), tmp_path / "c.png")).convert("RGB"))
    assert (rgb.shape[1], rgb.shape[0]) == PLOT_SIZE
    right = rgb[:, int(0.69 * PLOT_SIZE[0]):]  # right of the left panel's legend
    assert not _has_colour(right, _hex(PR_COLOR))
    spread = right.astype(int).max(axis=-1) - right.astype(int).min(axis=-1)
    assert spread.max() < 30  # no axes, no coloured pixel: white and the grey note only


def test_plot_curves_is_safe_on_threads(tmp_path):
    from PIL import Image

    from camlab.viz import plot_curves

    errors = []

    def plot(i):
        try:
            plot_curves(_curves(), tmp_path / f"c{i}.png", title=f"epoch {i}")
        except Exception as err:  # pragma: no cover - the assertion below reports it
            errors.append(err)

    threads = [threading.Thread(target=plot, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    ref = np.asarray(Image.open(plot_curves(_curves(), tmp_path / "ref.png", title="epoch 0")))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "c0.png")), ref)


def test_write_curves_csv_round_trips_the_columns(tmp_path):
    import csv

    from camlab.viz import write_curves_csv

    table = _curves()
    rows = list(csv.reader(open(write_curves_csv(table, tmp_path / "c.csv"), newline="")))
    assert rows[0] == list(table) and len(rows) == 21
    assert [float(v) for v in rows[5]] == pytest.approx([table[k][4] for k in table], rel=1e-5)


# ---- the callback's epoch outputs, written on its worker thread -----------------------------------------------------
def _tiny_validation(tmp_path, cb, logger=False):
    import lightning.pytorch as L
    import torch
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    GlobalHydra.instance().clear()
    with initialize_config_module("camlab.conf", version_base="1.3"):
        cfg = compose("train", overrides=["backbone.width=4", "data.num_val=16", "data.image_size=32",
                                          "data.num_train=8", "data.num_test=8", "data.batch_size=8"])
    GlobalHydra.instance().clear()
    torch.manual_seed(0)
    dm, model = instantiate(cfg.data, _convert_="partial"), instantiate(cfg.model, _convert_="partial")
    L.Trainer(accelerator="cpu", logger=logger, callbacks=[cb], enable_progress_bar=False, enable_model_summary=False,
              enable_checkpointing=False, default_root_dir=str(tmp_path)).validate(model, datamodule=dm, verbose=False)


@pytest.mark.parametrize("background", [True, False])
def test_callback_writes_curves_grid_and_tensorboard_image(tmp_path, monkeypatch, background):
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import camlab.callbacks as callbacks
    from camlab.callbacks import CAMLocalization

    threads = {}

    def spy(name, fn):
        def wrapped(*args, **kwargs):
            threads[name] = threading.current_thread().name
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(callbacks, "plot_curves", spy("plot", callbacks.plot_curves))
    monkeypatch.setattr(callbacks, "render_grid", spy("grid", callbacks.render_grid))
    out = tmp_path / "cams"
    # 20 overlays asked, 16 images: the grid is drawn with the epoch's outputs, not during the updates
    cb = CAMLocalization(num_overlays=20, output_dir=str(out), background=background, topk=(1,))
    _tiny_validation(tmp_path, cb, logger=TensorBoardLogger(str(tmp_path / "tb"), name=None, version=""))
    worker = "camlab-cam-metrics" if background else threading.main_thread().name
    # the plot of the last epoch's curves is drawn once, at teardown, after the worker has stopped
    assert threads == {"plot": threading.main_thread().name, "grid": worker}
    assert cb._worker._thread is None  # closed at teardown: every output is on disk
    assert (out / "curves_val_epoch000.csv").is_file() and (out / "curves_val.png").is_file()
    assert (out / "overlay_epoch000.jpg").is_file() and (out / "overlay_latest.jpg").is_file()
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0}).Reload()
    assert "val/cam_overlays" in events.Tags()["images"]


def test_callback_error_while_writing_the_outputs_fails_the_run(tmp_path, monkeypatch):
    import camlab.callbacks as callbacks
    from camlab.callbacks import CAMLocalization

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(callbacks, "plot_curves", broken)
    cb = CAMLocalization(num_overlays=4, output_dir=str(tmp_path / "cams"), background=True, topk=(1,))
    with pytest.raises(OSError, match="disk full"):
        _tiny_validation(tmp_path, cb)
    assert cb._worker._thread is None
