"""The CAM methods: one table, :data:`METHODS`, and one entry point, :func:`compute_cams`.

Every method maps the last-layer features ``A`` (B, K, h, w) of a forward pass and a class per image (or n classes)
to a raw (unnormalized) map (B, h, w) (or (B, n, h, w)):

* ``cam`` (free): ``Σ_k W[c, k] A^k`` from the linear head (:mod:`camlab.cam`).
* gradient methods (a fraction of a forward pass): ``gradcam``, ``gradcam_pp``, ``xgradcam``, ``layercam``,
  ``hirescam``, ``gradcam_elementwise`` from the head's gradients ``dy^c/dA`` (:mod:`camlab.cam_gradients`:
  the head re-run on the features with autograd, no second backbone pass, no hooks).
* ``ablationcam``: closed-form for GAP + a linear head, else ``K`` head passes per image
  (:mod:`camlab.cam_score`).
* ``eigencam``: the first principal component of ``A`` (class-agnostic; :func:`eigencam_map`).
* methods that run the model again on the input ``images``: ``scorecam`` (``K`` forward passes per image) and
  ``smoothgradcampp`` (``n_samples`` forward passes per batch).

Method options (:data:`OPTIONS`, the ``cam_method`` config group's keys besides ``name``) are checked by
:func:`check_options`.

What a model must offer (``model`` below):

* ``head_forward(features) -> logits``, or else ``pooled(features) -> (B, K)`` and ``head((B, K)) -> logits``
  (:class:`camlab.models.CAMClassifier` has the latter). ``pooled`` must pool each channel on its own (global
  pooling: GAP, GMP, ...), which is what lets the gradients of many classes share one pooling derivative. The
  head must treat the images of a batch independently (true for pooling + linear / MLP heads in eval mode).
* for ``"cam"`` only: ``cam(features, classes)``, or a linear ``head`` (``nn.Linear``) whose weight gives
  ``M^c = Σ_k W[c, k] A^k``. CAM is defined for a linear head only; the other methods work for any head.
* for ``scorecam`` / ``smoothgradcampp``: ``model(images)`` returning ``{"logits", "features"}`` (or the logits
  alone, for ``scorecam``), in eval mode.

Inference mode. Lightning runs validation under ``torch.inference_mode()``. :func:`compute_cams` works inside it
and on its tensors after leaving it: it runs without autograd except where it differentiates, and there it leaves
inference mode locally and clones the features (the only extra memory, one copy of ``A``).

Identities (tested): for a GAP + linear model, ``dy^c/dA^k_ij = W[c, k] / (h w)``, so Grad-CAM and XGrad-CAM
both equal ``ReLU(CAM) / (h w)``, HiResCAM equals ``CAM / (h w)``, Grad-CAM element-wise equals
``Σ_k ReLU(W[c, k] A^k) / (h w)``, Smooth Grad-CAM++ equals Grad-CAM++, and Ablation-CAM's weights are
``W[c, k] mean(A^k) / y^c``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from camlab.cam import class_activation_maps
from camlab.cam_gradients import MAPS, gradient_maps, head_logits, smoothgradcampp_maps
from camlab.cam_score import ablationcam_maps, scorecam_maps
from camlab.errors import ConfigError

__all__ = ["METHODS", "GRADIENT_METHODS", "IMAGE_METHODS", "OPTIONS", "check_method", "check_options",
           "compute_cams", "eigencam_map", "head_logits", "linear_cam"]

METHODS = ("cam", "gradcam", "gradcam_pp", "xgradcam", "layercam", "hirescam", "gradcam_elementwise",
           "ablationcam", "scorecam", "eigencam", "smoothgradcampp")
#: Methods from the head's gradients (any head).
GRADIENT_METHODS = ("gradcam", "gradcam_pp", "xgradcam", "layercam", "hirescam", "gradcam_elementwise",
                    "smoothgradcampp")
#: Methods that run the model on the input images again (``compute_cams(..., images=...)``).
IMAGE_METHODS = ("scorecam", "smoothgradcampp")
#: Each method's options and their defaults (the keys of its ``conf/cam_method/<name>.yaml`` besides ``name``).
OPTIONS: dict[str, dict[str, Any]] = {
    "ablationcam": {"batch_size": 256},  # ablated feature maps per head pass (the general path only)
    "scorecam": {"batch_size": 64},  # masked images per forward pass
    "smoothgradcampp": {"n_samples": 8, "sigma": 0.3, "seed": 0},
}


def check_method(method: str) -> str:
    """Return ``method`` if it is known, else raise one ``ValueError`` listing the available methods.

    >>> check_method("gradcam")
    'gradcam'
    """
    if method not in METHODS:
        raise ValueError(f"Unknown CAM method {method!r}. Available: {', '.join(METHODS)}")
    return method


def _positive_int(key: str, value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"cam_method.{key} must be an integer >= 1 ({what}), got {value!r}",
                          settings=[f"cam_method.{key}"])
    return value


def check_options(method: str, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``method``'s options: :data:`OPTIONS` defaults updated by ``options``, checked; one
    :class:`~camlab.errors.ConfigError` line naming the key otherwise.

    >>> check_options("scorecam", {"batch_size": 32})
    {'batch_size': 32}
    >>> check_options("smoothgradcampp", {"sigma": -1})
    Traceback (most recent call last):
    ...
    camlab.errors.ConfigError: cam_method.sigma must be a number >= 0 (the noise's standard deviation, in the model's input units), got -1
    """
    check_method(method)
    known = OPTIONS.get(method, {})
    given = dict(options or {})
    unknown = sorted(set(given) - set(known))
    if unknown:
        keys = ", ".join(known) if known else "none"
        raise ConfigError(f"cam_method={method} has no key {', '.join(unknown)} (its keys: {keys})",
                          settings=[f"cam_method.{k}" for k in unknown])
    opts = {**known, **given}
    if "batch_size" in opts:
        what = "masked images per forward pass" if method == "scorecam" else "ablated feature maps per head pass"
        _positive_int("batch_size", opts["batch_size"], what)
    if "n_samples" in opts:
        _positive_int("n_samples", opts["n_samples"], "noisy inputs per batch")
    if "sigma" in opts:
        sigma = opts["sigma"]
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma < 0:
            raise ConfigError(f"cam_method.sigma must be a number >= 0 (the noise's standard deviation, in the "
                              f"model's input units), got {sigma!r}", settings=["cam_method.sigma"])
        opts["sigma"] = float(sigma)
    if "seed" in opts and (isinstance(opts["seed"], bool) or not isinstance(opts["seed"], int)):
        raise ConfigError(f"cam_method.seed must be an integer, got {opts['seed']!r}", settings=["cam_method.seed"])
    return opts


def linear_cam(model: nn.Module, features: Tensor, classes: Tensor) -> Tensor:
    """CAM ``Σ_k W[c, k] A^k``: ``model.cam`` if the model has one, else from a linear ``model.head``."""
    cam = getattr(model, "cam", None)
    if callable(cam):
        return cam(features, classes)
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        return class_activation_maps(features, head.weight, classes)
    raise TypeError(
        f"CAM needs a linear classifier head (or a `cam(features, classes)` method); {type(model).__name__} has "
        f"neither. Use another method: {', '.join(m for m in METHODS if m != 'cam')}"
    )


def eigencam_map(features: Tensor) -> Tensor:
    """EigenCAM (Muhammad & Yeasin 2020): ``ReLU(±X v_1)``, the features projected on their first principal
    component; class-agnostic. ``(B, K, h, w) -> (B, h, w)``.

    ``X`` is each image's ``(h w) × K`` matrix of activations centred over positions (as pytorch-grad-cam), ``v_1``
    its first right singular vector. The sign of ``v_1`` is arbitrary (pytorch-grad-cam keeps the SVD's, so its map
    is sometimes the background); here it is the one whose projection correlates non-negatively with the
    channel-mean map ``mean_k A^k`` (equivalently ``Σ_k v_1k >= 0``): the map follows where the features are
    strong. Computed in float64 from the smaller of the ``hw × hw`` and ``K × K`` Gram matrices.

    >>> a = torch.zeros(1, 2, 1, 3); a[0, :, 0, 1] = torch.tensor([3.0, 4.0])  # one strong position
    >>> [round(v, 4) for v in eigencam_map(a)[0, 0].tolist()]  # centred: (-1, 2, -1) x 5/3 along v_1 = (0.6, 0.8)
    [0.0, 3.3333, 0.0]
    """
    b, k, h, w = features.shape
    x = features.detach().double().flatten(2).transpose(1, 2)  # (B, hw, K)
    x = x - x.mean(dim=1, keepdim=True)  # centred over positions
    if h * w <= k:
        evals, evecs = torch.linalg.eigh(x @ x.transpose(1, 2))  # (B, hw), ascending
        proj = evecs[..., -1] * evals[..., -1].clamp(min=0).sqrt().unsqueeze(1)  # X v_1 = σ_1 u_1, (B, hw)
    else:
        evecs = torch.linalg.eigh(x.transpose(1, 2) @ x)[1]  # (B, K, K)
        proj = (x @ evecs[..., -1:]).squeeze(2)  # (B, hw)
    sign = torch.where((proj * x.mean(dim=2)).sum(dim=1, keepdim=True) < 0, -1.0, 1.0)  # vs the channel mean
    return torch.relu(sign * proj).view(b, h, w).to(features.dtype)


def compute_cams(model: nn.Module, features: Tensor, classes: Tensor, method: str = "cam", *,
                 images: Tensor | None = None, options: Mapping[str, Any] | None = None) -> Tensor:
    """Raw (unnormalized) class activation maps of ``classes`` by ``method``.

    Args:
        model: the classifier (see the module docstring for the interface it needs).
        features: ``(B, K, h, w)`` last-layer features of the forward pass (gradients are not needed).
        classes: ``(B,)`` one class per image, or ``(B, n)`` several: the gradient methods never copy the
            features per class (see :mod:`camlab.cam_gradients`), and the perturbation passes of Ablation-CAM and
            Score-CAM serve every class at once.
        method: one of :data:`METHODS`.
        images: ``(B, 3, H, W)``, the model's input for these features: required by :data:`IMAGE_METHODS`,
            ignored by the others.
        options: the method's options (:data:`OPTIONS`; defaults for the keys left out).

    Returns:
        ``(B, h, w)`` or ``(B, n, h, w)`` maps, detached. All but ``cam`` and ``hirescam`` are non-negative.

    >>> head = nn.Linear(2, 3); _ = head.weight.data.copy_(torch.tensor([[1.0, -1.0], [2.0, 0.0], [0.0, 1.0]]))
    >>> model = nn.Module(); model.head = head; model.pooled = lambda a: a.mean(dim=(2, 3))
    >>> a = torch.tensor([[[[4.0, 0.0]], [[1.0, 2.0]]]])  # (1, 2, 1, 2): CAM of class 0 = [3, -2]
    >>> compute_cams(model, a, torch.tensor([0])).tolist()
    [[[3.0, -2.0]]]
    >>> compute_cams(model, a, torch.tensor([0]), "gradcam").tolist()  # ReLU(CAM) / (h w)
    [[[1.5, 0.0]]]
    """
    check_method(method)
    opts = check_options(method, options)
    if features.ndim != 4:
        raise ValueError(f"features must be (B, K, h, w), got shape {tuple(features.shape)}")
    b = features.shape[0]
    if classes.ndim not in (1, 2) or classes.shape[0] != b:
        raise ValueError(f"classes must be (B,) or (B, n) with B = {b}, got {tuple(classes.shape)}")
    if method in IMAGE_METHODS:
        if images is None:
            raise ValueError(f"cam_method={method} runs the model on the input images: pass "
                             f"compute_cams(..., images=<the (B, 3, H, W) input of these features>)")
        if images.ndim != 4 or images.shape[0] != b:
            raise ValueError(f"images must be (B, C, H, W) with B = {b}, got {tuple(images.shape)}")
    with torch.no_grad():  # CAM of inference-mode features must not be recorded for autograd outside that mode
        if method == "cam":
            return linear_cam(model, features, classes).detach()
        if method == "eigencam":
            maps = eigencam_map(features.float())
            return maps if classes.ndim == 1 else maps.unsqueeze(1).expand(b, classes.shape[1], *maps.shape[1:]).clone()
        cls = (classes.view(-1, 1) if classes.ndim == 1 else classes).to(features.device)  # (B, n)
        feats = features.float()
        if method in MAPS:
            maps = gradient_maps(model, feats, cls, method)
        elif method == "smoothgradcampp":
            maps = smoothgradcampp_maps(model, feats, images.to(feats.device), cls, **opts)
        elif method == "ablationcam":
            maps = ablationcam_maps(model, feats, cls, **opts)
        else:  # scorecam
            maps = scorecam_maps(model, feats, images, cls, **opts)
    maps = maps.detach()
    return maps[:, 0] if classes.ndim == 1 else maps
