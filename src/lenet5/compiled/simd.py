"""Vectorised dot products for kernels compiled with ``fastmath=False``.

Without fast-math LLVM may not reassociate a floating-point sum, so it never vectorises a
reduction such as ``s += a[i] * b[i]``: every dot product of the engine (the weight gradients
of C1 and C3, the C5 and F6 matrix-vector products) would run at one multiply-add per cycle.
These intrinsics spell the reassociation out instead: vector accumulators of one 256-bit
register each (8 float32 or 4 float64 lanes) run over the arrays, a scalar loop takes the rest,
and the lanes are added in a fixed tree (halves, then quarters ...). The order is fixed by the
code, not chosen by the compiler, so results are the same from run to run.

- :func:`vdot` ``(a, i, b, j, n)``: ``sum(a[i:i+n] * b[j:j+n])``.
- :func:`vdot5` ``(a, i, b, j, n)``: the five dot products of ``a[i:i+n]`` with ``b[j+s:j+s+n]``,
  ``s = 0..4``: one row of a 5x5 convolution's weight gradient, each load of ``b`` used once
  per shift and each load of ``a`` five times.
- :func:`vdot5x2` ``(a, c, i, b, j, n)``: :func:`vdot5` for two first operands ``a`` and ``c``
  at once (two output maps reading one input map), ten sums.
- :func:`vsum` ``(a, i, n)``: ``sum(a[i:i+n])`` (bias gradients).
- :func:`lane_block` ``(channels, positions)``: a factory of register-blocked multiply-add
  loops over arrays that hold a block of images in SIMD lanes, for the evaluation kernels
  (:mod:`.infer_1998`, :mod:`.infer_modern`) and the modern model's C3 in training
  (:mod:`.conv_lanes`); they fuse multiply-adds (``llvm.fma``, explicit, so the rounding is
  the code's, not the compiler's choice).
- :func:`lane_corr` ``(channels, shifts)``: the same for a convolution's weight gradient,
  lane by lane (:mod:`.conv_lanes`).

Element-wise loops (``y[i] += w * x[i]``) need nothing of the kind: LLVM vectorises them as
they are when their length is not a compile-time constant (a short constant loop is unrolled
instead, and Numba leaves the SLP vectoriser off), so the kernels take lengths from shapes.
No bounds checks here: callers keep every range inside its array.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

REGISTER_BYTES = 32  # one AVX2 register; on narrower machines LLVM splits each vector


def _is_vector(t) -> bool:
    return (isinstance(t, types.Array) and t.ndim == 1 and t.layout == "C"
            and t.dtype in (types.float32, types.float64))


def _emit_dots(context, builder, dtype, firsts, second, n, shifts, unroll):
    """LLVM IR for ``[sum(a[:n] * b[s:s+n]) for a in firsts for s in shifts]`` (pointers), or
    ``sum(a[:n])`` when ``second`` is None."""
    ftype = context.get_value_type(dtype)
    itemsize = dtype.bitwidth // 8
    lanes = REGISTER_BYTES // itemsize
    vtype = ir.VectorType(ftype, lanes)
    intp = context.get_value_type(types.intp)

    def const(v):
        return ir.Constant(intp, v)

    def vload(ptr, i):
        return builder.load(builder.bitcast(builder.gep(ptr, [i]), vtype.as_pointer()),
                            align=itemsize)

    zero = ir.Constant(vtype, [0.0] * lanes)
    pairs = [(a, s) for a in firsts for s in shifts]
    accs = [[cgutils.alloca_once_value(builder, zero) for _ in pairs] for _ in range(unroll)]

    def accumulate(i, row):
        va = {a: vload(a, i) for a in firsts}
        vb = {} if second is None else {s: vload(second, builder.add(i, const(s))) for s in shifts}
        for (a, s), acc in zip(pairs, row):
            term = va[a] if second is None else builder.fmul(va[a], vb[s])
            builder.store(builder.fadd(builder.load(acc), term), acc)

    block = lanes * unroll
    n_blocks = builder.sdiv(n, const(block))
    with cgutils.for_range(builder, n_blocks, intp=intp) as loop:  # `unroll` vectors a step
        base = builder.mul(loop.index, const(block))
        for u in range(unroll):
            accumulate(builder.add(base, const(u * lanes)), accs[u])
    done = builder.mul(n_blocks, const(block))
    if unroll > 1:  # then single vectors
        n_vec = builder.sdiv(builder.sub(n, done), const(lanes))
        with cgutils.for_range(builder, n_vec, intp=intp) as loop:
            accumulate(builder.add(done, builder.mul(loop.index, const(lanes))), accs[0])
        done = builder.add(done, builder.mul(n_vec, const(lanes)))
    totals = []
    for k, (a, s) in enumerate(pairs):  # the fixed tree: accumulators pairwise, then halves
        vals = [builder.load(accs[u][k]) for u in range(unroll)]
        while len(vals) > 1:
            vals = [builder.fadd(vals[m], vals[m + 1]) for m in range(0, len(vals), 2)]
        v, width = vals[0], lanes
        while width > 1:
            width //= 2
            idx = ir.VectorType(ir.IntType(32), width)
            lo = builder.shuffle_vector(v, v, ir.Constant(idx, list(range(width))))
            hi = builder.shuffle_vector(v, v, ir.Constant(idx, list(range(width, 2 * width))))
            v = builder.fadd(lo, hi)
        total = cgutils.alloca_once_value(builder, builder.extract_element(v, const(0)))
        with cgutils.for_range(builder, builder.sub(n, done), intp=intp) as loop:  # the tail
            i = builder.add(done, loop.index)
            x = builder.load(builder.gep(a, [i]))
            if second is not None:
                x = builder.fmul(x, builder.load(builder.gep(second, [builder.add(i, const(s))])))
            builder.store(builder.fadd(builder.load(total), x), total)
        totals.append(builder.load(total))
    return totals


def _pointer(context, builder, arrtype, arr, offset):
    return builder.gep(context.make_array(arrtype)(context, builder, arr).data, [offset])


@intrinsic
def vdot(typingctx, a, a_off, b, b_off, n):
    """``sum(a[a_off:a_off+n] * b[b_off:b_off+n])``, contiguous 1-D float arrays of one dtype."""
    if not (_is_vector(a) and _is_vector(b) and a.dtype == b.dtype):
        return None
    sig = a.dtype(a, types.intp, b, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        ta, _, tb, _, _ = signature.args
        pa = _pointer(context, builder, ta, args[0], args[1])
        pb = _pointer(context, builder, tb, args[2], args[3])
        return _emit_dots(context, builder, ta.dtype, [pa], pb, args[4], (0,), 4)[0]

    return sig, codegen


@intrinsic
def vdot5(typingctx, a, a_off, b, b_off, n):
    """``(sum(a[a_off:+n] * b[b_off+s:+n]) for s in 0..4)``: five dot products at shifts 0-4."""
    if not (_is_vector(a) and _is_vector(b) and a.dtype == b.dtype):
        return None
    sig = types.UniTuple(a.dtype, 5)(a, types.intp, b, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        ta, _, tb, _, _ = signature.args
        pa = _pointer(context, builder, ta, args[0], args[1])
        pb = _pointer(context, builder, tb, args[2], args[3])
        values = _emit_dots(context, builder, ta.dtype, [pa], pb, args[4], (0, 1, 2, 3, 4), 1)
        return context.make_tuple(builder, signature.return_type, values)

    return sig, codegen


@intrinsic
def vdot5x2(typingctx, a, c, a_off, b, b_off, n):
    """:func:`vdot5` of ``a`` and of ``c`` (same offset) against one ``b``: ten sums."""
    if not (_is_vector(a) and _is_vector(b) and a == c and a.dtype == b.dtype):
        return None
    sig = types.UniTuple(a.dtype, 10)(a, c, types.intp, b, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        ta, tc, _, tb, _, _ = signature.args
        pa = _pointer(context, builder, ta, args[0], args[2])
        pc = _pointer(context, builder, tc, args[1], args[2])
        pb = _pointer(context, builder, tb, args[3], args[4])
        values = _emit_dots(context, builder, ta.dtype, [pa, pc], pb, args[5], (0, 1, 2, 3, 4), 1)
        return context.make_tuple(builder, signature.return_type, values)

    return sig, codegen


@intrinsic
def vsum(typingctx, a, a_off, n):
    """``sum(a[a_off:a_off+n])`` for a contiguous 1-D float array."""
    if not _is_vector(a):
        return None
    sig = a.dtype(a, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        ta = signature.args[0]
        pa = _pointer(context, builder, ta, args[0], args[1])
        return _emit_dots(context, builder, ta.dtype, [pa], None, args[2], (0,), 4)[0]

    return sig, codegen


# ---------------------------------------------------------------- images in SIMD lanes

def lane_block(channels: int, positions: int):
    """An intrinsic for the evaluation kernels, whose arrays hold a block of images *in SIMD
    lanes*: element ``(i, lane)`` at ``i * LANES + lane``, one register (``LANES`` = 8 float32
    or 4 float64) per position ``i``, so every multiply-add works on ``LANES`` images at once.

    ``block(x, xi, xs, offs, t0, nt, w, wi, wc, bias, bi, out, oi, oc)`` computes, for
    ``c < channels`` and ``p < positions`` (all indices in registers, not floats)::

        out[oi + c*oc + p] = bias[bi + c] + sum(w[wi + c*wc + t] * x[xi + p*xs + offs[t0 + t]]
                                                for t in range(nt))

    a convolution row (``offs``: the taps' places in the input, ``xs``: the stride), a pooling
    row (four taps, stride 2) or ``channels`` rows of a matrix product (``positions`` = 1).
    The ``channels * positions`` sums stay in registers for the whole tap loop; each tap loads
    ``positions`` inputs and broadcasts ``channels`` weights. Keep ``channels * positions +
    positions`` at most 15 (AVX2 has 16 registers) or the sums spill to memory.
    """
    @intrinsic
    def block(typingctx, x, xi, xs, offs, t0, nt, w, wi, wc, bias, bi, out, oi, oc):
        arrays = (x, w, bias, out)
        if not (all(_is_vector(a) and a.dtype == x.dtype for a in arrays)
                and isinstance(offs, types.Array) and offs.dtype == types.int64):
            return None
        i = types.intp
        sig = types.void(x, i, i, offs, i, i, w, i, i, bias, i, out, i, i)

        def codegen(context, builder, signature, args):
            dtype = signature.args[0].dtype
            lanes = REGISTER_BYTES // (dtype.bitwidth // 8)
            vtype = ir.VectorType(context.get_value_type(dtype), lanes)
            intp = context.get_value_type(types.intp)
            px, po, pw, pb, pout = (_pointer(context, builder, signature.args[k], args[k],
                                             ir.Constant(intp, 0)) for k in (0, 3, 6, 9, 11))
            xi, xs, t0, nt, wi, wc, bi, oi, oc = (args[k] for k in (1, 2, 4, 5, 7, 8, 10, 12, 13))

            def const(v):
                return ir.Constant(intp, v)

            def register(ptr, index):  # the register at position `index` of a lanes array
                elem = builder.gep(ptr, [builder.mul(index, const(lanes))])
                return builder.bitcast(elem, vtype.as_pointer())

            def splat(value):
                i32 = ir.IntType(32)
                v = builder.insert_element(ir.Constant(vtype, ir.Undefined), value,
                                           ir.Constant(i32, 0))
                return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(i32, lanes),
                                                                [0] * lanes))

            suffix = f"v{lanes}f{dtype.bitwidth}"
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vtype, [vtype] * 3), f"llvm.fma.{suffix}")
            sums = []
            for c in range(channels):
                b = splat(builder.load(builder.gep(pb, [builder.add(bi, const(c))])))
                sums.append([cgutils.alloca_once_value(builder, b) for _ in range(positions)])
            with cgutils.for_range(builder, nt, intp=intp) as loop:
                t = loop.index
                base = builder.add(xi, builder.load(builder.gep(po, [builder.add(t0, t)])))
                xv = [builder.load(register(px, builder.add(base, builder.mul(const(p), xs))),
                                   align=dtype.bitwidth // 8) for p in range(positions)]
                for c in range(channels):
                    at = builder.add(builder.add(wi, builder.mul(const(c), wc)), t)
                    wv = splat(builder.load(builder.gep(pw, [at])))
                    for p in range(positions):
                        acc = sums[c][p]
                        builder.store(builder.call(fma, [wv, xv[p], builder.load(acc)]), acc)
            for c in range(channels):
                for p in range(positions):
                    at = builder.add(builder.add(oi, builder.mul(const(c), oc)), const(p))
                    builder.store(builder.load(sums[c][p]), register(pout, at),
                                  align=dtype.bitwidth // 8)
            return context.get_dummy_value()

        return sig, codegen

    return block


@intrinsic
def lane_max4(typingctx, y, i0, i1, i2, i3, out, o):
    """``out[o] = max(y[i0], y[i1], y[i2], y[i3])`` register by register (indices in registers,
    as :func:`lane_block`): one 2x2 max-pooling window for a block of images in SIMD lanes."""
    if not (_is_vector(y) and _is_vector(out) and y.dtype == out.dtype):
        return None
    i = types.intp
    sig = types.void(y, i, i, i, i, out, i)

    def codegen(context, builder, signature, args):
        dtype = signature.args[0].dtype
        lanes = REGISTER_BYTES // (dtype.bitwidth // 8)
        vtype = ir.VectorType(context.get_value_type(dtype), lanes)
        intp = context.get_value_type(types.intp)
        zero = ir.Constant(intp, 0)
        py = _pointer(context, builder, signature.args[0], args[0], zero)
        pout = _pointer(context, builder, signature.args[5], args[5], zero)
        align = dtype.bitwidth // 8

        def register(ptr, index):
            elem = builder.gep(ptr, [builder.mul(index, ir.Constant(intp, lanes))])
            return builder.bitcast(elem, vtype.as_pointer())

        vmax = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vtype, [vtype, vtype]),
            f"llvm.maxnum.v{lanes}f{dtype.bitwidth}")
        v = [builder.load(register(py, args[k]), align=align) for k in (1, 2, 3, 4)]
        best = builder.call(vmax, [builder.call(vmax, [v[0], v[1]]),
                                   builder.call(vmax, [v[2], v[3]])])
        builder.store(best, register(pout, args[6]), align=align)
        return context.get_dummy_value()

    return sig, codegen


def lane_corr(channels: int, shifts: int = 5):
    """An intrinsic for the training kernels' weight gradients over arrays that hold a block of
    images in SIMD lanes (as :func:`lane_block`): lane by lane, the correlation of
    ``channels`` gradient maps with ``shifts`` shifted windows of one input map, *added* to
    lanes arrays (the lanes are summed later, in a fixed order).

    ``corr(a, ai, ac, b, bi, rows, cols, astride, bstride, out, oi, oc)`` does, for
    ``c < channels`` and ``k < shifts`` (indices in registers)::

        out[oi + c*oc + k] += sum(a[ai + c*ac + r*astride + q] * b[bi + r*bstride + q + k]
                                  for r in range(rows) for q in range(cols))

    one row of ``shifts`` taps of a convolution's weight gradient for ``channels`` output maps
    at once: each load of ``b`` serves ``channels`` multiply-adds, each of ``a`` ``shifts``.
    Keep ``channels * (shifts + 1) + shifts`` near 16 (AVX2's registers).
    """
    @intrinsic
    def corr(typingctx, a, ai, ac, b, bi, rows, cols, astride, bstride, out, oi, oc):
        if not (all(_is_vector(v) for v in (a, b, out)) and a.dtype == b.dtype == out.dtype):
            return None
        i = types.intp
        sig = types.void(a, i, i, b, i, i, i, i, i, out, i, i)

        def codegen(context, builder, signature, args):
            dtype = signature.args[0].dtype
            lanes = REGISTER_BYTES // (dtype.bitwidth // 8)
            vtype = ir.VectorType(context.get_value_type(dtype), lanes)
            intp = context.get_value_type(types.intp)
            align = dtype.bitwidth // 8
            zero = ir.Constant(intp, 0)
            pa, pb, pout = (_pointer(context, builder, signature.args[k], args[k], zero)
                            for k in (0, 3, 9))
            ai, ac, bi, rows, cols, astride, bstride, oi, oc = (
                args[k] for k in (1, 2, 4, 5, 6, 7, 8, 10, 11))

            def const(v):
                return ir.Constant(intp, v)

            def register(ptr, index):
                elem = builder.gep(ptr, [builder.mul(index, const(lanes))])
                return builder.bitcast(elem, vtype.as_pointer())

            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vtype, [vtype] * 3),
                f"llvm.fma.v{lanes}f{dtype.bitwidth}")
            sums = [[cgutils.alloca_once_value(builder, ir.Constant(vtype, [0.0] * lanes))
                     for _ in range(shifts)] for _ in range(channels)]
            with cgutils.for_range(builder, rows, intp=intp) as outer:
                arow = builder.add(ai, builder.mul(outer.index, astride))
                brow = builder.add(bi, builder.mul(outer.index, bstride))
                with cgutils.for_range(builder, cols, intp=intp) as inner:
                    q = inner.index
                    va = [builder.load(register(pa, builder.add(builder.add(
                        arow, builder.mul(const(c), ac)), q)), align=align)
                        for c in range(channels)]
                    for k in range(shifts):
                        vb = builder.load(register(pb, builder.add(builder.add(brow, q),
                                                                   const(k))), align=align)
                        for c in range(channels):
                            acc = sums[c][k]
                            builder.store(builder.call(fma, [va[c], vb, builder.load(acc)]),
                                          acc)
            for c in range(channels):
                for k in range(shifts):
                    at = builder.add(builder.add(oi, builder.mul(const(c), oc)), const(k))
                    ptr = register(pout, at)
                    total = builder.fadd(builder.load(ptr, align=align),
                                         builder.load(sums[c][k]))
                    builder.store(total, ptr, align=align)
            return context.get_dummy_value()

        return sig, codegen

    return corr
