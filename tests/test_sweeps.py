"""Sweeps: the Optuna search (persistent study, best value), the submitit_local and joblib launchers, and W&B
runs grouped per sweep. Sweeps run as subprocesses through the console script, as a user types them."""

from __future__ import annotations

import csv
import struct
from pathlib import Path

import pytest
import yaml
from hydra.utils import instantiate

from test_configs import composed
from test_train_app import only_dir, run

TINY = [
    "data.num_train=32", "data.num_val=16", "data.num_test=16", "data.batch_size=16",
    "callbacks.cam_localization.num_overlays=2", "callbacks.rich_progress_bar=null",
    "trainer.max_epochs=1", "test=false",
]


def jobs_of(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def last_val(job: Path, key: str) -> float:
    values = [r[key] for r in csv.DictReader(open(job / "csv" / "metrics.csv", newline="")) if r.get(key)]
    assert values, f"no {key} in {job}"
    return float(values[-1])


def rank0_overrides(job: Path) -> str:
    return next(ln for ln in (job / "train.log").read_text().splitlines() if "rank 0 overrides:" in ln)


def test_sweep_configs_compose_with_their_documented_values():
    from omegaconf import OmegaConf

    cfg = composed(["hparams_search=optuna_loc"])
    assert cfg.optimized_metric == "val/loc/MaxBoxAccV2"
    cfg = composed(["hparams_search=optuna_loc", "seed=7"])
    from hydra.core.hydra_config import HydraConfig

    sweeper = HydraConfig.get().sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.storage is None  # in memory by default
    assert sweeper.direction == "maximize" and sweeper.sampler.seed == 7 and HydraConfig.get().mode.name == "MULTIRUN"

    composed(["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"])
    launcher = instantiate(HydraConfig.get().launcher)  # as Hydra builds it: interpolations resolved
    assert type(launcher).__name__ == "SlurmLauncher"
    assert (launcher.params["tasks_per_node"], launcher.params["gpus_per_node"], launcher.params["nodes"]) == (4, 4, 2)
    assert launcher.params["max_num_timeout"] > 0  # requeued on preemption / time limit
    composed(["hydra/launcher=local"])
    assert type(instantiate(HydraConfig.get().launcher)).__name__ == "LocalLauncher"
    composed(["hydra/launcher=parallel"])
    hc = OmegaConf.to_container(HydraConfig.get().launcher, resolve=True)
    assert hc["_target_"].endswith("JoblibLauncher") and hc["n_jobs"] == 2


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Deprecated API features detected")  # optuna 2.x on SQLAlchemy 1.4
def test_optuna_study_in_sqlite_continues_and_reports_the_best_of_all_trials(tmp_path):
    """2 trials, then 1 more in the same SQLite study: 3 trials, and the best value is the best of the 3 jobs."""
    import optuna

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    args = ["hparams_search=optuna_loc", f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=tiny", *TINY]
    for n_trials in (2, 1):
        res = run([*args, f"hydra.sweeper.n_trials={n_trials}"], cwd=tmp_path, timeout=400)
        assert res.returncode == 0, res.stderr[-3000:]
    sweeps = sorted((tmp_path / "outputs" / "train" / "multiruns").iterdir())
    assert len(sweeps) == 2
    jobs = jobs_of(sweeps[0]) + jobs_of(sweeps[1])
    assert len(jobs) == 3
    values = [last_val(j, "val/loc/MaxBoxAccV2") for j in jobs]  # what each trial returned

    study = optuna.load_study(study_name="tiny", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert sorted(t.value for t in study.trials) == sorted(values)
    reported = yaml.safe_load((sweeps[1] / "optimization_results.yaml").read_text())
    assert reported["best_value"] == max(values)
    for job, trial in zip(jobs, study.trials):
        # the job trained the trial's sampled parameters, and recorded its seed
        assert f"model.optimizer.lr={trial.params['model.optimizer.lr']}" in rank0_overrides(job)
        assert yaml.safe_load((job / ".hydra" / "config.yaml").read_text())["seed"] == 0
        assert yaml.safe_load((job / "csv" / "hparams.yaml").read_text())["seed"] == 0


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_two_job_sweep(tmp_path):
    res = run(["-m", "hydra/launcher=local", "model.optimizer.lr=0.001,0.003", *TINY], cwd=tmp_path, timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    sweep = only_dir(tmp_path / "outputs" / "train" / "multiruns")
    jobs = jobs_of(sweep)
    assert [j.name for j in jobs] == ["0", "1"]
    for job, lr in zip(jobs, ["0.001", "0.003"]):
        assert f"model.optimizer.lr={lr}" in rank0_overrides(job)
        assert last_val(job, "val/loc/MaxBoxAccV2") >= 0
    # each job ran as its own submitit job: its stdout/stderr and pickled result are in the sweep dir
    results = sorted((sweep / ".submitit").glob("*/*_result.pkl"))
    assert len(results) == 2


def wandb_records(path: Path):
    """The protobuf records of a W&B `.wandb` file (LevelDB log format: 32 KiB blocks of framed chunks)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, chunk, block = path.read_bytes(), 7, b"", 32768  # 7: the ':W&B' file header
    while pos + 7 <= len(data):
        left = block - pos % block
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (length == 0 and kind == 0):  # block trailer / padding
            pos += left
            continue
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            chunk = b""
            yield record


@pytest.mark.slow
def test_joblib_sweep_with_wandb_offline_one_finished_run_per_job_grouped_by_sweep(tmp_path):
    res = run(["-m", "hydra/launcher=parallel", "logger=wandb", "model.optimizer.lr=0.001,0.003", *TINY],
              cwd=tmp_path, env={"WANDB_MODE": "offline"}, timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in res.stdout + res.stderr
    sweep = only_dir(tmp_path / "outputs" / "train" / "multiruns")
    jobs = jobs_of(sweep)
    assert [j.name for j in jobs] == ["0", "1"]
    run_ids = set()
    for job, lr in zip(jobs, ["0.001", "0.003"]):
        offline = list((job / "wandb").glob("offline-run-*"))
        assert len(offline) == 1, offline
        records = list(wandb_records(next(offline[0].glob("run-*.wandb"))))
        run_rec = next(r.run for r in records if r.WhichOneof("record_type") == "run")
        exits = [r.exit.exit_code for r in records if r.WhichOneof("record_type") == "exit"]
        assert run_rec.run_group == f"train-{sweep.name}"  # one group per sweep
        assert run_rec.job_type == "train" and list(run_rec.tags) == ["dev"]
        assert f"model.optimizer.lr={lr}" in run_rec.display_name.split(",")
        assert exits == [0]  # finished at the end of its job
        assert run_rec.run_id == (job / "wandb" / "camlab_run_id").read_text().strip()
        run_ids.add(run_rec.run_id)
    assert len(run_ids) == 2
