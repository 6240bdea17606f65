"""Overlay rendering helpers (camlab.viz)."""

import threading

import numpy as np
from PIL import ImageDraw

from camlab.viz import OverlaySample, caption_font, heatmap_overlay, render_grid


def test_caption_font_is_loaded_once_per_thread():
    here = caption_font()
    assert caption_font() is here
    other = []
    t = threading.Thread(target=lambda: other.append(caption_font()))
    t.start()
    t.join()
    assert other[0] is not here  # a FreeType face is not shared between threads
    assert ImageDraw.Draw(render_grid([_sample()])).textbbox((0, 0), "ok", font=here)[2] > 0


def _sample():
    img = np.zeros((8, 8, 3), np.uint8)
    cam = np.zeros((8, 8), np.float32)
    cam[2:6, 2:6] = 1.0
    return OverlaySample(image=img, cam=cam, gt_boxes=[[2.0, 2.0, 6.0, 6.0]], pred_box=None, label="a", pred="a",
                         score=1.0, index=0)


def test_heatmap_overlay_blends_the_jet_colour_by_hand():
    img = np.full((1, 2, 3), 100, np.uint8)
    out = heatmap_overlay(img, np.array([[0.0, 1.0]]))
    # jet at 0 is dark blue (0, 0, 127.5) and at 1 dark red (127.5, 0, 0); half and half with grey 100
    assert out[0, 0].tolist() == [50, 50, 114] and out[0, 1].tolist() == [114, 50, 50]
