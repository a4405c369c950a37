"""LeNet-1 (LeCun et al. 1990; the 1998 paper's Section III-C-7 and Fig. 9: 1.7% test error).

The digit is downsampled to a 16x16 box and centred in a 28x28 field, then
C1 (4 maps, 5x5) -> S2 (2x2 subsampling) -> C3 (12 maps, 5x5, each reading 2 of S2's 4 maps:
:data:`~.fig9_spec.LENET1_C3`) -> S4 (2x2) -> 10 outputs fully connected to S4's 12 x 4 x 4.
Layers as in the 1998 network (:mod:`.lenet5_1998`): the scaled tanh, trainable subsampling
coefficients, the fan-in initialisation; the output is a linear 10-way layer (logits, trained
with cross-entropy: docs/fig9.md). 2,678 trainable parameters, 104,842 connections and
100,992 multiply-adds (``lenet5 summary lenet1``; the paper: about 3k and 100k).

Downsampling: MNIST's 28x28 images hold a 20x20 digit box. The model takes the usual 32x32
field, scales it by ``digit / 20`` (bilinear) and pads the result back to 28x28 with its border
(background), so the digit box becomes ``digit`` x ``digit`` pixels (16: as published).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F

from . import register_model
from .baselines import LogitsModel
from .fig9_spec import LENET1_C3, LeNet1Config
from .lenet5_1998 import Conv, Full, Subsampling, TableConv, squash

FIELD, BOX = 28, 20  # MNIST's field and the digit box inside it


def shrink_field(x: torch.Tensor, digit: int, field: int = FIELD) -> torch.Tensor:
    """``(B, 1, 32, 32)`` -> ``(B, 1, field, field)``: the 32x32 field scaled by ``digit / 20``
    and padded (or cropped) to ``field`` with its border value (the background)."""
    size = round(x.shape[-1] * digit / BOX)
    if size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    lo = (field - size) // 2
    hi = field - size - lo
    if lo >= 0 and hi >= 0:
        return F.pad(x, (lo, hi, lo, hi), mode="replicate")
    start = -lo
    return x[..., start : start + field, start : start + field]


@register_model("lenet1", config=LeNet1Config, head="logits", normalization="paper", loss="ce")
class LeNet1(LogitsModel):
    """LeNet-1: 16x16 digit, 4 and 12 feature maps, 10 outputs."""

    layer_names = ("c1", "s2", "c3", "s4")

    def __init__(self, config: LeNet1Config | None = None):
        super().__init__()
        self.config = c = config or LeNet1Config()
        self.c1 = Conv(1, 4, init=c.init)
        self.s2 = Subsampling(4, "average", init=c.init)
        self.c3 = TableConv(LENET1_C3, 4, init=c.init)
        self.s4 = Subsampling(12, "average", init=c.init)
        self.head = Full(12 * 4 * 4, 10, init=c.init)

    def features(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats: OrderedDict[str, torch.Tensor] = OrderedDict()
        x = feats["input"] = shrink_field(x, self.config.digit)  # (B, 1, 28, 28)
        x = feats["c1"] = squash(self.c1(x))  # (B, 4, 24, 24)
        x = feats["s2"] = squash(self.s2(x))  # (B, 4, 12, 12)
        x = feats["c3"] = squash(self.c3(x))  # (B, 12, 8, 8)
        x = feats["s4"] = squash(self.s4(x))  # (B, 12, 4, 4)
        feats["out"] = self.head(x.flatten(1))  # (B, 10) logits
        return feats
