"""Pages with no digit on them: what the reject option must turn away.

People hand a digit reader random photos, near-empty pages, scribbles and stray marks. The
generator draws such pages as a user would hand them over (dark marks on a light page,
``SIDE`` pixels square, uint8), to go through the same
:func:`~lenet5.inference.images.preprocess` as every image:

- ``noise``: a page of pixel noise, Gaussian or uniform, sometimes smoothed into blotches;
- ``nearblank``: a light page with one to five specks or a faint smudge;
- ``scribble``: two to five random pen paths that wander and cross;
- ``dot``: a single round mark, small or large, with soft edges (a tap on the page's pad);
- ``hatch``: a handful of parallel or crossing straight strokes.

The same generator calibrates the reject option (one seed), tests it and measures it (other
seeds), and the web page's test draws its non-digits from the same ideas.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIDE = 112
KINDS = ("noise", "nearblank", "scribble", "dot", "hatch")


def _page(rng: np.random.Generator) -> tuple[Image.Image, ImageDraw.ImageDraw, int]:
    paper = int(rng.integers(200, 256))
    img = Image.new("L", (SIDE, SIDE), paper)
    return img, ImageDraw.Draw(img), int(rng.integers(0, max(1, paper - 120)))


def noise(rng: np.random.Generator) -> Image.Image:
    if rng.random() < 0.5:
        a = rng.normal(rng.uniform(60, 200), rng.uniform(20, 90), (SIDE, SIDE))
    else:
        lo = rng.uniform(0, 150)
        a = rng.uniform(lo, rng.uniform(lo + 40, 255), (SIDE, SIDE))
    img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    if rng.random() < 0.4:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 4))))
    return img


def nearblank(rng: np.random.Generator) -> Image.Image:
    img, draw, ink = _page(rng)
    if rng.random() < 0.3:  # a faint smudge
        a = np.asarray(img, np.float64)
        ys, xs = np.indices(a.shape)
        cy, cx, r = rng.uniform(20, SIDE - 20, 2).tolist() + [rng.uniform(5, 25)]
        a -= rng.uniform(25, 60) * np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * r * r))
        return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    for _ in range(int(rng.integers(1, 6))):
        x, y = rng.uniform(3, SIDE - 3, 2)
        r = rng.uniform(0.5, 1.8)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=ink)
    return img


def scribble(rng: np.random.Generator) -> Image.Image:
    img, draw, ink = _page(rng)
    width = int(rng.integers(2, 9))
    for _ in range(int(rng.integers(2, 6))):
        p = rng.uniform(15, SIDE - 15, 2)
        heading, pts = rng.uniform(0, 2 * np.pi), [tuple(p)]
        for _ in range(int(rng.integers(15, 40))):
            heading += rng.normal(0, 0.9)
            p = np.clip(p + 5 * np.array([np.cos(heading), np.sin(heading)]), 5, SIDE - 5)
            pts.append(tuple(p))
        draw.line(pts, fill=ink, width=width, joint="curve")
    return img


def dot(rng: np.random.Generator) -> Image.Image:
    """One round mark, drawn at 4x and averaged down (soft edges, as a canvas or a pen makes
    them), sometimes blurred further."""
    paper = int(rng.integers(200, 256))
    big = Image.new("L", (4 * SIDE, 4 * SIDE), paper)
    ink = int(rng.integers(0, max(1, paper - 120)))
    x, y = rng.uniform(15, SIDE - 15, 2) * 4
    r = rng.uniform(1.5, 14) * 4
    ImageDraw.Draw(big).ellipse([x - r, y - r, x + r, y + r], fill=ink)
    img = big.resize((SIDE, SIDE), Image.Resampling.BOX)
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 2))))
    return img


def hatch(rng: np.random.Generator) -> Image.Image:
    img, draw, ink = _page(rng)
    width = int(rng.integers(2, 8))
    base = rng.uniform(0, np.pi)
    for _ in range(int(rng.integers(4, 9))):
        angle = base + (rng.choice([0, np.pi / 2]) if rng.random() < 0.5 else 0) + rng.normal(0, 0.1)
        c = rng.uniform(25, SIDE - 25, 2)
        half = rng.uniform(15, 45) * np.array([np.cos(angle), np.sin(angle)])
        draw.line([tuple(c - half), tuple(c + half)], fill=ink, width=width)
    return img


MAKERS = {"noise": noise, "nearblank": nearblank, "scribble": scribble, "dot": dot, "hatch": hatch}


def pages(n: int, seed: int = 0, kinds: tuple[str, ...] = KINDS) -> tuple[list[Image.Image], list[str]]:
    """``n`` pages (``n // len(kinds)`` of each kind, the rest from the first) and their kinds."""
    unknown = [k for k in kinds if k not in MAKERS]
    if unknown:
        raise ValueError(f"unknown non-digit kind(s) {unknown}; choose from {', '.join(KINDS)}")
    rng = np.random.default_rng(seed)
    names = [kinds[i % len(kinds)] for i in range(n)]
    return [MAKERS[k](rng) for k in names], names
