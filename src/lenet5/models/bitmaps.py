"""The RBF output's fixed prototypes: stylized 7x12 digit bitmaps (paper Fig. 3).

Each row below holds one pixel row of all ten digits, 0 to 9, separated by two spaces;
``#`` is ink (+1) and ``.`` is paper (-1). Read row by row they give the 84-vector w_i of
class i. Transcribed from the figure as given in docs/lenet5-1998.md.
"""

from __future__ import annotations

import torch

BITMAP_ROWS = (
    ".#####.  ...##..  .#####.  #######  .#####.  .#####.  ..####.  #######  .#####.  .#####.",
    ".......  ..###..  .......  .....##  .......  .......  .##....  .....##  ##...##  ##..###",
    "..###..  .####..  .#####.  ....##.  .......  #######  ##.....  .....##  ##...##  ##...##",
    ".##.##.  ...##..  ##...##  ...##..  .##..##  ##.....  ##.....  ....##.  ##...##  ##...##",
    "##...##  ...##..  #....##  ..####.  .##..##  ##.....  ######.  ...##..  .#####.  ##..###",
    "##...##  ...##..  ....##.  .....##  ###..##  .####..  ###..##  ...##..  ##...##  .######",
    "##...##  ...##..  ..###..  .....##  ##...##  ..####.  ##...##  ..##...  ##...##  .....##",
    "##...##  ...##..  .##....  .....##  ##...##  .....##  ##...##  ..##...  ##...##  .....##",
    ".##.##.  ...##..  ##.....  ##...##  ##..###  ##...##  ###..##  ..##...  ##...##  ....##.",
    "..###..  .######  #######  .#####.  .######  .#####.  .#####.  ..##...  .#####.  .####..",
    ".......  .......  .......  .......  .....##  .......  .......  .......  .......  .......",
    ".......  .......  .......  .......  .....##  .......  .......  .......  .......  .......",
)
WIDTH, HEIGHT = 7, 12


def bitmap_strings() -> list[list[str]]:
    """``[digit][row]`` -> the 7-character row of that digit's bitmap."""
    rows = [line.split() for line in BITMAP_ROWS]
    return [[row[d] for row in rows] for d in range(10)]


def rbf_prototypes(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(10, 84)`` tensor of +-1: ink = +1, paper = -1, row-major over the 12x7 bitmap."""
    values = [[1.0 if ch == "#" else -1.0 for row in digit for ch in row] for digit in bitmap_strings()]
    return torch.tensor(values, dtype=dtype)
