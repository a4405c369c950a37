"""LeNet-5 as most people write it today: the 1998 layout with modern parts.

C1 conv 5x5 (6) -> S2 pool -> C3 conv 5x5 (16, fully connected, no table) -> S4 pool ->
C5 conv 5x5 (120) -> F6 linear (84) -> linear 10-way head, softmax cross-entropy. Options:
ReLU or tanh, max or average pooling, batch-norm after each conv and F6, dropout before the
head, and wider maps. Standard width: 61,706 parameters; 61,932 with batch-norm
(``lenet5 summary relu-maxpool`` / ``batchnorm``).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import register_model
from .spec import ModernConfig
from .spec import scores as head_scores

__all__ = ["ModernConfig", "ModernLeNet5"]


@register_model("lenet5-modern", config=ModernConfig, head="logits", normalization="standard", loss="ce")
class ModernLeNet5(nn.Module):
    """LeNet-5 with ReLU/tanh, max/avg pooling, optional batch-norm and dropout, softmax head."""

    layer_names = ("c1", "s2", "c3", "s4", "c5", "f6")

    def __init__(self, config: ModernConfig | None = None):
        super().__init__()
        self.config = c = config or ModernConfig()
        w1, w3, w5, w6 = c.widths
        bn = c.batchnorm

        def block(cin: int, cout: int) -> nn.Sequential:
            conv = nn.Conv2d(cin, cout, 5, bias=not bn)
            return nn.Sequential(conv, nn.BatchNorm2d(cout)) if bn else nn.Sequential(conv)

        self.c1 = block(1, w1)
        self.c3 = block(w1, w3)
        self.c5 = block(w3, w5)
        self.f6 = nn.Sequential(nn.Linear(w5, w6, bias=not bn), *([nn.BatchNorm1d(w6)] if bn else []))
        self.head = nn.Linear(w6, 10)
        self.drop = nn.Dropout(c.dropout)
        self.act = nn.ReLU() if c.activation == "relu" else nn.Tanh()
        self.pool = nn.MaxPool2d(2) if c.pool == "max" else nn.AvgPool2d(2)

    def features(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats: OrderedDict[str, torch.Tensor] = OrderedDict()
        x = feats["c1"] = self.act(self.c1(x))  # (B, 6, 28, 28)
        x = feats["s2"] = self.pool(x)  # (B, 6, 14, 14)
        x = feats["c3"] = self.act(self.c3(x))  # (B, 16, 10, 10)
        x = feats["s4"] = self.pool(x)  # (B, 16, 5, 5)
        x = feats["c5"] = self.act(self.c5(x))  # (B, 120, 1, 1)
        x = feats["f6"] = self.act(self.f6(self.drop(x.flatten(1))))  # (B, 84)
        feats["out"] = self.head(self.drop(x))  # (B, 10) logits
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)["out"]

    def scores(self, out: torch.Tensor) -> torch.Tensor:
        return head_scores(out, "logits")

    def log_probs(self, out: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(out, 1)
