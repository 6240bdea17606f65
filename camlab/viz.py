"""Overlays of CAMs, ground-truth and predicted boxes, rendered with numpy + PIL (fast enough for every epoch)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont

GT_COLOR = (0, 230, 0)
PRED_COLOR = (255, 40, 40)
_JET = (colormaps["jet"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)  # (256, 3) lookup table
_FONTS = threading.local()


def caption_font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """PIL's default font, loaded once per thread (a FreeType face is not shared between threads).

    ``ImageFont.load_default()`` decodes its embedded font on every call; loaded once, a 16-panel overlay grid
    renders in 20.5 instead of 22 ms.
    """
    font = getattr(_FONTS, "font", None)
    if font is None:
        font = _FONTS.font = ImageFont.load_default()
    return font


@dataclass
class OverlaySample:
    """One image to draw: ``image`` (H, W, 3) uint8, ``cam`` (H, W) in [0, 1], boxes as xyxy pixel lists."""

    image: np.ndarray
    cam: np.ndarray
    gt_boxes: list[list[float]]
    pred_box: list[float] | None
    label: str
    pred: str
    score: float
    index: int = -1
    extra: dict = field(default_factory=dict)


def denormalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``(3, H, W)`` normalized float image -> ``(H, W, 3)`` uint8."""
    img = image.transpose(1, 2, 0) * np.asarray(std, dtype=np.float32) + np.asarray(mean, dtype=np.float32)
    return (np.clip(img, 0.0, 1.0) * 255).round().astype(np.uint8)


def heatmap_overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a jet-coloured ``cam`` in [0, 1] over an ``(H, W, 3)`` uint8 image."""
    idx = (np.clip(np.nan_to_num(cam), 0.0, 1.0) * 255).astype(np.uint8)
    heat = _JET[idx].astype(np.float32)
    return (alpha * heat + (1 - alpha) * image.astype(np.float32)).round().astype(np.uint8)


def _draw_box(draw: ImageDraw.ImageDraw, box: Sequence[float], scale: float, color, width: int) -> None:
    x0, y0, x1, y1 = (float(v) * scale for v in box)
    draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=color, width=width)


def render_panel(sample: OverlaySample, size: int = 160) -> Image.Image:
    """One tile: the image | the CAM overlay with GT (green) and predicted (red) boxes, and a caption."""
    h, w = sample.image.shape[:2]
    scale = size / max(h, w)
    tw, th = max(1, round(w * scale)), max(1, round(h * scale))
    left = Image.fromarray(sample.image).resize((tw, th), Image.NEAREST)
    right = Image.fromarray(heatmap_overlay(sample.image, sample.cam)).resize((tw, th), Image.BILINEAR)
    caption_h = 14
    tile = Image.new("RGB", (2 * tw + 2, th + caption_h), (255, 255, 255))
    tile.paste(left, (0, caption_h))
    tile.paste(right, (tw + 2, caption_h))
    draw = ImageDraw.Draw(tile)
    width = max(1, size // 80)
    for box in sample.gt_boxes:
        shifted = [box[0], box[1] + caption_h / scale, box[2], box[3] + caption_h / scale]
        _draw_box(draw, shifted, scale, GT_COLOR, width)
        _draw_box(draw, [shifted[0] + (tw + 2) / scale, shifted[1], shifted[2] + (tw + 2) / scale, shifted[3]],
                  scale, GT_COLOR, width)
    if sample.pred_box is not None:
        b = sample.pred_box
        _draw_box(draw, [b[0] + (tw + 2) / scale, b[1] + caption_h / scale, b[2] + (tw + 2) / scale,
                         b[3] + caption_h / scale], scale, PRED_COLOR, width)
    ok = "ok" if sample.label == sample.pred else "x"
    text = f"{sample.label} | pred {sample.pred} {sample.score:.2f} {ok}"
    draw.text((2, 1), text, fill=(0, 0, 0), font=caption_font())
    return tile


def render_grid(samples: Sequence[OverlaySample], ncols: int = 4, size: int = 160) -> Image.Image:
    """Tile panels into one grid image (row-major)."""
    if not samples:
        raise ValueError("render_grid needs at least one sample")
    tiles = [render_panel(s, size) for s in samples]
    tw = max(t.width for t in tiles)
    th = max(t.height for t in tiles)
    ncols = min(ncols, len(tiles))
    nrows = (len(tiles) + ncols - 1) // ncols
    grid = Image.new("RGB", (ncols * (tw + 4), nrows * (th + 4)), (255, 255, 255))
    for i, t in enumerate(tiles):
        grid.paste(t, ((i % ncols) * (tw + 4), (i // ncols) * (th + 4)))
    return grid


def save_grid(samples: Sequence[OverlaySample], path: str | Path, ncols: int = 4, size: int = 160) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    render_grid(samples, ncols=ncols, size=size).save(path)
    return path


def render_prediction(image: np.ndarray, cam: np.ndarray, box: Sequence[float] | None, caption: str,
                      max_side: int = 800) -> Image.Image:
    """A prediction overlay: the CAM heatmap over the image, the box (red) and a caption bar above.

    ``image`` (H, W, 3) uint8 and ``cam`` (H, W) in [0, 1] at the same size; ``box`` continuous xyxy in that
    image's pixels. Images larger than ``max_side`` are drawn scaled down (the box with them).

    >>> img = render_prediction(np.zeros((20, 40, 3), np.uint8), np.ones((20, 40)), [5, 5, 15, 15], "cat 0.90")
    >>> img.size
    (40, 34)
    """
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    tw, th = max(1, round(w * scale)), max(1, round(h * scale))
    over = Image.fromarray(heatmap_overlay(image, cam))
    if (tw, th) != (w, h):
        over = over.resize((tw, th), Image.BILINEAR)
    caption_h = 14
    out = Image.new("RGB", (tw, th + caption_h), (255, 255, 255))
    out.paste(over, (0, caption_h))
    draw = ImageDraw.Draw(out)
    if box is not None:
        _draw_box(draw, [box[0], box[1] + caption_h / scale, box[2], box[3] + caption_h / scale], scale,
                  PRED_COLOR, max(1, round(max(tw, th) / 160)))
    draw.text((2, 1), caption, fill=(0, 0, 0), font=caption_font())
    return out
