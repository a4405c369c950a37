"""A corruption suite: the ways a digit drawn or photographed by a person differs from MNIST.

LeNet-5's demos (paper Section III-E, Fig. 13) read digits shifted, rotated, scaled, squeezed,
thick or thin and noisy. Each corruption here takes ``(N, 28, 28)`` float digits in [0, 1]
(ink 1, background 0, as :func:`lenet5.inference.images.preprocess` gives them) and a
**severity** in the corruption's own unit, and returns the corrupted digits in the same field,
**without re-centring** (a shifted digit stays shifted):

=========== =========================================== ======================
name        severity                                    0 (or 1) means clean
=========== =========================================== ======================
rotate      degrees, counter-clockwise about the centre 0
shift       pixels, each digit in its own direction     0
scale       size factor about the centre                1
squeeze     q: width x (1 + q), height x (1 - q)        0
thin        strokes eroded by a fraction of a 3x3 step  0
thicken     strokes dilated by this many 3x3 steps      0
noise       std of additive Gaussian pixel noise        0
saltpepper  share of pixels set to black or white       0
blur        sigma of a Gaussian blur, pixels            0
=========== =========================================== ======================

Random corruptions (shift's direction, the noise) are drawn from ``seed`` and the digit's
position in the batch, so a curve is the same every time. :data:`CURVES` gives each its
severities for ``lenet5 viz robustness``; :data:`PROBE` is one strong setting of each, whose
mean accuracy is the suite's single number.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from .augment import smooth, stroke_width
from .transforms import apply_affine


def affine(x: np.ndarray, **params: np.ndarray | float) -> np.ndarray:
    """``(N, H, W)`` warped by :func:`~lenet5.data.transforms.apply_affine` (pixels, degrees;
    each parameter a number or one per digit)."""
    n = x.shape[0]
    full = {"tx": 0.0, "ty": 0.0, "scale": 1.0, "squeeze": 0.0, "shear": 0.0, "rotate": 0.0}
    full.update(params)
    p = {k: torch.as_tensor(np.broadcast_to(np.asarray(v, np.float32), (n,)).copy())
         for k, v in full.items()}
    t = torch.from_numpy(np.ascontiguousarray(x, np.float32))[:, None]
    return apply_affine(t, p)[:, 0].numpy()


def rotate(x: np.ndarray, degrees: float, seed: int = 0) -> np.ndarray:
    # apply_affine's y axis points down the image: a positive angle there turns clockwise.
    return affine(x, rotate=-float(degrees))


def shift(x: np.ndarray, pixels: float, seed: int = 0) -> np.ndarray:
    angle = np.random.default_rng(seed).uniform(0, 2 * math.pi, x.shape[0])
    return affine(x, tx=pixels * np.cos(angle), ty=pixels * np.sin(angle))


def scale(x: np.ndarray, factor: float, seed: int = 0) -> np.ndarray:
    if factor <= 0:
        raise ValueError(f"scale factor must be positive, got {factor}")
    return affine(x, scale=float(factor))


def squeeze(x: np.ndarray, q: float, seed: int = 0) -> np.ndarray:
    if not -1 < q < 1:
        raise ValueError(f"squeeze must be in (-1, 1), got {q}")
    return affine(x, squeeze=float(q))


def _strokes(x: np.ndarray, steps: float) -> np.ndarray:
    """``steps`` > 0: that many 3x3 grey dilations (the last one partial); < 0: erosions."""
    t = torch.from_numpy(np.ascontiguousarray(x, np.float32))[:, None]
    left, sign = abs(float(steps)), 1.0 if steps >= 0 else -1.0
    while left > 1e-9:
        step = min(1.0, left)
        t = stroke_width(t, torch.full((t.shape[0],), sign * step))
        left -= step
    return t[:, 0].numpy()


def thin(x: np.ndarray, amount: float, seed: int = 0) -> np.ndarray:
    return _strokes(x, -float(amount))


def thicken(x: np.ndarray, steps: float, seed: int = 0) -> np.ndarray:
    return _strokes(x, float(steps))


def noise(x: np.ndarray, std: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(x + rng.normal(0, std, x.shape), 0, 1).astype(np.float32)


def saltpepper(x: np.ndarray, share: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hit = rng.random(x.shape) < share
    return np.where(hit, (rng.random(x.shape) < 0.5).astype(np.float32), x).astype(np.float32)


def blur(x: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    if sigma <= 0:
        return np.asarray(x, np.float32)
    t = torch.from_numpy(np.ascontiguousarray(x, np.float32))[:, None]
    return smooth(t, float(sigma))[:, 0].numpy()


Corruption = Callable[..., np.ndarray]
CORRUPTIONS: dict[str, Corruption] = {
    "rotate": rotate, "shift": shift, "scale": scale, "squeeze": squeeze, "thin": thin,
    "thicken": thicken, "noise": noise, "saltpepper": saltpepper, "blur": blur,
}
UNITS = {"rotate": "degrees", "shift": "pixels", "scale": "factor", "squeeze": "q",
         "thin": "erosion steps", "thicken": "dilation steps", "noise": "std",
         "saltpepper": "share of pixels", "blur": "sigma, pixels"}
# Severities of each curve, clean first (the paper's Fig. 13: scale up to about 2x, vertical
# shifts of half a character, rotations up to about 30 degrees).
CURVES: dict[str, tuple[float, ...]] = {
    "rotate": (0, 10, 20, 30, 40, 50),
    "shift": (0, 1, 2, 3, 4, 5, 6),
    "scale": (1.0, 0.8, 0.6, 0.5, 1.2, 1.4),
    "squeeze": (0, 0.15, 0.3, 0.45, -0.15, -0.3, -0.45),
    "thin": (0, 0.25, 0.5, 0.75, 1.0),
    "thicken": (0, 0.5, 1, 1.5, 2, 3),
    "noise": (0, 0.1, 0.2, 0.3, 0.4, 0.5),
    "saltpepper": (0, 0.02, 0.05, 0.1, 0.15, 0.2),
    "blur": (0, 0.5, 1.0, 1.5, 2.0),
}
# One strong setting of each: the suite's mean accuracy is the mean over these ten.
PROBE: tuple[tuple[str, float], ...] = (
    ("rotate", 30), ("shift", 4), ("scale", 0.6), ("scale", 1.4), ("squeeze", 0.3),
    ("thin", 0.75), ("thicken", 1.5), ("noise", 0.4), ("saltpepper", 0.1), ("blur", 1.5),
)


def corrupt(x: np.ndarray, name: str, severity: float, seed: int = 0) -> np.ndarray:
    """``(N, 28, 28)`` digits in [0, 1] corrupted by ``name`` at ``severity`` (float32)."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    a = np.asarray(x)
    if a.dtype == np.uint8 or a.max(initial=0) > 1.0:
        raise ValueError("corrupt takes digits in [0, 1] (divide uint8 images by 255)")
    a, single = a.astype(np.float32), a.ndim == 2
    out = CORRUPTIONS[name](a[None] if single else a, severity, seed)
    return out[0] if single else out
