"""Boosted LeNet-4 (the 1998 paper's Section III-C-9 and Fig. 9: 0.7% with distortions).

Three LeNet-4s (:mod:`.lenet4`) after Drucker, Schapire and Simard: net 1 is trained as usual;
net 2 on patterns filtered by net 1 (half it got right, half it got wrong); net 3 on patterns
where nets 1 and 2 disagree (the training is :mod:`lenet5.training.boost`). The outputs are
added: here the members' class probabilities, averaged. "When the first net produces a high
confidence answer, the other nets are not called": where net 1's top probability reaches
``exit_confidence``, the output is net 1's alone. This module computes all three for a batch
and selects, so the early exit changes the answers exactly as a sequential implementation
would while the graph stays one (exportable) piece; the cost that early exit saves on average
is measured by ``lenet5 compare`` (the share of test patterns net 1 answers alone).

``forward`` returns log-probabilities (a ``logits`` head: softmax of them is the same
distribution).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F

from . import register_model
from .baselines import LogitsModel
from .fig9_spec import BoostedConfig, LeNet4Config
from .lenet4 import LeNet4

MEMBERS = ("net1", "net2", "net3")


@register_model("boosted-lenet4", config=BoostedConfig, head="logits", normalization="paper",
                loss="ce")
class BoostedLeNet4(LogitsModel):
    """Three LeNet-4s, outputs added, net 1 alone when it is confident."""

    def __init__(self, config: BoostedConfig | None = None):
        super().__init__()
        self.config = c = config or BoostedConfig()
        member = LeNet4Config(c.c3_inputs, c.c5_inputs, c.init)
        self.net1, self.net2, self.net3 = LeNet4(member), LeNet4(member), LeNet4(member)

    def members(self) -> list[LeNet4]:
        return [getattr(self, name) for name in MEMBERS]

    def exits(self, log_p1: torch.Tensor) -> torch.Tensor:
        """``(B,)`` bool: where net 1 answers alone."""
        return log_p1.max(1).values >= math.log(self.config.exit_confidence)

    def features(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats: OrderedDict[str, torch.Tensor] = OrderedDict()
        logs = [F.log_softmax(net(x), 1) for net in self.members()]
        for name, lp in zip(MEMBERS, logs):
            feats[name] = lp  # (B, 10) each member's log-probabilities
        added = torch.logsumexp(torch.stack(logs), 0) - math.log(len(logs))  # log mean prob
        feats["out"] = torch.where(self.exits(logs[0])[:, None], logs[0], added)  # (B, 10)
        return feats
