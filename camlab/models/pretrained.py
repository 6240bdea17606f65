"""CAM models from files: camlab checkpoints, and torchvision classifiers used as they are (no training).

A classifier whose head is global average pooling followed by ONE linear layer is already a CAM model:
``y^c = sum_k W[c, k] mean_ij A[k, i, j] + b^c``, so its ``fc`` weights are the CAM weights and
``mean_ij M^c + b^c = y^c`` holds exactly. :func:`from_torchvision` turns such a torchvision model, loaded
from a local state-dict file, into a :class:`CAMClassifier` with the same logits:

============================  ==========================================================================
family                        head after the conv trunk                           CAM
============================  ==========================================================================
resnet*, resnext*,            avgpool -> fc                                       exact
wide_resnet*
efficientnet_b0..b7, _v2_*    avgpool -> Dropout -> Linear (Dropout is the         exact (eval mode)
                              identity at inference)
mobilenet_v2                  avgpool -> Dropout -> Linear                        exact (eval mode)
convnext_*                    avgpool -> LayerNorm2d -> Linear                    exact, see below
mobilenet_v3_*                avgpool -> Linear -> Hardswish -> Dropout -> Linear  none: refused
============================  ==========================================================================

ConvNeXt: the LayerNorm acts on the pooled vector ``v`` (per image, mean ``mu`` and std ``s`` over the
channels). ``LN(v)_k = g_k (v_k - mu) / s + beta_k`` is affine in ``v`` once ``mu, s`` are fixed, so with
features ``A' = (A - mu) / s`` (per image) and head ``W' = W diag(g)``, ``b' = W beta + b``, GAP -> linear
gives the same logits and the CAM is again an exact decomposition of the logit. Min-max normalization
removes the per-image scale ``1/s`` and shift, so the normalized CAM is that of ``W diag(g)`` on the raw
features. MobileNet-V3's hidden Linear-Hardswish layer after pooling has no such decomposition: no CAM.

The ResNet trunk keeps torchvision's stride 32 here (``layer4_stride=2``): the logits are torchvision's.

:func:`load_cam_model` loads either kind of file with what inference needs (:class:`InputSpec`: input
size, normalization, class names).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Any, Sequence

import torch
import torchvision.models as tvm
from torch import Tensor, nn

from camlab.models.backbones import Backbone, load_state_dict_file, load_torch_file
from camlab.models.classifier import CAMClassifier

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "InputSpec",
    "build_config_node",
    "cam_model_from_torchvision_module",
    "from_torchvision",
    "load_cam_model",
    "is_camlab_checkpoint",
    "load_checkpoint",
    "read_checkpoint",
    "read_class_names",
    "torchvision_cam_archs",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_REFUSED = {
    "mobilenet_v3_large": "its head is Linear(960, 1280) -> Hardswish -> Dropout -> Linear after pooling",
    "mobilenet_v3_small": "its head is Linear(576, 1024) -> Hardswish -> Dropout -> Linear after pooling",
}


@dataclass
class InputSpec:
    """What a model expects as input and how to name its outputs.

    ``image_size``: side (or ``(H, W)``) images are resized to; ``mean``/``std``: per-channel normalization of
    the [0, 1] image; ``class_names``: one name per logit.
    """

    image_size: int | tuple[int, int]
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    class_names: list[str] = field(default_factory=list)

    @property
    def size_hw(self) -> tuple[int, int]:
        s = self.image_size
        return (int(s), int(s)) if isinstance(s, int) else (int(s[0]), int(s[1]))


def _family(arch: str) -> str | None:
    if arch.startswith(("resnet", "resnext", "wide_resnet")):
        return "resnet"
    if arch.startswith("efficientnet_") or arch == "mobilenet_v2":
        return "features_dropout_linear"
    if arch.startswith("convnext_"):
        return "convnext"
    return None


def torchvision_cam_archs() -> list[str]:
    """torchvision classification architectures that :func:`from_torchvision` accepts (exact CAMs).

    >>> {"resnet18", "resnet50", "efficientnet_b0", "convnext_tiny"} <= set(torchvision_cam_archs())
    True
    >>> "mobilenet_v3_large" in torchvision_cam_archs()
    False
    """
    return sorted(a for a in tvm.list_models(module=tvm) if _family(a) is not None)


class TorchvisionTrunk(Backbone):
    """The conv trunk of a torchvision classifier (everything before global pooling), stride 32.

    For ConvNeXt the features are re-centred and scaled per image by the mean and std (over channels) of
    their spatial average, i.e. the statistics of the classifier's LayerNorm (see the module docstring).
    """

    def __init__(self, net: nn.Module, arch: str) -> None:
        super().__init__()
        family = _family(arch)
        self.family = family
        self.torchvision_arch = arch
        self.ln_eps = 0.0
        if family == "resnet":
            self.body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool,
                                      net.layer1, net.layer2, net.layer3, net.layer4)
            self.num_features = net.fc.in_features
        else:
            self.body = net.features
            self.num_features = net.classifier[-1].in_features
            if family == "convnext":
                self.ln_eps = float(net.classifier[0].eps)
        self.stride = 32
        self.min_input_size = 32

    def _forward(self, x: Tensor) -> Tensor:
        a = self.body(x)  # (N, K, h, w)
        if self.family != "convnext":
            return a
        v = a.mean(dim=(2, 3), keepdim=True)  # (N, K, 1, 1): the pooled vector the LayerNorm sees
        mu = v.mean(dim=1, keepdim=True)  # (N, 1, 1, 1)
        var = v.var(dim=1, unbiased=False, keepdim=True)  # (N, 1, 1, 1)
        return (a - mu) / torch.sqrt(var + self.ln_eps)  # (N, K, h, w)

    def output_size(self, input_size: int) -> int:
        if self.family == "convnext":
            return input_size // 32
        return super().output_size(input_size)


def read_class_names(source: str | os.PathLike | Sequence[str], num_classes: int) -> list[str]:
    """Class names from a text file (one per line, blank lines ignored) or a sequence; count must match."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"class names file '{path}' not found (one class name per line)")
        with open(path, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
        where = f"class names file '{path}'"
    else:
        names = [str(n) for n in source]
        where = "class_names"
    if len(names) != num_classes:
        raise ValueError(f"{where} has {len(names)} names but the model has {num_classes} classes")
    return names


def _default_class_names(arch: str, num_classes: int) -> list[str]:
    """torchvision's ImageNet categories (shipped in the package, no download) for 1000-way heads."""
    if num_classes == 1000:
        try:
            categories = tvm.get_model_weights(arch).DEFAULT.meta.get("categories")
        except (KeyError, ValueError, AttributeError):
            categories = None
        if categories and len(categories) == num_classes:
            return list(categories)
    return [str(i) for i in range(num_classes)]


def _default_image_size(arch: str) -> int:
    """The crop size of torchvision's DEFAULT weights transforms (224 for most), else 224."""
    try:
        transforms = tvm.get_model_weights(arch).DEFAULT.transforms
        return int(getattr(transforms, "keywords", {}).get("crop_size", 224))
    except (KeyError, ValueError, AttributeError, TypeError):
        return 224


def _head_key(arch: str) -> str:
    return "fc" if _family(arch) == "resnet" else "classifier." + ("2" if _family(arch) == "convnext" else "1")


def from_torchvision(arch: str, weights_path: str | os.PathLike,
                     class_names: str | os.PathLike | Sequence[str] | None = None,
                     image_size: int | None = None) -> CAMClassifier:
    """A torchvision classifier from a local state-dict file, as a :class:`CAMClassifier` with its logits.

    Args:
        arch: a name from :func:`torchvision_cam_archs` (e.g. ``resnet50``, ``efficientnet_b0``,
            ``convnext_tiny``).
        weights_path: the torchvision model's ``state_dict()`` saved with ``torch.save`` (any number of classes:
            taken from the head's weight).
        class_names: a text file (one name per line), a sequence, or None: torchvision's ImageNet categories
            for a 1000-class head, else ``"0" .. "C-1"``.
        image_size: input side for camlab-predict; default the crop size of torchvision's weights transforms.

    The returned model is in eval mode and carries ``input_spec`` (:class:`InputSpec`, ImageNet mean/std) and
    ``class_names``. Its logits equal torchvision's for the same weights (up to float rounding).
    """
    if arch in _REFUSED:
        raise ValueError(f"torchvision '{arch}' cannot give class activation maps: {_REFUSED[arch]}, not a single "
                         f"linear layer on the pooled features. Use one of: {', '.join(torchvision_cam_archs())}")
    if _family(arch) is None or arch not in tvm.list_models(module=tvm):
        raise ValueError(f"torchvision arch '{arch}' is not supported as a CAM model; supported (GAP -> one linear "
                         f"layer): {', '.join(torchvision_cam_archs())}")
    state = load_state_dict_file(weights_path)
    head = _head_key(arch)
    if f"{head}.weight" not in state:
        raise ValueError(f"'{weights_path}' is not a torchvision {arch} state dict: no '{head}.weight' key "
                         f"(keys start with {', '.join(sorted({k.split('.')[0] for k in state})[:6])})")
    num_classes = int(state[f"{head}.weight"].shape[0])
    net = getattr(tvm, arch)(weights=None, num_classes=num_classes)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        detail = detail if len(detail) <= 300 else detail[:300] + " ..."  # key lists run to kilobytes
        raise ValueError(f"'{weights_path}' does not fit torchvision {arch}: {detail}") from None
    return cam_model_from_torchvision_module(net, arch, class_names=class_names, image_size=image_size)


def cam_model_from_torchvision_module(net: nn.Module, arch: str,
                                      class_names: str | os.PathLike | Sequence[str] | None = None,
                                      image_size: int | None = None) -> CAMClassifier:
    """:func:`from_torchvision` for a torchvision model object already built (and loaded) of ``arch``'s family.

    ``arch`` names the family (and the defaults for class names and input size); ``net`` may be any model of that
    family's class, e.g. a small ``torchvision.models.convnext.ConvNeXt`` with its own block settings.
    """
    if _family(arch) is None:
        raise ValueError(f"torchvision arch '{arch}' is not supported as a CAM model")
    net.eval()
    trunk = TorchvisionTrunk(net, arch)
    linear: nn.Linear = net.fc if _family(arch) == "resnet" else net.classifier[-1]
    num_classes = linear.out_features
    model = CAMClassifier(trunk, num_classes=num_classes, pool="gap")
    with torch.no_grad():
        weight, bias = linear.weight.detach().clone(), linear.bias.detach().clone()  # (C, K), (C,)
        if _family(arch) == "convnext":
            norm = net.classifier[0]
            bias = weight @ norm.bias.detach() + bias  # b' = W beta + b
            weight = weight * norm.weight.detach()[None, :]  # W' = W diag(g)
        model.head.weight.copy_(weight)
        model.head.bias.copy_(bias)
    names = read_class_names(class_names, num_classes) if class_names is not None else _default_class_names(
        arch, num_classes)
    model.class_names = names
    model.input_spec = InputSpec(image_size=int(image_size or _default_image_size(arch)), mean=IMAGENET_MEAN,
                                 std=IMAGENET_STD, class_names=names)
    return model.eval()


# ------------------------------------------------------------------------------------------------
# camlab checkpoints
# ------------------------------------------------------------------------------------------------
def read_checkpoint(path: str | os.PathLike) -> Any:
    """``torch.load`` of a local checkpoint on the CPU (weights-only first; a full unpickle only if needed)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint '{path}' not found")
    # camlab checkpoints hold plain containers, but a Lightning checkpoint may pickle other objects; the user
    # named this local file explicitly. A truncated or foreign file is a one-line ConfigError naming it.
    return load_torch_file(path, "checkpoint")


def is_camlab_checkpoint(obj: Any) -> bool:
    """Whether a loaded checkpoint was written by camlab-train (it stores the run config)."""
    return isinstance(obj, dict) and "state_dict" in obj and "camlab_run_config" in obj


def load_checkpoint(path: str | os.PathLike, contents: dict[str, Any] | None = None) -> CAMClassifier:
    """A :class:`CAMClassifier` from a checkpoint written by ``camlab-train`` (no config needed).

    The backbone is rebuilt from the run config stored in the checkpoint (with ``pretrained=false``: the
    weights come from the checkpoint), the head from its hyper-parameters; the model is in eval mode and
    carries ``input_spec`` and ``class_names`` from the training data module. ``contents``: the file already
    loaded by :func:`read_checkpoint` (to avoid a second read).
    """
    path = os.fspath(path)
    ckpt = read_checkpoint(path) if contents is None else contents
    if not is_camlab_checkpoint(ckpt):
        raise ValueError(f"'{path}' is not a camlab-train checkpoint (no stored run config): pass the training "
                         f"overrides (backbone=..., data=...) to camlab-eval, or use --torchvision ARCH for a "
                         f"torchvision state dict")
    run_config = ckpt["camlab_run_config"]
    bb = dict(run_config["backbone"])
    if "pretrained" in bb:
        bb["pretrained"] = False  # the checkpoint has the weights; the original file may not exist here
    backbone = build_config_node(bb)
    hp = dict(ckpt.get("hyper_parameters", {}))
    accepted = set(inspect.signature(CAMClassifier.__init__).parameters) - {"self", "backbone", "optimizer",
                                                                             "scheduler"}
    model = CAMClassifier(backbone, **{k: v for k, v in hp.items() if k in accepted})
    missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=False)
    missing = [k for k in missing if not k.startswith(("val_acc", "val_acc5"))]
    if missing or unexpected:
        raise ValueError(f"checkpoint '{path}' does not fit its own stored config: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    model.run_config = run_config
    data = ckpt.get("camlab_data") or {}
    image_size = data.get("image_size") or run_config.get("data", {}).get("image_size")
    if image_size is None:
        raise ValueError(f"checkpoint '{path}' stores no input size (camlab_data.image_size)")
    names = data.get("class_names") or [str(i) for i in range(model.num_classes)]
    model.class_names = list(names)
    model.input_spec = InputSpec(
        image_size=image_size if isinstance(image_size, int) else tuple(image_size),
        mean=tuple(data.get("mean") or (0.0, 0.0, 0.0)),
        std=tuple(data.get("std") or (1.0, 1.0, 1.0)),
        class_names=list(names),
    )
    return model.eval()


def build_config_node(node: Any) -> Any:
    """A stored (resolved) config node built as Hydra's ``instantiate`` does, without Hydra: a mapping with a
    ``_target_`` calls it with its other keys (nested nodes built first; ``_args_``: positional arguments;
    ``_partial_: true``: a ``functools.partial``); other mappings and lists are built item by item.

    >>> build_config_node({"_target_": "builtins.dict", "a": 1, "b": [{"_target_": "builtins.abs", "_args_": [-2]}]})
    {'a': 1, 'b': [2]}
    >>> build_config_node({"_target_": "builtins.max", "_partial_": True, "default": 0})([])
    0
    """
    if isinstance(node, (list, tuple)):
        return [build_config_node(v) for v in node]
    if not isinstance(node, Mapping):
        return node
    if "_target_" not in node:
        return {k: build_config_node(v) for k, v in node.items()}
    kwargs = {k: build_config_node(v) for k, v in node.items() if not (k.startswith("_") and k.endswith("_"))}
    args = [build_config_node(v) for v in node.get("_args_", ())]
    target = _locate(str(node["_target_"]))
    if node.get("_partial_"):
        return functools.partial(target, *args, **kwargs)
    return target(*args, **kwargs)


def _locate(dotted: str) -> Any:
    """The object named by a dotted path (``camlab.models.backbones.create_backbone``)."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        try:
            return functools.reduce(getattr, parts[i:], obj)
        except AttributeError:
            break
    raise ValueError(f"cannot import '{dotted}' (a _target_ of the checkpoint's stored run config)")


def load_cam_model(source: str | os.PathLike, torchvision_arch: str | None = None,
                   class_names: str | os.PathLike | Sequence[str] | None = None,
                   image_size: int | None = None) -> CAMClassifier:
    """A camlab checkpoint (``torchvision_arch`` None) or a torchvision state dict (``torchvision_arch`` set)."""
    if torchvision_arch:
        return from_torchvision(torchvision_arch, source, class_names=class_names, image_size=image_size)
    model = load_checkpoint(source)
    if class_names is not None:
        model.class_names = read_class_names(class_names, model.num_classes)
        model.input_spec.class_names = model.class_names
    if image_size is not None:
        model.input_spec.image_size = int(image_size)
    return model
