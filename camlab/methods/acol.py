"""ACoL, Adversarial Complementary Learning (Zhang et al., CVPR 2018; wsolevaluation's ``acol``).

Two classifiers share the backbone's features ``A`` (B, K, h, w): branch A is the model's own linear head, branch B
a second linear head (``head_b``). In training, branch A's CAM of the true class, min-max normalized per image, is
the attention; branch B sees ``A`` with every position where that attention is ``>= erase_threshold`` set to 0, so
it has to find the object's other parts. The loss is ``CE(logits_A) + CE(logits_B)``; the logits (accuracy, top-k
loc) are branch A's.

The scored map (``fuse=True``, wsolevaluation's ``return_cam``): per class ``c``, the element-wise maximum of the two
branches' min-max normalized maps, branch B's computed on the features erased by branch A's map of ``c``:
``max(norm(M_A^c), norm(mask_c · M_B^c))``. Both heads are linear, so erasing commutes with the head
(``W_B (A · mask) = mask · (W_B A)``) and the fused map comes exactly from the features of the one forward pass.
``fuse=False`` scores branch A's CAM alone.

Difference from wsolevaluation: its branches are three conv layers each (two 3×3 convs of 1024 channels, then a
1×1 conv to the classes) on the features, which makes their maps non-linear in ``A``; camlab's are linear heads
(1×1 convs), camlab's CAM contract. Gradient CAM methods (``cam_method=gradcam`` ...) see branch A.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from camlab.cam import class_activation_maps, minmax_normalize
from camlab.errors import ConfigError
from camlab.methods.base import StepRandom, WSOLMethod, check_rate

__all__ = ["ACoL", "acol_cams", "acol_keep_mask"]


def _normalized(maps: Tensor) -> Tensor:
    """Per-map min-max normalization of ``(B, h, w)`` or ``(B, k, h, w)`` maps (constant maps become 0)."""
    return minmax_normalize(maps.flatten(0, -3)).view(maps.shape)


def acol_keep_mask(cams_a: Tensor, erase_threshold: float) -> Tensor:
    """``(B, 1, h, w)``: 0 where branch A's normalized map ``(B, h, w)`` is ``>= erase_threshold``, else 1.

    >>> acol_keep_mask(torch.tensor([[[0.0, 5.0, 8.0, 10.0]]]), 0.7).tolist()
    [[[[1.0, 1.0, 0.0, 0.0]]]]
    """
    return (_normalized(cams_a) < erase_threshold).to(cams_a.dtype).unsqueeze(1)


def acol_cams(features: Tensor, weight_a: Tensor, weight_b: Tensor, classes: Tensor, erase_threshold: float) -> Tensor:
    """The fused maps ``max(norm(M_A^c), norm(mask_c · M_B^c))`` of ``classes`` ((B,) or (B, k)), in [0, 1]."""
    maps_a = _normalized(class_activation_maps(features, weight_a, classes))  # (B, [k,] h, w)
    keep = (maps_a < erase_threshold).to(maps_a.dtype)
    maps_b = _normalized(keep * class_activation_maps(features, weight_b, classes))
    return torch.maximum(maps_a, maps_b)


class ACoL(WSOLMethod):
    """``wsol=acol``: a second, adversarially erased classifier branch (see the module docstring)."""

    name = "acol"

    def __init__(self, erase_threshold: float = 0.7, fuse: bool = True) -> None:
        super().__init__()
        self.erase_threshold = check_rate("erase_threshold", erase_threshold)
        if not isinstance(fuse, bool):
            raise ConfigError(f"wsol.fuse must be true or false, got {fuse!r}", settings=["wsol.fuse"])
        self.fuse = fuse
        self.keys = {"erase_threshold": self.erase_threshold, "fuse": self.fuse}

    def attach(self, backbone: nn.Module, num_classes: int) -> None:
        self.head_b = nn.Linear(int(backbone.num_features), num_classes)  # branch B

    def training_loss(self, model: nn.Module, images: Tensor, labels: Tensor,
                      rng: StepRandom | None) -> tuple[Tensor, Tensor]:
        out = model(images)
        features, logits = out["features"], out["logits"]  # (B, K, h, w), (B, C)
        with torch.no_grad():  # the attention is not trained through (wsolevaluation detaches it too)
            keep = acol_keep_mask(class_activation_maps(features, model.head.weight, labels), self.erase_threshold)
        logits_b = self.head_b(model.pooled(features * keep))  # (B, C)
        loss = model.classification_loss(logits, labels) + model.classification_loss(logits_b, labels)
        return loss, logits

    def cam(self, model: nn.Module, features: Tensor, classes: Tensor) -> Tensor:
        if not self.fuse:
            return super().cam(model, features, classes)
        return acol_cams(features, model.head.weight, self.head_b.weight, classes, self.erase_threshold)
