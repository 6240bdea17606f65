"""The COCO and CSV examples of the Datasets page (docs/datasets.md) load as written."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from PIL import Image

from camlab.data.custom import COCODataset, CSVDataset

PAGE = Path(__file__).resolve().parents[1] / "docs" / "datasets.md"
KW = {"image_size": 32, "resize_size": 40}


def example(lang: str) -> str:
    text = PAGE.read_text(encoding="utf-8")
    section = text.split("## Datasets on disk", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(rf"```{lang}\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, f"expected one ```{lang} block in the section"
    return blocks[0]


def write_image(path: Path, size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), 90, np.uint8)).save(path, format="JPEG")


def test_readme_coco_example_loads(tmp_path):
    data = json.loads(example("json"))
    for img in data["images"]:
        write_image(tmp_path / img["file_name"], (img["width"], img["height"]))
        if "mask_file" in img:
            mask = np.zeros((img["height"], img["width"]), np.uint8)
            mask[100:500, 60:360] = 255
            (tmp_path / img["mask_file"]).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(tmp_path / img["mask_file"])
    (tmp_path / "annotations.json").write_text(json.dumps(data))
    parts = {s: COCODataset(str(tmp_path), "annotations.json", s, num_classes=2, **KW) for s in ("train", "val", "test")}
    assert parts["train"].class_names == ["cat", "dog"]
    assert [(Path(r.path).name, r.label, len(r.boxes)) for s in ("train", "val", "test") for r in parts[s].records] == [
        ("cat1.jpg", 0, 2), ("dog1.jpg", 1, 1), ("cat2.jpg", 0, 1)]
    assert not parts["train"].use_masks and parts["val"].use_masks and parts["test"].use_masks
    sample = parts["test"][0]
    assert sample["mask"].sum() > 0 and sample["boxes"].shape == (1, 4)


def test_readme_csv_example_loads(tmp_path):
    text = example("csv")
    (tmp_path / "labels.csv").write_text(text)
    for line in text.splitlines()[1:]:
        write_image(tmp_path / line.split(",")[0], (640, 480))
    parts = {s: CSVDataset(str(tmp_path), "labels.csv", s, num_classes=3, **KW) for s in ("train", "val", "test")}
    assert parts["train"].class_names == ["bird", "cat", "dog"]
    got = {s: sorted((Path(r.path).name, r.label, len(r.boxes)) for r in parts[s].records) for s in parts}
    assert got == {
        "train": [("bird2.jpg", 0, 1), ("cat1.jpg", 1, 2), ("dog1.jpg", 2, 1), ("dog3.jpg", 2, 0)],
        "val": [("cat2.jpg", 1, 1), ("dog2.jpg", 2, 1)],
        "test": [("bird1.jpg", 0, 1), ("cat3.jpg", 1, 1)],
    }
