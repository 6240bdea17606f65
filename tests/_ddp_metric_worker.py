"""One rank of the DDP metric exactness check (launched twice by tests/test_metrics_ddp.py).

Usage: python tests/_ddp_metric_worker.py RANK WORLD_SIZE PORT OUT_FILE
Every rank builds the same odd-sized validation set, takes its DistributedSampler shard (which pads by
repeating samples), updates camlab.wsol.WSOLMetrics batch by batch, reports (every rank: the gather is collective)
and rank 0 saves the result. WORLD_SIZE 1 runs without a process group: the single-process value.
"""

import os
import sys

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

sys.path.insert(0, os.path.dirname(__file__))
from _wsol_maps import make_dataset  # noqa: E402

from camlab.faith import FaithfulnessMetrics  # noqa: E402
from camlab.wsol import WSOLMetrics  # noqa: E402

N = 41  # odd: DistributedSampler pads 2 ranks to 42 by repeating a sample


class RowModel(torch.nn.Module):
    """Logits from per-image elementwise sums: each image's value does not depend on its batch (bitwise)."""

    def forward(self, x):
        w = torch.linspace(-1, 1, x[0].numel(), dtype=x.dtype).reshape(x.shape[1:])
        s = (x * w).sum(dim=(1, 2, 3))
        return torch.stack([s, -s, 0.5 * s, -0.5 * s, 0.25 * s, 0 * s], dim=1)  # make_dataset's 6 classes


def images_of(index: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """(B, 3, H, W) inputs, each seeded by its dataset index."""
    return torch.stack([torch.randn(3, H, W, generator=torch.Generator().manual_seed(int(i)))
                        for i in index.tolist()])


def evaluate(indices: list[int], distinct_index: bool = False, faith: bool = True) -> dict:
    """Update WSOLMetrics over the given samples of the N-sample set, batches of 4; report.

    ``distinct_index`` labels each update position with its own index, so repeated samples count twice."""
    data = make_dataset(n=N, seed=5, fit=True)
    metrics = WSOLMetrics(cam_thresholds=0.02, masks=True, topk=(1, 5), pointing=True)
    faith_metrics = FaithfulnessMetrics(steps=4, road_percents=(25, 75), chunk=5) if faith else None
    model = RowModel()
    for s in range(0, len(indices), 4):
        idx = torch.tensor(indices[s : s + 4])
        batch = {k: v[idx] for k, v in data.items()}
        if distinct_index:
            batch["index"] = torch.arange(s, s + len(idx))
        metrics.update(**batch)
        if faith_metrics is not None:
            cams = batch["cams"]
            faith_metrics.update(model, images_of(idx, *cams.shape[-2:]), cams, batch["labels"], batch["index"])
    report = metrics.report()  # one gather of the rows of every rank
    results = metrics.compute()
    if faith_metrics is not None:
        faith_report = faith_metrics.report()
        results.update({f"faith/{k}": torch.tensor(v, dtype=torch.float64) for k, v in faith_report.scalars.items()})
        report.add_columns(faith_report.rows["index"], faith_report.columns())
    rows = {k: torch.from_numpy(v.copy()) for k, v in report.rows.items()}  # tensors: torch.load(weights_only)
    return {"results": results, "curves": report.curves, "rows": rows, "per_image": report.per_image(),
            "seen": len(indices)}


def main() -> None:
    rank, world, port, out_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        sampler = DistributedSampler(range(N), num_replicas=world, rank=rank, shuffle=True, seed=3)
        indices = list(sampler)
    else:
        indices = list(range(N))
    result = evaluate(indices)
    if rank == 0:
        torch.save(result, out_file)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
