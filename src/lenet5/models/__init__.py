"""The model registry, in the manner of timm's ``register_model`` / ``create_model``.

An entry says what a model is made of without building anything: its config dataclass
(:mod:`lenet5.models.spec`), the PyTorch module and the NumPy builder (:mod:`lenet5.scratch`)
by dotted path, its head, default normalisation and criterion, and bounds on its options. The
paths are imported on first use, so listing models, checking a config and the NumPy engine
never import torch.

A *variant* is a registered name for an architecture with some options set, as timm registers
``resnet18`` and ``resnet34`` over one ``ResNet``: ``lenet5-modern-bn`` is ``lenet5-modern``
with ``batchnorm=True``. It is a model like any other (``create_model``, ``lenet5 models``,
``lenet5 summary``, ``--model``); a run records it as its architecture plus the full options
(:func:`canonical`), the form every checkpoint has always had, so checkpoints stay loadable by
anything that knows the two architectures.

Every built model exposes the same interface:

- ``forward(x) -> out``: ``(B, 10)``, logits or RBF distances depending on ``head``;
- ``scores(out)``: higher is better, so ``scores(out).argmax(1)`` is the prediction;
- ``log_probs(out)``: class log-probabilities (for the RBF head, the MAP posterior);
- ``features(x)``: an ordered dict of intermediate maps ``c1, s2, c3, s4, c5, f6, out``;
- ``config``: a dataclass with ``to_dict()``, enough to rebuild the model.

Adding an architecture: a config dataclass in :mod:`.spec`, a torch module, a NumPy builder,
and one :func:`register` call below. Adding a variant: one :func:`variant` line.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..fieldtypes import FieldError, check_values
from .spec import LeNet1998Config, ModernConfig

if TYPE_CHECKING:  # torch is imported with the models, not with the registry or the specs
    import torch.nn as nn

HEADS = ("rbf", "logits")
MAX_WIDTH = 1024  # feature maps per layer: wider is refused before anything is allocated


@dataclass(frozen=True)
class ModelEntry:
    name: str
    config: type  # the options dataclass both builders take
    torch: str  # "module:Class": an nn.Module built from a config
    numpy: str | None  # "module:function": (config, dtype, rng) -> lenet5.scratch Model
    head: str  # "rbf" | "logits"
    normalization: str  # default input normalisation: "paper" | "standard"
    loss: str  # default criterion: "map" | "ce"
    description: str
    curvature: bool = False  # has a Gauss-Newton diagonal, so SDLM can train it
    limits: dict[str, dict] = field(default_factory=dict)  # option -> bounds (ge, gt, le, lt)
    base: str | None = None  # for a variant: the architecture it configures
    defaults: dict[str, Any] = field(default_factory=dict)  # for a variant: the options it sets

    @property
    def architecture(self) -> str:
        return self.base or self.name

    def torch_class(self) -> type[nn.Module]:
        return _import(self.torch)

    def numpy_builder(self):
        if self.numpy is None:
            raise ValueError(f"{self.name} has no NumPy builder; train it with --engine torch")
        return _import(self.numpy)


_REGISTRY: dict[str, ModelEntry] = {}


def register(entry: ModelEntry) -> ModelEntry:
    if entry.name in _REGISTRY:
        raise ValueError(f"model {entry.name!r} is registered twice")
    if entry.head not in HEADS:
        raise ValueError(f"{entry.name}: head must be one of {', '.join(HEADS)}")
    _REGISTRY[entry.name] = entry
    return entry


def variant(name: str, base: str, description: str, **options: Any) -> ModelEntry:
    """Register ``name`` as ``base`` with ``options`` set (checked like any override)."""
    parent = get_entry(base)
    check_values(parent.config, options, f"{name}: ", parent.limits)
    return register(replace(parent, name=name, description=description, base=parent.architecture,
                            defaults={**parent.defaults, **options}))


def register_model(name: str, *, config: type, head: str, normalization: str, loss: str):
    """Class decorator: registers a torch module not in the table below, and checks that one
    in the table agrees with it (so the two statements cannot drift apart)."""

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        entry = _REGISTRY.get(name)
        if entry is None:
            doc = (cls.__doc__ or "").strip().splitlines()
            register(ModelEntry(name, config, f"{cls.__module__}:{cls.__qualname__}", None, head,
                                normalization, loss, doc[0] if doc else ""))
        elif (entry.config, entry.head, entry.normalization, entry.loss) != (config, head, normalization, loss):
            raise ValueError(f"@register_model({name!r}) disagrees with the registry's entry")
        cls.registry_name = name
        return cls

    return wrap


def get_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(list_models())}") from None


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def canonical(name: str, overrides: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """``(architecture, options)`` that build the same model as ``name`` with ``overrides``:
    a variant's options under the overrides. What runs and checkpoints record."""
    entry = get_entry(name)
    return entry.architecture, {**entry.defaults, **(overrides or {})}


def nearest_name(architecture: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The registered name closest to ``architecture`` built with ``options``, and the options
    that still differ from it: how ``lenet5 models`` names what a checkpoint or preset holds
    (``lenet5-modern`` with batch-norm and dropout 0.1 -> ``lenet5-modern-bn``, dropout 0.1)."""
    full = make_config(architecture, options).to_dict()
    best: tuple[str, dict[str, Any]] | None = None
    for name in list_models():
        if get_entry(name).architecture != architecture:
            continue
        own = make_config(name).to_dict()
        differ = {k: v for k, v in full.items() if own.get(k) != v}
        if best is None or len(differ) < len(best[1]):
            best = (name, differ)
    assert best is not None  # the architecture itself is registered
    return best


def label(name: str, options: dict[str, Any]) -> str:
    """``lenet5-modern-bn (dropout 0.1)``: a model and the options it is given."""
    extra = ", ".join(f"{k} {json.dumps(v)}" for k, v in options.items())
    return f"{name} ({extra})" if extra else name


def describe(architecture: str, options: dict[str, Any]) -> str:
    """How people see what a run or checkpoint holds: the nearest registered name and the
    options that still differ (``lenet5-modern`` with batch-norm and widths 16/32/56/84 ->
    ``lenet5-modern-bn (widths [16, 32, 56, 84])``); the bare name for an unknown model."""
    try:
        return label(*nearest_name(architecture, options))
    except ValueError:
        return architecture


def make_config(name: str, overrides: dict[str, Any] | None = None):
    """The model's options dataclass, the variant's options and ``overrides`` applied; unknown
    options, wrong types and sizes out of bounds are refused before anything is built."""
    entry = get_entry(name)
    if not isinstance(overrides, (dict, type(None))):
        raise ValueError(f"model_args must be a table of NAME = VALUE; got {overrides!r}")
    try:
        values = check_values(entry.config, {**entry.defaults, **(overrides or {})},
                              "model_args.", entry.limits, noun="model option")
        return entry.config(**values)
    except FieldError as e:
        raise ValueError(f"{name}: {e}") from None
    except ValueError as e:  # the dataclass's own checks (choices)
        raise ValueError(f"{name}: model_args: {e}") from None


def create_model(name: str, **overrides: Any) -> nn.Module:
    return get_entry(name).torch_class()(make_config(name, overrides))


def build_numpy(name: str, overrides: dict[str, Any] | None = None, dtype: Any = "float32",
                seed: int | None = None):
    """The NumPy engine's model (:mod:`lenet5.scratch`), freshly initialised from ``seed``."""
    import numpy as np

    entry = get_entry(name)
    return entry.numpy_builder()(make_config(name, overrides), np.dtype(dtype),
                                 np.random.default_rng(seed))


def _import(path: str):
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


# ----------------------------------------------------------------------------- the models

register(ModelEntry(
    "lenet5-1998", LeNet1998Config, "lenet5.models.lenet5_1998:LeNet5",
    "lenet5.scratch.model:build_1998", head="rbf", normalization="paper", loss="map",
    curvature=True, limits={"map_j": {"gt": 0.0}, "f6": {"ge": 1, "le": MAX_WIDTH}},
    description="LeNet-5 as published (1998): scaled tanh, trainable subsampling, "
                "Table I's C3, RBF head",
))
register(ModelEntry(
    "lenet5-modern", ModernConfig, "lenet5.models.modern:ModernLeNet5",
    "lenet5.scratch.model:build_modern", head="logits", normalization="standard", loss="ce",
    limits={"widths": {"ge": 1, "le": MAX_WIDTH}, "dropout": {"ge": 0.0, "lt": 1.0}},
    description="LeNet-5 with ReLU, max-pool and a softmax head",
))
# Bottou's Lush lenet5.lsh (gblearn2 demo, QMNIST README; docs/results.md "paper gap"): the
# 1998 maps with sum-subsampling and Lush's initialisation, and no 84-unit F6 or bitmap RBF:
# 10 squashed outputs trained by MSE to +-1 targets, which is the MLE criterion against
# one-hot +-1 prototypes (preset "lush" sets the loss and Lush's 0.01 input scaling).
LUSH_OPTIONS = dict(f6=10, prototypes="onehot", subsample="sum", init="lush", init_bias="zero")
variant("lenet5-lush", "lenet5-1998", "Lush's lenet5.lsh (Bottou): the 1998 maps, sum "
        "subsampling, 120 -> 10 outputs, MSE to +-1 targets (51,046 parameters)", **LUSH_OPTIONS)
variant("lenet5-modern-bn", "lenet5-modern", "lenet5-modern with batch-norm after every conv "
        "and F6", batchnorm=True)

# The other classifiers of the paper's Fig. 9 (issue 16): LeNet-1, LeNet-4, boosted LeNet-4 and
# the baselines; their rows and options live in .fig9_spec.
from .fig9_spec import FIG9_MODELS, FIG9_VARIANTS  # noqa: E402

for _row in FIG9_MODELS:
    register(ModelEntry(**_row))
for _row in FIG9_VARIANTS:
    variant(**_row)
