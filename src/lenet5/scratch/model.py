"""LeNet-5 (1998) and the modern variant assembled from :mod:`.layers` (paper Section II-B).

``build(name, config)`` gives a :class:`Model` whose ``state_dict()`` has exactly the names,
shapes and layouts of the torch model's (``c1.weight (6, 1, 5, 5)``, ``c3.weight (60, 5, 5)``,
``rbf.prototypes``; ``c1.0.weight``, ``c1.1.running_var``, ``head.weight`` ...), so weights and
checkpoints move between the engines unchanged. The model takes and returns batch-first arrays
like torch (``x (B, 1, 32, 32)``, ``out (B, 10)``); inside, activations are channels-first,
batch-last (see :mod:`.layers`). Configs, Table I and the Fig. 3 bitmaps come from
:mod:`lenet5.models.spec`, the torch-free module the torch models import too.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ..models.spec import (
    C3_TABLE,
    LeNet1998Config,
    ModernConfig,
    fan_in_1998,
    init_range,
    prototype_values,
)
from ..models.spec import scores as head_scores
from .layers import (
    AvgPool,
    BatchNorm,
    Conv2d,
    Dropout,
    EuclideanRBF,
    Flatten,
    Layer,
    Linear,
    MaxPool,
    ReLU,
    ScaledTanh,
    Subsampling,
    TableConv,
)
from .losses import logsumexp


def rbf_prototypes(dtype=np.float32, kind: str = "bitmaps") -> np.ndarray:
    """``(10, 84)`` of +-1 from the 7x12 bitmaps of Fig. 3: ink +1, paper -1, row-major (or
    ``kind="onehot"``: ``(10, 10)``, Lush's +-1 targets)."""
    return np.array(prototype_values(kind), dtype)


def copy_state(name: str, own: dict[str, np.ndarray], state: dict[str, np.ndarray]) -> None:
    """Copy ``state`` into the live arrays ``own`` in place: the same keys, the same shapes
    (a one-element array may fill a 0-d buffer, as torch's ``load_state_dict`` allows)."""
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise KeyError(f"{name}: missing {missing}, unexpected {unexpected}")
    for k, v in state.items():
        v = np.asarray(v)
        if own[k].ndim == 0 and v.shape == (1,):
            v = v.reshape(())
        if v.shape != own[k].shape:
            raise ValueError(f"{k}: shape {v.shape}, expected {own[k].shape}")
        own[k][...] = v


Stage = tuple[str, list[tuple[str | None, Layer]]]  # feature name, (parameter prefix, layer)


class Model:
    """A sequence of stages ``c1 s2 c3 s4 c5 f6 out``, each a few layers; ``features`` taps
    the output of every stage, as the torch models' ``features`` do."""

    def __init__(self, name: str, config, stages: list[Stage], head: str, dtype):
        self.name, self.config, self.stages, self.head = name, config, stages, head
        self.dtype = np.dtype(dtype)
        self.layers = [(prefix, layer) for _, layers in stages for prefix, layer in layers]

    # -- parameters and state
    def _named(self, attr: str) -> dict[str, np.ndarray]:
        return {f"{prefix}.{k}": v for prefix, layer in self.layers if prefix
                for k, v in getattr(layer, attr).items()}

    def params(self) -> dict[str, np.ndarray]:
        """The live trainable arrays by torch name (optimisers update them in place)."""
        return self._named("params")

    def live_state(self) -> dict[str, np.ndarray]:
        """Parameters and buffers as the live arrays (no copies; do not write to them)."""
        return {**self._named("params"), **self._named("buffers")}

    def grads(self) -> dict[str, np.ndarray]:
        return self._named("grads")

    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters and buffers in the torch ``state_dict()`` order, as copies."""
        state = {}
        for prefix, layer in self.layers:
            if prefix:
                for k, v in {**layer.params, **layer.buffers}.items():
                    state[f"{prefix}.{k}"] = v.copy()
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy values in place; keys and shapes must match exactly, except that a one-element
        array fills a 0-d buffer (older checkpoints stored ``num_batches_tracked`` as (1,),
        which torch's ``load_state_dict`` accepts too)."""
        copy_state(self.name, {**self._named("params"), **self._named("buffers")}, state)

    # -- passes
    def train(self, mode: bool = True) -> Model:
        for _, layer in self.layers:
            layer.training = mode
        return self

    def _input(self, x) -> np.ndarray:
        x = np.asarray(x, self.dtype)  # (B, C, H, W)
        return np.ascontiguousarray(x.transpose(1, 2, 3, 0))  # (C, H, W, B)

    def forward(self, x, train: bool = False) -> np.ndarray:
        """``x (B, 1, 32, 32) -> out (B, 10)``: RBF distances or logits."""
        self.train(train)
        h = self._input(x)
        for _, layer in self.layers:
            h = layer.forward(h)
        return h.T  # (B, 10)

    __call__ = forward

    def backward(self, dout: np.ndarray) -> dict[str, np.ndarray]:
        """Backpropagate ``dE/dout (B, 10)`` from the last ``forward``; returns the grads."""
        g = np.ascontiguousarray(dout.T, self.dtype)  # (10, B)
        for _, layer in reversed(self.layers):
            g = layer.backward(g)
            if g is None:  # the first convolution skips the image gradient
                break
        return self.grads()

    def features(self, x) -> OrderedDict[str, np.ndarray]:
        """Every stage's output, batch-first like torch: maps ``(B, C, H, W)``, vectors (B, F)."""
        self.train(False)
        h, feats = self._input(x), OrderedDict()
        for name, layers in self.stages:
            for _, layer in layers:
                h = layer.forward(h)
            feats[name] = h.transpose(3, 0, 1, 2) if h.ndim == 4 else h.T
        return feats

    def scores(self, out: np.ndarray) -> np.ndarray:
        """Higher is better: negated RBF distances, or the logits themselves."""
        return head_scores(out, self.head)

    def log_probs(self, out: np.ndarray) -> np.ndarray:
        """Class log-probabilities ``(B, 10)``, as the torch models' ``log_probs``.

        RBF head: the MAP criterion's posterior P(i) = exp(-y_i) / (exp(-j) + sum_k exp(-y_k))
        (Eq. 9); the remainder exp(-j) / Z is the "rubbish" class, so these ten do not sum to
        one. Logits: log-softmax.
        """
        out = np.asarray(out)
        if self.head == "rbf":
            rubbish = np.full((out.shape[0], 1), -self.config.map_j, out.dtype)
            z = np.concatenate([rubbish, -out], 1)  # (B, 11): rubbish first
            return -out - logsumexp(z)[:, None]
        shifted = out - out.max(1, keepdims=True)  # exact where out - logsumexp(out) would not be
        return shifted - np.log(np.exp(shifted).sum(1, keepdims=True))

    def predict(self, x, batch_size: int = 1000) -> np.ndarray:
        """Predicted classes ``(B,)``, in eval mode, in chunks of ``batch_size``."""
        return np.concatenate([self.scores(self.forward(x[i : i + batch_size])).argmax(1)
                               for i in range(0, len(x), batch_size)])

    def gauss_newton_diagonal(self, x) -> dict[str, np.ndarray]:
        """Summed h_kk over the batch (Appendix C), keyed like :meth:`params`.

        As in the torch model, the output layer's second derivative is d2E/dx^2 = 2 for each
        F6 output (the y_D term of the criterion; the competitive MAP term is ignored).
        """
        if self.head != "rbf":
            raise ValueError(f"{self.name}: the Gauss-Newton diagonal is for lenet5-1998")
        self.train(False)
        body = [layer for _, layer in self.layers[:-1]]  # everything before the RBF
        h = self._input(x)
        for layer in body:
            h = layer.forward(h)
        d2 = np.full_like(h, 2.0)  # (84, B)
        for layer in reversed(body):
            d2 = layer.gn_backward(d2)
            if d2 is None:
                break
        return self._named("h")


# ---------------------------------------------------------------- the two registered models


def fanin_uniform(rng: np.random.Generator, shape, fan_in, dtype, rule: str = "sqrt-fanin") -> np.ndarray:
    """U[-r, r], r = 2.4/F or 2.4/sqrt(F) (Appendix A); ``fan_in`` may broadcast against ``shape``."""
    return (rng.uniform(-1.0, 1.0, shape) * init_range(np.asarray(fan_in, float), rule)).astype(dtype)


def build_1998(c: LeNet1998Config, dtype, rng: np.random.Generator) -> Model:
    c1, c3 = Conv2d(1, 6, dtype=dtype, input_grad=False), TableConv(C3_TABLE, 6, dtype=dtype)
    s2, s4 = Subsampling(6, c.subsample, dtype), Subsampling(16, c.subsample, dtype)
    c5, f6 = Conv2d(16, 120, dtype=dtype), Linear(120, c.f6, dtype=dtype)
    # Fan-ins from the spec's table, drawn in the torch model's order (c1, s2, c3, s4, c5, f6).
    fan = fan_in_1998()
    c3_kernel, c3_map = (np.array(f) for f in fan["c3"])
    fans = [(c1, *fan["c1"]), (s2, *fan["s2"]), (c3, c3_kernel[:, None, None], c3_map),
            (s4, *fan["s4"]), (c5, *fan["c5"]), (f6, *fan["f6"])]
    for layer, w_fan, b_fan in fans:
        w, b = layer.params["weight"], layer.params["bias"]
        w[...] = fanin_uniform(rng, w.shape, w_fan, dtype, c.init)
        b[...] = fanin_uniform(rng, b.shape, b_fan, dtype, c.init) if c.init_bias == "fanin" else 0
    if c.init == "lush":  # Lush sets the coefficients to 1/sqrt(4), not drawn (spec.INIT_RULES)
        for layer in (s2, s4):
            layer.params["weight"][...] = init_range(fan["s2"][0], c.init)
    return Model("lenet5-1998", c, [
        ("c1", [("c1", c1), (None, ScaledTanh())]),  # (6, 28, 28, B)
        ("s2", [("s2", s2), (None, ScaledTanh())]),  # (6, 14, 14, B)
        ("c3", [("c3", c3), (None, ScaledTanh())]),  # (16, 10, 10, B)
        ("s4", [("s4", s4), (None, ScaledTanh())]),  # (16, 5, 5, B)
        ("c5", [("c5", c5), (None, ScaledTanh())]),  # (120, 1, 1, B)
        ("f6", [(None, Flatten()), ("f6", f6), (None, ScaledTanh())]),  # (84, B)
        ("out", [("rbf", EuclideanRBF(rbf_prototypes(dtype, c.prototypes)))]),  # (10, B)
    ], "rbf", dtype)


def build_modern(c: ModernConfig, dtype, rng: np.random.Generator) -> Model:
    w1, w3, w5, w6 = c.widths
    bn, seeds = c.batchnorm, rng.integers(2**63, size=2)

    def act() -> Layer:
        return ReLU() if c.activation == "relu" else ScaledTanh(1.0, 1.0)

    def pool() -> Layer:
        return MaxPool(2) if c.pool == "max" else AvgPool(2)

    def block(name: str, lin: Layer, width: int) -> list[tuple[str | None, Layer]]:
        # PyTorch's default init: kaiming_uniform(a=sqrt(5)) = U[-1/sqrt(F), 1/sqrt(F)], bias too.
        w = lin.params["weight"]
        bound = 1 / np.sqrt(w[0].size)
        for p in lin.params.values():
            p[...] = rng.uniform(-bound, bound, p.shape).astype(dtype)
        norm = [(f"{name}.1", BatchNorm(width, dtype=dtype))] if bn else []
        return [(f"{name}.0", lin), *norm, (None, act())]

    conv = dict(bias=not bn, dtype=dtype)
    head = Linear(w6, 10, dtype=dtype)
    block("head", head, 10)  # initialise it like the others
    return Model("lenet5-modern", c, [
        ("c1", block("c1", Conv2d(1, w1, input_grad=False, **conv), w1)),  # (w1, 28, 28, B)
        ("s2", [(None, pool())]),  # (w1, 14, 14, B)
        ("c3", block("c3", Conv2d(w1, w3, **conv), w3)),  # (w3, 10, 10, B)
        ("s4", [(None, pool())]),  # (w3, 5, 5, B)
        ("c5", block("c5", Conv2d(w3, w5, **conv), w5)),  # (w5, 1, 1, B)
        ("f6", [(None, Flatten()), (None, Dropout(c.dropout, seeds[0])),
                *block("f6", Linear(w5, w6, bias=not bn, dtype=dtype), w6)]),  # (w6, B)
        ("out", [(None, Dropout(c.dropout, seeds[1])), ("head", head)]),  # (10, B) logits
    ], "logits", dtype)


def build(name: str, config: dict | None = None, dtype=np.float32,
          seed: int | None = None) -> Model:
    """A freshly initialised model from the torch model's name and config dict: the NumPy
    builder the model registry names for it (:func:`lenet5.models.build_numpy`), a variant's
    options applied and every option checked as for the torch model."""
    from ..models import build_numpy

    return build_numpy(name, config, dtype, seed)
