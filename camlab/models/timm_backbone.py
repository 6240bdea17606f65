"""Any timm model as a CAM backbone: ``create_backbone("timm", model_name=...)`` (config ``backbone=timm``).

The trunk is timm's own ``forward_features`` (``timm.create_model(model_name, pretrained=False, num_classes=0)``),
brought to camlab's contract (:mod:`camlab.models.backbones`):

- **Layout.** An ``N×K×h×w`` map is taken as it is; an ``NHWC`` one (``output_fmt``: Swin, MambaOut) is
  permuted; a ViT's tokens ``N×L×K`` lose their ``num_prefix_tokens`` prefix tokens (class, distillation,
  register tokens) and the ``L - P`` patch tokens are laid out row-major on the ``h×w`` patch grid. camlab's GAP
  over those positions + one linear layer is then the classifier, so the CAM ``Σ_k W[c,k] A^k`` is an exact
  decomposition of the logit, from the same forward pass (for a ViT the head reads the mean patch token, not timm's
  class token).
- **No post-pooling layers.** What timm applies only after pooling (ConvNeXt's head norm, a ViT's ``fc_norm`` or
  attention pool, MobileNetV3's ``conv_head``) is not part of ``forward_features``: found at build as the
  modules with parameters that a forward never calls, they are removed, so every parameter left gets a gradient
  (DDP needs that); their keys in a weights file are ignored like the classifier's.
- **Any input size.** ViTs are built with timm's ``dynamic_img_size`` (position embeddings resampled to each
  input's grid) and ``dynamic_img_pad`` (a side that is not a multiple of the patch is zero-padded at the bottom /
  right), so ``h = ceil(H / patch)``. A model that runs only on multiples of its stride (window attention, e.g.
  Swin) is zero-padded the same way by camlab. A model that runs at one input size only (fixed position tables:
  BEiT, CaiT, MLP-Mixer, LeViT, ...) is refused with one line.
- **Contract numbers.** ``stride`` is the reduction of timm's last ``feature_info`` level (``output_stride``
  included); ``num_features`` the measured channel count. ``output_size(H) = floor((H + c) / stride)``: a chain
  of convolutions and poolings always composes to that form, and the offset ``c`` is measured at build by a few
  forward passes on tiny zero images (ceil for padded convs, floor for ConvNeXt's patchify stem).
  ``min_input_size`` is the smallest side giving a ``1×1`` map, at least the stride (a ViT's patch size).

``output_stride`` (e.g. 16, the WSOL choice for CNNs) is passed to timm, which dilates the last stages where the
model supports it; elsewhere (a ViT, whose stride is its patch) it is one error naming the key.

Weights are never downloaded: ``pretrained`` is ``False``, a local file (a timm state dict: ``.safetensors``,
``.pth``, ``.bin``, ``{"state_dict"|"model": ...}``, or a camlab checkpoint), or ``True`` with timm's
``pretrained_cfg_overlay={"file": path}``; ``True`` without a file is an error. The classifier keys named by the
model's ``pretrained_cfg["classifier"]`` are ignored; any other missing or unexpected key is an error
(``strict=False``: a warning). timm itself is imported on first use.
"""

from __future__ import annotations

import difflib
import functools
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camlab.errors import ConfigError
from camlab.models.backbones import Backbone, _load_into, _strip_prefix, load_state_dict_file, register_backbone

__all__ = ["TimmBackbone", "create_timm_backbone"]

_DYNAMIC = ({"dynamic_img_size": True, "dynamic_img_pad": True}, {"dynamic_img_size": True}, {})
_LIST_HINT = "list names with python -c \"import timm; print(timm.list_models('*{}*'))\""


def _timm():
    try:
        import timm
    except ImportError:  # a dependency of camlab; missing only in a hand-made environment
        raise ConfigError("backbone=timm needs the timm package: pip install 'timm>=1.0'",
                          settings=["name"]) from None
    return timm


def _record(called: set[str], name: str, *_: Any) -> None:
    called.add(name)


def _check_model_name(model_name: str) -> None:
    """A timm registry name (a ``.tag`` suffix allowed), else one line with close matches and how to list names."""
    timm = _timm()
    if not isinstance(model_name, str) or not model_name:
        raise ConfigError(f"model_name must be a timm model name, got {model_name!r}; "
                          f"{_LIST_HINT.format('resnet')}", settings=["model_name"])
    if ":" in model_name:  # hf-hub:..., local-dir:...
        raise ConfigError(f"model_name '{model_name}': camlab builds timm registry models only and never downloads; "
                          f"give the registry name (e.g. 'resnet50') and the weights as pretrained=<local file>",
                          settings=["model_name"])
    arch, _, tag = model_name.partition(".")
    if timm.is_model(arch):
        if tag and not timm.list_pretrained(model_name):
            tags = ", ".join(n.partition(".")[2] for n in timm.list_pretrained(f"{arch}.*")) or "none"
            raise ConfigError(f"timm model '{arch}' has no pretrained tag '{tag}' (its tags: {tags}); the tag only "
                              f"picks timm's metadata here, the weights come from pretrained=<local file>",
                              settings=["model_name"])
        return
    close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
    hint = f"close matches: {', '.join(close)}; " if close else ""
    raise ConfigError(f"unknown timm model_name '{model_name}'; {hint}"
                      f"{_LIST_HINT.format(arch.split('_')[0])}", settings=["model_name"])


def _plain(value: Any) -> Any:
    """Mappings and lists (an OmegaConf ``DictConfig`` / ``ListConfig`` included) as plain dicts and lists: timm
    passes them on to torch ops that take nothing else."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_plain(v) for v in value]
    return value


def _create(model_name: str, output_stride: int | None, model_kwargs: dict[str, Any],
            overlay: dict[str, Any]) -> nn.Module:
    """``timm.create_model`` at random init, with the dynamic-size options the model accepts."""
    timm = _timm()
    kwargs = _plain(model_kwargs)
    for key in ("pretrained", "num_classes", "checkpoint_path", "pretrained_cfg_overlay"):
        if key in kwargs:
            raise ConfigError(f"model_kwargs.{key}: set by camlab (weights only from pretrained=<local file>, "
                              f"camlab's own linear head); remove it", settings=["model_kwargs"])
    if output_stride is not None:
        kwargs["output_stride"] = int(output_stride)
    for extra in _DYNAMIC:
        extra = {k: v for k, v in extra.items() if k not in kwargs}  # the user's own setting wins
        try:
            return timm.create_model(model_name, pretrained=False, num_classes=0,
                                     pretrained_cfg_overlay=overlay or None, **extra, **kwargs)
        except TypeError as err:
            text = str(err)
            if any(k in text for k in extra):
                continue  # this architecture has no such option: try without it
            if "output_stride" in text:
                raise ConfigError(f"timm model '{model_name}' has no output_stride option (its stride is fixed, "
                                  f"e.g. a ViT's patch size): set output_stride=null", settings=["output_stride"]
                                  ) from None
            raise ConfigError(f"timm.create_model('{model_name}') rejects its arguments: {text}",
                              settings=["model_kwargs"]) from None
        except (AssertionError, ValueError, NotImplementedError) as err:
            if output_stride is None:
                raise ConfigError(f"timm.create_model('{model_name}', **model_kwargs) failed: "
                                  f"{type(err).__name__}: {err}", settings=["model_kwargs"]) from None
            raise ConfigError(f"timm model '{model_name}' does not support output_stride={output_stride} "
                              f"({type(err).__name__}: {err}); use null (its own stride) or a value it supports "
                              f"(8 or 16 for ResNets)", settings=["output_stride"]) from None
    raise AssertionError("unreachable: the last attempt passes no dynamic option")


def _nominal_stride(model: nn.Module, model_name: str) -> int:
    info = getattr(model, "feature_info", None)
    info = getattr(info, "info", info)  # FeatureInfo objects keep the list in .info
    reduction = info[-1].get("reduction") if isinstance(info, (list, tuple)) and info else None
    if isinstance(reduction, (tuple, list)):
        reduction = reduction[0] if len(set(reduction)) == 1 else None
    if not isinstance(reduction, int) or reduction < 1:
        raise ConfigError(f"timm model '{model_name}' has no feature_info with the stride of its last stage: "
                          f"not supported as a CAM backbone", settings=["model_name"])
    return reduction


class TimmBackbone(Backbone):
    """A timm model's ``forward_features`` as an ``N×K×h×w`` map (see the module docstring).

    Args:
        model_name: a timm registry name (``timm.list_models()``), e.g. ``resnet50``, ``convnext_tiny``,
            ``deit_small_patch16_224``.
        output_stride: ``None`` (the model's own) or a stride timm can dilate the model to (16, 8).
        model_kwargs: more keyword arguments of ``timm.create_model`` (e.g. ``drop_path_rate``).
        pretrained_cfg_overlay: timm's overlay of the model's ``pretrained_cfg`` (metadata only here; its
            ``file`` is read by :func:`create_timm_backbone`).

    ``model`` is the timm module (keys ``model.<timm key>``); ``mean`` / ``std`` are the normalization of the
    model's pretrained weights (its ``pretrained_cfg``).
    """

    def __init__(self, model_name: str, output_stride: int | None = None,
                 model_kwargs: Mapping[str, Any] | None = None,
                 pretrained_cfg_overlay: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        _check_model_name(model_name)
        for key, value in (("model_kwargs", model_kwargs), ("pretrained_cfg_overlay", pretrained_cfg_overlay)):
            if value is not None and not isinstance(value, Mapping):
                raise ConfigError(f"{key} must be a mapping of timm arguments (e.g. {{drop_path_rate: 0.1}}), got "
                                  f"{value!r}", settings=[key])
        self.model_name = model_name
        self.model = _create(model_name, output_stride, dict(model_kwargs or {}), _plain(pretrained_cfg_overlay or {}))
        self.stride = _nominal_stride(self.model, model_name)
        if output_stride is not None and self.stride != int(output_stride):
            raise ConfigError(f"timm model '{model_name}' does not support output_stride={output_stride} (its stride "
                              f"stays {self.stride}); use null or a value it supports", settings=["output_stride"])
        cfg = dict(getattr(self.model, "pretrained_cfg", None) or {})
        self.mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
        self.std = tuple(cfg.get("std", (0.229, 0.224, 0.225)))
        self.num_prefix_tokens = int(getattr(self.model, "num_prefix_tokens", 0) or 0)
        self.pad_to_stride = False
        classifiers = cfg.get("classifier") or ()
        classifiers = (classifiers,) if isinstance(classifiers, str) else tuple(classifiers)
        removed = self._measure()
        self.ignore_prefixes = tuple(f"model.{name}." for name in (*classifiers, *removed))
        info = getattr(self.model.feature_info, "info", self.model.feature_info)
        #: timm's feature levels as block names of this backbone (``model.layer1``... / ``model.blocks.0``...):
        #: where module-side WSOL methods can plug in; their outputs are in the model's layout (see to_map).
        self.feature_blocks = tuple(f"model.{i['module']}" for i in info if i.get("module"))

    # ---- forward -------------------------------------------------------------------------------------
    def output_size(self, input_size: int) -> int:
        size = math.ceil(input_size / self.stride) * self.stride if self.pad_to_stride else input_size
        return (size + self._offset) // self.stride

    def _forward(self, x: Tensor) -> Tensor:
        h, w = self.output_size(x.shape[-2]), self.output_size(x.shape[-1])
        if self.pad_to_stride:
            x = F.pad(x, (0, -x.shape[-1] % self.stride, 0, -x.shape[-2] % self.stride))
        return self.to_map(self.model.forward_features(x), h, w)  # (N, K, h, w)

    def to_map(self, y: Tensor, h: int, w: int) -> Tensor:
        """The model's features in its own layout (``N×K×h×w``, ``N×h×w×K``, or ViT tokens ``N×(P + h·w)×K``; a
        block's output as well as the last one) as ``N×K×h×w``: the prefix tokens dropped, the patch tokens row-major
        on the ``h×w`` grid (``h, w = output_size(H), output_size(W)``). A view where the layout allows."""
        if self._layout == "nchw":
            return y
        if self._layout == "nhwc":
            return y.permute(0, 3, 1, 2)  # (N, h, w, K) -> (N, K, h, w)
        patches = y[:, self.num_prefix_tokens:]  # (N, h*w, K): prefix tokens dropped
        if patches.shape[1] != h * w:
            raise RuntimeError(f"timm model '{self.model_name}' gave {patches.shape[1]} patch tokens for a {h}×{w} "
                               f"grid")
        return patches.transpose(1, 2).reshape(y.shape[0], y.shape[2], h, w)  # row-major grid

    def from_map(self, m: Tensor, like: Tensor) -> Tensor:
        """The inverse of :meth:`to_map`: an ``N×K×h×w`` map (e.g. ``to_map(like)`` times a mask) back in the layout
        of ``like``, the prefix tokens of ``like`` kept as they are (what a hook replacing a block's output needs)."""
        if self._layout == "nchw":
            return m
        if self._layout == "nhwc":
            return m.permute(0, 2, 3, 1)
        patches = m.flatten(2).transpose(1, 2)  # (N, h*w, K)
        return torch.cat([like[:, :self.num_prefix_tokens], patches], dim=1)

    # ---- the contract, measured at build ---------------------------------------------------------------
    def _side(self, size: int) -> int:
        """The measured map side for a ``size × size`` zero image (no grad, eval mode)."""
        x = torch.zeros(1, 3, size, size)
        if self.pad_to_stride:
            x = F.pad(x, (0, -size % self.stride, 0, -size % self.stride))
        with torch.no_grad():
            y = self.model.forward_features(x)
        if self._layout != "tokens":
            return int(y.shape[-2])
        n = y.shape[1] - self.num_prefix_tokens
        side = math.isqrt(max(n, 0))
        if side * side != n:
            raise self._unsupported(f"its {n} patch tokens for a square input are not a square grid")
        return side

    def _unsupported(self, why: str) -> ConfigError:
        return ConfigError(f"timm model '{self.model_name}' is not supported as a CAM backbone: {why}",
                           settings=["model_name"])

    def _measure(self) -> list[str]:
        """Layout, channels, ``output_size`` offset and ``min_input_size`` from forwards of tiny zero images; removes
        the modules the features do not depend on and returns their names."""
        s, model = self.stride, self.model
        training = model.training
        model.eval()
        try:
            removed, base, q = self._first_pass()
            self._offset = 0
            try:  # a side that is no multiple of the stride: also tells whether the model needs padding
                native = self._side(base + 1)
            except ConfigError:
                raise
            except Exception:  # noqa: BLE001 - timm's assertion or a shape error inside the model
                self.pad_to_stride = True
                self._offset = q * s - base
                if self._side(base + 1) != q + 1:
                    raise self._unsupported("padded to a multiple of its stride it does not give ceil(H / stride)")
            else:
                lo, hi = base, base + s  # out(lo) = q, out(hi) = q + 1: find the smallest side with q + 1
                if native == q + 1:
                    hi = base + 1  # ceil (padded convs)
                elif self._side(base + s - 1) == q:
                    lo = base + s - 1  # floor (patchify stems)
                else:
                    lo = base + 1
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    lo, hi = (mid, hi) if self._side(mid) == q else (lo, mid)
                self._offset = (q + 1) * s - hi
        finally:
            model.train(training)
        self.min_input_size = next(m for m in range(s, 64 * s) if self.output_size(m) >= 1)
        return removed

    def _first_pass(self) -> tuple[list[str], int, int]:
        """A forward of a ``base × (base + stride)`` zero image: layout and channels, the side ``q`` at ``base``, a
        check of the stride; the modules with parameters that this forward never called are removed."""
        s, model, failure = self.stride, self.model, None
        called: set[str] = set()
        hooks = [m.register_forward_pre_hook(functools.partial(_record, called, name))
                 for name, m in model.named_modules() if name]
        try:
            for base in (2 * s, 4 * s):
                x = torch.zeros(1, 3, base, base + s)
                try:
                    with torch.no_grad():
                        y = model.forward_features(x)
                    break
                except Exception as err:  # noqa: BLE001 - a model with one fixed input size fails in many ways
                    failure = err
                    called.clear()
            else:
                size = dict(getattr(model, "pretrained_cfg", None) or {}).get("input_size", ("?", "?", "?"))
                first = " ".join(str(failure).split())[:160]
                raise self._unsupported(f"it does not run on {4 * s}×{5 * s} inputs ({type(failure).__name__}: "
                                        f"{first}); camlab needs a model that accepts sizes other than its "
                                        f"{size[1]}×{size[2]} (fixed position tables: BEiT, CaiT, MLP-Mixer, "
                                        f"LeViT, ...)")
        finally:
            for hook in hooks:
                hook.remove()
        if not isinstance(y, Tensor) or y.ndim not in (3, 4):
            raise self._unsupported(f"its forward_features returns {type(y).__name__}"
                                    f"{tuple(y.shape) if isinstance(y, Tensor) else ''}, not a feature map or tokens")
        if y.ndim == 3:
            self._layout = "tokens"
            n = y.shape[1] - self.num_prefix_tokens
            q = (math.isqrt(4 * n + 1) - 1) // 2 if n > 0 else 0
            if q < 1 or q * (q + 1) != n:
                raise self._unsupported(f"its {n} tokens after {self.num_prefix_tokens} prefix tokens do not form "
                                        f"a patch grid")
            rows, cols, channels = q, q + 1, y.shape[2]
        else:
            self._layout = "nhwc" if str(getattr(model, "output_fmt", "NCHW")).upper().endswith("NHWC") else "nchw"
            rows, cols = (y.shape[1], y.shape[2]) if self._layout == "nhwc" else (y.shape[2], y.shape[3])
            channels = y.shape[3] if self._layout == "nhwc" else y.shape[1]
            q = rows
        if q < 1 or cols != rows + 1:
            raise self._unsupported(f"its feature_info stride {s} does not match its map: {base}×{base + s} px gave "
                                    f"{rows}×{cols}")
        self.num_features = int(channels)
        removed = self._remove(called)
        try:  # the same image without them (a module used other than by calling it would fail here)
            with torch.no_grad():
                same = model.forward_features(x)
            if not torch.equal(same, y):
                raise RuntimeError("other features")
        except Exception:  # noqa: BLE001 - keep the model whole then
            for name, module in removed.items():
                parent, _, attr = name.rpartition(".")
                setattr(model.get_submodule(parent) if parent else model, attr, module)
            removed = {}
        return list(removed), base, q

    def _remove(self, called: set[str]) -> dict[str, nn.Module]:
        """Replace the largest modules with parameters that neither they nor their submodules were called by
        ``nn.Identity``; returns them by name."""
        removed: dict[str, nn.Module] = {}

        def visit(prefix: str, module: nn.Module) -> None:
            for name, child in list(module.named_children()):
                full = prefix + name
                subtree = {full, *(f"{full}.{n}" for n, _ in child.named_modules() if n)}
                if any(True for _ in child.parameters()) and not subtree & called:
                    setattr(module, name, nn.Identity())
                    removed[full] = child
                elif subtree & called:
                    visit(full + ".", child)

        visit("", self.model)
        return removed

    # ---- weights -------------------------------------------------------------------------------------
    def load_weights(self, path: str | os.PathLike, strict: bool = True) -> None:
        """Load a local timm state dict (or a camlab checkpoint of this backbone); see the module docstring."""
        path = os.fspath(path)
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            try:
                state = load_file(path, device="cpu")
            except Exception as err:  # noqa: BLE001 - a truncated or foreign file
                raise ConfigError(f"cannot read pretrained weights file '{path}': not a complete .safetensors "
                                  f"file ({type(err).__name__}: {' '.join(str(err).split())[:160]})",
                                  settings=["pretrained"]) from None
        elif path.endswith(".npz"):
            raise ConfigError(f"'{path}' is a JAX .npz checkpoint: convert it once with timm (timm.create_model("
                              f"'{self.model_name}', pretrained=True, pretrained_cfg_overlay=dict(file=...)), then "
                              f"torch.save(model.state_dict(), 'x.pth')) and pass that file", settings=["pretrained"])
        else:
            state = load_state_dict_file(path)
        own = set(self.state_dict())
        state = _strip_prefix(state, own)  # a camlab / Lightning checkpoint: backbone.model.* -> model.*
        if not any(k in own for k in state):  # timm's own keys (maybe under module.)
            state = {f"model.{k}": v for k, v in _strip_prefix(state, set(self.model.state_dict())).items()}
        _load_into(self, state, source=path, strict=strict)


def _weights_file(model_name: str, pretrained: Any, file: Any) -> str | None:
    """The local weights file to load, None for random init; ``pretrained=True`` needs timm's overlay ``file``."""
    if pretrained is None or pretrained is False:
        return None
    if pretrained is True:
        if file is None:
            hub = getattr(_timm().models.get_pretrained_cfg(model_name), "hf_hub_id", None)
            where = f" (e.g. the model.safetensors of {hub} on the Hugging Face Hub)" if hub else ""
            raise ConfigError(f"pretrained=true for timm '{model_name}' would download weights, and camlab never "
                              f"downloads: fetch a timm weights file elsewhere{where} and pass pretrained=<local "
                              f"file>, or pretrained=true with pretrained_cfg_overlay={{file: <local file>}}",
                              settings=["pretrained"])
        path = os.path.expanduser(os.fspath(file))
    elif isinstance(pretrained, (str, os.PathLike)):
        if file is not None:
            raise ConfigError("pretrained=<file> and pretrained_cfg_overlay.file both name a weights file: keep one",
                              settings=["pretrained", "pretrained_cfg_overlay"])
        path = os.path.expanduser(os.fspath(pretrained))
    else:
        raise ConfigError(f"pretrained must be false, true or a local file, got {pretrained!r}",
                          settings=["pretrained"])
    if not os.path.isfile(path):
        raise ConfigError(f"timm weights file '{path}' not found; camlab never downloads: pass a local timm state "
                          f"dict (.safetensors / .pth / .bin) or pretrained=false", settings=["pretrained"])
    return path


@register_backbone("timm")
def create_timm_backbone(model_name: str = "resnet50", output_stride: int | None = None,
                         model_kwargs: Mapping[str, Any] | None = None,
                         pretrained_cfg_overlay: Mapping[str, Any] | None = None,
                         pretrained: bool | str | os.PathLike | None = False, strict: bool = True) -> TimmBackbone:
    """A :class:`TimmBackbone`, its weights loaded from a local file when ``pretrained`` asks (never downloads).

    >>> b = create_timm_backbone("resnet18", output_stride=16)
    >>> b(torch.zeros(1, 3, 64, 80)).shape, b.num_features, b.stride, b.min_input_size
    (torch.Size([1, 512, 4, 5]), 512, 16, 16)
    """
    _check_model_name(model_name)
    if pretrained_cfg_overlay is not None and not isinstance(pretrained_cfg_overlay, Mapping):
        raise ConfigError(f"pretrained_cfg_overlay must be a mapping (e.g. {{file: /path/weights.safetensors}}), got "
                          f"{pretrained_cfg_overlay!r}", settings=["pretrained_cfg_overlay"])
    overlay = dict(pretrained_cfg_overlay or {})
    path = _weights_file(model_name, pretrained, overlay.pop("file", None))
    backbone = TimmBackbone(model_name, output_stride=output_stride, model_kwargs=model_kwargs,
                            pretrained_cfg_overlay=overlay)
    if path is not None:
        backbone.load_weights(path, strict=strict)
    return backbone


create_timm_backbone.loads_pretrained = True  # create_backbone passes pretrained/strict to it
