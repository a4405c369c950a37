"""The RBF output's fixed prototypes: stylized 7x12 digit bitmaps (paper Fig. 3).

The bitmaps themselves live in :mod:`.spec` (shared with the NumPy engine); this module turns
them into the torch tensor the RBF layer holds.
"""

from __future__ import annotations

import torch

from .spec import BITMAP_ROWS, HEIGHT, WIDTH, bitmap_strings, prototype_values

__all__ = ["BITMAP_ROWS", "HEIGHT", "WIDTH", "bitmap_strings", "rbf_prototypes"]


def rbf_prototypes(dtype: torch.dtype = torch.float32, kind: str = "bitmaps") -> torch.Tensor:
    """``(10, 84)`` tensor of +-1: ink = +1, paper = -1, row-major over the 12x7 bitmap (or
    ``kind="onehot"``: ``(10, 10)``, Lush's +-1 targets; :func:`spec.prototype_values`)."""
    return torch.tensor(prototype_values(kind), dtype=dtype)
