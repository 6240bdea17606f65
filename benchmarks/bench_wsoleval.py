"""MaxBoxAccV2 + PxAP per map kind: camlab's metrics vs wsolevaluation's own evaluator code, identical numbers asserted.

    pip install munch   # imported by wsolevaluation's data_loaders.py
    git clone https://github.com/clovaai/wsolevaluation /path/to/wsolevaluation
    python benchmarks/bench_wsoleval.py --wsoleval /path/to/wsolevaluation            # default run: a few minutes
    python benchmarks/bench_wsoleval.py --wsoleval /path/to/wsolevaluation --quick    # under a minute
    options: --sizes 224 64 --dtypes float32 float64 --kinds blobs noise ... mix --rounds 3 --scale 2 --breakdown

For every map kind of ``map_kinds.py`` (blobs, components, noise, rings, lines, ties, border, rectangles, special)
and for their ``mix`` (all kinds in equal shares, shuffled), at each size and dtype, the same maps, GT boxes and
masks go to

* **wsoleval**: clovaai/wsolevaluation's ``BoxEvaluator`` (``multi_contour_eval=True``, IoU 30/50/70) and
  ``MaskEvaluator`` (PxAP), ``cam_curve_interval`` 0.01 (``np.arange(0, 1, 0.01)``), imported from the checkout
  given by ``--wsoleval`` and built without metadata files as ``crosscheck_wsoleval.py`` does; its evaluator takes
  float64 maps only, so float32 maps are upcast (exactly) before the timing; its ``get_mask`` is a dict lookup;
* **camlab**: :func:`camlab_scores`, the one adapter to camlab's metric classes (batches of 64, as a callback
  feeds them).

Every round asserts that the per-threshold correct counts of IoU 30/50/70 and PxAP are identical to the last digit
(a difference stops the run with the kind, the maps and the thresholds that differ). Each row runs ``--rounds``
rounds, the two sides in alternating order; it reports the median ms per image of each and the median of the
per-round ratios. Serial: numba threads off (the metric classes are serial by default; ``NUMBA_NUM_THREADS=1``),
one torch and one OpenCV thread. The per-kind image counts are sized so that wsoleval's side takes about half a
second per round (it needs seconds per rough 224 px map); ``--scale`` multiplies them.

``--breakdown`` times camlab's pieces per kind on the same data (uint8 conversion, the MaxBoxAccV2 kernel, PxAP
histograms, the aggregation) through ``camlab.wsol``'s public functions and counts OpenCV contours per threshold.
"""

from __future__ import annotations

import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from crosscheck_wsoleval import (  # noqa: E402
    load_wsoleval,
    wsoleval_box_evaluator,
    wsoleval_mask_evaluator,
    wsoleval_masks,
    wsoleval_pr_curves,
    wsoleval_pxap,
)
from map_kinds import KINDS, NOISE_VARIANTS, MapSet, make_kind, make_mix  # noqa: E402

IOUS = (30, 50, 70)
INTERVAL = 0.01
BATCH = 64

# Images per kind and size in one round (wsoleval about 0.5 s per round), and per kind in the mix.
COUNTS = {
    224: {"blobs": 64, "components": 40, "noise": 4, "rings": 32, "lines": 32, "ties": 24, "border": 40,
          "rectangles": 40, "special": 72, "mix": 4},
    64: {"blobs": 128, "components": 64, "noise": 8, "rings": 96, "lines": 64, "ties": 96, "border": 128,
         "rectangles": 128, "special": 144, "mix": 8},
}
QUICK = {
    224: {"blobs": 16, "components": 8, "noise": 2, "rings": 8, "lines": 8, "ties": 8, "border": 8,
          "rectangles": 8, "special": 18, "mix": 1},
    64: {"blobs": 32, "components": 16, "noise": 4, "rings": 16, "lines": 16, "ties": 16, "border": 32,
         "rectangles": 32, "special": 36, "mix": 2},
}


def camlab_scores(maps: np.ndarray, boxes: np.ndarray, num_boxes: np.ndarray, masks: np.ndarray,
                  index: np.ndarray) -> dict:
    """camlab's MaxBoxAccV2 (all contours, IoU 30/50/70) and PxAP of a set of maps, on the 0.01 grid.

    Args: maps (n, H, W) float32/float64 in [0, 1]; boxes (n, G, 4) float xyxy; num_boxes (n,); masks (n, H, W)
    uint8 (0, 1, 255 = ignore); index (n,) dataset index of each image. Fed in batches of 64 (views).
    Returns ``{"curve/IoU30": (T,), "curve/IoU50": ..., "curve/IoU70": ... (percent correct per CAM threshold),
    "PxAP": float}``, optionally ``"PxAP/precision"`` and ``"PxAP/recall"`` (T,) (precision 0 where nothing is
    predicted; only used to locate a PxAP difference in single maps). The one place this benchmark touches camlab's
    metric API.
    """
    from camlab.wsol import WSOLMetrics

    wm = WSOLMetrics(cam_thresholds=INTERVAL, iou_thresholds=IOUS, masks=True, max_box_acc=False, topk=(), gt_known=False)
    maps_t, boxes_t = torch.from_numpy(maps), torch.from_numpy(boxes)
    num_t, masks_t, index_t = torch.from_numpy(num_boxes), torch.from_numpy(masks), torch.from_numpy(index)
    for s in range(0, len(maps), BATCH):
        sl = slice(s, s + BATCH)
        wm.update(cams=maps_t[sl], boxes=boxes_t[sl], num_boxes=num_t[sl], masks=masks_t[sl], index=index_t[sl])
    report = wm.report()
    scalars, curves = report.scalars, report.curves
    out = {f"curve/IoU{k}": np.asarray(curves[f"MaxBoxAccV2/IoU{k}"], np.float64) for k in IOUS}
    out["PxAP"] = float(scalars["PxAP"])
    out.update({k: np.asarray(curves[k], np.float64) for k in ("PxAP/precision", "PxAP/recall") if k in curves})
    return out


def wsoleval_scores(E, maps64: np.ndarray, boxes: np.ndarray, num_boxes: np.ndarray, masks: np.ndarray) -> dict:
    """wsoleval's BoxEvaluator(multi_contour_eval=True) + MaskEvaluator; also the raw correct counts."""
    grid = np.arange(0, 1, INTERVAL)
    ev = wsoleval_box_evaluator(E, grid, IOUS, True, boxes, num_boxes)
    mev = wsoleval_mask_evaluator(E, grid)
    with wsoleval_masks(E, masks):
        for i, m in enumerate(maps64):
            ev.accumulate(m, i)
            mev.accumulate(m, i)
    ev.compute()
    out = {f"curve/IoU{k}": ev.num_correct[k] * 100.0 / float(ev.cnt) for k in IOUS}
    out.update({f"correct/IoU{k}": ev.num_correct[k].copy() for k in IOUS})
    out["PxAP"] = wsoleval_pxap(mev)
    out["PxAP/precision"], out["PxAP/recall"] = wsoleval_pr_curves(mev)
    return out


def differences(ours: dict, theirs: dict, n: int, pr_curves: bool = False) -> list[str]:
    diffs = []
    for k in IOUS:
        mine, want = ours[f"curve/IoU{k}"], theirs[f"curve/IoU{k}"]
        count = mine * n / 100.0  # camlab's correct counts (its curve is correct * 100 / n)
        if not np.array_equal(mine, want) or not np.array_equal(np.rint(count), theirs[f"correct/IoU{k}"]):
            bad = np.flatnonzero(mine != want)
            diffs.append(f"IoU{k}: {len(bad)} of {len(want)} thresholds differ, e.g. threshold index {bad[0]}: "
                         f"camlab {count[bad[0]]:g} correct, wsoleval {theirs[f'correct/IoU{k}'][bad[0]]:g}")
    if not ours["PxAP"] == theirs["PxAP"]:
        diffs.append(f"PxAP: camlab {ours['PxAP']!r} vs wsoleval {theirs['PxAP']!r}")
    for k in ("PxAP/precision", "PxAP/recall") if pr_curves else ():
        if k in ours and not np.array_equal(ours[k], theirs[k]):
            bad = np.flatnonzero(ours[k] != theirs[k])
            diffs.append(f"{k}: {len(bad)} thresholds differ, e.g. index {bad[0]}: camlab {ours[k][bad[0]]!r} vs "
                         f"wsoleval {theirs[k][bad[0]]!r}")
    return diffs


def locate(E, data: MapSet, limit: int = 5) -> list[str]:
    """The maps whose per-map results differ (each map alone on both sides, also PxAP's precision / recall curves:
    PxAP alone can be blind to a shift of a whole map's scores), for the report."""
    lines = []
    for i in range(len(data)):
        one = data.subset(slice(i, i + 1))
        if not (one.masks == 1).any():
            continue  # PxAP of this map alone is undefined
        theirs = wsoleval_scores(E, one.maps.astype(np.float64), one.boxes, one.num_boxes, one.masks)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours = camlab_scores(one.maps, one.boxes, one.num_boxes, one.masks, np.arange(1))
        d = differences(ours, theirs, 1, pr_curves=True)
        if d:
            m = one.maps[0]
            lines.append(f"map {i} ({data.kinds[i]}, {m.dtype}, max {m.max()!r}, {len(np.unique(m))} values, "
                         f"boxes {one.boxes[0, :one.num_boxes[0]].tolist()}): " + "; ".join(d))
            if len(lines) >= limit:
                break
    return lines or ["(none alone: the difference comes from the sums over maps, or from scores at 1.0)"]


def breakdown(data: MapSet, repeats: int = 3) -> dict[str, float]:
    """camlab's time split (s, best of ``repeats``): uint8 conversion and range check, the box kernel
    (``scan_levels``), PxAP histograms, and the aggregation of the rows; through camlab.wsol's public functions."""
    from camlab.wsol import ScoreMaps, box_accuracy, pxap_from_rows, pxap_histograms, scan_levels

    grid = np.arange(0, 1, INTERVAL)
    batches = [slice(s, s + BATCH) for s in range(0, len(data), BATCH)]
    maps_t = torch.from_numpy(data.maps)
    best: dict[str, float] = {}
    for _ in range(repeats):
        t = {}
        t0 = time.perf_counter()
        sms = [ScoreMaps(maps_t[sl]) for sl in batches]
        t["uint8"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        ious = [scan_levels(sm, data.boxes[sl], data.num_boxes[sl], grid).all_ious for sm, sl in zip(sms, batches)]
        t["box kernel"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        hist = [pxap_histograms(sm, data.masks[sl], grid) for sm, sl in zip(sms, batches)]
        t["pxap"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        box_accuracy(np.concatenate(ious), grid, IOUS), pxap_from_rows(np.concatenate(hist), grid)
        t["compute"] = time.perf_counter() - t0
        best = {k: min(v, best.get(k, v)) for k, v in t.items()}
    return best


def contours_per_threshold(maps: np.ndarray, limit: int = 4) -> float:
    """OpenCV contours (RETR_TREE: components and holes) per threshold, mean over every 5th threshold of the grid
    and the first ``limit`` maps."""
    grid = np.arange(0, 1, INTERVAL)
    counts = []
    for m in maps[:limit]:
        u8 = (m.astype(np.float64) * 255).astype(np.uint8)
        for t in grid[::5]:
            _, b = cv2.threshold(u8, int(t * u8.max()), 255, cv2.THRESH_BINARY)
            counts.append(len(cv2.findContours(b, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]))
    return float(np.mean(counts))


def run_row(E, data: MapSet, rounds: int, label: str) -> dict:
    n = len(data)
    maps64 = data.maps.astype(np.float64)  # wsoleval takes float64 only; exact for float32 maps
    index = np.arange(n)
    t_ws, t_cl, ratios = [], [], []
    for r in range(rounds):
        order = ("wsoleval", "camlab") if r % 2 == 0 else ("camlab", "wsoleval")
        for which in order:
            t0 = time.perf_counter()
            if which == "wsoleval":
                theirs = wsoleval_scores(E, maps64, data.boxes, data.num_boxes, data.masks)
                t_ws.append(time.perf_counter() - t0)
            else:
                ours = camlab_scores(data.maps, data.boxes, data.num_boxes, data.masks, index)
                t_cl.append(time.perf_counter() - t0)
        diffs = differences(ours, theirs, n)
        if diffs:
            print(f"\nDIFFERENT: {label}, round {r}:", *diffs, sep="\n    ")
            print("  the maps that differ alone:", *locate(E, data), sep="\n    ")
            sys.exit(1)
        ratios.append(t_ws[-1] / t_cl[-1])
    return {"n": n, "ws": statistics.median(t_ws) / n * 1e3, "cl": statistics.median(t_cl) / n * 1e3,
            "ratio": statistics.median(ratios), "lo": min(ratios), "hi": max(ratios),
            "best": {k: float(theirs[f"curve/IoU{k}"].max()) for k in IOUS}, "pxap": theirs["PxAP"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wsoleval", type=Path, required=True, help="a checkout of clovaai/wsolevaluation")
    ap.add_argument("--quick", action="store_true", help="small counts, 224 px only, 2 rounds: under a minute")
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="default 224 64 (--quick: 224)")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "float64"], choices=["float32", "float64"])
    ap.add_argument("--kinds", nargs="+", default=[*KINDS, "mix"], choices=[*KINDS, "mix"])
    ap.add_argument("--rounds", type=int, default=None, help="rounds per row (default 3, --quick 2)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the per-kind image counts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--breakdown", action="store_true", help="camlab's time per piece, per kind (224 px)")
    args = ap.parse_args()
    sizes = args.sizes or ([224] if args.quick else [224, 64])
    rounds = args.rounds or (2 if args.quick else 3)
    table = QUICK if args.quick else COUNTS
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    E = load_wsoleval(args.wsoleval)
    warm = make_kind("blobs", 2, 32, np.float32)  # numba compilation / cache load outside the timing
    for dt in (np.float32, np.float64):
        camlab_scores(warm.maps.astype(dt), warm.boxes, warm.num_boxes, warm.masks, np.arange(2))

    t_start = time.perf_counter()
    rows = []
    print(f"{'kind':11s} {'size':>4s} {'dtype':7s} {'images':>6s} {'wsoleval':>10s} {'camlab':>10s} "
          f"{'ratio':>7s} {'(range)':>13s}   MaxBoxAccV2 30/50/70, PxAP (identical)")
    for size in sizes:
        counts = table.get(size) or {k: max(1, round(v * (224 / size) ** 2)) for k, v in table[224].items()}
        for dtype in args.dtypes:
            for kind in args.kinds:
                n = max(1, round(counts[kind] * args.scale))
                data = (make_mix(n, size, np.dtype(dtype), args.seed) if kind == "mix"
                        else make_kind(kind, n, size, np.dtype(dtype), args.seed))
                row = run_row(E, data, rounds, f"{kind} {size} px {dtype}")
                row.update(kind=kind, size=size, dtype=dtype)
                rows.append(row)
                b = row["best"]
                print(f"{kind:11s} {size:4d} {dtype:7s} {row['n']:6d} {row['ws']:7.3f} ms {row['cl']:7.3f} ms "
                      f"{row['ratio']:6.1f}x ({row['lo']:5.1f}-{row['hi']:5.1f}x)   "
                      f"{b[30]:.1f}/{b[50]:.1f}/{b[70]:.1f}, {row['pxap']:.3f}", flush=True)
    elapsed = time.perf_counter() - t_start
    print(f"\nms per image, medians of {rounds} rounds; ratio = wsoleval time / camlab time, median of the per-round "
          f"ratios; every round identical (correct counts at IoU 30/50/70 on all {len(np.arange(0, 1, INTERVAL))} "
          f"thresholds, PxAP). Serial: numba threads {os.environ.get('NUMBA_NUM_THREADS')}, torch threads "
          f"{torch.get_num_threads()}, OpenCV threads {cv2.getNumThreads()}; load {os.getloadavg()[0]:.2f}; "
          f"{elapsed:.0f} s.")
    for r in rows:
        if r["kind"] == "mix":
            print(f"mix {r['size']} px {r['dtype']}: {r['ratio']:.1f}x (goal >= 30x: "
                  f"{'met' if r['ratio'] >= 30 else 'NOT met'})")
    big = [r for r in rows if r["size"] == 224 and r["kind"] != "mix"]
    if big:
        worst = max(big, key=lambda r: r["cl"])
        slow = sorted({r["kind"] for r in big if r["cl"] > 0.5})
        print(f"slowest kind for camlab at 224 px: {worst['kind']} {worst['dtype']} {worst['cl']:.3f} ms/image "
              f"(goal <= 0.5 ms: {'met' if not slow else 'NOT met by ' + ', '.join(slow)})")

    if args.breakdown:
        print("\ncamlab's time by piece (ms per image, 224 px, batches of 64; best of 3 passes each):")
        print(f"{'kind':12s} {'dtype':7s} {'uint8':>7s} {'box':>7s} {'pxap':>7s} {'compute':>8s}  contours/threshold")
        for dtype in args.dtypes:
            for kind in args.kinds:
                if kind == "mix":
                    continue
                n = max(1, round(table[224][kind] * args.scale))
                data = make_kind(kind, n, 224, np.dtype(dtype), args.seed)
                t = breakdown(data)
                parts = [(kind, data)]
                if kind == "noise":  # and each of its variants (image i has NOISE_VARIANTS[i % 4])
                    variants = np.array([NOISE_VARIANTS[i % len(NOISE_VARIANTS)] for i in range(len(data))])
                    parts += [(f" {v}", data.subset(np.flatnonzero(variants == v)))
                              for v in dict.fromkeys(NOISE_VARIANTS) if (variants == v).any()]
                for name, part in parts:
                    t = t if part is data else breakdown(part)
                    ms = {k: v / len(part) * 1e3 for k, v in t.items()}
                    print(f"{name:12s} {dtype:7s} {ms['uint8']:7.3f} {ms['box kernel']:7.3f} {ms['pxap']:7.3f} "
                          f"{ms['compute']:8.3f}  {contours_per_threshold(part.maps):.1f}", flush=True)


if __name__ == "__main__":
    main()
