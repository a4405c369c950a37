"""A small model registry in the manner of timm's ``register_model`` / ``create_model``.

Every registered model exposes the same interface:

- ``forward(x) -> out``: ``(B, 10)``, logits or RBF distances depending on ``head``;
- ``scores(out)``: higher is better, so ``scores(out).argmax(1)`` is the prediction;
- ``log_probs(out)``: class log-probabilities (for the RBF head, the MAP posterior);
- ``features(x)``: an ordered dict of intermediate maps ``c1, s2, c3, s4, c5, f6, out``;
- ``config``: a dataclass with ``to_dict()``, enough to rebuild the model.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported with the models, not with the registry or the specs
    import torch.nn as nn


@dataclass(frozen=True)
class ModelEntry:
    name: str
    cls: type[nn.Module]
    config: type
    head: str  # "rbf" | "logits"
    normalization: str  # default input normalisation: "paper" | "standard"
    loss: str  # default criterion: "map" | "ce"
    description: str


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, *, config: type, head: str, normalization: str, loss: str):
    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        doc = (cls.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = ModelEntry(name, cls, config, head, normalization, loss, doc[0] if doc else "")
        cls.registry_name = name
        return cls

    return wrap


def get_entry(name: str) -> ModelEntry:
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(list_models())}") from None


def list_models() -> list[str]:
    _ensure_loaded()
    return sorted(_REGISTRY)


def make_config(name: str, overrides: dict[str, Any] | None = None):
    """The model's config dataclass with ``overrides`` applied; unknown keys are an error."""
    entry = get_entry(name)
    known = {f.name for f in fields(entry.config)}
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"{name}: unknown model option(s) {unknown}; known: {sorted(known)}")
    cfg = entry.config(**overrides)
    return cfg


def create_model(name: str, **overrides: Any) -> nn.Module:
    return get_entry(name).cls(make_config(name, overrides))


def _ensure_loaded() -> None:
    # Importing the modules runs their @register_model decorators.
    from . import lenet5_1998, modern  # noqa: F401
