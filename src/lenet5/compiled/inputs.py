"""One input pattern, made inside the compiled pass: pad, distort, normalise.

What :mod:`lenet5.data` does to a batch of tensors, for one image at a time inside a Numba
loop, so a pass needs no Python per pattern:

- ``28x28`` digits are padded to the paper's ``32x32`` field with background 0 (Section II-B);
  uint8 pixels are divided by 255 first (``divisor``), float images in [0, 1] are taken as is.
- ``distort`` (optional) applies a random planar affine map (Section III-C-2), the family of
  :class:`lenet5.data.transforms.Distortion`: translation, isotropic scaling, squeezing,
  horizontal shear and rotation, each drawn uniformly per pattern, resampled bilinearly with
  zero (background) outside the image, on the [0, 1] image. The forward map is
  ``p_out = R H D p_in + t`` about the image centre; each output pixel samples the input at
  the inverse image of its centre, as ``affine_grid``/``grid_sample(align_corners=False)`` do.
  The draws come from Numba's generator (seeded by the pass), so they are deterministic but
  not the same numbers as torch's.
- ``normalise``: ``x = (u - shift) * scale`` (``Normalization``; the paper's: background -0.1,
  ink 1.175).
"""

from __future__ import annotations

import math

import numpy as np

from .jit import jit

SIZE = 32  # the input field
N_DISTORT = 5  # translate (pixels), scale, squeeze, shear, rotate (degrees): half-widths


@jit
def unit_image(images, idx, divisor, out, border=0):
    """Image ``idx`` of ``images (N, h, w)`` / divisor, centred in the SIZE x SIZE field with
    background 0, into ``out`` (``(SIZE + 2*border)^2``, a zero frame of ``border`` around it).
    Returns the bounding box of its non-zero pixels in field coordinates, ``(r0, r1, c0, c1)``
    (empty: r0 > r1)."""
    t = out.dtype.type
    h, w = images.shape[1], images.shape[2]
    top, left = (SIZE - h) // 2, (SIZE - w) // 2
    stride = SIZE + 2 * border
    out[:] = 0
    d = t(divisor)
    r0, r1, c0, c1 = SIZE, -1, SIZE, -1
    for r in range(h):
        row = out[(border + top + r) * stride + border + left:]
        for c in range(w):
            v = images[idx, r, c]
            if v != 0:
                r0, r1 = min(r0, top + r), max(r1, top + r)
                c0, c1 = min(c0, left + c), max(c1, left + c)
            row[c] = t(v) / d
    return r0, r1, c0, c1


@jit
def draw(ranges):
    """One draw of (tx, ty, scale, squeeze, shear, rotate), each uniform in its range."""
    tx = (np.random.random() * 2 - 1) * ranges[0]
    ty = (np.random.random() * 2 - 1) * ranges[0]
    scale = 1 + (np.random.random() * 2 - 1) * ranges[1]
    squeeze = (np.random.random() * 2 - 1) * ranges[2]
    shear = (np.random.random() * 2 - 1) * ranges[3]
    rotate = (np.random.random() * 2 - 1) * ranges[4]
    return tx, ty, scale, squeeze, shear, rotate


BORDER = 4  # zero frame around a source image: the taps of a sample near the ink stay inside
TMP_SIZE = (SIZE + 2 * BORDER) ** 2  # the scratch image load_pattern needs


@jit
def _span(a, b, lo, hi):
    """Columns c in [0, SIZE) with lo < a + b c < hi, conservatively (one more each side)."""
    if b == 0:
        return (0, SIZE - 1) if lo < a < hi else (0, -1)
    u, v = (lo - a) / b, (hi - a) / b
    if b < 0:
        u, v = v, u
    return max(0, int(math.floor(u))), min(SIZE - 1, int(math.ceil(v)))


@jit
def warp(src, box, tx, ty, scale, squeeze, shear, rotate, out):
    """``out (SIZE*SIZE,)`` = ``src`` (``(SIZE + 2*BORDER)^2``, the field in a zero frame, ink
    inside ``box = (r0, r1, c0, c1)``) under p_out = R H D p_in + t about the centre
    (D = diag(scale (1 + squeeze), scale (1 - squeeze)), H = [[1, shear], [0, 1]], R the
    rotation by ``rotate`` degrees, t = (tx, ty) pixels): each output pixel is the bilinear
    sample of ``src`` at A^-1 (p - centre - t) + centre. Only the pixels whose sample can reach
    the ink are computed; the others are background."""
    t = out.dtype.type
    rad = rotate * (math.pi / 180)
    sx, sy = scale * (1 + squeeze), scale * (1 - squeeze)
    cos, sin = math.cos(rad), math.sin(rad)
    a00, a01 = cos * sx, (cos * shear - sin) * sy
    a10, a11 = sin * sx, (sin * shear + cos) * sy
    det = a00 * a11 - a01 * a10
    i00, i01, i10, i11 = a11 / det, -a01 / det, -a10 / det, a00 / det
    centre = (SIZE - 1) / 2
    stride = SIZE + 2 * BORDER
    r0, r1, c0, c1 = box
    out[:] = 0
    if r0 > r1:
        return
    for r in range(SIZE):
        v = r - centre - ty
        ax = centre + i00 * (-centre - tx) + i01 * v  # source x = ax + i00 c
        ay = centre + i10 * (-centre - tx) + i11 * v  # source y = ay + i10 c
        lo1, hi1 = _span(ax, i00, c0 - 1.0, c1 + 1.0)
        lo2, hi2 = _span(ay, i10, r0 - 1.0, r1 + 1.0)
        for c in range(max(lo1, lo2), min(hi1, hi2) + 1):
            x = ax + i00 * c + BORDER  # in the frame: > 0 (within ~2 pixels of the ink)
            y = ay + i10 * c + BORDER
            xi, yi = int(x), int(y)  # floor, as x, y > 0
            fx, fy = x - xi, y - yi
            k = yi * stride + xi
            top = (1 - fx) * src[k] + fx * src[k + 1]
            bot = (1 - fx) * src[k + stride] + fx * src[k + stride + 1]
            out[r * SIZE + c] = t((1 - fy) * top + fy * bot)


@jit
def normalise(x, shift, scale):
    t = x.dtype.type
    shift, scale = t(shift), t(scale)
    for i in range(x.shape[0]):
        x[i] = (x[i] - shift) * scale


@jit
def load_pattern(images, idx, divisor, shift, scale, ranges, tmp, out):
    """Pattern ``idx`` ready for the network in ``out (SIZE*SIZE,)``; distorted when ``ranges``
    (N_DISTORT half-widths) is not empty. ``tmp``: a scratch ``(SIZE + 2*BORDER)^2`` image."""
    if ranges.shape[0]:
        box = unit_image(images, idx, divisor, tmp, BORDER)
        tx, ty, zoom, squeeze, shear, rotate = draw(ranges)
        warp(tmp, box, tx, ty, zoom, squeeze, shear, rotate, out)
    else:
        unit_image(images, idx, divisor, out)
    normalise(out, shift, scale)


@jit
def load_lanes(images, idx, m, divisor, shift, scale, tmp, one, x):
    """Patterns ``idx[:m]`` into the lanes of ``x (SIZE*SIZE*L,)``: pixel ``q`` of pattern ``b``
    at ``q * L + b`` (the evaluation kernels' layout, :func:`.simd.lane_block`); lanes past
    ``m`` are zeros. ``one``: a scratch ``SIZE*SIZE`` pattern, ``tmp`` as :func:`load_pattern`."""
    lanes = x.shape[0] // (SIZE * SIZE)
    none = np.zeros(0)
    for b in range(lanes):
        if b < m:
            load_pattern(images, idx[b], divisor, shift, scale, none, tmp, one)
        else:
            one[:] = 0
        for q in range(SIZE * SIZE):
            x[q * lanes + b] = one[q]


@jit
def block_run(n, lanes, parts, t):
    """``(lo, hi)``: run ``t`` of ``parts`` over ``n`` patterns cut at whole blocks of
    ``lanes`` (how the evaluation kernels share a split among threads)."""
    blocks = (n + lanes - 1) // lanes
    return min(t * blocks // parts * lanes, n), min((t + 1) * blocks // parts * lanes, n)
