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

from .transforms import Distortion, Normalization, apply_affine


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
        order = self.order().to(self.images.device)
        gen = self.generator(2) if self.distortion is not None else None
        for start in range(0, len(self) * self.global_batch, self.global_batch):
            chunk = order[start : start + self.global_batch]
            mine = chunk[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
            x = self.images[mine]
            if self.distortion is not None:
                # Draw for the whole global batch so the draws do not depend on world_size.
                params = self.distortion.sample(chunk.shape[0], gen)
                lo, hi = self.rank * self.batch_size, self.rank * self.batch_size + mine.shape[0]
                x = apply_affine(x, {k: v[lo:hi] for k, v in params.items()})
            yield self.normalization(x), self.labels[mine]
