"""Optimiser state in one layout for both engines, so a run can resume in either.

A checkpoint stores the optimiser as tensors under ``optimizer/`` plus a JSON document in its
metadata. Both are keyed by what the model calls things, never by the framework's internals:

- tensors ``"<parameter name>.<buffer>"``, e.g. ``c3.weight.exp_avg``: ``momentum_buffer``
  (SGD with momentum), ``exp_avg`` and ``exp_avg_sq`` (Adam, AdamW), ``h`` and ``inv`` (SDLM's
  frozen curvature and 1 / (mu + h));
- meta ``{"type", "lr", "steps", <hyper-parameters>}``, the hyper-parameters named as in
  :mod:`lenet5.scratch.optim` (``beta1``, ``beta2``, ``eps``, ``momentum``, ``mu`` ...).

The NumPy optimisers read and write exactly this (:meth:`lenet5.scratch.optim.Optimizer.
state_dict`); the functions here translate a ``torch.optim`` optimiser to and from it. Adam's
per-parameter ``step`` tensor becomes the single ``steps`` count (the bias correction needs it).
"""

from __future__ import annotations

import numpy as np
import torch

from ..scratch import optim as np_optim

HYPER = {"sgd": np_optim.SGD.hyper, "adam": np_optim.Adam.hyper, "adamw": np_optim.Adam.hyper,
         "sdlm": np_optim.SDLM.hyper}


def named_order(optimizer: torch.optim.Optimizer, module: torch.nn.Module) -> list[str]:
    """The parameter names in the optimiser's own order (its ``state_dict`` indices)."""
    names = {id(p): n for n, p in module.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def torch_optimizer_state(optimizer: torch.optim.Optimizer, module: torch.nn.Module, kind: str,
                          steps: int) -> tuple[dict[str, torch.Tensor], dict]:
    """``(tensors, meta)`` in the shared layout; ``steps`` counts the updates taken so far."""
    if kind not in HYPER:
        raise ValueError(f"unknown optimizer {kind!r}")
    tensors = {}
    order = [p for group in optimizer.param_groups for p in group["params"]]
    for name, p in zip(named_order(optimizer, module), order):
        for buf, value in optimizer.state.get(p, {}).items():
            if buf != "step" and torch.is_tensor(value):
                tensors[f"{name}.{buf}"] = value.detach().cpu().contiguous()
    group = dict(optimizer.param_groups[0])
    if "betas" in group:
        group["beta1"], group["beta2"] = group["betas"]
    meta = {"type": kind, "lr": group["lr"], "steps": int(steps),
            **{k: group[k] for k in HYPER[kind]}}
    return tensors, meta


def load_torch_optimizer_state(optimizer: torch.optim.Optimizer, module: torch.nn.Module,
                               kind: str, tensors: dict[str, np.ndarray], meta: dict) -> int:
    """Load the shared layout into ``optimizer`` (hyper-parameters stay the run's own, the
    learning rate is the saved one); returns the saved step count."""
    if meta.get("type") != kind:
        raise ValueError(f"checkpoint holds {meta.get('type')!r} optimizer state, not {kind!r}")
    index = {name: i for i, name in enumerate(named_order(optimizer, module))}
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        name, buf = key.rsplit(".", 1)
        if name not in index:
            raise KeyError(f"optimizer state for {name!r}, which the model does not have")
        state.setdefault(index[name], {})[buf] = torch.from_numpy(np.array(value))
    steps = int(meta["steps"])
    if kind in ("adam", "adamw"):  # torch keeps the step count per parameter, as a tensor
        for i in state:
            state[i]["step"] = torch.tensor(float(steps), dtype=torch.get_default_dtype())
    groups = [{**group, "lr": meta["lr"]} for group in optimizer.state_dict()["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    return steps
