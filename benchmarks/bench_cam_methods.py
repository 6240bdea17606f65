"""Cost of each CAM method per validation batch, relative to the forward pass that produced the features.

Times ``compute_cams`` (raw maps of the ground-truth class) for every method in
:data:`camlab.cam_methods.METHODS` on the features of one batch, under ``torch.inference_mode()`` as in
Lightning's validation loop, and the model's forward pass on the same batch. Methods are run in a rotating
order for several rounds in one process; the report is the median per method and its ratio to the median
forward pass.

    python benchmarks/bench_cam_methods.py [--rounds 20] [--batch 64] [--backbone tiny_cnn] [--size 64] [--width 16]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from camlab.cam_methods import METHODS, compute_cams
from camlab.models import CAMClassifier
from camlab.models.backbones import create_backbone


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--backbone", default="tiny_cnn")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--classes", type=int, default=5)
    ap.add_argument("--width", type=int, default=16, help="tiny_cnn only: base width (the config's 16 -> K = 64)")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = CAMClassifier(create_backbone(args.backbone, pretrained=False,
                                                   **({"width": args.width} if args.backbone == "tiny_cnn" else {})), num_classes=args.classes).eval()
    images = torch.randn(args.batch, 3, args.size, args.size)
    labels = torch.randint(0, args.classes, (args.batch,))
    jobs = {"forward": lambda: model(images)}
    with torch.inference_mode():
        features = model(images)["features"]
    for m in METHODS:
        jobs[m] = lambda m=m: compute_cams(model, features, labels, m)
    times: dict[str, list[float]] = {k: [] for k in jobs}
    names = list(jobs)
    with torch.inference_mode():
        for name in names:  # warm-up
            jobs[name]()
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[: r % len(names)]:  # rotate the order every round
                t0 = time.perf_counter()
                jobs[name]()
                times[name].append(time.perf_counter() - t0)
    fwd = statistics.median(times["forward"])
    print(f"{args.backbone}, batch {args.batch} at {args.size} px, features {tuple(features.shape[1:])}, "
          f"{args.rounds} rounds, {torch.get_num_threads()} threads")
    print(f"{'':12s}{'median ms':>10s}{'x forward':>11s}")
    for name in names:
        med = statistics.median(times[name])
        print(f"{name:12s}{med * 1e3:10.3f}{med / fwd:11.3f}")


if __name__ == "__main__":
    main()
