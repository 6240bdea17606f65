"""WSOLDataModule: a generic LightningDataModule over any datasets that honour the sample contract.

Datasets are passed either built or as zero-argument factories (``functools.partial``, or a Hydra node
with ``_partial_: true``); factories are built in ``setup()`` for the stage that needs them, so
instantiating a config costs nothing and ``trainer.test`` never renders the train split.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence, Union

import logging

import lightning.pytorch as L
import torch
import numpy as np
from torch.utils.data import DataLoader, Dataset, Subset

from camlab.data.records import collate_skipping
from camlab.errors import ConfigError

log = logging.getLogger("camlab.data")
DatasetLike = Union[Dataset, Callable[[], Dataset], None]
_STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}


class WSOLDataModule(L.LightningDataModule):
    """Train/val/test loaders that yield the camlab batch contract (see :mod:`camlab.data.collate`).

    Args:
        train_dataset, val_dataset, test_dataset: datasets or zero-argument factories (None: no split).
        batch_size: training batch size.
        eval_batch_size: validation/test batch size; default ``batch_size``.
        num_workers: DataLoader workers (0: load in the main process).
        pin_memory: pin batches (useful with a GPU).
        persistent_workers: keep workers between epochs; only applies when ``num_workers > 0``.
        drop_last: drop the last incomplete training batch (never for val/test).
        num_classes, image_size: declared metadata; if given they must match the datasets' attributes
            (when those exist), and they are available before any dataset is built.
        class_names: optional names; default the train (or first available) dataset's ``class_names``.
        num_train, num_val, num_test: use only the first N samples of a split (ValueError if it has
            fewer); None uses the whole split.
        val_per_class: keep N images per class of the val split (after ``num_val``), drawn by ``seed`` (0 when
            None); 0 keeps them all. A class with fewer than N val images is an error naming the class and its count;
            classes without any val image are warned about (the budget covers the others).
        seed: seed of the training shuffle order (and of the ``val_per_class`` draw); None uses torch's global RNG
            (``L.seed_everything``).

    ``mean``/``std`` come from the datasets (which normalize), so visualization can un-normalize.
    """

    def __init__(
        self,
        train_dataset: DatasetLike = None,
        val_dataset: DatasetLike = None,
        test_dataset: DatasetLike = None,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        drop_last: bool = False,
        num_classes: int | None = None,
        image_size: int | Sequence[int] | None = None,
        class_names: Sequence[str] | None = None,
        num_train: int | None = None,
        num_val: int | None = None,
        num_test: int | None = None,
        val_per_class: int = 0,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be an int >= 1, got {batch_size!r}", settings=["batch_size"])
        if eval_batch_size is not None and (not isinstance(eval_batch_size, int) or eval_batch_size < 1):
            raise ConfigError(f"eval_batch_size must be None or an int >= 1, got {eval_batch_size!r}",
                              settings=["eval_batch_size"])
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ConfigError(f"num_workers must be an int >= 0, got {num_workers!r}", settings=["num_workers"])
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 2):
            raise ConfigError(f"num_classes must be None or an int >= 2, got {num_classes!r}", settings=["num_classes"])
        for name, n in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test)):
            if n is not None and (not isinstance(n, int) or n < 1):
                raise ConfigError(f"{name} must be None or an int >= 1, got {n!r}", settings=[name])
        if isinstance(val_per_class, bool) or not isinstance(val_per_class, int) or val_per_class < 0:
            raise ConfigError(f"val_per_class must be an int >= 0 (0: the whole val split), got {val_per_class!r}",
                              settings=["val_per_class"])
        if all(d is None for d in (train_dataset, val_dataset, test_dataset)):
            raise ValueError("WSOLDataModule needs at least one of train_dataset, val_dataset, test_dataset")
        self._sources = {"train": train_dataset, "val": val_dataset, "test": test_dataset}
        self._limits = {"train": num_train, "val": num_val, "test": num_test}
        self.val_per_class = val_per_class
        self._built: dict[str, Dataset] = {}
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.drop_last = drop_last
        self._num_classes = num_classes
        self._image_size = image_size
        self._class_names = list(class_names) if class_names is not None else None
        self.seed = seed
        self._shuffle_generator: torch.Generator | None = None
        self._resume_shuffle_state: torch.Tensor | None = None

    # ---------------------------------------------------------------------------------------- datasets
    def dataset(self, split: str) -> Dataset:
        """The dataset of ``split`` ('train', 'val' or 'test'), built (once) if it was a factory."""
        if split not in self._sources:
            raise ValueError(f"split must be one of {sorted(self._sources)}, got {split!r}")
        if split not in self._built:
            source = self._sources[split]
            if source is None:
                raise RuntimeError(f"WSOLDataModule has no {split}_dataset")
            try:
                ds = source if isinstance(source, Dataset) or not callable(source) else source()
            except ConfigError as err:  # its settings are arguments of this split's dataset
                err.within(f"{split}_dataset")
                raise
            self._check_metadata(split, ds)
            limit = self._limits[split]
            if limit is not None:
                if limit > len(ds):
                    raise ConfigError(
                        f"num_{split}={limit} exceeds the {split} split's {len(ds)} samples; set it to at most "
                        f"{len(ds)} (or None for all of them)",
                        settings=[f"num_{split}"],
                    )
                if limit < len(ds):
                    ds = _Limited(ds, limit)
            if split == "val" and self.val_per_class:
                ds = self._budget(ds)
            self._built[split] = ds
        return self._built[split]

    def _budget(self, ds: Dataset) -> Dataset:
        """``val_per_class`` images per class of the val split ``ds``; a warning names the classes it has none of."""
        labels = dataset_labels(ds)
        names = self._class_names or getattr(ds, "class_names", None)
        total = self._num_classes or (len(names) if names is not None else None) or getattr(ds, "num_classes", None)
        missing = sorted(set(range(int(total))) - set(labels.tolist())) if total else []
        if missing:
            first = ", ".join(str(names[c]) if names is not None else str(c) for c in missing[:5])
            log.warning("val_per_class=%d: %d of %d classes have no val image (%s%s): the budget covers the other %d",
                        self.val_per_class, len(missing), total, first, ", ..." if len(missing) > 5 else "",
                        int(total) - len(missing))
        return _Limited(ds, per_class_indices(labels, self.val_per_class, self.seed or 0, names))

    def _check_metadata(self, split: str, ds: Any) -> None:
        for name, declared in (("num_classes", self._num_classes), ("image_size", self._image_size)):
            actual = getattr(ds, name, None)
            if declared is not None and actual is not None and _norm(declared) != _norm(actual):
                raise ConfigError(
                    f"{name}={declared!r} but the {split} dataset has {name}={actual!r}; set {name}={actual!r}",
                    settings=[name],
                )

    def _first_dataset(self) -> Any:
        for split in ("train", "val", "test"):
            if self._sources[split] is not None:
                return self.dataset(split)
        raise AssertionError("unreachable: __init__ requires a dataset")

    def setup(self, stage: str | None = None) -> None:
        splits = _STAGE_SPLITS.get(stage, ("train", "val", "test")) if stage else ("train", "val", "test")
        for split in splits:
            if self._sources[split] is not None:
                self.dataset(split)

    def teardown(self, stage: str | None = None) -> None:
        """Report what the datasets clipped or skipped (``report()`` of the on-disk datasets) at the end."""
        for ds in self._built.values():
            report = getattr(ds, "report", None)
            if callable(report):
                report()

    # ---------------------------------------------------------------------------------------- metadata
    @property
    def num_classes(self) -> int:
        if self._num_classes is None:
            self._num_classes = int(self._first_dataset().num_classes)
        return self._num_classes

    @property
    def image_size(self) -> int | tuple[int, int]:
        if self._image_size is None:
            self._image_size = getattr(self._first_dataset(), "image_size")
        return self._image_size

    @property
    def class_names(self) -> list[str]:
        if self._class_names is None:
            names = getattr(self._first_dataset(), "class_names", None)
            self._class_names = list(names) if names is not None else [str(i) for i in range(self.num_classes)]
        return self._class_names

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(getattr(self._first_dataset(), "mean", (0.0, 0.0, 0.0)))

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(getattr(self._first_dataset(), "std", (1.0, 1.0, 1.0)))

    # ----------------------------------------------------------------------------------------- loaders
    def _loader(self, split: str, shuffle: bool, batch_size: int, drop_last: bool) -> DataLoader:
        generator = None
        if shuffle and self.seed is not None:
            generator = torch.Generator().manual_seed(self.seed)
            if self._resume_shuffle_state is not None:  # a resumed run continues the interrupted order
                generator.set_state(self._resume_shuffle_state)
                self._resume_shuffle_state = None
            self._shuffle_generator = generator
        return DataLoader(
            self.dataset(split),
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            collate_fn=collate_skipping,  # collate_wsol minus images skipped as unreadable
            generator=generator,
        )

    # ------------------------------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """The training shuffle generator's state: saved in checkpoints, so a resumed run keeps the data order."""
        gen = self._shuffle_generator
        return {} if gen is None else {"shuffle_generator": gen.get_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning restores the datamodule before it builds the loaders: the next train loader picks it up.
        self._resume_shuffle_state = state_dict.get("shuffle_generator")

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True, self.batch_size, self.drop_last)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False, self.eval_batch_size, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False, self.eval_batch_size, False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", False, self.eval_batch_size, False)


def dataset_labels(ds: Any) -> np.ndarray:
    """The class label of every sample of ``ds`` (N int64), without loading images where the dataset keeps them:
    ``labels`` of the rendered datasets, ``records`` of the on-disk ones; any other dataset is read sample by sample.
    A :class:`~torch.utils.data.Subset` gives its own samples' labels."""
    if isinstance(ds, Subset):
        return dataset_labels(ds.dataset)[np.asarray(ds.indices, dtype=np.int64)]
    labels = getattr(ds, "labels", None)
    if labels is not None and len(labels) == len(ds):
        return np.asarray(labels, dtype=np.int64).reshape(-1)
    records = getattr(ds, "records", None)
    if records is not None and len(records) == len(ds):
        return np.asarray([r.label for r in records], dtype=np.int64)
    return np.asarray([int(ds[i]["label"]) for i in range(len(ds))], dtype=np.int64)


def per_class_indices(labels: Sequence[int], n: int, seed: int, class_names: Sequence[str] | None = None) -> list[int]:
    """Sorted positions of ``n`` samples per class: class c's first ``n`` in a permutation seeded by ``(seed, c)``.

    The classes are those present in ``labels`` (as wsolevaluation's ``num_val_sample_per_class``, whose draw uses
    numpy's global generator): one with fewer than ``n`` samples is a :class:`ConfigError` naming it and its count
    (``class_names`` for the name). Per-class seeds make each class's draw independent of the others, and a prefix of
    one permutation makes the ``n`` = 5 draw a subset of the ``n`` = 10 one.

    >>> per_class_indices([0, 1, 0, 1, 0, 1], 2, seed=0)
    [0, 1, 4, 5]
    >>> per_class_indices([0, 1, 0, 1, 0, 1], 1, seed=0)  # within the n = 2 draw
    [4, 5]
    """
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    present = np.unique(labels)
    counts = np.bincount(labels)[present] if labels.size else np.zeros(0, np.int64)
    if counts.size and counts.min() < n:
        c = int(present[np.argmin(counts)])
        name = f"class {c} ({class_names[c]})" if class_names is not None and c < len(class_names) else f"class {c}"
        raise ConfigError(
            f"val_per_class={n} but {name} has only {int(counts.min())} val images (the fewest of the "
            f"{len(present)} classes in the split; {int((counts < n).sum())} have fewer than {n}); set val_per_class "
            f"<= {int(counts.min())}, or 0 for the whole val split", settings=["val_per_class"])
    picked = [np.random.default_rng([seed, int(c)]).permutation(np.flatnonzero(labels == c))[:n] for c in present]
    return sorted(int(i) for i in np.concatenate(picked)) if picked else []


class _Limited(Subset):
    """Some samples of a dataset (the first ``n``, or the given positions); keeps the wrapped dataset's metadata
    attributes visible."""

    def __init__(self, dataset: Dataset, n: int | Sequence[int]) -> None:
        super().__init__(dataset, range(n) if isinstance(n, int) else list(n))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("dataset", "indices"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


def _norm(v: Any) -> Any:
    return tuple(v) if isinstance(v, (list, tuple)) else v
