"""Metrics under 2 gloo processes with DistributedSampler padding equal the single-process values."""

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
        log, _ = p.communicate(timeout=120)
        assert p.returncode == 0, log


def test_two_process_metrics_equal_single_process(tmp_path):
    from _ddp_metric_worker import evaluate

    ddp = tmp_path / "ddp.pt"
    _run(2, ddp)
    a, b = evaluate(list(range(41))), torch.load(ddp)
    assert a["seen"] == 41 and b["seen"] == 21  # 41 samples padded to 42 over 2 ranks
    assert a["results"].keys() == b["results"].keys()
    assert {"MaxBoxAccV2", "MaxBoxAcc", "PxAP", "PIoU", "gt_known_loc", "top1_loc"} <= a["results"].keys()
    for key, value in a["results"].items():
        assert torch.equal(value, b["results"][key]), (key, value, b["results"][key])
    assert a["curves"] == b["curves"]
    # the padding is real: counting the repeated sample twice changes the single-process result
    padded = evaluate(list(range(41)) + [0])["results"]
    assert torch.equal(padded["PxAP"], a["results"]["PxAP"])  # de-duplicated in one process too
