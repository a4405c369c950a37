"""Deslanting: the moment-based deskew the paper's Fig. 9 applies before several classifiers.

Section III-C-1 ("deslanted" rows): the slant of a digit is estimated from the second moments of
its ink and undone by a horizontal shear. With ink weights w(x, y), centre of mass (cx, cy),
mu11 = E[(x - cx)(y - cy)] and mu02 = E[(y - cy)^2], the slant is alpha = mu11 / mu02: the
principal axis leans by alpha pixels per row. The deslanted image is

    out(x, y) = in(x + alpha (y - cy), y),

a shear about the centre row, which leaves the centre of mass where it was and makes the
sheared image's mu11 zero (a shear by -alpha changes mu11 by -alpha mu02).

It works on whatever intensities it is given: the ink is measured above the image's own
minimum (its background), so raw [0, 1] pixels and normalised model inputs (background -0.1,
or (p - mean) / std) give the same shear, and the background is restored outside the digit. A
blank image (no ink) is returned unchanged. Batched, in torch (``affine_grid`` is not needed:
the sampling grid is built directly and read with ``grid_sample``, which ONNX exports), so a
model can deslant inside its ``forward`` and ``lenet5 predict --deslant`` can deslant any input.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(mass, cy, slant)`` of each image ``(B, 1, H, W)``: total ink above the background,
    the centre row, and alpha = mu11 / mu02 (0 where there is no ink or no vertical extent)."""
    w = x - x.amin((-2, -1), keepdim=True)  # ink >= 0, background 0
    h, wd = x.shape[-2:]
    ys = torch.arange(h, dtype=x.dtype, device=x.device)[:, None]  # (H, 1)
    xs = torch.arange(wd, dtype=x.dtype, device=x.device)[None, :]  # (1, W)
    mass = w.sum((-2, -1))  # (B, 1)
    safe = mass.clamp_min(1e-12)
    cx = (w * xs).sum((-2, -1)) / safe
    cy = (w * ys).sum((-2, -1)) / safe
    dx = xs - cx[..., None, None]
    dy = ys - cy[..., None, None]
    mu11 = (w * dx * dy).sum((-2, -1)) / safe
    mu02 = (w * dy * dy).sum((-2, -1)) / safe
    ok = (mass > 1e-6) & (mu02 > 1e-6)
    slant = torch.where(ok, mu11 / mu02.clamp_min(1e-6), torch.zeros_like(mu11))
    return mass, cy, slant


def deslant(x: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` images with their slant sheared away (see the module docstring)."""
    if x.ndim != 4:
        raise ValueError(f"deslant expects (B, C, H, W) images, got shape {tuple(x.shape)}")
    floor = x.amin((-2, -1), keepdim=True)
    ink = x - floor
    _, cy, slant = moments(x)  # (B, 1) each
    b, _, h, w = x.shape
    ys = torch.arange(h, dtype=x.dtype, device=x.device)[None, :, None]  # (1, H, 1)
    xs = torch.arange(w, dtype=x.dtype, device=x.device)[None, None, :]  # (1, 1, W)
    src_x = xs + slant[:, :, None] * (ys - cy[:, :, None])  # (B, H, W) source column per pixel
    src_y = ys.expand(b, h, w)
    # grid_sample's coordinates: -1 and 1 are the centres of the first and last pixels.
    grid = torch.stack([src_x * (2.0 / (w - 1)) - 1.0, src_y * (2.0 / (h - 1)) - 1.0], -1)
    sheared = F.grid_sample(ink, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return sheared + floor


def deslant_images(images: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` or ``(H, W)`` digits (uint8 or float) deslanted, same shape and dtype."""
    a = np.asarray(images)
    single = a.ndim == 2
    t = torch.as_tensor(a[None] if single else a, dtype=torch.float32)[:, None]
    out = deslant(t)[:, 0].numpy()
    if a.dtype == np.uint8:
        out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    else:
        out = out.astype(a.dtype, copy=False)
    return out[0] if single else out
