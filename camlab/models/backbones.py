"""Backbone registry: every CAM backbone honours one contract.

``create_backbone(name, pretrained=False, strict=True, **options)`` returns a :class:`Backbone`, an
``nn.Module`` whose ``forward(x)`` maps ``N×3×H×W`` images to unpooled feature maps ``A: N×K×h×w``
(the last conv block, before any pooling), with

- ``num_features``  K, the channel count of ``A``,
- ``stride``        the nominal output stride (``h ≈ H / stride``; ``output_size(H)`` gives it exactly
                    for architectures whose valid convolutions lose a border, i.e. Inception),
- ``min_input_size`` the smallest square input accepted (``forward`` raises below it).

``forward_features`` is an alias of ``forward`` (timm's name). The registry is a plain dict filled by
:func:`register_backbone`; :func:`available_backbones` lists it. ``timm`` (any timm model, ViTs included) is
registered by :mod:`camlab.models.timm_backbone`, which loads its own weights.

Weights are never downloaded: ``pretrained`` is ``False`` (random init), a local state-dict file, or
``True`` / a torchvision weights name (``"IMAGENET1K_V1"``, ``"ResNet18_Weights.IMAGENET1K_V1"``)
whose file must already be in the torch hub cache (``torch.hub.get_dir()/checkpoints``).

Normalization: torchvision's ImageNet weights expect ImageNet mean/std inputs, except Inception-v3's
(ported from TF): torchvision hides that behind ``transform_input=True``, which silently rescales the
input; camlab disables it, so feed Inception with mean = std = (0.5, 0.5, 0.5) when using those weights.
"""

from __future__ import annotations

import abc
import inspect
import math
import os
import pickle
import re
import warnings
from collections.abc import Callable, Mapping
from urllib.parse import urlparse

import torch
import torchvision.models as tvm
from torch import Tensor, nn

from camlab.errors import ConfigError

__all__ = [
    "Backbone",
    "available_backbones",
    "create_backbone",
    "load_state_dict_file",
    "load_torch_file",
    "register_backbone",
]

_BACKBONES: dict[str, Callable[..., Backbone]] = {}


def register_backbone(name: str) -> Callable[[Callable[..., Backbone]], Callable[..., Backbone]]:
    """Decorator: register ``builder(**options) -> Backbone`` under ``name``."""

    def decorator(builder: Callable[..., Backbone]) -> Callable[..., Backbone]:
        if name in _BACKBONES:
            raise ValueError(f"backbone '{name}' is already registered")
        _BACKBONES[name] = builder
        return builder

    return decorator


def available_backbones() -> list[str]:
    """Registered backbone names, in registration order."""
    return list(_BACKBONES)


class Backbone(nn.Module, abc.ABC):
    """Base class: the contract attributes plus the pretrained-loading metadata."""

    num_features: int
    stride: int
    min_input_size: int
    #: torchvision architecture whose weights enum ``pretrained=True`` / a weights name refers to.
    torchvision_arch: str | None = None
    #: prefixes of source keys that are not part of the features (classifier heads, cut-off blocks).
    ignore_prefixes: tuple[str, ...] = ("fc.", "classifier.")
    #: prefixes of this module's keys that torchvision weights lack (new layers): they stay at init.
    new_prefixes: tuple[str, ...] = ()

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or min(x.shape[-2:]) < self.min_input_size:
            raise ValueError(
                f"{type(self).__name__} expects N×C×H×W input with H, W >= {self.min_input_size}, "
                f"got shape {tuple(x.shape)}"
            )
        return self._forward(x)  # (N, K, h, w)

    def forward_features(self, x: Tensor) -> Tensor:
        return self(x)

    @abc.abstractmethod
    def _forward(self, x: Tensor) -> Tensor:
        """The architecture's features ``(N, K, h, w)``; input size already checked by ``forward``."""

    def output_size(self, input_size: int) -> int:
        """Exact feature-map side for an input side (``ceil(input / stride)`` for 'same'-padded
        strided convs; subclasses override where pooling floors or valid convs shrink the map)."""
        return math.ceil(input_size / self.stride)

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}, stride={self.stride}, min_input_size={self.min_input_size}"


# ------------------------------------------------------------------------------------------------
# tiny_cnn: the CPU default
# ------------------------------------------------------------------------------------------------
class TinyCNN(Backbone):
    """Four 3×3 conv blocks (widths w-2w-4w-4w): a 16×16 map at 64 px (stride 4).

    The first conv has stride 2 (a ResNet-style stem) instead of a full-resolution conv + max-pool:
    nearly the same receptive field (25 vs 26 px) and a faster fwd+bwd on the CPU, as full-resolution
    activations dominate memory traffic. The last conv has a bias and no BatchNorm: measured on 64 px
    shapes, BN there lifted background positions above the 20%-of-max CAM cut and halved GT-known
    localization (DESIGN.md).
    """

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"tiny_cnn width must be >= 1, got {width}")
        w1, w2, w3 = width, 2 * width, 4 * width

        def block(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(3, w1, stride=2),  # (N, w1, H/2, W/2)
            *block(w1, w2), nn.MaxPool2d(2),  # (N, w2, H/4, W/4)
            *block(w2, w3),  # (N, w3, H/4, W/4)
            nn.Conv2d(w3, w3, 3, padding=1, bias=True), nn.ReLU(inplace=True),  # no BN: see docstring
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.num_features, self.stride, self.min_input_size = w3, 4, 4

    def _forward(self, x: Tensor) -> Tensor:
        return self.features(x)

    def output_size(self, input_size: int) -> int:
        return math.ceil(input_size / 2) // 2  # padded stride-2 conv, then a floor-mode max-pool


@register_backbone("tiny_cnn")
def tiny_cnn(width: int = 32) -> Backbone:
    return TinyCNN(width=width)


# ------------------------------------------------------------------------------------------------
# torchvision ResNets: conv1 .. layer4, keys identical to torchvision's
# ------------------------------------------------------------------------------------------------
class ResNetBackbone(Backbone):
    """torchvision ResNet without avgpool/fc. ``layer4_stride=1`` (WSOL practice, no dilation)
    keeps layer4 at stride 16 so small inputs still give a usable CAM."""

    def __init__(self, arch: str, layer4_stride: int = 1) -> None:
        super().__init__()
        if layer4_stride not in (1, 2):
            raise ValueError(f"{arch} layer4_stride must be 1 or 2, got {layer4_stride}")
        net = getattr(tvm, arch)(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        if layer4_stride == 1:
            first = self.layer4[0]
            # torchvision (v1.5) puts the stride on conv2 in Bottleneck, on conv1 in BasicBlock.
            strided = first.conv2 if isinstance(first, tvm.resnet.Bottleneck) else first.conv1
            strided.stride = (1, 1)
            first.downsample[0].stride = (1, 1)
        self.torchvision_arch = arch
        self.num_features = net.fc.in_features
        self.stride = 16 * layer4_stride
        self.min_input_size = self.stride

    def _forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (N, 64, H/4, W/4)
        x = self.layer3(self.layer2(self.layer1(x)))  # (N, C3, H/16, W/16)
        return self.layer4(x)  # (N, K, H/stride, W/stride)


for _arch in ("resnet18", "resnet34", "resnet50"):

    def _resnet_builder(layer4_stride: int = 1, _arch: str = _arch) -> Backbone:
        return ResNetBackbone(_arch, layer4_stride=layer4_stride)

    register_backbone(_arch)(_resnet_builder)


# ------------------------------------------------------------------------------------------------
# VGG16-GAP (CAM paper): conv1_1 .. conv5_3 + ReLU, no pool5, + 3×3 conv to 1024 + ReLU
# ------------------------------------------------------------------------------------------------
class VGG16GAP(Backbone):
    """Zhou et al. 2016's VGG16-GAP features. ``features`` keeps torchvision's indices (0..29), so
    VGG16 weights load into it; ``extra`` (the new 1024-channel conv) stays at random init."""

    new_prefixes = ("extra.",)

    def __init__(self) -> None:
        super().__init__()
        # make_layers builds torchvision's vgg16().features without the 100M-parameter classifier.
        features = tvm.vgg.make_layers(tvm.vgg.cfgs["D"], batch_norm=False)
        self.features = features[:30]  # drop pool5 (index 30): stride 16
        self.extra = nn.Sequential(nn.Conv2d(512, 1024, 3, padding=1), nn.ReLU(inplace=True))
        for m in self.modules():  # torchvision's VGG conv init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        self.torchvision_arch = "vgg16"
        self.num_features, self.stride, self.min_input_size = 1024, 16, 16

    def _forward(self, x: Tensor) -> Tensor:
        return self.extra(self.features(x))  # (N, 512, H/16, W/16) -> (N, 1024, H/16, W/16)

    def output_size(self, input_size: int) -> int:
        return input_size // 16  # four floor-mode max-pools


@register_backbone("vgg16_gap")
def vgg16_gap() -> Backbone:
    return VGG16GAP()


# ------------------------------------------------------------------------------------------------
# Inception-v3: torchvision Inception3 through Mixed_6e (WSOL default) or Mixed_7c
# ------------------------------------------------------------------------------------------------
# (block name, [(kernel, stride, padding) of the ops that change the spatial size])
_INCEPTION_BLOCKS: list[tuple[str, list[tuple[int, int, int]]]] = [
    ("Conv2d_1a_3x3", [(3, 2, 0)]), ("Conv2d_2a_3x3", [(3, 1, 0)]), ("Conv2d_2b_3x3", []),
    ("maxpool1", [(3, 2, 0)]), ("Conv2d_3b_1x1", []), ("Conv2d_4a_3x3", [(3, 1, 0)]),
    ("maxpool2", [(3, 2, 0)]), ("Mixed_5b", []), ("Mixed_5c", []), ("Mixed_5d", []),
    ("Mixed_6a", [(3, 2, 0)]), ("Mixed_6b", []), ("Mixed_6c", []), ("Mixed_6d", []), ("Mixed_6e", []),
    ("Mixed_7a", [(3, 2, 0)]), ("Mixed_7b", []), ("Mixed_7c", []),
]
_INCEPTION_OUT = {"Mixed_6e": (768, 16), "Mixed_7c": (2048, 32)}


class InceptionV3Backbone(Backbone):
    """torchvision Inception3 (``transform_input=False``, no aux logits) up to ``last_block``.

    Default ``Mixed_6e`` (K=768, stride 16) as in WSOL code, since Mixed_7c (K=2048, stride 32) gives
    a 1×1 map below ~107 px. Its valid (unpadded) convolutions shrink the map beyond ``H / stride``:
    ``output_size`` gives the exact side; ``min_input_size`` is 43 (Mixed_6e) or 75 (Mixed_7c).
    """

    def __init__(self, last_block: str = "Mixed_6e") -> None:
        super().__init__()
        if last_block not in _INCEPTION_OUT:
            raise ValueError(f"inception_v3 last_block must be one of {sorted(_INCEPTION_OUT)}, got {last_block!r}")
        net = tvm.Inception3(aux_logits=False, transform_input=False, init_weights=True)
        names = [n for n, _ in _INCEPTION_BLOCKS]
        self._blocks = names[: names.index(last_block) + 1]
        for n in self._blocks:
            setattr(self, n, getattr(net, n))
        cut = names[len(self._blocks):]
        self.ignore_prefixes = ("fc.", "AuxLogits.", *(f"{n}." for n in cut))
        self.torchvision_arch = "inception_v3"
        self.num_features, self.stride = _INCEPTION_OUT[last_block]
        self.min_input_size = next(s for s in range(1, 512) if self.output_size(s) >= 1)

    def output_size(self, input_size: int) -> int:
        s = input_size
        for name, ops in _INCEPTION_BLOCKS[: len(self._blocks)]:
            for k, st, p in ops:
                s = (s + 2 * p - k) // st + 1
        return s

    def _forward(self, x: Tensor) -> Tensor:
        for n in self._blocks:
            x = getattr(self, n)(x)
        return x  # (N, K, output_size(H), output_size(W))


@register_backbone("inception_v3")
def inception_v3(last_block: str = "Mixed_6e") -> Backbone:
    return InceptionV3Backbone(last_block=last_block)


# ------------------------------------------------------------------------------------------------
# Models whose torchvision ``.features`` is the whole conv trunk
# ------------------------------------------------------------------------------------------------
_FEATURES_ARCHS = {  # arch: (K, stride); the last block is Hardswish / SiLU / ConvNeXt: not ReLU'd
    "mobilenet_v3_large": (960, 32),
    "efficientnet_b0": (1280, 32),
    "convnext_tiny": (768, 32),
}


class TorchvisionFeatures(Backbone):
    """torchvision ``model.features`` (keys ``features.*`` identical to torchvision's)."""

    def __init__(self, arch: str) -> None:
        super().__init__()
        self.features = getattr(tvm, arch)(weights=None).features
        self.torchvision_arch = arch
        self.num_features, self.stride = _FEATURES_ARCHS[arch]
        self.min_input_size = self.stride

    def _forward(self, x: Tensor) -> Tensor:
        return self.features(x)

    def output_size(self, input_size: int) -> int:
        if self.torchvision_arch.startswith("convnext"):
            return input_size // 32  # unpadded 4×4/4 stem and 2×2/2 downsamplers floor
        return super().output_size(input_size)


for _arch in _FEATURES_ARCHS:

    def _features_builder(_arch: str = _arch) -> Backbone:
        return TorchvisionFeatures(_arch)

    register_backbone(_arch)(_features_builder)


# ------------------------------------------------------------------------------------------------
# Construction and pretrained weights
# ------------------------------------------------------------------------------------------------
def create_backbone(name: str, pretrained: bool | str | os.PathLike | None = False, strict: bool = True,
                    **options) -> Backbone:
    """Build a registered backbone and optionally load weights (never downloads).

    Args:
        name: a name from :func:`available_backbones`.
        pretrained: ``False``/``None`` (random init); a local state-dict file (a torchvision classifier
            state dict, a ``{"state_dict": ...}`` dict, or a Lightning checkpoint whose keys are
            prefixed ``backbone.``); ``True`` (torchvision's DEFAULT weights) or a torchvision weights
            name, loaded only if already in ``torch.hub.get_dir()/checkpoints``.
        strict: missing or unexpected feature keys are errors (otherwise warnings). Shape mismatches
            and classifier-head keys are always an error and always ignored, respectively.
        **options: architecture options of the builder (e.g. ``width``, ``layer4_stride``).

    >>> backbone = create_backbone("tiny_cnn")
    >>> backbone(torch.zeros(2, 3, 64, 64)).shape, backbone.num_features, backbone.stride
    (torch.Size([2, 128, 16, 16]), 128, 4)
    """
    if name not in _BACKBONES:
        raise ValueError(f"Unknown backbone '{name}'. Available: {', '.join(_BACKBONES)}")
    builder = _BACKBONES[name]
    own_loading = getattr(builder, "loads_pretrained", False)  # the builder reads `pretrained` itself (timm)
    accepted = [p for p in inspect.signature(builder).parameters
                if not p.startswith("_") and not (own_loading and p in ("pretrained", "strict"))]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"backbone '{name}' got unknown option(s) {unknown}; it accepts {accepted}")
    if own_loading:
        return builder(pretrained=pretrained, strict=strict, **options)
    backbone = builder(**options)
    if pretrained is None or pretrained is False:
        return backbone
    if pretrained is True:
        path = _cached_torchvision_weights(name, backbone, "DEFAULT")
    elif isinstance(pretrained, (str, os.PathLike)):
        text = os.path.expanduser(os.fspath(pretrained))
        if not os.path.isfile(text) and re.fullmatch(r"(?:\w+_Weights\.)?[A-Z0-9_]+", text):
            path = _cached_torchvision_weights(name, backbone, text)
        else:
            path = text
    else:
        raise TypeError(f"pretrained must be a bool or a str/path, got {type(pretrained).__name__}")
    _load_into(backbone, load_state_dict_file(path), source=path, strict=strict)
    return backbone


def _hub_checkpoints_dir() -> str:
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def load_torch_file(path: str | os.PathLike, what: str) -> object:
    """``torch.load`` of a local file on the CPU: weights-only first, a full unpickle only when the file is a
    valid torch file that holds other objects (a Lightning checkpoint's hyper-parameters; the user named this
    local file, and a warning says so). An unreadable file (truncated, not a torch file) is a one-line
    :class:`~camlab.errors.ConfigError` naming it; ``what`` names the role of the file in that message."""
    path = os.fspath(path)

    def unreadable(err: BaseException) -> ConfigError:
        reason = " ".join(str(err).split())[:160] or type(err).__name__
        return ConfigError(f"cannot read {what} '{path}': not a complete torch file (torch.save / a Lightning "
                           f".ckpt); is it truncated or another kind of file? ({type(err).__name__}: {reason})")

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only load failed" not in str(err).lower():
            raise unreadable(err) from None
    except Exception as err:  # noqa: BLE001 - random bytes reach the unpickler's internals (IndexError, ...)
        raise unreadable(err) from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any failure of a full unpickle is an unreadable file here
        raise unreadable(err) from None
    warnings.warn(f"'{path}' is not loadable with weights_only=True; unpickled it fully (trusted file)",
                  stacklevel=3)
    return obj


def load_state_dict_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """Load a state dict from a local ``.pth``/``.pt``/``.ckpt`` file (never downloads).

    Unwraps ``{"state_dict": ...}`` (Lightning) and ``{"model": ...}`` containers; keys are returned
    as stored (prefix handling is done when loading into a backbone).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"pretrained weights file '{path}' not found; pass pretrained=false, a local state-dict path, "
            f"or a torchvision weights name already in the torch cache ({_hub_checkpoints_dir()})"
        )
    obj = load_torch_file(path, "pretrained weights file")
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"'{path}' does not hold a state dict (a mapping of parameter names to tensors)")
    return dict(obj)


def _cached_torchvision_weights(name: str, backbone: Backbone, weights_name: str) -> str:
    """Resolve a torchvision weights name to its file in the local hub cache, or fail clearly."""
    arch = backbone.torchvision_arch
    if arch is None:
        raise ValueError(f"backbone '{name}' has no torchvision weights; pass pretrained=false or a local "
                         f"state-dict path")
    enum = tvm.get_model_weights(arch)
    try:
        if "." in weights_name:
            weights = tvm.get_weight(weights_name)
            if type(weights) is not enum:
                raise ValueError
        else:
            weights = enum[weights_name] if weights_name != "DEFAULT" else enum.DEFAULT
    except (KeyError, ValueError, AttributeError):
        raise ValueError(f"'{weights_name}' is not a weights name of torchvision's {arch}; "
                         f"available: {', '.join(w.name for w in enum)}") from None
    filename = os.path.basename(urlparse(weights.url).path)
    path = os.path.join(_hub_checkpoints_dir(), filename)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"torchvision weights {enum.__name__}.{weights.name} for '{name}' are not in the local torch cache: "
            f"expected '{path}'. camlab never downloads weights at run time; fetch {weights.url} elsewhere "
            f"and put it there (or set TORCH_HOME), or pass pretrained=<local state-dict path>"
        )
    return path


def _strip_prefix(state: dict[str, Tensor], expected: set[str]) -> dict[str, Tensor]:
    """Map checkpoint keys onto the backbone's own: as-is, or after a ``...backbone.`` / ``module.`` prefix."""
    if any(k in expected for k in state):
        return state
    for pattern in (r"^(?:.*\.)?backbone\.", r"^module\."):
        prefixes = {m.group(0) for k in state if (m := re.match(pattern, k))}
        for prefix in sorted(prefixes, key=len):
            stripped = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if any(k in expected for k in stripped):
                return stripped
    return state


def _load_into(backbone: Backbone, state: dict[str, Tensor], source: str, strict: bool) -> None:
    own = backbone.state_dict()
    state = _strip_prefix(state, set(own))
    state = {k: v for k, v in state.items() if not k.startswith(backbone.ignore_prefixes)}

    def first(keys: list[str]) -> str:
        return ", ".join(keys[:5]) + (f", ... ({len(keys)} in all)" if len(keys) > 5 else "")

    wrong = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
             for k, v in state.items() if k in own and v.shape != own[k].shape]
    if wrong:
        raise ValueError(f"'{source}' does not fit backbone {type(backbone).__name__}: shape mismatch in "
                         f"{first(wrong)}")
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")
               and not k.startswith(backbone.new_prefixes)]
    unexpected = [k for k in state if k not in own]
    problems = []
    if missing:
        problems.append(f"missing feature keys: {first(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {first(unexpected)}")
    if problems:
        message = f"'{source}' does not fit backbone {type(backbone).__name__}: {'; '.join(problems)}"
        if strict:
            raise ValueError(message + " (pass strict=false to load what matches)")
        warnings.warn(message, stacklevel=3)
    backbone.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


from camlab.models import timm_backbone as _timm_backbone  # noqa: E402,F401 - registers "timm" (imports timm on use)
