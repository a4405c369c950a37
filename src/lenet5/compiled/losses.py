"""Training criteria for one pattern (paper Section II-C), each with its gradient.

The same criteria as :mod:`lenet5.scratch.losses`, for one output vector ``out (10,)``:
``loss_grad`` writes ``dE/dout`` times ``weight`` (1/B for the mean over a batch of B) into
``dout`` and returns the pattern's loss. Kinds: ``MAP`` (Eq. 9), ``MLE`` (Eq. 8), ``CE``
(softmax cross-entropy of logits, with optional label smoothing).
"""

from __future__ import annotations

import math

from .jit import jit

MAP, MLE, CE = 0, 1, 2
KINDS = {"map": MAP, "mle": MLE, "ce": CE}


@jit
def loss_grad(kind, out, target, weight, map_j, smoothing, dout):
    """Loss of one pattern (float64) and ``dout = weight * dE/dout``."""
    t = out.dtype.type
    k = out.shape[0]
    w = t(weight)
    if kind == MLE:  # E = y_D: pull the correct prototype in
        for i in range(k):
            dout[i] = 0
        dout[target] = w
        return float(out[target])
    # log-sum-exp of z, shifted by its max; MAP: z = (-j, -y_0 .. -y_9), rubbish class first
    sign = t(-1) if kind == MAP else t(1)
    zmax = t(-map_j) if kind == MAP else out[0]
    for i in range(k):
        zmax = max(zmax, sign * out[i])
    total = math.exp(t(-map_j) - zmax) if kind == MAP else t(0)
    for i in range(k):
        total += math.exp(sign * out[i] - zmax)
    lse = t(math.log(total)) + zmax
    if kind == MAP:  # E = y_D + log(e^-j + sum_i e^-y_i); dE/dy_i = [i = D] - p_i
        for i in range(k):
            dout[i] = -(math.exp(-out[i] - zmax) / total)
        dout[target] += 1
        for i in range(k):
            dout[i] *= w
        return float(out[target] + lse)
    # CE with smoothing s: q = s/K everywhere plus 1 - s on the target; E = -sum q log p
    loss = 0.0
    for i in range(k):
        q = t(smoothing / k) + (t(1 - smoothing) if i == target else t(0))
        p = math.exp(out[i] - zmax) / total
        loss -= float(q) * float(out[i] - lse)
        dout[i] = (p - q) * w
    return loss


@jit
def wrong(kind, out, target):
    """1 when the best-scoring class is not ``target`` (first best on ties, like argmax)."""
    best = 0
    for i in range(1, out.shape[0]):
        if (out[i] < out[best]) if kind != CE else (out[i] > out[best]):
            best = i
    return int(best != target)
