"""LeNet-5 exactly as published: LeCun, Bottou, Bengio, Haffner (1998), Section II-B.

Reads C1 -> S2 -> C3 (Table I) -> S4 -> C5 -> F6 -> Euclidean RBF, every layer followed by the
scaled tanh f(a) = 1.7159 tanh(2a/3) (Appendix A) except the RBF output. 60,000 trainable
parameters. Each trainable layer also carries ``gn_backward``: the Gauss-Newton diagonal
second-derivative backward pass used by SDLM (Appendix C): second derivatives travel back
through the squares of the weights and the squared derivative of the squashing function, and
each weight's h_kk sums d2E/da^2 * x^2 over every connection that shares it.

Open choices of the paper (README, "Paper choices"), all in :class:`LeNet1998Config`:
- ``subsample``: "average" (default; Section II-B calls S2 an average) or "sum" (the four
  inputs "are added"). With "sum" the Gauss-Newton terms below S2/S4 are 16x larger and the
  pass-1 steps fall well under the paper's range; "average" lands in it.
- ``init``: "sqrt-fanin" (default), U[-2.4/sqrt(F), 2.4/sqrt(F)], or "fanin", the printed
  U[-2.4/F, 2.4/F]. The printed rule makes the second derivatives vanish towards C1 and the
  paper's SDLM diverge; see :mod:`.spec` and docs/results.md.
- ``init_bias``: biases drawn like the weights (default) or zero; F counts the weighted inputs
  of a unit, not the bias (so S2's coefficient has F = 4).
- ``map_j``: the MAP criterion's constant j (default 0.1); it also turns RBF distances into a
  posterior for prediction.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.grad import conv2d_input, conv2d_weight

from . import register_model
from .bitmaps import rbf_prototypes
from .spec import C3_TABLE, TANH_A, TANH_S, LeNet1998Config, fan_in_1998, init_range, table_fan_in
from .spec import scores as head_scores

__all__ = ["C3_TABLE", "LeNet1998Config", "LeNet5"]

A, S = TANH_A, TANH_S  # f(a) = A tanh(S a), Appendix A


def squash(a: torch.Tensor) -> torch.Tensor:
    return A * torch.tanh(S * a)


def squash_grad(a: torch.Tensor) -> torch.Tensor:
    """f'(a) = A S (1 - tanh^2(S a))."""
    return A * S * (1 - torch.tanh(S * a) ** 2)


def fanin_uniform_(t: torch.Tensor, fan_in: float | torch.Tensor, rule: str = "sqrt-fanin") -> None:
    """U[-r, r] with r = 2.4/F or 2.4/sqrt(F) (Appendix A; :func:`spec.init_range`).

    ``fan_in`` may be a per-output tensor broadcast over ``t``.
    """
    with torch.no_grad():
        t.uniform_(-1.0, 1.0).mul_(init_range(torch.as_tensor(fan_in, dtype=t.dtype), rule))


def init_params_(weight: nn.Parameter, bias: nn.Parameter, fan_in, bias_fan, rule: str,
                 init_bias: str) -> None:
    fanin_uniform_(weight, fan_in, rule)
    fanin_uniform_(bias, bias_fan, rule) if init_bias == "fanin" else nn.init.zeros_(bias)


class Conv(nn.Conv2d):
    """A full 5x5 convolution (C1, C5) with fan-in initialisation and its GN backward.

    ``fan``: ``(weight F, bias F)``; by default the unit's weighted inputs, ``cin * 25``.
    """

    def __init__(self, cin: int, cout: int, init: str = "sqrt-fanin", init_bias: str = "fanin",
                 fan: tuple | None = None):
        super().__init__(cin, cout, 5)
        w_fan, b_fan = fan or (cin * 25.0, cin * 25.0)
        init_params_(self.weight, self.bias, w_fan, b_fan, init, init_bias)

    def gn_backward(self, x: torch.Tensor, d2: torch.Tensor) -> tuple[torch.Tensor, dict]:
        h = {"weight": conv2d_weight(x * x, self.weight.shape, d2), "bias": d2.sum((0, 2, 3))}
        return conv2d_input(x.shape, self.weight**2, d2), h


class TableConv(nn.Module):
    """C3: sixteen 5x5 maps, each reading only the S2 maps Table I gives it.

    The 60 kernels are stored packed, ``weight (60, 5, 5)``, so the parameter count is the
    paper's 1,516; forward scatters them into a dense ``(16, 6, 5, 5)`` kernel whose other
    entries are structurally zero and runs one convolution.
    """

    def __init__(self, table=C3_TABLE, cin: int = 6, init: str = "sqrt-fanin", init_bias: str = "fanin"):
        super().__init__()
        self.cin, self.cout = cin, len(table)
        pairs = [(o, i) for o, ins in enumerate(table) for i in ins]
        self.register_buffer("index", torch.tensor([o * cin + i for o, i in pairs]), persistent=False)
        self.weight = nn.Parameter(torch.empty(len(pairs), 5, 5))
        self.bias = nn.Parameter(torch.empty(self.cout))
        per_kernel, per_map = table_fan_in(table)  # a kernel shares its map's fan-in
        init_params_(self.weight, self.bias, torch.tensor(per_kernel)[:, None, None],
                     torch.tensor(per_map), init, init_bias)

    def dense(self, w: torch.Tensor) -> torch.Tensor:
        flat = w.new_zeros(self.cout * self.cin, 5, 5).index_copy(0, self.index, w)
        return flat.view(self.cout, self.cin, 5, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.dense(self.weight), self.bias)

    def gn_backward(self, x: torch.Tensor, d2: torch.Tensor) -> tuple[torch.Tensor, dict]:
        dense = self.dense(self.weight)
        h_dense = conv2d_weight(x * x, dense.shape, d2).reshape(-1, 5, 5)
        h = {"weight": h_dense.index_select(0, self.index), "bias": d2.sum((0, 2, 3))}
        return conv2d_input(x.shape, dense**2, d2), h


class Subsampling(nn.Module):
    """S2/S4: per map, coef * (2x2 sum or average) + bias; one coefficient and bias per map."""

    def __init__(self, channels: int, mode: str = "sum", init: str = "sqrt-fanin",
                 init_bias: str = "fanin", fan: tuple = (4.0, 4.0)):
        super().__init__()
        if mode not in ("sum", "average"):
            raise ValueError(f"subsample must be 'sum' or 'average', got {mode!r}")
        self.mode = mode
        self.weight = nn.Parameter(torch.empty(channels))  # the trainable coefficient
        self.bias = nn.Parameter(torch.empty(channels))
        init_params_(self.weight, self.bias, *fan, init, init_bias)
        if init == "lush":  # Lush sets the coefficients to 1/sqrt(4), not drawn (spec.INIT_RULES)
            nn.init.constant_(self.weight, init_range(fan[0], init))

    @property
    def tap(self) -> float:
        """The fixed factor on each of the four inputs: 1 (sum) or 1/4 (average)."""
        return 1.0 if self.mode == "sum" else 0.25

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(x, 2) * (4 * self.tap)
        return pooled * self.weight[:, None, None] + self.bias[:, None, None]

    def gn_backward(self, x: torch.Tensor, d2: torch.Tensor) -> tuple[torch.Tensor, dict]:
        # Each output has four connections of weight tap * coef to its window.
        sq_sum = F.avg_pool2d(x * x, 2) * 4
        h = {"weight": (d2 * sq_sum).sum((0, 2, 3)) * self.tap**2, "bias": d2.sum((0, 2, 3))}
        per_input = d2 * (self.tap * self.weight[:, None, None]) ** 2
        return per_input.repeat_interleave(2, -1).repeat_interleave(2, -2), h


class Full(nn.Linear):
    """F6: 120 -> 84, fan-in initialisation and its GN backward."""

    def __init__(self, cin: int, cout: int, init: str = "sqrt-fanin", init_bias: str = "fanin",
                 fan: tuple | None = None):
        super().__init__(cin, cout)
        w_fan, b_fan = fan or (float(cin), float(cin))
        init_params_(self.weight, self.bias, w_fan, b_fan, init, init_bias)

    def gn_backward(self, x: torch.Tensor, d2: torch.Tensor) -> tuple[torch.Tensor, dict]:
        h = {"weight": d2.T @ (x * x), "bias": d2.sum(0)}
        return d2 @ self.weight**2, h


class EuclideanRBF(nn.Module):
    """y_i = sum_j (x_j - w_ij)^2 against fixed +-1 prototypes (the 7x12 bitmaps of Fig. 3;
    or Lush's +-1 one-hot targets, when the distance is the squared error to them)."""

    def __init__(self, kind: str = "bitmaps"):
        super().__init__()
        self.register_buffer("prototypes", rbf_prototypes(kind=kind))  # (10, 84), not trainable

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x[:, None, :] - self.prototypes) ** 2).sum(-1)  # (B, 10)


@register_model("lenet5-1998", config=LeNet1998Config, head="rbf", normalization="paper", loss="map")
class LeNet5(nn.Module):
    """The 1998 network. ``forward`` returns RBF distances (B, 10): smaller is better."""

    layer_names = ("c1", "s2", "c3", "s4", "c5", "f6")

    def __init__(self, config: LeNet1998Config | None = None):
        super().__init__()
        self.config = c = config or LeNet1998Config()
        init, fan = dict(init=c.init, init_bias=c.init_bias), fan_in_1998()
        self.c1 = Conv(1, 6, **init, fan=fan["c1"])
        self.s2 = Subsampling(6, c.subsample, **init, fan=fan["s2"])
        self.c3 = TableConv(C3_TABLE, 6, **init)  # fan["c3"]: Table I's, from the table itself
        self.s4 = Subsampling(16, c.subsample, **init, fan=fan["s4"])
        self.c5 = Conv(16, 120, **init, fan=fan["c5"])
        self.f6 = Full(120, c.f6, **init, fan=fan["f6"])
        self.rbf = EuclideanRBF(c.prototypes)

    def features(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """Squashed outputs of every layer, plus the RBF distances under ``"out"``."""
        feats: OrderedDict[str, torch.Tensor] = OrderedDict()
        x = feats["c1"] = squash(self.c1(x))  # (B, 6, 28, 28)
        x = feats["s2"] = squash(self.s2(x))  # (B, 6, 14, 14)
        x = feats["c3"] = squash(self.c3(x))  # (B, 16, 10, 10)
        x = feats["s4"] = squash(self.s4(x))  # (B, 16, 5, 5)
        x = feats["c5"] = squash(self.c5(x))  # (B, 120, 1, 1)
        x = feats["f6"] = squash(self.f6(x.flatten(1)))  # (B, 84)
        feats["out"] = self.rbf(x)  # (B, 10)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)["out"]

    def scores(self, out: torch.Tensor) -> torch.Tensor:
        """Higher is better: the negated distances (their argmax is the nearest prototype)."""
        return head_scores(out, "rbf")

    def log_probs(self, out: torch.Tensor) -> torch.Tensor:
        """The MAP criterion's posterior: P(i) = exp(-y_i) / (exp(-j) + sum_k exp(-y_k)).

        The remainder, exp(-j) / Z, is the "rubbish" class; these ten do not sum to one.
        """
        j = torch.full_like(out[:, :1], -self.config.map_j)
        return -out - torch.logsumexp(torch.cat([j, -out], 1), 1, keepdim=True)

    @torch.no_grad()
    def gauss_newton_diagonal(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Summed h_kk over the batch (Appendix C), keyed like ``named_parameters``.

        The output layer's second derivative is taken as d2E/dx^2 = 2 for each F6 output (the
        y_D term of the criterion; the competitive MAP term is ignored, an open choice).
        """
        pre, acts = {}, {"input": x}
        h = x
        for name in self.layer_names:
            layer = getattr(self, name)
            a = layer(h.flatten(1) if name == "f6" else h)
            pre[name], h = a, squash(a)
            acts[name] = h
        d2 = torch.full_like(h, 2.0)
        result: dict[str, torch.Tensor] = {}
        inputs = ("input",) + self.layer_names[:-1]
        for name, src in zip(reversed(self.layer_names), reversed(inputs)):
            layer = getattr(self, name)
            d2a = d2 * squash_grad(pre[name]) ** 2
            x_in = acts[src].flatten(1) if name == "f6" else acts[src]
            d2, hs = layer.gn_backward(x_in, d2a)
            if name == "f6":
                d2 = d2.view_as(acts[src])
            for pname, val in hs.items():
                result[f"{name}.{pname}"] = val
        return result
