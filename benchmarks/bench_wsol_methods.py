"""Cost of one training step of each WSOL method (``wsol=...``) relative to vanilla CAM, on the CPU.

A step is what ``CAMClassifier.training_step`` costs without Lightning around it: the method's
``training_loss`` (the data-side change of the batch, the forward pass, the method's heads and losses, the step's
generators), ``backward`` and an AdamW step, on a fixed batch of the synthetic data already in memory. Each
backbone gets one model per method, built from the same seed; the methods run interleaved, in a new random order
every round, ``--steps`` steps each per round (after warm-up steps), so a busy machine slows every method alike;
the table gives each method's median step time over the rounds and its ratio to CAM's median.

    python benchmarks/bench_wsol_methods.py [--rounds 15] [--steps 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from camlab.data import SyntheticShapes
from camlab.methods import METHODS
from camlab.models import CAMClassifier
from camlab.models.backbones import create_backbone

# (backbone, its options, image size, batch size)
SETUPS = [("tiny_cnn", {"width": 16}, 64, 64), ("resnet18", {}, 64, 32)]


def build(name: str, options: dict, method: str, classes: int) -> tuple[CAMClassifier, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = CAMClassifier(create_backbone(name, **options), num_classes=classes, wsol={"name": method})
    model.train()
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3)


def step(model: CAMClassifier, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor,
         index: int) -> None:
    rng = model.step_random(index, images.device) if model.wsol_method.random else None
    loss, _ = model.wsol_method.training_loss(model, images, labels, rng)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.rounds} rounds x {args.steps} steps\n")
    print("| backbone | input, batch | method | median step (ms) | relative to cam |")
    print("|---|---|---|---|---|")
    for name, options, size, bs in SETUPS:
        data = SyntheticShapes(split="train", length=bs, num_classes=5, image_size=size, seed=0)
        images = torch.stack([data[i]["image"] for i in range(bs)])
        labels = torch.tensor([int(data[i]["label"]) for i in range(bs)])
        runs = {m: build(name, options, m, 5) for m in METHODS}
        times: dict[str, list[float]] = {m: [] for m in METHODS}
        for m, (model, opt) in runs.items():
            for i in range(args.warmup):
                step(model, opt, images, labels, i)
        order = list(METHODS)
        for r in range(args.rounds):
            random.Random(r).shuffle(order)
            for m in order:
                model, opt = runs[m]
                t0 = time.perf_counter()
                for i in range(args.steps):
                    step(model, opt, images, labels, r * args.steps + i)
                times[m].append((time.perf_counter() - t0) / args.steps)
        base = statistics.median(times["cam"])
        for m in METHODS:
            med = statistics.median(times[m])
            print(f"| {name} | {size} px, {bs} | {m} | {1000 * med:.1f} | {med / base:.2f} |")


if __name__ == "__main__":
    main()
