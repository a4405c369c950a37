"""Optimisers of the compiled engine: SGD, Adam(W) and SDLM over the flat parameter vector.

The rules are :mod:`.updates` (the order of operations of :mod:`lenet5.scratch.optim`); this
class holds their hyper-parameters and state, and reads and writes that state in the NumPy
optimisers' layout (``{"<param>.momentum_buffer" | ".exp_avg" | ".exp_avg_sq" | ".h" | ".inv":
array}``, ``{"type", "lr", "steps", hyper-parameters}``), so checkpoints move between engines.
"""

from __future__ import annotations

import numpy as np

from ..scratch.optim import read_meta
from . import updates

KINDS = {"sgd": updates.SGD, "adam": updates.ADAM, "adamw": updates.ADAM, "sdlm": updates.SDLM}
BUFFERS = {"sgd": ("momentum_buffer",), "adam": ("exp_avg", "exp_avg_sq"),
           "adamw": ("exp_avg", "exp_avg_sq"), "sdlm": ("inv", "h")}  # buf1, buf2
HYPER = {"sgd": ("momentum", "nesterov", "weight_decay"),
         "adam": ("beta1", "beta2", "eps", "weight_decay"),
         "adamw": ("beta1", "beta2", "eps", "weight_decay"), "sdlm": ("mu",)}


class Optimizer:
    """``model``: a :class:`lenet5.compiled.model.CompiledModel` (its flat ``theta``)."""

    def __init__(self, model, name: str, lr: float, momentum: float = 0.9,
                 nesterov: bool = False, weight_decay: float = 0.0, mu: float = 0.02,
                 betas=(0.9, 0.999), eps: float = 1e-8):
        if name not in KINDS:
            raise ValueError(f"unknown optimizer {name!r}")
        if name == "sdlm" and (lr <= 0 or mu <= 0):
            raise ValueError("SDLM needs lr > 0 and mu > 0")
        if name == "sgd" and nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.model, self.kind, self.lr, self.steps = model, name, lr, 0
        self.momentum, self.nesterov = momentum, nesterov
        self.weight_decay, self.mu = weight_decay, mu
        (self.beta1, self.beta2), self.eps = betas, eps
        n, dtype = model.theta.shape[0], model.theta.dtype
        first, second = {"sgd": (momentum > 0, False)}.get(name, (True, True))
        self.buf1 = np.zeros(n if first else 0, dtype)
        self.buf2 = np.zeros(n if second else 0, dtype)
        self.seeded = False  # state exists: SGD momentum seeded, Adam moments, SDLM curvature

    # -- what the kernels take
    def hyper(self) -> np.ndarray:
        h = np.zeros(updates.N_HYPER)
        h[updates.MOMENTUM], h[updates.NESTEROV] = self.momentum, float(self.nesterov)
        h[updates.WEIGHT_DECAY] = self.weight_decay
        h[updates.BETA1], h[updates.BETA2], h[updates.EPS] = self.beta1, self.beta2, self.eps
        h[updates.DECOUPLED] = float(self.kind == "adamw")
        return h

    def kernel_args(self) -> tuple:
        """``(opt_kind, hyper, buf1, buf2, step, first)`` for the pass kernels."""
        if self.kind == "sdlm" and not self.seeded:
            raise RuntimeError("SDLM.step() before set_curvature(): estimate h first")
        return KINDS[self.kind], self.hyper(), self.buf1, self.buf2, self.steps, not self.seeded

    def advance(self, k: int) -> None:
        """Count ``k`` updates made by a kernel."""
        if k:
            self.steps += k
            self.seeded = True

    # -- the NumPy optimisers' API
    def step(self, grads=None) -> None:
        """One update from the model's gradient (``grads``, if given, is that gradient)."""
        kind, hyper, buf1, buf2, step, first = self.kernel_args()
        updates.apply(kind, self.model.theta, self.model.grad, buf1, buf2, self.lr, hyper,
                      step + 1, first)
        self.advance(1)

    def set_curvature(self, h) -> None:
        """Freeze h_kk for the coming pass: ``h`` flat like theta, or a dict by parameter name."""
        flat = self.model.flatten(h) if isinstance(h, dict) else np.asarray(h)
        self.buf2[...] = flat
        self.buf1[...] = (1.0 / (self.mu + self.buf2)).astype(self.buf1.dtype)
        self.seeded = True

    def step_sizes(self) -> dict[str, np.ndarray]:
        """eps_k = lr / (mu + h_kk) of every parameter (SDLM)."""
        return self.model.unflatten(self.model.theta.dtype.type(self.lr) * self.buf1)

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        tensors = {}
        if self.seeded:
            for suffix, buf in zip(BUFFERS[self.kind], (self.buf1, self.buf2)):
                if buf.shape[0]:
                    for name, v in self.model.unflatten(buf).items():
                        tensors[f"{name}.{suffix}"] = v.copy()
        meta = {"type": self.kind, "lr": self.lr, "steps": self.steps,
                **{k: getattr(self, k) for k in HYPER[self.kind]}}
        return tensors, meta

    def load_state_dict(self, tensors: dict[str, np.ndarray], meta: dict) -> None:
        self.lr, self.steps = read_meta(meta, self.kind)
        for suffix, buf in zip(BUFFERS[self.kind], (self.buf1, self.buf2)):
            found = {key.rsplit(".", 1)[0]: v for key, v in tensors.items()
                     if key.endswith("." + suffix)}
            if found:
                buf[...] = self.model.flatten(found)
                self.seeded = True


def make_optimizer(model, name: str, lr: float, momentum: float = 0.9, nesterov: bool = False,
                   weight_decay: float = 0.0, mu: float = 0.02) -> Optimizer:
    """By name, with the defaults of :func:`lenet5.scratch.optim.make_optimizer`."""
    return Optimizer(model, name, lr, momentum, nesterov and momentum > 0, weight_decay, mu)
