"""The center baseline of Choe et al. (CVPR 2020): the same centred Gaussian map for every image, no training.

The floor every WSOL method must beat: a method that localizes no better than "the object is in the middle"
has learnt nothing about where objects are. The map at an H x W input is

    m(x, y) = exp(-(u^2 + v^2) / (2 sigma^2)),   u = (2x + 1) / W - 1,   v = (2y + 1) / H - 1,

with ``(u, v)`` the pixel centres in coordinates where the image spans [-1, 1] on each axis (so the map is
isotropic on a square input) and ``sigma = 1`` by default, as in the paper ("standard deviation 1"). The scorer
then min-max normalizes it like any map. Its level sets are the same centred circles for every sigma, so sigma
changes only which radii the CAM threshold grid visits: MaxBoxAcc, MaxBoxAccV2 and PxAP hardly move with it.

:class:`CenterBaseline` serves these maps wherever camlab scores maps made elsewhere (the ``for_batch``
interface of :class:`camlab.external.ExternalMaps`): ``camlab-eval baseline=center``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["BASELINES", "CenterBaseline", "center_gaussian"]

BASELINES = ("center",)


def center_gaussian(height: int, width: int, sigma: float = 1.0) -> np.ndarray:
    """The (H, W) float32 centred Gaussian map (1 at the centre, not normalized); see the module docstring.

    Example:
        >>> m = center_gaussian(4, 4)
        >>> m.shape, bool(m[1, 1] == m[2, 2] == m.max()), round(float(m[0, 0]), 4)
        ((4, 4), True, 0.5698)
    """
    if not (isinstance(height, int) and isinstance(width, int) and height >= 1 and width >= 1):
        raise ValueError(f"height and width must be ints >= 1, got {height!r}, {width!r}")
    if not float(sigma) > 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    v = (2 * np.arange(height, dtype=np.float64) + 1) / height - 1  # (H,) in (-1, 1)
    u = (2 * np.arange(width, dtype=np.float64) + 1) / width - 1  # (W,)
    return np.exp(-(v[:, None] ** 2 + u[None, :] ** 2) / (2 * float(sigma) ** 2)).astype(np.float32)


class CenterBaseline:
    """Map source of the center baseline: :func:`center_gaussian` for every image of any split.

    Args:
        sigma: the Gaussian's standard deviation in half-image units (1: the paper's).
    """

    def __init__(self, sigma: float = 1.0) -> None:
        if not float(sigma) > 0:
            raise ValueError(f"baseline_sigma must be > 0, got {sigma!r}")
        self.sigma = float(sigma)
        self._served: set[int] = set()  # dataset indices (DDP padding repeats some)

    def for_batch(self, index: Tensor, size: tuple[int, int]) -> Tensor:
        """(B, H, W) float32: the same centred map for each of the batch's images."""
        index = torch.as_tensor(index).reshape(-1)
        n = int(index.numel())
        self._served.update(int(i) for i in index.tolist())
        m = torch.from_numpy(center_gaussian(int(size[0]), int(size[1]), self.sigma))
        return m.expand(n, *m.shape).contiguous()

    def describe(self) -> str:
        return f"center baseline (centred Gaussian, sigma {self.sigma:g} half-image widths; no model)"

    def report(self) -> dict[str, Any]:
        """What was scored (for ``metrics.json``)."""
        return {"source": "center baseline", "sigma": self.sigma, "num_maps": len(self._served), "key": "none"}

    def close(self) -> None:
        """Nothing to close (the same interface as :class:`camlab.external.ExternalMaps`)."""
