"""CAMLocalization: the background worker, its errors, numba threads and OpenMP teams, against plain metrics."""

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from camlab.cam import minmax_normalize
from camlab.wsol import WSOLMetrics


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
                             parallel=par, pointing=True)
        _validate(model, dm, cb)
        assert cb._parallel is (par is True)  # "auto" stays serial when the model runs on the CPU
        assert cb._metrics["val"].parallel is cb._parallel
        assert cb._worker._thread is None  # stopped at teardown
        assert sorted(p.name for p in d.glob("overlay_*")) == [f"overlay_epoch000.{fmt}", f"overlay_latest.{fmt}"]
        grid = np.asarray(Image.open(d / f"overlay_epoch000.{fmt}"))
        assert (d / f"overlay_epoch000.{fmt}").read_bytes() == (d / f"overlay_latest.{fmt}").read_bytes()
        assert (d / "curves_val_epoch000.csv").is_file() and Image.open(d / "curves_val.png").size == (720, 280)
        out[bg, n_overlays] = cb.last_results["val"], grid
    assert {"MaxBoxAccV2", "PxAP", "top1_loc", "faith/pointing_game", "faith/relevance_rank"} <= set(out[True, 3][0])
    assert out[True, 3][0] == out[False, 3][0] == out[True, 50][0] == out[True, 4][0]  # exactly equal floats
    # the same numbers straight from the model: CAM of the GT class, upsampled, min-max normalized
    plain = WSOLMetrics(0.01, masks=True, topk=(1,), max_box_acc=False, pointing=True)
    model.eval()
    with torch.no_grad():
        for b in dm.val_dataloader():
            o = model(b["image"])
            cams = minmax_normalize(F.interpolate(model.cam(o["features"], b["label"])[:, None], b["image"].shape[-2:],
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
    and the default run's training epochs ran slower (benchmarks/bench_run.py)."""
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


@pytest.mark.parametrize("faith, needle", [
    ({"foo": 1}, "faithfulness has no key foo"),
    ({"steps": 0}, "faithfulness.steps"),
    ({"stages": ["train"]}, "faithfulness.stages"),
    ({"max_images": 0}, "faithfulness.max_images"),
    ({"insertion_substrate": "noise"}, "faithfulness.insertion_substrate"),
])
def test_bad_faithfulness_options_fail_at_construction_naming_the_key(faith, needle):
    from camlab.callbacks import CAMLocalization

    with pytest.raises(ValueError, match=needle):
        CAMLocalization(faithfulness=faith)
