"""Render .github/assets/synthetic_examples.png: a grid of SyntheticShapes samples with their boxes and masks.

Usage: python benchmarks/render_synthetic_examples.py [--out .github/assets/synthetic_examples.png]
Rows are classes; the last row shows max_objects=3 samples and the mask outline of one sample.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from camlab.data import SyntheticShapes

SCALE = 3  # upsample 64 px images for legibility
PAD = 4


def to_rgb(ds: SyntheticShapes, i: int) -> np.ndarray:
    return ds.images[i].permute(1, 2, 0).numpy()  # H×W×3 uint8, un-normalized cache


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".github/assets/synthetic_examples.png")
    ap.add_argument("--num-classes", type=int, default=10)
    ap.add_argument("--per-class", type=int, default=8)
    args = ap.parse_args()

    K, P = args.num_classes, args.per_class
    ds = SyntheticShapes("val", length=K * P, num_classes=K, seed=0, hflip=False)
    multi = SyntheticShapes("val", length=P, num_classes=K, seed=1, max_objects=3, hflip=False)
    S = ds.image_size * SCALE
    rows = [[ds.labels.tolist().index(k) + K * j for j in range(P)] for k in range(K)]
    label_w = 150
    canvas = Image.new("RGB", (label_w + P * (S + PAD), (K + 1) * (S + PAD)), "white")
    draw = ImageDraw.Draw(canvas)

    def paste(src: SyntheticShapes, i: int, x: int, y: int) -> None:
        tile = Image.fromarray(to_rgb(src, i)).resize((S, S), Image.NEAREST)
        canvas.paste(tile, (x, y))
        for x0, y0, x1, y1 in src.boxes[i, : src.num_boxes[i]].tolist():
            # continuous-convention box: the outline's pixels lie just inside [x0, x1) after scaling
            draw.rectangle([x + x0 * SCALE, y + y0 * SCALE, x + x1 * SCALE - 1, y + y1 * SCALE - 1], outline=(255, 0, 0))

    for k, idxs in enumerate(rows):
        y = k * (S + PAD)
        draw.text((4, y + S // 2 - 6), ds.class_names[k], fill="black")
        for j, i in enumerate(idxs):
            paste(ds, i, label_w + j * (S + PAD), y)
    y = K * (S + PAD)
    draw.text((4, y + S // 2 - 6), "max_objects=3", fill="black")
    for j in range(P):
        paste(multi, j, label_w + j * (S + PAD), y)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
