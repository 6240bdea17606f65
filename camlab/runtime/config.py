"""The run config: instantiating config groups, the checkpoint to start from, where an argument is set."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Iterator

from omegaconf import DictConfig, OmegaConf

from camlab.errors import ConfigError

# A value that is only a reference to another key: ${a.b} (absolute), ${.b} (sibling), ${..b} (parent's), ...
_REFERENCE = re.compile(r"^\$\{(\.*)([A-Za-z_][\w.]*)\}$")


def instantiate_group(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` node of a config group (callbacks, loggers) into a list."""
    from hydra.utils import instantiate

    if not cfg:
        return []
    objects = []
    for key, node in cfg.items():
        if isinstance(node, DictConfig) and "_target_" in node:
            objects.append(instantiate(node, _convert_="partial"))
        elif node is not None and not isinstance(node, DictConfig):
            raise ConfigError(f"config key '{key}' must be a node with a _target_, got {node!r}")
    return objects


def check_flags(cfg: DictConfig, keys: Iterable[str]) -> None:
    """The app's on/off settings must be true or false: ``test=no`` is the string "no", which would count as true.

    >>> check_flags(OmegaConf.create({"test": True, "eval": {"save_cams": False}}), ["test", "eval.save_cams", "x"])
    >>> check_flags(OmegaConf.create({"test": "no"}), ["test"])
    Traceback (most recent call last):
    ...
    camlab.errors.ConfigError: test must be true or false, got 'no'
    """
    for key in keys:
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """``ckpt_path``: null -> None; "last" -> <checkpoint_dir>/last.ckpt (must exist); else an existing file."""
    value = cfg.get("ckpt_path")
    if not value:
        return None
    if value == "last":
        path = Path(cfg.paths.checkpoint_dir) / "last.ckpt"
        if not path.is_file():
            raise ConfigError(
                f"ckpt_path=last but {path} does not exist; reuse the run dir of the run to resume "
                f"(hydra.run.dir=<that dir>) or pass ckpt_path=<file.ckpt>"
            )
        return str(path)
    if not Path(value).is_file():
        raise ConfigError(f"ckpt_path '{value}' is not a file")
    return str(value)


def config_keys(cfg: DictConfig, settings: Iterable[str], scope: str | None = None) -> list[str]:
    """The config keys that set the arguments ``settings`` (see :class:`camlab.errors.ConfigError`).

    A setting matches the keys of config nodes that end with it (``val_dataset.length`` matches
    ``data.val_dataset.length``; top-level keys such as ``seed`` are the app's, not an object's arguments); one
    that matches none is tried without its first part (``val_dataset.skip_corrupt`` -> ``skip_corrupt``).
    A key whose value only refers to another key (``${..num_val}``) gives the key referred to: the one to set.
    With ``scope`` (the node Hydra was instantiating), keys under it win. Keys of ``hydra`` are not searched.

    >>> cfg = OmegaConf.create({"seed": 0, "data": {"num_val": 5, "image_size": 64, "seed": "${seed}",
    ...     "val_dataset": {"length": "${..num_val}", "image_size": "${..image_size}", "max_objects": 1},
    ...     "test_dataset": {"max_objects": 1}}, "model": {"optimizer": {"lr": 0.1}}})
    >>> config_keys(cfg, ["val_dataset.length", "image_size", "seed"])  # data.seed is ${seed}: seed is set
    ['data.num_val', 'data.image_size', 'seed']
    >>> config_keys(cfg, ["val_dataset.max_objects", "optimizer", "lr", "no_such_key"])
    ['data.val_dataset.max_objects', 'model.optimizer', 'model.optimizer.lr']
    >>> config_keys(cfg, ["max_objects"], scope="data.test_dataset")
    ['data.test_dataset.max_objects']
    >>> config_keys(cfg, ["model.optimizer.lr"], scope="callbacks.x")  # a whole key from the top
    ['model.optimizer.lr']
    """
    tree = OmegaConf.to_container(cfg, resolve=False)
    values = dict(_flatten({k: v for k, v in tree.items() if k != "hydra"}))
    scope = _source(scope, values) if scope else None
    keys: list[str] = []
    for setting in settings:
        parts = setting.split(".")
        found: list[str] = []
        while parts and not found:
            tail = ".".join(parts)
            # a dotted setting may also be a top-level key itself (cam_method.batch_size)
            found = [k for k in values if k.endswith("." + tail) or ("." in tail and k == tail)]
            parts = parts[1:]
        if scope:
            inside = [k for k in found if k == scope or k.startswith(scope + ".")]
            found = inside or found
        for key in (_source(k, values) for k in found):
            if key not in keys:
                keys.append(key)
    return keys


def _flatten(tree: dict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in tree.items():
        path = f"{prefix}{key}"
        yield path, value
        if isinstance(value, dict):
            yield from _flatten(value, path + ".")


def _source(key: str, values: dict[str, Any]) -> str:
    """The key that ``key``'s value refers to, followed to a key that sets a value of its own."""
    for _ in range(16):  # a longer chain is a cycle: stop
        match = _REFERENCE.match(str(values.get(key, "")))
        if match is None:
            return key
        dots, name = match.groups()
        if dots:  # relative to the node holding the key: "." is that node, ".." its parent ...
            node = key.split(".")[:-1]
            keep = len(node) - (len(dots) - 1)
            if keep < 0:
                return key
            name = ".".join([*node[:keep], name])
        if name not in values:
            return key
        key = name
    return key
