"""What CAM + localization metrics add to the default experiment's validation epoch.

Runs ``trainer.validate`` on the default config's validation split (1,000 images, 64 px) without the
CAMLocalization callback ("plain"), with it as configured (metric updates and the overlay grid on the
background worker, ``background=True``) and with ``background=False`` (everything on the main thread).
MaxBoxAccV2 + PxAP + top-k loc every epoch, curves CSV/PNG and overlays; MaxBoxAcc is test-only by default.
The three are timed in every round, in rotating order, in one process; the reported figures are medians of
the per-round ratios. The model is trained for one short epoch first so that its CAMs look like a real run's.

The maps are built on the main thread and the worker starts no OpenMP team (a test checks it), so every variant
runs in the same threading regime (a second team on the worker would make libgomp throttle its spin-waiting for
the whole process, see METRICS_NOTES.md).

``--breakdown`` also times each piece of the callback's work on the same batches in isolation (model
forward, CAM einsum, upsampling, the fused normalize/uint8 pass, each metric's update, compute, curves CSV
and plot, overlay collection, grid rendering, JPEG and PNG encoding). ``WSOLMetrics.update`` makes one kernel
call per batch (the fixed localization threshold rides along with the grid); alternating order, median over
rounds.

    python benchmarks/bench_validation.py [--rounds 5] [--breakdown] [--torch-threads N] [overrides ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate


def breakdown(model, dm, cb, rounds: int) -> None:
    """Per-component times of the callback's work on the validation batches (see the module docstring)."""
    import numpy as np

    from camlab.cam import upsample
    from camlab.wsol import ScoreMaps, pxap_histograms, scan_levels
    from camlab.viz import encode_jpeg, encode_png, plot_curves, render_grid, write_curves_csv

    model.eval()
    dev = next(model.parameters()).device
    batches = [{k: (v.to(dev) if k in ("image", "label") else v) for k, v in b.items()} for b in dm.val_dataloader()]
    n = sum(b["label"].shape[0] for b in batches)
    size = tuple(batches[0]["image"].shape[-2:])
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    with torch.no_grad():
        outs = [model(b["image"]) for b in batches]
        raw = [model.cam(o["features"], b["label"]) for o, b in zip(outs, batches)]
        ups = [upsample(r, size) for r in raw]
    sms = [ScoreMaps.normalize(u) for u in ups]
    wm = cb._new_metrics("val")
    grid = wm.thresholds
    tmp = Path(tempfile.mkdtemp())

    def forward():
        for b in batches:
            model(b["image"])
        sync()

    def cam():
        for o, b in zip(outs, batches):
            model.cam(o["features"], b["label"])
        sync()

    def up():
        for r in raw:
            upsample(r, size)
        sync()

    def normalize():
        for u in ups:
            ScoreMaps.normalize(u)

    loc_grid = np.append(grid, cb.cam_threshold)

    def v2_kernel():
        for s, b in zip(sms, batches):
            scan_levels(s, b["boxes"], b["num_boxes"], loc_grid)

    def pxap_kernel():
        for s, b in zip(sms, batches):
            pxap_histograms(s, b["mask"], grid)

    def all_updates():
        wm.reset()
        for s, b, o in zip(sms, batches, outs):
            wm.update(s, logits=o["logits"], labels=b["label"], boxes=b["boxes"], num_boxes=b["num_boxes"],
                      masks=b["mask"], index=b["index"])

    all_updates()
    curves = wm.report().curves

    def compute():
        wm.report()

    def overlays():
        cb._overlays, cb._grid, out_dir, take = [], None, cb.output_dir, cb.num_overlays
        cb.output_dir, cb.num_overlays = None, take + 1  # collection only: the grid is timed below
        b = batches[0]
        _, pred_maps, score, pred = cb._cam_maps(model, outs[0]["features"], outs[0]["logits"], b, size, take)
        gt = [b["boxes"][i, : int(b["num_boxes"][i])].tolist() for i in range(take)]
        meta = (dm.mean, dm.std, getattr(dm, "class_names", None), 0)
        cb._add_overlays(b["image"][:take], pred_maps, gt, b["label"][:take], pred, score, b["index"][:take], meta)
        cb.output_dir, cb.num_overlays = out_dir, take

    overlays()
    samples = list(cb._overlays)
    image = np.asarray(render_grid(samples))
    fns = {
        "model forward (for scale)": forward,
        "CAM einsum": cam,
        "upsample": up,
        "normalize + uint8 (fused)": normalize,
        "box kernel (scan_levels)": v2_kernel,
        "PxAP histograms": pxap_kernel,
        "WSOLMetrics.update (all)": all_updates,
        "report (compute + curves + rows)": compute,
        "overlay collection (+ batch CAMs)": overlays,
        "curves CSV": lambda: write_curves_csv(curves, tmp / "c.csv"),
        "curves PNG plot": lambda: plot_curves(curves, tmp / "c.png", title="val epoch 0"),
        "overlay grid render": lambda: render_grid(samples),
        "overlay grid JPEG encode (default)": lambda: encode_jpeg(image),
        "overlay grid PNG encode": lambda: encode_png(image),
    }
    times = {k: [] for k in fns}
    with torch.no_grad():
        for f in fns.values():
            f()
        for r in range(rounds):
            for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
                t0 = time.perf_counter()
                fns[k]()
                times[k].append(time.perf_counter() - t0)
    print(f"\nbreakdown over {n} images ({len(batches)} batches), median of {rounds} rounds, "
          f"load {os.getloadavg()[0]:.2f}, torch threads {torch.get_num_threads()}:")
    for k, v in times.items():
        m = statistics.median(v)
        print(f"  {k:34s} {m * 1e3:8.2f} ms/epoch {m / n * 1e3:8.4f} ms/img")


def main() -> None:
    import lightning.pytorch as L

    from camlab.callbacks import CAMLocalization
    from camlab.runtime.config import instantiate_group

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--breakdown", action="store_true", help="also time each piece of the callback's work")
    ap.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--accelerator", default="cpu", help="cpu (default) or gpu: where the forward pass runs")
    ap.add_argument("--precision", default="32", help="Lightning precision, e.g. 32, 16-mixed, bf16-mixed")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    with tempfile.TemporaryDirectory() as tmp, initialize_config_module("camlab.conf", version_base="1.3"):
        cfg = compose("train", overrides=args.overrides)
        cfg.paths.output_dir = tmp
        cfg.paths.checkpoint_dir = tmp + "/checkpoints"
        torch.manual_seed(0)
        dm = instantiate(cfg.data, _convert_="partial")
        model = instantiate(cfg.model, _convert_="partial")
        hw = dict(accelerator=args.accelerator, devices=1, precision=args.precision)
        L.Trainer(**hw, max_epochs=1, limit_train_batches=20, limit_val_batches=0, logger=False,
                  enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False).fit(model, dm)
        cam_cb = next(c for c in instantiate_group(cfg.callbacks) if isinstance(c, CAMLocalization))
        sync_cb = next(c for c in instantiate_group(cfg.callbacks) if isinstance(c, CAMLocalization))
        sync_cb.background = False

        def validate(cb) -> float:
            trainer = L.Trainer(**hw, logger=False, callbacks=[cb] if cb else [],
                                enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
            start = time.perf_counter()
            trainer.validate(model, datamodule=dm, verbose=False)
            return time.perf_counter() - start

        variants = {"plain": None, "background": cam_cb, "main thread": sync_cb}
        for cb in variants.values():  # warm-up: numba cache load, dataset render
            validate(cb)
        times = {k: [] for k in variants}
        for r in range(args.rounds):
            order = list(variants)[r % 3:] + list(variants)[: r % 3]
            for k in order:
                times[k].append(validate(variants[k]))
            print(f"round {r}: " + ", ".join(f"{k} {times[k][-1]:.3f} s" for k in variants)
                  + f"  (order {'/'.join(order)}, load {os.getloadavg()[0]:.2f})", flush=True)
        if cam_cb.last_results.get("val") != sync_cb.last_results.get("val"):
            raise AssertionError("background and main-thread callbacks gave different results")
        if args.breakdown:
            breakdown(model, dm, sync_cb, args.rounds)
    n = len(dm.val_dataloader().dataset)
    p = statistics.median(times["plain"])
    policy = os.environ.get("OMP_WAIT_POLICY", "")
    print(f"\n{n} images on {args.accelerator} (precision {args.precision}), load average {os.getloadavg()[0]:.2f}, torch threads {torch.get_num_threads()}, "
          f"OMP_WAIT_POLICY={policy or 'unset'}; "
          f"plain validation {p:.3f} s ({1000 * p / n:.3f} ms/img, median)")
    for k in ("background", "main thread"):
        ratios = [c / q for c, q in zip(times[k], times["plain"])]
        added = [(c - q) / n * 1000 for c, q in zip(times[k], times["plain"])]
        print(f"with CAM + metrics ({k:11s}): {statistics.median(times[k]):.3f} s; per-round overhead median "
              f"+{100 * (statistics.median(ratios) - 1):.0f}% (range +{100 * (min(ratios) - 1):.0f}% .. "
              f"+{100 * (max(ratios) - 1):.0f}%), {statistics.median(added):.3f} ms/img added")
    print("results identical in both modes:", {k: round(v, 2) for k, v in cam_cb.last_results.get("val", {}).items()
                                             if k in ("MaxBoxAccV2", "PxAP", "gt_known_loc")})


if __name__ == "__main__":
    main()
