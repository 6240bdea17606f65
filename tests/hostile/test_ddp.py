"""A DDP run where one process fails: that process prints its one line, the others follow with one line each that
points at it (which rank stopped, and why it stopped too), no gloo / NCCL traceback, and every process exits 1.

One real two-process gloo run (the ranks of tests/_ddp_peer_worker.py), and in-process cases of the errors a
collective raises when its peer has gone.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist
from omegaconf import OmegaConf

from camlab.errors import ConfigError
from camlab.runtime.app import peer_failed, run_app

from ._checks import short

WORKER = Path(__file__).parents[1] / "_ddp_peer_worker.py"


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


PEER_GONE = [
    RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:29500"),
    RuntimeError("[gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 1800000ms for recv operation to "
                 "complete (gloo socket timeout)"),
    ConnectionResetError(104, "Connection reset by peer"),
    BrokenPipeError(32, "Broken pipe"),
    RuntimeError("NCCL communicator was aborted on rank 0"),
]


@pytest.fixture
def in_a_process_group(monkeypatch):
    """As if this process were rank 3 of a DDP run (no real group: the errors are what a collective raises)."""
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "destroy_process_group", lambda *a, **k: None)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)


@pytest.mark.parametrize("err", PEER_GONE, ids=lambda e: type(e).__name__ + "_" + str(e)[:20].replace(" ", "_"))
def test_a_collective_that_lost_its_peer_is_one_line_naming_this_rank(in_a_process_group, capsys, err):
    assert peer_failed(err)

    def body(cfg):
        raise err

    with pytest.raises(SystemExit) as exc:
        run_app("camlab.train", body, OmegaConf.create({}))
    assert exc.value.code == 1
    short(capsys.readouterr().err, "camlab: error: another process of this DDP run stopped, so this one (rank 3) "
          "stopped too", "the first 'camlab: error' line above says why", type(err).__name__, max_lines=1)


def test_other_runtime_errors_under_ddp_keep_their_traceback(in_a_process_group):
    bug = RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x8 and 9x2)")
    assert not peer_failed(bug)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        run_app("camlab.train", lambda cfg: (_ for _ in ()).throw(bug), OmegaConf.create({}))


def test_the_failing_rank_prints_its_own_cause_not_the_peer_line(in_a_process_group):
    def body(cfg):
        raise ConfigError("data.root '/nowhere' does not exist: set data.root to your dataset")

    with pytest.raises(SystemExit) as exc:
        run_app("camlab.train", body, OmegaConf.create({}))
    assert str(exc.value.code) == "camlab: error: data.root '/nowhere' does not exist: set data.root to your dataset"


def test_a_peer_error_outside_ddp_is_not_blamed_on_a_peer(monkeypatch):
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    assert not peer_failed(PEER_GONE[0])  # no process group: a real connection problem, shown as it is


def test_hydra_full_error_shows_the_collectives_traceback(in_a_process_group, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(RuntimeError, match="Connection closed by peer"):
        run_app("camlab.train", lambda cfg: (_ for _ in ()).throw(PEER_GONE[0]), OmegaConf.create({}))
