"""SPG, Self-produced Guidance (Zhang et al., ECCV 2018), as wsolevaluation's ``spg`` defines its losses.

Auxiliary heads, trained on masks the network produces itself; the classifier and its CAM are the model's own:

- B1 and B2: ``shared(b1a(X1))`` and ``shared(b2a(X2))``, one-channel maps from the outputs ``X1``, ``X2`` of two
  backbone blocks (``blocks``; ResNet: ``layer3.0`` and ``layer3``); ``b1a``, ``b2a`` are a 3×3 conv + ReLU each
  and ``shared`` (3×3 conv + ReLU, 1×1 conv to one channel) is common to both, as in the paper;
- C: a 3×3 conv + ReLU and a 1×1 conv to one channel on the final features ``A``.

Every map is upsampled (bilinear) to the input size ``H × W``. Three self-produced masks, each with the values
foreground (1), background (0) and ignored (:func:`spg_mask`), supervise a binary cross-entropy on the pixels
that are not ignored:

==========  ====================================================  ===================================
head        mask made from (detached)                              thresholds (high, low)
==========  ====================================================  ===================================
B2          the CAM of the true class, min-max normalized          ``threshold_1h``, ``threshold_1l``
B1          ``sigmoid(B2)``                                        ``threshold_2h``, ``threshold_2l``
C           ``(sigmoid(B1) + sigmoid(B2)) / 2``                    ``threshold_3h``, ``threshold_3l``
==========  ====================================================  ===================================

The loss is ``CE + BCE_B2 + BCE_B1 + BCE_C``. At evaluation no auxiliary head runs.

Differences from wsolevaluation: its maps are upsampled to 224 × 224 whatever the input, camlab's to the input
size (the same at 224 px); the minimum foreground (``min_foreground``, 30 pixels there) counts pixels at that size;
a mask with no pixel left to supervise adds 0 to the loss (NaN there). Its B heads tap its own re-cut backbones
(ResNet-50 splits layer3 after its first block, as here) and, on VGG16 and Inception-v3, convolutions it adds;
camlab taps the blocks of its backbones. Head widths: ``hidden_channels`` (null: the channels of the second
block, 1024 on ResNet-50 as wsolevaluation's B heads there; wsolevaluation's C head has 512).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camlab.cam import class_activation_maps, minmax_normalize
from camlab.errors import ConfigError
from camlab.methods.base import StepRandom, WSOLMethod, check_int, check_rate
from camlab.methods.blocks import check_blocks, default_blocks

__all__ = ["SPG", "masked_bce", "spg_mask"]

THRESHOLDS = ("threshold_1h", "threshold_1l", "threshold_2h", "threshold_2l", "threshold_3h", "threshold_3l")


def spg_mask(attention: Tensor, high: float, low: float, min_foreground: int = 30) -> tuple[Tensor, Tensor]:
    """``(target, valid)`` from a map ``(B, H, W)``: foreground (target 1) where it is ``> high`` (where that leaves
    fewer than ``min_foreground`` pixels of an image: ``> 0.7 ·`` the image's maximum), background (target 0) where
    it is ``< low`` (background wins where both hold); the other pixels are not ``valid``.

    >>> target, valid = spg_mask(torch.tensor([[[0.0, 0.3, 0.6, 0.9]]]), 0.5, 0.1, min_foreground=1)
    >>> target.tolist(), valid.tolist()
    ([[[0.0, 0.0, 1.0, 1.0]]], [[[True, False, True, True]]])
    """
    fg = attention > high  # (B, H, W)
    few = fg.flatten(1).sum(dim=1) < min_foreground  # (B,)
    if bool(few.any()):
        peak = attention.flatten(1).amax(dim=1).view(-1, 1, 1)
        fg = torch.where(few.view(-1, 1, 1), attention > 0.7 * peak, fg)
    bg = attention < low
    fg = fg & ~bg
    return fg.to(attention.dtype), fg | bg


def masked_bce(logits: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Binary cross-entropy with logits, averaged over the ``valid`` pixels of the batch (0 if there are none)."""
    losses = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (losses * valid).sum() / valid.sum().clamp(min=1)


def _conv_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]


class SPG(WSOLMethod):
    """``wsol=spg``: self-produced guidance heads B1, B2, C and their three masked losses (module docstring)."""

    name = "spg"

    def __init__(self, threshold_1h: float = 0.7, threshold_1l: float = 0.01, threshold_2h: float = 0.5,
                 threshold_2l: float = 0.05, threshold_3h: float = 0.7, threshold_3l: float = 0.1,
                 blocks: Sequence[str] | None = None, hidden_channels: int | None = None,
                 min_foreground: int = 30) -> None:
        super().__init__()
        values = (threshold_1h, threshold_1l, threshold_2h, threshold_2l, threshold_3h, threshold_3l)
        self.thresholds = tuple(check_rate(k, v) for k, v in zip(THRESHOLDS, values))
        if blocks is not None and (isinstance(blocks, str) or len(blocks) != 2
                                   or not all(isinstance(b, str) for b in blocks)):
            raise ConfigError(f"wsol.blocks must name two backbone blocks (the inputs of the B1 and B2 heads), or be "
                              f"null for the backbone's default, got {blocks!r}", settings=["wsol.blocks"])
        self.blocks = list(blocks) if blocks is not None else None
        self.hidden_channels = (None if hidden_channels is None
                                else check_int("hidden_channels", hidden_channels, 1, "or null"))
        self.min_foreground = check_int("min_foreground", min_foreground, 0)
        self._taps: list[Tensor | None] = [None, None]
        self.keys = {**dict(zip(THRESHOLDS, self.thresholds)), "blocks": self.blocks,
                     "hidden_channels": self.hidden_channels, "min_foreground": self.min_foreground}

    def attach(self, backbone: nn.Module, num_classes: int) -> None:
        self.blocks = self.blocks if self.blocks is not None else default_blocks(backbone, "spg")
        c1, c2 = check_blocks(backbone, self.blocks, needs_fresh_output=True)
        hidden = self.hidden_channels or c2
        k = int(backbone.num_features)
        self.b1a = nn.Sequential(*_conv_relu(c1, hidden))
        self.b2a = nn.Sequential(*_conv_relu(c2, hidden))
        self.shared = nn.Sequential(*_conv_relu(hidden, hidden), nn.Conv2d(hidden, 1, 1))
        self.head_c = nn.Sequential(*_conv_relu(k, hidden), nn.Conv2d(hidden, 1, 1))
        for m in self.modules():  # wsolevaluation's initialization of these heads
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        self.keys.update(blocks=list(self.blocks), hidden_channels=hidden)
        for i, name in enumerate(self.blocks):
            backbone.get_submodule(name).register_forward_hook(self._tap(i))

    def _tap(self, i: int):
        def hook(module: nn.Module, inputs: tuple, output: Tensor) -> None:
            if self.training:
                self._taps[i] = output
        return hook

    def training_loss(self, model: nn.Module, images: Tensor, labels: Tensor,
                      rng: StepRandom | None) -> tuple[Tensor, Tensor]:
        self._taps = [None, None]
        out = model(images)
        x1, x2 = self._taps
        self._taps = [None, None]
        if x1 is None or x2 is None:
            raise RuntimeError("SPG: its backbone blocks did not run in this training forward pass")
        features, logits = out["features"], out["logits"]  # (B, K, h, w), (B, C)
        size = tuple(images.shape[-2:])

        def up(maps: Tensor) -> Tensor:  # (B, 1, h, w) -> (B, H, W)
            return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)[:, 0]

        b1 = up(self.shared(self.b1a(x1)))  # (B, H, W) logits
        b2 = up(self.shared(self.b2a(x2)))
        c = up(self.head_c(features))
        h1, l1, h2, l2, h3, l3 = self.thresholds
        with torch.no_grad():
            attention = minmax_normalize(up(class_activation_maps(features, model.head.weight, labels).unsqueeze(1)))
            b1_prob, b2_prob = torch.sigmoid(b1), torch.sigmoid(b2)
            masks = (spg_mask(attention, h1, l1, self.min_foreground),
                     spg_mask(b2_prob, h2, l2, self.min_foreground),
                     spg_mask((b1_prob + b2_prob) / 2, h3, l3, self.min_foreground))
        loss = model.classification_loss(logits, labels)
        for head_logits, (target, valid) in zip((b2, b1, c), masks):
            loss = loss + masked_bce(head_logits, target, valid)
        return loss, logits
