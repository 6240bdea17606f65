"""Class activation maps from a single forward pass.

For a network ``image -> A (B, K, h, w) -> pool -> linear (W: C x K, b: C)``, the class activation map of
class ``c`` is ``M^c(i, j) = sum_k W[c, k] * A[k, i, j]`` (Zhou et al. 2015, eq. 2). With global average
pooling, ``mean_ij M^c = y^c - b^c`` exactly, so the CAM is the spatial decomposition of the logit.

Every function here is a pure tensor function: no hooks, no second forward pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def class_activation_maps(features: Tensor, weight: Tensor, classes: Tensor) -> Tensor:
    """CAMs of the given classes from unpooled features and the linear head's weight.

    Args:
        features: ``(B, K, h, w)`` feature maps ``A`` of the last conv block.
        weight: ``(C, K)`` weight of the linear classifier.
        classes: ``(B,)`` one class per image, or ``(B, k)`` several classes per image.

    Returns:
        ``(B, h, w)`` or ``(B, k, h, w)`` raw (unnormalized) maps ``M^c``.

    >>> A = torch.ones(1, 2, 3, 3); W = torch.tensor([[1.0, 2.0], [0.5, -1.0]])
    >>> class_activation_maps(A, W, torch.tensor([0]))[0, 0, 0].item()
    3.0
    """
    if features.ndim != 4:
        raise ValueError(f"features must be (B, K, h, w), got shape {tuple(features.shape)}")
    if classes.ndim == 1:
        w = weight[classes]  # (B, K)
        return torch.einsum("bkhw,bk->bhw", features, w.to(features.dtype))
    w = weight[classes]  # (B, k, K)
    return torch.einsum("bkhw,bnk->bnhw", features, w.to(features.dtype))


def all_class_activation_maps(features: Tensor, weight: Tensor) -> Tensor:
    """CAMs of every class: ``(B, K, h, w), (C, K) -> (B, C, h, w)`` (a 1x1 convolution)."""
    return torch.einsum("bkhw,ck->bchw", features, weight.to(features.dtype))


def upsample(cams: Tensor, size: tuple[int, int], mode: str = "bilinear") -> Tensor:
    """Resize ``(B, h, w)`` maps to ``(B, H, W)``; bilinear with ``align_corners=False`` by default.

    ``mode`` is any ``F.interpolate`` mode ("bilinear", "bicubic", "nearest", ...).

    >>> upsample(torch.tensor([[[0.0, 1.0]]]), (1, 4))
    tensor([[[0.0000, 0.2500, 0.7500, 1.0000]]])
    """
    if cams.ndim != 3:
        raise ValueError(f"cams must be (B, h, w), got shape {tuple(cams.shape)}")
    kwargs = {} if mode in ("nearest", "nearest-exact", "area") else {"align_corners": False}
    return F.interpolate(cams.unsqueeze(1).float(), size=tuple(size), mode=mode, **kwargs).squeeze(1)


def minmax_normalize(cams: Tensor) -> Tensor:
    """Per-map min-max normalization of ``(B, H, W)`` maps to ``[0, 1]``.

    A map containing a NaN, or a constant map (max == min), becomes all zeros: the convention of the public
    WSOL benchmark (Choe et al. 2020), which makes such a map predict no object rather than the whole image.

    >>> minmax_normalize(torch.tensor([[[1.0, 3.0]], [[2.0, 2.0]], [[0.0, float("nan")]]])).tolist()
    [[[0.0, 1.0]], [[0.0, 0.0]], [[0.0, 0.0]]]
    """
    if cams.ndim != 3:
        raise ValueError(f"cams must be (B, H, W), got shape {tuple(cams.shape)}")
    lo, hi = torch.aminmax(cams.flatten(1), dim=1)  # (B,), (B,); a NaN anywhere propagates to both
    bad = ~(hi > lo)  # constant map, or NaN (every comparison with NaN is False)
    denom = torch.where(bad, torch.ones_like(hi), hi - lo)
    out = (cams - lo.view(-1, 1, 1)) / denom.view(-1, 1, 1)  # subtract, then divide: as the WSOL benchmark
    if bool(bad.any()):
        out[bad] = 0.0
    return out
