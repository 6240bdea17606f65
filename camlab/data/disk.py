"""DiskDataModule: WSOLDataModule for datasets on disk, with their shared options given once.

``root``, ``image_size``, ``resize_size``, ``masks``, ``skip_corrupt``, ``num_classes`` and every keyword that
:class:`WSOLDataModule` does not take (a format's own options: ``metadata_root``, ``annotations``, ...) are
passed to each split's dataset factory (a :class:`camlab.data.records.RecordDataset` subclass), so a config
says them once (``camlab-train data=cub data.root=/path data.skip_corrupt=true``) and each split only says
what differs (its ``split``).
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Sequence

from camlab.data.datamodule import WSOLDataModule


class DiskDataModule(WSOLDataModule):
    """Train/val/test loaders over on-disk datasets.

    Args:
        root: the dataset's root folder, given to every factory.
        image_size: network input side (crop size).
        resize_size: square resize before the random crop of the train split (the WSOL protocol: 256 for 224).
        masks: 'auto', True or False (see RecordDataset).
        skip_corrupt: skip unreadable images (counted, reported at set-up and at the end) instead of failing.
        num_classes: declared class count, checked against the annotations.
        train_dataset, val_dataset, test_dataset: factories taking the options above as keyword arguments.
        **kwargs: the arguments of :class:`WSOLDataModule` (batch sizes, workers, pinned memory, limits, seed);
            any other keyword is a dataset option given to every factory.
    """

    def __init__(
        self,
        root: str,
        image_size: int = 224,
        resize_size: int | None = 256,
        masks: bool | str = "auto",
        skip_corrupt: bool = False,
        num_classes: int | None = None,
        train_dataset: Callable[..., Any] | None = None,
        val_dataset: Callable[..., Any] | None = None,
        test_dataset: Callable[..., Any] | None = None,
        class_names: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        own = set(inspect.signature(WSOLDataModule.__init__).parameters)
        options = {k: kwargs.pop(k) for k in list(kwargs) if k not in own}
        shared = dict(root=str(root), image_size=image_size, resize_size=resize_size, masks=masks,
                      skip_corrupt=skip_corrupt, num_classes=num_classes, **options)

        def bind(factory: Callable[..., Any] | None) -> Callable[..., Any] | None:
            return None if factory is None else functools.partial(factory, **shared)

        super().__init__(
            train_dataset=bind(train_dataset), val_dataset=bind(val_dataset), test_dataset=bind(test_dataset),
            num_classes=num_classes, image_size=image_size, class_names=class_names, **kwargs,
        )
        self.root, self.resize_size, self.masks, self.skip_corrupt = str(root), resize_size, masks, skip_corrupt
        self.dataset_options = options
