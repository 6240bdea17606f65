"""A DDP run where one process fails: that process prints its one line, the others follow with one line each,
no gloo traceback, and every process exits non-zero."""

import os
import socket
import subprocess
import sys
from pathlib import Path

WORKER = Path(__file__).with_name("_ddp_peer_worker.py")


def test_the_surviving_rank_prints_one_line_not_a_gloo_traceback():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "HYDRA_FULL_ERROR")}
    env.update(OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(r), str(port)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in range(2)]
    (out0, err0), (out1, err1) = (p.communicate(timeout=120) for p in procs)
    assert procs[1].returncode == 1 and procs[0].returncode == 1, (err0[-2000:], err1[-2000:])
    assert err1.strip().splitlines()[-1] == ("camlab: error: data.root '/nowhere' does not exist: set data.root to "
                                             "your dataset")
    lines = [line for line in err0.splitlines() if line.strip()]
    assert "Traceback" not in err0 and len(lines) <= 3, err0[-3000:]
    assert lines[-1].startswith("camlab: error: another process of this DDP run stopped, so this one (rank 0) "
                                "stopped too"), err0
