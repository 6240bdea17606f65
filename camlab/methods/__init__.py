"""WSOL training methods (the ``wsol`` config group): how a CAM classifier is trained to localize better.

===========  ===========  =====================================================================================
``name``     kind         what it changes in training (nothing at evaluation unless stated)
===========  ===========  =====================================================================================
``cam``      (none)       nothing: vanilla CAM training (Zhou et al. 2016)
``has``      data-side    Hide-and-Seek: random grid cells of each image hidden (:mod:`~camlab.methods.data_side`)
``cutmix``   data-side    CutMix: a box pasted from another image, labels mixed by its area (same module)
``adl``      module-side  ADL: attention-based dropout after named backbone blocks (:mod:`~camlab.methods.adl`)
``acol``     module-side  ACoL: a second classifier on features erased where the first one's CAM is high;
                          the scored map fuses both branches (:mod:`~camlab.methods.acol`)
``spg``      module-side  SPG: auxiliary heads trained on self-produced masks (:mod:`~camlab.methods.spg`)
===========  ===========  =====================================================================================

:func:`build_method` turns a spec (``{"name": "adl", "drop_rate": 0.75, ...}``, as ``conf/wsol/*.yaml`` gives it)
into the method object; :class:`camlab.models.CAMClassifier` takes the spec as its ``wsol`` argument, builds the
method, and stores the resolved spec in its hyper-parameters (so checkpoints rebuild it). Every bad value is a
:class:`~camlab.errors.ConfigError` at construction naming its key (``wsol.drop_rate``). The contract a method
honours is in :mod:`camlab.methods.base`.

>>> from camlab.models import CAMClassifier
>>> from camlab.models.backbones import create_backbone
>>> model = CAMClassifier(create_backbone("tiny_cnn", width=4), num_classes=3, wsol={"name": "adl"})
>>> model.wsol_method.spec()["blocks"]  # the default blocks of tiny_cnn
['features.9', 'features.11']
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from camlab.errors import ConfigError
from camlab.methods.acol import ACoL
from camlab.methods.adl import ADL
from camlab.methods.base import VanillaCAM, WSOLMethod
from camlab.methods.data_side import CutMix, HideAndSeek
from camlab.methods.spg import SPG

__all__ = ["METHODS", "WSOLMethod", "build_method"]

#: name -> method class; the names of ``conf/wsol/*.yaml``.
METHODS: dict[str, type[WSOLMethod]] = {"cam": VanillaCAM, "has": HideAndSeek, "acol": ACoL, "spg": SPG,
                                        "adl": ADL, "cutmix": CutMix}


def build_method(spec: Mapping[str, Any] | WSOLMethod | None) -> WSOLMethod:
    """The method of ``spec``: None (vanilla CAM), a :class:`WSOLMethod` (returned as is), or a mapping with a
    ``name`` from :data:`METHODS` and that method's keys.

    >>> build_method({"name": "has", "grid_size": 8}).spec()
    {'name': 'has', 'grid_size': 8, 'drop_rate': 0.5, 'seed': 0}
    >>> build_method({"name": "has", "grid_size": 0})
    Traceback (most recent call last):
    ...
    camlab.errors.ConfigError: wsol.grid_size must be an integer >= 1 (the side of a hidden cell in pixels), got 0
    """
    if spec is None:
        return VanillaCAM()
    if isinstance(spec, WSOLMethod):
        return spec
    if not isinstance(spec, Mapping):
        raise ConfigError(f"wsol must be a mapping with a name ({', '.join(METHODS)}) and that method's keys, got "
                          f"{spec!r}", settings=["wsol"])
    keys = dict(spec)
    name = keys.pop("name", None)
    if name not in METHODS:
        raise ConfigError(f"wsol.name: unknown WSOL method {name!r}; one of {', '.join(METHODS)} "
                          f"(camlab-train wsol=<name>)", settings=["wsol.name"])
    cls = METHODS[name]
    accepted = [p for p in inspect.signature(cls).parameters]
    unknown = sorted(set(keys) - set(accepted))
    if unknown:
        raise ConfigError(f"wsol.{unknown[0]}: not a key of wsol={name}; its keys: {', '.join(accepted) or 'none'}",
                          settings=[f"wsol.{unknown[0]}"])
    return cls(**keys)
