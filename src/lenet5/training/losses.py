"""Training criteria (paper Section II-C) and softmax cross-entropy.

For the RBF head ``out`` holds distances y (B, 10), smaller is better; for a linear head it
holds logits. Every loss is a mean over the batch of a per-sample term, so batch size 1 is
the paper's per-pattern criterion.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import LOSSES  # the names, defined once


def mle_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """E = mean_p y_{D_p}: the distance to the correct class's prototype (Eq. 8)."""
    return out.gather(1, target[:, None]).mean()


def map_loss(out: torch.Tensor, target: torch.Tensor, j: float = 0.1) -> torch.Tensor:
    """E = mean_p [ y_{D_p} + log(exp(-j) + sum_i exp(-y_{p,i})) ] (Eq. 9).

    The log-sum-exp is taken per sample (a known pitfall is one over the whole batch), over
    the ten negated distances plus the constant -j of the "rubbish" class.
    """
    rubbish = torch.full_like(out[:, :1], -j)
    lse = torch.logsumexp(torch.cat([rubbish, -out], 1), 1)
    return (out.gather(1, target[:, None]).squeeze(1) + lse).mean()


def cross_entropy(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out, target)



def make_loss(name: str, map_j: float = 0.1):
    if name == "map":
        return lambda out, target: map_loss(out, target, map_j)
    if name == "mle":
        return mle_loss
    if name == "ce":
        return cross_entropy
    raise ValueError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")
