"""In-memory batch iteration: the whole split lives on the device as one tensor.

No per-sample ``Dataset.__getitem__``: each batch is one index into the resident tensor, then a
vectorised distortion (training only) and normalisation. The order is a seeded permutation
drawn anew every epoch from ``(seed, epoch)`` alone, so a resumed run sees exactly the batches
an uninterrupted one would. Under data parallelism every rank draws the same permutation and
takes its own slice of each global batch, so ``world_size`` ranks at batch ``b`` see exactly
what one process at batch ``world_size * b`` sees.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .augment import Augment
from .transforms import Distortion, Normalization, apply_affine

WARP_BLOCK = 1024  # distorted images warped per call


@dataclass
class TensorLoader:
    images: torch.Tensor  # (N, 1, 32, 32) in [0, 1]
    labels: torch.Tensor  # (N,) int64
    batch_size: int
    normalization: Normalization
    shuffle: bool = False
    seed: int = 0
    distortion: Distortion | None = None
    rank: int = 0
    world_size: int = 1
    drop_last: bool = False
    epoch: int = 0
    augment: Augment | None = None  # elastic, stroke, noise after the affine warp (augment.py)

    def __post_init__(self) -> None:
        if self.images.shape[0] != self.labels.shape[0]:
            raise ValueError("images and labels differ in length")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def __len__(self) -> int:
        n = self.images.shape[0]
        return n // self.global_batch if self.drop_last else -(-n // self.global_batch)

    def generator(self, salt: int) -> torch.Generator:
        return torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 7 + salt)

    def order(self) -> torch.Tensor:
        n = self.images.shape[0]
        if not self.shuffle:
            return torch.arange(n)
        return torch.randperm(n, generator=self.generator(1))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.batches():
            yield self.normalization(x), y

    def pass_images(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This pass's images in presentation order, distorted and augmented as
        :meth:`__iter__` gives them (the same draws) but not normalised, with their labels:
        what an engine that makes its own batches (the compiled one) trains on when the
        loader's augmentations have no compiled counterpart. One split's worth of memory."""
        xs, ys = zip(*self.batches())
        return torch.cat(xs), torch.cat(ys)

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's batches of the pass in [0, 1], before normalisation."""
        order = self.order().to(self.images.device)
        starts = range(0, len(self) * self.global_batch, self.global_batch)
        aug_gen = self.generator(3) if self.augment is not None else None
        if self.distortion is None:
            for start in starts:
                mine = self._mine(order[start : start + self.global_batch])
                yield self._augmented(self.images[mine], aug_gen), self.labels[mine]
            return
        # Distorted: the draws are made batch by batch, as ever, but the warps of a block of
        # batches are one call (at batch 1 a warp per step cost more than half a training step).
        gen = self.generator(2)
        per_block = max(1, WARP_BLOCK // self.global_batch)
        for b in range(0, len(starts), per_block):
            mines, params = [], []
            for start in starts[b : b + per_block]:
                chunk = order[start : start + self.global_batch]
                mine = self._mine(chunk)
                # Draw for the whole global batch so the draws do not depend on world_size.
                drawn = self.distortion.sample(chunk.shape[0], gen)
                lo = self.rank * self.batch_size
                params.append({k: v[lo : lo + mine.shape[0]] for k, v in drawn.items()})
                mines.append(mine)
            warped = self.images[torch.cat(mines)]
            if warped.shape[0]:  # (a rank's slice of the last batch may be empty)
                warped = apply_affine(warped, {k: torch.cat([p[k] for p in params]) for k in params[0]})
            for mine, x in zip(mines, warped.split([m.shape[0] for m in mines])):
                yield self._augmented(x, aug_gen), self.labels[mine]

    def _augmented(self, x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        return x if self.augment is None else self.augment(x, gen)

    def _mine(self, chunk: torch.Tensor) -> torch.Tensor:
        """This rank's slice of a global batch."""
        return chunk[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
