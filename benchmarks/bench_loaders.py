"""Images/s of each on-disk dataset loader at 224 px, num_workers 0 vs 2, measured in one run.

Writes a tree per format (tests/_dataset_fixtures.py writers) of CUB-like images: random sizes 300-500 px a
side, textured (smooth colour noise + pixel noise, so JPEG decoding costs what a photo costs), saved as JPEG
quality 90, 1-2 boxes each (OpenImages / CUB / COCO: masks too). Each loader (train split: resize 256 ->
random crop 224 -> flip; test split: resize 224 + masks) runs one warm-up epoch with persistent workers, then
timed epochs; the order of the configurations is reversed every other round; medians are reported.

    python benchmarks/bench_loaders.py --images 128 --rounds 3
"""
from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import _dataset_fixtures as fx  # noqa: E402

from camlab.data.cub import CUBDataset  # noqa: E402
from camlab.data.custom import COCODataset, CSVDataset  # noqa: E402
from camlab.data.ilsvrc import ILSVRCDataset  # noqa: E402
from camlab.data.records import collate_skipping  # noqa: E402
from camlab.data.wsoleval import WSOLEvalDataset  # noqa: E402

FORMATS = ["cub", "wsoleval_cub", "wsoleval_ilsvrc", "wsoleval_openimages", "ilsvrc", "coco", "csv"]


def specs(n: int, rng: np.random.Generator) -> list[fx.Spec]:
    out = []
    for split in ("train", "test"):
        for i in range(n):
            W, H = (int(v) for v in rng.integers(300, 501, 2))
            patches = []
            for _ in range(int(rng.integers(1, 3))):
                w, h = int(rng.integers(W // 5, W // 2)), int(rng.integers(H // 5, H // 2))
                x0, y0 = int(rng.integers(0, W - w)), int(rng.integers(0, H - h))
                patches.append((x0, y0, x0 + w, y0 + h))
            out.append(fx.Spec(f"{split[:2]}{i:04d}", (W, H), i % 3, patches, split))
    return out


def photo_like(path: Path, rng: np.random.Generator) -> None:
    """Re-encode an image file as a textured JPEG (PIL reads by content, whatever the extension)."""
    with Image.open(path) as im:
        base = np.asarray(im.convert("RGB"), np.float32)
    H, W = base.shape[:2]
    smooth = np.asarray(Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).resize((W, H), Image.BILINEAR),
                        np.float32)
    img = 0.5 * base + 0.4 * smooth + rng.normal(0, 12, (H, W, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
    path.write_bytes(buf.getvalue())


def build(fmt: str, root: Path, split: str, sp: list[fx.Spec]):
    kw = {"image_size": 224, "resize_size": 256, "num_classes": 3}
    if fmt == "cub":
        if not root.exists():
            fx.make_cub(root, specs=sp)
        return CUBDataset(str(root), split, **kw)
    if fmt.startswith("wsoleval_"):
        name = {"cub": "CUB", "ilsvrc": "ILSVRC", "openimages": "OpenImages"}[fmt.split("_")[1]]
        if not root.exists():
            fx.make_wsoleval(root, name, specs=sp)
        return WSOLEvalDataset(str(root / "dataset" / name), str(root / "metadata"), name, split, **kw)
    if fmt == "ilsvrc":
        if not root.exists():
            fx.make_ilsvrc(root, specs=sp)
        return ILSVRCDataset(str(root), split, **kw)
    if fmt == "coco":
        if not root.exists():
            fx.make_coco(root, specs=sp)
        return COCODataset(str(root), "annotations.json", split, **kw)
    if not root.exists():
        fx.make_csv(root, specs=sp)
    return CSVDataset(str(root), "labels.csv", split, **kw)


def epoch(loader: DataLoader) -> int:
    return sum(len(batch["label"]) for batch in loader)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=128, help="images per split")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    sp = specs(args.images, rng)
    with tempfile.TemporaryDirectory() as tmp:
        loaders = {}
        for fmt in FORMATS:
            for split in ("train", "test"):
                ds = build(fmt, Path(tmp) / fmt, split, sp)
                if split == "train":
                    for r in build(fmt, Path(tmp) / fmt, "train", sp).records + build(fmt, Path(tmp) / fmt, "test", sp).records:
                        photo_like(Path(r.path), rng)
                for workers in (0, 2):
                    loaders[(fmt, split, workers)] = DataLoader(
                        ds, batch_size=args.batch_size, num_workers=workers, persistent_workers=workers > 0,
                        collate_fn=collate_skipping)
        for loader in loaders.values():  # warm-up: worker start, page cache
            epoch(loader)
        rates: dict[tuple, list[float]] = {k: [] for k in loaders}
        keys = list(loaders)
        for rnd in range(args.rounds):
            for key in keys if rnd % 2 == 0 else keys[::-1]:
                t0 = time.perf_counter()
                n = epoch(loaders[key])
                rates[key].append(n / (time.perf_counter() - t0))
        print(f"images/s at 224 px, batch {args.batch_size}, {args.images} images per split, median of {args.rounds} rounds")
        print("| loader | train w=0 | train w=2 | test w=0 | test w=2 |")
        print("|---|---:|---:|---:|---:|")
        for fmt in FORMATS:
            cells = [f"{statistics.median(rates[(fmt, s, w)]):.0f}" for s in ("train", "test") for w in (0, 2)]
            print(f"| {fmt} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
