"""Hostile filesystems: a full disk (emulated in-process: writes raise ENOSPC half-way; and for real in a
subprocess with RLIMIT_FSIZE), a read-only folder, a missing parent, an output path that is a file or a folder.

Every output file goes through :mod:`camlab.atomic`, so each case asserts that the file written before is still
whole, that no temporary or half-written file is left, and that the error is one line naming the path.
"""
from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from camlab import atomic
from camlab.runtime.app import describe_error, run_app

from ._checks import clean, short, snapshot

OLD = b"the file written before\n"


class _FillsUp(io.RawIOBase):
    """A file object whose writes fail with ENOSPC once ``room`` bytes are written (a disk filling up)."""

    def __init__(self, real, room: int) -> None:
        self.real, self.room = real, room

    def write(self, data):
        data = bytes(data) if not isinstance(data, str) else data
        if len(data) > self.room:
            self.real.write(data[: self.room])  # part of it lands, as on a real disk
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.real.write(data)

    def __getattr__(self, name):
        return getattr(self.real, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.real.close()


@pytest.fixture
def full_disk(monkeypatch):
    """Every write through camlab.atomic runs out of space after ``room`` bytes (default 4)."""
    state = {"room": 4}
    real_open = open

    def filling_open(fd, mode, **kwargs):
        return _FillsUp(real_open(fd, mode, **kwargs), state["room"])

    monkeypatch.setattr(atomic, "open", filling_open, raising=False)
    return state


def _old(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(OLD)
    return path


# ---- the helper itself ------------------------------------------------------------------------------------
def test_an_exception_half_way_leaves_the_old_file_and_no_temporary(tmp_path):
    target = _old(tmp_path / "metrics.json")
    with pytest.raises(RuntimeError, match="half-way"):
        with atomic.atomic_write(target) as f:
            f.write("{partial")
            raise RuntimeError("the writer failed half-way")
    assert target.read_bytes() == OLD
    clean(tmp_path, {"metrics.json": OLD}, allow_new=False)


def test_ctrl_c_half_way_leaves_the_old_file_and_no_temporary(tmp_path):
    target = _old(tmp_path / "per_image.csv")
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_write(target, "wb") as f:
            f.write(b"index,label\n0,")
            raise KeyboardInterrupt
    clean(tmp_path, {"per_image.csv": OLD}, allow_new=False)


def test_a_full_disk_names_the_target_not_the_temporary_file(tmp_path, full_disk):
    target = _old(tmp_path / "curves.csv")
    with pytest.raises(OSError) as err:
        atomic.write_text(target, "threshold,PIoU\n" * 10)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(target)
    clean(tmp_path, {"curves.csv": OLD}, allow_new=False)


def test_a_failed_first_write_leaves_no_file_at_all(tmp_path, full_disk):
    with pytest.raises(OSError):
        atomic.write_bytes(tmp_path / "new.png", b"\x89PNG" * 100)
    assert list(tmp_path.iterdir()) == []


def test_a_failing_rename_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = _old(tmp_path / "comparison.md")

    def refuse(src, dst):
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(atomic.os, "replace", refuse)
    with pytest.raises(OSError) as err:
        atomic.write_text(target, "# table\n")
    assert err.value.filename == str(target)
    clean(tmp_path, {"comparison.md": OLD}, allow_new=False)


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_a_read_only_folder_names_the_target(tmp_path, monkeypatch, code):
    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(atomic.os, "open", refuse)  # the temporary file cannot be created (root ignores chmod)
    with pytest.raises(OSError) as err:
        atomic.write_text(tmp_path / "metrics.json", "{}")
    assert err.value.errno == code and err.value.filename == str(tmp_path / "metrics.json")
    assert describe_error(err.value).startswith(f"{os.strerror(code)} while ")
    assert str(tmp_path / "metrics.json") in describe_error(err.value)


def test_a_missing_parent_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        atomic.write_text(tmp_path / "gone" / "metrics.json", "{}")
    assert err.value.filename == str(tmp_path / "gone" / "metrics.json")


def test_a_folder_in_the_way_of_the_target_is_named_and_kept(tmp_path):
    (tmp_path / "metrics.json").mkdir()
    with pytest.raises(IsADirectoryError) as err:
        atomic.write_text(tmp_path / "metrics.json", "{}")
    assert err.value.filename == str(tmp_path / "metrics.json") and (tmp_path / "metrics.json").is_dir()
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_the_mode_must_be_a_write_mode(tmp_path):
    with pytest.raises(ValueError, match="mode must be 'w' or 'wb'"):
        with atomic.atomic_write(tmp_path / "x", "a"):
            pass


def test_new_files_get_the_usual_permissions_and_replace_the_old_content(tmp_path):
    target = _old(tmp_path / "summary.txt")
    os.chmod(target, 0o600)
    atomic.write_text(target, "new\n")
    umask = os.umask(0)
    os.umask(umask)
    assert target.read_text() == "new\n" and (target.stat().st_mode & 0o777) == (0o666 & ~umask)


def test_a_real_file_size_limit_in_a_subprocess_leaves_the_old_file(tmp_path):
    """Not emulated: the kernel refuses the write (RLIMIT_FSIZE, EFBIG), as a full quota would."""
    target = _old(tmp_path / "cams.npz")
    script = textwrap.dedent("""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an error, not a kill, when the limit is hit
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        from camlab.atomic import write_bytes
        try:
            write_bytes(sys.argv[1], b"x" * 100_000)
        except OSError as err:
            print(err.errno, err.filename)
    """)
    res = subprocess.run([sys.executable, "-c", script, str(target)], capture_output=True, text=True, timeout=60)
    assert res.stdout.split() == [str(errno.EFBIG), str(target)], res.stderr
    clean(tmp_path, {"cams.npz": OLD}, allow_new=False)


# ---- every writer of camlab, on a disk that fills up half-way ----------------------------------------------------
def _report():
    from camlab.wsol import WSOLMetrics

    metrics = WSOLMetrics(cam_thresholds=0.25, iou_thresholds=(50,), topk=(), gt_known=True)
    maps = torch.zeros(2, 8, 8)
    maps[:, 2:6, 2:6] = 1.0
    metrics.update(cams=maps, boxes=torch.tensor([[[2.0, 2.0, 5.0, 5.0]]] * 2), num_boxes=torch.tensor([1, 1]),
                   labels=torch.tensor([0, 1]), index=torch.tensor([0, 1]))
    return metrics.report()


def _grid(path):
    from camlab.viz import OverlaySample, save_grid

    sample = OverlaySample(image=np.zeros((8, 8, 3), np.uint8), cam=np.zeros((8, 8), np.float32), gt_boxes=[],
                           pred_box=None, label="a", pred="a", score=1.0, index=0)
    save_grid([sample], path)


WRITERS = {  # file name -> how camlab writes it
    "curves_val_epoch000.csv": lambda p: __import__("camlab.viz", fromlist=["x"]).write_curves_csv(
        {"threshold": [0.0, 0.5] * 20, "PIoU": [1.0, 2.0] * 20}, p),
    "curves_val.png": lambda p: __import__("camlab.viz", fromlist=["x"]).plot_curves(
        {"threshold": [0.0, 0.5], "MaxBoxAccV2/IoU50": [50.0, 40.0]}, p),
    "faith_test.png": lambda p: __import__("camlab.viz", fromlist=["x"]).plot_faith_curves(
        {"road": {"percent": [10, 50], "road_morf": [40, 10], "road_lerf": [80, 70]}}, p),
    "overlay_latest.png": _grid,
    "per_image.csv": lambda p: __import__("camlab.per_image", fromlist=["x"]).write_per_image_csv(p, _report()),
    "camlab_run_id": lambda p: (p.unlink(), __import__("camlab.runtime.trackers", fromlist=["x"]).stored_wandb_run_id(
        p.parent, write=True)),
}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_every_writer_keeps_the_old_file_when_the_disk_fills_up(tmp_path, full_disk, name):
    target = _old(tmp_path / name)
    before = snapshot(tmp_path)
    if name == "camlab_run_id":
        before = {}  # the id file is only written when there is none: nothing to keep
    with pytest.raises(OSError) as err:
        WRITERS[name](target)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(target)
    clean(tmp_path, before)
    if name != "camlab_run_id":
        assert target.read_bytes() == OLD


def test_metrics_json_of_camlab_eval_is_one_line_on_a_full_disk(tmp_path, full_disk, capsys):
    from omegaconf import OmegaConf

    from camlab.eval import write_summary

    target = _old(tmp_path / "metrics.json")
    cfg = OmegaConf.create({"paths": {"output_dir": str(tmp_path)}})
    summary = {"split": "test", "metrics": {"test/acc": 1.0}, "source": "x"}
    with pytest.raises(SystemExit) as exc:
        run_app("camlab.eval", lambda c: write_summary(c, summary, {}), cfg)
    short(str(exc.value.code), f"camlab: error: No space left on device while writing {target}", "free disk space",
          max_lines=1)
    clean(tmp_path, {"metrics.json": OLD}, allow_new=False)


def test_the_csv_logger_keeps_every_row_when_a_rewrite_runs_out_of_space(tmp_path, monkeypatch):
    from camlab.loggers import AppendingExperimentWriter

    writer = AppendingExperimentWriter(str(tmp_path))
    writer.log_metrics({"a": 1.0}, step=0)
    writer.save()
    before = snapshot(tmp_path)
    writer.log_metrics({"b": 2.0}, step=1)  # a new column: Lightning rewrites the whole file
    state = {"room": 4}
    real_open = open
    monkeypatch.setattr(atomic, "open", lambda fd, mode, **kw: _FillsUp(real_open(fd, mode, **kw), state["room"]),
                        raising=False)
    with pytest.raises(OSError):
        writer.save()
    clean(tmp_path, before)  # the row of step 0 is still there, whole
    assert (tmp_path / "metrics.csv").read_text().replace("\r", "") == "a,step\n1.0,0\n"


def test_a_full_disk_during_a_checkpoint_save_is_one_line_and_leaves_no_partial_file(tmp_path, monkeypatch):
    from _tiny_checkpoint import DATA, composed
    from camlab.errors import OutputError
    from camlab.train import train

    cfg = composed("train", [*DATA, "backbone.width=4", "test=false", "trainer.max_epochs=3",
                             "callbacks=[model_checkpoint,resume,cam_localization]",
                             "callbacks.cam_localization.num_overlays=0",
                             "callbacks.cam_localization.write_curves=false"], tmp_path)
    real_save = torch.save
    calls = {"n": 0}

    def save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:  # epoch 0's best and last are written; then the disk is full
            f.write(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(OutputError) as err:
        train(cfg)
    monkeypatch.setattr(torch, "save", real_save)
    short(str(err.value), f"cannot write checkpoint {tmp_path / 'checkpoints'}", "No space left on device; free disk "
          "space there", "the checkpoints written before are intact", max_lines=1)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["best-epoch000.ckpt", "last.ckpt"]  # no on_exception.ckpt, no temporary file
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 3  # epoch 0's file, intact
    with pytest.raises(SystemExit, match="camlab: error: cannot write checkpoint .*No space left"):
        run_app("camlab.train", lambda c: (_ for _ in ()).throw(err.value), cfg)
    clean(tmp_path)


@pytest.mark.parametrize("code, words", [
    (errno.ENOSPC, "No space left on device while writing /runs/x/csv/metrics.csv: free disk space there, or write "
                   "the run elsewhere (hydra.run.dir=<dir on another disk>)"),
    (errno.EROFS, "Read-only file system while writing /runs/x/csv/metrics.csv: make that folder writable"),
    (errno.EACCES, "Permission denied while reading or writing /runs/x/csv/metrics.csv: make that folder writable"),
    (getattr(errno, "EDQUOT", errno.ENOSPC), "while writing /runs/x/csv/metrics.csv: free disk space there"),
])
def test_disk_errors_of_any_output_name_the_path(code, words):
    assert describe_error(OSError(code, os.strerror(code), "/runs/x/csv/metrics.csv")).startswith(
        words if words[0].isupper() else os.strerror(code))
    assert words in describe_error(OSError(code, os.strerror(code), "/runs/x/csv/metrics.csv"))


def test_other_os_errors_keep_their_traceback():
    assert describe_error(OSError(errno.EIO, "Input/output error")) is None  # not a disk-space or permission case


def test_a_run_dir_that_cannot_be_written_is_one_line_before_hydra_writes(tmp_path, monkeypatch, capsys):
    from omegaconf import OmegaConf

    from camlab.runtime.outputs import CheckOutputDir

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr("pathlib.Path.mkdir", read_only)
    cfg = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "sweep")}}})
    with pytest.raises(SystemExit) as exc:
        CheckOutputDir().on_multirun_start(config=cfg)
    assert exc.value.code == 1
    short(capsys.readouterr().err, "(hydra.sweep.dir): Read-only file system; make that folder writable, or write "
                                   "the run elsewhere (hydra.sweep.dir=<writable dir>)", max_lines=1)
    assert not (tmp_path / "sweep").exists()


def test_a_missing_parent_of_the_run_dir_is_created(tmp_path):
    from camlab.runtime.outputs import check_writable_dir

    assert check_writable_dir(tmp_path / "a" / "b" / "run", "hydra.run.dir") is None
    assert (tmp_path / "a" / "b" / "run").is_dir() and list((tmp_path / "a" / "b" / "run").iterdir()) == []
