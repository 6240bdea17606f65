"""Cross-check camlab's CAM methods against pytorch-grad-cam 1.5.7 and torchcam 0.5.0 on identical weights.

Run with the PEERS venv (the peers are never camlab dependencies), from the repository root:

    /work/peers-venv/bin/python benchmarks/crosscheck_cam_methods.py [--n 2] [--size 224] [--methods gradcam ...]

One seeded torchvision resnet18 (random weights, eval mode): camlab sees it as :class:`ResNetCAM` (the trunk up to
``layer4``, GAP, the ``fc`` head: what ``camlab.models.pretrained.cam_model_from_torchvision_module`` builds, without
Lightning, which the peers venv lacks), each peer gets its own deep copy (their hooks never touch camlab's forward),
target layer ``layer4``. Same images (smooth random RGB, ImageNet-normalized), same target
classes (the predicted ones). Each peer's raw map at feature resolution is taken before it resizes anything:
pytorch-grad-cam's ``get_cam_image`` output (spied), then its ReLU (``BaseCAM`` applies one to every method);
torchcam's maps with ``normalized=False``. camlab's raw maps come from ``compute_cams``; HiResCAM's are signed, so
its ReLU is compared. Reported per method and peer: the largest absolute difference relative to the largest map
value, ``max |camlab - peer| / max |peer|``, over the batch; "equal" below 1e-4.

Where the definitions differ the script checks the difference is the stated one:

* Grad-CAM++: pytorch-grad-cam adds 1e-6 inside the alpha denominator; torchcam divides a copy (its alpha is
  ``g^2``, never divided); camlab follows the paper (``docs/cam-methods.md``). Each peer's formula, written
  here from camlab's own head gradients, reproduces that peer.
* Score-CAM: camlab upsamples each channel (bilinear, ``align_corners=False``) then min-max normalizes it (the
  paper's order); pytorch-grad-cam upsamples with ``align_corners=True``, torchcam normalizes before upsampling.
  The script re-runs camlab with each peer's mask convention (camlab's upsampling swapped for the peer's, here
  only) to show the rest is identical: the softmax over channels of the masked inputs' logits.
* EigenCAM: pytorch-grad-cam keeps the SVD's arbitrary sign; camlab's map correlates non-negatively with the
  channel-mean map. Reported: the images where pytorch-grad-cam's map is the negated projection.
* Smooth Grad-CAM++: torchcam draws its own noise and, after its noisy passes, combines the weights with the LAST
  noisy input's activations and gradient; with its noise at 1e-12 (camlab's ``sigma=0``) the remaining difference is
  its alpha, ``g^2 / (2 g^2 + sum_ab g^3 A + 1e-8)``: the 1e-8 against ``2 g^2`` of about 1e-6 for a 1000-class
  resnet18 head (GAP: ``g = W[c, k] / 49``), reproduced by that formula.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import warnings

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import camlab.cam_score  # noqa: E402
from camlab.cam import class_activation_maps  # noqa: E402
from camlab.cam_methods import METHODS, compute_cams  # noqa: E402

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GRADCAM_CLASSES = {"gradcam": "GradCAM", "gradcam_pp": "GradCAMPlusPlus", "xgradcam": "XGradCAM",
                   "layercam": "LayerCAM", "hirescam": "HiResCAM", "gradcam_elementwise": "GradCAMElementWise",
                   "ablationcam": "AblationCAM", "scorecam": "ScoreCAM", "eigencam": "EigenCAM"}
TORCHCAM_CLASSES = {"cam": "CAM", "gradcam": "GradCAM", "gradcam_pp": "GradCAMpp", "xgradcam": "XGradCAM",
                    "layercam": "LayerCAM", "scorecam": "ScoreCAM", "smoothgradcampp": "SmoothGradCAMpp"}


def seeded_resnet18(num_classes: int = 1000, seed: int = 0) -> torch.nn.Module:
    """A torchvision resnet18 with seeded random weights, eval mode, CPU (no download)."""
    import torchvision

    torch.manual_seed(seed)
    return torchvision.models.resnet18(weights=None, num_classes=num_classes).eval()


class ResNetCAM(torch.nn.Module):
    """A torchvision ResNet as a camlab CAM model (the interface of :mod:`camlab.cam_methods`): ``forward`` ->
    ``{"logits", "features"}``, GAP ``pooled``, the ``fc`` layer as ``head``; the same computation as
    ``cam_model_from_torchvision_module(net, "resnet18")`` (which needs Lightning)."""

    pool = "gap"

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool,
                                        net.layer1, net.layer2, net.layer3, net.layer4)
        self.head = net.fc
        self.eval()

    def pooled(self, features: torch.Tensor) -> torch.Tensor:
        return features.mean(dim=(2, 3))

    def cam(self, features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        return class_activation_maps(features, self.head.weight, classes)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.body(images)
        return {"logits": self.head(self.pooled(features)), "features": features}


def camlab_model(net: torch.nn.Module) -> ResNetCAM:
    """camlab's view of ``net``: a deep copy (the peers' hooks stay on theirs)."""
    return ResNetCAM(copy.deepcopy(net))


def image_batch(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Seeded smooth RGB images, ImageNet-normalized: the model input (n, 3, size, size)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand((n, 3, max(size // 16, 2), max(size // 16, 2)), generator=g)
    pix = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    pix = (pix + 0.05 * torch.randn(pix.shape, generator=g)).clamp(0, 1)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (pix - mean) / std


def gradcam_raw(method: str, net: torch.nn.Module, x: torch.Tensor, classes: list[int], **kwargs) -> np.ndarray:
    """pytorch-grad-cam's raw (B, h, w) map before its ReLU and resize: the spied ``get_cam_image`` output."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    net = copy.deepcopy(net)
    cam = getattr(pytorch_grad_cam, GRADCAM_CLASSES[method])(net, target_layers=[net.layer4], **kwargs)
    seen = []
    inner = cam.get_cam_image

    def spy(*args, **kw):
        out = inner(*args, **kw)
        seen.append(np.array(out, dtype=np.float64))
        return out

    cam.get_cam_image = spy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in classes])
    cam.activations_and_grads.release()
    return seen[-1]


def torchcam_raw(method: str, net: torch.nn.Module, x: torch.Tensor, classes: list[int], **kwargs) -> np.ndarray:
    """torchcam's raw (B, h, w) map (``normalized=False``: its ReLU, no normalization, feature resolution)."""
    import torchcam.methods

    net = copy.deepcopy(net)
    extra = {"fc_layer": "fc"} if method == "cam" else {}
    cls = getattr(torchcam.methods, TORCHCAM_CLASSES[method])
    with cls(net, target_layer="layer4", input_shape=tuple(x.shape[1:]), **extra, **kwargs) as extractor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if method in ("cam", "scorecam"):
                with torch.no_grad():
                    scores = net(x)
            else:
                scores = net(x)
            maps = extractor(class_idx=list(classes), scores=scores, normalized=False)
    return maps[0].detach().double().numpy()


def peer_pp_formula(model, feats, classes, peer: str) -> np.ndarray:
    """A peer's Grad-CAM++ weights written from camlab's head gradients (float64), then ``ReLU(sum_k w_k A^k)``."""
    from camlab.cam_gradients import class_gradients

    a, gr = class_gradients(model, feats, classes.view(-1, 1))
    a, g = a.double(), gr.full()[:, 0].double()  # (B, K, h, w)
    g2, g3 = g * g, g * g * g
    if peer == "grad-cam":  # eps 1e-6 in the denominator, alpha zeroed where g == 0
        alpha = torch.where(g != 0, g2 / (2 * g2 + a.sum(dim=(2, 3), keepdim=True) * g3 + 1e-6), 0.0)
    elif peer == "torchcam":  # the division lands on a copy: alpha stays g^2
        alpha = g2
    else:  # torchcam's Smooth Grad-CAM++ at zero noise: sum over positions of g^3 A, eps 1e-8
        alpha = g2 / (2 * g2 + (g3 * a).sum(dim=(2, 3), keepdim=True) + 1e-8)
    w = (alpha * torch.relu(g)).sum(dim=(2, 3))  # (B, K)
    return torch.relu(torch.einsum("bk,bkhw->bhw", w, a)).numpy()


def rel_diff(ours: np.ndarray, peer: np.ndarray) -> float:
    scale = float(np.abs(peer).max()) or 1.0
    return float(np.abs(ours - peer).max()) / scale


def with_masks(masks, method, model, feats, classes, x) -> np.ndarray:
    """camlab's ``method`` with its Score-CAM masks (upsample, then normalize) replaced by ``masks`` (here only)."""
    saved = camlab.cam_score.upsample, camlab.cam_score.minmax_normalize
    camlab.cam_score.upsample, camlab.cam_score.minmax_normalize = masks, (lambda m: m)
    try:
        return compute_cams(model, feats, classes, method, images=x).double().numpy()
    finally:
        camlab.cam_score.upsample, camlab.cam_score.minmax_normalize = saved


def gradcam_masks(m: torch.Tensor, size) -> torch.Tensor:
    """pytorch-grad-cam's Score-CAM mask: UpsamplingBilinear2d (align_corners=True), then (m - min) / (max - min + 1e-8)."""
    up = F.interpolate(m.unsqueeze(1), size=size, mode="bilinear", align_corners=True).squeeze(1)
    lo, hi = up.flatten(1).amin(1).view(-1, 1, 1), up.flatten(1).amax(1).view(-1, 1, 1)
    return (up - lo) / (hi - lo + 1e-8)


def torchcam_masks(m: torch.Tensor, size) -> torch.Tensor:
    """torchcam's Score-CAM mask: (m - min) / (max + 1e-8) after subtracting min, at feature resolution, then
    bilinear (align_corners=False)."""
    lo = m.flatten(1).amin(1).view(-1, 1, 1)
    m = m - lo
    m = m / (m.flatten(1).amax(1).view(-1, 1, 1) + 1e-8)
    return F.interpolate(m.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2, help="images")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--methods", nargs="*", default=list(METHODS))
    args = ap.parse_args()
    net = seeded_resnet18()
    model = camlab_model(net)
    x = image_batch(args.n, args.size)
    with torch.inference_mode():
        out = model(x)
    feats, classes = out["features"].clone(), out["logits"].argmax(1)
    cls = classes.tolist()
    print(f"resnet18 (seeded, random weights), {args.n} images at {args.size} px, features "
          f"{tuple(feats.shape[1:])}, predicted classes {cls}")
    print(f"{'method':22s}{'pytorch-grad-cam':>22s}{'torchcam':>14s}  note")
    for method in args.methods:
        ours = compute_cams(model, feats, classes, method, images=x, options=(
            {"sigma": 0.0, "n_samples": 1} if method == "smoothgradcampp" else None)).double().numpy()
        cmp_ours = np.maximum(ours, 0) if method == "hirescam" else ours
        cells, notes = [], []
        if method in GRADCAM_CLASSES:
            peer = gradcam_raw(method, net, x, cls, **({"batch_size": 64} if method in ("ablationcam",) else {}))
            if method == "eigencam":
                flips = [i for i in range(len(cls)) if rel_diff(ours[i], np.maximum(peer[i], 0)) > 1e-4]
                for i in flips:
                    peer[i] = -peer[i]
                notes.append(f"grad-cam's SVD sign is the background's on images {flips}" if flips else
                             "same sign on every image")
            d = rel_diff(cmp_ours, np.maximum(peer, 0))
            cells.append(f"{d:.1e}")
            if method == "gradcam_pp":
                notes.append(f"grad-cam's formula: {rel_diff(peer_pp_formula(model, feats, classes, 'grad-cam'), np.maximum(peer, 0)):.1e}")
            if method == "scorecam":
                same = with_masks(gradcam_masks, method, model, feats, classes, x)
                notes.append(f"with grad-cam's masks {rel_diff(same, np.maximum(peer, 0)):.1e}")
        else:
            cells.append("-")
        if method in TORCHCAM_CLASSES:
            kwargs = {"batch_size": 64} if method == "scorecam" else {}
            if method == "smoothgradcampp":
                kwargs = {"num_samples": 1, "std": 1e-12}
            peer = torchcam_raw(method, net, x, cls, **kwargs)
            cells.append(f"{rel_diff(cmp_ours, peer):.1e}")
            if method in ("gradcam_pp", "smoothgradcampp"):
                which = "torchcam" if method == "gradcam_pp" else "torchcam-smooth"
                notes.append(f"torchcam's formula: {rel_diff(peer_pp_formula(model, feats, classes, which), peer):.1e}")
            if method == "scorecam":
                same = with_masks(torchcam_masks, method, model, feats, classes, x)
                notes.append(f"with torchcam's masks {rel_diff(same, peer):.1e}")
        else:
            cells.append("-")
        print(f"{method:22s}{cells[0]:>22s}{cells[1]:>14s}  {'; '.join(notes)}", flush=True)


if __name__ == "__main__":
    main()
