"""camlab-compare on a real 2-job sweep of the train app (subprocesses, tiny sizes)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch

from camlab.compare import main as compare_main
from test_train_app import TINY, only_dir, run

SORT = "val/loc/MaxBoxAccV2"
SHOWN = ["val/acc", "val/loc/top1_loc", "val/loc/MaxBoxAccV2", "val/loc/PxAP"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("sweep")
    res = run(["-m", "model.optimizer.lr=0.001,0.003", "debug=limit", "test=false", *TINY,
               "callbacks.cam_localization.write_curves=false"], cwd=work, timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    return only_dir(work / "outputs" / "train" / "multiruns")


def last_values(metrics_csv: Path) -> tuple[dict[str, float], float]:
    """Independently of camlab.compare: the last non-empty value of every column, and the max of SORT."""
    last, best = {}, float("-inf")
    with metrics_csv.open() as handle:
        for row in csv.DictReader(handle):
            for key, text in row.items():
                if text:
                    last[key] = float(text)
            if row.get(SORT):
                best = max(best, float(row[SORT]))
    return last, best


def compare(args: list[str], cwd: Path):
    return run(["-m", "camlab.compare", *map(str, args)], cwd=cwd, exe="python", timeout=120)


def table_line(stdout: str, lr: str) -> str:
    lines = [line for line in stdout.splitlines() if line.startswith("│") and f" {lr} " in line]
    assert len(lines) == 1, stdout
    return lines[0]


@pytest.mark.slow
def test_compare_a_real_sweep(sweep, tmp_path):
    res = compare([sweep], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = {"0": "0.001", "1": "0.003"}
    expected = {job: last_values(sweep / job / "csv" / "metrics.csv") for job in jobs}

    # Printed table: one row per job with its lr and the last logged values, 4 significant digits.
    for job, lr in jobs.items():
        line = table_line(res.stdout, lr)
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        assert cells[:3] == [job, "finished", lr], line
        last, best = expected[job]
        assert cells[3] == f"{best:.4g}"
        assert cells[5:5 + len(SHOWN)] == [f"{last[m]:.4g}" for m in SHOWN], (line, last)
    assert "model.optimizer.lr" in res.stdout
    assert "same in all jobs: debug=limit test=False" in res.stdout  # fixed overrides (as Hydra wrote them)

    # Files next to the jobs; the CSV has full precision.
    for name in ["comparison.csv", "comparison.md", "comparison.png"]:
        assert (sweep / name).stat().st_size > 0, name
    rows = list(csv.DictReader((sweep / "comparison.csv").open()))
    assert sorted(r["job"] for r in rows) == ["0", "1"]
    for row in rows:
        last, best = expected[row["job"]]
        assert row["model.optimizer.lr"] == jobs[row["job"]]
        assert row["status"] == "finished" and row["epochs"] == "2"
        assert float(row[f"best {SORT}"]) == best
        for key in [k for k in last if k.startswith("val/")]:
            assert float(row[key]) == last[key], key
        state = torch.load(sweep / row["job"] / "checkpoints" / "last.ckpt", map_location="cpu",
                           weights_only=False)["state_dict"]
        params = sum(t.numel() for k, t in state.items() if t.is_floating_point() and "running_" not in k)
        assert int(row["params"]) == params
        assert row["wall_source"] == "log+mtime" and 0 < float(row["wall_s"]) < 400
    md = (sweep / "comparison.md").read_text()
    assert "| job | status | model.optimizer.lr |" in md and "| 0.001 |" in md and "| 0.003 |" in md

    # Sorted by the best value, descending; --ascending reverses (ties keep job order).
    bests = [float(r[f"best {SORT}"]) for r in rows]
    assert bests == sorted(bests, reverse=True)
    order = [r["job"] for r in rows]
    out = tmp_path / "asc"
    res = compare([sweep, "--ascending", "--out", out], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    asc = list(csv.DictReader((out / "comparison.csv").open()))
    assert [float(r[f"min {SORT}"]) for r in asc] == sorted(float(r[f"min {SORT}"]) for r in asc)
    if bests[0] != bests[1]:
        assert [r["job"] for r in asc] == order[::-1]
    assert res.stdout.index(f" {jobs[asc[0]['job']]} ") < res.stdout.index(f" {jobs[asc[1]['job']]} ")


@pytest.mark.slow
def test_incomplete_jobs_are_reported_not_dropped(sweep, tmp_path, capsys):
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)  # copy2: keeps the file times
    (copy / "0" / "csv" / "metrics.csv").unlink()
    compare_main([str(copy), "--out", str(tmp_path / "a")])
    out = capsys.readouterr().out
    rows = {r["job"]: r for r in csv.DictReader((tmp_path / "a" / "comparison.csv").open())}
    # Job 0 came before job 1 in a sequential (basic launcher) sweep: it cannot still be running.
    assert rows["0"]["status"] == "failed" and "no csv/metrics.csv" in rows["0"]["note"]
    assert rows["1"]["status"] == "finished"
    assert list(rows) == ["1", "0"]  # jobs without the sort metric go last
    assert "job 0: failed: no csv/metrics.csv" in out
    assert (tmp_path / "a" / "comparison.png").is_file()

    # The last job without its metrics: recently written files -> running; outside the window -> failed.
    (copy / "1" / "csv" / "metrics.csv").unlink()
    compare_main([str(copy), "--out", str(tmp_path / "b")])
    rows = {r["job"]: r for r in csv.DictReader((tmp_path / "b" / "comparison.csv").open())}
    assert rows["1"]["status"] == "running", rows["1"]
    compare_main([str(copy), "--out", str(tmp_path / "c"), "--running-window", "0"])
    rows = {r["job"]: r for r in csv.DictReader((tmp_path / "c" / "comparison.csv").open())}
    assert [rows[j]["status"] for j in "01"] == ["failed", "failed"]


def test_bad_paths_are_one_readable_line(tmp_path):
    (tmp_path / "empty").mkdir()
    for path, words in [(tmp_path / "nope", ["does not exist", "multiruns"]),
                        (tmp_path / "empty", ["has no job dirs"])]:
        res = compare([path], cwd=tmp_path)
        assert res.returncode == 2, res.stderr
        assert "Traceback" not in res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and str(path) in lines[0], res.stderr
        assert lines[0].startswith("camlab-compare: error:") and all(w in lines[0] for w in words)


def test_a_dir_of_sweeps_names_one(tmp_path):
    job = tmp_path / "multiruns" / "2026-01-01_00-00-00_000000" / "0"
    (job / ".hydra").mkdir(parents=True)
    res = compare([tmp_path / "multiruns"], cwd=tmp_path)
    assert res.returncode == 2 and "pass one of them" in res.stderr and "Traceback" not in res.stderr


def test_a_job_whose_metrics_csv_has_no_values_is_flagged_not_finished(tmp_path, capsys):
    header = "epoch,step,train/loss,val/acc,val/loc/MaxBoxAccV2\n"
    good, bad, empty = (tmp_path / name / "csv" for name in ("good", "badrun", "emptyrun"))
    for d in (good, bad, empty):
        d.mkdir(parents=True)
    (good / "metrics.csv").write_text(header + "0,3,,0.75,61.5\n")
    (bad / "metrics.csv").write_text(header)  # killed before the first log: a header only
    (empty / "metrics.csv").write_text("")
    paths = [str(p.parent) for p in (good, bad, empty)]
    compare_main([*paths, "--out", str(tmp_path / "out"), "--running-window", "0"])
    rows = {r["job"]: r for r in csv.DictReader((tmp_path / "out" / "comparison.csv").open())}
    assert rows["good"]["status"] == "finished" and rows["good"]["val/acc"] == "0.75"
    for job in ("badrun", "emptyrun"):
        assert rows[job]["status"] == "failed", rows[job]
        assert "no metrics in csv/metrics.csv" in rows[job]["note"], rows[job]
    assert "job badrun: failed: no metrics in csv/metrics.csv" in capsys.readouterr().out
    compare_main([*paths, "--no-files"])  # just written: within the running window, never 'finished'
    assert "job badrun: running: no metrics in csv/metrics.csv" in capsys.readouterr().out
