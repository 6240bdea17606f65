"""Where module-side WSOL methods plug into a backbone: named blocks, their default choice, and a check of each.

A block is a submodule of the backbone named by its dotted path (``layer4.0``, ``features.9``, ``Mixed_6e``), as
``backbone.get_submodule`` takes it. ADL runs after each of its blocks (a forward hook replaces the block's
output); SPG feeds its two auxiliary heads from the outputs of its two blocks. Hooks leave the backbone's
parameters and their names as they are, so pretrained weights and CAM checkpoints load unchanged.

:func:`default_blocks` follows wsolevaluation's positions where it has the architecture (ResNet-50, VGG16,
Inception-v3) and the same depth elsewhere; :func:`check_blocks` runs the backbone once on a tiny zero image (no
gradient, eval mode: no running statistic moves) to learn each block's channel count and to refuse, at set-up, a
block whose output is not a feature map or is overwritten in place by the layer after it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from camlab.errors import ConfigError

__all__ = ["block_names", "check_blocks", "default_blocks"]

# torchvision `.features` backbones: (ADL blocks, SPG taps) as indices into `.features`
_FEATURES_BLOCKS = {
    "convnext_tiny": ([5, 7], [3, 5]),
}


def block_names(backbone: nn.Module, depth: int = 2) -> list[str]:
    """The dotted names of the backbone's submodules down to ``depth`` levels (the choices for ``wsol.blocks``).

    >>> block_names(nn.Sequential(nn.Sequential(nn.ReLU()), nn.ReLU()))
    ['0', '0.0', '1']
    """
    return [n for n, _ in backbone.named_modules() if n and n.count(".") < depth]


def default_blocks(backbone: nn.Module, method: str) -> list[str]:
    """The blocks ``method`` ("adl" or "spg") uses on ``backbone`` when ``wsol.blocks`` is null.

    ADL: after the blocks where wsolevaluation inserts it (ResNet: ``layer3.0``, ``layer4.0`` and layer4's last
    block; VGG16: pool3, conv4_3, conv5_3; Inception-v3: Mixed_5d, Mixed_6e); tiny_cnn: its last two conv blocks.
    SPG: the two outputs wsolevaluation feeds its B1 / B2 heads from (ResNet: ``layer3.0``, ``layer3``; VGG16:
    pool4, conv5_3; Inception-v3: Mixed_5d, Mixed_6d); tiny_cnn: its second (pooled) and third conv blocks.
    timm CNNs (``backbone=timm``): from timm's own feature levels, ADL after the last two, SPG from the two
    before the last (``model.layer3``, ``model.layer4`` / ``model.layer2``, ``model.layer3`` for a ResNet).
    """
    kind = type(backbone).__name__
    adl = method == "adl"
    if kind == "TinyCNN":
        return ["features.9", "features.11"] if adl else ["features.6", "features.9"]
    if kind == "ResNetBackbone":
        last = len(backbone.layer4) - 1
        return ["layer3.0", "layer4.0", f"layer4.{last}"] if adl else ["layer3.0", "layer3"]
    if kind == "VGG16GAP":
        return ["features.16", "features.22", "features.29"] if adl else ["features.23", "features.29"]
    if kind == "InceptionV3Backbone":
        return ["Mixed_5d", "Mixed_6e"] if adl else ["Mixed_5d", "Mixed_6d"]
    if kind == "TorchvisionFeatures":
        arch = getattr(backbone, "torchvision_arch", "")
        n = len(backbone.features)
        adl_idx, spg_idx = _FEATURES_BLOCKS.get(arch, ([n - 2, n - 1], [n - 3, n - 2]))
        return [f"features.{i}" for i in (adl_idx if adl else spg_idx)]
    if kind == "TimmBackbone":
        return _timm_blocks(backbone, method)
    raise ConfigError(f"wsol.blocks: there is no default for backbone {kind}; name its blocks with "
                      f"wsol.blocks=[...] (its blocks: {_listing(backbone)})", settings=["wsol.blocks"])


def _timm_blocks(backbone: nn.Module, method: str) -> list[str]:
    """Default blocks of a timm backbone from its ``feature_blocks``; a clear line where its blocks give no
    ``(B, C, h, w)`` map (ViT tokens, channels-last stages), which ADL's and SPG's spatial masks need."""
    layout = getattr(backbone, "_layout", "nchw")
    if layout != "nchw":
        what = "patch tokens" if layout == "tokens" else "channels-last (B, h, w, C) maps"
        raise ConfigError(f"wsol={method} needs (B, C, h, w) feature maps from backbone blocks, and timm "
                          f"'{backbone.model_name}' gives {what}: not supported; use wsol=cam, has, cutmix or acol with "
                          f"it, or a timm CNN", settings=["wsol.name"])
    levels = list(getattr(backbone, "feature_blocks", ()))
    if len(levels) < 3:
        raise ConfigError(f"wsol.blocks: timm '{backbone.model_name}' has {len(levels)} feature level(s), too few for "
                          f"a default; name its blocks with wsol.blocks=[...] (its blocks: {_listing(backbone)})",
                          settings=["wsol.blocks"])
    return levels[-2:] if method == "adl" else levels[-3:-1]


def check_blocks(backbone: nn.Module, names: Sequence[str], needs_fresh_output: bool = False) -> list[int]:
    """The channel count of each named block's output; a :class:`ConfigError` naming ``wsol.blocks`` for a name that
    is not a submodule, a block whose output is not ``(B, C, h, w)``, or (``needs_fresh_output``) one whose output
    the next layer overwrites in place (an in-place ReLU after it: name the ReLU instead)."""
    modules = []
    for name in names:
        try:
            modules.append(backbone.get_submodule(str(name)))
        except AttributeError:
            raise ConfigError(f"wsol.blocks: backbone {type(backbone).__name__} has no block {name!r}; its blocks: "
                              f"{_listing(backbone)}", settings=["wsol.blocks"]) from None
    seen: dict[int, tuple[torch.Tensor, int]] = {}

    def record(i: int):
        def hook(module, inputs, output):
            if i not in seen and isinstance(output, torch.Tensor):
                seen[i] = (output, output._version)
        return hook

    handles = [m.register_forward_hook(record(i)) for i, m in enumerate(modules)]
    was_training = backbone.training
    side = max(int(getattr(backbone, "min_input_size", 32)), 32)
    try:
        backbone.eval()
        with torch.no_grad():
            backbone(torch.zeros(1, 3, side, side, device=_device(backbone)))
    finally:
        backbone.train(was_training)
        for h in handles:
            h.remove()
    channels = []
    for i, name in enumerate(names):
        if i not in seen or seen[i][0].ndim != 4:
            raise ConfigError(f"wsol.blocks: block {name!r} of {type(backbone).__name__} does not output a (B, C, h, w) "
                              f"feature map; name a conv block (its blocks: {_listing(backbone)})",
                              settings=["wsol.blocks"])
        output, version = seen[i]
        if needs_fresh_output and output._version != version:
            raise ConfigError(f"wsol.blocks: the output of block {name!r} is overwritten in place by the layer after "
                              f"it (an in-place activation); name that layer instead", settings=["wsol.blocks"])
        channels.append(int(output.shape[1]))
    return channels


def _device(module: nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _listing(backbone: nn.Module, limit: int = 24) -> str:
    names = block_names(backbone)
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")
