"""Data-side WSOL methods: Hide-and-Seek and CutMix change the training batch, not the network.

Both run in the training step on the batch already on the model's device, with the step's generators
(:class:`camlab.methods.base.StepRandom`); validation, test and predict see the images unchanged.

Hide-and-Seek (Singh & Lee, ICCV 2017; wsolevaluation's ``has``): the image is cut into square cells of
``grid_size`` × ``grid_size`` pixels from the top-left corner (cells at the right and bottom borders are cut
short), and each cell of each image is hidden independently with probability ``drop_rate``. A hidden cell is set
to 0 in the network's input space, i.e. after normalization, which is wsolevaluation's choice: the normalization
mean in pixel space (the ImageNet mean for real data, mid-grey for the synthetic data: mean = std = 0.5). The paper
fills with the dataset's mean pixel, which is the same thing where the data is normalized by its mean.

CutMix (Yun et al., ICCV 2019; wsolevaluation's ``cutmix``): with probability ``prob`` a batch is mixed:
``lam ~ Beta(beta, beta)``, a box of ``int(H sqrt(1 - lam))`` × ``int(W sqrt(1 - lam))`` pixels centred on a uniform
pixel and clipped to the image, filled from the image at the same place in a random permutation of the batch; the
labels are mixed by the box's actual (clipped) area, ``lam = 1 - box area / (H W)``, and the loss is
``lam · CE(logits, y) + (1 - lam) · CE(logits, y[perm])``.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from torch import Tensor, nn

from camlab.errors import ConfigError
from camlab.methods.base import StepRandom, WSOLMethod, check_int, check_rate

log = logging.getLogger("camlab.methods")

__all__ = ["CutMix", "HideAndSeek", "cutmix", "cutmix_box", "hidden_cells", "hide_and_seek", "sample_cutmix"]


# ---- Hide-and-Seek ---------------------------------------------------------------------------------------------
def hidden_cells(batch: int, height: int, width: int, grid_size: int, drop_rate: float,
                 generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> Tensor:
    """Which cells to hide: ``(B, ceil(H / grid_size), ceil(W / grid_size))`` bool, each True with probability
    ``drop_rate`` (one uniform draw per cell, hidden where it is below ``drop_rate``)."""
    rows, cols = math.ceil(height / grid_size), math.ceil(width / grid_size)
    return torch.rand((batch, rows, cols), generator=generator, device=device) < drop_rate


def hide_and_seek(images: Tensor, hidden: Tensor, grid_size: int) -> Tensor:
    """``images`` (B, C, H, W) with the pixels of every hidden cell (``hidden``: see :func:`hidden_cells`) set to 0.

    >>> img = torch.ones(1, 1, 3, 3)
    >>> hide_and_seek(img, torch.tensor([[[True, False], [False, True]]]), 2)[0, 0].tolist()
    [[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]]
    """
    height, width = images.shape[-2:]
    pixels = hidden.repeat_interleave(grid_size, 1).repeat_interleave(grid_size, 2)[:, :height, :width]  # (B, H, W)
    return images.masked_fill(pixels.unsqueeze(1), 0.0)


class HideAndSeek(WSOLMethod):
    """``wsol=has``: hide random ``grid_size``-pixel cells of every training image (see the module docstring)."""

    name = "has"
    random = True

    def __init__(self, grid_size: int = 4, drop_rate: float = 0.5, seed: int = 0) -> None:
        super().__init__()
        self.grid_size = check_int("grid_size", grid_size, 1, "the side of a hidden cell in pixels")
        self.drop_rate = check_rate("drop_rate", drop_rate)
        self.seed = check_int("seed", seed, 0)
        self.keys = {"grid_size": self.grid_size, "drop_rate": self.drop_rate, "seed": self.seed}
        self._warned_whole = False

    def training_loss(self, model: nn.Module, images: Tensor, labels: Tensor,
                      rng: StepRandom | None) -> tuple[Tensor, Tensor]:
        b, _, h, w = images.shape
        gen = rng.torch if rng is not None else None
        if self.grid_size >= max(h, w) and not self._warned_whole:
            # one cell covers the whole image: each image is then hidden entirely or not at all
            self._warned_whole = True
            log.warning("wsol.grid_size=%d is not smaller than the %d x %d training input: every image is one cell, "
                        "hidden whole at drop_rate %.2f; give cells a fraction of the input side", self.grid_size, h, w,
                        self.drop_rate)
        hidden = hidden_cells(b, h, w, self.grid_size, self.drop_rate, gen, images.device)
        return super().training_loss(model, hide_and_seek(images, hidden, self.grid_size), labels, rng)


# ---- CutMix ----------------------------------------------------------------------------------------------------
def cutmix_box(height: int, width: int, lam: float, cy: int, cx: int) -> tuple[int, int, int, int]:
    """``(y1, y2, x1, x2)``: the box of area about ``(1 - lam) H W`` centred on pixel ``(cy, cx)``, clipped.

    >>> cutmix_box(10, 10, 0.75, 5, 5), cutmix_box(10, 10, 0.75, 0, 9)  # a 5 x 5 cut: half-sides of 2
    ((3, 7, 3, 7), (0, 2, 7, 10))
    """
    cut = math.sqrt(1.0 - lam)
    half_h, half_w = int(height * cut) // 2, int(width * cut) // 2
    y1, y2 = min(max(cy - half_h, 0), height), min(max(cy + half_h, 0), height)
    x1, x2 = min(max(cx - half_w, 0), width), min(max(cx + half_w, 0), width)
    return y1, y2, x1, x2


def sample_cutmix(rng: np.random.Generator, batch: int, height: int, width: int, beta: float,
                  prob: float) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """One batch's draw: None (not mixed, probability ``1 - prob``) or ``(permutation, box)``."""
    if not rng.random() < prob:
        return None
    lam = float(rng.beta(beta, beta))
    perm = rng.permutation(batch)
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    return perm, cutmix_box(height, width, lam, cy, cx)


def cutmix(images: Tensor, labels: Tensor, perm: Tensor, box: tuple[int, int, int, int]) -> tuple[Tensor, Tensor, float]:
    """``(mixed images, labels of the pasted images, lam)``: ``box`` of every image replaced by the same box of
    image ``perm[i]``; ``lam = 1 - box area / (H W)``, the share of the label of the image itself."""
    y1, y2, x1, x2 = box
    height, width = images.shape[-2:]
    mixed = images.clone()
    mixed[:, :, y1:y2, x1:x2] = images[perm, :, y1:y2, x1:x2]
    lam = 1.0 - (y2 - y1) * (x2 - x1) / (height * width)
    return mixed, labels[perm], lam


class CutMix(WSOLMethod):
    """``wsol=cutmix``: paste a box from another image of the batch, mix the labels by its area (module docstring)."""

    name = "cutmix"
    random = True

    def __init__(self, beta: float = 1.0, prob: float = 1.0, seed: int = 0) -> None:
        super().__init__()
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta > 0:
            raise ConfigError(f"wsol.beta must be a number > 0 (the Beta(beta, beta) of the mixing ratio), got "
                              f"{beta!r}; wsol.prob=0 turns CutMix off", settings=["wsol.beta"])
        self.beta = float(beta)
        self.prob = check_rate("prob", prob)
        self.seed = check_int("seed", seed, 0)
        self.keys = {"beta": self.beta, "prob": self.prob, "seed": self.seed}

    def training_loss(self, model: nn.Module, images: Tensor, labels: Tensor,
                      rng: StepRandom | None) -> tuple[Tensor, Tensor]:
        b, _, h, w = images.shape
        draw = sample_cutmix(rng.numpy if rng is not None else np.random.default_rng(), b, h, w, self.beta, self.prob)
        if draw is None:
            return super().training_loss(model, images, labels, rng)
        perm, box = draw
        mixed, labels_b, lam = cutmix(images, labels, torch.as_tensor(perm, device=images.device), box)
        logits = model(mixed)["logits"]
        loss = lam * model.classification_loss(logits, labels) + (1.0 - lam) * model.classification_loss(logits, labels_b)
        return loss, logits
