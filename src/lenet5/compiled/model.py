"""``CompiledModel``: LeNet-5 (1998) or the modern variant on the compiled kernels.

The interface of :class:`lenet5.scratch.Model` (``forward``, ``backward``, ``params``,
``state_dict`` ...; batch-first arrays, torch names and layouts) plus two fast paths that stay
inside compiled code for a whole call:

- :meth:`CompiledModel.train_pass`: a pass of training (pattern loading, optional distortion,
  forward, loss, backward, update) over stored images in a given order.
- :meth:`CompiledModel.evaluate_images`: outputs for stored images, by the eval-only kernels
  of :mod:`.infer_1998` and :mod:`.infer_modern` (images in SIMD lanes, fused multiply-adds,
  batch-norm folded; runs of images on Numba's threads): equal to :meth:`forward` up to float
  rounding.

A model starts as a copy of ``lenet5.scratch.build(name, config, dtype, seed)``, so both
engines start from the same weights. Parameters live in one flat vector ``theta`` (the
NumPy model's ``params()`` order); ``params()`` returns views of it.
"""

from __future__ import annotations

import numba
import numpy as np

from .. import scratch
from ..scratch.model import copy_state
from . import infer_1998 as I98
from . import infer_modern as IM
from . import kernels_1998 as K98
from . import kernels_modern as KM
from . import losses as L
from .blocks import seed_generator
from .inputs import N_DISTORT


class CompiledModel:
    def __init__(self, name: str, config: dict | None = None, dtype=np.float32,
                 seed: int | None = None):
        ref = scratch.build(name, config, dtype, seed)
        # the architecture (a registered variant such as lenet5-modern-bn builds lenet5-modern)
        self.name, self.config, self.head = ref.name, ref.config, ref.head
        self.dtype = np.dtype(dtype)
        self.training = False
        params, state = ref.params(), ref.state_dict()
        self._keys = list(state)  # the torch state_dict order
        self._shapes = {k: v.shape for k, v in params.items()}
        sizes = np.cumsum([0] + [v.size for v in params.values()])
        self._slices = {k: (int(a), int(b)) for k, a, b in zip(params, sizes[:-1], sizes[1:])}
        self.theta = np.concatenate([v.ravel() for v in params.values()]).astype(self.dtype)
        self.grad = np.zeros_like(self.theta)
        self._params = self.unflatten(self.theta)
        self._grads = self.unflatten(self.grad)
        self._buffers: dict[str, np.ndarray] = {}
        self._work = None
        if self.name == "lenet5-1998":
            if list(params) != [k for k, _ in K98.PARAMS]:
                raise AssertionError("kernels_1998.PARAMS differ from the NumPy model's params()")
            self.prototypes = state["rbf.prototypes"].copy()
            self._buffers["rbf.prototypes"] = self.prototypes
            self.tap = 1.0 if ref.config.subsample == "sum" else 0.25
            self.f6 = int(ref.config.f6)  # 84, or 10 (Lush's lenet5)
        else:
            c = ref.config
            self.widths = np.array(c.widths, np.int64)
            self.offs = np.zeros((len(KM.SLOTS), 2), np.int64)
            for k, slot in enumerate(KM.SLOTS):
                if slot in self._slices:
                    self.offs[k] = self._slices[slot]
            self.act = 0 if c.activation == "relu" else 1
            self.pool = 0 if c.pool == "max" else 1
            self.bn, self.p = bool(c.batchnorm), float(c.dropout)
            self.stats = np.concatenate([np.r_[np.zeros(w), np.ones(w)]  # mean 0, var 1
                                         for w in c.widths]).astype(self.dtype)
            self.counts = np.zeros(4, np.int64)
            if self.bn:
                for k, layer in enumerate(KM.BN_LAYERS):
                    rm, rv = KM.stat_views(self.stats, self.widths, k)
                    self._buffers[f"{layer}.running_mean"] = rm
                    self._buffers[f"{layer}.running_var"] = rv
                    self._buffers[f"{layer}.num_batches_tracked"] = self.counts[k:k + 1].reshape(())
        self.load_state_dict(state)

    # -- flat vectors and names
    def unflatten(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Views of a theta-shaped vector by parameter name, in the parameters' shapes."""
        return {k: flat[a:b].reshape(self._shapes[k]) for k, (a, b) in self._slices.items()}

    def flatten(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        out = np.empty_like(self.theta)
        for k, (a, b) in self._slices.items():
            out[a:b] = np.asarray(arrays[k]).ravel()
        return out

    # -- parameters and state (as scratch.Model)
    def params(self) -> dict[str, np.ndarray]:
        return self._params

    def grads(self) -> dict[str, np.ndarray]:
        return self._grads

    def live_state(self) -> dict[str, np.ndarray]:
        return {**self._params, **self._buffers}

    def state_dict(self) -> dict[str, np.ndarray]:
        live = self.live_state()
        return {k: live[k].copy() for k in self._keys}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        copy_state(self.name, self.live_state(), state)

    # -- passes (as scratch.Model)
    def train(self, mode: bool = True) -> CompiledModel:
        self.training = mode
        return self

    def _workspace(self, batch: int):
        have = self._work.x.shape[0] if self._work is not None else 0
        if have < batch:
            if self.name == "lenet5-1998":
                self._work = K98.new_acts(batch, self.dtype, self.f6)
            else:
                self._work = KM.new_work(batch, self.widths, self.dtype)
        return self._work

    def forward(self, x, train: bool = False) -> np.ndarray:
        """``x (B, 1, 32, 32)`` normalised -> ``out (B, 10)``: RBF distances or logits."""
        self.train(train)
        x = np.asarray(x)
        n = x.shape[0]
        w = self._workspace(n)
        w.x[:n] = x.reshape(n, -1)
        self._n = n
        if self.name == "lenet5-1998":
            K98.forward(self.theta, self.prototypes, self.tap, w, n)
        else:
            KM.forward(self.theta, self.offs, self.widths, self.stats, self.counts, self.act,
                       self.pool, self.bn, self.p, train, w, n)
        return w.out[:n].copy()

    __call__ = forward

    def backward(self, dout: np.ndarray) -> dict[str, np.ndarray]:
        """Gradients from ``dE/dout (B, 10)`` after the last ``forward``, keyed like params."""
        dout = np.ascontiguousarray(dout, self.dtype)
        w = self._work
        if self.name == "lenet5-1998":
            K98.backward(self.theta, self.grad, self.prototypes, self.tap, w, dout)
        else:
            n = dout.shape[0]
            w.dout[:n] = dout
            KM.backward(self.theta, self.grad, self.offs, self.widths, self.act, self.pool,
                        self.bn, self.p, self.training, w, n)
        return self._grads

    def gauss_newton_diagonal(self, x) -> dict[str, np.ndarray]:
        """Summed h_kk over the batch (Appendix C), keyed like :meth:`params` (1998 only)."""
        if self.head != "rbf":
            raise ValueError(f"{self.name}: the Gauss-Newton diagonal is for lenet5-1998")
        self.train(False)
        x = np.asarray(x)
        n = x.shape[0]
        w = self._workspace(n)
        w.x[:n] = x.reshape(n, -1)
        h = np.zeros_like(self.theta)
        K98.gauss_newton(self.theta, h, self.prototypes, self.tap, w, n)
        return self.unflatten(h)

    def scores(self, out: np.ndarray) -> np.ndarray:
        """Higher is better: negated RBF distances, or the logits themselves."""
        return -out if self.head == "rbf" else out

    def predict(self, x, batch_size: int = 1000) -> np.ndarray:
        return np.concatenate([self.scores(self.forward(x[i:i + batch_size])).argmax(1)
                               for i in range(0, len(x), batch_size)])

    # -- fast paths over stored images
    def evaluate_images(self, images, idx=None, normalization=(0.1 / 1.275, 1.275),
                        batch_size: int = 256) -> np.ndarray:
        """Eval-mode outputs ``(len(idx), 10)`` of ``images[idx]`` (all when ``idx`` is None)."""
        images, divisor = _images(images)
        idx = np.arange(len(images)) if idx is None else np.asarray(idx, np.int64)
        shift, scale = _norm(normalization)
        out = np.zeros((len(idx), 10), self.dtype)
        self.train(False)
        if self.name == "lenet5-1998" and self.f6 == 84:
            I98.evaluate_parallel(self.theta, self.prototypes, self.tap, images, idx, divisor,
                                  shift, scale, out, numba.get_num_threads())
        elif self.name == "lenet5-1998":  # another F6 (Lush's 10 outputs): the exact kernels
            for i in range(0, len(idx), batch_size):
                out[i:i + batch_size] = self.forward(
                    _fields(images[idx[i:i + batch_size]], divisor, shift, scale, self.dtype))
        else:  # batch-norm folded into the layers, images in SIMD lanes (infer_modern)
            folded = IM.fold(self.theta, self.offs, self.widths, self.stats, bool(self.bn),
                             self.dtype)
            IM.evaluate_parallel(*folded, self.act, self.pool, images, idx, divisor, shift, scale,
                                 out, numba.get_num_threads())
        return out

    def curvature(self, images, idx, normalization=(0.1 / 1.275, 1.275)) -> dict[str, np.ndarray]:
        """The mean Gauss-Newton diagonal over ``images[idx]`` (``estimate_curvature``)."""
        if self.head != "rbf":
            raise ValueError(f"{self.name}: the Gauss-Newton diagonal is for lenet5-1998")
        images, divisor = _images(images)
        shift, scale = _norm(normalization)
        h = K98.curvature(self.theta, self.prototypes, self.tap, images,
                          np.asarray(idx, np.int64), divisor, shift, scale, self._workspace(1))
        return self.unflatten(h)

    def train_pass(self, images, labels, order, optimizer, lr=None, *, batch_size: int = 1,
                   loss: str | None = None, map_j: float | None = None,
                   label_smoothing: float = 0.0, normalization=(0.1 / 1.275, 1.275),
                   distortion=None, seed: int = 0) -> tuple[float, int, int]:
        """Train on ``images[order]`` in batches of ``batch_size``, one update per batch.

        ``images``: ``(N, 28, 28)`` uint8 digits or ``(N, [1,] 32, 32)`` floats in [0, 1];
        ``lr``: one rate for the pass or one per update (default ``optimizer.lr``);
        ``loss``: "map" | "mle" | "ce" (default: MAP for the RBF head, CE for logits);
        ``normalization``: ``(shift, scale)`` or a ``Normalization``; ``distortion``: None, or
        anything with ``translate, scale, squeeze, shear, rotate`` (``Distortion``); ``seed``:
        the distortion and dropout draws. Returns (loss summed over patterns, misclassified
        patterns, updates made); the optimizer's step count advances by the updates.
        """
        images, divisor = _images(images)
        labels = np.asarray(labels, np.int64)
        order = np.asarray(order, np.int64)
        shift, scale = _norm(normalization)
        loss = loss or ("map" if self.head == "rbf" else "ce")
        if loss in ("map", "mle") and self.head != "rbf":
            raise ValueError(f"loss {loss!r} needs an RBF head; {self.name} has logits")
        if map_j is None:
            map_j = getattr(self.config, "map_j", 0.1)
        lrs = np.atleast_1d(np.asarray(optimizer.lr if lr is None else lr, np.float64))
        ranges = _ranges(distortion)
        opt = optimizer.kernel_args()
        self.train(True)
        if self.name == "lenet5-1998":
            total, errors, k = K98.train_pass(
                self.theta, self.grad, self.prototypes, self.tap, images, labels, order, divisor,
                shift, scale, ranges, seed, batch_size, lrs, L.KINDS[loss], map_j, *opt,
                self._workspace(1))
        else:
            total, errors, k = KM.train_pass(
                self.theta, self.grad, self.offs, self.widths, self.stats, self.counts, self.act,
                self.pool, self.bn, self.p, images, labels, order, divisor, shift, scale, ranges,
                seed, batch_size, lrs, L.KINDS[loss], label_smoothing, *opt,
                self._workspace(batch_size))
        optimizer.advance(k)
        return total, errors, k


def _images(images) -> tuple[np.ndarray, float]:
    """``(N, h, w)`` C-contiguous pixels and the divisor that maps them to [0, 1]."""
    x = np.asarray(images)
    if x.ndim == 4:
        x = x[:, 0]
    if x.ndim != 3 or x.shape[1] > 32 or x.shape[2] > 32:
        raise ValueError(f"expected images (N, h, w) of at most 32x32, got {x.shape}")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x), 255.0
    return np.ascontiguousarray(x, np.float32 if x.dtype != np.float64 else np.float64), 1.0


def _fields(images, divisor, shift, scale, dtype) -> np.ndarray:
    """``(B, 1, 32, 32)`` normalised inputs from ``(B, h, w)`` pixels (centred, background 0),
    as :func:`.inputs.load_pattern` makes them one at a time."""
    n, h, w = images.shape
    x = np.zeros((n, 1, 32, 32), np.float64)
    top, left = (32 - h) // 2, (32 - w) // 2
    x[:, 0, top:top + h, left:left + w] = images / divisor
    return ((x - shift) * scale).astype(dtype)


def _norm(normalization) -> tuple[float, float]:
    if hasattr(normalization, "shift"):
        return float(normalization.shift), float(normalization.scale)
    shift, scale = normalization
    return float(shift), float(scale)


def _ranges(distortion) -> np.ndarray:
    if distortion is None:
        return np.zeros(0)
    if not hasattr(distortion, "translate"):
        return np.asarray(distortion, np.float64).reshape(N_DISTORT)
    return np.array([distortion.translate, distortion.scale, distortion.squeeze,
                     distortion.shear, distortion.rotate], np.float64)


def build(name: str, config: dict | None = None, dtype=np.float32,
          seed: int | None = None) -> CompiledModel:
    """A freshly initialised model, the same weights as ``lenet5.scratch.build`` gives."""
    return CompiledModel(name, config, dtype, seed)


def seed_dropout(seed: int) -> None:
    """Seed the generator of the modern model's dropout masks for :meth:`CompiledModel.forward`."""
    seed_generator(seed)
