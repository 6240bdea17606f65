"""Framework overhead of the default experiment's training loop: Lightning (as camlab-train runs it) vs plain PyTorch.

Both loops train the same model (the default config's backbone and head) on the same data loader with the same
optimizer and scheduler; validation is off in both so only the training loop is compared. The two are run
alternately, several rounds, in one process, and the ratio of medians is reported (the machine is shared and
noisy: compare within one run only).

    python benchmarks/bench_train.py [--epochs 2] [--rounds 3] [overrides ...]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from hydra.utils import instantiate


def build(overrides: list[str], out_dir: str):
    with initialize_config_module("camlab.conf", version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=False)
    cfg.paths.output_dir = out_dir
    cfg.paths.checkpoint_dir = out_dir + "/checkpoints"
    return cfg


def lightning_epochs(cfg, epochs: int) -> tuple[float, int]:
    import lightning.pytorch as L

    from camlab.utils import instantiate_group

    torch.manual_seed(0)
    dm = instantiate(cfg.data, _convert_="partial")
    model = instantiate(cfg.model, _convert_="partial")
    callbacks = [c for c in instantiate_group(cfg.callbacks) if "CAMLocalization" not in type(c).__name__]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=instantiate_group(cfg.logger),
                                     max_epochs=epochs, limit_val_batches=0, enable_model_summary=False)
    start = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    elapsed = time.perf_counter() - start
    return elapsed, epochs * len(dm.train_dataloader().dataset)


def plain_epochs(cfg, epochs: int) -> tuple[float, int]:
    torch.manual_seed(0)
    dm = instantiate(cfg.data, _convert_="partial")
    dm.setup("fit")
    model = instantiate(cfg.model, _convert_="partial")
    loader = dm.train_dataloader()
    groups = [{"params": list(model.backbone.parameters())}, {"params": list(model.head.parameters())}]
    opt = instantiate(cfg.model.optimizer)(groups)
    steps = epochs * len(loader)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups],
                                                total_steps=steps, pct_start=cfg.model.scheduler.pct_start)
    model.train()
    start = time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            out = model(batch["image"])
            loss = F.cross_entropy(out["logits"], batch["label"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    elapsed = time.perf_counter() - start
    return elapsed, epochs * len(loader.dataset)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = build(["callbacks=default", *args.overrides], tmp)
        pl_rates, plain_rates = [], []
        for r in range(args.rounds):
            t, n = plain_epochs(cfg, args.epochs)
            plain_rates.append(n / t)
            t, n = lightning_epochs(cfg, args.epochs)
            pl_rates.append(n / t)
            print(f"round {r}: plain {plain_rates[-1]:.0f} img/s   lightning {pl_rates[-1]:.0f} img/s", flush=True)
    p, lt = statistics.median(plain_rates), statistics.median(pl_rates)
    print(f"\nthreads={torch.get_num_threads()}  plain PyTorch {p:.0f} img/s  camlab/Lightning {lt:.0f} img/s  "
          f"overhead {100 * (p / lt - 1):+.1f}%")


if __name__ == "__main__":
    main()
