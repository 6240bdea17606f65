"""Drawing and encoding for the callback and the CLIs.

* CAM overlays (the image, the jet heatmap, ground-truth and predicted boxes, a caption), tiled into grids:
  numpy + PIL, cheap enough to run every epoch;
* their JPEG / PNG bytes, and ``wandb.Image`` objects with the boxes as W&B box annotations;
* the per-threshold curve table of the localization metrics: a CSV and a two-panel matplotlib plot.

Every file is written atomically (:mod:`camlab.atomic`): a failed write leaves the previous file, never a partial one.

Everything here may run on a background thread: no pyplot (its figure registry is global state), one PIL
font per thread, and matplotlib's own font cache is keyed by thread.
"""

from __future__ import annotations

import csv
import io
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont

from camlab.atomic import atomic_write

GT_COLOR = (0, 230, 0)
PRED_COLOR = (255, 40, 40)
_JET = (colormaps["jet"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)  # (256, 3) lookup table
_FONTS = threading.local()


def caption_font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """PIL's default font, loaded once per thread (a FreeType face is not shared between threads).

    ``ImageFont.load_default()`` decodes its embedded font on every call, and every panel of a grid draws a caption.
    """
    font = getattr(_FONTS, "font", None)
    if font is None:
        font = _FONTS.font = ImageFont.load_default()
    return font


# ---- overlays -----------------------------------------------------------------------------------------------------
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
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    grid = render_grid(samples, ncols=ncols, size=size)
    with atomic_write(path, "wb") as f:
        grid.save(f, format=fmt)
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


# ---- encoding -----------------------------------------------------------------------------------------------------
def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """(H, W, 3) uint8 -> JPEG bytes (PIL, ``quality`` 90, 4:4:4 chroma so the thin box lines keep their colour).

    The overlay grid's default format: far quicker to encode than PNG and smaller (benchmarks/METRICS_NOTES.md).

    >>> a = np.full((16, 16, 3), 200, dtype=np.uint8)
    >>> int(np.abs(np.asarray(Image.open(io.BytesIO(encode_jpeg(a)))).astype(int) - 200).max()) <= 2
    True
    """
    return _encode(rgb, "JPEG", "encode_jpeg", quality=int(quality), subsampling=0)


def encode_png(rgb: np.ndarray, level: int = 1) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes (PIL, zlib ``level`` 1: the fast end; the encoder releases the GIL).

    >>> a = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    >>> bool((np.asarray(Image.open(io.BytesIO(encode_png(a)))) == a).all())
    True
    """
    return _encode(rgb, "PNG", "encode_png", compress_level=int(level))


def _encode(rgb: np.ndarray, fmt: str, name: str, **options) -> bytes:
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"{name} needs an (H, W, 3) uint8 array, got shape {rgb.shape}")
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format=fmt, **options)
    return buffer.getvalue()


# ---- Weights & Biases ---------------------------------------------------------------------------------------------
def wandb_image(sample: OverlaySample):
    """A ``wandb.Image`` of the CAM overlay with ground-truth and predicted boxes (pixel domain)."""
    import wandb

    labels = {0: "ground truth", 1: "prediction"}

    def box(b, caption, cls_id):
        return {"position": {"minX": float(b[0]), "minY": float(b[1]), "maxX": float(b[2]), "maxY": float(b[3])},
                "domain": "pixel", "class_id": cls_id, "box_caption": caption}

    boxes = {"ground_truth": {"box_data": [box(b, sample.label, 0) for b in sample.gt_boxes], "class_labels": labels}}
    if sample.pred_box is not None:
        boxes["predictions"] = {"box_data": [box(sample.pred_box, f"{sample.pred} {sample.score:.2f}", 1)],
                                "class_labels": labels}
    return wandb.Image(heatmap_overlay(sample.image, sample.cam), boxes=boxes,
                       caption=f"#{sample.index} {sample.label} -> {sample.pred} ({sample.score:.2f})")


# ---- per-threshold curves -----------------------------------------------------------------------------------------
def write_curves_csv(curves: dict[str, list[float]], path: str | Path) -> Path:
    """The curve table (one column per key, one row per CAM threshold) as CSV, 6 significant digits.

    >>> import tempfile
    >>> p = write_curves_csv({"threshold": [0.0, 0.5], "PIoU": [12.5, 1 / 3]}, Path(tempfile.mkdtemp(), "c.csv"))
    >>> print(p.read_text().replace("\\r", ""), end="")
    threshold,PIoU
    0,12.5
    0.5,0.333333
    """
    path = Path(path)
    cols = list(curves)
    with atomic_write(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for row in zip(*(curves[c] for c in cols)):
            w.writerow([f"{v:.6g}" for v in row])
    return path


CURVE_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
PR_COLOR = "tab:purple"
PLOT_SIZE = (720, 280)  # pixels of the curve plot
_BOX_KEY = re.compile(r"(MaxBoxAcc\w*)/IoU(\d+)")


def plot_curves(curves: dict[str, list[float]], path: str | Path, title: str = "") -> Path:
    """Plot a curve table (a ``threshold`` column, one column per curve) as a ``PLOT_SIZE`` PNG with two panels.

    Left: box accuracy (%) against the CAM threshold, one colour per IoU threshold; MaxBoxAccV2 solid, MaxBoxAcc
    (largest contour) dashed, and PIoU (%) dotted black when present. Right: the pixel precision-recall curve of
    PxAP; without ``PxAP/precision`` and ``PxAP/recall`` (no masks) the right panel is blank but for a note, so
    the file has the same size either way.

    matplotlib's object-oriented API on an Agg canvas, not pyplot: safe off the main thread, no global figure.

    >>> import tempfile
    >>> t = [i / 10 for i in range(10)]
    >>> p = plot_curves({"threshold": t, "MaxBoxAccV2/IoU50": [50.0] * 10}, Path(tempfile.mkdtemp(), "c.png"))
    >>> Image.open(p).size == PLOT_SIZE
    True
    """
    fig, bottom, top = _figure(title)
    # the legend gets its own column right of the left panel: inside, it would hide part of some curve
    left = fig.add_axes((0.07, bottom, 0.40, top - bottom))
    right = fig.add_axes((0.705, bottom, 0.28, top - bottom))

    t = curves.get("threshold", [])
    ious: dict[str, str] = {}  # IoU -> colour, in the order the columns come
    for key in curves:
        if not key.startswith("MaxBoxAcc"):
            continue
        m = _BOX_KEY.fullmatch(key)
        name, iou = (m.group(1), m.group(2)) if m else (key, key)
        color = ious.setdefault(iou, CURVE_COLORS[len(ious) % len(CURVE_COLORS)])
        label = key if not m else f"IoU {iou}" if name == "MaxBoxAccV2" else f"IoU {iou} ({name})"
        left.plot(t, curves[key], color=color, lw=1.6, ls="-" if name == "MaxBoxAccV2" else "--", label=label)
    if "PIoU" in curves:
        left.plot(t, curves["PIoU"], color="black", lw=1.2, ls=":", label="PIoU")
    _style(left, "CAM threshold", "box accuracy / PIoU (%)" if "PIoU" in curves else "box accuracy (%)",
           "box accuracy per CAM threshold", (0.0, 100.0))
    if left.lines:
        left.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False, handlelength=2.2,
                    borderaxespad=0.0)
    else:
        left.text(0.5, 0.5, "no box or PIoU curves", ha="center", va="center", fontsize=8, transform=left.transAxes)

    if "PxAP/precision" in curves and "PxAP/recall" in curves:
        right.plot(curves["PxAP/recall"], curves["PxAP/precision"], color=PR_COLOR, lw=1.6)
        _style(right, "pixel recall", "pixel precision", "PxAP precision-recall", (0.0, 1.0))
    else:
        right.set_axis_off()
        right.text(0.5, 0.5, "no pixel masks:\nno precision-recall curve", ha="center", va="center", fontsize=8,
                   color="0.4", transform=right.transAxes)
    path = Path(path)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", pil_kwargs={"compress_level": 1})
    return path


def _figure(title: str):
    """A ``PLOT_SIZE`` matplotlib figure on an Agg canvas (no pyplot: safe off the main thread), its title set;
    with the bottom and top of the panels' area."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dpi = 100
    fig = Figure(figsize=(PLOT_SIZE[0] / dpi, PLOT_SIZE[1] / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig, 0.165, 0.85 if title else 0.9


def _style(ax, xlabel: str, ylabel: str, title: str, ylim: tuple[float, float]) -> None:
    pad = 0.02 * (ylim[1] - ylim[0])  # a line along 0 or the top stays visible
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(ylim[0] - pad, ylim[1] + pad)
    ax.set_xlabel(xlabel, fontsize=8, labelpad=2)
    ax.set_ylabel(ylabel, fontsize=8, labelpad=2)
    ax.set_title(title, fontsize=8.5, pad=3, y=1.0)  # a fixed y: no tight-bbox pass over the tick labels
    ax.tick_params(labelsize=7, length=3, pad=2)
    ax.grid(True, color="0.9", lw=0.6)


def plot_faith_curves(tables: dict[str, dict[str, list[float]]], path: str | Path, title: str = "") -> Path:
    """Plot the faithfulness curves of :class:`camlab.faith.FaithReport` (``insertion_deletion``: score against the
    fraction of pixels inserted / deleted; ``road``: score against the percent of pixels imputed, most / least
    relevant first) as a ``PLOT_SIZE`` PNG with two panels; a missing table leaves its panel blank but for a note.

    >>> import tempfile
    >>> p = plot_faith_curves({"road": {"percent": [10, 50], "road_morf": [40, 10], "road_lerf": [80, 70]}},
    ...                       Path(tempfile.mkdtemp(), "f.png"))
    >>> Image.open(p).size == PLOT_SIZE
    True
    """
    fig, bottom, top = _figure(title)
    panels = (fig.add_axes((0.07, bottom, 0.38, top - bottom)), fig.add_axes((0.57, bottom, 0.38, top - bottom)))
    specs = (("insertion_deletion", "fraction", (("insertion", "insertion"), ("deletion", "deletion")),
              "fraction of pixels", "insertion / deletion"),
             ("road", "percent", (("road_morf", "MoRF"), ("road_lerf", "LeRF")), "pixels imputed (%)", "ROAD"))
    for ax, (name, x_key, lines, xlabel, heading) in zip(panels, specs):
        table = tables.get(name)
        if not table:
            ax.set_axis_off()
            ax.text(0.5, 0.5, f"no {heading} curves", ha="center", va="center", fontsize=8, color="0.4",
                    transform=ax.transAxes)
            continue
        x = [v / 100 for v in table[x_key]] if x_key == "percent" else table[x_key]
        for (key, label), color in zip(lines, CURVE_COLORS):
            ax.plot(x, table[key], color=color, lw=1.6, marker="." if len(x) < 12 else None, label=label)
        _style(ax, xlabel, "target score (%)", heading, (0.0, 100.0))
        if x_key == "percent":
            ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0], ["0", "25", "50", "75", "100"])
        ax.legend(loc="best", fontsize=7, frameon=False)
    path = Path(path)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", pil_kwargs={"compress_level": 1})
    return path
