"""Score-based CAM methods: channel weights from how the class score changes when a channel is removed
(Ablation-CAM) or kept alone as a mask of the input (Score-CAM).

Both return raw maps ``ReLU(Σ_k w_k A^k)`` (B, n, h, w) for ``classes`` (B, n) from the features ``A`` (B, K, h, w);
the weights of all n classes come from the same perturbed passes. ``model`` is a camlab classifier (see
:mod:`camlab.cam_methods`); perturbed passes run without autograd on the features' device, in chunks of
``batch_size`` (the memory budget: one chunk's inputs and activations are alive at a time).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from camlab.cam import minmax_normalize, upsample
from camlab.cam_gradients import contract, factorized, head_logits


def model_logits(model: nn.Module, images: Tensor) -> Tensor:
    """``(B, C)`` logits of ``model(images)``: its ``"logits"`` entry, or the output itself."""
    out = model(images)
    return (out["logits"] if isinstance(out, dict) else out).float()


def _weighted_map(w: Tensor, a: Tensor) -> Tensor:
    """``ReLU(Σ_k w[b, c, k] A^k)``: ``(B, n, K), (B, K, h, w) -> (B, n, h, w)``."""
    return torch.relu(contract(w, a.unsqueeze(1)))


def ablation_drops(model: nn.Module, a: Tensor, cls: Tensor, batch_size: int) -> tuple[Tensor, Tensor]:
    """``(y, y - y_k)``: the logits ``y`` (B, n) of ``cls`` and their drops (B, n, K) when channel k of ``A`` is
    set to 0.

    Closed form for a linear head on a per-channel pooling: ``y - y_k = W[c, k] (P_k(A) - P_k(0))`` (for GAP,
    ``W[c, k] mean(A^k)``), no extra pass. Otherwise the general path: the head re-run on ``B K`` ablated copies of
    the features, ``batch_size`` copies per pass.
    """
    b, k = a.shape[:2]
    head = getattr(model, "head", None)
    if factorized(model) and isinstance(head, nn.Linear):
        p = model.pooled(a)  # (B, K)
        p0 = model.pooled(torch.zeros_like(a[:1]))  # (1, K): the pooling of an ablated channel
        y = head(p).gather(1, cls)  # (B, n)
        return y, head.weight.to(a.dtype)[cls] * (p - p0).unsqueeze(1)  # (B, n, K)
    y = head_logits(model, a).float().gather(1, cls)  # (B, n)
    ablated = torch.empty(b * k, cls.shape[1], dtype=y.dtype, device=a.device)  # y_k per (image, channel)
    for start in range(0, b * k, batch_size):
        pair = torch.arange(start, min(start + batch_size, b * k), device=a.device)
        img, ch = pair // k, pair % k
        x = a[img].clone()  # (m, K, h, w)
        x[torch.arange(len(pair), device=a.device), ch] = 0.0
        ablated[pair] = head_logits(model, x).float().gather(1, cls[img])
    return y, y.unsqueeze(2) - ablated.view(b, k, -1).transpose(1, 2)  # (B, n, K)


def ablationcam_maps(model: nn.Module, features: Tensor, classes: Tensor, batch_size: int = 256) -> Tensor:
    """Ablation-CAM (Desai & Ramaswamy 2020): ``w_k = (y^c - y^c_k) / y^c``, ``y^c_k`` the class logit with
    channel k of ``A`` set to 0; map ``ReLU(Σ_k w_k A^k)``.

    For GAP + a linear head the drop is closed-form, ``W[c, k] mean(A^k)`` (see :func:`ablation_drops`), so
    Ablation-CAM costs nothing beyond CAM there; other heads re-run the head (not the backbone) on ``K``
    ablated copies per image. Dividing by ``y^c`` is the paper's: a negative logit flips every weight's sign, and
    an image whose logit is exactly 0 gets an all-zero map.

    >>> model = nn.Module(); model.head = nn.Linear(2, 1); model.pooled = lambda a: a.mean(dim=(2, 3))
    >>> _ = model.head.weight.data.copy_(torch.tensor([[1.0, -1.0]])); _ = model.head.bias.data.fill_(0.5)
    >>> a = torch.tensor([[[[4.0, 0.0]], [[1.0, 2.0]]]])  # means 2, 1.5: y = 2 - 1.5 + 0.5 = 1
    >>> ablationcam_maps(model, a, torch.tensor([[0]])).tolist()  # w = (2, -1.5): 2 A^0 - 1.5 A^1
    [[[[6.5, 0.0]]]]
    """
    with torch.no_grad():
        a = features.float()
        cls = classes.to(a.device)
        y, drop = ablation_drops(model, a, cls, batch_size)
        y = y.unsqueeze(2)  # (B, n, 1)
        w = torch.where(y != 0, drop / torch.where(y != 0, y, torch.ones_like(y)), 0.0)  # (B, n, K)
        return _weighted_map(w, a)


def scorecam_scores(model: nn.Module, features: Tensor, images: Tensor, classes: Tensor,
                    batch_size: int = 64) -> Tensor:
    """``(B, K, n)`` logits of ``classes`` (B, n) on the ``B K`` masked inputs ``x ⊙ s(U(A^k))``.

    ``U``: bilinear upsampling to the input size (``align_corners=False``, as :func:`camlab.cam.upsample`); ``s``:
    per-map min-max normalization to [0, 1] (a constant map gives the 0 mask, as :func:`camlab.cam.minmax_normalize`).
    The masked inputs are built and scored ``batch_size`` at a time (built per chunk: never all ``B K`` at once);
    every channel whose map is constant gives the same all-zero input, scored once.
    """
    b, k = features.shape[:2]
    size = tuple(images.shape[-2:])
    flat = features.flatten(2)
    lo, hi = torch.aminmax(flat, dim=2)  # (B, K)
    const = ~(hi > lo)  # constant (or NaN) maps: the 0 mask
    scores = torch.empty(b, k, classes.shape[1], device=features.device)
    if bool(const.any()):
        zero = model_logits(model, torch.zeros_like(images[:1]))[0]  # (C,)
        img = const.nonzero()[:, 0]
        scores[const] = zero[classes[img]]
    todo = (~const).flatten().nonzero()[:, 0]  # (image, channel) pairs to score
    for start in range(0, len(todo), batch_size):
        pair = todo[start:start + batch_size]
        img, ch = pair // k, pair % k
        masks = minmax_normalize(upsample(features[img, ch], size))  # (m, H, W)
        logits = model_logits(model, images[img] * masks.unsqueeze(1).to(images.dtype))  # (m, C)
        scores[img, ch] = logits.gather(1, classes[img])
    return scores


def scorecam_maps(model: nn.Module, features: Tensor, images: Tensor, classes: Tensor,
                  batch_size: int = 64) -> Tensor:
    """Score-CAM (Wang et al. 2020): ``w^c = softmax_k(S^c_k)``, ``S^c_k`` the class-c logit of the input masked by
    channel k's upsampled, min-max normalized map (:func:`scorecam_scores`); map ``ReLU(Σ_k w^c_k A^k)``.

    The softmax over channels of the masked inputs' logits is pytorch-grad-cam's and torchcam's convention
    (torchcam subtracts the unmasked input's logit first, which the softmax cancels); the authors' code weighted
    each map by the class's softmax probability instead. Cost: ``K`` extra forward passes of the whole model per
    image (K = the feature channels, 512 for ResNet-18), ``batch_size`` masked images per pass: by far the dearest
    method here.
    """
    with torch.no_grad():
        a = features.float()
        cls = classes.to(a.device)
        scores = scorecam_scores(model, a, images.to(a.device), cls, batch_size)  # (B, K, n)
        w = torch.softmax(scores, dim=1).transpose(1, 2)  # (B, n, K)
        return _weighted_map(w, a)
