"""Preprocessing and augmentation on whole batches.

- ``unit_array`` (NumPy) and ``to_unit`` (the same values as a torch tensor): uint8 28x28 digits
  -> float 32x32 in [0, 1], padded with background (0), as the paper feeds LeNet-5 a 32x32 field
  so that stroke ends reach the centre of C3's receptive fields (Section II-B).
- ``Normalization``: an affine map applied per batch. ``paper``: background -0.1, ink 1.175
  (x = -0.1 + 1.275 p); ``standard``: (p - mean) / std with the dataset's training statistics
  (MNIST 0.1307/0.3081, Fashion-MNIST 0.2860/0.3530, measured by ``lenet5 data info``).
- ``Distortion``: the paper's random planar affine transforms (Section III-C-2: translation,
  scaling, squeezing, horizontal shear; plus optional rotation), one draw per sample, applied to
  the [0, 1] images with ``affine_grid``/``grid_sample`` so that the zero padding is background.

``Normalization`` works on NumPy arrays and torch tensors alike. PyTorch is imported only by
the functions that compute with it: the compiled engine trains without it (start-up).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

PAD = 2  # 28 + 2 * 2 = 32


def to_unit(images: np.ndarray | torch.Tensor, pad: int = PAD) -> torch.Tensor:
    """``(N, 28, 28) uint8`` -> ``(N, 1, 28 + 2 pad, 28 + 2 pad) float32`` in [0, 1]: the
    tensor over :func:`unit_array`'s buffer."""
    import torch

    return torch.from_numpy(unit_array(images, pad))


def unit_array(images: np.ndarray | torch.Tensor, pad: int = PAD) -> np.ndarray:
    """:func:`to_unit` as a NumPy array."""
    a = np.asarray(images)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"expected images of shape (N, H, W), got {tuple(a.shape)}")
    n, h, w = a.shape
    # One float32 buffer, the digits cast into its middle: the same values as a float copy then
    # a padded copy of it (tests/test_transforms.py), without the second copy.
    x = np.zeros((n, 1, h + 2 * pad, w + 2 * pad), np.float32)
    x[:, 0, pad : pad + h, pad : pad + w] = a
    x /= np.float32(255.0)
    return x


@dataclass(frozen=True)
class Normalization:
    """x_model = (x_unit - shift) * scale, with x_unit in [0, 1] and 0 the background."""

    mode: str
    shift: float
    scale: float

    @classmethod
    def make(cls, mode: str, dataset: str = "mnist") -> Normalization:
        if mode == "paper":
            # -0.1 + 1.275 p  ==  (p - 0.1 / 1.275) * 1.275
            return cls("paper", 0.1 / 1.275, 1.275)
        if mode == "standard":
            from .datasets import get_spec

            spec = get_spec(dataset)
            return cls("standard", spec.mean, 1.0 / spec.std)
        if mode == "none":
            return cls("none", 0.0, 1.0)
        if mode == "lush":  # Lush's lenet5 demo: pixel values (0-255) x 0.01, background 0
            return cls("lush", 0.0, 2.55)
        raise ValueError(f"unknown normalization {mode!r}; choose paper, standard, none or lush")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) * self.scale

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.scale + self.shift

    def to_dict(self) -> dict:
        return {"mode": self.mode, "shift": self.shift, "scale": self.scale}


@dataclass(frozen=True)
class Distortion:
    """Ranges of the random affine distortions; each parameter is drawn uniformly per sample.

    The paper gives the kinds of transform but not their ranges (open); the defaults are
    modest so that digits stay legible and inside the 32x32 field.
    """

    translate: float = 2.0  # pixels, horizontal and vertical independently, U[-t, t]
    scale: float = 0.10  # isotropic scale factor U[1 - s, 1 + s]
    squeeze: float = 0.10  # anisotropic: x *= (1 + q), y *= (1 - q), q ~ U[-q, q]
    shear: float = 0.20  # horizontal shear x += k * y, k ~ U[-k, k]
    rotate: float = 0.0  # degrees, U[-r, r] (not in the paper; off by default)

    def sample(self, n: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        import torch

        def u(r: float) -> torch.Tensor:
            return (torch.rand(n, generator=generator) * 2 - 1) * r

        return {
            "tx": u(self.translate), "ty": u(self.translate), "scale": 1 + u(self.scale),
            "squeeze": u(self.squeeze), "shear": u(self.shear), "rotate": u(self.rotate),
        }

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return apply_affine(x, self.sample(x.shape[0], generator))


def affine_theta(params: dict[str, torch.Tensor], size: int) -> torch.Tensor:
    """Per-sample ``(N, 2, 3)`` matrices for ``affine_grid`` (output -> input coordinates).

    The forward map is p_out = R S H D p_in + t (D: scale and squeeze, H: shear, R: rotation),
    in pixel units about the image centre; affine_grid needs its inverse, in [-1, 1] units.
    """
    import torch

    n = params["tx"].shape[0]
    sx = params["scale"] * (1 + params["squeeze"])
    sy = params["scale"] * (1 - params["squeeze"])
    k = params["shear"]
    rad = params["rotate"] * (math.pi / 180)
    cos, sin = torch.cos(rad), torch.sin(rad)
    # A = R @ H @ D with H = [[1, k], [0, 1]], D = diag(sx, sy)
    a = torch.stack(
        [
            torch.stack([cos * sx, (cos * k - sin) * sy], -1),
            torch.stack([sin * sx, (sin * k + cos) * sy], -1),
        ],
        -2,
    )  # (N, 2, 2)
    a_inv = torch.linalg.inv(a)
    t = torch.stack([params["tx"], params["ty"]], -1) * (2.0 / size)  # pixels -> [-1, 1]
    theta = torch.cat([a_inv, -(a_inv @ t[..., None])], -1)
    return theta.reshape(n, 2, 3)


def apply_affine(x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Warp ``(N, C, H, W)`` images in [0, 1] (background 0) by per-sample affine parameters."""
    import torch
    import torch.nn.functional as F

    theta = affine_theta({k: v.to(x.device, torch.float32) for k, v in params.items()}, x.shape[-1])
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
