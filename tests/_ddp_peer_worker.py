"""One rank of the failing-peer check (launched twice by tests/hostile/test_ddp.py).

Usage: python tests/_ddp_peer_worker.py RANK PORT. Both ranks join a gloo group inside ``run_app``; rank 1 fails
with a user error before the collective, rank 0 waits in an all-reduce that loses its peer.
"""

import os
import sys

import torch
import torch.distributed as dist
from omegaconf import OmegaConf

from camlab.errors import ConfigError
from camlab.runtime.app import run_app


def body(cfg) -> None:
    rank = int(os.environ["RANK"])
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{cfg.port}", rank=rank, world_size=2)
    dist.barrier()
    if rank == 1:
        raise ConfigError("data.root '/nowhere' does not exist: set data.root to your dataset")
    dist.all_reduce(torch.ones(1))  # the peer has gone: gloo raises here
    dist.all_reduce(torch.ones(1))


if __name__ == "__main__":
    os.environ["RANK"] = sys.argv[1]
    run_app("camlab.train", body, OmegaConf.create({"port": int(sys.argv[2])}))
