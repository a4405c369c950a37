"""Optimisers of the NumPy engine: SGD, Adam(W) and SDLM (paper Section II-C, Appendix C).

Each holds the model's live parameter arrays by name and updates them in place from a dict of
gradients. SGD and Adam follow ``torch.optim`` step for step (weight decay added to the
gradient, momentum buffer seeded with the first gradient, Adam's bias corrections folded in the
same order), so both engines take the same steps from the same state. SDLM gives parameter k
the step eps_k = eta / (mu + h_kk), h_kk the Gauss-Newton diagonal averaged over a few hundred
patterns before each pass and frozen for that pass.
"""

from __future__ import annotations

import math

import numpy as np


def read_meta(meta: dict, kind: str) -> tuple[float, int]:
    """``(lr, steps)`` of a saved optimiser state, which must be of this ``kind``."""
    if meta.get("type") != kind:
        raise ValueError(f"checkpoint holds {meta.get('type')!r} optimizer state, not {kind!r}")
    return meta["lr"], meta["steps"]


class Optimizer:
    """``params``: name -> live array. ``state[name]``: that parameter's buffers."""

    kind = "base"
    hyper: tuple[str, ...] = ()

    def __init__(self, params: dict[str, np.ndarray], lr: float):
        self.params, self.lr, self.steps = params, lr, 0
        self.state: dict[str, dict[str, np.ndarray]] = {name: {} for name in params}

    def step(self, grads: dict[str, np.ndarray]) -> None:
        self.steps += 1
        for name, p in self.params.items():
            self.update(p, grads[name], self.state[name])

    def update(self, p: np.ndarray, g: np.ndarray, state: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        """``({"<param>.<buffer>": array}, {"type", "lr", "steps", hyper-parameters})``."""
        tensors = {f"{n}.{k}": v.copy() for n, st in self.state.items() for k, v in st.items()}
        meta = {"type": self.kind, "lr": self.lr, "steps": self.steps,
                **{k: getattr(self, k) for k in self.hyper}}
        return tensors, meta

    def load_state_dict(self, tensors: dict[str, np.ndarray], meta: dict) -> None:
        self.lr, self.steps = read_meta(meta, self.kind)
        for key, value in tensors.items():
            name, buf = key.rsplit(".", 1)
            self.state[name][buf] = np.array(value, self.params[name].dtype)


class SGD(Optimizer):
    """torch.optim.SGD (dampening 0): g += wd p; buf = mu buf + g; p -= lr (g + mu buf | buf)."""

    kind, hyper = "sgd", ("momentum", "nesterov", "weight_decay")

    def __init__(self, params, lr: float, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0):
        super().__init__(params, lr)
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.momentum, self.nesterov, self.weight_decay = momentum, nesterov, weight_decay

    def update(self, p, g, state):
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum:
            if "momentum_buffer" not in state:
                buf = state["momentum_buffer"] = g.copy()
            else:
                buf = state["momentum_buffer"]
                buf *= self.momentum
                buf += g
            g = g + self.momentum * buf if self.nesterov else buf
        p -= self.lr * g


class Adam(Optimizer):
    """torch.optim.Adam; ``decoupled=True`` is AdamW (p *= 1 - lr wd before the step)."""

    kind, hyper = "adam", ("beta1", "beta2", "eps", "weight_decay")

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, decoupled: bool = False):
        super().__init__(params, lr)
        (self.beta1, self.beta2), self.eps = betas, eps
        self.weight_decay, self.decoupled = weight_decay, decoupled
        if decoupled:
            self.kind = "adamw"

    def update(self, p, g, state):
        if self.weight_decay and self.decoupled:
            p *= 1 - self.lr * self.weight_decay
        elif self.weight_decay:
            g = g + self.weight_decay * p
        if "exp_avg" not in state:
            state["exp_avg"], state["exp_avg_sq"] = np.zeros_like(p), np.zeros_like(p)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m += (g - m) * (1 - self.beta1)  # torch: exp_avg.lerp_(grad, 1 - beta1)
        v *= self.beta2
        v += (1 - self.beta2) * g * g
        step_size = self.lr / (1 - self.beta1**self.steps)
        denom = np.sqrt(v) / math.sqrt(1 - self.beta2**self.steps) + self.eps
        p -= step_size * (m / denom)


def AdamW(params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
          weight_decay: float = 1e-2) -> Adam:
    return Adam(params, lr, betas, eps, weight_decay, decoupled=True)


class SDLM(Optimizer):
    """p -= eta / (mu + h) * grad, h frozen by :meth:`set_curvature` before each pass."""

    kind, hyper = "sdlm", ("mu",)

    def __init__(self, params, lr: float = 5e-4, mu: float = 0.02):
        if lr <= 0 or mu <= 0:
            raise ValueError("SDLM needs lr > 0 and mu > 0")
        super().__init__(params, lr)
        self.mu = mu

    def set_curvature(self, h: dict[str, np.ndarray]) -> None:
        for name, p in self.params.items():
            self.state[name]["h"] = np.array(h[name], p.dtype)
            self.state[name]["inv"] = (1.0 / (self.mu + self.state[name]["h"])).astype(p.dtype)

    def step_sizes(self) -> dict[str, np.ndarray]:
        """The current eps_k of every parameter (the paper saw 7e-5 to 0.016 in pass 1)."""
        return {name: self.lr * st["inv"] for name, st in self.state.items()}

    def update(self, p, g, state):
        if "inv" not in state:
            raise RuntimeError("SDLM.step() before set_curvature(): estimate h first")
        p -= self.lr * state["inv"] * g


def estimate_curvature(model, x: np.ndarray, chunk: int = 500) -> dict[str, np.ndarray]:
    """Average per-pattern Gauss-Newton diagonal over the patterns in ``x`` (the paper: 500)."""
    total: dict[str, np.ndarray] = {}
    for start in range(0, len(x), chunk):
        for name, h in model.gauss_newton_diagonal(x[start : start + chunk]).items():
            total[name] = total.get(name, 0) + h.astype(np.float64)
    return {name: (h / len(x)).astype(model.dtype) for name, h in total.items()}


def make_optimizer(name: str, params, lr: float, momentum: float = 0.9, nesterov: bool = False,
                   weight_decay: float = 0.0, mu: float = 0.02) -> Optimizer:
    """By name, with the defaults of :func:`lenet5.training.optim.make_optimizer`."""
    if name == "sgd":
        return SGD(params, lr, momentum, nesterov and momentum > 0, weight_decay)
    if name == "adam":
        return Adam(params, lr, weight_decay=weight_decay)
    if name == "adamw":
        return AdamW(params, lr, weight_decay=weight_decay)
    if name == "sdlm":
        return SDLM(params, lr, mu)
    raise ValueError(f"unknown optimizer {name!r}")
