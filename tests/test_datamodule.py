"""collate_wsol (the batch contract) and WSOLDataModule (loaders, metadata, Hydra config)."""
from __future__ import annotations

import functools

import pytest
import torch

from camlab.data import SyntheticShapes, WSOLDataModule, collate_wsol


def _sample(index: int, n_boxes: int, mask: bool = True, size: int = 8) -> dict:
    s = {
        "image": torch.full((3, size, size), float(index)),
        "label": index % 3,
        "boxes": torch.arange(n_boxes * 4, dtype=torch.float32).reshape(n_boxes, 4) + 1,
        "index": index,
    }
    if mask:
        s["mask"] = torch.full((size, size), index % 2, dtype=torch.uint8)
    return s


def test_collate_pads_boxes_and_keeps_indices() -> None:
    batch = collate_wsol([_sample(5, 1), _sample(2, 3), _sample(9, 0)])
    assert batch["image"].shape == (3, 3, 8, 8) and batch["image"].dtype == torch.float32
    assert batch["label"].tolist() == [2, 2, 0] and batch["label"].dtype == torch.long
    assert batch["boxes"].shape == (3, 3, 4) and batch["boxes"].dtype == torch.float32
    assert batch["num_boxes"].tolist() == [1, 3, 0] and batch["num_boxes"].dtype == torch.long
    assert batch["index"].tolist() == [5, 2, 9] and batch["index"].dtype == torch.long
    assert torch.equal(batch["boxes"][0, 0], torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert not batch["boxes"][0, 1:].any() and not batch["boxes"][2].any()  # zero padding
    assert torch.equal(batch["boxes"][1], _sample(2, 3)["boxes"])
    assert batch["mask"].shape == (3, 8, 8) and batch["mask"].dtype == torch.uint8
    assert torch.equal(batch["image"][1], torch.full((3, 8, 8), 2.0))


def test_collate_masks_optional_but_consistent_and_extra_keys() -> None:
    batch = collate_wsol([_sample(0, 1, mask=False), _sample(1, 2, mask=False)])
    assert "mask" not in batch and batch["boxes"].shape == (2, 2, 4)
    with pytest.raises(ValueError, match="mask"):
        collate_wsol([_sample(0, 1), _sample(1, 1, mask=False)])
    with pytest.raises(ValueError, match="shape"):
        collate_wsol([_sample(0, 1), _sample(1, 1, size=9)])
    a, b = _sample(0, 1), _sample(1, 1)
    a["path"], b["path"] = "a.jpg", "b.jpg"
    a["size"], b["size"] = torch.tensor([4, 5]), torch.tensor([6, 7])
    batch = collate_wsol([a, b])
    assert batch["path"] == ["a.jpg", "b.jpg"] and batch["size"].tolist() == [[4, 5], [6, 7]]


def _factory(split: str, length: int, **kw) -> functools.partial:
    return functools.partial(SyntheticShapes, split=split, length=length, seed=1, **kw)


@pytest.fixture(scope="module")
def dm() -> WSOLDataModule:
    dm = WSOLDataModule(
        train_dataset=_factory("train", 96, max_objects=3),
        val_dataset=_factory("val", 70),
        test_dataset=SyntheticShapes("test", length=40, seed=1),
        batch_size=32,
        eval_batch_size=25,
        num_classes=5,
        image_size=64,
    )
    dm.setup("fit")
    return dm


def _check_contract(batch: dict, n: int, num_classes: int = 5, size: int = 64) -> None:
    assert batch["image"].shape == (n, 3, size, size) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (n,) and batch["label"].dtype == torch.long
    assert int(batch["label"].max()) < num_classes
    G = batch["boxes"].shape[1]
    assert batch["boxes"].shape == (n, G, 4) and batch["boxes"].dtype == torch.float32
    assert int(batch["num_boxes"].max()) == G and batch["num_boxes"].dtype == torch.long
    assert batch["mask"].shape == (n, size, size) and batch["mask"].dtype == torch.uint8
    assert batch["index"].shape == (n,) and batch["index"].dtype == torch.long
    for b in range(n):  # each real box encloses foreground; the mask lies inside the union of boxes
        inside = torch.zeros(size, size, dtype=torch.bool)
        for x0, y0, x1, y1 in batch["boxes"][b, : batch["num_boxes"][b]].long().tolist():
            assert batch["mask"][b, y0:y1, x0:x1].any()
            inside[y0:y1, x0:x1] = True
        assert not batch["mask"][b][~inside].any()


def test_loaders_yield_the_contract(dm: WSOLDataModule) -> None:
    train = list(dm.train_dataloader())
    assert [len(b["label"]) for b in train] == [32, 32, 32]
    for b in train:
        _check_contract(b, 32)
    assert sorted(torch.cat([b["index"] for b in train]).tolist()) == list(range(96))  # a permutation
    assert any(int(b["num_boxes"].max()) > 1 for b in train)
    val = list(dm.val_dataloader())
    assert [len(b["label"]) for b in val] == [25, 25, 20]  # eval_batch_size, no drop_last
    _check_contract(val[-1], 20)
    dm.setup("test")
    test = list(dm.test_dataloader())
    assert [len(b["label"]) for b in test] == [25, 15]
    _check_contract(test[1], 15)


def test_val_order_is_stable(dm: WSOLDataModule) -> None:
    first = [b for b in dm.val_dataloader()]
    second = [b for b in dm.val_dataloader()]
    assert torch.cat([b["index"] for b in first]).tolist() == list(range(70))
    for a, b in zip(first, second):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["boxes"], b["boxes"])


def test_metadata(dm: WSOLDataModule) -> None:
    assert dm.num_classes == 5 and dm.image_size == 64
    assert dm.class_names[0] == "disk/horizontal stripes" and len(dm.class_names) == 5
    assert dm.mean == (0.5, 0.5, 0.5) and dm.std == (0.5, 0.5, 0.5)
    assert dm.eval_batch_size == 25 and not dm.persistent_workers  # no workers: no persistence


def test_factories_are_built_lazily_and_per_stage() -> None:
    calls: list[str] = []

    def make(split: str):
        def build():
            calls.append(split)
            return SyntheticShapes(split, length=10)
        return build

    dm = WSOLDataModule(make("train"), make("val"), make("test"), batch_size=4, num_classes=5, image_size=64)
    assert dm.num_classes == 5 and calls == []  # declared metadata needs no dataset
    dm.setup("test")
    assert calls == ["test"]
    dm.setup("fit")
    dm.setup("fit")
    assert calls == ["test", "train", "val"]  # built once each


def test_limits_seed_and_bad_input() -> None:
    dm = WSOLDataModule(SyntheticShapes("train", length=30), num_train=20, batch_size=8, seed=3)
    assert len(dm.dataset("train")) == 20 and dm.dataset("train").num_classes == 5
    order = [torch.cat([b["index"] for b in dm.train_dataloader()]).tolist() for _ in range(2)]
    assert order[0] == order[1] and order[0] != list(range(20)) and sorted(order[0]) == list(range(20))
    with pytest.raises(ValueError, match="num_train"):
        WSOLDataModule(SyntheticShapes("train", length=10), num_train=11).dataset("train")
    with pytest.raises(ValueError, match="num_classes"):
        WSOLDataModule(SyntheticShapes("train", length=10), num_classes=6).dataset("train")
    with pytest.raises(ValueError, match="batch_size"):
        WSOLDataModule(SyntheticShapes("train", length=10), batch_size=0)
    with pytest.raises(ValueError, match="num_workers"):
        WSOLDataModule(SyntheticShapes("train", length=10), num_workers=-1)
    with pytest.raises(ValueError, match="at least one"):
        WSOLDataModule()
    with pytest.raises(RuntimeError, match="test_dataset"):
        WSOLDataModule(SyntheticShapes("train", length=10)).test_dataloader()


def test_two_workers_match_main_process() -> None:
    kw = dict(val_dataset=SyntheticShapes("val", length=48), batch_size=16)
    ref = list(WSOLDataModule(num_workers=0, **kw).val_dataloader())
    dm2 = WSOLDataModule(num_workers=2, **kw)
    assert dm2.persistent_workers
    got = list(dm2.val_dataloader())
    assert len(got) == len(ref) == 3
    for a, b in zip(ref, got):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_hydra_config_builds_the_datamodule() -> None:
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate

    with initialize_config_module("camlab.conf", version_base="1.3"):
        cfg = compose(overrides=["+data=synthetic", "data.num_train=64", "data.num_val=30", "data.num_test=20"])
    assert cfg.data.num_classes == 5 and cfg.data.image_size == 64 and cfg.data.batch_size == 64
    dm = instantiate(cfg.data)
    assert isinstance(dm, WSOLDataModule) and dm.num_classes == 5 and dm._built == {}
    dm.setup("fit")
    ds = dm.dataset("train")
    assert (len(ds), ds.seed, ds.hflip, dm.dataset("val").hflip) == (64, 0, True, False)
    _check_contract(next(iter(dm.train_dataloader())), 64)
    assert len(list(dm.val_dataloader())) == 1
