"""MaxBoxAccV2 + PxAP on N CAMs at 224x224 (100-point grid): camlab's metrics vs a plain loop.

    python benchmarks/bench_metrics.py [--n 1000] [--rounds 5] [--parallel] [--size 224] [--kind bench]
                                       [--dtype float32]

``--kind`` picks the maps: ``bench`` (default; the smooth blobs of :func:`make_data`) or a kind of
``map_kinds.py`` (blobs, components, noise, rings, lines, ties, border, rectangles, special; 1-3 GT boxes and
masks with ignore pixels) or ``mix`` (all of them in equal shares), in ``--dtype``. For the comparison with
wsolevaluation's own evaluator code, per kind, see ``bench_wsoleval.py``.

The plain loop is the obvious per-image, per-threshold procedure (wsoleval's): uint8 map, cv2 threshold,
tree-mode findContours, boundingRect per contour, inclusive IoU, then per-image float64 histograms for
PxAP. camlab's side is ``WSOLMetrics(max_box_acc=False, masks=True, topk=())`` (MaxBoxAccV2 + PxAP, maps
converted once per batch), fed in batches of 64. Results must be identical (asserted every round).

The machine may be shared, so both are timed in every round, in alternating order, and the reported
figure is the median of the per-round ratios (with their range); wall-clock times and the load average
are printed too. Memory is that of the metric states after N images.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from camlab.wsol import WSOLMetrics, threshold_grid


def make_data(n: int, size: int = 224, seed: int = 0):
    """Smooth random blob maps (a few Gaussians on a 14x14 grid, upsampled), boxes and masks."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(14.0), torch.arange(14.0), indexing="ij")
    low = torch.zeros(n, 14, 14)
    for _ in range(3):
        c = torch.rand(n, 2, generator=g) * 14
        s = 1 + 3 * torch.rand(n, 1, 1, generator=g)
        a = torch.rand(n, 1, 1, generator=g)
        low += a * torch.exp(-((yy - c[:, 0, None, None]) ** 2 + (xx - c[:, 1, None, None]) ** 2) / (2 * s**2))
    low += 0.05 * torch.rand(n, 14, 14, generator=g)
    cams = F.interpolate(low[:, None], (size, size), mode="bilinear", align_corners=False)[:, 0]
    lo = cams.flatten(1).min(1).values[:, None, None]
    hi = cams.flatten(1).max(1).values[:, None, None]
    cams = (cams - lo) / (hi - lo)
    xy0 = torch.rand(n, 1, 2, generator=g) * size * 0.6
    wh = size * (0.15 + 0.35 * torch.rand(n, 1, 2, generator=g))
    boxes = torch.cat([xy0, (xy0 + wh).clamp(max=size)], dim=2)  # (n, 1, 4)
    pix = torch.arange(size) + 0.5
    inx = (pix[None, :] >= boxes[:, 0, 0, None]) & (pix[None, :] < boxes[:, 0, 2, None])  # (n, W)
    iny = (pix[None, :] >= boxes[:, 0, 1, None]) & (pix[None, :] < boxes[:, 0, 3, None])
    masks = (iny[:, :, None] & inx[:, None, :]).to(torch.uint8)
    masks[:, :4] = 255  # an ignore strip
    return cams, boxes, torch.ones(n, dtype=torch.long), masks


def plain_loop(cams: np.ndarray, boxes: np.ndarray, masks: np.ndarray, grid: np.ndarray, num: np.ndarray):
    """The obvious per-image, per-threshold implementation. Returns (MaxBoxAccV2 parts, curves, PxAP)."""
    n, H, W = cams.shape
    ious = (30, 50, 70)
    correct = {k: np.zeros(len(grid)) for k in ious}
    edges = np.append(grid, [1.0, 2.0, 3.0])
    fg_hist = np.zeros(len(edges) - 1)
    bg_hist = np.zeros(len(edges) - 1)
    for i in range(n):
        u8 = (cams[i] * 255).astype(np.uint8)
        gt = boxes[i, : num[i]].astype(np.float64).astype(np.int64)  # int() truncation
        best_per_thr = np.zeros(len(grid))
        for j, t in enumerate(grid):
            _, binary = cv2.threshold(u8, int(t * u8.max()), 255, cv2.THRESH_BINARY)
            contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
            pred = []
            for c in contours:
                x, y, w, h = cv2.boundingRect(c)
                pred.append([x, y, min(x + w, W - 1), min(y + h, H - 1)])
            pred = np.array(pred if pred else [[0, 0, 0, 0]])
            a, b = pred[:, None, :], gt[None, :, :]
            iw = np.maximum(0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1)
            ih = np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1)
            inter = iw * ih
            union = ((a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
                     + (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1) - inter)
            best_per_thr[j] = np.where(union > 0, inter / np.maximum(union, 1), 0).max()
        for k in ious:
            correct[k][best_per_thr >= k / 100] += 1
        s = cams[i].astype(np.float64)
        fg_hist += np.histogram(s[masks[i] == 1], bins=edges)[0]
        bg_hist += np.histogram(s[masks[i] == 0], bins=edges)[0]
    curves = {k: correct[k] * 100.0 / n for k in ious}
    tp, fp = fg_hist[::-1].cumsum(), bg_hist[::-1].cumsum()
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = tp / (tp + fp)
    recall = tp / fg_hist.sum()
    keep = (tp + fp) != 0
    pxap = (precision[1:] * np.diff(recall))[keep[1:]].sum() * 100
    return {k: curves[k].max() for k in ious}, curves, pxap


def fast(cams, boxes, num, masks, grid, parallel=False, batch=64):
    wm = WSOLMetrics(grid, (30, 50, 70), max_box_acc=False, masks=True, topk=(), gt_known=False, parallel=parallel)
    for s in range(0, cams.shape[0], batch):
        sl = slice(s, min(s + batch, cams.shape[0]))  # views, as a callback gets its batch tensors
        wm.update(cams[sl], boxes=boxes[sl], num_boxes=num[sl], masks=masks[sl], index=torch.arange(sl.start, sl.stop))
    report = wm.report()
    out = {k: torch.tensor(v, dtype=torch.float64) for k, v in report.scalars.items()}
    out.update({k.replace("/IoU", "/curve/IoU"): torch.tensor(v, dtype=torch.float64) for k, v in report.curves.items()
                if k.startswith("MaxBoxAccV2/")})
    state_bytes = sum(t.numel() * t.element_size() for name in wm.state_names for t in getattr(wm, name))
    return out, state_bytes


def check_identical(out, best, curves, pxap) -> None:
    for k in (30, 50, 70):
        assert out[f"MaxBoxAccV2/IoU{k}"].item() == best[k], k
        assert np.array_equal(out[f"MaxBoxAccV2/curve/IoU{k}"].numpy(), curves[k]), k
    assert out["MaxBoxAccV2"].item() == np.mean([best[k] for k in (30, 50, 70)])
    assert out["PxAP"].item() == pxap


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=5, help="rounds, each timing both paths (alternating order)")
    ap.add_argument("--parallel", action="store_true", help="numba threads over the images of a batch")
    ap.add_argument("--kind", default="bench", help="bench (default), a kind of map_kinds.py, or mix")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="of the map_kinds maps")
    args = ap.parse_args()
    grid = threshold_grid(0.01)
    if args.kind == "bench":
        cams, boxes, num, masks = make_data(args.n, args.size)
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from map_kinds import KINDS, make_kind, make_mix

        if args.kind not in (*KINDS, "mix"):
            ap.error(f"--kind must be bench, mix or one of {', '.join(KINDS)}")
        dtype = np.dtype(args.dtype)
        d = (make_mix(max(1, args.n // len(KINDS)), args.size, dtype) if args.kind == "mix"
             else make_kind(args.kind, args.n, args.size, dtype))
        cams, boxes, num, masks = (torch.from_numpy(a) for a in (d.maps, d.boxes, d.num_boxes, d.masks))
        args.n = len(d)
    fast(cams[:2], boxes[:2], num[:2], masks[:2], grid, args.parallel)  # JIT / cache load outside timing
    np_args = (cams.numpy(), boxes.numpy(), masks.numpy(), grid, num.numpy())

    t_plain, t_fast, ratios = [], [], []
    for r in range(args.rounds):
        order = ("plain", "fast") if r % 2 == 0 else ("fast", "plain")
        for which in order:
            t0 = time.perf_counter()
            if which == "plain":
                best, curves, pxap = plain_loop(*np_args)
                t_plain.append(time.perf_counter() - t0)
            else:
                out, state_bytes = fast(cams, boxes, num, masks, grid, args.parallel)
                t_fast.append(time.perf_counter() - t0)
        check_identical(out, best, curves, pxap)
        ratios.append(t_plain[-1] / t_fast[-1])
        print(f"round {r} ({order[0]} first): plain {t_plain[-1] / args.n * 1e3:.3f} ms/img, camlab "
              f"{t_fast[-1] / args.n * 1e3:.3f} ms/img, ratio {ratios[-1]:.1f}x, "
              f"load {os.getloadavg()[0]:.2f}", flush=True)

    n = args.n
    print(f"\nimages: {n} x {args.size}x{args.size} ({args.kind}, {cams.dtype}), thresholds: {len(grid)}, "
          f"numba threads: {'on' if args.parallel else 'off'}, torch threads: {torch.get_num_threads()}")
    print(f"MaxBoxAccV2 = {out['MaxBoxAccV2'].item():.4f} (IoU30/50/70 = "
          f"{best[30]:.1f}/{best[50]:.1f}/{best[70]:.1f}), PxAP = {pxap:.4f}: identical in both paths, every round")
    print(f"plain loop : median {statistics.median(t_plain) / n * 1e3:7.3f} ms/image")
    print(f"camlab     : median {statistics.median(t_fast) / n * 1e3:7.3f} ms/image")
    print(f"speed-up   : median of per-round ratios {statistics.median(ratios):.1f}x "
          f"(range {min(ratios):.1f}x - {max(ratios):.1f}x over {args.rounds} rounds)")
    print(f"metric state: {state_bytes / 1e6:.3f} MB for {n} images "
          f"({state_bytes / n * 1000 / 1e6:.3f} MB per 1,000 images)")


if __name__ == "__main__":
    main()
