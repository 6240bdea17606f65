"""Seeded small score maps of every kind, GT boxes and a CAM-like dataset, shared by the tests/test_wsol_* files.

Plain numpy / OpenCV / torch (camlab.cam.minmax_normalize only, for the smooth kinds): nothing here is the code
under test. Every map is float32 in [0, 1].
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from camlab.cam import minmax_normalize


def _norm(m) -> np.ndarray:
    m = torch.as_tensor(np.asarray(m, np.float32))
    return minmax_normalize(m[None])[0].numpy()


def _size(rng, lo=9, hi=41):
    return int(rng.integers(lo, hi)), int(rng.integers(lo, hi))


def smooth(rng, H, W):
    """Low-resolution noise upsampled bilinearly: a CAM."""
    h, w = (int(v) for v in rng.integers(2, 9, 2))
    low = torch.tensor(rng.random((1, 1, h, w)), dtype=torch.float32)
    return _norm(F.interpolate(low, (H, W), mode="bilinear", align_corners=False)[0, 0])


def blobs(rng, H, W):
    """A few Gaussians of different heights, some noise: several components at mid thresholds."""
    yy, xx = np.mgrid[:H, :W]
    m = sum(rng.uniform(0.3, 1) * np.exp(-((yy - rng.uniform(0, H)) ** 2 + (xx - rng.uniform(0, W)) ** 2)
                                        / rng.uniform(2, 40)) for _ in range(int(rng.integers(1, 7))))
    return _norm(m + rng.uniform(0, 0.2) * rng.random((H, W)))


def noise(rng, H, W):
    """i.i.d. uniform noise (every other map a little blurred): hundreds of components and holes per level."""
    m = rng.random((H, W))
    if rng.random() < 0.5:
        m = cv2.GaussianBlur(m, (0, 0), 0.6)
    return _norm(m)


def rings(rng, H, W):
    """Concentric rings (holes in components in holes), rings modulated along the angle, rings with noise."""
    yy, xx = np.mgrid[:H, :W] + 0.5
    cy, cx = rng.uniform(0.2, 0.8) * H, rng.uniform(0.2, 0.8) * W
    r = np.hypot(yy - cy, xx - cx)
    v = int(rng.integers(3))
    if v == 0:  # nested rings: at each threshold a disc of annuli
        m = np.cos(r / rng.uniform(0.8, 2.5)) ** 2 * np.exp(-r / rng.uniform(8, 30))
    elif v == 1:  # one ring cut into arcs at high thresholds, sometimes a blob in the hole
        th = np.arctan2(yy - cy, xx - cx)
        r0 = rng.uniform(2.5, 0.45 * min(H, W) + 3)
        m = (1 + 0.3 * np.cos(int(rng.integers(1, 6)) * th)) * np.exp(-((r - r0) ** 2) / rng.uniform(1, 6))
        if rng.random() < 0.5:
            m = np.maximum(m, rng.uniform(0.2, 0.7) * np.exp(-(r ** 2) / (0.3 * r0) ** 2))
    else:
        m = np.exp(-((r - rng.uniform(2, 8)) ** 2) / 6) + 0.3 * rng.random((H, W))
    return _norm(m)


def lines(rng, H, W):
    """One-pixel-wide lines: straight, diagonal (8- and 4-connected), closed diagonal outlines (holes enclosed by
    diagonal steps), with intensities varying along them, on zero."""
    m = np.zeros((H, W), np.float32)
    ramp = rng.uniform(0.2, 1.0, (H, W)).astype(np.float32)
    for _ in range(int(rng.integers(1, 6))):
        canvas = np.zeros((H, W), np.uint8)
        p = [(int(rng.integers(0, W)), int(rng.integers(0, H))) for _ in range(2)]
        k = rng.random()
        if k < 0.3:  # horizontal or vertical
            p[1] = (p[1][0], p[0][1]) if rng.random() < 0.5 else (p[0][0], p[1][1])
            cv2.line(canvas, p[0], p[1], 255, 1, cv2.LINE_8)
        elif k < 0.5:  # exactly diagonal
            d = int(rng.integers(2, min(H, W)))
            x, y = p[0]
            cv2.line(canvas, (x, y), (x + d * (1 if rng.random() < 0.5 else -1), y + d), 255, 1, cv2.LINE_8)
        elif k < 0.75:  # any angle, 8- or 4-connected
            cv2.line(canvas, p[0], p[1], 255, 1, cv2.LINE_8 if rng.random() < 0.5 else cv2.LINE_4)
        else:  # a closed diamond of diagonal pixels: a hole enclosed by 8-connected foreground only
            x, y = p[0]
            s = int(rng.integers(1, 6))
            pts = np.array([[x, y - s], [x + s, y], [x, y + s], [x - s, y]], np.int32)
            cv2.polylines(canvas, [pts], True, 255, 1, cv2.LINE_8)
        m = np.maximum(m, (canvas > 0) * ramp * rng.uniform(0.3, 1.0))
    return _norm(m)


def plateaus(rng, H, W):
    """Axis-aligned rectangles, stacked or maxed, with few distinct values; some nested as frames."""
    m = np.zeros((H, W), np.float32)
    for _ in range(int(rng.integers(1, 7))):
        x0, x1 = np.sort(rng.integers(0, W + 1, 2))
        y0, y1 = np.sort(rng.integers(0, H + 1, 2))
        v = np.float32(rng.integers(1, 6) / 5)
        if rng.random() < 0.5:
            m[y0:y1, x0:x1] += v
        else:
            m[y0:y1, x0:x1] = np.maximum(m[y0:y1, x0:x1], v)
        if rng.random() < 0.3 and y1 - y0 > 2 and x1 - x0 > 2:  # punch a hole
            m[y0 + 1 : y1 - 1, x0 + 1 : x1 - 1] = 0.0
    return _norm(m) if m.max() > 0 else m


def ties(rng, H, W):
    """Values exactly on the threshold grid (float32 k / 100) or on the uint8 steps (float32 k / 255): every
    threshold cut lands on or next to a value; many equal-area plateaus."""
    denom = 100 if rng.random() < 0.5 else 255
    v = int(rng.integers(3))
    if v == 0:  # few distinct grid values, iid
        k = rng.choice(rng.integers(0, denom + 1, int(rng.integers(2, 6))), size=(H, W))
    elif v == 1:  # a quantized smooth map: nested plateaus
        k = np.round(smooth(rng, H, W) * denom * rng.uniform(0.3, 1.0))
    else:  # blocky layout of grid values
        k = np.kron(rng.integers(0, denom + 1, (H // 3 + 1, W // 3 + 1)), np.ones((3, 3)))[:H, :W]
    m = (np.asarray(k, np.float64) / denom).astype(np.float32)
    if rng.random() < 0.5:
        m[rng.integers(H), rng.integers(W)] = 1.0
    return m


def border(rng, H, W):
    """Mass touching the border: blobs centred on or outside an edge or corner, ramps, bands along an edge."""
    yy, xx = np.mgrid[:H, :W]
    v = int(rng.integers(3))
    if v == 0:
        cy = rng.choice([0, H - 1]) + rng.uniform(-3, 3)
        cx = rng.choice([0, W - 1]) + rng.uniform(-3, 3)
        m = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / rng.uniform(4, 80))
        if rng.random() < 0.5:  # rings around the corner: holes next to the border
            m = np.cos(np.hypot(yy - cy, xx - cx) / rng.uniform(1, 3)) ** 2 + 0.1 * rng.random((H, W))
    elif v == 1:  # a ramp whose maximum is a whole edge
        m = [xx, yy, W - 1 - xx, H - 1 - yy][int(rng.integers(4))].astype(np.float64) + 0.5 * rng.random((H, W))
    else:  # a bright band along an edge on a smooth map
        m = smooth(rng, H, W) * 0.6
        w = int(rng.integers(1, 4))
        side = int(rng.integers(4))
        band = [np.s_[:w, :], np.s_[-w:, :], np.s_[:, :w], np.s_[:, -w:]][side]
        m[band] = rng.uniform(0.7, 1.0, m[band].shape)
    return _norm(m)


SPECIAL_CASES = ("zeros", "constant", "ones", "hot pixel", "hot pixel on dim", "two hot pixels", "ones but one",
                 "dim", "below one step")


def special(rng, H, W, case=None):
    """Constant (raw, not normalized), all zeros, single hot pixels, maxima below one uint8 step or a few."""
    case = SPECIAL_CASES[int(rng.integers(len(SPECIAL_CASES)))] if case is None else case
    m = np.zeros((H, W), np.float32)
    y, x = int(rng.integers(H)), int(rng.integers(W))
    if case == "constant":
        m[:] = np.float32(rng.uniform(0.01, 1.0))
    elif case == "ones":
        m[:] = 1.0
    elif case == "hot pixel":
        m[y, x] = 1.0
    elif case == "hot pixel on dim":
        m[:] = np.float32(0.5 / 255)
        m[y, x] = np.float32(rng.uniform(0.01, 1.0))
    elif case == "two hot pixels":
        m[y, x] = 1.0
        m[int(rng.integers(H)), int(rng.integers(W))] = np.float32(rng.uniform(0.005, 1.0))
    elif case == "ones but one":
        m[:] = 1.0
        m[y, x] = 0.0
    elif case == "dim":  # every score below 1 / 255: no contour at any threshold
        m[:] = np.float32(rng.uniform(0, 1 / 255))
    elif case == "below one step":  # uint8 maps of 0..2
        m = (rng.integers(0, 3, (H, W)) / 255 + rng.uniform(0, 0.9 / 255, (H, W))).astype(np.float32)
    return m


TINY_SHAPES = ((1, 1), (1, 7), (1, 23), (7, 1), (23, 1), (2, 2), (2, 5), (3, 3), (3, 8), (4, 4))


def tiny(rng, H=None, W=None):
    """1x1, 1xW, Hx1, 2x2, 3x3 and a few more tiny shapes (the given H, W are ignored), random or on ties."""
    H, W = TINY_SHAPES[int(rng.integers(len(TINY_SHAPES)))]
    m = rng.random((H, W)).astype(np.float32)
    if rng.random() < 0.5:
        m[m < 0.4] = 0.0
    if rng.random() < 0.3:
        m = (np.round(m * 3) / 3).astype(np.float32)
    return m


GENERATORS = {"smooth": smooth, "blobs": blobs, "noise": noise, "rings": rings, "lines": lines, "plateaus": plateaus,
              "ties": ties, "border": border, "special": special, "tiny": tiny}
KINDS = tuple(GENERATORS)


def random_map(rng, kind, H=None, W=None) -> np.ndarray:
    if H is None:
        H, W = _size(rng)
    return np.ascontiguousarray(GENERATORS[kind](rng, H, W), np.float32)


def random_boxes(rng, H, W, G=None) -> np.ndarray:
    """1-3 continuous xyxy GT boxes (float64) inside [0, W] x [0, H], some reaching the right / bottom edge."""
    G = int(rng.integers(1, 4)) if G is None else G
    xs = np.sort(rng.uniform(0, W, (G, 2)), axis=1)
    ys = np.sort(rng.uniform(0, H, (G, 2)), axis=1)
    b = np.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], axis=1)
    if rng.random() < 0.2:
        b[0, 2:] = [W, H]
    return b


def make_dataset(n=13, H=28, W=36, G=3, C=6, seed=0, fit=False):
    """Smooth CAM-like maps with boxes (padded), masks with ignore pixels, logits and labels (torch).

    The boxes are random; ``fit=True`` replaces the first box of about two images in three by the jittered pixel box
    of the map above a random threshold in [0.1, 0.5], so that localization hits and misses mix."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 1, 5, 6, generator=g)
    cams = minmax_normalize(F.interpolate(low, (H, W), mode="bilinear", align_corners=False)[:, 0])
    num = torch.randint(1, G + 1, (n,), generator=g)
    xy0 = torch.rand(n, G, 2, generator=g) * torch.tensor([W * 0.6, H * 0.6])
    wh = 2 + torch.rand(n, G, 2, generator=g) * torch.tensor([W * 0.5, H * 0.5])
    boxes = torch.cat([xy0, (xy0 + wh).minimum(torch.tensor([W, H]))], dim=2)
    boxes[torch.arange(G)[None, :] >= num[:, None]] = 0  # padding
    masks = (torch.rand(n, H, W, generator=g) < cams).to(torch.uint8)
    masks[torch.rand(n, H, W, generator=g) < 0.05] = 255
    logits = torch.randn(n, C, generator=g)
    labels = torch.randint(0, C, (n,), generator=g)
    if fit:
        rng = np.random.default_rng(seed + 1000)
        for i in range(n):
            if rng.random() < 0.67:
                ys, xs = np.nonzero(cams[i].numpy() > rng.uniform(0.1, 0.5))
                box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64) + rng.uniform(-2, 2, 4)
                boxes[i, 0] = torch.from_numpy(np.clip(box, 0, [W, H, W, H])).float()
    return dict(cams=cams, boxes=boxes, num_boxes=num, masks=masks, logits=logits, labels=labels,
                index=torch.arange(n))


def batches(data, size):
    n = data["cams"].shape[0]
    for s in range(0, n, size):
        yield {k: v[s : s + size] for k, v in data.items()}


def gts(data, i) -> np.ndarray:
    """The valid GT boxes of image i of a make_dataset set."""
    return data["boxes"][i, : data["num_boxes"][i]].numpy()
