"""Class gradients ``dy^c/dA`` from the head only, and the gradient CAM methods built on them.

The gradient of a class score with respect to the last-layer features ``A`` (B, K, h, w) depends only on the part
of the network after ``A``, so it is computed by re-running the pooling + head on the (detached) features with
autograd: no second backbone pass, no hooks.

Factorization. A model with ``pooled(A) -> P`` (B, K) and ``head(P) -> y`` pools each channel on its own
(``P_k`` depends on ``A^k`` only: GAP, GMP, GeM, ...). By the chain rule

    dy^c / dA^k_ij = J[c, k] * D[k, i, j],   J = dy^c/dP_k (the head's Jacobian), D = dP_k/dA^k_ij (the pooling's),

so the gradients of n classes never need n copies of the features: ``D`` is one backward pass of ``sum P``, ``J``
is the head's weight for a linear head (else a batched backward over the classes), and every method below is
written on ``(A, D, J)`` with one contraction over channels per class (``Σ_k w[b, c, k] X[b, k, i, j]``, a batched
matrix product). A model with ``head_forward(A)`` instead (no pooling of its own) gets the full per-class gradient,
computed in chunks of classes within a memory budget, as ``D`` with ``J = 1``.

Inference mode. Lightning runs validation under ``torch.inference_mode()``; tensors made there cannot enter
autograd. :func:`class_gradients` leaves inference mode locally (``torch.inference_mode(False)``) and clones the
features into a normal tensor before differentiating (one extra copy of ``A``).

Every map function takes ``a`` (B, K, h, w) and :class:`Gradients` of n classes per image and returns the raw maps
(B, n, h, w); the gradient methods' maps are non-negative except HiResCAM's (the signed sum, as CAM).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

#: Memory budget of one chunk of classes (its ``(B, n, K, h, w)`` float32 temporaries together), for the paths that
#: need per-class spatial gradients: ``head_forward`` models, Grad-CAM++ off GAP / GMP, Smooth Grad-CAM++.
CHUNK_BYTES = 128 * 2**20


@dataclass
class Gradients:
    """``dy^c/dA^k_ij = j[b, c, k] * d[b, c or 0, k, i, j]`` for the n classes of each image.

    ``d`` is ``(B, 1, K, h, w)`` when factorized (the pooling's derivative, shared by the classes), ``(B, n, K, h,
    w)`` for a ``head_forward`` model (then ``j`` is 1); ``j`` is ``(B, n, K)``.
    """

    d: Tensor
    j: Tensor

    def full(self) -> Tensor:
        """The materialized ``(B, n, K, h, w)`` gradients (memory: n copies of the features)."""
        return self.j[..., None, None] * self.d


def head_logits(model: nn.Module, features: Tensor) -> Tensor:
    """Logits from last-layer features: ``model.head_forward(A)`` or ``model.head(model.pooled(A))``."""
    forward = getattr(model, "head_forward", None)
    if callable(forward):
        return forward(features)
    if callable(getattr(model, "pooled", None)) and callable(getattr(model, "head", None)):
        return model.head(model.pooled(features))  # (B, C)
    raise TypeError(
        f"{type(model).__name__} needs `head_forward(features)` or `pooled(features)` + `head(pooled)` "
        "for this CAM method"
    )


def factorized(model: nn.Module) -> bool:
    """Whether the model's gradients factorize as ``J ⊗ D`` (a ``pooled`` + ``head`` model, no ``head_forward``)."""
    return (not callable(getattr(model, "head_forward", None)) and callable(getattr(model, "pooled", None))
            and callable(getattr(model, "head", None)))


def input_independent(model: nn.Module) -> bool:
    """Whether ``dy^c/dA`` is the same for every input: global average pooling + a linear head (``W[c, k] / hw``)."""
    return factorized(model) and getattr(model, "pool", None) == "gap" and isinstance(model.head, nn.Linear)


def _batched_grads(out: Tensor, x: Tensor, cls: Tensor) -> Tensor:
    """``d out[b, cls[b, c]] / d x[b]`` for every column c: ``(B, n, *x.shape[1:])``; one backward for n = 1, else
    one batched backward (vmap over one-hot output gradients)."""
    if cls.shape[1] == 1:
        (g,) = torch.autograd.grad(out.gather(1, cls).sum(), x)
        return g.unsqueeze(1)
    onehot = torch.zeros(cls.shape[1], *out.shape, dtype=out.dtype, device=out.device)  # (n, B, C)
    onehot.scatter_(2, cls.t().unsqueeze(2), 1.0)
    (g,) = torch.autograd.grad(out, x, grad_outputs=onehot, is_grads_batched=True)  # (n, B, ...)
    return g.movedim(0, 1)


def class_chunk(b: int, per_class: int, n: int) -> int:
    """Classes per chunk so that a ``(B, chunk, per_class)`` float32 tensor stays within :data:`CHUNK_BYTES`."""
    return max(1, min(n, CHUNK_BYTES // max(1, 4 * b * per_class)))


def class_gradients(model: nn.Module, features: Tensor, classes: Tensor) -> tuple[Tensor, Gradients]:
    """``(A, dy^c/dA)`` of ``classes`` (B, n), from the head only (see the module docstring).

    Returns ``A`` as a normal float tensor (B, K, h, w) and the factorized :class:`Gradients`.
    """
    with torch.inference_mode(False), torch.enable_grad():
        # Clones are normal tensors even when the inputs were made in inference mode (gather saves its index).
        cls = classes.to(features.device).clone()  # (B, n)
        a = features.detach().clone().requires_grad_(True)  # (B, K, h, w)
        if not factorized(model):
            g = _batched_grads(head_logits(model, a), a, cls)  # (B, n, K, h, w)
            return a.detach(), Gradients(g, torch.ones(g.shape[:3], dtype=g.dtype, device=g.device))
        p = model.pooled(a)  # (B, K)
        (d,) = torch.autograd.grad(p.sum(), a)  # (B, K, h, w) = dP_k/dA^k: the pooling is per channel
        head = model.head
        if isinstance(head, nn.Linear):
            j = head.weight.detach().to(a.dtype)[cls]  # (B, n, K)
        else:
            q = p.detach().requires_grad_(True)
            j = _batched_grads(head(q), q, cls)  # (B, n, K)
    return a.detach(), Gradients(d.unsqueeze(1), j.detach())


def contract(w: Tensor, x: Tensor) -> Tensor:
    """``Σ_k w[b, c, k] x[b, c or 0, k, i, j]``: ``(B, n, K), (B, 1 or n, K, h, w) -> (B, n, h, w)``."""
    b, n, k = w.shape
    h, wd = x.shape[-2:]
    if x.shape[1] == 1:  # shared by the classes: one batched matrix product
        return torch.bmm(w, x.reshape(b, k, h * wd)).view(b, n, h, wd)
    return torch.einsum("bnk,bnkhw->bnhw", w, x)


def _pos(t: Tensor) -> Tensor:
    return torch.relu(t)


def _neg(t: Tensor) -> Tensor:
    return torch.relu(-t)


# ---- maps: a (B, K, h, w), Gradients of n classes -> (B, n, h, w) ---------------------------------------------
def gradcam_map(a: Tensor, gr: Gradients) -> Tensor:
    """Grad-CAM (Selvaraju et al. 2017): ``ReLU(Σ_k α_k A^k)``, ``α_k = mean_ij dy/dA^k_ij = J[c, k] mean_ij D``.

    >>> a = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]])  # (1, 2, 1, 2)
    >>> gr = Gradients(torch.tensor([[[[[1.0, 1.0]], [[-1.0, 0.0]]]]]), torch.ones(1, 1, 2))  # α = (1, -0.5)
    >>> gradcam_map(a, gr).tolist()
    [[[[0.0, 2.0]]]]
    """
    w = gr.j * gr.d.mean(dim=(-2, -1))  # (B, n, K)
    return torch.relu(contract(w, a.unsqueeze(1)))


def xgradcam_map(a: Tensor, gr: Gradients) -> Tensor:
    """XGrad-CAM (Fu et al. 2020): ``w_k = Σ_ij (A^k_ij / Σ_ab A^k_ab) dy/dA^k_ij``, map ``ReLU(Σ_k w_k A^k)``.

    A channel whose activations sum to 0 gets weight 0.

    >>> a = torch.tensor([[[[1.0, 3.0]]]]); gr = Gradients(torch.tensor([[[[[2.0, 0.0]]]]]), torch.ones(1, 1, 1))
    >>> xgradcam_map(a, gr).tolist()  # w = 1/4 * 2
    [[[[0.5, 1.5]]]]
    """
    a1 = a.unsqueeze(1)  # (B, 1, K, h, w)
    s = a1.sum(dim=(-2, -1))  # (B, 1, K)
    num = (a1 * gr.d).sum(dim=(-2, -1))  # (B, 1 or n, K)
    w = gr.j * torch.where(s != 0, num / torch.where(s != 0, s, torch.ones_like(s)), 0.0)
    return torch.relu(contract(w, a1))


def layercam_map(a: Tensor, gr: Gradients) -> Tensor:
    """LayerCAM (Jiang et al. 2021): ``ReLU(Σ_k ReLU(dy/dA^k_ij) A^k_ij)``, a per-position weight.

    ``ReLU(J D) = ReLU(J) ReLU(D) + ReLU(-J) ReLU(-D)`` keeps the factorization (two contractions).

    >>> a = torch.tensor([[[[1.0, 2.0]], [[3.0, 1.0]]]])
    >>> gr = Gradients(torch.tensor([[[[[1.0, -1.0]], [[0.5, 2.0]]]]]), torch.ones(1, 1, 2))
    >>> layercam_map(a, gr).tolist()
    [[[[2.5, 2.0]]]]
    """
    a1 = a.unsqueeze(1)
    return torch.relu(contract(_pos(gr.j), _pos(gr.d) * a1) + contract(_neg(gr.j), _neg(gr.d) * a1))


def hirescam_map(a: Tensor, gr: Gradients) -> Tensor:
    """HiResCAM (Draelos & Carin 2020): ``Σ_k dy/dA^k ⊙ A^k``, the element-wise product summed over channels.

    Signed, like CAM, which it generalizes: for GAP + a linear head it is ``CAM / (h w)`` exactly (no ReLU; the
    peers apply one to every method).

    >>> a = torch.tensor([[[[1.0, 2.0]], [[3.0, 1.0]]]])
    >>> gr = Gradients(torch.tensor([[[[[1.0, -1.0]], [[0.5, -2.0]]]]]), torch.ones(1, 1, 2))
    >>> hirescam_map(a, gr).tolist()
    [[[[2.5, -4.0]]]]
    """
    return contract(gr.j, gr.d * a.unsqueeze(1))


def gradcam_elementwise_map(a: Tensor, gr: Gradients) -> Tensor:
    """Grad-CAM element-wise (pytorch-grad-cam's ``GradCAMElementWise``): ``Σ_k ReLU(dy/dA^k ⊙ A^k)``.

    >>> a = torch.tensor([[[[1.0, 2.0]], [[3.0, 1.0]]]])
    >>> gr = Gradients(torch.tensor([[[[[1.0, -1.0]], [[0.5, -2.0]]]]]), torch.ones(1, 1, 2))
    >>> gradcam_elementwise_map(a, gr).tolist()
    [[[[2.5, 0.0]]]]
    """
    e = gr.d * a.unsqueeze(1)  # (B, 1 or n, K, h, w)
    return contract(_pos(gr.j), _pos(e)) + contract(_neg(gr.j), _neg(e))


def _pp_weights(pos: Tensor, s: Tensor) -> Tensor:
    """``Σ_ij ReLU(g) / (2 + s ReLU(g))`` over the last two dims (0 where the denominator is 0)."""
    denom = 2 + s * pos
    return torch.where(denom != 0, pos / torch.where(denom != 0, denom, 1.0), 0.0).sum(dim=(-2, -1))


def gradcam_pp_map(a: Tensor, gr: Gradients) -> Tensor:
    """Grad-CAM++ (Chattopadhay et al. 2018, eq. 19 with the exponential-of-score closed form).

    With ``Y = exp(S)`` and a piecewise-linear network, the 2nd/3rd derivatives of ``Y`` are ``exp(S) g^2`` and
    ``exp(S) g^3`` (``g = dS/dA``), so ``α^k_ij = g^2 / (2 g^2 + Σ_ab A^k_ab g^3)`` (0 where that denominator is 0)
    and ``w_k = Σ_ij α^k_ij ReLU(g^k_ij)``; the map is ``ReLU(Σ_k w_k A^k)``. The common factor ``exp(S)`` of
    ``dY/dA`` is left out (a positive per-image constant, and it overflows for large logits), as in the authors'
    code. Where ``g > 0``, ``α ReLU(g) = g / (2 + s g)``: when each channel's pooling derivative ``D`` takes one
    non-zero value (GAP, GMP), ``w_k`` is that value's count times one term, with no spatial temporaries.

    >>> a = torch.tensor([[[[1.0, 2.0], [0.0, 3.0]]]])  # (1, 1, 2, 2); sum = 6
    >>> gr = Gradients(torch.tensor([[[[[0.0, 0.0], [0.0, 0.5]]]]]), torch.ones(1, 1, 1))
    >>> gradcam_pp_map(a, gr).tolist()  # α at the max = 0.25 / (0.5 + 6 * 0.125) = 0.2
    [[[[0.10000000149011612, 0.20000000298023224], [0.0, 0.30000001192092896]]]]
    """
    a1 = a.unsqueeze(1)
    s = a1.sum(dim=(-2, -1), keepdim=True)  # (B, 1, K, 1, 1)
    d = gr.d
    nz = d != 0
    hi = torch.where(nz, d, -torch.inf).amax(dim=(-2, -1))  # (B, 1 or n, K)
    lo = torch.where(nz, d, torch.inf).amin(dim=(-2, -1))
    count = nz.sum(dim=(-2, -1))
    if bool(((hi == lo) | (count == 0)).all()):  # one non-zero value per channel
        pos = _pos(gr.j * torch.where(count > 0, hi, 0.0))  # (B, n, K)
        w = count * _pp_weights(pos[..., None, None], s)
    else:
        b, n, k = gr.j.shape
        step = class_chunk(b, 5 * k * d.shape[-2] * d.shape[-1], n)  # about five temporaries of that size
        w = torch.cat([_pp_weights(_pos(Gradients(d if d.shape[1] == 1 else d[:, c:c + step],
                                                  gr.j[:, c:c + step]).full()), s)
                       for c in range(0, n, step)], dim=1)  # (B, n, K)
    return torch.relu(contract(w, a1))


MAPS: dict[str, Callable[[Tensor, Gradients], Tensor]] = {
    "gradcam": gradcam_map,
    "gradcam_pp": gradcam_pp_map,
    "xgradcam": xgradcam_map,
    "layercam": layercam_map,
    "hirescam": hirescam_map,
    "gradcam_elementwise": gradcam_elementwise_map,
}


def gradient_maps(model: nn.Module, features: Tensor, classes: Tensor, method: str) -> Tensor:
    """Raw maps ``(B, n, h, w)`` of ``classes`` (B, n) by the gradient method ``method`` (a key of :data:`MAPS`).

    Factorized models: all classes at once. ``head_forward`` models: per chunk of classes, each chunk's full
    gradients within :data:`CHUNK_BYTES`.
    """
    fn = MAPS[method]
    if factorized(model):
        a, gr = class_gradients(model, features, classes)
        return fn(a, gr)
    b, k, h, w = features.shape
    step = class_chunk(b, 4 * k * h * w, classes.shape[1])  # the gradients and the method's temporaries
    parts = []
    for c in range(0, classes.shape[1], step):
        a, gr = class_gradients(model, features, classes[:, c:c + step])
        parts.append(fn(a, gr))
    return torch.cat(parts, dim=1)


def model_features(model: nn.Module, images: Tensor) -> Tensor:
    """The last-layer features of ``model(images)``, which must return ``{"features": (B, K, h, w), ...}``."""
    out = model(images)
    if not isinstance(out, dict) or "features" not in out:
        raise TypeError(f"{type(model).__name__}(images) must return {{'logits', 'features'}} for smoothgradcampp "
                        f"(got {type(out).__name__})")
    return out["features"].float()


def _smooth_weights(d1: Tensor, d2: Tensor, d3: Tensor, s: Tensor) -> Tensor:
    """``Σ_ij α ReLU(D_1)``, ``α = D_2 / (2 D_2 + s D_3)`` (0 where that is 0): ``(B, n, K, h, w)`` -> ``(B, n, K)``."""
    denom = 2 * d2 + s * d3
    alpha = torch.where(denom != 0, d2 / torch.where(denom != 0, denom, 1.0), 0.0)
    return (alpha * torch.relu(d1)).sum(dim=(-2, -1))


def smoothgradcampp_maps(model: nn.Module, features: Tensor, images: Tensor, classes: Tensor, n_samples: int,
                         sigma: float, seed: int) -> Tensor:
    """Smooth Grad-CAM++ (Omeiza et al. 2019): Grad-CAM++ with its derivatives averaged over noisy inputs.

    ``n_samples`` inputs ``x + sigma * ε_m`` (``ε_m`` the m-th ``torch.randn(images.shape)`` draw of a generator
    on the images' device seeded with ``seed``; ``sigma`` in the model's input units) each give features ``A_m`` and
    head gradients ``g_m = dS/dA_m``; with ``D_p = mean_m g_m^p``, ``α = D_2 / (2 D_2 + Σ_ab A_ab D_3)`` (0 where
    that is 0), ``w_k = Σ_ij α ReLU(D_1)`` and the map ``ReLU(Σ_k w_k A^k)`` of the clean features ``A`` (α's
    numerator is ``D_2``, as in Grad-CAM++; ``exp(S)`` left out per sample, as there). Cost: ``n_samples`` extra
    forward passes of the model (no backbone backward: the gradients are the head's). For GAP + a linear head the
    gradients do not depend on the input, so the average is the clean gradient and the map is Grad-CAM++'s
    exactly: no extra pass is run. For another pooling with a linear head, ``g_m = W[c, k] D_m``, so
    ``D_p = W[c, k]^p mean_m D_m^p``: the noisy passes are reduced to three class-free averages first.

    Returns ``(B, n, h, w)`` for ``classes`` (B, n).
    """
    if input_independent(model):
        a, gr = class_gradients(model, features, classes)
        return gradcam_pp_map(a, gr)
    gen = torch.Generator(device=images.device).manual_seed(int(seed))
    noisy = []
    with torch.no_grad():
        for _ in range(n_samples):
            eps = torch.randn(images.shape, generator=gen, device=images.device, dtype=images.dtype)
            noisy.append(model_features(model, images + sigma * eps))  # (B, K, h, w)
    a = features.detach().float().clone()
    a1 = a.unsqueeze(1)
    s = a1.sum(dim=(-2, -1), keepdim=True)  # (B, 1, K, 1, 1)
    b, k, h, w = a.shape
    linear = factorized(model) and isinstance(model.head, nn.Linear)
    if linear:  # mean_m D_m^p once, then W[c, k]^p per class
        ds = [class_gradients(model, f, classes[:, :1])[1].d for f in noisy]  # (B, 1, K, h, w) each
        e1, e2, e3 = (sum(d**p for d in ds) / n_samples for p in (1, 2, 3))
        weight = model.head.weight.detach().to(a.dtype)
    step = class_chunk(b, 6 * k * h * w, classes.shape[1])  # about six temporaries of that size per chunk
    parts = []
    for c in range(0, classes.shape[1], step):
        cols = classes[:, c:c + step]
        if linear:
            j = weight[cols][..., None, None]  # (B, n', K, 1, 1)
            d1, d2, d3 = j * e1, j * j * e2, j * j * j * e3
        else:
            d1 = d2 = d3 = None
            for f in noisy:
                g = class_gradients(model, f, cols)[1].full()  # (B, n', K, h, w)
                g2 = g * g
                d1, d2, d3 = (g, g2, g2 * g) if d1 is None else (d1 + g, d2 + g2, d3 + g2 * g)
            d1, d2, d3 = d1 / n_samples, d2 / n_samples, d3 / n_samples
        parts.append(torch.relu(contract(_smooth_weights(d1, d2, d3, s), a1)))
    return torch.cat(parts, dim=1)
