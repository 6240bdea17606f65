"""CAM, Grad-CAM, Grad-CAM++, XGrad-CAM and LayerCAM from the features of one forward pass.

Every method here maps the last-layer features ``A`` (B, K, h, w) of a forward pass and a class per image to a
raw (unnormalized) map (B, h, w). The gradient methods need ``dy^c / dA``; that gradient depends only on the
part of the network AFTER ``A`` (pooling + classifier head), so it is computed by re-running only the head on
the (detached) features with autograd on: no second backbone pass and no hooks.

What a model must offer (``model`` below):

* ``head_forward(features) -> logits``, or else ``pooled(features) -> (B, K)`` and ``head((B, K)) -> logits``
  (:class:`camlab.models.CAMClassifier` has the latter). The head must treat the images of a batch
  independently (true for pooling + linear / MLP heads in eval mode), because one backward pass of
  ``sum_b y_b^{c_b}`` gives every image's gradient at once.
* for ``"cam"`` only: ``cam(features, classes)``, or a linear ``head`` (``nn.Linear``) whose weight gives
  ``M^c = sum_k W[c, k] A^k``. CAM is defined for a linear head only; the gradient methods work for any head.

Inference mode. Lightning runs validation under ``torch.inference_mode()``; tensors made there cannot enter
autograd. :func:`compute_cams` leaves inference mode locally (``torch.inference_mode(False)``) and clones the
features into a normal tensor before differentiating, so the callback works with Lightning's default
``Trainer(inference_mode=True)``; the clone is the only extra memory (one copy of ``A``).

Identity (tested): for a GAP + linear model, ``dy^c/dA^k_ij = W[c, k] / (h w)``, so Grad-CAM and XGrad-CAM
both equal ``ReLU(CAM) / (h w)``: after min-max normalization they localize exactly like ReLU(CAM).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from camlab.cam import class_activation_maps

METHODS = ("cam", "gradcam", "gradcam_pp", "xgradcam", "layercam")
GRADIENT_METHODS = METHODS[1:]


def check_method(method: str) -> str:
    """Return ``method`` if it is known, else raise one ``ValueError`` listing the available methods.

    >>> check_method("gradcam")
    'gradcam'
    """
    if method not in METHODS:
        raise ValueError(f"Unknown CAM method {method!r}. Available: {', '.join(METHODS)}")
    return method


def head_logits(model: nn.Module, features: Tensor) -> Tensor:
    """Logits from last-layer features: ``model.head_forward(A)`` or ``model.head(model.pooled(A))``."""
    forward = getattr(model, "head_forward", None)
    if callable(forward):
        return forward(features)
    if callable(getattr(model, "pooled", None)) and callable(getattr(model, "head", None)):
        return model.head(model.pooled(features))  # (B, C)
    raise TypeError(
        f"{type(model).__name__} needs `head_forward(features)` or `pooled(features)` + `head(pooled)` "
        "for gradient CAM methods"
    )


def class_gradients(model: nn.Module, features: Tensor, classes: Tensor) -> tuple[Tensor, Tensor]:
    """``dy^c/dA`` of each image's class(es), from the head only.

    Args:
        features: ``(B, K, h, w)`` features ``A`` (may be an inference-mode tensor).
        classes: ``(B,)`` or ``(B, k)``.

    Returns:
        ``(A, grads)``: ``A`` as a normal float tensor ``(B, K, h, w)`` and ``grads`` ``(B, K, h, w)`` for
        ``(B,)`` classes or ``(B, k, K, h, w)`` for ``(B, k)`` classes.
    """
    with torch.inference_mode(False), torch.enable_grad():
        # Clones are normal tensors even when the inputs were made in inference mode (gather saves its index).
        cls = (classes.view(-1, 1) if classes.ndim == 1 else classes).to(features.device).clone()  # (B, k)
        a = features.detach().clone().requires_grad_(True)  # (B, K, h, w)
        logits = head_logits(model, a)  # (B, C)
        grads = []
        for j in range(cls.shape[1]):
            y = logits.gather(1, cls[:, j : j + 1]).sum()
            (g,) = torch.autograd.grad(y, a, retain_graph=j + 1 < cls.shape[1])
            grads.append(g)  # (B, K, h, w)
    a = a.detach()
    if classes.ndim == 1:
        return a, grads[0]
    return a, torch.stack(grads, dim=1)  # (B, k, K, h, w)


# ---- per-method maps from (A, dy/dA); A (B, K, h, w), g (B, K, h, w) -> (B, h, w) --------------------------
def gradcam_map(a: Tensor, g: Tensor) -> Tensor:
    """Grad-CAM (Selvaraju et al. 2017): ``ReLU(sum_k alpha_k A^k)``, ``alpha_k = mean_ij dy/dA^k_ij``.

    >>> a = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]])  # (1, 2, 1, 2)
    >>> g = torch.tensor([[[[1.0, 1.0]], [[-1.0, 0.0]]]])  # alpha = (1, -0.5)
    >>> gradcam_map(a, g).tolist()
    [[[0.0, 2.0]]]
    """
    alpha = g.mean(dim=(2, 3), keepdim=True)  # (B, K, 1, 1)
    return torch.relu((alpha * a).sum(dim=1))  # (B, h, w)


def gradcam_pp_map(a: Tensor, g: Tensor) -> Tensor:
    """Grad-CAM++ (Chattopadhay et al. 2018, eq. 19 with the exponential-of-score closed form).

    With ``Y = exp(S)`` and a piecewise-linear network, the 2nd/3rd derivatives of ``Y`` are ``exp(S) g^2`` and
    ``exp(S) g^3`` (``g = dS/dA``), so ``alpha^k_ij = g^2 / (2 g^2 + sum_ab A^k_ab g^3)`` (0 where that
    denominator is 0) and ``w_k = sum_ij alpha^k_ij ReLU(g^k_ij)``; the map is ``ReLU(sum_k w_k A^k)``. The
    common factor ``exp(S)`` of ``dY/dA`` is left out (a positive per-image constant, and it overflows for
    large logits), as in the authors' code.

    >>> a = torch.tensor([[[[1.0, 2.0], [0.0, 3.0]]]])  # (1, 1, 2, 2); sum = 6
    >>> g = torch.tensor([[[[0.0, 0.0], [0.0, 0.5]]]])  # alpha at the max = 0.25 / (0.5 + 6 * 0.125) = 0.2
    >>> gradcam_pp_map(a, g).tolist()
    [[[0.10000000149011612, 0.20000000298023224], [0.0, 0.30000001192092896]]]
    """
    # Where g > 0 (the only places ReLU(g) keeps), alpha * ReLU(g) = g^3 / (g^2 (2 + s g)) = g / (2 + s g):
    # the same numbers in four elementwise passes instead of eight.
    pos = torch.relu(g)  # (B, K, h, w)
    denom = 2 + a.sum(dim=(2, 3), keepdim=True) * pos  # (B, K, h, w); = 2 + s g where g > 0
    w = torch.where(denom != 0, pos / denom, 0.0).sum(dim=(2, 3), keepdim=True)  # (B, K, 1, 1)
    return torch.relu((w * a).sum(dim=1))  # (B, h, w)


def xgradcam_map(a: Tensor, g: Tensor) -> Tensor:
    """XGrad-CAM (Fu et al. 2020): ``w_k = sum_ij (A^k_ij / sum_ab A^k_ab) g^k_ij``, map ``ReLU(sum_k w_k A^k)``.

    A channel whose activations sum to 0 gets weight 0.

    >>> a = torch.tensor([[[[1.0, 3.0]]]]); g = torch.tensor([[[[2.0, 0.0]]]])  # w = 1/4 * 2 = 0.5
    >>> xgradcam_map(a, g).tolist()
    [[[0.5, 1.5]]]
    """
    s = a.sum(dim=(2, 3), keepdim=True)  # (B, K, 1, 1)
    w = (a * g).sum(dim=(2, 3), keepdim=True) / torch.where(s != 0, s, torch.ones_like(s))
    w = torch.where(s != 0, w, 0.0)
    return torch.relu((w * a).sum(dim=1))  # (B, h, w)


def layercam_map(a: Tensor, g: Tensor) -> Tensor:
    """LayerCAM (Jiang et al. 2021): ``ReLU(sum_k ReLU(g^k_ij) A^k_ij)``, a per-position weight.

    >>> a = torch.tensor([[[[1.0, 2.0]], [[3.0, 1.0]]]]); g = torch.tensor([[[[1.0, -1.0]], [[0.5, 2.0]]]])
    >>> layercam_map(a, g).tolist()
    [[[2.5, 2.0]]]
    """
    return torch.relu((torch.relu(g) * a).sum(dim=1))  # (B, h, w)


_MAPS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "gradcam": gradcam_map,
    "gradcam_pp": gradcam_pp_map,
    "xgradcam": xgradcam_map,
    "layercam": layercam_map,
}


def linear_cam(model: nn.Module, features: Tensor, classes: Tensor) -> Tensor:
    """CAM ``sum_k W[c, k] A^k``: ``model.cam`` if the model has one, else from a linear ``model.head``."""
    cam = getattr(model, "cam", None)
    if callable(cam):
        return cam(features, classes)
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        return class_activation_maps(features, head.weight, classes)
    raise TypeError(
        f"CAM needs a linear classifier head (or a `cam(features, classes)` method); {type(model).__name__} has "
        f"neither. Use a gradient method instead: {', '.join(GRADIENT_METHODS)}"
    )


def compute_cams(model: nn.Module, features: Tensor, classes: Tensor, method: str = "cam") -> Tensor:
    """Raw (unnormalized) class activation maps of ``classes`` by ``method``.

    Args:
        model: the classifier (see the module docstring for the interface it needs).
        features: ``(B, K, h, w)`` last-layer features of the forward pass (gradients are not needed).
        classes: ``(B,)`` one class per image, or ``(B, k)`` several.
        method: one of :data:`METHODS`.

    Returns:
        ``(B, h, w)`` or ``(B, k, h, w)`` maps, detached. Gradient methods return non-negative maps.

    >>> head = nn.Linear(2, 3); _ = head.weight.data.copy_(torch.tensor([[1.0, -1.0], [2.0, 0.0], [0.0, 1.0]]))
    >>> model = nn.Module(); model.head = head; model.pooled = lambda a: a.mean(dim=(2, 3))
    >>> a = torch.tensor([[[[4.0, 0.0]], [[1.0, 2.0]]]])  # (1, 2, 1, 2): CAM of class 0 = [3, -2]
    >>> compute_cams(model, a, torch.tensor([0])).tolist()
    [[[3.0, -2.0]]]
    >>> compute_cams(model, a, torch.tensor([0]), "gradcam").tolist()  # ReLU(CAM) / (h w)
    [[[1.5, 0.0]]]
    """
    check_method(method)
    if features.ndim != 4:
        raise ValueError(f"features must be (B, K, h, w), got shape {tuple(features.shape)}")
    if classes.ndim not in (1, 2) or classes.shape[0] != features.shape[0]:
        raise ValueError(f"classes must be (B,) or (B, k) with B = {features.shape[0]}, got {tuple(classes.shape)}")
    if method == "cam":
        return linear_cam(model, features, classes).detach()
    a, g = class_gradients(model, features, classes)
    fn = _MAPS[method]
    if classes.ndim == 1:
        return fn(a, g)  # (B, h, w)
    b, k = classes.shape
    maps = fn(a.unsqueeze(1).expand(b, k, *a.shape[1:]).flatten(0, 1), g.flatten(0, 1))  # (B k, h, w)
    return maps.view(b, k, *maps.shape[1:])  # (B, k, h, w)
