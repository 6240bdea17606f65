"""Box- and mask-aware image transforms of the WSOL protocol (torchvision.transforms.v2).

train: Resize((resize_size, resize_size)) -> RandomCrop(image_size) -> RandomHorizontalFlip -> normalize
eval:  Resize((image_size, image_size)) -> normalize

as in clovaai/wsolevaluation (the aspect ratio is not kept: every image becomes a square). Boxes travel as
``tv_tensors.BoundingBoxes`` and masks as ``tv_tensors.Mask`` through the same v2 pipeline as the image, so
they follow every resize, crop and flip.

The eval path is exact to wsolevaluation: images are resized by PIL (what ``transforms.Resize`` does on a
PIL image), boxes are scaled in float64 (``x * S / W``; torchvision multiplies by a float32 ratio, which
puts some exact integers one ulp low and ``int()`` one pixel off), and masks are rendered directly at
``S × S`` with OpenCV nearest-neighbour resizing of each instance mask (wsolevaluation's ``get_mask``).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from camlab.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

MaskRenderer = Callable[[int, int], np.ndarray]  # (width, height) -> H×W uint8 (0, 1, 255)


def scale_boxes(boxes: np.ndarray, src_size: tuple[int, int], dst_size: tuple[int, int]) -> np.ndarray:
    """Scale xyxy boxes from an image of ``src_size`` (W, H) to ``dst_size`` (W, H), in float64.

    >>> scale_boxes(np.array([[125.0, 0.0, 250.0, 375.0]]), (500, 375), (224, 224))
    array([[ 56.,   0., 112., 224.]])
    """
    (sw, sh), (dw, dh) = src_size, dst_size
    ratio = np.array([dw / sw, dh / sh, dw / sw, dh / sh], dtype=np.float64)
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * ratio  # G×4


class WSOLTransform:
    """The WSOL train or eval pipeline on one (PIL image, boxes, mask) triple.

    Args:
        image_size: network input side S (the crop size).
        resize_size: side of the square resize before the random crop (train only); >= image_size.
        train: the train pipeline (resize + random crop + flip) instead of the eval one (resize to S).
        hflip: random horizontal flips in the train pipeline.
        mean, std: per-channel normalization (default ImageNet's).

    ``__call__(image, boxes, render_mask)`` takes a PIL image, G×4 xyxy boxes in its pixels and an optional
    ``render_mask(width, height)``; returns ``(image 3×S×S float32 normalized, boxes G×4 float32 in input
    pixels, mask S×S uint8 or None)``.
    """

    def __init__(
        self,
        image_size: int = 224,
        resize_size: int | None = 256,
        train: bool = False,
        hflip: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        if not isinstance(image_size, int) or image_size < 1:
            raise ConfigError(f"image_size must be an int >= 1, got {image_size!r}", settings=["image_size"])
        resize_size = image_size if resize_size is None else resize_size
        if not isinstance(resize_size, int) or resize_size < image_size:
            raise ConfigError(f"resize_size must be an int >= image_size={image_size}, got {resize_size!r}",
                              settings=["resize_size"])
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 entries with std > 0, got mean={mean}, std={std}")
        self.image_size, self.resize_size, self.train, self.hflip = image_size, resize_size, train, hflip
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self._mean_np, self._std_np = np.float32(self.mean), np.float32(self.std)
        steps: list[v2.Transform] = [v2.Resize((resize_size, resize_size))]
        steps.append(v2.RandomCrop(image_size))
        if hflip:
            steps.append(v2.RandomHorizontalFlip())
        self._train_pipeline = v2.Compose(steps)

    def __call__(
        self, image: Image.Image, boxes: np.ndarray, render_mask: MaskRenderer | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        # One torch thread for these small ops: on a busy machine a mask resize or flip split over several
        # threads in the main process (num_workers=0) waits for them and takes many times longer than on one
        # (DataLoader workers already run single-threaded; the model does not run while a sample is loaded, so
        # this costs it nothing).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._apply(image, boxes, render_mask)
        finally:
            torch.set_num_threads(threads)

    def _apply(
        self, image: Image.Image, boxes: np.ndarray, render_mask: MaskRenderer | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        S = self.image_size
        W, H = image.size
        boxes = np.array(boxes, dtype=np.float64).reshape(-1, 4)  # G×4, source pixels (a writable copy)
        if self.train:
            sample: dict = {
                "image": image,
                "boxes": tv_tensors.BoundingBoxes(torch.from_numpy(boxes).float(), format="XYXY", canvas_size=(H, W)),
            }
            if render_mask is not None:
                sample["mask"] = tv_tensors.Mask(torch.from_numpy(render_mask(W, H)))  # H×W
            out = self._train_pipeline(sample)
            image_out, boxes_out = out["image"], out["boxes"].as_subclass(torch.Tensor).float()
            mask_out = out["mask"].as_subclass(torch.Tensor) if render_mask is not None else None
        else:
            image_out = TF.resize(image, [S, S])  # PIL bilinear (antialiased), as wsolevaluation
            boxes_out = torch.from_numpy(scale_boxes(boxes, (W, H), (S, S))).float()
            mask_out = torch.from_numpy(render_mask(S, S)) if render_mask is not None else None
        return self._normalize(image_out), boxes_out.reshape(-1, 4), mask_out

    def _normalize(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        """PIL / uint8 image -> 3×S×S float32 ``(x / 255 - mean) / std``.

        In NumPy, the same operations in the same order as torchvision's ``to_dtype`` + ``normalize``.
        """
        if isinstance(image, torch.Tensor):
            arr = image.permute(1, 2, 0).numpy()  # S×S×3 uint8
        else:
            arr = np.asarray(image)
        x = arr.astype(np.float32) / np.float32(255)  # S×S×3 in [0, 1]
        x = (x - self._mean_np) / self._std_np
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))  # 3×S×S

    def __repr__(self) -> str:
        kind = f"train, resize {self.resize_size} -> random crop {self.image_size}" if self.train else (
            f"eval, resize {self.image_size}")
        return f"WSOLTransform({kind}, hflip={self.hflip and self.train})"
