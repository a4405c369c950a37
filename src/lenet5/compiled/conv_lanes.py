"""C3 of the modern model in training, over blocks of images held in SIMD lanes.

C3 (``w1`` 14x14 maps -> ``w3`` 10x10 maps, every input to every output, 5x5) is most of the
modern model's arithmetic. Pattern by pattern (:func:`.layers.conv_forward`, the wide layout)
it wastes the 4 junk columns of every 14-wide row and reaches about 15-19 multiply-adds per
nanosecond; here a block of ``L`` patterns (8 in float32, 4 in float64) sits in the lanes of
every register, as in the evaluation kernels (:mod:`.infer_modern`), and each step is one
fused multiply-add over ``L`` patterns (:func:`.simd.lane_block`, :func:`.simd.lane_corr`):

- :func:`conv3_forward`: ``z3 = conv(p1, W) + b`` (written in the wide layout the other layers
  use, junk columns zero);
- :func:`conv3_backward`: ``dp1 = full_conv(dz3, W)`` (the gradient maps padded by 4 zeros,
  the taps' offsets reversed, so it is a forward pass of its own; each input row takes only
  the kernel rows that reach inside the output), ``gW += corr(dz3, p1)``
  lane by lane, the lanes and blocks summed at the end in a fixed order, and ``gb += sum dz3``.

Blocks run in parallel (``prange``); the weight gradient goes into :data:`.blocks.SPLIT`
partial sums, so results do not depend on the number of threads. Same semantics as
:func:`.layers.conv_forward` / :func:`.layers.conv_backward`; sums in another order and with
fused multiply-adds, so equal to them (and to the NumPy engine) up to rounding (tests).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .blocks import SPLIT
from .jit import jit, parallel_jit
from .layers import PAD
from .simd import REGISTER_BYTES, lane_block, lane_corr, vsum

FORWARD2 = lane_block(2, 5)  # two C3 maps, half an output row
FORWARD1 = lane_block(1, 10)  # one map (an odd last one), a row
BACK6 = lane_block(6, 2)  # six input-gradient maps, two positions of a row
BACK1 = lane_block(1, 7)  # one map (past a multiple of six), half a row
CORR2 = lane_corr(2)  # two output maps' weight-gradient rows
CORR1 = lane_corr(1)

IN, OUT, PADDED = 14, 10, 18  # input side, output side, padded gradient side (10 + 2 * 4)


@jit
def forward_taps(w1):
    """``offs[i*25 + ky*5 + kx]``: where tap (i, ky, kx) of a C3 kernel reads the input block."""
    offs = np.empty(w1 * 25, np.int64)
    for i in range(w1):
        for ky in range(5):
            for kx in range(5):
                offs[i * 25 + ky * 5 + kx] = i * IN * IN + ky * IN + kx
    return offs


@jit
def _backward_taps(w3):
    """``offs[(ky*w3 + o)*5 + kx]``: where the input gradient at (y, x) reads the padded output
    gradient of map o at (y - ky, x - kx). Kernel rows outermost, so the taps that reach inside
    the output from input row y are one run: :func:`_row_taps`."""
    offs = np.empty(w3 * 25, np.int64)
    for ky in range(5):
        for o in range(w3):
            for kx in range(5):
                offs[(ky * w3 + o) * 5 + kx] = (o * PADDED * PADDED + (4 - ky) * PADDED
                                                + (4 - kx))
    return offs


@jit
def _row_taps(y, w3):
    """(first, count) of the taps of :func:`_backward_taps` that input row ``y`` needs: kernel
    rows ``ky`` with ``0 <= y - ky < 10``; the others read only the zero border (a fifth to
    four fifths of the taps in rows 0-3 and 10-13, 29% of them in all)."""
    first, last = max(0, y - (OUT - 1)), min(4, y)
    return first * w3 * 5, (last - first + 1) * w3 * 5


@jit
def _pack(src, first, m, lanes, out):
    """Patterns ``first .. first+m-1`` of ``src (B, C, n)`` into the lanes of ``out (C*n*L)``
    (lanes past ``m`` zero)."""
    L = lanes
    out[:] = 0
    for j in range(m):
        s = src[first + j]
        for c in range(s.shape[0]):
            row = s[c]
            base = c * row.shape[0]
            for i in range(row.shape[0]):
                out[(base + i) * L + j] = row[i]


@jit
def forward_block(x, offs, weight, bias, out, w1, w3):
    """C3 of one block: ``out (w3*100 registers) = bias + W * x (w1*196 registers)``, two maps
    half a row a call (the evaluation kernel's C3 too, :mod:`.infer_modern`); ``weight`` flat
    ``(w3, w1, 25)``, ``offs`` from :func:`forward_taps`."""
    fan = w1 * 25
    c = 0
    while c + 2 <= w3:
        for y in range(OUT):
            for u in range(0, OUT, 5):
                FORWARD2(x, y * IN + u, 1, offs, 0, fan, weight, c * fan, fan, bias, c, out,
                         (c * OUT + y) * OUT + u, OUT * OUT)
        c += 2
    if c < w3:
        for y in range(OUT):
            FORWARD1(x, y * IN, 1, offs, 0, fan, weight, c * fan, 0, bias, c, out,
                     (c * OUT + y) * OUT, 0)


@parallel_jit
def conv3_forward(p1, weight, bias, z3, n):
    """``z3[:n] (B, w3, 10*14)`` (wide, junk 0) = C3 of ``p1[:n] (B, w1, 14*14)``; ``weight
    (w3*w1, 25)``, ``bias (w3)`` or empty."""
    dtype = p1.dtype
    L = REGISTER_BYTES // p1.itemsize
    w1, w3 = p1.shape[1], z3.shape[1]
    offs = forward_taps(w1)
    w = weight.reshape(-1)
    b = bias if bias.shape[0] else np.zeros(w3, dtype)
    blocks = (n + L - 1) // L
    for k in prange(blocks):
        first = k * L
        m = min(L, n - first)
        x = np.empty(w1 * IN * IN * L, dtype)
        _pack(p1, first, m, L, x)
        out = np.empty(w3 * OUT * OUT * L, dtype)
        forward_block(x, offs, w, b, out, w1, w3)
        for j in range(m):
            z = z3[first + j]
            for o in range(w3):
                for y in range(OUT):
                    for u in range(OUT):
                        z[o, y * IN + u] = out[((o * OUT + y) * OUT + u) * L + j]
                    for u in range(OUT, IN):
                        z[o, y * IN + u] = 0


@parallel_jit
def conv3_backward(p1, weight, d, gw, gb, dp1, n):
    """From ``d[:n] (B, w3, PAD + 10*14 + PAD)``, dE/d(C3's output) in the wide layout with
    zero junk: ``gw (w3*w1, 25) +=``, ``gb (w3) +=`` (may be empty) and ``dp1[:n] (B, w1, 14*14)
    =`` the gradient of the input maps."""
    dtype = p1.dtype
    L = REGISTER_BYTES // p1.itemsize
    w1, w3 = p1.shape[1], d.shape[1]
    taps = w3 * 25
    offs = _backward_taps(w3)
    w = np.empty(w1 * taps, dtype)  # input map i's weights in the taps' order
    for ky in range(5):
        for o in range(w3):
            for i in range(w1):
                for kx in range(5):
                    w[i * taps + (ky * w3 + o) * 5 + kx] = weight[o * w1 + i, ky * 5 + kx]
    zero = np.zeros(max(w1, 1), dtype)
    blocks = (n + L - 1) // L
    parts = np.zeros((SPLIT, w3 * w1 * 25 * L), dtype)
    for s in prange(SPLIT):
        x = np.empty(w1 * IN * IN * L, dtype)
        g = np.zeros(w3 * PADDED * PADDED * L, dtype)  # borders stay 0
        dx = np.empty(w1 * IN * IN * L, dtype)
        part = parts[s]
        for k in range(s * blocks // SPLIT, (s + 1) * blocks // SPLIT):
            first = k * L
            m = min(L, n - first)
            _pack(p1, first, m, L, x)
            for j in range(L):
                for h in range(w3):
                    for y in range(OUT):
                        at = ((h * PADDED + y + 4) * PADDED + 4) * L + j
                        if j < m:
                            row = d[first + j, h]
                            for u in range(OUT):
                                g[at + u * L] = row[PAD + y * IN + u]
                        else:
                            for u in range(OUT):
                                g[at + u * L] = 0
            o = 0  # weight gradient: a kernel row of two output maps at a time
            while o + 2 <= w3:
                for i in range(w1):
                    for ky in range(5):
                        CORR2(g, (o * PADDED + 4) * PADDED + 4, PADDED * PADDED, x,
                              i * IN * IN + ky * IN, OUT, OUT, PADDED, IN, part,
                              (o * w1 + i) * 25 + ky * 5, w1 * 25)
                o += 2
            if o < w3:
                for i in range(w1):
                    for ky in range(5):
                        CORR1(g, (o * PADDED + 4) * PADDED + 4, 0, x, i * IN * IN + ky * IN,
                              OUT, OUT, PADDED, IN, part, (o * w1 + i) * 25 + ky * 5, 0)
            e = 0  # input gradient: the padded output gradient through the reversed taps
            while e + 6 <= w1:
                for y in range(IN):
                    t0, nt = _row_taps(y, w3)
                    for u in range(0, IN, 2):
                        BACK6(g, y * PADDED + u, 1, offs, t0, nt, w, e * taps + t0, taps, zero,
                              0, dx, (e * IN + y) * IN + u, IN * IN)
                e += 6
            while e < w1:
                for y in range(IN):
                    t0, nt = _row_taps(y, w3)
                    for u in range(0, IN, 7):
                        BACK1(g, y * PADDED + u, 1, offs, t0, nt, w, e * taps + t0, 0, zero, 0,
                              dx, (e * IN + y) * IN + u, 0)
                e += 1
            for j in range(m):
                out = dp1[first + j]
                for c in range(w1):
                    for q in range(IN * IN):
                        out[c, q] = dx[(c * IN * IN + q) * L + j]
    flat = gw.reshape(-1)
    for s in range(SPLIT):  # partial sums, then lanes, in one order
        for q in range(flat.shape[0]):
            t = parts[s, q * L]
            for j in range(1, L):
                t += parts[s, q * L + j]
            flat[q] += t
    if gb.shape[0]:
        span = (OUT - 1) * IN + OUT
        for o in range(w3):
            t = gb[o]
            for b in range(n):
                t += vsum(d[b, o], PAD, span)
            gb[o] = t
