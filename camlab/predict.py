"""Prediction CLI: ``camlab-predict MODEL IMAGE_OR_DIR [...] --out DIR`` (or ``python -m camlab.predict``).

MODEL is a camlab-train checkpoint, or with ``--torchvision ARCH`` a torchvision classifier's state dict (see
:mod:`camlab.models.pretrained`). Each image is read with PIL, converted to RGB, resized to the model's input
size and normalized as in training; for each of its top-k classes the CAM (min-max normalized at the input
size) is thresholded at ``--threshold`` x its max and the largest connected region's box is reported.

Outputs in ``--out``: ``<name>_cam.png`` per image (the top-1 class's CAM over the original image, its box,
class and score) and ``predictions.json``. Boxes in the JSON are in ORIGINAL image pixels, continuous
``[x0, y0, x1, y1]`` (x1, y1 are the right/bottom edges: a box covering pixel columns 3..7 has x0=3, x1=8),
or null when the CAM has no region above the threshold.

Images are read as stored (16-bit and float images scaled, EXIF orientation not applied: see
:func:`camlab.data.images.read_rgb`), or with ``--exif-transpose`` turned upright as viewers show them (as
``data.exif_transpose=true`` in training; boxes then in the upright image's pixels). Hidden files of a folder (``.name``, macOS ``._name.jpg``) are skipped,
with a note. An unreadable image does not stop the others: every readable one is written, the unreadable ones
are listed under ``"unreadable"`` in ``predictions.json``, and the command then exits with an error naming the
first. URLs are refused (local files only).
"""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import re
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from camlab.errors import PredictError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def refuse_url(item: str, what: str = "input") -> None:
    """A PredictError for a URL (``https://``, ``s3://`` ...): camlab-predict reads local files only."""
    if _URL.match(str(item)):
        raise PredictError(f"{what} {item} is a URL: camlab-predict reads local files only; download it first "
                           f"(e.g. curl -LO '{item}') and pass the file")


def list_images(inputs: Sequence[str]) -> list[Path]:
    """Files given, plus the image files (by suffix, sorted, not recursive) of directories given.

    Hidden files of a directory (``.name``; macOS AppleDouble ``._name.jpg`` metadata files) are skipped, with a
    note on stderr naming the first; a file given by name is always used."""
    paths: list[Path] = []
    for item in inputs:
        refuse_url(item)
        p = Path(item)
        if p.is_dir():
            # a broken link is listed too: reported as unreadable, not skipped without a word
            files = sorted(f for f in p.iterdir() if (f.is_file() or f.is_symlink()) and f.suffix.lower() in IMAGE_SUFFIXES)
            hidden = [f for f in files if f.name.startswith(".")]
            found = [f for f in files if not f.name.startswith(".")]
            if hidden:
                print(f"camlab: note: skipped {len(hidden)} hidden file(s) in {p} (names starting with '.', e.g. "
                      f"macOS ._ files), first: {hidden[0].name}", file=sys.stderr, flush=True)
            if not found:
                raise PredictError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in directory {p}")
            paths += found
        elif p.is_file():
            paths.append(p)
        else:
            raise PredictError(f"input {p} does not exist")
    return paths


def read_image(path: Path) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB (as training reads it: :func:`camlab.data.images.read_rgb`), or a
    :class:`PredictError` naming the file."""
    return read_image_oriented(path)[0]


def read_image_oriented(path: Path, exif_transpose: bool = False) -> tuple[np.ndarray, int]:
    """:func:`read_image` and the file's EXIF orientation (1: upright; applied only with ``exif_transpose``)."""
    from camlab.data.images import read_rgb

    try:
        image, orientation = read_rgb(path, exif_transpose)
        return np.asarray(image), orientation
    except Exception as err:  # noqa: BLE001 - PIL raises several types for unreadable / truncated files
        text = " ".join(str(err).split()) or type(err).__name__
        raise PredictError(text if str(path) in text else f"cannot read image {path}: {text}") from None


def _write_atomic(path: Path, write: Any) -> None:
    """``write(file)`` into a temporary file renamed over ``path`` (:mod:`camlab.atomic`): a full disk leaves no
    partial file; a PredictError names it."""
    from camlab.atomic import atomic_write

    try:
        with atomic_write(path, "wb") as f:
            write(f)
    except OSError as err:
        raise PredictError(f"cannot write {path}: {err.strerror or err}; free disk space or choose another --out "
                           f"directory") from None


def to_input(image: np.ndarray, size_hw: tuple[int, int], mean: Sequence[float], std: Sequence[float]):
    """``(H, W, 3)`` uint8 -> ``(3, h, w)`` float tensor, bilinear-resized and normalized."""
    import torch
    from PIL import Image

    h, w = size_hw
    resized = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR), dtype=np.float32) / 255.0
    x = torch.from_numpy(resized).permute(2, 0, 1)  # (3, h, w)
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def box_to_original(box: Sequence[int], input_hw: tuple[int, int], image_hw: tuple[int, int]) -> list[float]:
    """An inclusive integer box of the network input -> continuous xyxy in original image pixels.

    >>> box_to_original([2, 4, 5, 9], (10, 10), (20, 40))
    [8.0, 8.0, 24.0, 20.0]
    """
    (h, w), (H, W) = input_hw, image_hw
    sx, sy = W / w, H / h
    x0, y0, x1, y1 = (int(v) for v in box)
    return [round(float(min(W, x0 * sx)), 2), round(float(min(H, y0 * sy)), 2),
            round(float(min(W, (x1 + 1) * sx)), 2), round(float(min(H, (y1 + 1) * sy)), 2)]


def cam_box(cam_u8: np.ndarray, threshold: float) -> list[int] | None:
    """Box of the largest region of a uint8 map above ``threshold`` x its max (inclusive ints), or None."""
    from camlab.wsol import boxes_at_threshold

    if not (cam_u8 > int(threshold * int(cam_u8.max()))).any():
        return None
    return [int(v) for v in boxes_at_threshold(cam_u8, threshold, multi_contour=False)[0]]


def _unique_name(path: Path, used: set[str]) -> str:
    name, n = path.stem, 1
    while name in used:
        n += 1
        name = f"{path.stem}_{n}"
    used.add(name)
    return name


def predict(model: Any, paths: Sequence[Path], out_dir: Path, topk: int = 3, threshold: float = 0.2,
            device: str = "cpu", batch_size: int = 16, cam_method: str = "cam",
            cam_options: dict[str, Any] | None = None, exif_transpose: bool = False) -> dict[str, Any]:
    """Predict every image, write overlays and ``predictions.json``; returns the JSON document.

    ``cam_options``: the CAM method's options (:func:`camlab.cam_methods.check_options`); ``exif_transpose``: turn
    images with an EXIF orientation upright first (their boxes are then in the upright image's pixels)."""
    import torch

    from camlab.cam import minmax_normalize, upsample
    from camlab.cam_methods import check_options

    cam_options = check_options(cam_method, cam_options)
    from camlab.wsol import scoremap_to_uint8
    from camlab.viz import render_prediction

    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    spec = model.input_spec
    names = list(getattr(model, "class_names", None) or spec.class_names or range(model.num_classes))
    k = max(1, min(int(topk), model.num_classes))
    model = model.to(device).eval()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a file in the way, no permission, ...
        raise PredictError(f"cannot create the --out directory {out_dir}: {err.strerror or err}") from None
    used: set[str] = set()
    entries, unreadable, oriented = [], [], []
    for start in range(0, len(paths), batch_size):
        chunk, images = [], []
        for p in paths[start:start + batch_size]:
            try:
                image, orientation = read_image_oriented(p, exif_transpose)
            except PredictError as err:  # the others are still predicted; listed and reported at the end
                unreadable.append({"image": str(p), "error": str(err)})
                continue
            chunk.append(p)
            images.append(image)
            if orientation != 1:
                oriented.append(str(p))
        if not images:
            continue
        x = torch.stack([to_input(im, spec.size_hw, spec.mean, spec.std) for im in images]).to(device)  # (B,3,h,w)
        with torch.no_grad():
            out = model(x)
            probs = out["logits"].float().softmax(dim=1)  # (B, C)
            scores, classes = probs.topk(k, dim=1)  # (B, k), (B, k)
            raw = _raw_cams(model, out["features"].float(), classes, cam_method, x, cam_options)  # (B, k, h', w')
            b, _, fh, fw = raw.shape
            maps = minmax_normalize(upsample(raw.reshape(b * k, fh, fw), spec.size_hw))  # (B k, h, w)
            u8 = scoremap_to_uint8(maps.cpu().numpy()).reshape(b, k, *spec.size_hw)  # (B, k, h, w)
        for i, (path, image) in enumerate(zip(chunk, images)):
            H, W = image.shape[:2]
            preds = []
            for r in range(k):
                box = cam_box(u8[i, r], threshold)
                c = int(classes[i, r])
                preds.append({"rank": r + 1, "class": c, "name": str(names[c]), "score": round(float(scores[i, r]), 6),
                              "box": None if box is None else box_to_original(box, spec.size_hw, (H, W))})
            with torch.no_grad():
                cam_full = minmax_normalize(upsample(raw[i, :1], (H, W)))[0].cpu().numpy()  # (H, W)
            top = preds[0]
            name = _unique_name(path, used)
            overlay = out_dir / f"{name}_cam.png"
            picture = render_prediction(image, cam_full, top["box"], f"{top['name']} {top['score']:.2f}")
            _write_atomic(overlay, lambda f: picture.save(f, format="PNG"))
            entries.append({"image": str(path), "width": W, "height": H, "overlay": overlay.name,
                            "predictions": preds})
    doc = {
        "model": getattr(model, "source", None),
        "input_size": list(spec.size_hw),
        "cam_method": cam_method,
        "threshold": threshold,
        "box_format": "xyxy in original image pixels, continuous (x1, y1 = right/bottom edges); null: no region",
        "images": entries,
        "unreadable": unreadable,
        "exif_oriented": oriented,
        "exif_transpose": bool(exif_transpose),
    }
    text = json.dumps(doc, indent=2) + "\n"
    _write_atomic(out_dir / "predictions.json", lambda f: f.write(text.encode()))
    return doc


def _raw_cams(model: Any, features, classes, method: str, images=None, options=None):
    """``(B, K, h, w)`` features, ``(B, k)`` classes -> ``(B, k, h, w)`` raw maps (``images``: their input)."""
    if method == "cam":
        return model.cam(features, classes)
    from camlab.cam_methods import compute_cams

    return compute_cams(model, features, classes, method, images=images, options=options)


def _cam_option(value: str) -> tuple[str, int | float]:
    """argparse type: ``KEY=NUMBER`` -> (key, int or float); the method checks the key and the value."""
    key, sep, text = value.partition("=")
    try:
        number = int(text) if re.fullmatch(r"[+-]?\d+", text.strip()) else float(text)
    except ValueError:
        number = None
    if not sep or not key or number is None:
        raise argparse.ArgumentTypeError(f"expected KEY=NUMBER (e.g. batch_size=32), got '{value}'")
    return key.strip(), number


def _positive_int(value: str) -> int:
    """argparse type: an integer >= 1 (argparse names the option in its error)."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got '{value}'") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


DEVICE_EXAMPLES = "auto, cpu, cuda, cuda:0, cuda:1, mps"


def _device(value: str) -> str:
    """argparse type: ``auto`` or a device string torch parses (availability is checked in :func:`run`)."""
    if value == "auto":
        return value
    import torch

    try:
        dev = torch.device(value)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"'{value}' is not a torch device; use one of {DEVICE_EXAMPLES}") from None
    if dev.type == "meta":
        raise argparse.ArgumentTypeError(f"'{value}' holds no data; use one of {DEVICE_EXAMPLES}")
    return value


def _check_device(device: str) -> str:
    """``auto`` -> cuda or cpu; else the device if this machine has it, or a :class:`PredictError`."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):  # parse_args checks it; run() may be given a Namespace built in Python
        raise PredictError(f"--device {device} is not a torch device; use one of {DEVICE_EXAMPLES}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise PredictError(f"--device {device}: CUDA is not available here (use --device cpu)")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise PredictError(f"--device {device}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
    elif dev.type != "cpu":
        try:
            torch.empty(1, device=dev)
        except Exception:  # noqa: BLE001 - an unusable backend raises one of several error types
            raise PredictError(f"--device {device}: no usable {dev.type} device here (use --device cpu"
                               f"{' or cuda' if torch.cuda.is_available() else ''})") from None
    return device


def _check_out_dir(out: Path) -> None:
    """``--out`` must be a directory or creatable as one: no existing file at it or at any of its parents."""
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                what = "is an existing file" if p == out else f"is inside {p}, an existing file"
                raise PredictError(f"--out {out} {what}, not a directory: give a directory path (created if missing)")
            return


def _first_line(err: BaseException, limit: int = 200) -> str:
    text = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
    text = text if len(text) <= limit else text[:limit] + " ..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _load_model(source: str, args: argparse.Namespace) -> Any:
    """:func:`load_cam_model`, with an unreadable model file as a one-line :class:`PredictError` naming it."""
    from camlab.models.pretrained import load_cam_model

    try:
        return load_cam_model(source, torchvision_arch=args.torchvision, class_names=args.class_names,
                              image_size=args.image_size)
    except UnicodeDecodeError as err:  # a ValueError whose text names no file
        what = f"--class-names file {args.class_names}" if args.class_names else f"model file {source}"
        raise PredictError(f"cannot read {what}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except (ValueError, FileNotFoundError):
        raise  # camlab's own messages (ConfigError included) name the file: printed as they are
    except (pickle.UnpicklingError, EOFError, RuntimeError, OSError, ImportError, AttributeError) as err:
        hint = (f"is it a torchvision {args.torchvision} state dict?" if args.torchvision
                else "is it a camlab .ckpt or a state dict (with --torchvision ARCH --weights)?")
        kind = "weights" if args.torchvision else "checkpoint"
        raise PredictError(f"cannot read {kind} {source}: {_first_line(err)}; {hint}") from None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from camlab.cam_methods import METHODS

    p = argparse.ArgumentParser(
        prog="camlab-predict",
        description="CAM predictions: overlay PNGs and predictions.json (top-k classes, scores, boxes in "
                    "original image pixels) for images or folders of images.",
        epilog="examples:  camlab-predict run/checkpoints/last.ckpt photos/ --out preds\n"
               "           camlab-predict --torchvision resnet50 --weights resnet50.pth cat.jpg --out preds",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="[MODEL] IMAGE_OR_DIR",
                   help="a camlab checkpoint (unless --ckpt/--weights is given), then images and/or folders")
    p.add_argument("--ckpt", help="camlab-train checkpoint (alternative to the first positional argument)")
    p.add_argument("--torchvision", metavar="ARCH", help="MODEL is a torchvision state dict of ARCH "
                   "(resnet18/34/50, efficientnet_b0, convnext_tiny, ...: GAP -> one linear layer)")
    p.add_argument("--weights", help="the torchvision state-dict file (with --torchvision)")
    p.add_argument("--class-names", help="text file, one class name per line (default: the checkpoint's, or "
                   "torchvision's ImageNet categories)")
    p.add_argument("--out", default="predictions", help="output directory (default: ./predictions)")
    p.add_argument("--topk", type=int, default=3, help="classes reported per image (default 3)")
    p.add_argument("--threshold", type=float, default=0.2, help="CAM threshold, fraction of the map's max "
                   "(default 0.2)")
    p.add_argument("--image-size", type=_positive_int, help="input side (default: the model's training size)")
    p.add_argument("--device", type=_device, default="auto", help="cpu, cuda, cuda:1, mps, ... or auto (default: "
                   "cuda if available, else cpu)")
    p.add_argument("--batch-size", type=_positive_int, default=16, help="images per forward pass (default 16)")
    p.add_argument("--cam-method", default="cam", choices=METHODS, help="how maps are built (default cam)")
    p.add_argument("--cam-option", type=_cam_option, action="append", default=[], metavar="KEY=NUMBER",
                   help="an option of the CAM method, repeatable: scorecam/ablationcam batch_size, smoothgradcampp "
                        "n_samples, sigma, seed (docs/cam-methods.md)")
    p.add_argument("--exif-transpose", action="store_true", help="turn images with an EXIF orientation upright "
                   "(as viewers show them) before predicting; default: the stored pixels, as training reads them "
                   "unless data.exif_transpose=true")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    inputs = list(args.inputs)
    source = args.weights or args.ckpt
    if args.torchvision and not args.weights:
        raise PredictError("--torchvision ARCH needs --weights <state-dict file>")
    if source is None:
        if len(inputs) < 2:
            raise PredictError("give a model file and at least one image or folder: camlab-predict MODEL IMAGE...")
        source = inputs.pop(0)
    refuse_url(source, "model file")
    if Path(source).is_dir():
        hint = next((f" (e.g. {c})" for c in (Path(source) / "checkpoints" / "last.ckpt", Path(source) / "last.ckpt")
                     if c.is_file()), "")
        raise PredictError(f"model file {source} is a directory: give the checkpoint file itself{hint}")
    if not Path(source).is_file():
        raise PredictError(f"model file {source} not found (a camlab-train checkpoint, or --torchvision ARCH "
                           f"--weights <state dict>)")
    if not 0 <= args.threshold < 1:
        raise PredictError(f"--threshold must be in [0, 1), got {args.threshold}")
    if args.topk < 1:
        raise PredictError(f"--topk must be >= 1, got {args.topk}")
    if args.image_size is not None and args.image_size < 1:
        raise PredictError(f"--image-size must be >= 1, got {args.image_size}")
    device = _check_device(args.device)
    _check_out_dir(Path(args.out))
    paths = list_images(inputs)
    model = _load_model(source, args)
    model.source = str(source)
    doc = predict(model, paths, Path(args.out), topk=args.topk, threshold=args.threshold, device=device,
                  batch_size=args.batch_size, cam_method=args.cam_method, cam_options=dict(args.cam_option),
                  exif_transpose=args.exif_transpose)
    out = Path(args.out)
    done = len(doc["images"])
    print(f"camlab: {done} image(s) -> {out / 'predictions.json'} and {out}/<name>_cam.png", flush=True)
    if doc["exif_oriented"] and not args.exif_transpose:
        print(f"camlab: note: {len(doc['exif_oriented'])} image(s) have an EXIF orientation (shown rotated by "
              f"viewers), first: {doc['exif_oriented'][0]}; predicted on the stored pixels, boxes in that grid "
              f"(--exif-transpose: turned upright first)",
              file=sys.stderr, flush=True)
    if doc["unreadable"]:
        bad = doc["unreadable"]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise PredictError(f"{bad[0]['error']}{more}; the {done} other image(s) were predicted, the unreadable "
                           f"ones are listed under 'unreadable' in {out / 'predictions.json'}")
    return doc


def _notes_to_stderr() -> logging.Handler | None:
    """camlab's data warnings (16-bit images scaled, ...) as ``camlab: note: ...`` lines, as predict's own notes;
    nothing where the caller already routes camlab's log."""
    log = logging.getLogger("camlab")
    if log.handlers or logging.getLogger().handlers:
        return None
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("camlab: note: %(message)s"))
    handler.setLevel(logging.WARNING)
    log.addHandler(handler)
    return handler


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    handler = _notes_to_stderr()
    try:
        run(args)
    except PredictError as err:
        raise SystemExit(f"camlab: error: {err}") from None
    except (ValueError, FileNotFoundError) as err:  # bad model file, class names, ...: messages name the file
        text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())  # one line
        raise SystemExit(f"camlab: error: {text}") from None
    finally:
        if handler is not None:
            logging.getLogger("camlab").removeHandler(handler)


if __name__ == "__main__":
    main(sys.argv[1:])
