"""The non-convolutional classifiers of the paper's Fig. 9 (Section III-C-1 to III-C-6).

Each is a torch module with the registry's interface (``forward``, ``scores``, ``log_probs``,
``features``, ``config``) on the usual normalised 32x32 field, so it evaluates, predicts,
exports and serves like the LeNets. A :class:`Retina` first takes the 28x28 digit out of the
field (optionally deslanted, :mod:`lenet5.data.deslant`, and resized) as a flat vector.

- :class:`Linear`: 784 -> 10; :class:`PairwiseLinear`: 45 units, one per pair of classes, the
  score of class i the sum of its pairs' (squashed) outputs, signed;
- :class:`KNN`: the k nearest stored training patterns by Euclidean distance (the patterns are
  buffers, stored as 8-bit levels), distances by matrix products over chunks of the stored set;
- :class:`PCAQuadratic`: projection on the first principal components, then a linear layer on
  the components and all their pairwise products (a degree-2 polynomial classifier);
- :class:`RBFNetwork`: Gaussian units (k-means centres, units / 10 per class), then linear;
- :class:`MLP`: fully connected, tanh hidden units.

The closed-form ones (:class:`ClosedForm`: linear, pairwise, k-NN, PCA, RBF) are fitted by
``model.fit(x, y)`` on the normalised training field, as the paper's were (least squares, a
pseudo-inverse, k-means; no gradient descent): ``lenet5 compare`` does it and saves the model
as a checkpoint. Their layers that are not convolutions or ``nn.Linear`` are :class:`Counted`:
they tell :mod:`lenet5.reporting.summary` their own connections and multiply-adds.
"""

from __future__ import annotations

from collections import OrderedDict
from itertools import combinations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.deslant import deslant as deslant_field
from . import register_model
from .fig9_spec import KNNConfig, LinearConfig, MLPConfig, PCAQuadraticConfig, RBFNetworkConfig
from .spec import scores as head_scores

PAIRS = tuple(combinations(range(10), 2))  # 45 (i, j), i < j
CHUNK = 8192  # stored patterns per distance block (k-NN, k-means)
SEARCH = 10  # k-NN: neighbours looked at for the confidence (the vote takes the first k)


class Counted(nn.Module):
    """A layer that states its own cost per image: ``counts() -> (connections, multiply-adds)``."""

    def counts(self) -> tuple[int, int]:
        raise NotImplementedError


class Retina(nn.Module):
    """``(B, 1, 32, 32)`` -> ``(B, size * size)``: deslanted if asked, then the 28x28 digit
    field resized to ``size``, or with ``box`` a ``size x size`` window of it, unscaled:
    ``"centre"``, rows and columns 4-23 of the field for 20; ``"ink"``, the window centred on the
    bounding box of the ink (above half an 8-bit level over the background), so for 20 it is
    MNIST's 20x20 digit box, which MNIST places by centre of mass, not in the middle (only 24%
    of the training digits lie within the central 20x20: docs/fig9.md)."""

    def __init__(self, size: int = 28, deslant: bool = False, box: str = ""):
        super().__init__()
        self.size, self.deslant, self.box = size, deslant, box

    @property
    def dim(self) -> int:
        return self.size * self.size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deslant:
            x = deslant_field(x)
        pad = (x.shape[-1] - 28) // 2
        x = x[..., pad : pad + 28, pad : pad + 28]  # (B, 1, 28, 28)
        if self.box == "centre":
            at = (28 - self.size) // 2
            return x[..., at : at + self.size, at : at + self.size].flatten(1)
        if self.box == "ink":
            return self.ink_window(x).flatten(1)
        if self.size != 28:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return x.flatten(1)

    def ink_window(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, 28, 28)`` -> ``(B, size, size)``: the window centred on the ink's bounding
        box, moved inside the field where it would leave it (a blank image: the centre)."""
        lo = x.amin((-2, -1), keepdim=True)
        ink = (x - lo) > (x.amax((-2, -1), keepdim=True) - lo) * (0.5 / 255)  # (B, 1, 28, 28)
        steps = torch.arange(self.size, device=x.device)
        starts = []
        for along in (-1, -2):  # rows: ink anywhere along a row; then columns
            line = ink.any(along)[:, 0].to(torch.uint8)  # (B, 28)
            first = line.argmax(1)
            last = 27 - line.flip(1).argmax(1)
            start = torch.div(first + last + 1 - self.size, 2, rounding_mode="floor")
            starts.append(start.clamp(0, 28 - self.size))
        rows = (starts[0][:, None] + steps)[:, :, None]  # (B, size, 1)
        cols = (starts[1][:, None] + steps)[:, None, :]  # (B, 1, size)
        batch = torch.arange(x.shape[0], device=x.device)[:, None, None]
        return x[batch, 0, rows, cols]


class LogitsModel(nn.Module):
    """The shared calls of a model whose ``features`` ends in logits-like scores."""

    def features(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)["out"]

    def scores(self, out: torch.Tensor) -> torch.Tensor:
        return head_scores(out, "logits")

    def log_probs(self, out: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(out, 1)


class ClosedForm(LogitsModel):
    """A model fitted in one go on the normalised training field ``x (N, 1, 32, 32)``."""

    closed_form = True  # lenet5 train refuses it; lenet5 compare fits it

    @torch.no_grad()
    def fit(self, x: torch.Tensor, y: torch.Tensor) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def inputs(self, x: torch.Tensor, batch: int = 4096) -> torch.Tensor:
        """The retina's vectors for a whole split, in batches (deslanting holds a few copies)."""
        return torch.cat([self.retina(x[i : i + batch]) for i in range(0, x.shape[0], batch)])


def least_squares(a: torch.Tensor, targets: torch.Tensor, ridge: float = 1e-3) -> torch.Tensor:
    """``W (out, in + 1)`` minimising ``|[a, 1] W^T - targets|^2 + ridge * N |W|^2``, in float64
    (the normal equations: in + 1 is at most a few thousand)."""
    a1 = torch.cat([a.double(), torch.ones(a.shape[0], 1, dtype=torch.float64)], 1)
    gram = a1.T @ a1
    gram += ridge * a.shape[0] * torch.eye(gram.shape[0], dtype=torch.float64)
    return torch.linalg.solve(gram, a1.T @ targets.double()).T


def plus_minus(y: torch.Tensor, classes: int = 10) -> torch.Tensor:
    """Targets +1 for the class, -1 for the others (the 1998 networks' convention)."""
    return F.one_hot(y, classes).double() * 2 - 1


def set_linear(layer: nn.Linear, w: torch.Tensor) -> None:
    layer.weight.copy_(w[:, :-1])
    layer.bias.copy_(w[:, -1])


# ----------------------------------------------------------------------------- linear


@register_model("linear", config=LinearConfig, head="logits", normalization="paper", loss="ce")
class Linear(ClosedForm):
    """One linear unit per class on the pixels; the largest sum wins."""

    def __init__(self, config: LinearConfig | None = None):
        super().__init__()
        self.config = c = config or LinearConfig()
        self.retina = Retina(28, c.deslant)
        self.head = nn.Linear(self.retina.dim, 10)

    def features(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats: OrderedDict[str, torch.Tensor] = OrderedDict()
        x = feats["input"] = self.retina(x)  # (B, 784)
        feats["out"] = self.head(x)  # (B, 10)
        return feats

    @torch.no_grad()
    def fit(self, x: torch.Tensor, y: torch.Tensor) -> None:
        set_linear(self.head, least_squares(self.inputs(x), plus_minus(y), self.config.ridge))


@register_model("pairwise-linear", config=LinearConfig, head="logits", normalization="paper",
                loss="ce")
class PairwiseLinear(ClosedForm):
    """45 linear units, unit ij trained to separate class i (+1) from class j (-1); the score of
    class i is the sum of the outputs of its units ij minus those of its units ji. The outputs
    are squashed (tanh) before the sum: raw least-squares outputs of the pairs a digit belongs
    to neither side of swamp the vote (docs/fig9.md: 11.4% raw, 7.1% squashed, 20,000
    training digits)."""

    def __init__(self, config: LinearConfig | None = None):
        super().__init__()
        self.config = c = config or LinearConfig()
        self.retina = Retina(28, c.deslant)
        self.head = nn.Linear(self.retina.dim, len(PAIRS))
        vote = torch.zeros(10, len(PAIRS))
        for p, (i, j) in enumerate(PAIRS):
            vote[i, p], vote[j, p] = 1.0, -1.0
        self.register_buffer("vote", vote, persistent=False)

    def features(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats: OrderedDict[str, torch.Tensor] = OrderedDict()
        x = feats["input"] = self.retina(x)  # (B, 784)
        x = feats["pairs"] = torch.tanh(self.head(x))  # (B, 45) squashed, as 1998 units were
        feats["out"] = x @ self.vote.T  # (B, 10) class scores
        return feats

    @torch.no_grad()
    def fit(self, x: torch.Tensor, y: torch.Tensor) -> None:
        a = self.inputs(x)
        rows = []
        for i, j in PAIRS:
            mine = (y == i) | (y == j)
            target = torch.where(y[mine] == i, 1.0, -1.0)[:, None]
            rows.append(least_squares(a[mine], target, self.config.ridge))
        set_linear(self.head, torch.cat(rows))


# ----------------------------------------------------------------------------- k-NN


class NearestNeighbours(Counted):
    """The stored patterns and their labels; ``forward(q)`` -> ``(B, 10)`` votes of the k
    nearest (Euclidean), plus 0.5 for the class of the nearest, which breaks ties, plus less
    than 0.25 by how near each class's nearest pattern is (:func:`closeness`: a confidence)."""

    def __init__(self, n: int, dim: int, k: int):
        super().__init__()
        self.k = k
        self.register_buffer("patterns", torch.zeros(n, dim, dtype=torch.uint8))  # 8-bit levels
        self.register_buffer("labels", torch.zeros(n, dtype=torch.int64))
        self.register_buffer("levels", torch.tensor([0.0, 1.0]))  # value = levels[0] + levels[1] * v

    def store(self, a: torch.Tensor, y: torch.Tensor) -> None:
        lo, hi = float(a.min()), float(a.max())
        step = (hi - lo) / 255 if hi > lo else 1.0
        self.patterns.copy_(((a - lo) / step).round_().clamp_(0, 255).to(torch.uint8))
        self.labels.copy_(y)
        self.levels.copy_(torch.tensor([lo, step]))

    def nearest(self, q: torch.Tensor, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(distances^2, indices)`` of the k nearest stored patterns (default: the model's k),
        ``(B, k)`` each, sorted."""
        k = min(k or self.k, self.patterns.shape[0])
        q2 = (q * q).sum(1, keepdim=True)  # (B, 1)
        best_d = q.new_full((q.shape[0], 0), 0.0)
        best_i = torch.zeros(q.shape[0], 0, dtype=torch.int64, device=q.device)
        for start in range(0, self.patterns.shape[0], CHUNK):
            t = self.levels[0] + self.levels[1] * self.patterns[start : start + CHUNK].to(q.dtype)
            d = q2 - 2 * q @ t.T + (t * t).sum(1)  # (B, chunk) squared distances
            d_k, i_k = d.topk(min(k, d.shape[1]), 1, largest=False)
            best_d = torch.cat([best_d, d_k], 1)
            best_i = torch.cat([best_i, i_k + start], 1)
            best_d, order = best_d.topk(min(k, best_d.shape[1]), 1, largest=False)
            best_i = best_i.gather(1, order)
        return best_d, best_i

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        d, idx = self.nearest(q, max(self.k, SEARCH))
        labels = self.labels[idx]  # (B, search), nearest first
        k = min(self.k, labels.shape[1])
        votes = torch.zeros(q.shape[0], 10, dtype=q.dtype, device=q.device)
        votes.scatter_add_(1, labels[:, :k], torch.ones_like(labels[:, :k], dtype=q.dtype))
        return votes + 0.5 * F.one_hot(labels[:, 0], 10).to(q.dtype) + 0.25 * closeness(d, labels)

    def counts(self) -> tuple[int, int]:
        n = self.patterns.numel()
        return n, n


def closeness(d: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(B, 10)`` in [0, 1): 1 - (distance to the class's nearest pattern among the searched
    ones) / (distance to the farthest searched), 0 for a class not among them. Below the
    smallest step of the votes (0.5) once scaled by 0.25, so it never changes a decision; it
    ranks the confidence of equal votes (Fig. 10's rejection) by how much nearer the winner is."""
    dist = d.clamp_min(1e-12).sqrt()  # (B, search), ascending
    far = dist[:, -1:]
    near = far.expand(-1, 10).scatter_reduce(1, labels, dist, "amin")  # absent classes: far
    return 1 - near / far


@register_model("knn", config=KNNConfig, head="logits", normalization="paper", loss="ce")
class KNN(ClosedForm):
    """k-nearest neighbours (Euclidean) on the pixels; outputs are the k votes per class."""

    def __init__(self, config: KNNConfig | None = None):
        super().__init__()
        self.config = c = config or KNNConfig()
        self.retina = Retina(28, c.deslant)
        self.head = NearestNeighbours(c.n_train, self.retina.dim, c.k)

    def features(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats: OrderedDict[str, torch.Tensor] = OrderedDict()
        x = feats["input"] = self.retina(x)  # (B, 784)
        feats["out"] = self.head(x)  # (B, 10) votes
        return feats

    @torch.no_grad()
    def fit(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if x.shape[0] != self.config.n_train:
            raise ValueError(f"knn was built for n_train={self.config.n_train} patterns, "
                             f"given {x.shape[0]}")
        self.head.store(self.inputs(x), y)


# ----------------------------------------------------------------------------- PCA + quadratic


class PCA(Counted):
    """Projection on the first principal components: ``(f - mean) @ components.T``."""

    def __init__(self, dim: int, components: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("components", torch.zeros(components, dim))

    def fit(self, a: torch.Tensor) -> None:
        mean = a.double().mean(0)
        centred = a.double() - mean
        _, vecs = torch.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
        self.mean.copy_(mean)
        self.components.copy_(vecs[:, -self.components.shape[0] :].flip(1).T)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return (a - self.mean) @ self.components.T

    def counts(self) -> tuple[int, int]:
        n = self.components.numel()
        return n, n


class Quadratic(Counted):
    """``z (B, c)`` -> ``[z, z_i z_j for i <= j]`` ``(B, c + c (c + 1) / 2)``."""

    def __init__(self, c: int):
        super().__init__()
        i, j = torch.triu_indices(c, c)
        self.register_buffer("i", i, persistent=False)
        self.register_buffer("j", j, persistent=False)

    @property
    def width(self) -> int:
        return self.i.shape[0] + int(self.i.max()) + 1

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.cat([z, z[:, self.i] * z[:, self.j]], 1)

    def counts(self) -> tuple[int, int]:
        return self.i.shape[0], self.i.shape[0]


@register_model("pca-quadratic", config=PCAQuadraticConfig, head="logits", normalization="paper",
                loss="ce")
class PCAQuadratic(ClosedForm):
    """The first principal components, then a linear classifier on them and their products."""

    def __init__(self, config: PCAQuadraticConfig | None = None):
        super().__init__()
        self.config = c = config or PCAQuadraticConfig()
        self.retina = Retina(28)
        self.pca = PCA(self.retina.dim, c.components)
        self.quad = Quadratic(c.components)
        self.head = nn.Linear(self.quad.width, 10)

    def features(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats: OrderedDict[str, torch.Tensor] = OrderedDict()
        x = feats["input"] = self.retina(x)  # (B, 784)
        x = feats["pca"] = self.pca(x)  # (B, 40)
        x = feats["quad"] = self.quad(x)  # (B, 860)
        feats["out"] = self.head(x)  # (B, 10)
        return feats

    @torch.no_grad()
    def fit(self, x: torch.Tensor, y: torch.Tensor) -> None:
        a = self.inputs(x)
        self.pca.fit(a)
        set_linear(self.head, least_squares(self.quad(self.pca(a)), plus_minus(y), ridge=1e-6))


# ----------------------------------------------------------------------------- RBF network


class GaussianUnits(Counted):
    """``exp(-|f - c_u|^2 * inv_width_u)`` for each centre c_u."""

    def __init__(self, units: int, dim: int):
        super().__init__()
        self.register_buffer("centres", torch.zeros(units, dim))
        self.register_buffer("inv_width", torch.ones(units))

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        d = (a * a).sum(1, keepdim=True) - 2 * a @ self.centres.T + (self.centres**2).sum(1)
        return torch.exp(-d.clamp_min(0) * self.inv_width)

    def counts(self) -> tuple[int, int]:
        n = self.centres.numel()
        return n, n


def kmeans(a: torch.Tensor, k: int, iters: int = 15, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means: ``(centres (k, D), mean squared distance of each centre's members)``;
    starts from k distinct patterns drawn with ``seed``. Distances by matrix products."""
    g = torch.Generator().manual_seed(seed)
    centres = a[torch.randperm(a.shape[0], generator=g)[:k]].clone()
    a2 = (a * a).sum(1, keepdim=True)
    for _ in range(iters + 1):
        d = (a2 - 2 * a @ centres.T + (centres**2).sum(1)).clamp_min(0)  # (N, k)
        dist, assign = d.min(1)
        count = torch.bincount(assign, minlength=k).to(a.dtype)
        spread = torch.zeros(k, dtype=a.dtype).index_add_(0, assign, dist) / count.clamp_min(1)
        sums = torch.zeros_like(centres).index_add_(0, assign, a)
        moved = sums / count.clamp_min(1)[:, None]
        centres = torch.where(count[:, None] > 0, moved, centres)
    return centres, spread


@register_model("rbf-network", config=RBFNetworkConfig, head="logits", normalization="paper",
                loss="ce")
class RBFNetwork(ClosedForm):
    """Gaussian RBF units (k-means centres, one group per class), then a linear layer."""

    def __init__(self, config: RBFNetworkConfig | None = None):
        super().__init__()
        self.config = c = config or RBFNetworkConfig()
        self.retina = Retina(28)
        self.gauss = GaussianUnits(c.units, self.retina.dim)
        self.head = nn.Linear(c.units, 10)

    def features(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats: OrderedDict[str, torch.Tensor] = OrderedDict()
        x = feats["input"] = self.retina(x)  # (B, 784)
        x = feats["gauss"] = self.gauss(x)  # (B, 1000)
        feats["out"] = self.head(x)  # (B, 10)
        return feats

    @torch.no_grad()
    def fit(self, x: torch.Tensor, y: torch.Tensor) -> None:
        a = self.inputs(x)
        per = self.config.units // 10
        centres, spreads = [], []
        for cls in range(10):
            mine = a[y == cls]
            c, s = kmeans(mine, min(per, mine.shape[0]), seed=cls)
            times = -(-per // c.shape[0])  # fewer patterns than units: centres repeat
            centres.append(c.repeat(times, 1)[:per])
            spreads.append(s.repeat(times)[:per])
        spread = torch.cat(spreads)
        # A centre alone with its pattern has no spread: it takes the others' mean (or, when
        # none has any, the patterns' own spread about their mean).
        whole = a.var(0).sum()
        some = spread > 1e-4 * whole  # (above rounding: distances are differences of squares)
        spread = torch.where(some, spread, spread[some].mean() if some.any() else whole)
        self.gauss.centres.copy_(torch.cat(centres))
        self.gauss.inv_width.copy_(1.0 / (2 * spread))  # exp(-d^2 / (2 sigma^2)), sigma^2 = spread
        h = torch.cat([self.gauss(a[i : i + 4096]) for i in range(0, a.shape[0], 4096)])
        set_linear(self.head, least_squares(h, plus_minus(y), ridge=1e-6))


# ----------------------------------------------------------------------------- MLP


@register_model("mlp", config=MLPConfig, head="logits", normalization="paper", loss="ce")
class MLP(LogitsModel):
    """A fully connected net: the pixels, tanh hidden layers ``h1``, ``h2``, ..., 10 outputs."""

    def __init__(self, config: MLPConfig | None = None):
        super().__init__()
        self.config = c = config or MLPConfig()
        self.retina = Retina(c.input, c.deslant, c.box)
        widths = (self.retina.dim, *c.hidden)
        self.layer_names = tuple(f"h{i + 1}" for i in range(len(c.hidden)))
        for name, cin, cout in zip(self.layer_names, widths, widths[1:]):
            setattr(self, name, nn.Linear(cin, cout))
        self.head = nn.Linear(widths[-1], 10)

    def features(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats: OrderedDict[str, torch.Tensor] = OrderedDict()
        x = feats["input"] = self.retina(x)  # (B, input^2)
        for name in self.layer_names:
            x = feats[name] = torch.tanh(getattr(self, name)(x))  # (B, width)
        feats["out"] = self.head(x)  # (B, 10) logits
        return feats
