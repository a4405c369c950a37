"""LeNet-4 (the 1998 paper's Section III-C-8 and Fig. 9: 1.1% test error).

"4 first-level feature maps, followed by 8 subsampling maps connected in pairs to each
first-layer feature maps, then 16 feature maps, followed by 16 subsampling maps, followed by a
fully connected layer with 120 units, followed by the output layer (10 units)", about 17,000
weights and 260,000 connections. On the 32x32 field:

C1 (4 maps, 5x5) -> S2 (8 maps: each C1 map subsampled twice, with its own coefficients)
-> C3 (16 maps, 5x5, each reading ``c3_inputs`` of S2's 8: :func:`~.fig9_spec.lenet4_c3`)
-> S4 (16 maps) -> C5 (120 units, 5x5 windows on ``c5_inputs`` of S4's 16 maps) -> 10 outputs.

The paper's two counts cannot both hold with a fully connected 120-unit layer (that alone is
48,120 weights), so the 120 units read ``c5_inputs`` = 5 maps each by default: 18,098 weights
and 269,306 connections (docs/fig9.md; ``lenet5 summary lenet4``). Layers as in the 1998
network: scaled tanh, trainable subsampling, fan-in initialisation; a linear 10-way output.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from . import register_model
from .baselines import LogitsModel
from .fig9_spec import LeNet4Config, LeNet4KNNConfig, lenet4_c3, lenet4_c5
from .lenet5_1998 import Conv, Full, Subsampling, TableConv, squash


@register_model("lenet4", config=LeNet4Config, head="logits", normalization="paper", loss="ce")
class LeNet4(LogitsModel):
    """LeNet-4: 4, 8, 16, 16 maps, 120 units, 10 outputs."""

    layer_names = ("c1", "s2", "c3", "s4", "c5")

    def __init__(self, config: LeNet4Config | None = None):
        super().__init__()
        self.config = c = config or LeNet4Config()
        self.c1 = Conv(1, 4, init=c.init)
        self.s2 = Subsampling(8, "average", init=c.init)  # two per C1 map
        self.c3 = TableConv(lenet4_c3(c.c3_inputs), 8, init=c.init)
        self.s4 = Subsampling(16, "average", init=c.init)
        self.c5 = TableConv(lenet4_c5(120, c.c5_inputs), 16, init=c.init)
        self.head = Full(120, 10, init=c.init)

    def features(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats: OrderedDict[str, torch.Tensor] = OrderedDict()
        x = feats["c1"] = squash(self.c1(x))  # (B, 4, 28, 28)
        x = feats["s2"] = squash(self.s2(x.repeat_interleave(2, 1)))  # (B, 8, 14, 14)
        x = feats["c3"] = squash(self.c3(x))  # (B, 16, 10, 10)
        x = feats["s4"] = squash(self.s4(x))  # (B, 16, 5, 5)
        x = feats["c5"] = squash(self.c5(x))  # (B, 120, 1, 1)
        feats["out"] = self.head(x.flatten(1))  # (B, 10) logits
        return feats


@register_model("lenet4-knn", config=LeNet4KNNConfig, head="logits", normalization="paper",
                loss="ce")
class LeNet4KNN(LeNet4):
    """LeNet-4 with a k-NN last layer: its 120 C5 features against those of the training set
    (Section III-C-8). The network's weights come from a trained LeNet-4 (``load_state_dict``
    with ``strict=False``: all but its output layer); :meth:`fit` stores the features."""

    closed_form = True  # fitted on a trained LeNet-4 by lenet5 compare, not trained itself

    def __init__(self, config: LeNet4KNNConfig | None = None):
        from .baselines import NearestNeighbours

        c = config or LeNet4KNNConfig()
        super().__init__(LeNet4Config(c.c3_inputs, c.c5_inputs, c.init))
        self.config = c
        self.head = NearestNeighbours(c.n_train, 120, c.k)  # replaces the 10-way output

    @torch.no_grad()
    def fit(self, x: torch.Tensor, y: torch.Tensor, batch: int = 2048) -> None:
        """Store the C5 features of the normalised training field ``x``."""
        if x.shape[0] != self.config.n_train:
            raise ValueError(f"lenet4-knn was built for n_train={self.config.n_train} patterns, "
                             f"given {x.shape[0]}")
        was = self.training
        self.eval()
        feats = torch.cat([self.features_to_c5(x[i : i + batch]) for i in range(0, len(x), batch)])
        self.head.store(feats, y)
        self.train(was)

    def features_to_c5(self, x: torch.Tensor) -> torch.Tensor:
        x = squash(self.c1(x))
        x = squash(self.s2(x.repeat_interleave(2, 1)))
        x = squash(self.s4(squash(self.c3(x))))
        return squash(self.c5(x)).flatten(1)  # (B, 120)
