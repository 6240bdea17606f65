"""camlab.wsol.WSOLMetrics under 2 gloo processes with DistributedSampler padding equals the single-process values
exactly: the scalars, the curves and the per-image rows."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

WORKER = Path(__file__).with_name("_ddp_metric_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(world: int, out: Path) -> None:
    port = str(_free_port())
    env = {k: v for k, v in os.environ.items()
           if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(r), str(world), port, str(out)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(world)]
    for p in procs:
        log, _ = p.communicate(timeout=180)
        assert p.returncode == 0, log


def test_two_process_metrics_equal_single_process(tmp_path):
    from _ddp_metric_worker import N, evaluate

    ddp = tmp_path / "ddp.pt"
    _run(2, ddp)
    a, b = evaluate(list(range(N))), torch.load(ddp)
    assert N % 2 == 1 and a["seen"] == N and b["seen"] == (N + 1) // 2  # 41 samples padded to 42 over 2 ranks
    assert a["results"].keys() == b["results"].keys()
    assert {"MaxBoxAccV2", "MaxBoxAcc", "PxAP", "PIoU", "gt_known_loc", "top1_loc", "top5_cls"} <= a["results"].keys()
    for key, value in a["results"].items():
        assert torch.equal(value, b["results"][key]), (key, value, b["results"][key])
    assert {"faith/average_drop", "faith/insertion_auc", "faith/deletion_auc", "faith/road"} <= a["results"].keys()
    assert a["curves"] == b["curves"]
    # the per-image rows of both ranks, gathered, de-duplicated and sorted by index: those of one process
    assert b["rows"]["index"].tolist() == list(range(N))
    assert a["rows"].keys() == b["rows"].keys() and {"ious", "boxes", "largest", "loc_iou", "hist", "faith"} <= a["rows"].keys()
    for key, value in a["rows"].items():
        assert value.dtype == b["rows"][key].dtype and torch.equal(value, b["rows"][key]), key
    assert a["rows"]["ious"].shape == (N, 50)
    assert a["per_image"] == b["per_image"] and "road_morf" in a["per_image"][0]
    # the padding is real: counting the repeated sample twice changes the result, the de-duplication undoes it
    # (the box metrics only: the faith rows are de-duplicated by the same index, checked above)
    padded = list(range(N)) + [0]
    twice = evaluate(padded, distinct_index=True, faith=False)["results"]
    assert any(not torch.equal(twice[k], a["results"][k]) for k in twice)
    once = evaluate(padded, faith=False)["results"]
    assert {"MaxBoxAccV2", "PxAP", "top1_loc"} <= once.keys() < a["results"].keys()
    assert all(torch.equal(once[k], a["results"][k]) for k in once)
