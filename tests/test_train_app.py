"""The train app end to end, through the installed console script, in subprocesses (as a user runs it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

BIN = Path(sys.executable).parent
TINY = [
    "data.num_train=64",
    "data.num_val=32",
    "data.num_test=32",
    "data.batch_size=16",
    "callbacks.cam_localization.num_overlays=4",
]


def run(args: list[str], cwd: Path, exe: str = "camlab-train", env: dict | None = None, timeout: int = 300):
    cmd = [str(BIN / exe), *args] if exe != "python" else [sys.executable, *args]
    full_env = {**os.environ, "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def only_dir(parent: Path) -> Path:
    dirs = [p for p in parent.iterdir() if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


@pytest.mark.slow
def test_fast_dev_run_through_console_script(tmp_path):
    res = run(["debug=fast", *TINY], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    run_dir = only_dir(tmp_path / "outputs" / "train" / "runs")
    cfg = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert cfg["backbone"]["name"] == "tiny_cnn"
    assert "camlab: run finished" in res.stdout
    assert str(run_dir) in res.stdout or run_dir.name in res.stdout


@pytest.mark.slow
def test_short_training_writes_metrics_checkpoints_and_overlays(tmp_path):
    res = run(["debug=limit", *TINY], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    run_dir = only_dir(tmp_path / "outputs" / "train" / "runs")
    metrics_csv = run_dir / "csv" / "metrics.csv"
    header = metrics_csv.read_text().splitlines()[0].split(",")
    for key in ["train/loss", "val/acc", "val/loc/gt_known_loc", "val/loc/top1_loc", "val/loc/MaxBoxAccV2",
                "val/loc/PxAP", "test/loc/MaxBoxAccV2"]:
        assert key in header, (key, header)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert list((run_dir / "checkpoints").glob("best-*.ckpt"))
    assert (run_dir / "cams" / "overlay_latest.jpg").is_file()
    assert (run_dir / "cams" / "overlay_epoch001.jpg").is_file()
    assert list((run_dir / "cams").glob("curves_val_epoch*.csv"))
    assert (run_dir / "cams" / "curves_val.png").is_file()
    # the test split's model-based faithfulness: logged, curves per table, one plot
    for key in ["test/faith/average_drop", "test/faith/insertion_auc", "test/faith/deletion_auc", "test/faith/road"]:
        assert key in header, (key, header)
    for name in ("insertion_deletion", "road"):
        table = list((run_dir / "cams").glob(f"faith_{name}_test_epoch*.csv"))
        assert len(table) == 1 and len(table[0].read_text().splitlines()) > 2, table
    assert (run_dir / "cams" / "faith_test.png").is_file()
    for word in ["best checkpoint", "metrics.csv", "overlay_latest.jpg"]:
        assert word in res.stdout, res.stdout[-2000:]


@pytest.mark.slow
def test_module_entry_point_runs_from_a_regular_wheel_install(tmp_path):
    """`pip install .` path: configs must ship inside the wheel and be found from any working directory."""
    root = Path(__file__).resolve().parents[1]
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheel_dir), str(root)], check=True, capture_output=True, timeout=300)
    wheel = next(wheel_dir.glob("camlab-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n.split("camlab/conf/", 1)[1] for n in names if "camlab/conf/" in n and n.endswith(".yaml")}
    on_disk = {str(p.relative_to(root / "conf")) for p in (root / "conf").rglob("*.yaml")}
    assert shipped == on_disk
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    work = tmp_path / "elsewhere"
    work.mkdir()
    code = "import camlab, sys; print('CAMLAB_FILE', camlab.__file__); sys.argv[0]='camlab'; " \
           "from camlab.train import main; main()"
    res = run(["-c", code, "debug=fast", *TINY], cwd=work, exe="python", env={"PYTHONPATH": str(target)})
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"CAMLAB_FILE {target}" in res.stdout
    assert (work / "outputs" / "train" / "runs").is_dir()


@pytest.mark.slow
def test_multirun_two_backbones_two_job_dirs(tmp_path):
    res = run(["-m", "backbone=tiny_cnn,resnet18", "debug=fast", *TINY, "data.image_size=64"], cwd=tmp_path,
              timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    sweep = only_dir(tmp_path / "outputs" / "train" / "multiruns")
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1"]
    chosen = [yaml.safe_load((j / ".hydra" / "config.yaml").read_text())["backbone"]["name"] for j in jobs]
    assert chosen == ["tiny_cnn", "resnet18"]


@pytest.mark.slow
def test_wandb_offline_overlay_with_boxes(tmp_path):
    res = run(["logger=wandb", "debug=limit", *TINY, "test=false"], cwd=tmp_path,
              env={"WANDB_MODE": "offline"})
    assert res.returncode == 0, res.stderr[-3000:]
    run_dir = only_dir(tmp_path / "outputs" / "train" / "runs")
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1, list((run_dir / "wandb").iterdir())
    media = offline[0] / "files" / "media"
    assert list((media / "images").rglob("*.png"))
    box_files = list((media / "metadata" / "boxes2D").rglob("*.json"))
    assert box_files
    boxes = json.loads(box_files[0].read_text())
    assert boxes["box_data"] and boxes["box_data"][0]["domain"] == "pixel"


@pytest.mark.slow
def test_unknown_backbone_name_is_one_readable_line(tmp_path):
    res = run(["backbone.name=nope", "debug=fast", *TINY], cwd=tmp_path)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    err = [line for line in res.stderr.splitlines() if "camlab: error" in line]
    assert len(err) == 1, res.stderr[-2000:]
    assert "nope" in err[0] and "tiny_cnn" in err[0] and "resnet18" in err[0]


def test_unknown_backbone_group_option_lists_available(tmp_path):
    res = run(["backbone=nope", "debug=fast"], cwd=tmp_path, timeout=120)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    assert "Could not find 'backbone/nope'" in res.stderr
    assert "tiny_cnn" in res.stderr and "resnet18" in res.stderr


def test_unknown_config_key_is_hydras_clear_error(tmp_path):
    res = run(["trainer.max_epoch=3", "debug=fast"], cwd=tmp_path, timeout=120)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    assert "max_epoch" in res.stderr and "not in struct" in res.stderr


@pytest.mark.slow
def test_missing_pretrained_file_is_one_readable_line(tmp_path):
    res = run(["backbone=resnet18", "backbone.pretrained=/no/such/w.pth", "debug=fast", *TINY], cwd=tmp_path)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    assert "/no/such/w.pth" in res.stderr


@pytest.mark.slow
def test_wandb_multirun_gives_one_offline_run_per_job(tmp_path):
    res = run(["-m", "logger=wandb", "model.optimizer.lr=0.001,0.003", "debug=limit", "trainer.max_epochs=1",
               "test=false", *TINY], cwd=tmp_path, env={"WANDB_MODE": "offline"}, timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    sweep = only_dir(tmp_path / "outputs" / "train" / "multiruns")
    run_ids = set()
    for job in ("0", "1"):
        offline = list((sweep / job / "wandb").glob("offline-run-*"))
        assert len(offline) == 1, (job, offline)
        run_ids.add(offline[0].name.rsplit("-", 1)[1])
        assert list((offline[0] / "files" / "media" / "images").rglob("*.png"))
    assert len(run_ids) == 2  # two distinct W&B runs, not one reused


@pytest.mark.slow
def test_tensorboard_gets_the_overlay_image(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    res = run(["logger=tensorboard", "debug=limit", "trainer.max_epochs=1", "test=false", *TINY], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    run_dir = only_dir(tmp_path / "outputs" / "train" / "runs")
    events = list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent), size_guidance={"images": 0})
    acc.Reload()
    assert "val/cam_overlays" in acc.Tags()["images"]
    assert "val/loc/MaxBoxAccV2" in acc.Tags()["scalars"]
