"""LeNet-5 (1998) in eval mode, compiled for throughput: the test- and training-set evaluations.

The same network as :func:`.kernels_1998.forward_one` (C1 -> S2 -> C3 -> S4 -> C5 -> F6 -> RBF,
Section II-B), but only forward and only the outputs, so nothing has to be kept for a backward
pass, and compiled with :data:`.jit.fast_jit` (fused multiply-adds, reassociated sums) because
evaluation need not be bit-reproducible across compilers; the training kernels stay exact.
Outputs agree with the exact kernels to float32 rounding (tests: 1e-5 relative, and the same
predictions on the 10,000 test digits).

What makes it about twice as fast as the per-image kernels (``docs/results.md``):

- **images in SIMD lanes**: a block of :data:`LANES` images (8 in float32) is evaluated at
  once, every array holding pixel ``i`` of all of them side by side (:func:`.simd.lane_block`),
  so each multiply-add is a vector one with no junk columns (the per-image kernels' wide rows
  wasted 12% of C1's and 27% of C3's products) and no horizontal sums;
- every layer is one register-blocked tap loop: C1 computes 6 maps x 2 positions per call
  (each input register read once for the six kernels), C3 one row of 10 positions over its
  Table I inputs, the subsamplings a row each, C5 and F6 six units a call;
- the squashing function (the float32 rational tanh of :func:`.layers.tanh`) runs over each
  layer's whole lanes array, compiled with fused multiply-adds.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ..models.spec import C3_TABLE
from . import inputs
from .jit import fast_jit, parallel_jit
from .kernels_1998 import OFFSETS, A, S
from .layers import tanh
from .simd import REGISTER_BYTES, lane_block

# The blocks: (channels, positions) per call, at most 15 registers of sums and inputs.
C1_BLOCK, C1_MAPS, C1_STEP = lane_block(6, 2), 6, 2  # all six maps, two positions of a row
S2_BLOCK = lane_block(1, 14)  # one row of 14 pooled units
C3_BLOCK = lane_block(1, 10)  # one row of 10 units over the map's Table I inputs
S4_BLOCK = lane_block(1, 5)  # one row of 5 pooled units
DENSE_BLOCK, DENSE_UNITS = lane_block(6, 1), 6  # six C5 or F6 units

# The taps' places in each layer's input (registers; maps are stored row by row).
C1_TAPS = np.array([ky * 32 + kx for ky in range(5) for kx in range(5)], np.int64)
S2_TAPS = np.array([0, 1, 28, 29], np.int64)
S4_TAPS = np.array([0, 1, 10, 11], np.int64)
C3_TAPS = np.array([i * 196 + ky * 14 + kx for ins in C3_TABLE for i in ins
                    for ky in range(5) for kx in range(5)], np.int64)  # in packed pair order
C3_FIRST = np.cumsum([0] + [25 * len(ins) for ins in C3_TABLE]).astype(np.int64)  # per map
DENSE_TAPS = np.arange(400, dtype=np.int64)  # C5 reads S4's 400 units, F6 C5's first 120


@fast_jit
def squash(x):
    """``x = f(x) = A tanh(S x)`` in place over a flat array (Appendix A)."""
    t = x.dtype.type
    a, s = t(A), t(S)
    for i in range(x.shape[0]):
        x[i] = tanh(x[i] * s) * a


@fast_jit
def pool_weights(coef, tap, out):
    """``out (C*4,)``: each map's subsampling coefficient times ``tap``, once per 2x2 tap."""
    for c in range(coef.shape[0]):
        for k in range(4):
            out[c * 4 + k] = coef[c] * out.dtype.type(tap)


@fast_jit
def evaluate(theta, protos, tap, images, idx, divisor, shift, scale, out):
    """``out (len(idx), 10)``: the RBF distances of patterns ``images[idx]`` (raw pixels)."""
    o = OFFSETS
    t = theta.dtype
    L = REGISTER_BYTES // theta.itemsize  # images per block, one per lane
    tmp = np.zeros(inputs.TMP_SIZE, t)
    one = np.zeros(32 * 32, t)
    x = np.zeros(32 * 32 * L, t)  # the 32x32 inputs
    y1 = np.zeros(6 * 28 * 28 * L, t)  # C1
    y2 = np.zeros(6 * 14 * 14 * L, t)  # S2
    y3 = np.zeros(16 * 10 * 10 * L, t)  # C3
    y4 = np.zeros(16 * 5 * 5 * L, t)  # S4
    y5 = np.zeros(120 * L, t)  # C5
    y6 = np.zeros(84 * L, t)  # F6
    s2 = np.zeros(6 * 4, t)
    s4 = np.zeros(16 * 4, t)
    pool_weights(theta[o[2]:o[3]], tap, s2)
    pool_weights(theta[o[6]:o[7]], tap, s4)
    n = idx.shape[0]
    for start in range(0, n, L):
        m = min(L, n - start)
        inputs.load_lanes(images, idx[start:], m, divisor, shift, scale, tmp, one, x)
        for y in range(28):  # C1: 6 maps of 28x28, 5x5 kernels
            for u in range(0, 28, C1_STEP):
                C1_BLOCK(x, y * 32 + u, 1, C1_TAPS, 0, 25, theta, o[0], 25, theta, o[1],
                         y1, y * 28 + u, 28 * 28)
        squash(y1)
        for c in range(6):  # S2: 2x2 sums, 14x14
            for y in range(14):
                S2_BLOCK(y1, c * 784 + 2 * y * 28, 2, S2_TAPS, 0, 4, s2, c * 4, 0,
                         theta, o[3] + c, y2, c * 196 + y * 14, 0)
        squash(y2)
        for c in range(16):  # C3: 16 maps of 10x10 over the inputs of Table I
            first, taps = C3_FIRST[c], C3_FIRST[c + 1] - C3_FIRST[c]
            for y in range(10):
                C3_BLOCK(y2, y * 14, 1, C3_TAPS, first, taps, theta, o[4] + first, 0,
                         theta, o[5] + c, y3, c * 100 + y * 10, 0)
        squash(y3)
        for c in range(16):  # S4: 2x2 sums, 5x5
            for y in range(5):
                S4_BLOCK(y3, c * 100 + 2 * y * 10, 2, S4_TAPS, 0, 4, s4, c * 4, 0,
                         theta, o[7] + c, y4, c * 25 + y * 5, 0)
        squash(y4)
        for g in range(0, 120, DENSE_UNITS):  # C5: 120 units over S4's 400
            DENSE_BLOCK(y4, 0, 0, DENSE_TAPS, 0, 400, theta, o[8] + g * 400, 400,
                        theta, o[9] + g, y5, g, 1)
        squash(y5)
        for g in range(0, 84, DENSE_UNITS):  # F6: 84 units over C5's 120
            DENSE_BLOCK(y5, 0, 0, DENSE_TAPS, 0, 120, theta, o[10] + g * 120, 120,
                        theta, o[11] + g, y6, g, 1)
        squash(y6)
        for b in range(m):  # the RBF units: squared distances to the 10 bitmaps (Fig. 3)
            for i in range(10):
                acc = t.type(0)
                for j in range(84):
                    e = y6[j * L + b] - protos[i, j]
                    acc += e * e
                out[start + b, i] = acc


@parallel_jit
def evaluate_parallel(theta, protos, tap, images, idx, divisor, shift, scale, out, parts):
    """:func:`evaluate` with the patterns cut into ``parts`` runs of whole blocks, in parallel
    (each pattern's outputs are its own: the same whatever ``parts``)."""
    for t in prange(parts):
        lo, hi = inputs.block_run(idx.shape[0], REGISTER_BYTES // theta.itemsize, parts, t)
        evaluate(theta, protos, tap, images, idx[lo:hi], divisor, shift, scale, out[lo:hi])
