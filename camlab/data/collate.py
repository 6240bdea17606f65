"""The camlab batch contract: ``collate_wsol`` turns sample dicts into one batch dict.

batch = {
    "image":     B×3×H×W float32, normalized
    "label":     B long
    "boxes":     B×G×4 float32 xyxy (network-input pixels, continuous convention), zero-padded to the
                 largest G in the batch
    "num_boxes": B long, the real boxes of each sample (boxes[b, :num_boxes[b]])
    "mask":      B×H×W uint8 (0 background, 1 foreground, 255 ignore), only when every sample has one
    "index":     B long, the dataset index (unique within a split; DDP de-duplication)
}
Any other key is stacked when all its values are same-shaped tensors, else kept as a list.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

REQUIRED_KEYS = ("image", "label", "boxes", "index")


def collate_wsol(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Collate WSOL sample dicts into the batch contract above.

    >>> a = {"image": torch.zeros(3, 4, 4), "label": 1, "boxes": torch.tensor([[0., 0., 2., 2.]]), "index": 7}
    >>> b = {"image": torch.ones(3, 4, 4), "label": 0, "boxes": torch.zeros(2, 4), "index": 3}
    >>> batch = collate_wsol([a, b])
    >>> batch["boxes"].shape, batch["num_boxes"].tolist(), batch["index"].tolist()
    (torch.Size([2, 2, 4]), [1, 2], [7, 3])
    """
    if len(samples) == 0:
        raise ValueError("collate_wsol needs at least one sample")
    for key in REQUIRED_KEYS:
        if any(key not in s for s in samples):
            raise KeyError(f"every sample needs {key!r}; got keys {sorted(samples[0])}")

    images = [torch.as_tensor(s["image"]) for s in samples]
    if len({tuple(im.shape) for im in images}) != 1:
        raise ValueError(
            f"images in a batch must share one shape (resize in the dataset), got {sorted({tuple(i.shape) for i in images})}"
        )
    batch: dict[str, Any] = {"image": torch.stack(images).float()}  # B×3×H×W
    batch["label"] = torch.as_tensor([int(s["label"]) for s in samples], dtype=torch.long)  # B

    boxes = [torch.as_tensor(s["boxes"], dtype=torch.float32).reshape(-1, 4) for s in samples]
    num_boxes = torch.tensor([len(b) for b in boxes], dtype=torch.long)  # B
    padded = torch.zeros(len(samples), max(int(num_boxes.max()), 1), 4)  # B×G×4
    for i, b in enumerate(boxes):
        padded[i, : len(b)] = b
    batch["boxes"], batch["num_boxes"] = padded, num_boxes

    has_mask = ["mask" in s and s["mask"] is not None for s in samples]
    if all(has_mask):
        batch["mask"] = torch.stack([torch.as_tensor(s["mask"]).to(torch.uint8) for s in samples])  # B×H×W
    elif any(has_mask):
        raise ValueError("either every sample of a batch has a mask or none has")
    batch["index"] = torch.as_tensor([int(s["index"]) for s in samples], dtype=torch.long)  # B

    for key in samples[0]:
        if key in batch or key == "mask":
            continue
        values = [s.get(key) for s in samples]
        if all(isinstance(v, torch.Tensor) for v in values) and len({v.shape for v in values}) == 1:
            batch[key] = torch.stack(values)
        else:
            batch[key] = values
    return batch
