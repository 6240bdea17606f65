"""MNISTCanvas: IDX reading (plain, .gz, torchvision layout), labels, determinism, exact boxes/masks, bad input,
and one in-process fast_dev_run of experiment=fashion_canvas through the real Hydra config.

Every IDX file here is written by the plain writer below, never taken from an installed package.
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict, read_write

from camlab.data.canvas import MNISTCanvas, find_idx_files, load_split_items
from camlab.errors import ConfigError, DataFilesNotFound

N_TRAIN, N_TEST, VAL_ITEMS = 40, 20, 10


# --------------------------------------------------------------------------------------------- helpers
def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    """The IDX format by hand: 2 zero bytes, type 0x08 (uint8), ndim, big-endian int32 dims, then the data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">i", d) for d in array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def rect_item(label: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A 28×28 solid rectangle of ink 255 whose shape depends on the label; returns it and (r0, r1, c0, c1)."""
    r0, r1, c0, c1 = 2 + label % 3, 26 - label % 4, 4 + label, 24 - label // 2  # inclusive-exclusive
    item = np.zeros((28, 28), np.uint8)
    item[r0:r1, c0:c1] = 255
    return item, (r0, r1, c0, c1)


def make_files(n: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    labels = (np.arange(n) * 7 + offset) % 10  # every class, not in index order
    return np.stack([rect_item(int(c))[0] for c in labels]), labels.astype(np.uint8)


TRAIN = make_files(N_TRAIN, 0)
TEST = make_files(N_TEST, 3)


def write_root(root: Path, compress: bool = False, torchvision_layout: bool = False, skip: str | None = None) -> Path:
    where = root / "FashionMNIST" / "raw" if torchvision_layout else root
    files = {
        "train-images-idx3-ubyte": TRAIN[0], "train-labels-idx1-ubyte": TRAIN[1],
        "t10k-images-idx3-ubyte": TEST[0], "t10k-labels-idx1-ubyte": TEST[1],
    }
    for name, array in files.items():
        if name != skip:
            write_idx(where / name, array, compress)
    root.mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_root(tmp_path_factory.mktemp("fmnist"), compress=True)


def tight_box_by_loop(mask: np.ndarray) -> tuple[float, float, float, float]:
    """Independent reference: min/max of the nonzero rows and columns, continuous convention (+1)."""
    xs, ys = [], []
    for y in range(mask.shape[0]):
        for x in range(mask.shape[1]):
            if mask[y, x]:
                xs.append(x)
                ys.append(y)
    return float(min(xs)), float(min(ys)), float(max(xs) + 1), float(max(ys) + 1)


# ------------------------------------------------------------------------------------------- reading
@pytest.mark.parametrize("compress,torchvision_layout", [(False, False), (True, False), (False, True), (True, True)])
def test_reads_plain_gz_and_torchvision_layouts(tmp_path, compress, torchvision_layout):
    r = write_root(tmp_path / "r", compress, torchvision_layout)
    train_x, train_y = load_split_items(r, "fashion_mnist", "train", VAL_ITEMS)
    val_x, val_y = load_split_items(r, "fashion_mnist", "val", VAL_ITEMS)
    test_x, test_y = load_split_items(r, "fashion_mnist", "test", VAL_ITEMS)
    # train and val are disjoint ranges of the train file (val = the last VAL_ITEMS), test is the t10k file
    assert np.array_equal(train_x.numpy(), TRAIN[0][: N_TRAIN - VAL_ITEMS])
    assert np.array_equal(val_x.numpy(), TRAIN[0][N_TRAIN - VAL_ITEMS:])
    assert train_y.tolist() == TRAIN[1][: N_TRAIN - VAL_ITEMS].tolist()
    assert val_y.tolist() == TRAIN[1][N_TRAIN - VAL_ITEMS:].tolist()
    assert np.array_equal(test_x.numpy(), TEST[0]) and test_y.tolist() == TEST[1].tolist()
    if torchvision_layout:
        assert all("FashionMNIST/raw" in str(p) for pair in find_idx_files(r).values() for p in pair)


def test_mnist_uses_its_own_torchvision_folder(tmp_path):
    write_idx(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte", TRAIN[0])
    write_idx(tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte", TRAIN[1])
    write_idx(tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte", TEST[0])
    write_idx(tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte", TEST[1])
    ds = MNISTCanvas(tmp_path, "test", length=3, dataset="mnist", image_size=32)
    assert ds.class_names == [str(d) for d in range(10)]
    assert ds.labels.tolist() == TEST[1][:3].tolist()
    with pytest.raises(DataFilesNotFound, match="FashionMNIST/raw"):
        find_idx_files(tmp_path, "fashion_mnist")


# ------------------------------------------------------------------------------------------- samples
@pytest.fixture(scope="module")
def val_ds(root) -> MNISTCanvas:
    return MNISTCanvas(root, "val", val_items=VAL_ITEMS, image_size=48, seed=5)


@pytest.fixture(scope="module")
def multi_ds(root) -> MNISTCanvas:
    return MNISTCanvas(root, "train", val_items=VAL_ITEMS, image_size=64, max_items=3, seed=2, hflip=True)


def test_labels_and_contract(val_ds):
    assert len(val_ds) == VAL_ITEMS and val_ds.num_classes == 10 and val_ds.image_size == 48
    assert val_ds.class_names[0] == "T-shirt/top" and val_ds.class_names[9] == "Ankle boot"
    for i in range(len(val_ds)):
        s = val_ds[i]
        assert s["label"].item() == TRAIN[1][N_TRAIN - VAL_ITEMS + i]
        assert s["image"].shape == (3, 48, 48) and s["image"].dtype == torch.float32
        assert s["boxes"].shape == (1, 4) and s["mask"].shape == (48, 48) and s["mask"].dtype == torch.uint8
        assert s["index"].item() == i
        # normalized with mean = std = 0.5: back to the cached uint8 image
        assert torch.allclose((s["image"] * 0.5 + 0.5) * 255, val_ds.images[i].float(), atol=1e-3)


def test_deterministic_from_seed_split_and_index(root, val_ds):
    again = MNISTCanvas(root, "val", val_items=VAL_ITEMS, image_size=48, seed=5)
    assert torch.equal(again.images, val_ds.images) and torch.equal(again.boxes, val_ds.boxes)
    shorter = MNISTCanvas(root, "val", length=4, val_items=VAL_ITEMS, image_size=48, seed=5)
    assert torch.equal(shorter.images, val_ds.images[:4])  # a sample does not depend on the split's length
    other = MNISTCanvas(root, "val", val_items=VAL_ITEMS, image_size=48, seed=6)
    assert not torch.equal(other.images, val_ds.images)


@pytest.mark.parametrize("which", ["val_ds", "multi_ds"])
def test_box_is_exactly_the_tight_box_of_each_items_mask(which, request):
    ds: MNISTCanvas = request.getfixturevalue(which)
    counts = set()
    for i in range(len(ds)):
        inst = ds.instances[i].numpy()
        n = int(ds.num_boxes[i])
        counts.add(n)
        assert inst.max() == n
        for g in range(n):
            assert tight_box_by_loop(inst == g + 1) == tuple(ds.boxes[i, g].tolist())
        assert not ds.boxes[i, n:].any()  # zero padding
    if which == "multi_ds":
        assert len(counts) > 1  # several items per canvas do occur


def test_item_ink_fills_the_box_in_one_solid_tone(val_ds):
    """Solid rectangles stay solid rectangles: the mask fills the box, the interior has one item colour,
    and the box has the rectangle's aspect ratio, so the item is exactly where the box says."""
    for i in range(len(val_ds)):
        x0, y0, x1, y1 = (int(v) for v in val_ds.boxes[i, 0].tolist())
        mask = val_ds.instances[i].numpy() > 0
        inside = mask[y0:y1, x0:x1].copy()
        assert inside.sum() == mask.sum()  # no ink outside the box
        inside[[0, 0, -1, -1], [0, -1, 0, -1]] = True  # a corner's bilinear ink (edge fraction squared) may be cut
        assert inside.all()  # a solid rectangle fills its box
        inner = val_ds.images[i][:, y0 + 2 : y1 - 2, x0 + 2 : x1 - 2].reshape(3, -1)  # ink 255 -> alpha 1
        assert (inner == inner[:, :1]).all()
        assert (inner[:, 0] <= 52).all() or (inner[:, 0] >= 203).all()  # a dark or light tone (0.2 / 0.8 of 255)
        _, (r0, r1, c0, c1) = rect_item(int(val_ds.labels[i]))
        side_w, side_h = (x1 - x0) * 28 / (c1 - c0), (y1 - y0) * 28 / (r1 - r0)  # item side implied by each axis
        assert abs(side_w - side_h) <= 2 * 28 / (c1 - c0) + 2 * 28 / (r1 - r0)  # both agree up to 2 px per edge pair


def test_boxes_and_masks_follow_the_flip(multi_ds):
    torch.manual_seed(0)
    flipped = 0
    for i in range(len(multi_ds)):
        s = multi_ds[i]
        cached = (multi_ds.instances[i] > 0).to(torch.uint8)
        was_flipped = not torch.equal(s["mask"], cached)
        flipped += was_flipped
        inst = multi_ds.instances[i].flip(-1) if was_flipped else multi_ds.instances[i]
        assert torch.equal(s["mask"], (inst > 0).to(torch.uint8))
        for g in range(len(s["boxes"])):
            assert tight_box_by_loop(inst.numpy() == g + 1) == tuple(s["boxes"][g].tolist())
    assert 0 < flipped < len(multi_ds)


# ------------------------------------------------------------------------------------------ bad input
def test_missing_root_names_it_and_the_layout(tmp_path):
    with pytest.raises(DataFilesNotFound) as info:
        MNISTCanvas(tmp_path / "nope", "train")
    msg = str(info.value)
    assert str(tmp_path / "nope") in msg and "does not exist" in msg
    assert "train-images-idx3-ubyte" in msg and "FashionMNIST/raw" in msg
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "torchvision.datasets.FashionMNIST('<dir>', download=True)" in msg and "set root=<dir>" in msg
    assert "\n" not in msg  # one line
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ConfigError)
    with pytest.raises(DataFilesNotFound) as info:  # no package ships MNIST: only torchvision's download
        MNISTCanvas(tmp_path / "nope", "train", dataset="mnist")
    msg = str(info.value)
    assert msg.startswith(f"mnist root '{tmp_path / 'nope'}' does not exist") and "MNIST/raw" in msg
    assert "torchvision.datasets.MNIST('<dir>', download=True)" in msg and "apt-get" not in msg


def test_missing_file_names_exactly_that_file(tmp_path):
    r = write_root(tmp_path / "r", compress=True, skip="t10k-labels-idx1-ubyte")
    with pytest.raises(DataFilesNotFound) as info:
        MNISTCanvas(r, "test")
    msg = str(info.value)
    assert "lacks t10k-labels-idx1-ubyte:" in msg  # only the missing one is named as missing
    assert "expected the 4 IDX files" in msg and ".gz" in msg and "apt-get install dataset-fashion-mnist" in msg


def test_corrupt_file_and_bad_sizes_are_readable_errors(tmp_path):
    r = write_root(tmp_path / "r")
    write_idx(r / "train-labels-idx1-ubyte", TRAIN[1][:1])  # 1 label for 40 images
    with pytest.raises(ConfigError, match="train-images-idx3-ubyte' has 40 images but .* has 1 labels"):
        MNISTCanvas(r, "train")
    (r / "t10k-images-idx3-ubyte").write_bytes(b"not an idx file")
    with pytest.raises(ConfigError, match="t10k-images-idx3-ubyte' is not a readable IDX images file"):
        MNISTCanvas(r, "test")
    r2 = write_root(tmp_path / "r2")
    with pytest.raises(ConfigError, match="length=31 but the fashion_mnist train split has only 30 items"):
        MNISTCanvas(r2, "train", length=31, val_items=VAL_ITEMS)
    with pytest.raises(ConfigError, match="val_items=40 must be in"):
        MNISTCanvas(r2, "val", val_items=40)


# --------------------------------------------------------------------------------- the Hydra experiment
def composed(overrides: list[str], out: Path):
    GlobalHydra.instance().clear()
    with initialize_config_module("camlab.conf", version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg), read_write(cfg):
        cfg.hydra.runtime.output_dir = str(out)
    HydraConfig.instance().set_config(cfg)
    return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])


def test_fashion_canvas_experiment_fast_dev_run_with_cam_metrics(root, tmp_path):
    from camlab.train import train

    tiny = [f"data.root={root}", f"data.val_items={VAL_ITEMS}", "data.image_size=32", "data.num_train=16",
            "data.num_val=8", "data.num_test=8", "data.batch_size=8", "debug=fast", "logger=csv"]
    cfg = composed(["experiment=fashion_canvas", *tiny], tmp_path / "run")
    assert cfg.data._target_ == "camlab.data.CanvasDataModule" and cfg.backbone.name == "tiny_cnn"
    metrics = train(cfg)
    for key in ("val/acc", "val/loc/gt_known_loc", "val/loc/MaxBoxAccV2", "val/loc/PxAP", "test/loc/MaxBoxAccV2"):
        assert key in metrics and np.isfinite(metrics[key]), key
    assert (tmp_path / "run" / "cams" / "overlay_latest.jpg").is_file()

    missing = composed(["experiment=fashion_canvas", f"data.root={tmp_path / 'absent'}", "debug=fast"], tmp_path / "r2")
    with pytest.raises(DataFilesNotFound, match="absent' does not exist"):
        train(missing)


def test_mnist_canvas_config_is_fashion_canvas_with_digits(tmp_path):
    from hydra.utils import instantiate

    cfg = composed(["data=mnist_canvas", "data.root=/somewhere/mnist"], tmp_path)
    dm = instantiate(cfg.data, _convert_="partial")  # builds nothing: the splits are factories
    assert dm.root == "/somewhere/mnist" and dm.num_classes == 10 and dm.class_names[7] == "7"
    assert cfg.data.dataset == "mnist" and cfg.data.hflip is False
    assert cfg.model.num_classes == 10
