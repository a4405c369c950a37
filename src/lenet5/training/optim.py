"""PyTorch's optimisers, SDLM first (paper Section II-C and Appendix C).

Stochastic diagonal Levenberg-Marquardt: every parameter k gets its own step
eps_k = eta / (mu + h_kk), where h_kk is the Gauss-Newton estimate of the diagonal second
derivative of the criterion (the models' ``gauss_newton_diagonal``), averaged over a few hundred
patterns before each pass and frozen for that pass. Updates are then plain gradient steps.

The learning-rate schedules are in :mod:`.schedules` (no PyTorch there).
"""

from __future__ import annotations

import torch


class SDLM(torch.optim.Optimizer):
    """p -= lr / (mu + h) * grad, with h set by :meth:`set_curvature` before each pass."""

    def __init__(self, params, lr: float = 5e-4, mu: float = 0.02):
        if lr <= 0 or mu <= 0:
            raise ValueError("SDLM needs lr > 0 and mu > 0")
        super().__init__(params, dict(lr=lr, mu=mu))

    @torch.no_grad()
    def set_curvature(self, h: dict[torch.Tensor, torch.Tensor]) -> None:
        """Freeze h_kk (per parameter tensor) for the coming pass."""
        for group in self.param_groups:
            for p in group["params"]:
                if p not in h:
                    raise KeyError("SDLM: no curvature estimate for a parameter")
                state = self.state[p]
                state["h"] = h[p].detach().to(p.dtype).clone()
                state["inv"] = 1.0 / (group["mu"] + state["h"])  # eps_k = lr * inv

    def step_sizes(self) -> list[torch.Tensor]:
        """The current eps_k = lr / (mu + h_kk) of every parameter (for inspection/tests)."""
        return [g["lr"] * self.state[p]["inv"] for g in self.param_groups for p in g["params"]]

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if any("inv" not in self.state[p] for p in params):
                raise RuntimeError("SDLM.step() before set_curvature(): estimate h first")
            grads = [p.grad for p in params]
            invs = [self.state[p]["inv"] for p in params]
            torch._foreach_addcmul_(params, grads, invs, value=-group["lr"])
        return loss


@torch.no_grad()
def estimate_curvature(model: torch.nn.Module, x: torch.Tensor, chunk: int = 500) -> dict:
    """Average per-pattern Gauss-Newton diagonal over the patterns in ``x`` (the paper: 500)."""
    if not hasattr(model, "gauss_newton_diagonal"):
        raise ValueError(f"{type(model).__name__} has no Gauss-Newton diagonal: SDLM needs lenet5-1998")
    names = dict(model.named_parameters())
    total = {n: torch.zeros_like(p) for n, p in names.items()}
    was_training = model.training
    model.eval()
    for start in range(0, x.shape[0], chunk):
        for n, v in model.gauss_newton_diagonal(x[start : start + chunk]).items():
            total[n] += v
    model.train(was_training)
    return {names[n]: v / x.shape[0] for n, v in total.items()}


def make_optimizer(name: str, params, lr: float, momentum: float = 0.9, nesterov: bool = False,
                   weight_decay: float = 0.0, mu: float = 0.02) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0,
                               weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sdlm":
        return SDLM(params, lr=lr, mu=mu)
    raise ValueError(f"unknown optimizer {name!r}")
