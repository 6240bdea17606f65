"""Perturbations of a batch of images by their saliency maps: pixel ranks, substrates, ROAD's imputation.

Everything here is batched torch on the images' device; nothing loops over images in Python except where a
per-image random generator keeps the noise independent of the batch (DDP exactness).

* :func:`pixel_ranks`: each pixel's rank in its map, most salient first, ties in raster order (a stable sort),
  so "the k most salient pixels" of a map is ``ranks < k``.
* :func:`substrate`: what replaces removed pixels: ``"zeros"`` (0 in the model's input space, i.e. the dataset's
  mean colour for normalized inputs, RISE's deletion substrate), ``"mean"`` (each image's per-channel mean),
  ``"blur"`` (RISE's insertion substrate: the image under RISE's 11 x 11 Gaussian kernel of sigma 5, zero padded).
* :func:`linear_imputation`: ROAD's noisy linear imputation (Rong et al. 2022): every removed pixel is the
  weighted mean of its 8 neighbours (weight 1/6 for the 4 direct ones, 1/12 for the diagonals, only those inside
  the image), known neighbours giving the boundary values; then Gaussian noise is added to the removed pixels.
  The sparse system is symmetric positive definite once each row is scaled by its weight sum, so it is solved by
  conjugate gradients for every image and channel at once, with 3 x 3 convolutions as the operator and a
  geometric multigrid V-cycle (damped Jacobi, bilinear transfer, the same stencil on each 2x coarser grid) as
  the preconditioner: the iteration count then barely grows with the size of the removed region.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["SUBSTRATES", "linear_imputation", "pixel_ranks", "removal_counts", "rise_blur_kernel", "seed_of", "substrate"]

SUBSTRATES = ("zeros", "mean", "blur")

# ROAD's neighbour weights, direct neighbours 1/6 and diagonals 1/12 (they sum to 1 inside the image), are the
# separable [1, 2, 1] x [1, 2, 1] / 12 less its centre 4 / 12: two passes of shifted slices, which on a CPU is an
# order of magnitude faster than a 3 x 3 depthwise convolution.


def _neighbour_sum(x: Tensor) -> Tensor:
    """(..., H, W): each pixel's ROAD-weighted sum over its in-image neighbours (none outside the image)."""
    H, W = x.shape[-2:]
    p = F.pad(x, (1, 1, 1, 1))
    h = p[..., :, 0:W] + p[..., :, 2 : W + 2]
    h.add_(p[..., :, 1 : W + 1], alpha=2)
    v = h[..., 0:H, :] + h[..., 2 : H + 2, :]
    v.add_(h[..., 1 : H + 1, :], alpha=2)
    return v.sub_(x, alpha=4).div_(12)  # in place: the fine grid's solve is bound by memory traffic


def pixel_ranks(maps: Tensor) -> Tensor:
    """(B, H, W) maps -> (B, H, W) int64 ranks, 0 = the most salient pixel; ties keep raster order.

    Example:
        >>> pixel_ranks(torch.tensor([[[0.5, 1.0], [0.5, 0.0]]])).tolist()
        [[[1, 0], [2, 3]]]
    """
    B = maps.shape[0]
    flat = maps.reshape(B, -1).float()
    order = torch.sort(-flat, dim=1, stable=True).indices  # pixel indices, most salient first
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=maps.device).expand(B, -1))
    return ranks.reshape(maps.shape)


def rise_blur_kernel(size: int = 11, sigma: float = 5.0) -> Tensor:
    """RISE's blur kernel: a centred delta of ``size`` x ``size`` under a Gaussian filter of ``sigma`` whose
    support (4 sigma) is folded back at the edges by half-sample reflection, as RISE builds it with SciPy.

    Example:
        >>> k = rise_blur_kernel(); tuple(k.shape), round(float(k.sum()), 6)
        ((11, 11), 1.0)
    """
    radius = int(4.0 * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    centre, period = size // 2, 2 * size
    k1 = torch.zeros(size, dtype=torch.float64)
    for j in range(size):
        for m, w in zip(range(-radius, radius + 1), weights.tolist()):
            p = (j + m) % period  # half-sample reflection: ... c b a | a b c ... has period 2 * size
            if (p if p < size else period - 1 - p) == centre:
                k1[j] += w
    return torch.outer(k1, k1)


def substrate(images: Tensor, kind: str) -> Tensor:
    """(B, C, H, W) -> the substrate images of the same shape (see the module docstring for ``kind``)."""
    if kind == "zeros":
        return torch.zeros_like(images)
    if kind == "mean":
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images).clone()
    if kind == "blur":
        k = rise_blur_kernel().to(images.device, images.dtype)
        C = images.shape[1]
        weight = k.expand(C, 1, *k.shape).contiguous()
        return F.conv2d(images, weight, padding=k.shape[-1] // 2, groups=C)
    raise ValueError(f"substrate must be one of {', '.join(SUBSTRATES)}; got {kind!r}")


def _restrict_1d(x: Tensor, dim: int, n: int) -> Tensor:
    # coarse[i] = (f[2i-1] + 3 f[2i] + 3 f[2i+1] + f[2i+2]) / 4 (zero outside): the transpose of _prolong_1d
    x = x.movedim(dim, -1)
    p = F.pad(x, (1, 2 * n + 2 - x.shape[-1] - 1))
    c = (p[..., 0 : 2 * n : 2] + 3 * p[..., 1 : 2 * n + 1 : 2] + 3 * p[..., 2 : 2 * n + 2 : 2] + p[..., 3 : 2 * n + 3 : 2]) / 4
    return c.movedim(-1, dim)


def _prolong_1d(c: Tensor, dim: int, n: int) -> Tensor:
    # bilinear 2x with zero outside: f[2m] = (3 c[m] + c[m-1]) / 4, f[2m+1] = (3 c[m] + c[m+1]) / 4; first n kept
    c = c.movedim(dim, -1)
    p = F.pad(c, (1, 1))
    even = (3 * c + p[..., :-2]) / 4
    odd = (3 * c + p[..., 2:]) / 4
    f = torch.stack((even, odd), dim=-1).flatten(-2)[..., :n]
    return f.movedim(-1, dim)


class _Level:
    """One grid of the multigrid preconditioner: its removed mask, weight sums, and the next coarser grid, where a
    block is unknown only if all its pixels are (a known pixel anchors its block)."""

    def __init__(self, removed: Tensor, min_side: int = 4) -> None:
        self.removed = removed
        self.diag = _neighbour_sum(torch.ones_like(removed))  # each pixel's in-image neighbour weight sum
        self.inv_diag = removed / self.diag
        H, W = removed.shape[-2:]
        self.coarse = None
        if min(H, W) >= 2 * min_side:
            self.coarse = _Level(-F.max_pool2d(-removed, 2, ceil_mode=True), min_side)

    def select(self, keep: Tensor) -> "_Level":
        """The same hierarchy for the images ``keep`` only."""
        out = object.__new__(_Level)
        out.removed, out.diag, out.inv_diag = self.removed[keep], self.diag[keep], self.inv_diag[keep]
        out.coarse = None if self.coarse is None else self.coarse.select(keep)
        return out

    def apply(self, x: Tensor) -> Tensor:
        return _neighbour_sum(x).sub_(self.diag * x).mul_(self.removed).neg_()

    def restrict(self, r: Tensor) -> Tensor:
        Hc, Wc = self.coarse.removed.shape[-2:]
        return self.coarse.removed * _restrict_1d(_restrict_1d(r, -2, Hc), -1, Wc)

    def prolong(self, e: Tensor) -> Tensor:
        H, W = self.removed.shape[-2:]
        return self.removed * _prolong_1d(_prolong_1d(e, -2, H), -1, W)

    def vcycle(self, r: Tensor, sweeps: int = 2, omega: float = 0.8) -> Tensor:
        """A symmetric V-cycle for ``apply(x) = r`` from x = 0: damped Jacobi, coarse correction, damped Jacobi."""
        if self.coarse is None:
            sweeps = 16  # the coarsest grid (at most 7 x 7): Jacobi only
        x = omega * self.inv_diag * r
        for _ in range(sweeps - 1):
            x = x + omega * self.inv_diag * (r - self.apply(x))
        if self.coarse is None:
            return x
        x = x + self.prolong(self.coarse.vcycle(self.restrict(r - self.apply(x)), sweeps, omega))
        for _ in range(sweeps):
            x = x + omega * self.inv_diag * (r - self.apply(x))
        return x


def _pcg(level: _Level, rhs: Tensor, tol: float, max_iter: int) -> Tensor:
    """Conjugate gradients preconditioned by one V-cycle, every (image, channel) system at once, from x = 0.

    An image whose systems have all converged leaves the batch (its solution is final), so a chunk costs what its
    systems need, not what its hardest one needs times the chunk size."""
    def dot(a: Tensor, b: Tensor) -> Tensor:
        return (a * b).sum(dim=(2, 3), keepdim=True)

    tiny = torch.finfo(rhs.dtype).tiny
    out = torch.zeros_like(rhs)
    live = torch.arange(rhs.shape[0], device=rhs.device)  # the images still iterating
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    z = level.vcycle(r)
    p = z.clone()
    rz = dot(r, z)
    stop = (tol ** 2) * dot(rhs, rhs)
    for _ in range(max_iter):
        # a converged system stops moving (its residual zeroed): iterating it on would shrink its numbers into
        # float32 denormals, which the CPU computes two orders of magnitude slower
        active = dot(r, r) > stop
        going = active.flatten(1).any(dim=1)
        if not bool(going.all()):
            done = ~going
            out[live[done]] = x[done]
            if not bool(going.any()):
                return out
            live, x, r, p, rz, stop, active = (t[going] for t in (live, x, r, p, rz, stop, active))
            level = level.select(going)
        q = level.apply(p)
        pq = dot(p, q)
        alpha = torch.where(active & (pq > 0), rz / pq.clamp_min(tiny), torch.zeros_like(pq))
        x = x + alpha * p
        r = torch.where(active, r - alpha * q, torch.zeros_like(r))
        z = level.vcycle(r)
        rz_new = dot(r, z)
        beta = torch.where(rz > 0, rz_new / rz.clamp_min(tiny), torch.zeros_like(rz))
        p = z + beta * p
        rz = rz_new
    out[live] = x
    return out


def _solve(images: Tensor, removed: Tensor, tol: float, max_iter: int) -> Tensor:
    """The noiseless imputation: ``images`` with the removed pixels (``removed`` (N, 1, H, W) float 0/1) solved."""
    known = images * (1 - removed)
    rhs = removed * _neighbour_sum(known)
    return known + _pcg(_Level(removed), rhs, tol, max_iter)


def linear_imputation(images: Tensor, removed: Tensor, noise: float = 0.01, seeds: Tensor | None = None,
                      tol: float = 1e-6, max_iter: int = 2000) -> Tensor:
    """ROAD's noisy linear imputation of the ``removed`` pixels (see the module docstring).

    Args:
        images: (N, C, H, W) in the model's input space.
        removed: (N, H, W) bool, the pixels to impute.
        noise: the standard deviation of the Gaussian noise added to the imputed pixels (ROAD's 0.01).
        seeds: (N,) int64: image n's noise comes from a generator seeded with ``seeds[n]`` (e.g. a hash of the
            dataset index and the perturbation), so it does not depend on the batch or the process; None = the
            global generator.
        tol: relative residual at which conjugate gradients stop (per image and channel).

    Example:
        >>> img = torch.zeros(1, 1, 5, 5); img[..., :, 4] = 1.0  # a ramp's right edge is known
        >>> removed = torch.zeros(1, 5, 5, dtype=torch.bool); removed[0, 2, 3] = True
        >>> round(float(linear_imputation(img, removed, noise=0.0)[0, 0, 2, 3]), 4)  # (3/6 + 2/12 ... ) of 1
        0.3333
    """
    if images.ndim != 4 or removed.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"images must be (N, C, H, W) and removed (N, H, W); got {tuple(images.shape)}, "
                         f"{tuple(removed.shape)}")
    work = images.float()
    mask = removed.unsqueeze(1).to(work.dtype)
    out = _solve(work, mask, tol, max_iter).to(images.dtype)
    if noise > 0:
        if seeds is None:
            eps = torch.randn_like(out)
        else:
            eps = torch.stack([torch.randn(out.shape[1:], generator=torch.Generator().manual_seed(int(s)),
                                           dtype=out.dtype) for s in seeds.tolist()]).to(out.device)
        out = out + noise * eps * removed.unsqueeze(1).to(out.dtype)
    return out


def seed_of(index: Tensor, salt: Tensor | int) -> Tensor:
    """Per-image seeds from the dataset indices and a salt (which perturbation), independent of batch and rank."""
    return (index.to(torch.int64) * 1_000_003 + salt) % (2 ** 62)


def removal_counts(num_pixels: int, percents: list[float] | tuple[float, ...], most_relevant: bool) -> list[int]:
    """How many pixels ROAD removes at each percent: the pixels at or above the ``100 - p`` percentile of the map
    (most relevant first) or at or below the ``p`` percentile (least relevant first), with NumPy's linearly
    interpolated percentile on a map without ties, as ROAD's reference code selects them.

    Example:
        >>> removal_counts(100, [10, 50], True), removal_counts(100, [10, 50], False)
        ([10, 50], [10, 50])
    """
    n = num_pixels - 1
    if most_relevant:
        return [num_pixels - math.ceil(round((1 - p / 100) * n, 9)) for p in percents]
    return [math.floor(round(p / 100 * n, 9)) + 1 for p in percents]
