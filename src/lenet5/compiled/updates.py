"""Parameter updates on the flat parameter vector (paper Section II-C, Appendix C).

The rules of :mod:`lenet5.scratch.optim`, in the same order of operations, so the engines take
the same steps from the same state: SGD (torch semantics: weight decay added to the gradient,
momentum buffer seeded with the first gradient, optional Nesterov), Adam and AdamW (bias
corrections folded as torch does), and SDLM, ``p -= (eta * inv) * g`` with
``inv = 1 / (mu + h_kk)`` frozen for the pass. ``hyper`` holds the hyper-parameters in the
slots below; ``buf1``/``buf2`` the per-parameter state (momentum, or exp_avg and exp_avg_sq,
or inv), empty where a rule needs none.
"""

from __future__ import annotations

import math

from numba import prange

from .jit import jit, parallel_jit

SGD, ADAM, SDLM = 0, 1, 2
# hyper slots
MOMENTUM, NESTEROV, WEIGHT_DECAY, BETA1, BETA2, EPS, DECOUPLED = range(7)
N_HYPER = 7


@jit
def sgd(p, g, buf, lr, momentum, nesterov, weight_decay, first):
    t = p.dtype.type
    lr, mom, wd = t(lr), t(momentum), t(weight_decay)
    n = p.shape[0]
    if momentum == 0:
        if weight_decay == 0:
            for i in range(n):
                p[i] -= lr * g[i]
        else:
            for i in range(n):
                p[i] -= lr * (g[i] + wd * p[i])
        return
    for i in range(n):
        gi = g[i] + wd * p[i] if weight_decay != 0 else g[i]
        buf[i] = gi if first else buf[i] * mom + gi
        p[i] -= lr * (gi + mom * buf[i] if nesterov else buf[i])


@jit
def adam(p, g, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step):
    """``step``: 1-based count including this update, as torch's ``state['step']``."""
    t = p.dtype.type
    c1, c2 = t(1 - beta1), t(1 - beta2)
    b2, wd, e = t(beta2), t(weight_decay), t(eps)
    step_size = t(lr / (1 - beta1**step))
    root = t(math.sqrt(1 - beta2**step))
    shrink = t(1 - lr * weight_decay)
    for i in range(p.shape[0]):
        gi = g[i]
        if weight_decay != 0:
            if decoupled:
                p[i] *= shrink
            else:
                gi = gi + wd * p[i]
        m[i] += (gi - m[i]) * c1
        v[i] = v[i] * b2 + c2 * gi * gi
        p[i] -= step_size * (m[i] / (math.sqrt(v[i]) / root + e))


@jit
def sdlm(p, g, inv, lr):
    t = p.dtype.type
    lr = t(lr)
    for i in range(p.shape[0]):
        p[i] -= lr * inv[i] * g[i]


@jit
def apply(kind, p, g, buf1, buf2, lr, hyper, step, first):
    """One update of ``p`` from ``g``. ``step``: updates so far including this one (Adam's bias
    correction); ``first``: SGD's momentum buffer is not yet seeded."""
    if kind == SDLM:
        sdlm(p, g, buf1, lr)
    elif kind == ADAM:
        adam(p, g, buf1, buf2, lr, hyper[BETA1], hyper[BETA2], hyper[EPS], hyper[WEIGHT_DECAY],
             hyper[DECOUPLED] != 0, step)
    else:
        sgd(p, g, buf1, lr, hyper[MOMENTUM], hyper[NESTEROV] != 0, hyper[WEIGHT_DECAY], first)


@parallel_jit
def apply_parallel(kind, p, g, buf1, buf2, lr, hyper, step, first):
    """:func:`apply` over four runs of the parameters in parallel: every rule works element by
    element, so the result is :func:`apply`'s exactly (the modern model's passes)."""
    n = p.shape[0]
    for t in prange(4):
        lo, hi = t * n // 4, (t + 1) * n // 4
        apply(kind, p[lo:hi], g[lo:hi], buf1[lo:hi], buf2[lo:hi], lr, hyper, step, first)
