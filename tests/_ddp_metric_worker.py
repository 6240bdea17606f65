"""One rank of the DDP metric exactness check (launched twice by tests/test_metrics_ddp.py).

Usage: python tests/_ddp_metric_worker.py RANK WORLD_SIZE PORT OUT_FILE
Every rank builds the same odd-sized validation set, takes its DistributedSampler shard (which pads by
repeating samples), updates WSOLMetrics batch by batch, computes (every rank) and rank 0 saves the
result. WORLD_SIZE 1 runs without a process group: the single-process value.
"""

import os
import sys

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

sys.path.insert(0, os.path.dirname(__file__))
from test_metrics import make_dataset  # noqa: E402

from camlab.metrics import WSOLMetrics  # noqa: E402


def evaluate(indices: list[int]) -> dict:
    """Update WSOLMetrics over the given samples of the 41-sample set, batches of 4; compute."""
    data = make_dataset(n=41, seed=5)
    metrics = WSOLMetrics(cam_thresholds=0.02, masks=True)
    for s in range(0, len(indices), 4):
        idx = torch.tensor(indices[s : s + 4])
        metrics.update(**{k: v[idx] for k, v in data.items()})
    return {"results": metrics.compute(), "curves": metrics.curves(), "seen": len(indices)}


def main() -> None:
    rank, world, port, out_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        sampler = DistributedSampler(range(41), num_replicas=world, rank=rank, shuffle=True, seed=3)
        indices = list(sampler)
    else:
        indices = list(range(41))
    result = evaluate(indices)
    if rank == 0:
        torch.save(result, out_file)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
