"""Framework overhead of the default experiment's training loop: Lightning (as camlab-train runs it) vs plain PyTorch.

Both loops train the same model (the default config's backbone and head) on the same data loader with the same
optimizer and scheduler; validation is off in both so only the training loop is compared, and only the epochs
are timed (not setup or the one-off dataset rendering, which both pay equally). The two are run
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


class EpochTimer:
    """Wall time of the training epochs only (not setup, dataset rendering or teardown)."""

    def __init__(self) -> None:
        import lightning.pytorch as L

        timer = self

        class _Cb(L.Callback):
            def on_train_epoch_start(self, trainer, pl_module):
                timer.start = time.perf_counter()

            def on_train_epoch_end(self, trainer, pl_module):
                timer.total += time.perf_counter() - timer.start

        self.total = 0.0
        self.start = 0.0
        self.callback = _Cb()


def lightning_epochs(cfg, epochs: int) -> tuple[float, int]:
    import lightning.pytorch as L

    from camlab.utils import instantiate_group

    torch.manual_seed(0)
    dm = instantiate(cfg.data, _convert_="partial")
    model = instantiate(cfg.model, _convert_="partial")
    timer = EpochTimer()
    # The default callbacks (checkpointing, Rich progress bar, LR monitor) and CSV logger, without validation.
    callbacks = [c for c in instantiate_group(cfg.callbacks) if "CAMLocalization" not in type(c).__name__]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=[*callbacks, timer.callback],
                                     logger=instantiate_group(cfg.logger), max_epochs=epochs, limit_val_batches=0,
                                     enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    return timer.total, epochs * len(dm.train_dataloader().dataset)


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
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = build(["callbacks=default", *args.overrides], tmp)
        pl_rates, plain_rates, ratios = [], [], []
        for r in range(args.rounds):
            # Alternate which loop goes first: the machine is shared and its speed drifts between runs.
            order = ("plain", "lightning") if r % 2 == 0 else ("lightning", "plain")
            rates = {}
            for which in order:
                t, n = (plain_epochs if which == "plain" else lightning_epochs)(cfg, args.epochs)
                rates[which] = n / t
            plain_rates.append(rates["plain"])
            pl_rates.append(rates["lightning"])
            ratios.append(rates["plain"] / rates["lightning"])
            print(f"round {r}: plain {rates['plain']:.0f} img/s   lightning {rates['lightning']:.0f} img/s   "
                  f"ratio {ratios[-1]:.3f}", flush=True)
    p, lt = statistics.median(plain_rates), statistics.median(pl_rates)
    print(f"\nthreads={torch.get_num_threads()}  plain PyTorch {p:.0f} img/s  camlab/Lightning {lt:.0f} img/s  "
          f"(medians); median per-round overhead {100 * (statistics.median(ratios) - 1):+.1f}%")


if __name__ == "__main__":
    main()
