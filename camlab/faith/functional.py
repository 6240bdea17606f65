"""Faithfulness metrics of saliency maps that need the model: per-image values, batched on the model's device.

Each function takes ``model``, a callable mapping ``(N, 3, H, W)`` model inputs to ``(N, C)`` logits (a
:class:`camlab.models.CAMClassifier`'s ``{"logits", ...}`` output is accepted too), the ``(B, 3, H, W)`` inputs,
their ``(B, H, W)`` maps at the input size and the ``(B,)`` target classes. The score of an image is the target
class's softmax probability (``score="logit"``: its logit). Perturbed images are built and scored in chunks of at
most ``chunk`` images per forward pass (the memory budget: ``chunk`` inputs and their activations). Nothing here
tracks gradients.

* :func:`average_drop_increase` (Chattopadhay et al. 2018, Grad-CAM++): the input multiplied by its min-max
  normalized map, one extra forward pass. Per image ``drop = max(0, Y - O) / Y`` and ``increase = O > Y``, with
  ``Y`` the score of the input and ``O`` that of the masked input; Average Drop and Increase in Confidence are
  their means x 100. The product is taken in the model's input space (normalized pixels), as both pytorch-grad-cam
  and torchcam do.
* :func:`insertion_deletion` (Petsiuk et al. 2018, RISE): the pixels in order of saliency (ties in raster order);
  at step ``i`` of ``steps`` the first ``i * H * W // steps`` of them are deleted (replaced by the deletion
  substrate) or inserted (into the insertion substrate); the curve of scores over the ``steps + 1`` stages and its
  area by the trapezoid rule over a unit x axis. ``2 (steps + 1)`` forward passes per image.
* :func:`road` (Rong et al. 2022): at each percent ``p``, the ``p`` % most relevant (MoRF) or least relevant
  (LeRF) pixels are imputed by :func:`camlab.faith.perturb.linear_imputation` and the image scored;
  ``2 len(percents)`` forward passes per image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from camlab.faith.perturb import SUBSTRATES, linear_imputation, pixel_ranks, removal_counts, seed_of, substrate

__all__ = ["auc", "average_drop_increase", "insertion_deletion", "road", "scores"]

SCORES = ("softmax", "logit")


def _logits(model: Callable, x: Tensor) -> Tensor:
    out = model(x)
    return out["logits"] if isinstance(out, dict) else out


def scores(model: Callable, images: Tensor, targets: Tensor, score: str = "softmax", chunk: int = 64) -> Tensor:
    """(N,) float64 scores of the ``targets`` classes of ``images``, ``chunk`` images per forward pass."""
    if score not in SCORES:
        raise ValueError(f"score must be one of {', '.join(SCORES)}; got {score!r}")
    out = []
    with torch.no_grad():
        for s in range(0, images.shape[0], chunk):
            logits = _logits(model, images[s : s + chunk]).double()
            values = logits.softmax(dim=1) if score == "softmax" else logits
            out.append(values.gather(1, targets[s : s + chunk].reshape(-1, 1).to(values.device)).squeeze(1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64, device=images.device)


def _check(images: Tensor, maps: Tensor, targets: Tensor) -> None:
    if images.ndim != 4 or maps.shape != (images.shape[0], *images.shape[2:]) or targets.shape != (images.shape[0],):
        raise ValueError(f"images must be (B, C, H, W), maps (B, H, W) at the input size and targets (B,); got "
                         f"{tuple(images.shape)}, {tuple(maps.shape)}, {tuple(targets.shape)}")


def _normalized(maps: Tensor) -> Tensor:
    flat = maps.reshape(maps.shape[0], -1).float()
    lo, hi = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    span = hi - lo
    out = torch.where(span > 0, (flat - lo) / span.clamp_min(torch.finfo(span.dtype).tiny), torch.zeros_like(flat))
    return out.reshape(maps.shape)


def average_drop_increase(model: Callable, images: Tensor, maps: Tensor, targets: Tensor, score: str = "softmax",
                          base: Tensor | None = None, chunk: int = 64) -> tuple[Tensor, Tensor, Tensor]:
    """Per image ``(drop, increase, masked score)``: float64 (B,) each (``increase`` 0/1; ``drop`` NaN where the
    input's score is not positive, e.g. a negative logit). ``base``: the (B,) scores of the unperturbed inputs
    when already known (one forward pass fewer)."""
    _check(images, maps, targets)
    base = scores(model, images, targets, score, chunk) if base is None else base.double()
    masked = scores(model, images * _normalized(maps).unsqueeze(1).to(images.dtype), targets, score, chunk)
    # the drop is relative to Y: undefined (NaN) where Y <= 0, which only a logit score can give
    drop = torch.where(base > 0, (base - masked).clamp_min(0) / base.clamp_min(torch.finfo(torch.float64).tiny),
                       torch.full_like(base, float("nan")))
    return drop, (masked > base).double(), masked


def auc(curves: Tensor) -> Tensor:
    """(..., S + 1) curves over a unit x axis -> (...) areas by the trapezoid rule (RISE's rule).

    Example:
        >>> float(auc(torch.tensor([1.0, 0.5, 0.0])))
        0.5
    """
    n = curves.shape[-1] - 1
    return (curves.sum(-1) - (curves[..., 0] + curves[..., -1]) / 2) / n


def _perturbed_scores(model: Callable, make: Callable[[Tensor, Tensor], Tensor], B: int, stages: int,
                      targets: Tensor, score: str, chunk: int, device: torch.device) -> Tensor:
    """(B, stages) scores, with ``make(images_idx, stage_idx)`` building the perturbed inputs of a chunk; the
    pairs go stage by stage, so a chunk holds like perturbations (ROAD: systems of like difficulty)."""
    pairs = torch.arange(B * stages, device=device)
    out = torch.empty(stages * B, dtype=torch.float64, device=device)
    for s in range(0, pairs.numel(), chunk):
        p = pairs[s : s + chunk]
        k, b = p // B, p % B
        out[s : s + chunk] = scores(model, make(b, k), targets[b], score, chunk)
    return out.reshape(stages, B).T.contiguous()


def insertion_deletion(model: Callable, images: Tensor, maps: Tensor, targets: Tensor, steps: int = 20,
                       insertion_substrate: str = "blur", deletion_substrate: str = "zeros", score: str = "softmax",
                       chunk: int = 64, base: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per image ``(insertion, deletion)`` curves, float64 (B, steps + 1) each (:func:`auc` gives their areas).
    ``base``: the (B,) scores of the inputs when known: the last insertion and the first deletion stage are the
    input itself, so they are not scored again (``2 steps`` forward passes per image instead of ``2 (steps + 1)``)."""
    _check(images, maps, targets)
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    for name, kind in (("insertion_substrate", insertion_substrate), ("deletion_substrate", deletion_substrate)):
        if kind not in SUBSTRATES:
            raise ValueError(f"{name} must be one of {', '.join(SUBSTRATES)}; got {kind!r}")
    B, (H, W) = images.shape[0], images.shape[-2:]
    ranks = pixel_ranks(maps).unsqueeze(1)  # (B, 1, H, W)
    counts = (torch.arange(steps + 1, device=images.device) * (H * W)) // steps  # pixels changed at each stage
    curves = []
    for kind, inserting in ((insertion_substrate, True), (deletion_substrate, False)):
        sub = substrate(images, kind)
        # with ``base``, the stages scored are 0..steps-1 (insertion) or 1..steps (deletion)
        first = int(base is not None and not inserting)

        def make(b: Tensor, k: Tensor, sub: Tensor = sub, inserting: bool = inserting, first: int = first) -> Tensor:
            chosen = ranks[b] < counts[k + first].reshape(-1, 1, 1, 1)  # the most salient pixels of each stage
            return torch.where(chosen, images[b], sub[b]) if inserting else torch.where(chosen, sub[b], images[b])

        stages = steps if base is not None else steps + 1
        curve = _perturbed_scores(model, make, B, stages, targets, score, chunk, images.device)
        if base is not None:
            known = base.double().to(curve.device).reshape(-1, 1)
            curve = torch.cat([curve, known], dim=1) if inserting else torch.cat([known, curve], dim=1)
        curves.append(curve)
    return curves[0], curves[1]


def road(model: Callable, images: Tensor, maps: Tensor, targets: Tensor,
         percents: Sequence[float] = (10, 20, 30, 40, 50, 60, 70, 80, 90), noise: float = 0.01,
         index: Tensor | None = None, score: str = "softmax", chunk: int = 64) -> tuple[Tensor, Tensor]:
    """Per image ``(morf, lerf)`` scores, float64 (B, len(percents)) each, of the inputs with the most / least
    relevant ``p`` % of their pixels imputed. ``index`` (B,): dataset indices that seed each image's imputation
    noise (so it is the same in any batch and process); None = the global generator."""
    _check(images, maps, targets)
    percents = [float(p) for p in percents]
    if not percents or any(not 0 < p < 100 for p in percents):
        raise ValueError(f"percents must be in (0, 100), e.g. [10, 20, ..., 90]; got {percents}")
    B, (H, W) = images.shape[0], images.shape[-2:]
    ranks = pixel_ranks(maps)  # (B, H, W)
    out = []
    for most_relevant in (True, False):
        counts = torch.tensor(removal_counts(H * W, percents, most_relevant), device=images.device)
        P = len(percents)

        def make(b: Tensor, k: Tensor, counts: Tensor = counts, most_relevant: bool = most_relevant) -> Tensor:
            r = ranks[b] if most_relevant else (H * W - 1) - ranks[b]
            removed = r < counts[k].reshape(-1, 1, 1)
            seeds = None if index is None else seed_of(index.to(b.device)[b], 2 * k + int(most_relevant))
            return linear_imputation(images[b], removed, noise=noise, seeds=seeds).to(images.dtype)

        out.append(_perturbed_scores(model, make, B, P, targets, score, chunk, images.device))
    return out[0], out[1]
