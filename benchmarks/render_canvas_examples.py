"""Render .github/assets/fashion_canvas_examples.png: MNISTCanvas samples with their boxes, one row per class.

Usage: python benchmarks/render_canvas_examples.py [--root /usr/share/datasets/fashion-mnist] [--dataset fashion_mnist]
       [--image-size 48] [--out .github/assets/fashion_canvas_examples.png]
The default image size is experiment=fashion_canvas's (48 px); canvases are upsampled to ~128 px for legibility.
Rows are classes (8 samples each); the last row shows max_items=3 canvases. Boxes are red; the mask's
outline is drawn in green on the last column of each row.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw

from camlab.data.canvas import MNISTCanvas

SHOWN = 128  # canvases are upsampled by an integer factor to about this many pixels
PAD = 4


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--dataset", default="fashion_mnist")
    ap.add_argument("--out", default=".github/assets/fashion_canvas_examples.png")
    ap.add_argument("--per-class", type=int, default=8)
    ap.add_argument("--image-size", type=int, default=48)
    args = ap.parse_args()

    P = args.per_class
    size = dict(dataset=args.dataset, image_size=args.image_size, hflip=False)
    ds = MNISTCanvas(args.root, "val", length=400, **size)
    multi = MNISTCanvas(args.root, "val", length=P, max_items=3, seed=1, **size)
    SCALE = max(1, round(SHOWN / args.image_size))
    labels = ds.labels.tolist()
    rows = [[i for i, c in enumerate(labels) if c == k][:P] for k in range(10)]
    S = ds.image_size * SCALE
    label_w = 110
    canvas = Image.new("RGB", (label_w + P * (S + PAD), 11 * (S + PAD)), "white")
    draw = ImageDraw.Draw(canvas)

    def paste(src: MNISTCanvas, i: int, x: int, y: int, outline: bool) -> None:
        rgb = src.images[i].permute(1, 2, 0).numpy()  # H×W×3 uint8 (the un-normalized cache)
        big = np.ascontiguousarray(cv2.resize(rgb, (S, S), interpolation=cv2.INTER_NEAREST))
        if outline:  # the mask's outline, to show that clutter is not in it
            m = cv2.resize(src.instances[i].numpy(), (S, S), interpolation=cv2.INTER_NEAREST)
            contours, _ = cv2.findContours((m > 0).astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(big, contours, -1, (0, 255, 0), 1)
        canvas.paste(Image.fromarray(big), (x, y))
        for x0, y0, x1, y1 in src.boxes[i, : src.num_boxes[i]].tolist():
            draw.rectangle([x + x0 * SCALE, y + y0 * SCALE, x + x1 * SCALE - 1, y + y1 * SCALE - 1], outline=(255, 0, 0))

    for k, idxs in enumerate(rows):
        y = k * (S + PAD)
        draw.text((4, y + S // 2 - 6), ds.class_names[k], fill="black")
        for j, i in enumerate(idxs):
            paste(ds, i, label_w + j * (S + PAD), y, outline=j == len(idxs) - 1)
    y = 10 * (S + PAD)
    draw.text((4, y + S // 2 - 6), "max_items=3", fill="black")
    for j in range(P):
        paste(multi, j, label_w + j * (S + PAD), y, outline=j == P - 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
