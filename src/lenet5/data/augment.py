"""Training augmentations beyond the paper's affine maps, applied by the loader to whole batches.

The bundled models were brittle where people's drawings differ from MNIST: thin or bold
strokes, wobbly shapes, noisy photos. :class:`Augment` adds, after the affine warp of
:class:`~lenet5.data.transforms.Distortion` (rotation included through ``distort_rotate``):

- **elastic distortions** (Simard, Steinkraus and Platt, ICDAR 2003, Section 2): a random
  displacement field, each component uniform in [-1, 1] per pixel, smoothed by a Gaussian of
  width ``sigma`` and scaled by ``alpha`` pixels (their settings: alpha 34, sigma 4, which took
  a simple CNN to 0.4% error);
- **stroke width**: a per-image blend towards a 3x3 grey dilation (thicker) or erosion
  (thinner), by t ~ U[-s, s];
- **pixel noise**: additive Gaussian noise of a per-image standard deviation U[0, n], or, for
  half the images, salt-and-pepper on a share U[0, n / 4] of the pixels.

All act on ``(N, 1, H, W)`` images in [0, 1] with background 0, draw from one
``torch.Generator`` and return images clipped to [0, 1]. The draws are made per batch on the
batch the caller holds (under data parallelism: per rank).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augment:
    """Ranges of the extra training distortions; 0 turns one off."""

    elastic_alpha: float = 0.0  # pixels; Simard 2003: 34
    elastic_sigma: float = 4.0  # pixels; Simard 2003: 4
    stroke: float = 0.0  # blend towards dilation / erosion, t ~ U[-s, s]
    noise: float = 0.0  # largest Gaussian noise std (or salt-and-pepper share * 4)

    @property
    def active(self) -> bool:
        return bool(self.elastic_alpha or self.stroke or self.noise)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.shape[0] == 0:
            return x
        if self.elastic_alpha:
            x = elastic(x, self.elastic_alpha, self.elastic_sigma, generator)
        if self.stroke:
            t = (torch.rand(x.shape[0], generator=generator) * 2 - 1) * self.stroke
            x = stroke_width(x, t.to(x.device, x.dtype))
        if self.noise:
            x = pixel_noise(x, self.noise, generator)
        return x


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """A normalised 1-D Gaussian of width ``sigma``, truncated at 3 sigma."""
    r = max(1, int(math.ceil(3 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2)
    return k / k.sum()


def smoothing_matrix(size: int, sigma: float) -> torch.Tensor:
    """``(size, size)``: row i is the Gaussian centred on pixel i (zero outside the image), so
    ``G @ f @ G.T`` smooths a ``(size, size)`` field; a matrix product is far cheaper on the
    CPU than a 25-tap convolution."""
    k = gaussian_kernel(sigma)
    r = k.numel() // 2
    g = torch.zeros(size, size + 2 * r)
    for i in range(size):
        g[i, i : i + 2 * r + 1] = k
    return g[:, r : r + size]


def smooth(field: torch.Tensor, sigma: float) -> torch.Tensor:
    """``(N, C, H, W)`` smoothed channel by channel by a separable Gaussian (zero outside)."""
    gy = smoothing_matrix(field.shape[-2], sigma).to(field.device, field.dtype)
    gx = smoothing_matrix(field.shape[-1], sigma).to(field.device, field.dtype)
    return gy @ field @ gx.T


def elastic(x: torch.Tensor, alpha: float, sigma: float,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Simard's elastic distortion: every output pixel reads the input at its own position
    plus ``alpha * smooth(U[-1, 1])`` pixels (bilinear, background outside)."""
    n, _, h, w = x.shape
    disp = torch.rand(n, 2, h, w, generator=generator) * 2 - 1
    disp = smooth(disp.to(x.device, x.dtype), sigma) * alpha  # (N, 2, H, W) pixels
    ys, xs = torch.meshgrid(torch.arange(h, dtype=x.dtype, device=x.device),
                            torch.arange(w, dtype=x.dtype, device=x.device), indexing="ij")
    gx = (xs + disp[:, 0] + 0.5) * (2.0 / w) - 1  # pixel centres -> [-1, 1] (align_corners off)
    gy = (ys + disp[:, 1] + 0.5) * (2.0 / h) - 1
    grid = torch.stack([gx, gy], -1)  # (N, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def stroke_width(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Thicker strokes for ``t > 0`` (towards a 3x3 grey dilation), thinner for ``t < 0``
    (towards an erosion); ``t`` per image, ``|t| = 1`` the whole step."""
    t = t.view(-1, 1, 1, 1)
    target = torch.where(t >= 0, _window(x, torch.maximum), _window(x, torch.minimum))
    return (x + t.abs() * (target - x)).clamp_(0, 1)


def _window(x: torch.Tensor, op) -> torch.Tensor:
    """``op`` (max or min) over each pixel's 3x3 neighbourhood, background 0 outside,
    separably: along rows, then columns."""
    p = F.pad(x, (1, 1, 1, 1))
    rows = op(op(p[..., :, :-2], p[..., :, 1:-1]), p[..., :, 2:])  # (N, 1, H + 2, W)
    return op(op(rows[..., :-2, :], rows[..., 1:-1, :]), rows[..., 2:, :])


def pixel_noise(x: torch.Tensor, noise: float,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Half the images get Gaussian noise of std U[0, noise], the other half salt-and-pepper
    on a share U[0, noise / 4] of their pixels."""
    n = x.shape[0]
    size = (n, 1, 1, 1)
    level = torch.rand(size, generator=generator)
    gaussian = torch.rand(size, generator=generator) < 0.5
    normal = torch.randn(x.shape, generator=generator)
    u = torch.rand(x.shape, generator=generator)
    salt = torch.rand(x.shape, generator=generator) < 0.5
    level, gaussian, normal, u, salt = (a.to(x.device) for a in (level, gaussian, normal, u, salt))
    noisy = x + normal.to(x.dtype) * (level * noise).to(x.dtype)
    flipped = u < level * (noise / 4)
    peppered = torch.where(flipped, salt.to(x.dtype), x)
    return torch.where(gaussian, noisy, peppered).clamp_(0, 1)
