"""The contract of a WSOL training method, the random numbers of one training step, and vanilla CAM training.

A method is an ``nn.Module`` owned by :class:`camlab.models.CAMClassifier` (its ``wsol_method``). The model calls

- ``attach(backbone, num_classes)`` once, when it is built: a module-side method adds its layers (ACoL's second
  head, SPG's auxiliary heads) and its forward hooks on named backbone blocks (ADL, SPG);
- ``training_loss(model, images, labels, rng) -> (loss, logits)`` in every training step, in place of one forward
  pass and a cross-entropy; ``rng`` is the step's :class:`StepRandom` for a method whose ``random`` is True, else
  None;
- ``cam(model, features, classes)`` for every map built from a forward pass (the CAM callback, the per-image
  writer, camlab-predict): the default is the linear head's CAM of ``features``.

Outside ``training_loss`` a method changes nothing: validation, test and predict run the model's one forward pass
and the maps come from its features. ``spec()`` is the method as a plain dict (its name and every key, resolved);
the model stores it in its hyper-parameters, so a checkpoint rebuilds the same model.

Random numbers: a step's generators are seeded by :func:`step_seed` from ``(seed, rank, epoch, batch index)``,
never from the global generators, so a resumed run and every DDP rank draw exactly what an uninterrupted run
draws there, whatever else consumed random numbers.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from camlab.cam import class_activation_maps
from camlab.errors import ConfigError

__all__ = ["StepRandom", "VanillaCAM", "WSOLMethod", "check_int", "check_rate", "step_seed"]


def step_seed(seed: int, rank: int, epoch: int, batch: int) -> int:
    """The seed of one training step of one process: ``(seed, rank, epoch, batch)`` mixed by numpy's SeedSequence.

    >>> step_seed(0, 0, 0, 0) == step_seed(0, 0, 0, 0) != step_seed(0, 1, 0, 0)
    True
    """
    words = [int(seed) % (1 << 64), int(rank), int(epoch), int(batch)]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0])


class StepRandom:
    """The random numbers of one training step: ``torch`` (a generator on the batch's device) and ``numpy`` (a
    ``numpy.random.Generator`` for host-side scalars), both seeded with ``seed``; each is created on first use."""

    def __init__(self, seed: int, device: torch.device | str = "cpu") -> None:
        self.seed = int(seed)
        self.device = torch.device(device)
        self._torch: torch.Generator | None = None
        self._numpy: np.random.Generator | None = None

    @property
    def torch(self) -> torch.Generator:
        if self._torch is None:
            self._torch = torch.Generator(device=self.device).manual_seed(self.seed)
        return self._torch

    @property
    def numpy(self) -> np.random.Generator:
        if self._numpy is None:
            self._numpy = np.random.default_rng(self.seed)
        return self._numpy


def check_rate(key: str, value: Any) -> float:
    """``value`` as a float in [0, 1], else a :class:`ConfigError` naming ``wsol.<key>``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"wsol.{key} must be a number in [0, 1], got {value!r}", settings=[f"wsol.{key}"])
    return float(value)


def check_int(key: str, value: Any, minimum: int, what: str = "") -> int:
    """``value`` as an int >= ``minimum``, else a :class:`ConfigError` naming ``wsol.<key>`` (``what``: a hint)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        hint = f" ({what})" if what else ""
        raise ConfigError(f"wsol.{key} must be an integer >= {minimum}{hint}, got {value!r}", settings=[f"wsol.{key}"])
    return int(value)


class WSOLMethod(nn.Module):
    """Base class: vanilla CAM training (one forward pass, cross-entropy), the linear head's CAM.

    Subclasses set ``name``, ``random`` (draws random numbers in training) and ``keys`` (their resolved
    arguments, returned by :meth:`spec`), and override the hooks they change.
    """

    name = "cam"
    random = False

    def __init__(self) -> None:
        super().__init__()
        self.keys: dict[str, Any] = {}

    def attach(self, backbone: nn.Module, num_classes: int) -> None:
        """Called once by the model after its head is built: add layers and hooks (module-side methods)."""

    def training_loss(self, model: nn.Module, images: Tensor, labels: Tensor,
                      rng: StepRandom | None) -> tuple[Tensor, Tensor]:
        """``(loss, logits)`` of one training batch; ``logits`` (B, C) are what train/acc counts."""
        out = model(images)
        return model.classification_loss(out["logits"], labels), out["logits"]

    def cam(self, model: nn.Module, features: Tensor, classes: Tensor) -> Tensor:
        """Raw maps ``(B, h, w)`` / ``(B, k, h, w)`` of ``classes`` from this forward pass's ``features``."""
        return class_activation_maps(features, model.head.weight, classes)

    def spec(self) -> dict[str, Any]:
        """The method as a plain dict: ``{"name": ..., **keys}`` (what :func:`camlab.methods.build_method` takes)."""
        return {"name": self.name, **self.keys}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.keys.items())


class VanillaCAM(WSOLMethod):
    """``wsol=cam``: training as without a method (Zhou et al. 2016): nothing is added or changed."""
