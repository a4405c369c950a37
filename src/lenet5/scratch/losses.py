"""Training criteria of the NumPy engine (paper Section II-C), each with its gradient.

Every function takes ``out (B, 10)`` (RBF distances y, smaller is better, or logits) and
integer targets ``(B,)`` and returns ``(loss, dout)``: the batch mean of a per-sample term and
its derivative with respect to ``out``; with ``grad=False`` (evaluation) ``dout`` is ``None``
and is not computed. They mirror :mod:`lenet5.training.losses`.
"""

from __future__ import annotations

import numpy as np


def _logsumexp(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise log-sum-exp of ``z (B, K)`` and the softmax, shifted by the row max."""
    zmax = z.max(1, keepdims=True)
    e = np.exp(z - zmax)
    total = e.sum(1, keepdims=True)
    return (np.log(total) + zmax)[:, 0], e / total


def logsumexp(z: np.ndarray) -> np.ndarray:
    """Row-wise log-sum-exp ``(B,)`` of ``z (B, K)``, stable for large or tiny values."""
    return _logsumexp(z)[0]


def map_loss(out: np.ndarray, target: np.ndarray, j: float = 0.1,
             grad: bool = True) -> tuple[float, np.ndarray | None]:
    """E = mean_p [ y_{D_p} + log(exp(-j) + sum_i exp(-y_{p,i})) ] (Eq. 9), per sample.

    dE/dy_i = [i = D] - exp(-y_i) / Z: pull the correct class in, push every class out in
    proportion to its posterior (the rubbish class, constant -j, has no gradient).
    """
    b = out.shape[0]
    z = np.concatenate([np.full((b, 1), -j, out.dtype), -out], 1)  # (B, 11): rubbish first
    lse, p = _logsumexp(z)
    rows = np.arange(b)
    loss = float((out[rows, target] + lse).mean())
    if not grad:
        return loss, None
    dout = -p[:, 1:]
    dout[rows, target] += 1
    return loss, dout / out.dtype.type(b)


def mle_loss(out: np.ndarray, target: np.ndarray,
             grad: bool = True) -> tuple[float, np.ndarray | None]:
    """E = mean_p y_{D_p}: the distance to the correct class's prototype (Eq. 8)."""
    b = out.shape[0]
    rows = np.arange(b)
    loss = float(out[rows, target].mean())
    if not grad:
        return loss, None
    dout = np.zeros_like(out)
    dout[rows, target] = 1.0 / b
    return loss, dout


def cross_entropy(out: np.ndarray, target: np.ndarray, label_smoothing: float = 0.0,
                  grad: bool = True) -> tuple[float, np.ndarray | None]:
    """Softmax cross-entropy of logits, stable (shifted by the row max); optional smoothing
    spreads ``label_smoothing`` of the target mass uniformly, as ``F.cross_entropy`` does."""
    b, k = out.shape
    lse, p = _logsumexp(out)
    logp = out - lse[:, None]
    q = np.full_like(out, label_smoothing / k)
    q[np.arange(b), target] += 1 - label_smoothing
    loss = float(-(q * logp).sum(1).mean())
    return (loss, (p - q) / out.dtype.type(b)) if grad else (loss, None)


LOSSES = ("map", "mle", "ce")


def make_loss(name: str, map_j: float = 0.1, label_smoothing: float = 0.0, grad: bool = True):
    """``loss(out, target) -> (loss, dout)`` by name, like :func:`lenet5.training.losses.make_loss`;
    ``grad=False``: the value alone (``dout`` is None), for evaluation."""
    if name == "map":
        return lambda out, target: map_loss(out, target, map_j, grad)
    if name == "mle":
        return lambda out, target: mle_loss(out, target, grad)
    if name == "ce":
        return lambda out, target: cross_entropy(out, target, label_smoothing, grad)
    raise ValueError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")
