"""Cross-check camlab's metrics against the public WSOL benchmark's own evaluator code.

    pip install munch   # imported by wsolevaluation's data_loaders.py
    git clone https://github.com/clovaai/wsolevaluation /path/to/wsolevaluation
    python benchmarks/crosscheck_wsoleval.py --wsoleval /path/to/wsolevaluation [--n 200] [--size 224]

Imports ``evaluation.py`` from a checkout of clovaai/wsolevaluation (nothing of it is copied into camlab) and feeds
the same score maps, boxes and masks to its evaluators and to :class:`camlab.wsol.WSOLMetrics`:

* ``BoxEvaluator`` with all contours and IoU 30/50/70 (MaxBoxAccV2) and with the largest contour and IoU 50
  (MaxBoxAcc): the per-threshold correct counts and the best accuracies;
* ``MaskEvaluator`` (PxAP): the value it returns, and the precision and recall at each threshold from its
  histograms (which locate a PxAP difference in a single map: PxAP alone can be blind to a whole map's shift);
* GT-known loc (the CAM paper's protocol: largest contour at 0.2 of the map's max, IoU 50), which is its
  ``BoxEvaluator`` with the single threshold 0.2;
* its ``inference.normalize_scoremap`` against :func:`camlab.cam.minmax_normalize` on raw float64 and float32 maps
  (scaled and shifted blobs, constant maps, maps with a NaN): bit for bit;
* its metadata readers (``data_loaders.py``) against :func:`camlab.data.wsoleval.read_wsoleval` on the metadata files
  in the checkout (CUB, ILSVRC, OpenImages; every split present): image order, class labels, boxes, image sizes, mask
  and ignore paths; and its GT boxes at 224 px (``resize_bbox``) against camlab's eval path (``scale_boxes`` in
  float64, then float32 in the batch, then ``int()`` in the metrics) for every box;
* and, outside the metrics, its OpenImages mask loading (``get_mask``: instance PNGs and an ignore PNG of any size,
  resized to 224 x 224) against :class:`camlab.data.masks.MaskSpec` ``.render(224, 224)`` on ``--n`` random PNG sets.

Its evaluators are built without their metadata files: the attributes their ``accumulate`` and ``compute`` read
are set directly, and its module-level ``get_mask`` is replaced by a lookup of this script's masks. Its code uses
``np.float``, which numpy 1.24 removed; the script sets ``np.float = float`` (what that name meant) if it is absent.
Its evaluators only take float64 maps: the float32 kinds (``cams-f32`` and every ``*-f32``) go to camlab as float32
(its float32 path) and to wsoleval as their exact float64 copies.

Map kinds: ``cams`` (random blobs on a 7x7 grid resized with OpenCV bicubic in float64 and min-max normalized, as
its inference.py does), ``cams-f32`` (the same computed in float32, as camlab's own pipeline gives its maps),
``noise`` (uniform), ``ties`` (eight distinct values: plateaus and equal areas) and ``edges`` (values on and one
float step around the threshold grid and the uint8 steps k/255). ``noise`` and ``ties`` maps have thousands of
contours per threshold (wsoleval needs about 2.5 s per 224 px map), so they are made at ``--rough-size`` (64) px.
GT: 1-3 integer boxes per image, the first one near the map's own blob except on noise and ties (IoUs spread around
the thresholds); masks are the boxes, with an ignore band (255).

Also every kind of ``map_kinds.py`` (the kinds ``bench_wsoleval.py`` times), in float64 and float32, at ``--size``:
``blobs-f64``, ``blobs-f32``, ``components-*``, ``noise-*`` (attribution-like, upsampled and uniform noise in turn;
at most ``--noise-n`` maps, as wsoleval needs up to 3 s per 224 px map), ``rings-*``, ``lines-*``, ``ties-*`` (values
exactly on k/100 and k/255), ``border-*``, ``rectangles-*``, ``special-*`` (constant, zero, hot-pixel, tiny-max maps);
with their own GT (float ``xyxy`` boxes with fractional parts, some reaching ``size``) and masks (object shapes, an
ignore box or band). Where a kind differs, the maps that differ on their own are listed. The script exits with
status 1 on any difference.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import sys
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch

from camlab.cam import minmax_normalize
from camlab.data.masks import MaskSpec
from camlab.data.transforms import scale_boxes
from camlab.data.wsoleval import WSOLEvalDataset, read_wsoleval
from camlab.wsol import WSOLMetrics, gt_boxes_to_int

sys.path.insert(0, str(Path(__file__).resolve().parent))
import map_kinds  # noqa: E402

OLD_KINDS = ("cams", "cams-f32", "noise", "ties", "edges")
MAP_KINDS = tuple(f"{k}-{d}" for k in map_kinds.KINDS for d in ("f64", "f32"))
KINDS = OLD_KINDS + MAP_KINDS


def load_wsoleval(root: Path):
    if not (root / "evaluation.py").is_file():
        sys.exit(f"error: {root}/evaluation.py not found: pass --wsoleval a checkout of clovaai/wsolevaluation")
    try:
        import munch  # noqa: F401
    except ImportError:
        sys.exit("error: wsolevaluation's data_loaders.py imports munch: pip install munch")
    if not hasattr(np, "float"):
        np.float = float  # the builtin alias numpy removed in 1.24; wsoleval's code still uses it
    sys.path.insert(0, str(root))
    return importlib.import_module("evaluation")


def make_maps(kind: str, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(n, size, size) float64 maps in [0, 1]."""
    out = np.empty((n, size, size), np.float64)
    for i in range(n):
        if kind in ("cams", "cams-f32"):
            dtype = np.float64 if kind == "cams" else np.float32
            low = np.zeros((7, 7), dtype)
            yy, xx = np.mgrid[0:7, 0:7]
            for _ in range(rng.integers(1, 4)):
                cy, cx, s = rng.uniform(0, 7), rng.uniform(0, 7), rng.uniform(0.7, 2.5)
                low += (rng.uniform(0.3, 1) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))).astype(dtype)
            low += (0.05 * rng.random((7, 7))).astype(dtype)
            m = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
            m = m - m.min()
            m = m / m.max()  # in the map's own dtype, as normalize_scoremap does
            out[i] = m.astype(np.float64)
        elif kind == "noise":
            out[i] = rng.random((size, size))
        elif kind == "ties":
            out[i] = rng.integers(0, 8, (size, size)) / 7.0
        elif kind == "edges":
            grid = np.arange(0, 1, 0.01)
            steps = np.arange(256) / 255.0
            base = np.concatenate([grid, steps])
            vals = np.concatenate([base, np.nextafter(base, 2.0), np.nextafter(base, -1.0)])
            vals = np.clip(vals, 0.0, 1.0)
            m = rng.choice(vals, (size, size))
            # smooth-ish layout: sort values along a random blob so that contours are not all single pixels
            yy, xx = np.mgrid[0:size, 0:size]
            cy, cx = rng.uniform(0, size, 2)
            order = np.argsort(((yy - cy) ** 2 + (xx - cx) ** 2).ravel())
            flat = np.sort(m.ravel())[::-1]
            m = np.empty(size * size)
            m[order] = flat
            out[i] = m.reshape(size, size)
            out[i].flat[rng.integers(0, size * size)] = 1.0
        else:
            raise ValueError(kind)
    return out


def make_targets(maps: np.ndarray, rng: np.random.Generator, near_blob: bool = True):
    """Integer inclusive GT boxes (n, 3, 4) with counts (n,), and masks (n, H, W) with 0/1/255.

    With ``near_blob`` the first box of an image is the box of its map above a random level in [0.2, 0.7], each side
    moved by up to 4 px, so that IoUs spread around 0.3-0.7 (on rough maps that box is the whole image, so they get
    random boxes only); the others (0-2) are random. The mask is the union of the boxes, with an ignore band (255)
    along the top outside them.
    """
    n, size = maps.shape[0], maps.shape[1]
    boxes = np.zeros((n, 3, 4), np.int64)
    counts = rng.integers(1, 4, n)
    masks = np.zeros(maps.shape, np.uint8)
    for i in range(n):
        ys, xs = np.nonzero(maps[i] > rng.uniform(0.2, 0.7))
        if len(ys) == 0:
            ys, xs = np.array([0]), np.array([0])
        jitter = rng.integers(-4, 5, 4)
        x0, y0 = np.clip([xs.min() + jitter[0], ys.min() + jitter[1]], 0, size - 1)
        x1, y1 = np.clip([xs.max() + jitter[2], ys.max() + jitter[3]], 0, size - 1)
        first = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        for g in range(counts[i]):
            if g == 0 and near_blob:
                bx = first
            else:
                a, b = rng.integers(0, size - 2, 2)
                bx = (a, b, int(rng.integers(a + 1, min(size, a + size // 2 + 2))),
                      int(rng.integers(b + 1, min(size, b + size // 2 + 2))))
            boxes[i, g] = bx
            masks[i, bx[1]: bx[3] + 1, bx[0]: bx[2] + 1] = 1
        band = slice(0, rng.integers(1, 4))
        masks[i, band][masks[i, band] == 0] = 255
    return boxes, counts, masks


def wsoleval_box_evaluator(E, grid, ious, multi_contour: bool, boxes, counts):
    """Its ``BoxEvaluator`` without metadata: the attributes ``accumulate`` and ``compute`` read, set directly.

    ``boxes`` (n, G, 4) xyxy (ints or floats; ``int()`` of each coordinate, as its ``resize_bbox`` returns them),
    ``counts`` (n,) the valid boxes per image; image ids are 0..n-1.
    """
    ev = object.__new__(E.BoxEvaluator)
    ev.cam_threshold_list, ev.iou_threshold_list, ev.multi_contour_eval = list(grid), list(ious), multi_contour
    ev.num_correct = {k: np.zeros(len(grid)) for k in ious}
    ev.cnt = 0
    ev.gt_bboxes = {i: [tuple(int(v) for v in boxes[i, g]) for g in range(counts[i])] for i in range(len(boxes))}
    return ev


def wsoleval_mask_evaluator(E, grid):
    """Its ``MaskEvaluator`` without metadata (image ids 0..n-1); accumulate inside :func:`wsoleval_masks`."""
    mev = object.__new__(E.MaskEvaluator)
    mev.cam_threshold_list, mev.split = list(grid), "crosscheck"
    mev.num_bins = len(grid) + 2
    mev.threshold_list_right_edge = np.append(grid, [1.0, 2.0, 3.0])
    mev.gt_true_score_hist = np.zeros(mev.num_bins, dtype=np.float64)
    mev.gt_false_score_hist = np.zeros(mev.num_bins, dtype=np.float64)
    mev.mask_root = None
    mev.mask_paths = _Ids()
    mev.ignore_paths = _Ids()
    return mev


class _Ids(dict):
    def __missing__(self, key):
        return key


@contextlib.contextmanager
def wsoleval_masks(E, masks):
    """Its module-level ``get_mask`` replaced by a lookup of ``masks[image_id]`` while inside."""
    saved = E.get_mask
    E.get_mask = lambda root, key, ignore: masks[key]
    try:
        yield
    finally:
        E.get_mask = saved


def wsoleval_pxap(mev) -> float:
    # compute() prints its value, and divides 0 / 0 at the thresholds where nothing is predicted (masked out after)
    with contextlib.redirect_stdout(io.StringIO()), np.errstate(invalid="ignore", divide="ignore"):
        return float(mev.compute())


def wsoleval_pr_curves(mev) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall of ``score >= t`` at its thresholds, ascending, from its histograms, computed as its
    ``compute()`` does (precision 0 where nothing is predicted, where its value is 0 / 0)."""
    tp = mev.gt_true_score_hist[::-1].cumsum()
    fp = mev.gt_false_score_hist[::-1].cumsum()
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.nan_to_num(tp / (tp + fp), nan=0.0)
        recall = tp / mev.gt_true_score_hist.sum()
    idx = np.arange(mev.num_bins - 1, 1, -1)  # reversed cumulative index K + 1 - k <-> threshold k
    return precision[idx], recall[idx]


def wsoleval_results(E, maps, boxes, counts, masks, grid):
    thr = list(grid)
    out = {}
    # GT-known loc (CAM paper protocol) is its BoxEvaluator with the one threshold 0.2, the largest contour, IoU 50
    for name, multi, ious, grid_ in (("MaxBoxAccV2", True, [30, 50, 70], thr), ("MaxBoxAcc", False, [50], thr),
                                     ("gt_known_loc", False, [50], [0.2])):
        ev = wsoleval_box_evaluator(E, grid_, ious, multi, boxes, counts)
        for i, m in enumerate(maps):
            ev.accumulate(m, i)
        best = ev.compute()
        if name == "gt_known_loc":
            out[name] = float(best[0])
            continue
        for k, b in zip(ious, best):
            out[f"{name}/IoU{k}"] = float(b)
            out[f"{name}/curve/IoU{k}"] = ev.num_correct[k] * 100.0 / float(ev.cnt)
    mev = wsoleval_mask_evaluator(E, grid)
    with wsoleval_masks(E, masks):
        for i, m in enumerate(maps):
            mev.accumulate(m, i)
    out["PxAP"] = wsoleval_pxap(mev)
    out["PxAP/precision"], out["PxAP/recall"] = wsoleval_pr_curves(mev)
    return out


def camlab_results(maps, boxes, counts, masks, grid, batch: int = 64):
    wm = WSOLMetrics(grid, (30, 50, 70), max_box_acc=True, masks=True, topk=(1,), loc_cam_threshold=0.2,
                     loc_iou_threshold=0.5, loc_multi_contour=False)
    for s in range(0, len(maps), batch):
        sl = slice(s, min(s + batch, len(maps)))
        labels = torch.zeros(sl.stop - sl.start, dtype=torch.long)
        logits = torch.nn.functional.one_hot(labels, 2).double()  # GT-known loc does not look at the classes
        wm.update(torch.from_numpy(maps[sl]), boxes=torch.from_numpy(boxes[sl]).double(),
                  num_boxes=torch.from_numpy(counts[sl]), masks=torch.from_numpy(masks[sl]), logits=logits,
                  labels=labels, index=torch.arange(sl.start, sl.stop))
    report = wm.report()
    out = {k: float(v) for k, v in report.scalars.items() if "/best_index/" not in k}
    table = report.curves
    out.update({k.replace("/IoU", "/curve/IoU"): np.asarray(v, np.float64) for k, v in table.items()
                if k.startswith("MaxBoxAcc")})
    out.update({k: np.asarray(table[k], np.float64) for k in ("PxAP/precision", "PxAP/recall") if k in table})
    return out


def compare(ours: dict, theirs: dict) -> list[str]:
    diffs = []
    for k, v in theirs.items():
        mine = ours.get(k)
        if mine is None:
            diffs.append(f"{k}: missing in camlab")
        elif isinstance(v, np.ndarray):
            if not np.array_equal(mine, v):
                bad = np.nonzero(mine != v)[0]
                diffs.append(f"{k}: {len(bad)} thresholds differ, e.g. index {bad[0]}: {mine[bad[0]]} vs {v[bad[0]]}")
        elif mine != v:
            diffs.append(f"{k}: camlab {mine!r} vs wsoleval {v!r}")
    return diffs


def locate(E, maps, ours_maps, boxes, counts, masks, grid, limit: int = 5) -> list[str]:
    """The maps that differ on their own (each map alone through both), with what differs."""
    lines = []
    for i in range(len(maps)):
        one = slice(i, i + 1)
        try:
            theirs = wsoleval_results(E, maps[one], boxes[one], counts[one], masks[one], grid)
        except RuntimeError as e:  # e.g. no positive GT pixel in this one mask: PxAP alone is undefined
            theirs = {"error": str(e)}
        if "error" in theirs:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            d = compare(camlab_results(ours_maps[one], boxes[one], counts[one], masks[one], grid), theirs)
        if d:
            m = ours_maps[i]
            lines.append(f"{i} ({m.dtype}, max {m.max()!r}, {len(np.unique(m))} distinct values, GT boxes "
                         f"{boxes[i, :counts[i]].tolist()}): " + "; ".join(d))
            if len(lines) >= limit:
                break
    return lines or ["(no single map differs alone, also in PxAP's precision / recall curves: the difference comes "
                     "from the sums over maps or from the scores at 1.0)"]


def check_normalize(n: int, rng: np.random.Generator) -> list[str]:
    """Its normalize_scoremap (in place, on a copy) vs minmax_normalize, float64 and float32 raw maps, bit for bit."""
    inference = importlib.import_module("inference")
    diffs = []
    for dtype in (np.float64, np.float32):
        raw = make_maps("cams", n, 64, rng).astype(dtype)
        raw *= rng.uniform(1e-3, 1e3, (n, 1, 1)).astype(dtype)
        raw -= rng.uniform(-50, 50, (n, 1, 1)).astype(dtype)
        raw[0] = dtype(3.5)  # constant
        raw[1, 5, 5] = np.nan
        for i in range(n):
            theirs = inference.normalize_scoremap(raw[i].copy())
            ours = minmax_normalize(torch.from_numpy(raw[i][None].copy()))[0].numpy()
            if theirs.dtype != ours.dtype or theirs.tobytes() != ours.tobytes():
                diffs.append(f"{np.dtype(dtype).name} map {i}: {int((theirs != ours).sum())} values differ")
    return diffs


def check_metadata(E, root: Path) -> list[str]:
    """Its metadata readers and resize_bbox vs read_wsoleval and camlab's eval box path, on the checkout's files."""
    D = importlib.import_module("data_loaders")
    lines = []
    with tempfile.TemporaryDirectory() as images:
        for dataset in ("CUB", "ILSVRC", "OpenImages"):
            for split in ("train", "val", "test"):
                folder = root / "metadata" / dataset / split
                try:
                    md = D.configure_metadata(str(folder))
                    ids = D.get_image_ids(md)
                    labels = D.get_class_labels(md)
                except (OSError, UnicodeDecodeError, ValueError):
                    continue  # absent (or not fetched) in this checkout
                loc = folder / "localization.txt"
                has_loc = loc.is_file() and loc.stat().st_size > 0
                try:
                    records, _ = read_wsoleval(images, root / "metadata", dataset, split, mask_root=images)
                except Exception as e:  # noqa: BLE001 - report, do not stop the other splits
                    lines.append(f"{dataset}/{split}: camlab cannot read it: {e}")
                    continue
                diffs = []
                if [r.path for r in records] != [f"{images}/{i}" for i in ids]:
                    diffs.append("image order")
                if [r.label for r in records] != [labels[i] for i in ids]:
                    diffs.append("class labels")
                n_boxes = 0
                if has_loc and dataset != "OpenImages":
                    boxes, sizes = D.get_bounding_boxes(md), D.get_image_sizes(md)
                    # the records as the dataset keeps them (boxes clipped to the image; no image is opened)
                    kept = WSOLEvalDataset(images, str(root / "metadata"), dataset, split, check_files=False).records
                    if len(kept) != len(records):
                        diffs.append(f"the dataset kept {len(kept)} of {len(records)} records")
                    clipped = sum(not np.array_equal(a.boxes, b.boxes) for a, b in zip(kept, records))
                    if clipped:
                        diffs.append(f"{clipped} images have boxes clipped by the dataset")
                    for r, i in zip(kept, ids):
                        want = np.asarray(boxes.get(i, []), np.float64).reshape(-1, 4)
                        if not np.array_equal(r.boxes, want) or tuple(r.size) != sizes[i]:
                            diffs.append(f"boxes or size of {i}")
                            break
                        theirs = [E.resize_bbox(b, sizes[i], (224, 224)) for b in boxes.get(i, [])]
                        ours = gt_boxes_to_int(torch.from_numpy(scale_boxes(r.boxes, r.size, (224, 224))).float())
                        n_boxes += len(theirs)
                        if ours.tolist() != [list(b) for b in theirs]:
                            diffs.append(f"224 px GT boxes of {i}: {ours.tolist()} vs {theirs}")
                            break
                if has_loc and dataset == "OpenImages":
                    masks, ignores = D.get_mask_paths(md)
                    for r, i in zip(records, ids):
                        files = tuple(f"{images}/{m}" for m in masks[i])
                        ignore = f"{images}/{ignores[i]}" if ignores[i] else None
                        if r.mask is None or r.mask.files != files or r.mask.ignore_file != ignore:
                            diffs.append(f"mask paths of {i}")
                            break
                what = f"{len(ids)} images" + (f", {n_boxes} boxes at 224 px" if n_boxes else "")
                lines.append(f"{dataset}/{split} ({what}): " + ("identical" if not diffs else "DIFFERENT: " + "; ".join(diffs)))
    return lines


def check_masks(E, n: int, rng: np.random.Generator) -> list[str]:
    """Its get_mask vs MaskSpec.render on n random sets of instance PNGs (+ one ignore PNG) of random sizes."""
    diffs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            w, h = (int(v) for v in rng.integers(20, 640, 2))
            files = []
            for g in range(int(rng.integers(1, 4))):
                m = np.zeros((h, w), np.uint8)
                x0, y0 = rng.integers(0, w - 1), rng.integers(0, h - 1)
                x1, y1 = rng.integers(x0 + 1, w + 1), rng.integers(y0 + 1, h + 1)
                m[y0:y1, x0:x1] = 255
                if g == 0:  # ragged edges and stray grey values
                    m[rng.random((h, w)) < 0.02] = rng.integers(1, 256)
                files.append(f"{i}_{g}.png")
                cv2.imwrite(f"{tmp}/{files[-1]}", m)
            ign = np.zeros((h, w), np.uint8)
            ign[: rng.integers(1, h), : rng.integers(1, w)] = 255
            cv2.imwrite(f"{tmp}/{i}_ignore.png", ign)
            theirs = E.get_mask(tmp, files, f"{i}_ignore.png")
            ours = MaskSpec(files=tuple(f"{tmp}/{f}" for f in files), ignore_file=f"{tmp}/{i}_ignore.png").render(224, 224)
            if theirs.dtype != ours.dtype or not np.array_equal(theirs, ours):
                diffs.append(f"mask set {i} ({w}x{h}, {len(files)} instances): {int((theirs != ours).sum())} pixels differ")
    return diffs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wsoleval", type=Path, required=True, help="a checkout of clovaai/wsolevaluation")
    ap.add_argument("--n", type=int, default=200, help="maps per kind")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--rough-size", type=int, default=64, help="size of the noise and ties maps")
    ap.add_argument("--noise-n", type=int, default=12, help="at most this many maps of the noise-f64/f32 kinds")
    ap.add_argument("--kinds", nargs="*", default=list(KINDS), choices=KINDS)
    ap.add_argument("--interval", type=float, default=0.01, help="threshold grid interval (theirs: np.arange(0, 1, .))")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-masks", action="store_true", help="skip the get_mask vs MaskSpec check")
    args = ap.parse_args()
    E = load_wsoleval(args.wsoleval)
    grid = np.arange(0, 1, args.interval)
    failed = False
    warm = make_maps("cams", 2, 32, np.random.default_rng(0))
    camlab_results(warm, *make_targets(warm, np.random.default_rng(0)), grid)  # numba compilation outside the timing
    camlab_results(warm.astype(np.float32), *make_targets(warm, np.random.default_rng(0)), grid)
    for kind in args.kinds:
        if kind in OLD_KINDS:
            rng = np.random.default_rng([args.seed, KINDS.index(kind)])
            size = args.rough_size if kind in ("noise", "ties") else args.size
            maps = make_maps(kind, args.n, size, rng)
            boxes, counts, masks = make_targets(maps, rng, near_blob=kind not in ("noise", "ties"))
            ours_maps = maps.astype(np.float32) if kind == "cams-f32" else maps  # exact: computed in float32
        else:
            base, dt = kind.rsplit("-", 1)
            size = args.size
            n = min(args.n, args.noise_n) if base == "noise" else args.n
            data = map_kinds.make_kind(base, n, size, np.float64 if dt == "f64" else np.float32, args.seed)
            ours_maps, boxes, counts, masks = data.maps, data.boxes, data.num_boxes, data.masks
            maps = ours_maps.astype(np.float64)
        t0 = time.perf_counter()
        theirs = wsoleval_results(E, maps, boxes, counts, masks, grid)
        t1 = time.perf_counter()
        ours = camlab_results(ours_maps, boxes, counts, masks, grid)
        t2 = time.perf_counter()
        diffs = compare(ours, theirs)
        summary = ", ".join(f"{k} {theirs[k]:.4f}" for k in ("MaxBoxAccV2/IoU30", "MaxBoxAccV2/IoU50",
                                                             "MaxBoxAccV2/IoU70", "MaxBoxAcc/IoU50", "PxAP",
                                                             "gt_known_loc"))
        status = "identical" if not diffs else f"{len(diffs)} DIFFERENCES"
        print(f"{kind:13s} {len(maps)} maps {size}px {ours_maps.dtype}: {status} ({summary}; wsoleval {t1 - t0:.1f} s, "
              f"camlab {t2 - t1:.2f} s)", flush=True)
        for d in diffs:
            print("   ", d)
        if diffs:
            for line in locate(E, maps, ours_maps, boxes, counts, masks, grid):
                print("    map", line)
        failed |= bool(diffs)
    diffs = check_normalize(args.n, np.random.default_rng([args.seed, 98]))
    print(f"normalize {args.n} raw maps, float64 and float32: {'identical' if not diffs else f'{len(diffs)} DIFFERENCES'}"
          " (normalize_scoremap vs minmax_normalize, bit for bit)")
    for d in diffs:
        print("   ", d)
    failed |= bool(diffs)
    if (args.wsoleval / "metadata").is_dir():
        for line in check_metadata(E, args.wsoleval):
            print("metadata ", line)
            failed |= "identical" not in line
    if not args.skip_masks:
        t0 = time.perf_counter()
        diffs = check_masks(E, args.n, np.random.default_rng([args.seed, 99]))
        print(f"masks     {args.n} PNG sets: {'identical' if not diffs else f'{len(diffs)} DIFFERENCES'} "
              f"(get_mask vs MaskSpec.render at 224 x 224; {time.perf_counter() - t0:.1f} s)")
        for d in diffs:
            print("   ", d)
        failed |= bool(diffs)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
