"""In-memory batch iteration: the whole split lives on the device as one array.

No per-sample ``Dataset.__getitem__``: each batch is one index into the resident tensor, then a
vectorised distortion (training only) and normalisation. The order is a seeded permutation
drawn anew every epoch from ``(seed, epoch)`` alone, so a resumed run sees exactly the batches
an uninterrupted one would. Under data parallelism every rank draws the same permutation and
takes its own slice of each global batch, so ``world_size`` ranks at batch ``b`` see exactly
what one process at batch ``world_size * b`` sees.

The split may be held as torch tensors (on any device) or as NumPy arrays, or as the raw digits
(``(N, 28, 28)`` uint8, NumPy: the compiled engine reads them as they are, a fifth of the memory
and no conversion at start-up); where the loader hands images out (batches, :meth:`take`) they
are made ``(N, 1, 32, 32)`` floats in [0, 1] as :func:`~lenet5.data.transforms.to_unit` makes
them. The order is drawn
without PyTorch (:func:`randperm`, the same permutation as ``torch.randperm``), so an engine that
makes its own batches from ``images``, ``labels`` and :meth:`TensorLoader.order` (the compiled
one) trains without importing it; iterating the batches (distortions, augmentations, the
per-step engines) imports PyTorch and yields tensors, over NumPy arrays without a copy.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .transforms import Distortion, Normalization, apply_affine, to_unit, unit_array

if TYPE_CHECKING:
    import torch

    from .augment import Augment

WARP_BLOCK = 1024  # distorted images warped per call


def randperm(n: int, seed: int) -> np.ndarray:
    """``torch.randperm(n, generator=torch.Generator().manual_seed(seed))`` on the CPU, without
    PyTorch: the same Mersenne Twister (seeded with the seed's low 32 bits, as torch seeds it;
    NumPy's legacy ``RandomState`` is that generator) and the same Fisher-Yates pass (swap i
    with i + draw mod (n - i)). ``tests/test_transforms.py`` holds it equal to torch's."""
    if n < 1:
        return np.arange(max(n, 0), dtype=np.int64)
    draws = np.random.RandomState(seed & 0xFFFFFFFF).randint(0, 2**32, n - 1, dtype=np.uint32)
    i = np.arange(n - 1)
    swaps = (i + draws.astype(np.int64) % (n - i)).tolist()
    out = list(range(n))
    for a, b in enumerate(swaps):
        out[a], out[b] = out[b], out[a]
    return np.array(out, dtype=np.int64)


def tensor(a: Any) -> torch.Tensor:
    """A torch tensor over ``a`` (a NumPy array: no copy)."""
    import torch

    return a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))


def units(a: Any) -> torch.Tensor:
    """A split's images as ``(N, 1, 32, 32)`` floats in [0, 1], a torch tensor: raw digits made
    so (:func:`to_unit`), tensors and float arrays as they are (no copy)."""
    return to_unit(a) if is_raw(a) else tensor(a)


def is_raw(a: Any) -> bool:
    """Raw digits ``(N, h, w)`` rather than unit images ``(N, 1, 32, 32)``."""
    return a.ndim == 3


def array(a: Any) -> np.ndarray:
    """A NumPy array of ``a`` (a NumPy array as it is; a torch tensor through the CPU)."""
    return a if isinstance(a, np.ndarray) else a.detach().cpu().numpy()


@dataclass
class TensorLoader:
    images: Any  # (N, 1, 32, 32) in [0, 1] (a torch tensor on any device, or NumPy), or raw digits
    labels: Any  # (N,) int64, as ``images``
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
    clean_from: int | None = None  # passes from this one on present the digits as they are

    def __post_init__(self) -> None:
        if self.images.shape[0] != self.labels.shape[0]:
            raise ValueError("images and labels differ in length")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        self._planned = (self.distortion, self.augment)
        TensorLoader.set_epoch(self, self.epoch)  # (a subclass's is not ready to run yet)

    def set_epoch(self, epoch: int) -> None:
        """Pass ``epoch`` next: its order and draws, and no distortion or augmentation in the
        clean passes at the end (``clean_from``)."""
        self.epoch = epoch
        self.distortion, self.augment = (None, None) if self.is_clean(epoch) else self._planned

    def is_clean(self, epoch: int) -> bool:
        """Whether pass ``epoch`` presents the digits as they are (``--clean-epochs``)."""
        return self.clean_from is not None and epoch >= self.clean_from

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def __len__(self) -> int:
        n = self.images.shape[0]
        return n // self.global_batch if self.drop_last else -(-n // self.global_batch)

    def seed_for(self, salt: int) -> int:
        """The seed of this pass's generator ``salt`` (1: order, 2: distortions, 3: augmentations)."""
        return (self.seed * 1_000_003 + self.epoch) * 7 + salt

    def generator(self, salt: int) -> torch.Generator:
        import torch

        return torch.Generator().manual_seed(self.seed_for(salt))

    def order(self) -> np.ndarray:
        """This pass's order of the split's indices, ``(N,)`` int64 (the same as ever:
        ``torch.randperm`` from generator 1, :func:`randperm`)."""
        n = self.images.shape[0]
        if not self.shuffle:
            return np.arange(n, dtype=np.int64)
        return randperm(n, self.seed_for(1))

    def take(self, index: np.ndarray) -> Any:
        """``images[index]`` (a NumPy index) as unit images, in the split's own arrays and
        device."""
        if is_raw(self.images):
            return unit_array(self.images[index])
        if isinstance(self.images, np.ndarray):
            return self.images[index]
        return self.images[tensor(index).to(self.images.device)]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.batches():
            yield self.normalization(x), y

    def pass_images(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This pass's images in presentation order, distorted and augmented as
        :meth:`__iter__` gives them (the same draws) but not normalised, with their labels:
        what an engine that makes its own batches (the compiled one) trains on when the
        loader's augmentations have no compiled counterpart. One split's worth of memory."""
        import torch

        xs, ys = zip(*self.batches())
        return torch.cat(xs), torch.cat(ys)

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's batches of the pass in [0, 1], before normalisation (torch tensors)."""
        import torch

        images, labels = units(self.images), tensor(self.labels)
        order = tensor(self.order()).to(images.device)
        starts = range(0, len(self) * self.global_batch, self.global_batch)
        aug_gen = self.generator(3) if self.augment is not None else None
        if self.distortion is None:
            for start in starts:
                mine = self._mine(order[start : start + self.global_batch])
                yield self._augmented(images[mine], aug_gen), labels[mine]
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
            warped = images[torch.cat(mines)]
            if warped.shape[0]:  # (a rank's slice of the last batch may be empty)
                warped = apply_affine(warped, {k: torch.cat([p[k] for p in params]) for k in params[0]})
            for mine, x in zip(mines, warped.split([m.shape[0] for m in mines])):
                yield self._augmented(x, aug_gen), labels[mine]

    def _augmented(self, x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        return x if self.augment is None else self.augment(x, gen)

    def _mine(self, chunk: torch.Tensor) -> torch.Tensor:
        """This rank's slice of a global batch."""
        return chunk[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
