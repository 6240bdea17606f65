"""Framework overhead of the default experiment's training loop: Lightning (as camlab-train runs it) vs plain PyTorch.

Both loops train the same model (the default config's backbone and head) on the same data loader with the same
optimizer, scheduler (stepped every batch), loss and batch size, in one process with the same thread count and
the process settings camlab-train applies (``camlab.runtime.process.configure_process``: glibc malloc tuning, matmul
precision). Both compute the training accuracy every step and keep the epoch's loss/accuracy sums (camlab logs
``train/acc`` per epoch), and the plain loop reads the loss every ``trainer.log_every_n_steps`` steps (camlab's
CSV rows). Lightning runs the default callbacks (Rich progress bar drawing 5 times a second into a terminal,
here /dev/null, checkpointing, LR monitor, resume state) and the CSV logger. Validation is off in both, so only
the training loop is compared; only the epochs are timed (not set-up, dataset rendering, or the checkpoint
written after the epoch).

The two loops run alternately, several rounds, in one process, on one datamodule (the machine is shared and
noisy: compare within one run only). Reported per round: images/s of each (epoch wall time), their ratio, the
median step time (batch fetch to batch fetch) and page faults per step; at the end the median of the per-round
ratios, and the ratio of the best rounds (other processes only ever slow a round down, so on a busy machine the
fastest round of each loop is the least disturbed estimate of its own cost).

    python benchmarks/bench_train.py [--epochs 1] [--rounds 8] [--no-tune-malloc] [overrides ...]

``--no-tune-malloc`` runs both loops with glibc's default malloc settings (``tune_malloc=false``), the state
before camlab set them (benchmarks/TRAIN_NOTES.md).
"""

from __future__ import annotations

import argparse
import os
import resource
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


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class StepClock:
    """Wall time and page-fault count at the start of every step."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, int]] = []

    def mark(self) -> None:
        self.marks.append((time.perf_counter(), _faults()))

    def step_stats(self, skip: int = 2) -> tuple[float, float]:
        """Median step time (s) and median page faults per step, the first ``skip`` steps left out."""
        m = self.marks[skip:]
        dt = [b[0] - a[0] for a, b in zip(m, m[1:])]
        df = [b[1] - a[1] for a, b in zip(m, m[1:])]
        return statistics.median(dt), statistics.median(df)


def lightning_epochs(cfg, dm, epochs: int, terminal) -> tuple[float, int, StepClock]:
    import lightning.pytorch as L

    clock, span = StepClock(), {"total": 0.0}

    class _Timer(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            span["start"] = time.perf_counter()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            clock.mark()

        def on_train_epoch_end(self, trainer, pl_module):
            span["total"] += time.perf_counter() - span["start"]

    torch.manual_seed(0)
    model = instantiate(cfg.model, _convert_="partial")
    callbacks = []
    for name, node in cfg.callbacks.items():
        if name == "cam_localization":  # validation is off: nothing to localize
            continue
        if name == "rich_progress_bar":  # drawn as into a terminal, at the configured refresh rate
            callbacks.append(instantiate(node, console_kwargs={"force_terminal": True, "file": terminal}))
        else:
            callbacks.append(instantiate(node, _convert_="partial"))
    from camlab.runtime.config import instantiate_group

    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=[*callbacks, _Timer()],
                                     logger=instantiate_group(cfg.logger), max_epochs=epochs, limit_val_batches=0,
                                     enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    return span["total"], epochs * len(dm.train_dataloader().dataset), clock


def plain_epochs(cfg, dm, epochs: int) -> tuple[float, int, StepClock]:
    torch.manual_seed(0)
    model = instantiate(cfg.model, _convert_="partial")
    loader = dm.train_dataloader()
    groups = [{"params": [p for p in model.backbone.parameters() if p.requires_grad], "name": "backbone"},
              {"params": list(model.head.parameters()), "name": "head"}]
    opt = instantiate(cfg.model.optimizer)(groups)
    steps = epochs * len(loader)
    sched = instantiate(cfg.model.scheduler)(opt, total_steps=steps, max_lr=[g["lr"] for g in opt.param_groups])
    every = cfg.trainer.log_every_n_steps
    clock, history, step = StepClock(), [], 0
    model.train()
    start = time.perf_counter()
    for _ in range(epochs):
        loss_sum = acc_sum = torch.zeros(())
        seen = 0
        for batch in loader:
            clock.mark()
            images, labels = batch["image"], batch["label"]
            out = model(images)
            loss = F.cross_entropy(out["logits"], labels, label_smoothing=cfg.model.label_smoothing)
            acc = (out["logits"].detach().argmax(dim=1) == labels).float().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bs = labels.shape[0]
            loss_sum, acc_sum, seen = loss_sum + loss.detach() * bs, acc_sum + acc * bs, seen + bs
            step += 1
            if step % every == 0:
                history.append((step, loss.item()))
        history.append((step, float(loss_sum / seen), float(acc_sum / seen)))
    elapsed = time.perf_counter() - start
    return elapsed, epochs * len(loader.dataset), clock


def warm_up(cfg, dm, steps: int = 5) -> None:
    """A few untimed steps, so one-time costs (oneDNN kernels, thread pool, allocator) fall on neither loop."""
    model = instantiate(cfg.model, _convert_="partial")
    opt = instantiate(cfg.model.optimizer)(model.parameters())
    for _, batch in zip(range(steps), dm.train_dataloader()):
        F.cross_entropy(model(batch["image"])["logits"], batch["label"]).backward()
        opt.step()
        opt.zero_grad()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--no-tune-malloc", action="store_true", help="glibc's default malloc settings (tune_malloc=false)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    from camlab.runtime.process import configure_process

    with tempfile.TemporaryDirectory() as tmp, open(os.devnull, "w") as terminal:
        cfg = build(["callbacks=default", f"tune_malloc={not args.no_tune_malloc}", *args.overrides], tmp)
        configure_process(cfg)  # what camlab-train does first (process-wide: applies to both loops)
        print(f"load average at start {os.getloadavg()[0]:.2f}; threads={torch.get_num_threads()}; "
              f"tune_malloc={cfg.tune_malloc}", flush=True)
        # One datamodule for every run: the same rendered images; each train loader re-seeds its shuffle order.
        dm = instantiate(cfg.data, _convert_="partial")
        dm.setup("fit")
        warm_up(cfg, dm)
        pl_rates, plain_rates, ratios, step_ratios = [], [], [], []
        for r in range(args.rounds):
            # Alternate which loop goes first: the machine is shared and its speed drifts between runs.
            order = ("plain", "lightning") if r % 2 == 0 else ("lightning", "plain")
            res = {}
            for which in order:
                t, n, clock = plain_epochs(cfg, dm, args.epochs) if which == "plain" else lightning_epochs(
                    cfg, dm, args.epochs, terminal)
                res[which] = (n / t, *clock.step_stats())
            (p, ps, pf), (lt, ls, lf) = res["plain"], res["lightning"]
            plain_rates.append(p)
            pl_rates.append(lt)
            ratios.append(p / lt)
            step_ratios.append(ls / ps)
            print(f"round {r}: plain {p:.0f} img/s (step {1e3 * ps:.1f} ms, {pf:.0f} faults)   "
                  f"lightning {lt:.0f} img/s (step {1e3 * ls:.1f} ms, {lf:.0f} faults)   "
                  f"overhead {100 * (ratios[-1] - 1):+.1f}% (steps {100 * (step_ratios[-1] - 1):+.1f}%)", flush=True)
    p, lt = statistics.median(plain_rates), statistics.median(pl_rates)
    bp, bl = max(plain_rates), max(pl_rates)
    epoch_pct, step_pct = 100 * (statistics.median(ratios) - 1), 100 * (statistics.median(step_ratios) - 1)
    print(f"\nplain PyTorch {p:.0f} img/s  camlab/Lightning {lt:.0f} img/s (medians); median per-round overhead "
          f"{epoch_pct:+.1f}% (epoch time), {step_pct:+.1f}% (median step)\n"
          f"best rounds (least disturbed by other processes): plain {bp:.0f} img/s, camlab/Lightning {bl:.0f} img/s, "
          f"overhead {100 * (bp / bl - 1):+.1f}%; load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
