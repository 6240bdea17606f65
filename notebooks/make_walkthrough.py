"""Write ``notebooks/walkthrough.ipynb`` from the cells below (the notebook's source of truth).

    python notebooks/make_walkthrough.py            # write the notebook without outputs
    python notebooks/make_walkthrough.py --execute  # ... and run it top to bottom, saving the outputs

Edit the cells here, not in the .ipynb, and re-run this script; ``tests/test_notebook.py`` executes the
written notebook (with ``CAMLAB_NOTEBOOK_FAST=1``) and checks it is in sync with this file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "walkthrough.ipynb"

CELLS: list[tuple[str, str]] = [
    ("md", """\
# camlab walkthrough: CAMs, boxes, thresholds, Grad-CAM

This notebook uses camlab from plain Python (no Hydra, no command line):

1. train a small CNN on the embedded synthetic dataset (CPU, about a minute),
2. look at the class activation maps (CAMs) and the boxes cut from them for a few images,
3. sweep the CAM threshold and plot box accuracy per threshold (the curve behind MaxBoxAccV2),
4. compare CAM with Grad-CAM and Grad-CAM++ side by side, and their localization metrics.

Install camlab first (`pip install -e .` in the repository); nothing is downloaded. The test suite runs this
notebook with `CAMLAB_NOTEBOOK_FAST=1` (fewer images and one epoch, same code)."""),
    ("code", """\
import os
import sys
import time

# Parameters. The test suite sets CAMLAB_NOTEBOOK_FAST=1: a smaller run through the same code.
FAST = os.environ.get("CAMLAB_NOTEBOOK_FAST", "0") == "1"
NUM_TRAIN, NUM_VAL, EPOCHS = (256, 64, 1) if FAST else (1200, 200, 6)
IMAGE_SIZE, BATCH_SIZE, SEED = 64, 64, 0
CAM_THRESHOLD = 0.2  # the CAM paper's cut: foreground = map > 0.2 * max
t_start = time.perf_counter()
print(sys.executable)"""),
    ("md", """\
## 1. Train a small model

`SyntheticShapes` renders textured shapes with exact boxes and masks; `tiny_cnn` maps a 64 px image to a
16×16×64 feature map `A`, followed by global average pooling (GAP) and a linear layer. The `CAMLocalization`
callback computes the localization metrics on each validation epoch from the features of the same forward
pass."""),
    ("code", """\
import logging
from functools import partial

import lightning.pytorch as L
import torch

from camlab.callbacks import CAMLocalization
from camlab.data import SyntheticShapes, WSOLDataModule
from camlab.models import CAMClassifier
from camlab.models.backbones import create_backbone

logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no banners about GPUs and tips
L.seed_everything(SEED, verbose=False)
shapes = partial(SyntheticShapes, num_classes=5, image_size=IMAGE_SIZE, seed=SEED)
dm = WSOLDataModule(
    train_dataset=partial(shapes, split="train", length=NUM_TRAIN, hflip=True),
    val_dataset=partial(shapes, split="val", length=NUM_VAL),
    batch_size=BATCH_SIZE,
)
model = CAMClassifier(
    create_backbone("tiny_cnn", pretrained=False, width=16),
    num_classes=dm.num_classes,
    pool="gap",
    optimizer=partial(torch.optim.AdamW, lr=3e-3, weight_decay=1e-4),
    scheduler=partial(torch.optim.lr_scheduler.OneCycleLR, pct_start=0.2),
)
trainer = L.Trainer(
    max_epochs=EPOCHS, accelerator="cpu", logger=False, enable_checkpointing=False,
    enable_progress_bar=False, enable_model_summary=False,
    callbacks=[CAMLocalization(cam_method="cam", cam_threshold=CAM_THRESHOLD, num_overlays=0, write_curves=False)],
)
t0 = time.perf_counter()
trainer.fit(model, datamodule=dm)
print(f"trained {EPOCHS} epoch(s) on {NUM_TRAIN} images in {time.perf_counter() - t0:.1f} s")
for key in ("val/acc", "val/loc/gt_known_loc", "val/loc/top1_loc", "val/loc/MaxBoxAccV2", "val/loc/PxAP"):
    print(f"{key:24s} {float(trainer.callback_metrics[key]):7.3f}")"""),
    ("md", """\
## 2. CAMs and boxes for a few images

`compute_cams(model, features, classes, method)` gives raw maps at feature resolution (16×16 here). The
callback, and this cell, upsample them bilinearly to the image size, min-max normalize them to [0, 1], and
cut them at `CAM_THRESHOLD` × max; the box of the largest connected component is the prediction (red),
the ground truth is green."""),
    ("code", """\
import matplotlib.pyplot as plt
import numpy as np

from camlab.cam import minmax_normalize, upsample
from camlab.cam_methods import compute_cams
from camlab.wsol import boxes_at_threshold, scoremap_to_uint8
from camlab.viz import denormalize, heatmap_overlay

model.eval()
batch = next(iter(dm.val_dataloader()))
N_SHOW = 6
images = batch["image"][:N_SHOW]
with torch.no_grad():
    out = model(images)  # {"logits": (B, C), "features": A (B, K, h, w)}
pred = out["logits"].argmax(dim=1)
names = dm.class_names


def normalized_maps(method, features, classes, size):
    \"\"\"Raw maps -> bilinear upsample to the image size -> min-max normalize to [0, 1]: (B, H, W).\"\"\"
    return minmax_normalize(upsample(compute_cams(model, features, classes, method), size))


def draw(ax, i, cam, title):
    img = denormalize(images[i].numpy(), dm.mean, dm.std)
    ax.imshow(heatmap_overlay(img, cam))
    for x0, y0, x1, y1 in batch["boxes"][i, : int(batch["num_boxes"][i])].tolist():
        ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="lime", lw=1.5))
    x0, y0, x1, y1 = boxes_at_threshold(scoremap_to_uint8(cam), CAM_THRESHOLD, multi_contour=False)[0]
    ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="red", lw=1.5))
    ax.set_title(title, fontsize=8)
    ax.axis("off")


cams = normalized_maps("cam", out["features"], pred, images.shape[-2:]).numpy()  # CAM of the predicted class
fig, axes = plt.subplots(2, N_SHOW, figsize=(2 * N_SHOW, 4.2))
for i in range(N_SHOW):
    axes[0, i].imshow(denormalize(images[i].numpy(), dm.mean, dm.std))
    axes[0, i].set_title(f"true: {names[int(batch['label'][i])]}", fontsize=8)
    axes[0, i].axis("off")
    draw(axes[1, i], i, cams[i], f"CAM of {names[int(pred[i])]}")
fig.tight_layout()
plt.show()"""),
    ("md", """\
## 3. Sweep the CAM threshold

`WSOLMetrics` accumulates, per image, the best IoU of any box at each of 100 thresholds (all contours:
MaxBoxAccV2; the largest contour: MaxBoxAcc) and a pixel histogram for PxAP. Its `report().curves` are the box
accuracy per threshold; the MaxBoxAcc numbers are the maxima of these curves."""),
    ("code", """\
from camlab.wsol import WSOLMetrics


def evaluate(method):
    \"\"\"WSOL metrics of the ground-truth class's maps over the validation split.\"\"\"
    metrics = WSOLMetrics(cam_thresholds=0.01, masks=True, max_box_acc=True, topk=(1,),
                          loc_cam_threshold=CAM_THRESHOLD)
    for b in dm.val_dataloader():
        with torch.no_grad():
            o = model(b["image"])
        maps = normalized_maps(method, o["features"], b["label"], b["image"].shape[-2:])
        metrics.update(maps, boxes=b["boxes"], num_boxes=b["num_boxes"], masks=b["mask"],
                       logits=o["logits"], labels=b["label"], index=b["index"])
    report = metrics.report()
    return report.scalars, report.curves


results, curves = {}, {}
results["cam"], curves["cam"] = evaluate("cam")
t = np.asarray(curves["cam"]["threshold"])
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
for iou in (30, 50, 70):
    axes[0].plot(t, curves["cam"][f"MaxBoxAccV2/IoU{iou}"], label=f"all contours, IoU {iou}")
axes[0].plot(t, curves["cam"]["MaxBoxAcc/IoU50"], "k--", label="largest contour, IoU 50")
axes[0].axvline(CAM_THRESHOLD, color="gray", lw=0.8)
axes[0].set_xlabel("CAM threshold")
axes[0].set_ylabel("box accuracy (%)")
axes[0].legend(fontsize=7)
axes[1].plot(curves["cam"]["PxAP/recall"], curves["cam"]["PxAP/precision"])
axes[1].set_xlabel("pixel recall")
axes[1].set_ylabel("pixel precision")
axes[1].set_title(f"PxAP = {results['cam']['PxAP']:.1f}", fontsize=9)
fig.tight_layout()
plt.show()
best = int(np.argmax(curves["cam"]["MaxBoxAcc/IoU50"]))
print(f"MaxBoxAcc {results['cam']['MaxBoxAcc']:.1f} at threshold {t[best]:.2f}; "
      f"at the fixed {CAM_THRESHOLD}: {curves['cam']['MaxBoxAcc/IoU50'][round(CAM_THRESHOLD * 100)]:.1f}")"""),
    ("md", """\
## 4. CAM vs Grad-CAM vs Grad-CAM++

Grad-CAM weights each channel by the mean gradient of the class score, `α_k = mean_ij ∂y^c/∂A^k_ij`, and
keeps the positive part of `Σ_k α_k A^k`. camlab gets `∂y^c/∂A` by re-running only the pooling and the
linear head on the features (no second backbone pass). For GAP + linear, `∂y^c/∂A^k_ij = W[c, k] / (h w)`,
so **Grad-CAM = ReLU(CAM) / (h w)**: it is CAM with its negative part cut off. Grad-CAM++ weights
gradients per pixel and keeps only channels with positive gradients."""),
    ("code", """\
methods = ("cam", "gradcam", "gradcam_pp")
feats, cls = out["features"], pred
h, w = feats.shape[-2:]
raw_cam, raw_grad = compute_cams(model, feats, cls, "cam"), compute_cams(model, feats, cls, "gradcam")
err = (raw_grad * h * w - torch.relu(raw_cam)).abs().max().item()
print(f"max |Grad-CAM * h * w - ReLU(CAM)| = {err:.2e} (map values up to {raw_cam.abs().max().item():.1f})")
assert err <= 1e-4 * max(1.0, raw_cam.abs().max().item())

fig, axes = plt.subplots(len(methods), N_SHOW, figsize=(2 * N_SHOW, 2.1 * len(methods)))
for r, method in enumerate(methods):
    maps = normalized_maps(method, feats, cls, images.shape[-2:]).numpy()
    for i in range(N_SHOW):
        draw(axes[r, i], i, maps[i], f"{method}: {names[int(pred[i])]}")
fig.tight_layout()
plt.show()

for method in methods[1:]:
    results[method], curves[method] = evaluate(method)
keys = ("gt_known_loc", "top1_loc", "MaxBoxAcc", "MaxBoxAccV2", "PxAP", "PIoU")
print(f"{'method':12s}" + "".join(f"{k:>14s}" for k in keys))
for method in methods:
    print(f"{method:12s}" + "".join(f"{results[method][k]:14.1f}" for k in keys))

plt.figure(figsize=(5, 3.5))
for method in methods:
    plt.plot(t, curves[method]["MaxBoxAccV2/IoU50"], label=method)
plt.xlabel("CAM threshold")
plt.ylabel("box accuracy, IoU 50 (%)")
plt.legend()
plt.show()"""),
    ("md", """\
The same comparison from the command line, one job per method into one sweep directory, then a table:

```bash
camlab-train -m cam_method=cam,gradcam,gradcam_pp
camlab-compare outputs/train/multiruns/<timestamp>
```"""),
    ("code", """\
print(f"walkthrough finished in {time.perf_counter() - t_start:.1f} s")"""),
]


def build() -> nbformat.NotebookNode:
    nb = new_notebook(cells=[new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--execute", action="store_true", help="run the notebook and save it with its outputs")
    args = ap.parse_args()
    nb = build()
    if args.execute:
        from nbclient import NotebookClient

        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()
    nbformat.write(nb, NOTEBOOK)
    print(f"wrote {NOTEBOOK}")


if __name__ == "__main__":
    main()
