"""Layers of the NumPy engine: forward and backward side by side (paper Section II-B).

Every layer is a small class. ``forward(x)`` caches what its backward needs; ``backward(dout)``
returns ``dx`` and fills ``self.grads`` under the same names as ``self.params``. The layers of
LeNet-5 (1998) also have ``gn_backward(d2out)``: the Gauss-Newton diagonal pass of SDLM
(Appendix C). Second derivatives travel back through the squared weights and the squared
derivative of the squashing function, and ``self.h[name]`` sums d2E/da^2 * x^2 over every
connection that shares a weight (the recipe of the torch ``gn_backward`` methods).

Layout: activations are channels-first, batch-last: maps ``(C, H, W, B)`` and vectors
``(F, B)``. Then a convolution is one GEMM ``(Cout, C*k*k) @ (C*k*k, Ho*Wo*B)`` whose output
is already the next layer's ``(Cout, Ho, Wo, B)``, im2col copies contiguous runs of ``Wo*B``
values, and col2im adds them back in runs just as long. Parameters keep PyTorch's layouts
(``weight (Cout, Cin, k, k)``, ``(Fout, Fin)``) so state dicts move between the engines as is.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..models.spec import TANH_A as A  # the scaled tanh f(a) = A tanh(S a) of Appendix A
from ..models.spec import TANH_S as S


class Layer:
    """Base: no parameters; ``training`` switches batch-norm and dropout."""

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.h: dict[str, np.ndarray] = {}
        self.training = False


# ---------------------------------------------------------------- convolutions (C1, C3, C5)


def im2col(x: np.ndarray, k: int, out: np.ndarray | None = None) -> np.ndarray:
    """``(C, H, W, B) -> (C*k*k, Ho*Wo*B)``; row ``(c, i, j)`` holds ``x[c, i:i+Ho, j:j+Wo]``.

    ``out``: a buffer from the previous call, reused when its shape fits (the C1 columns are
    80 MB at batch 1024; a fresh array would page-fault its way in every step).
    """
    c, h, w, b = x.shape
    ho, wo = h - k + 1, w - k + 1
    win = sliding_window_view(x, (k, k), axis=(1, 2))  # (C, Ho, Wo, B, k, k), a view
    if out is None or out.shape != (c * k * k, ho * wo * b) or out.dtype != x.dtype:
        out = np.empty((c * k * k, ho * wo * b), x.dtype)
    np.copyto(out.reshape(c, k, k, ho, wo, b), win.transpose(0, 4, 5, 1, 2, 3))
    return out


def col2im(cols: np.ndarray, shape: tuple[int, ...], k: int) -> np.ndarray:
    """The adjoint of :func:`im2col`: add every window's column back into ``(C, H, W, B)``."""
    c, h, w, b = shape
    ho, wo = h - k + 1, w - k + 1
    cols = cols.reshape(c, k, k, ho, wo, b)
    dx = np.zeros(shape, cols.dtype)
    for i in range(k):
        for j in range(k):
            dx[:, i : i + ho, j : j + wo] += cols[:, i, j]  # runs of wo*b contiguous values
    return dx


class Conv2d(Layer):
    """Valid k x k convolution, stride 1 (C1, C5; C3 of the modern model).

    ``input_grad=False`` skips dx (the first layer needs no gradient for the image).
    """

    def __init__(self, cin: int, cout: int, k: int = 5, bias: bool = True,
                 dtype=np.float32, input_grad: bool = True):
        super().__init__()
        self.cin, self.cout, self.k, self.input_grad = cin, cout, k, input_grad
        self.cols = self.dcols = None  # im2col buffers, kept between steps
        self.params["weight"] = np.zeros((cout, cin, k, k), dtype)
        if bias:
            self.params["bias"] = np.zeros(cout, dtype)

    def kernel(self) -> np.ndarray:
        """The dense ``(Cout, Cin, k, k)`` kernel (C3 scatters its packed table into one)."""
        return self.params["weight"]

    def weight_grad(self, dense: np.ndarray) -> np.ndarray:
        """Gradient of the stored weight from that of the dense kernel."""
        return dense.reshape(self.params["weight"].shape)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        self.cols = im2col(x, self.k, self.cols)  # (Cin*k*k, Ho*Wo*B)
        self.wmat = self.kernel().reshape(self.cout, -1)  # (Cout, Cin*k*k)
        out = self.wmat @ self.cols  # (Cout, Ho*Wo*B)
        if "bias" in self.params:
            out += self.params["bias"][:, None]
        c, h, w, b = x.shape
        return out.reshape(self.cout, h - self.k + 1, w - self.k + 1, b)

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        d = dout.reshape(self.cout, -1)  # (Cout, Ho*Wo*B)
        self.grads["weight"] = self.weight_grad(d @ self.cols.T)
        if "bias" in self.params:
            self.grads["bias"] = d.sum(1)
        if not self.input_grad:
            return None
        shape = (self.wmat.shape[1], d.shape[1])  # (Cin*k*k, Ho*Wo*B), reused like the cols
        if self.dcols is None or self.dcols.shape != shape or self.dcols.dtype != d.dtype:
            self.dcols = np.empty(shape, d.dtype)
        np.matmul(self.wmat.T, d, out=self.dcols)
        return col2im(self.dcols, self.x.shape, self.k)  # (Cin, H, W, B)

    def gn_backward(self, d2out: np.ndarray) -> np.ndarray | None:
        d2 = d2out.reshape(self.cout, -1)
        self.h["weight"] = self.weight_grad(d2 @ (self.cols * self.cols).T)
        if "bias" in self.params:
            self.h["bias"] = d2.sum(1)
        if not self.input_grad:
            return None
        return col2im((self.wmat * self.wmat).T @ d2, self.x.shape, self.k)


class TableConv(Conv2d):
    """C3: each output map reads only the input maps Table I lists (Section II-B).

    The kernels are stored packed, ``weight (n_pairs, k, k)`` in table order (60 for Table I),
    exactly like the torch ``TableConv``; forward scatters them into a dense kernel whose other
    entries are zero and runs one GEMM. The zero entries cost a few multiply-adds but keep C3
    a single contiguous matrix product.
    """

    def __init__(self, table, cin: int, k: int = 5, dtype=np.float32, input_grad: bool = True):
        super().__init__(cin, len(table), k, True, dtype, input_grad)
        pairs = [(o, i) for o, ins in enumerate(table) for i in ins]
        self.index = np.array([o * cin + i for o, i in pairs])  # into the flat (Cout*Cin) kernels
        self.params["weight"] = np.zeros((len(pairs), k, k), dtype)

    def kernel(self) -> np.ndarray:
        w = self.params["weight"]
        dense = np.zeros((self.cout * self.cin, self.k, self.k), w.dtype)
        dense[self.index] = w
        return dense.reshape(self.cout, self.cin, self.k, self.k)

    def weight_grad(self, dense: np.ndarray) -> np.ndarray:
        return dense.reshape(self.cout * self.cin, self.k, self.k)[self.index]


# ---------------------------------------------------------------- pooling (S2, S4)


def windows(x: np.ndarray, k: int) -> np.ndarray:
    """``(C, H, W, B) -> (C, H/k, k, W/k, k, B)``: the non-overlapping k x k windows, a view."""
    c, h, w, b = x.shape
    return x.reshape(c, h // k, k, w // k, k, b)


def upsample(g: np.ndarray, k: int) -> np.ndarray:
    """``(C, Ho, Wo, B) -> (C, Ho*k, Wo*k, B)``: each value copied over its k x k window."""
    c, ho, wo, b = g.shape
    full = np.broadcast_to(g[:, :, None, :, None], (c, ho, k, wo, k, b))
    return full.reshape(c, ho * k, wo * k, b)


class Subsampling(Layer):
    """S2/S4: per map, coef * (2x2 sum or average) + bias, one coefficient and bias per map."""

    def __init__(self, channels: int, mode: str = "sum", dtype=np.float32, k: int = 2):
        super().__init__()
        if mode not in ("sum", "average"):
            raise ValueError(f"subsample must be 'sum' or 'average', got {mode!r}")
        self.k, self.tap = k, 1.0 if mode == "sum" else 1.0 / (k * k)  # factor on each input
        self.params["weight"] = np.zeros(channels, dtype)  # the trainable coefficient
        self.params["bias"] = np.zeros(channels, dtype)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        self.pooled = windows(x, self.k).sum((2, 4)) * x.dtype.type(self.tap)  # (C, Ho, Wo, B)
        w, b = self.params["weight"], self.params["bias"]
        return self.pooled * w[:, None, None, None] + b[:, None, None, None]

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.grads["weight"] = (dout * self.pooled).sum((1, 2, 3))
        self.grads["bias"] = dout.sum((1, 2, 3))
        coef = self.params["weight"] * self.x.dtype.type(self.tap)
        return upsample(dout * coef[:, None, None, None], self.k)

    def gn_backward(self, d2out: np.ndarray) -> np.ndarray:
        # Each output has k*k connections of weight tap * coef to its window.
        sq_sum = windows(self.x * self.x, self.k).sum((2, 4))
        self.h["weight"] = (d2out * sq_sum).sum((1, 2, 3)) * self.tap**2
        self.h["bias"] = d2out.sum((1, 2, 3))
        coef2 = (self.params["weight"] * self.tap) ** 2
        return upsample(d2out * coef2[:, None, None, None], self.k)


class AvgPool(Layer):
    """Non-overlapping k x k average pooling (nn.AvgPool2d(k))."""

    def __init__(self, k: int = 2):
        super().__init__()
        self.k = k

    def forward(self, x: np.ndarray) -> np.ndarray:
        return windows(x, self.k).mean((2, 4))

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return upsample(dout * dout.dtype.type(1.0 / self.k**2), self.k)


class MaxPool(Layer):
    """Non-overlapping k x k max pooling; the gradient goes to the first maximum in row-major
    window order, as PyTorch's CPU kernel does (it matters for ties)."""

    def __init__(self, k: int = 2):
        super().__init__()
        self.k = k

    def forward(self, x: np.ndarray) -> np.ndarray:
        v = windows(x, self.k)  # (C, Ho, k, Wo, k, B)
        taps = [v[:, :, i, :, j] for i in range(self.k) for j in range(self.k)]
        out = taps[0].copy()  # (C, Ho, Wo, B)
        self.arg = np.zeros(out.shape, np.int8)  # which tap won, row-major in the window
        for t, tap in enumerate(taps[1:], 1):
            better = tap > out
            np.copyto(out, tap, where=better)
            self.arg[better] = t
        self.x_shape = x.shape
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = np.zeros(self.x_shape, dout.dtype)
        v = windows(dx, self.k)
        for t in range(self.k * self.k):
            v[:, :, t // self.k, :, t % self.k] = dout * (self.arg == t)
        return dx


# ---------------------------------------------------------------- activations


class ScaledTanh(Layer):
    """f(a) = A tanh(S a); A = 1.7159, S = 2/3 in the paper (A = S = 1 is the plain tanh).

    Only the output y is cached: f'(a) = A S (1 - tanh^2(S a)) = (S / A) (A^2 - y^2).
    """

    def __init__(self, a: float = A, s: float = S):
        super().__init__()
        self.a, self.s = a, s

    def forward(self, x: np.ndarray) -> np.ndarray:
        y = np.multiply(x, x.dtype.type(self.s))  # the one new array; the rest is in place
        np.tanh(y, out=y)
        y *= x.dtype.type(self.a)
        self.y = y
        return y

    def derivative(self) -> np.ndarray:
        d = np.square(self.y)
        d -= self.y.dtype.type(self.a * self.a)
        d *= self.y.dtype.type(-self.s / self.a)
        return d

    def backward(self, dout: np.ndarray) -> np.ndarray:
        d = self.derivative()
        d *= dout
        return d

    def gn_backward(self, d2out: np.ndarray) -> np.ndarray:
        d = self.derivative()
        np.square(d, out=d)
        d *= d2out
        return d


class ReLU(Layer):
    def forward(self, x: np.ndarray) -> np.ndarray:
        self.mask = x > 0
        return x * self.mask

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout * self.mask


class Sigmoid(Layer):
    def forward(self, x: np.ndarray) -> np.ndarray:
        self.y = np.exp(-np.logaddexp(0, -x))  # 1 / (1 + e^-x) without overflow
        return self.y

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout * self.y * (1 - self.y)


# ---------------------------------------------------------------- vectors (F6, head)


class Flatten(Layer):
    """``(C, H, W, B) -> (C*H*W, B)``: the same feature order as torch's ``flatten(1)``."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.shape = x.shape
        return x.reshape(-1, x.shape[-1])

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout.reshape(self.shape)

    gn_backward = backward


class Linear(Layer):
    """``(Fin, B) -> (Fout, B)``: W x + b with ``weight (Fout, Fin)`` (F6 and the head)."""

    def __init__(self, fin: int, fout: int, bias: bool = True, dtype=np.float32):
        super().__init__()
        self.params["weight"] = np.zeros((fout, fin), dtype)
        if bias:
            self.params["bias"] = np.zeros(fout, dtype)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        out = self.params["weight"] @ x
        if "bias" in self.params:
            out += self.params["bias"][:, None]
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.grads["weight"] = dout @ self.x.T
        if "bias" in self.params:
            self.grads["bias"] = dout.sum(1)
        return self.params["weight"].T @ dout

    def gn_backward(self, d2out: np.ndarray) -> np.ndarray:
        self.h["weight"] = d2out @ (self.x * self.x).T
        self.h["bias"] = d2out.sum(1)
        return (self.params["weight"] ** 2).T @ d2out


class EuclideanRBF(Layer):
    """y_i = sum_j (x_j - w_ij)^2 against fixed prototypes ``(10, 84)`` (Section II-B, Fig. 3)."""

    def __init__(self, prototypes: np.ndarray):
        super().__init__()
        self.buffers["prototypes"] = prototypes

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.diff = x[None] - self.buffers["prototypes"][:, :, None]  # (10, 84, B)
        return (self.diff * self.diff).sum(1)  # (10, B)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return 2 * np.einsum("ib,ijb->jb", dout, self.diff)  # (84, B)


# ---------------------------------------------------------------- regularisers


class BatchNorm(Layer):
    """Batch-norm over every axis but the first: ``(C, H, W, B)`` (2d) or ``(F, B)`` (1d).

    PyTorch semantics: normalise with the biased batch variance, update the running mean and
    the *unbiased* running variance with momentum 0.1, count ``num_batches_tracked``.
    """

    def __init__(self, channels: int, momentum: float = 0.1, eps: float = 1e-5, dtype=np.float32):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.params["weight"] = np.ones(channels, dtype)
        self.params["bias"] = np.zeros(channels, dtype)
        self.buffers["running_mean"] = np.zeros(channels, dtype)
        self.buffers["running_var"] = np.ones(channels, dtype)
        self.buffers["num_batches_tracked"] = np.zeros((), np.int64)

    def forward(self, x: np.ndarray) -> np.ndarray:
        axes = tuple(range(1, x.ndim))
        col = (slice(None),) + (None,) * (x.ndim - 1)  # broadcast a (C,) vector over x
        buf = self.buffers
        if self.training:
            n = x.size // x.shape[0]
            mean = x.mean(axes)
            centred = x - mean[col]
            var = (centred * centred).mean(axes)
            m = self.momentum
            buf["running_mean"][...] = (1 - m) * buf["running_mean"] + m * mean
            buf["running_var"][...] = (1 - m) * buf["running_var"] + m * var * (n / max(n - 1, 1))
            buf["num_batches_tracked"] += 1
        else:
            centred = x - buf["running_mean"][col]
            var = buf["running_var"]
        self.invstd = (1 / np.sqrt(var + self.eps)).astype(x.dtype)
        self.xhat, self.col, self.axes = centred * self.invstd[col], col, axes
        return self.xhat * self.params["weight"][col] + self.params["bias"][col]

    def backward(self, dout: np.ndarray) -> np.ndarray:
        col, axes = self.col, self.axes
        self.grads["weight"] = (dout * self.xhat).sum(axes)
        self.grads["bias"] = dout.sum(axes)
        scale = (self.params["weight"] * self.invstd)[col]
        if not self.training:  # running statistics are constants
            return dout * scale
        n = dout.size // dout.shape[0]
        mean_d = self.grads["bias"] / n
        mean_dx = self.grads["weight"] / n
        return (dout - mean_d[col] - self.xhat * mean_dx[col]) * scale


class Dropout(Layer):
    """Inverted dropout: in training zero each value with probability p and scale by 1/(1-p)."""

    def __init__(self, p: float = 0.5, seed: int | None = None):
        super().__init__()
        self.p, self.rng = p, np.random.default_rng(seed)

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not self.training or self.p == 0:
            self.mask = None
            return x
        keep = self.rng.random(x.shape, dtype=x.dtype) >= self.p
        self.mask = keep * x.dtype.type(1.0 / (1.0 - self.p) if self.p < 1 else 0.0)
        return x * self.mask

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout if self.mask is None else dout * self.mask
