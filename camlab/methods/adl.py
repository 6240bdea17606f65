"""ADL, Attention-based Dropout Layer (Choe & Shim, CVPR 2019; wsolevaluation's ``adl``).

After each chosen backbone block (``blocks``), in training only, the block's output ``F`` (B, C, h, w) is
multiplied by one of two maps of its self-attention ``a = mean_c F`` (B, 1, h, w):

- the drop mask ``1[a < drop_threshold · max_ij a]`` (per image): hides the most discriminative region;
- the importance map ``sigmoid(a)``: highlights it.

Each layer picks the drop mask with probability ``drop_rate``, else the importance map, once per training step for
the whole batch (wsolevaluation draws one number per layer and forward pass). At evaluation ADL is the identity,
so the CAM is the plain CAM of the trained backbone. ADL has no parameters; it runs as a forward hook on its
blocks (:mod:`camlab.methods.blocks`), so the state dict is that of the model without it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from camlab.errors import ConfigError
from camlab.methods.base import StepRandom, WSOLMethod, check_int, check_rate
from camlab.methods.blocks import check_blocks, default_blocks

__all__ = ["ADL", "adl", "adl_drop_mask", "adl_importance_map"]


def adl_drop_mask(attention: Tensor, drop_threshold: float) -> Tensor:
    """``1`` where the attention ``(B, 1, h, w)`` is below ``drop_threshold`` times its image's maximum, else ``0``.

    >>> adl_drop_mask(torch.tensor([[[[1.0, 8.0, 10.0]]]]), 0.8).tolist()
    [[[[1.0, 0.0, 0.0]]]]
    """
    peak = attention.flatten(1).amax(dim=1).view(-1, 1, 1, 1)  # (B, 1, 1, 1)
    return (attention < drop_threshold * peak).to(attention.dtype)


def adl_importance_map(attention: Tensor) -> Tensor:
    """``sigmoid(attention)``."""
    return torch.sigmoid(attention)


def adl(features: Tensor, drop_rate: float, drop_threshold: float, u: float) -> Tensor:
    """``features`` (B, C, h, w) times the drop mask when ``u < drop_rate`` (``u``: a uniform draw in [0, 1)),
    else times the importance map."""
    attention = features.mean(dim=1, keepdim=True)  # (B, 1, h, w)
    chosen = adl_drop_mask(attention, drop_threshold) if u < drop_rate else adl_importance_map(attention)
    return features * chosen


class ADL(WSOLMethod):
    """``wsol=adl``: attention-based dropout after ``blocks`` of the backbone (null: :func:`default_blocks`)."""

    name = "adl"
    random = True

    def __init__(self, drop_rate: float = 0.75, drop_threshold: float = 0.9, blocks: Sequence[str] | None = None,
                 seed: int = 0) -> None:
        super().__init__()
        self.drop_rate = check_rate("drop_rate", drop_rate)
        self.drop_threshold = check_rate("drop_threshold", drop_threshold)
        if blocks is not None and (isinstance(blocks, str) or not all(isinstance(b, str) for b in blocks)
                                   or not blocks):
            raise ConfigError(f"wsol.blocks must be a non-empty list of backbone block names (or null for the "
                              f"backbone's default), got {blocks!r}", settings=["wsol.blocks"])
        self.blocks = list(blocks) if blocks is not None else None
        self.seed = check_int("seed", seed, 0)
        self._rng: np.random.Generator | None = None
        self._handles: list = []
        self.keys = {"drop_rate": self.drop_rate, "drop_threshold": self.drop_threshold, "blocks": self.blocks,
                     "seed": self.seed}

    def attach(self, backbone: nn.Module, num_classes: int) -> None:
        self.blocks = self.blocks if self.blocks is not None else default_blocks(backbone, "adl")
        check_blocks(backbone, self.blocks)
        self.keys["blocks"] = list(self.blocks)
        self._handles = [backbone.get_submodule(b).register_forward_hook(self._after_block) for b in self.blocks]

    def _after_block(self, module: nn.Module, inputs: tuple, output: Tensor) -> Tensor | None:
        if not self.training:
            return None  # identity: the block's output as it is
        u = float(self._rng.random()) if self._rng is not None else float(torch.rand(()))
        return adl(output, self.drop_rate, self.drop_threshold, u)

    def training_loss(self, model: nn.Module, images: Tensor, labels: Tensor,
                      rng: StepRandom | None) -> tuple[Tensor, Tensor]:
        self._rng = rng.numpy if rng is not None else None
        try:
            return super().training_loss(model, images, labels, rng)
        finally:
            self._rng = None
