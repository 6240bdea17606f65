"""Per-image CPU time of camlab's faithfulness metrics vs the peers', on the same inputs, within one run.

Run with the PEERS venv, from the repository root:

    /work/peers-venv/bin/python benchmarks/bench_faithfulness.py --section maps [--n 4] [--size 224] [--repeat 3]

Sections:

* ``maps``: :func:`camlab.wsol.pointing.pointing_rows` (all five map metrics in one call, masks included) vs
  quantus's ``PointingGame``, ``RelevanceMassAccuracy``, ``RelevanceRankAccuracy`` and ``TopKIntersection``
  (each a separate call, as quantus users run them; also the bare ``evaluate_batch`` core, without quantus's
  input checks and normalisation), per map kind. Ratios are quantus time / camlab time.
* ``model``: :mod:`camlab.faith` (Average Drop / Increase, insertion / deletion, ROAD) vs torchcam's
  ``ClassificationMetric`` and ``DeletionInsertionMetric`` and grad-cam's ``DropInConfidence`` /
  ``IncreaseInConfidence`` / ``CamMultImageConfidenceChange`` and ``ROAD{Most,Least}RelevantFirstAverage``, on the
  seeded resnet18, images and maps of ``crosscheck_faithfulness.py``; per implementation also the forward passes
  per image (counted by a forward hook) and the time those passes alone would take, since the forward passes
  bound the ratio where they dominate. quantus's ROAD crashes on 3-channel inputs and is not timed.

      /work/peers-venv/bin/python benchmarks/bench_faithfulness.py --section model [--n-model 8] [--road-n 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from crosscheck_faithfulness import box_masks, map_batch  # noqa: E402
from map_kinds import KINDS  # noqa: E402

from camlab.wsol.pointing import pointing_rows  # noqa: E402


def best_time(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def section_maps(args) -> None:
    import quantus

    metrics = {
        "PointingGame": quantus.PointingGame(disable_warnings=True),
        "RelevanceMass": quantus.RelevanceMassAccuracy(disable_warnings=True),
        "RelevanceRank": quantus.RelevanceRankAccuracy(disable_warnings=True),
        "TopK": quantus.TopKIntersection(k=args.topk, disable_warnings=True),
    }
    # warm the numba kernels
    d = map_batch("blobs", 2, args.size, args.seed)
    pointing_rows(d.maps, d.boxes, d.num_boxes, masks=(d.masks == 1).astype(np.uint8), topk=args.topk)

    print(f"per-image ms, {args.n} maps per kind at {args.size}x{args.size}, best of {args.repeat}; "
          "ratio = quantus / camlab")
    print(f"{'kind':11s} {'camlab(5)':>9s} " + " ".join(f"{k:>13s}" for k in metrics)
          + f" {'quantus(4)':>10s} {'ratio':>6s} {'core(4)':>8s} {'ratio':>6s}")
    tot = np.zeros(4)
    for kind in args.kinds:
        d = map_batch(kind, args.n, args.size, args.seed)
        maps, clean = d.maps, (d.masks == 1).astype(np.uint8)
        boxm = box_masks(d.boxes, d.num_boxes, maps.shape)
        a = maps[:, None].astype(np.float32)
        x = np.zeros_like(a)
        y = np.zeros(len(maps), np.int64)
        s_of = {"PointingGame": boxm[:, None].astype(np.float32)}
        s_clean = clean[:, None].astype(np.float32)

        t_ours = best_time(lambda: pointing_rows(maps, d.boxes, d.num_boxes, masks=clean, topk=args.topk),
                           args.repeat) / len(maps)
        t_q, t_core = {}, 0.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name, m in metrics.items():
                s = s_of.get(name, s_clean)
                t_q[name] = best_time(lambda: m(model=None, x_batch=x, y_batch=y, a_batch=a, s_batch=s,
                                                batch_size=len(maps)), args.repeat) / len(maps)
                t_core += best_time(lambda: m.evaluate_batch(a_batch=a, s_batch=s), args.repeat) / len(maps)
        tq = sum(t_q.values())
        tot += (t_ours, tq, t_core, 1)
        print(f"{kind:11s} {t_ours * 1e3:9.3f} " + " ".join(f"{t_q[k] * 1e3:13.3f}" for k in metrics)
              + f" {tq * 1e3:10.3f} {tq / t_ours:6.1f} {t_core * 1e3:8.3f} {t_core / t_ours:6.1f}")
    k = tot[3]
    print(f"{'mean':11s} {tot[0] / k * 1e3:9.3f} " + " " * (14 * len(metrics) - 1)
          + f" {tot[1] / k * 1e3:10.3f} {tot[1] / tot[0]:6.1f} {tot[2] / k * 1e3:8.3f} {tot[2] / tot[0]:6.1f}")


class ForwardCounter:
    """Counts the images (and calls) that go through ``model``'s forward, via a forward hook."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.images = self.calls = 0
        model.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output) -> None:
        self.images += int(inputs[0].shape[0])
        self.calls += 1

    def reset(self) -> None:
        self.images = self.calls = 0


def timed(fn, repeat: int, counter: ForwardCounter, n_images: int) -> tuple[float, float, float]:
    """(best seconds per image, forward passes per image, forward calls) of ``fn`` over ``n_images`` images."""
    counter.reset()
    fn()  # warm-up, and the forward count
    passes, calls = counter.images / n_images, counter.calls
    return best_time(fn, repeat) / n_images, passes, calls


def section_model(args) -> None:
    from functools import partial

    import torch
    import torchcam.metrics as tcm
    from crosscheck_faithfulness import MapExtractor, _softmax_targets, _torchcam_maps, image_batch, targets_of, \
        tiny_model
    from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange, DropInConfidence, \
        IncreaseInConfidence
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirstAverage, ROADMostRelevantFirstAverage

    from camlab import faith
    from camlab.faith.functional import _normalized

    model = tiny_model()
    counter = ForwardCounter(model)
    n, size = args.n_model, args.size
    pix, x = image_batch(n, size, args.seed)
    t = targets_of(model, x)
    maps = map_batch(args.model_kind, n, size, args.seed).maps
    mt, tt = torch.from_numpy(maps), torch.from_numpy(t)
    maps01 = _normalized(mt).numpy()
    targets = _softmax_targets(t)
    tc_maps = _torchcam_maps(maps)
    percents = list(range(10, 100, 10))
    r = args.repeat
    cls = [int(c) for c in t]
    k = args.road_n

    def torchcam_ad():
        tcm.ClassificationMetric(MapExtractor(model, tc_maps), partial(torch.softmax, dim=-1)).update(x, cls)

    def torchcam_id():
        tcm.DeletionInsertionMetric(MapExtractor(model, tc_maps), partial(torch.softmax, dim=-1),
                                    steps=args.steps).update(x, cls)

    def gradcam_road():
        m, l_ = ROADMostRelevantFirstAverage(percents), ROADLeastRelevantFirstAverage(percents)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m(x[:k], maps01[:k], targets[:k], model)
            l_(x[:k], maps01[:k], targets[:k], model)

    def camlab_road(b):
        return lambda: (faith.scores(model, x[:b], tt[:b]), faith.road(model, x[:b], mt[:b], tt[:b], percents))

    cases = [  # (metric, implementation, fn, images, repeats); the first of each metric is camlab (the ratio's base)
        ("AD/IC", "camlab average_drop_increase", lambda: faith.average_drop_increase(model, x, mt, tt), n, r),
        ("AD/IC", "torchcam ClassificationMetric", torchcam_ad, n, r),
        ("AD/IC", "grad-cam Drop + Increase", lambda: (DropInConfidence()(x, maps01, targets, model),
                                                       IncreaseInConfidence()(x, maps01, targets, model)), n, r),
        ("AD/IC", "grad-cam CamMultImageConfChange", lambda: CamMultImageConfidenceChange()(x, maps01, targets,
                                                                                             model), n, r),
        (f"ins/del {args.steps}", "camlab zeros/zeros", lambda: faith.insertion_deletion(
            model, x, mt, tt, args.steps, "zeros", "zeros"), n, r),
        (f"ins/del {args.steps}", "camlab blur/zeros (RISE)", lambda: faith.insertion_deletion(
            model, x, mt, tt, args.steps, "blur", "zeros"), n, r),
        (f"ins/del {args.steps}", "torchcam DeletionInsertion", torchcam_id, n, r),
        ("ROAD 10..90", f"camlab road + base ({k} img)", camlab_road(k), k, r),
        ("ROAD 10..90", f"camlab road + base ({n} img)", camlab_road(n), n, r),
        ("ROAD 10..90", f"grad-cam MoRF+LeRF Avg ({k} img)", gradcam_road, k, 1),
    ]

    def forward():
        with torch.no_grad():
            model(x)

    t_fwd = best_time(forward, r) / n
    print(f"per-image ms at {size}x{size}, resnet18 (10 classes, random weights), CPU, {torch.get_num_threads()} "
          f"torch threads, {args.model_kind} maps, batch {n} (ROAD peers: {k} images), best of {r} (grad-cam ROAD: "
          f"1); one plain batched forward: {t_fwd * 1e3:.1f} ms per image")
    print(f"{'metric':12s} {'implementation':34s} {'ms/img':>9s} {'fwd/img':>8s} {'calls':>6s} "
          f"{'fwd-bound':>9s} {'ratio':>6s}")
    base = {}
    for metric, impl, fn, b, rep in cases:
        sec, passes, calls = timed(fn, rep, counter, b)
        base.setdefault(metric, sec)
        ratio = sec / base[metric]
        print(f"{metric:12s} {impl:34s} {sec * 1e3:9.1f} {passes:8.1f} {calls:6d} {passes * t_fwd * 1e3:9.1f} "
              f"{ratio:6.2f}", flush=True)
    print("ratio = implementation / the metric's first camlab row (ROAD: camlab on the same images as grad-cam); "
          "fwd-bound = forward passes per image x the plain forward time")


SECTIONS = {"maps": section_maps, "model": section_model}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--section", choices=sorted(SECTIONS), default="maps")
    p.add_argument("--n", type=int, default=4, help="images per map kind")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--topk", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    p.add_argument("--n-model", type=int, default=8, help="images per batch (section model)")
    p.add_argument("--model-kind", default="blobs", choices=KINDS, help="map kind (section model)")
    p.add_argument("--steps", type=int, default=20, help="insertion / deletion steps (section model)")
    p.add_argument("--road-n", type=int, default=2, help="images for the ROAD peers (spsolve per image)")
    args = p.parse_args(argv)
    SECTIONS[args.section](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
