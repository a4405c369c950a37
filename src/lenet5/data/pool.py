"""The paper's distortion protocol (Section III-C-2): a pool of distorted copies drawn once.

"... the training set was augmented with 540,000 artificial distorted images": the 60,000
training images plus ``copies`` (9) distorted copies of each, drawn once for the whole run, and
every pass presents 60,000 patterns drawn from those 600,000, so over 20 passes each pattern is
seen about twice. ``--distort`` alone draws a fresh distortion at every presentation instead.

Only the copies' affine parameters are drawn and kept (six numbers a copy, 13 MB for 540,000,
from the run's seed), never the 423 MB of warped images: each pass warps the copies it draws.

Pool index ``i`` in ``[0, (copies + 1) N)`` is training image ``i % N``; ``i < N`` is the image
itself, ``i >= N`` its distorted copy with parameters ``params[i - N]``. A pass draws its ``N``
indices without replacement from the generator of ``(seed, epoch)``, so a resumed run replays
exactly what an uninterrupted one presents.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .loader import WARP_BLOCK, TensorLoader, tensor, units
from .transforms import Distortion, apply_affine

POOL_SALT = 999_983  # the pool's own generator, apart from the per-pass ones


@dataclass
class PoolLoader(TensorLoader):
    """A :class:`TensorLoader` whose images for pass ``epoch`` are the ``N`` patterns the pass
    draws from the pool (warped when they are copies); ``distortion`` must be None here, the
    ranges are ``pool_distortion``."""

    pool_distortion: Distortion | None = None
    copies: int = 9

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pool_distortion is None or self.distortion is not None:
            raise ValueError("PoolLoader: give the ranges as pool_distortion, not distortion")
        if self.copies < 1:
            raise ValueError(f"distort_pool must be >= 1 copies, got {self.copies}")
        self.originals, self.original_labels = units(self.images), tensor(self.labels)
        n = self.originals.shape[0]
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + POOL_SALT)
        self.params = self.pool_distortion.sample(n * self.copies, gen)  # (copies N,) each
        self._loaded: int | None = None
        self.set_epoch(self.epoch)

    @property
    def pool_size(self) -> int:
        return self.originals.shape[0] * (self.copies + 1)

    def pass_indices(self, epoch: int) -> torch.Tensor:
        """The ``N`` pool indices pass ``epoch`` presents, without replacement."""
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 7 + 4)
        return torch.randperm(self.pool_size, generator=gen)[: self.originals.shape[0]]

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if self._loaded == epoch:
            return
        if self.is_clean(epoch):  # the clean passes at the end: the originals, in their order
            self.images, self.labels, self._loaded = self.originals, self.original_labels, epoch
            return
        idx = self.pass_indices(epoch)
        n = self.originals.shape[0]
        source = idx % n
        images = self.originals[source.to(self.originals.device)].clone()  # (N, 1, 32, 32)
        copy = (idx >= n).nonzero().flatten()  # positions holding distorted copies
        for start in range(0, copy.shape[0], WARP_BLOCK * 8):
            pos = copy[start : start + WARP_BLOCK * 8]
            k = idx[pos] - n
            params = {name: v[k] for name, v in self.params.items()}
            pos = pos.to(images.device)
            images[pos] = apply_affine(images[pos], params)
        self.images, self.labels = images, self.original_labels[source.to(self.labels.device)]
        self._loaded = epoch
