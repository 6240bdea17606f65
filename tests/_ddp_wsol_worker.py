"""One rank of the WSOL-methods DDP check (launched twice by tests/test_ddp_train.py).

Usage: python tests/_ddp_wsol_worker.py RANK PORT OUT METHOD [METHOD ...]. Both ranks set the variables of an
externally launched job (so Lightning starts no process of its own) and train every METHOD in turn, in one
2-process gloo group, through ``camlab.train.train`` with ``trainer=ddp``: one process start-up for all methods
instead of one per job. Each run writes, per rank, under ``OUT/<method>/``: the pixels of each training batch that
reached the backbone as exactly 0 (HaS's hidden cells: no normalized synthetic pixel is 0), with the epoch and batch
index, and the parameters after training (DDP keeps them equal on both ranks).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import lightning.pytorch as L
import torch

# test-sized runs: 2 training batches of 8 images of 32 px per rank, one short validation
ARGS = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "debug=limit", "trainer.max_epochs=1",
        "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "+trainer.enable_checkpointing=false",
        "test=false", "data.image_size=32", "backbone.width=4", "data.num_train=64", "data.num_val=16",
        "data.batch_size=8", "logger=csv", "callbacks=[cam_localization]", "callbacks.cam_localization.num_overlays=0",
        "callbacks.cam_localization.write_curves=false", "+callbacks.seen._target_=_ddp_wsol_worker.SeenZeros"]


class SeenZeros(L.Callback):
    """Test-only: records, per training batch, which input pixels are 0 in every channel; saves them and the
    trained parameters in the run's output dir at the end of the fit (one file each per rank)."""

    def on_fit_start(self, trainer, pl_module):
        self.rows, self.step = [], None
        self.handle = pl_module.backbone.register_forward_pre_hook(self._seen)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.step = (trainer.current_epoch, batch_idx)

    def _seen(self, module, args):
        if module.training and self.step is not None:
            self.rows.append((*self.step, (args[0] == 0).all(dim=1)))  # (B, H, W)
            self.step = None

    def on_fit_end(self, trainer, pl_module):
        self.handle.remove()
        out = Path(pl_module.run_config["paths"]["output_dir"])
        rank = trainer.global_rank
        torch.save(self.rows, out / f"seen_zeros_rank{rank}.pt")
        params = {k: v.detach().clone() for k, v in pl_module.named_parameters()}
        torch.save(params, out / f"params_rank{rank}.pt")


def main(rank: int, port: int, out: Path, methods: list[str]) -> None:
    os.environ.update(LOCAL_RANK=str(rank), NODE_RANK="0", WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    from _tiny_checkpoint import composed
    from camlab.train import train

    for method in methods:
        run_dir = out / method
        run_dir.mkdir(parents=True, exist_ok=True)
        metrics = train(composed("train", [*ARGS, f"wsol={method}"], run_dir))
        print(f"rank {rank} {method} train/loss {metrics.get('train/loss')}", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:])
