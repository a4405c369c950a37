"""A digit as a phone photographs it: how users' pictures differ from a clean scan.

:func:`photo_page` writes an MNIST digit 200 px tall on a 400x300 light page (uint8, dark ink)
under one of :data:`KINDS` of conditions, each a way a real photo departs from a flat page:

- ``plain``: a flat page;
- ``falloff``: light falling off from one side to the other (0.45 to 0.95);
- ``vignette``: darker towards the corners;
- ``ruled`` / ``squared``: lined or graph paper, lines 2 px wide;
- ``grainy``: a noisy sensor, Gaussian noise of std 0.08 on every pixel;
- ``shadow``: a hard-edged shadow over the left 40% of the page, through the digit;
- ``corner-shadow``: a deeper one over the top-left corner (45% of each side), through the digit;
- ``cropped``: the plain page cut to the digit's ink, nothing left round it (strokes run along
  the edges of the picture);
- ``boxed``: the digit written in a box, as on a form or a cheque (a frame 4 px wide);
- ``ruled-askew`` / ``boxed-askew``: lined paper turned 3 degrees, a box turned 4 degrees, as a
  hand-held photo turns them;
- ``neighbours``: one digit of a number, with pieces of the digits beside it cut by the
  picture's left and right edges (here pieces of the same digit, for want of its neighbours).

The tests (``tests/test_predict.py``) and ``benchmarks/bench_photos.py`` draw from it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

KINDS = ("plain", "falloff", "vignette", "ruled", "squared", "grainy", "shadow", "corner-shadow",
         "cropped", "boxed", "ruled-askew", "boxed-askew", "neighbours")
H, W = 400, 300


def photo_page(digit: np.ndarray, kind: str, rng: np.random.Generator) -> Image.Image:
    """``digit`` (28x28 uint8, ink bright) as dark ink on a page photographed as ``kind``."""
    if kind not in KINDS:
        raise ValueError(f"unknown photo kind {kind!r}; one of {', '.join(KINDS)}")
    if kind.endswith("-askew"):
        turn = {"ruled-askew": 3, "boxed-askew": 4}[kind]
        page = photo_page(digit, kind.removesuffix("-askew"), rng)
        return page.rotate(turn, Image.Resampling.BILINEAR, fillcolor=217)  # 217: the page's grey
    yy, xx = np.mgrid[0:H, 0:W] / np.array([H, W])[:, None, None]
    page = np.full((H, W), 0.85)
    if kind == "falloff":
        page = 0.45 + 0.5 * xx
    elif kind == "vignette":
        page = 0.9 - 0.5 * ((yy - 0.5) ** 2 + (xx - 0.5) ** 2)
    step = {"ruled": 40, "squared": 30}.get(kind)
    for r in range(10, H, step) if step else ():  # lines 2 px wide, across the page
        page[r : r + 2] = 0.6
    for c in range(10, W, step) if kind == "squared" else ():
        page[:, c : c + 2] = 0.65
    if kind == "boxed":
        page[60:340, 20:280] = 0.2
        page[64:336, 24:276] = 0.85
    if kind == "shadow":
        page[:, : int(0.4 * W)] *= 0.55
    if kind == "corner-shadow":
        page[: int(0.45 * H), : int(0.45 * W)] *= 0.4
    ink = np.asarray(Image.fromarray(digit).resize((200, 200), Image.Resampling.BILINEAR)) / 255
    img = page.copy()
    img[100:300, 50:250] *= 1 - 0.8 * ink
    if kind == "neighbours":  # the right of a digit at the left edge, the left of one at the right
        img[100:300, :40] *= 1 - 0.8 * ink[:, 140:180]
        img[100:300, -40:] *= 1 - 0.8 * ink[:, 20:60]
    if kind == "grainy":
        img += rng.normal(0, 0.08, img.shape)
    if kind == "cropped":
        rows, cols = np.flatnonzero(ink.max(1) > 0.5), np.flatnonzero(ink.max(0) > 0.5)
        img = img[100 + rows[0] : 101 + rows[-1], 50 + cols[0] : 51 + cols[-1]]
    return Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))
