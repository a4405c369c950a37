"""Training augmentations beyond the paper's affine maps, applied by the loader to whole batches.

The bundled models were brittle where people's drawings differ from MNIST: thin or bold
strokes, wobbly shapes, noisy photos. :class:`Augment` adds, after the affine warp of
:class:`~lenet5.data.transforms.Distortion` (rotation included through ``distort_rotate``):

- **elastic distortions** (Simard, Steinkraus and Platt, ICDAR 2003, Section 2): a random
  displacement field, each component uniform in [-1, 1] per pixel, smoothed by a Gaussian of
  width ``sigma`` and scaled by ``alpha`` pixels (their settings: alpha 34, sigma 4, which took
  a simple CNN to 0.4% error);
Per image at most one change of appearance, each for a quarter of the images (of the share
``share`` augmented at all; the rest pass as the affine warp left them):

- **stroke width**: t ~ U[-s, s] steps of a 3x3 grey dilation (t > 0, thicker; a
  whole step then a partial one when t > 1) or erosion (t < 0, thinner; at most ``THIN_MAX`` of a step);
- **blur**: a Gaussian of sigma U[0, b];
- **pixel noise**: additive Gaussian noise of a standard deviation U[0, n], or (for half)
  salt-and-pepper on a share U[0, n / 4] of the pixels.

All act on ``(N, 1, H, W)`` images in [0, 1] with background 0, draw from one
``torch.Generator`` and return images clipped to [0, 1]. The draws are made per batch on the
batch the caller holds (under data parallelism: per rank).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

THIN_MAX = 0.6  # erosion steps at most: a whole step erases MNIST's thinnest strokes


@dataclass(frozen=True)
class Augment:
    """Ranges of the extra training distortions; 0 turns one off."""

    elastic_alpha: float = 0.0  # pixels; Simard 2003: 34
    elastic_sigma: float = 4.0  # pixels; Simard 2003: 4
    stroke: float = 0.0  # dilation / erosion steps, t ~ U[-s, s]
    noise: float = 0.0  # largest Gaussian noise std (or salt-and-pepper share * 4)
    blur: float = 0.0  # largest Gaussian blur sigma, pixels
    share: float = 1.0  # the share of images augmented at all; the others pass unchanged

    @property
    def active(self) -> bool:
        return bool(self.elastic_alpha or self.stroke or self.noise or self.blur) and self.share > 0

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.share >= 1 or x.shape[0] == 0:
            return self._augment(x, generator)
        i = (torch.rand(x.shape[0], generator=generator) < self.share).nonzero()[:, 0].to(x.device)
        return x.index_copy(0, i, self._augment(x[i], generator))

    def _augment(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if x.shape[0] == 0:
            return x
        n = x.shape[0]
        if self.elastic_alpha:
            x = elastic(x, self.elastic_alpha, self.elastic_sigma, generator)
        # One change of appearance per image at most (stroke, blur or noise, a quarter each;
        # a quarter keeps its look): stacked, they make digits no one could read.
        kind = torch.randint(0, 4, (n,), generator=generator).view(-1, 1, 1, 1).to(x.device)
        amount = torch.rand(n, generator=generator).to(x.device, x.dtype)
        if self.stroke:
            t = ((amount * 2 - 1) * self.stroke).clamp(min=-THIN_MAX)
            t = torch.where(kind.view(-1) == 1, t, 0.0)
            x = stroke_width(stroke_width(x, t.clamp(max=1)), (t - 1).clamp(min=0))
        if self.blur and (i := (kind.view(-1) == 2).nonzero()[:, 0]).numel():
            x = x.index_copy(0, i, blur(x[i], amount[i] * self.blur))
        if self.noise and (i := (kind.view(-1) == 3).nonzero()[:, 0]).numel():
            x = x.index_copy(0, i, pixel_noise(x[i], self.noise, generator))
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


def blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Each image of ``(N, 1, H, W)`` blurred by its own Gaussian ``sigma`` (0: unchanged),
    as ``G @ x @ G.T`` with per-image smoothing matrices (zero outside the image)."""
    h, w = x.shape[-2:]
    if h != w:
        raise ValueError(f"blur needs square images, got {h}x{w}")
    r = torch.arange(h, dtype=x.dtype, device=x.device)
    d = (r[:, None] - r[None, :]) ** 2  # (H, H) squared distances (square images: H == W)
    s = sigma.clamp(min=1e-3).view(-1, 1, 1)
    g = torch.exp(-0.5 * d / s**2)
    g = g / g.sum(-1, keepdim=True)  # normalised per row: the ink is kept away from the edges
    g = torch.where(sigma.view(-1, 1, 1) > 0, g, torch.eye(h, dtype=x.dtype, device=x.device))
    return (g[:, None] @ x @ g[:, None].transpose(-1, -2)).clamp_(0, 1)


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
