"""Speed of the CAM methods: their cost relative to the forward pass, against the peers, and for many classes.

Sections (``--section``):

* ``cost`` (camlab's venv is enough): ``compute_cams`` (raw maps of the ground-truth class) for every method of
  :data:`camlab.cam_methods.METHODS` on the features of one batch, under ``torch.inference_mode()`` as in Lightning's
  validation loop, and the model's forward pass on the same batch; median per method and its ratio to the forward.

      python benchmarks/bench_cam_methods.py [--rounds 20] [--batch 64] [--backbone tiny_cnn] [--size 64]

* ``peers`` (run with the PEERS venv: pytorch-grad-cam and torchcam are never camlab dependencies): the same seeded
  resnet18 (``crosscheck_cam_methods.py``), batch and predicted classes for every implementation; per method the
  median of ``--rounds`` rounds, the implementations interleaved in a rotating order so the machine's load hits all
  of them alike. ``camlab`` = its forward pass (inference mode) + ``compute_cams`` + upsampling and min-max
  normalization to the input size (what pytorch-grad-cam returns); ``camlab maps`` = ``compute_cams`` alone, on the
  features of a forward pass the run made anyway (the validation loop's); ``grad-cam`` = one call of its CAM object
  (forward, full backward, maps at input size); ``torchcam`` = the forward pass with its hooks + the extractor call
  (maps at feature resolution). Score-CAM and pytorch-grad-cam's Ablation-CAM run ``K`` = 512 forward passes per
  image: those rows use ``--slow-batch`` images and ``--slow-rounds`` rounds without a warm-up, every implementation
  scoring 64 masked inputs per pass (Score-CAM's ``camlab maps`` is not timed apart: it is nearly all of ``camlab``).

      /work/peers-venv/bin/python benchmarks/bench_cam_methods.py --section peers [--batch 16] [--size 224]

* ``classes``: maps of every one of the 1,000 classes of a batch (resnet18, ``--batch`` images): camlab's
  ``compute_cams`` with (B, 1000) classes, torchcam's extractor called once per class (its graph retained; with
  ``--torchcam-classes N`` < 1000, timed on the first N classes and scaled to 1,000: every call is one backward
  pass through the whole network, the same cost per class; its memory is that of the N calls), and the
  earlier camlab formulation (every class's gradient stacked and the features copied per class, in chunks of 50
  classes, re-created here); seconds with the forward pass, and the peak resident memory the maps add (above the
  state after the forward pass; ``malloc_trim`` first, so that new allocations show).

      /work/peers-venv/bin/python benchmarks/bench_cam_methods.py --section classes [--batch 16]
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import os
import re
import statistics
import sys
import time
import warnings

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from camlab.cam import minmax_normalize, upsample  # noqa: E402
from camlab.cam_methods import GRADIENT_METHODS, METHODS, compute_cams  # noqa: E402

SLOW = ("scorecam", "ablationcam")


def timed_rounds(jobs: dict, rounds: int, warmup: bool = True) -> dict[str, float]:
    """Median seconds per job over ``rounds`` rounds, after one warm-up (unless ``warmup=False``: jobs of hundreds
    of forward passes, where the first call's set-up is lost in the noise); the order rotates every round."""
    names = list(jobs)
    for name in names if warmup else ():
        jobs[name]()
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            t0 = time.perf_counter()
            jobs[name]()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


# ---- cost: camlab alone --------------------------------------------------------------------------------------
def section_cost(args) -> None:
    from camlab.models import CAMClassifier
    from camlab.models.backbones import create_backbone

    torch.manual_seed(0)
    extra = {"width": args.width} if args.backbone == "tiny_cnn" else {}
    model = CAMClassifier(create_backbone(args.backbone, pretrained=False, **extra), num_classes=args.classes).eval()
    images = torch.randn(args.batch, 3, args.size, args.size)
    labels = torch.randint(0, args.classes, (args.batch,))
    jobs = {"forward": lambda: model(images)}
    with torch.inference_mode():
        features = model(images)["features"]
    for m in METHODS:
        jobs[m] = lambda m=m: compute_cams(model, features, labels, m, images=images)
    with torch.inference_mode():
        med = timed_rounds(jobs, args.rounds)
    fwd = med["forward"]
    print(f"{args.backbone}, batch {args.batch} at {args.size} px, features {tuple(features.shape[1:])}, "
          f"{args.rounds} rounds, {torch.get_num_threads()} threads")
    print(f"{'':22s}{'median ms':>10s}{'x forward':>11s}")
    for name, t in med.items():
        print(f"{name:22s}{t * 1e3:10.3f}{t / fwd:11.3f}")


# ---- peers ---------------------------------------------------------------------------------------------------
def gradcam_job(method, net, x, cls):
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from crosscheck_cam_methods import GRADCAM_CLASSES

    net = copy.deepcopy(net)
    kwargs = {"batch_size": 64} if method == "ablationcam" else {}
    cam = getattr(pytorch_grad_cam, GRADCAM_CLASSES[method])(net, target_layers=[net.layer4], **kwargs)
    if method == "scorecam":
        cam.batch_size = 64
    targets = [ClassifierOutputTarget(c) for c in cls]
    return lambda: cam(input_tensor=x, targets=targets)


def torchcam_job(method, net, x, cls):
    import torchcam.methods

    from crosscheck_cam_methods import TORCHCAM_CLASSES

    net = copy.deepcopy(net)
    kwargs = {"fc_layer": "fc"} if method == "cam" else {}
    kwargs.update({"batch_size": 64} if method == "scorecam" else {})
    kwargs.update({"num_samples": 8, "std": 0.3} if method == "smoothgradcampp" else {})
    extractor = getattr(torchcam.methods, TORCHCAM_CLASSES[method])(net, target_layer="layer4",
                                                                    input_shape=tuple(x.shape[1:]), **kwargs)
    no_grad = method in ("cam", "scorecam")

    def run():
        with torch.no_grad() if no_grad else torch.enable_grad():
            scores = net(x)
        return extractor(class_idx=list(cls), scores=scores)

    return run


def section_peers(args) -> None:
    from crosscheck_cam_methods import GRADCAM_CLASSES, TORCHCAM_CLASSES, camlab_model, image_batch, seeded_resnet18

    net = seeded_resnet18()
    model = camlab_model(net)
    print(f"resnet18 (seeded), batch {args.batch} at {args.size} px ({args.slow_batch} images for "
          f"{', '.join(SLOW)}), {args.rounds} rounds ({args.slow_rounds} for those), {torch.get_num_threads()} "
          f"threads; median seconds per batch")
    print(f"{'method':22s}{'camlab':>9s}{'maps':>9s}{'grad-cam':>10s}{'torchcam':>10s}{'faster peer / camlab':>22s}"
          f"{'/ maps':>9s}")
    for method in args.methods:
        n = args.slow_batch if method in SLOW else args.batch
        x = image_batch(n, args.size)
        with torch.inference_mode():
            out = model(x)
        feats, classes = out["features"].clone(), out["logits"].argmax(1)
        cls = classes.tolist()

        def camlab_full(method=method, x=x):
            with torch.inference_mode():
                o = model(x)
                raw = compute_cams(model, o["features"], o["logits"].argmax(1), method, images=x)
                return minmax_normalize(upsample(raw, tuple(x.shape[-2:])))

        jobs = {"camlab": camlab_full}
        if method != "scorecam":
            jobs["maps"] = lambda method=method, feats=feats, classes=classes, x=x: compute_cams(
                model, feats, classes, method, images=x)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if method in GRADCAM_CLASSES:
                jobs["grad-cam"] = gradcam_job(method, net, x, cls)
            if method in TORCHCAM_CLASSES:
                jobs["torchcam"] = torchcam_job(method, net, x, cls)
            med = (timed_rounds(jobs, args.slow_rounds, warmup=False) if method in SLOW
                   else timed_rounds(jobs, args.rounds))
        peers = [med[k] for k in ("grad-cam", "torchcam") if k in med]
        cells = [f"{med.get(k, float('nan')):9.3f}" if k in med else f"{'-':>9s}" for k in ("camlab", "maps")]
        cells += [f"{med[k]:10.3f}" if k in med else f"{'-':>10s}" for k in ("grad-cam", "torchcam")]
        ratio = f"{min(peers) / med['camlab']:22.1f}" if peers else f"{'-':>22s}"
        ratio_maps = f"{min(peers) / med['maps']:9.0f}" if peers and "maps" in med else f"{'-':>9s}"
        print(f"{method:22s}{''.join(cells)}{ratio}{ratio_maps}", flush=True)


# ---- many classes --------------------------------------------------------------------------------------------
def resident() -> int:
    return int(re.search(r"VmRSS:\s+(\d+)", open("/proc/self/status").read()).group(1)) * 1024


def peak(fn) -> tuple[float, float]:
    """(seconds, MiB of peak resident memory above the state before) of ``fn()``."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = resident()
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    hwm = int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read()).group(1)) * 1024
    del out
    return dt, (hwm - before) / 2**20


def earlier_formulation(model, features, classes, method, chunk=50):
    """The earlier compute_cams for (B, k) classes: per chunk of classes, every class's gradient stacked and the
    features copied once per class, then the per-image map function (re-created here for the comparison)."""
    from camlab.cam_gradients import MAPS, Gradients

    out = []
    for c in range(0, classes.shape[1], chunk):
        cols = classes[:, c:c + chunk]
        with torch.inference_mode(False), torch.enable_grad():
            a = features.detach().clone().requires_grad_(True)
            logits = model.head(model.pooled(a))
            grads = []
            for j in range(cols.shape[1]):
                (g,) = torch.autograd.grad(logits.gather(1, cols[:, j:j + 1]).sum(), a, retain_graph=True)
                grads.append(g)
        g = torch.stack(grads, dim=1)  # (B, n, K, h, w)
        b, n = cols.shape
        a = a.detach().unsqueeze(1).expand(b, n, *a.shape[1:]).flatten(0, 1)  # the copy per class
        maps = MAPS[method](a, Gradients(g.flatten(0, 1).unsqueeze(1), torch.ones(b * n, 1, a.shape[1])))
        out.append(maps.view(b, n, *maps.shape[-2:]))
    return torch.cat(out, dim=1)


def section_classes(args) -> None:
    import torchcam.methods

    from crosscheck_cam_methods import TORCHCAM_CLASSES, camlab_model, image_batch, seeded_resnet18

    net = seeded_resnet18()
    model = camlab_model(net)
    x = image_batch(args.batch, args.size)
    with torch.inference_mode():
        model(x)  # warm-up: the first pass allocates and picks kernels
        fwd_t0 = time.perf_counter()
        feats = model(x)["features"].clone()
        fwd = time.perf_counter() - fwd_t0
    every = torch.arange(1000).expand(args.batch, 1000)
    print(f"resnet18 (seeded), {args.batch} images at {args.size} px, features {tuple(feats.shape[1:])}, maps of "
          f"all 1,000 classes per image ({args.batch * 1000} maps); forward pass {fwd:.2f} s; seconds with the "
          f"forward pass, peak MiB the maps add; torchcam timed on {min(1000, args.torchcam_classes)} classes, "
          f"scaled to 1,000")
    print(f"{'method':22s}{'camlab s':>10s}{'MiB':>8s}{'torchcam s':>12s}{'MiB':>8s}{'earlier s':>11s}{'MiB':>8s}"
          f"{'torchcam / camlab':>19s}")
    for method in args.methods:
        with torch.inference_mode():
            t, mem = peak(lambda: compute_cams(model, feats, every, method, images=x))
        t += fwd
        row = f"{method:22s}{t:10.2f}{mem:8.0f}"
        tc = None
        if method in TORCHCAM_CLASSES and method not in ("scorecam", "smoothgradcampp"):
            tnet = copy.deepcopy(net)
            kwargs = {"fc_layer": "fc"} if method == "cam" else {}
            with getattr(torchcam.methods, TORCHCAM_CLASSES[method])(tnet, target_layer="layer4",
                                                                     input_shape=tuple(x.shape[1:]), **kwargs) as ex:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t0 = time.perf_counter()
                    with torch.no_grad() if method == "cam" else torch.enable_grad():
                        scores = tnet(x)
                    tfwd = time.perf_counter() - t0
                    extra = {} if method == "cam" else {"retain_graph": True}
                    n_tc = min(1000, args.torchcam_classes)
                    tc, tmem = peak(lambda: [ex(class_idx=[c] * args.batch, scores=scores, **extra)[0]
                                             for c in range(n_tc)])
            tc = tc * 1000 / n_tc + tfwd
            row += f"{tc:12.2f}{tmem:8.0f}"
        else:
            row += f"{'-':>12s}{'-':>8s}"
        if method in GRADIENT_METHODS and method != "smoothgradcampp":
            te, emem = peak(lambda: earlier_formulation(model, feats, every, method))
            row += f"{te + fwd:11.2f}{emem:8.0f}"
        else:
            row += f"{'-':>11s}{'-':>8s}"
        row += f"{tc / t:19.1f}" if tc is not None else f"{'-':>19s}"
        print(row, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--section", choices=("cost", "peers", "classes"), default="cost")
    ap.add_argument("--rounds", type=int, default=None, help="default: 20 (cost), 5 (peers)")
    ap.add_argument("--batch", type=int, default=None, help="default: 64 (cost), 16 (peers, classes)")
    ap.add_argument("--backbone", default="tiny_cnn", help="cost only")
    ap.add_argument("--size", type=int, default=None, help="default: 64 (cost), 224 (peers, classes)")
    ap.add_argument("--classes", type=int, default=5, help="cost only: the model's classes")
    ap.add_argument("--width", type=int, default=16, help="tiny_cnn only: base width (the config's 16 -> K = 64)")
    ap.add_argument("--methods", nargs="*", default=None, help="default: every method (classes: the class-dependent)")
    ap.add_argument("--slow-batch", type=int, default=2, help="peers: images for Score-CAM and Ablation-CAM")
    ap.add_argument("--slow-rounds", type=int, default=3, help="peers: rounds for Score-CAM and Ablation-CAM")
    ap.add_argument("--torchcam-classes", type=int, default=1000,
                    help="classes: torchcam timed on this many classes, scaled to 1,000")
    args = ap.parse_args()
    cost = args.section == "cost"
    args.rounds = args.rounds or (20 if cost else 5)
    args.batch = args.batch or (64 if cost else 16)
    args.size = args.size or (64 if cost else 224)
    if args.methods is None:
        args.methods = [m for m in METHODS if args.section != "classes" or m not in ("eigencam", "scorecam")]
    {"cost": section_cost, "peers": section_peers, "classes": section_classes}[args.section](args)


if __name__ == "__main__":
    main()
