"""Explicit SIMD for the numba kernels: 16-lane float32 / int32 vector types and their intrinsics.

LLVM (through numba) vectorizes a weights-stationary loop ``acc[0:n] += w * xT[b:b+n]`` only
with ``acc`` in memory (a load and a store per lane per stored weight) and, for a register tile
of scalars ``a0 .. a15``, picks the reduction over the weights instead (with gathers, slow on
this CPU). ``F32x16`` is an LLVM ``<16 x float>`` value, so a tile of accumulators stays in
vector registers for the whole row::

    a = vzero()
    for j in range(j0, j1):
        a = vfma(a, w[j], vload(xT, base[j] + s0))   # a[l] += w_j * xT[base_j + s0 + l]
    vstore(acc, s0, a)

Table look-ups (product quantization): ``vcodes(codes, i)`` loads 16 uint8 / uint16 codes as
int32 lanes and ``vlut32`` .. ``vlut256`` return ``tab[base + code_l]`` for every lane from a
table of up to 32 .. 256 floats. With AVX-512 the table stays in registers: one two-source
permute (``vpermi2ps``, 32 entries) per 32 entries and a select tree on the code's high bits;
elsewhere LLVM emits the 16 scalar loads.

No bounds are checked: ``vload(arr, i)`` / ``vstore(arr, i, v)`` touch ``arr[i:i+16]``, which
the caller keeps inside ``arr`` (16 lanes = one AVX-512 register or two AVX2 registers: LLVM
legalizes the width to the host).

Cache note: numba's on-disk cache of a kernel in kernels.py is invalidated when kernels.py
changes, not when this file does. An installed package changes both together; when editing only
this file, clear the cache (``find src -name '*.nb[ic]' -delete``).
"""
from __future__ import annotations

import numba
from llvmlite import binding as _llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

LANES = 16
_VT = ir.VectorType(ir.FloatType(), LANES)
_IT = ir.VectorType(ir.IntType(32), LANES)
_FAST = ("fast",)


def _host_avx512() -> bool:
    """numba compiles for this host (no ``NUMBA_CPU_NAME``) and the host has AVX-512F."""
    try:
        return numba.config.CPU_NAME in (None, "host") and bool(_llvm.get_host_cpu_features().get("avx512f"))
    except Exception:  # pragma: no cover - feature query unavailable: the portable path
        return False


AVX512 = _host_avx512()


class I32x16(types.Type):
    """numba type of a ``<16 x i32>`` register value (table indices)."""

    def __init__(self):
        super().__init__(name="I32x16")


i32x16 = I32x16()


@register_model(I32x16)
class _I32x16Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _IT)


class F32x16(types.Type):
    """numba type of a ``<16 x float>`` register value."""

    def __init__(self):
        super().__init__(name="F32x16")


f32x16 = F32x16()


@register_model(F32x16)
class _F32x16Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VT)


def _vptr(context, builder, aty, arr, idx, ity):
    """Pointer to ``arr[idx]`` as ``<16 x float>*`` (1-D contiguous float32 ``arr``)."""
    a = context.make_array(aty)(context, builder, arr)
    i = context.cast(builder, idx, ity, types.intp)
    return builder.bitcast(builder.gep(a.data, [i]), _VT.as_pointer())


def _check_array(arr):
    if not (isinstance(arr, types.Array) and arr.dtype == types.float32 and arr.ndim == 1
            and arr.layout == "C"):
        raise TypeError(f"simd: needs a 1-D C-contiguous float32 array, got {arr}")


@intrinsic
def f32_bits(typingctx, i):
    """The float32 whose bit pattern is the int32 ``i`` (an LLVM bitcast: ``2^n`` is
    ``f32_bits((n + 127) << 23)`` for a normal ``n``), so loops that build powers of two stay
    vectorizable (a table look-up there became a gather: ~1.25 ns per GELU value)."""
    if not isinstance(i, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        v = context.cast(builder, args[0], sig.args[0], types.int32)
        return builder.bitcast(v, ir.FloatType())
    return types.float32(i), codegen


@intrinsic
def vzero(typingctx):
    """All lanes 0."""
    def codegen(context, builder, sig, args):
        return ir.Constant(_VT, [0.0] * LANES)
    return f32x16(), codegen


@intrinsic
def vload(typingctx, arr, idx):
    """``arr[idx : idx + 16]`` as a vector (unaligned load, no bounds check)."""
    _check_array(arr)

    def codegen(context, builder, sig, args):
        return builder.load(_vptr(context, builder, sig.args[0], args[0], args[1], sig.args[1]), align=4)
    return f32x16(arr, idx), codegen


@intrinsic
def vstore(typingctx, arr, idx, v):
    """``arr[idx : idx + 16] = v`` (unaligned store, no bounds check)."""
    _check_array(arr)

    def codegen(context, builder, sig, args):
        builder.store(args[2], _vptr(context, builder, sig.args[0], args[0], args[1], sig.args[1]), align=4)
        return context.get_dummy_value()
    return types.void(arr, idx, v), codegen


@intrinsic
def vtranspose16(typingctx, a, ia, lda, b, ib, ldb):
    """``b[ib + j ldb + i] = a[ia + i lda + j]`` for ``i, j < 16``: one 16 x 16 block transposed in
    registers. Sixteen row loads, four perfect-shuffle stages (rows ``k`` and ``k + 8`` interleaved
    into rows ``2k`` (first halves) and ``2k + 1`` (second halves); four stages rotate the four row
    bits of an element's index into its column bits: the transpose), sixteen row stores. With
    AVX-512 each interleave is one two-source permute; LLVM legalizes it for AVX2. No bounds check:
    the caller keeps both blocks inside their arrays."""
    _check_array(a)
    _check_array(b)

    def codegen(context, builder, sig, args):
        at, it_a, lt_a, bt, it_b, lt_b = sig.args
        arr_a, ia_, lda_, arr_b, ib_, ldb_ = args
        ity = ir.IntType(64)
        lda64 = context.cast(builder, lda_, lt_a, types.intp)
        ldb64 = context.cast(builder, ldb_, lt_b, types.intp)
        ia64 = context.cast(builder, ia_, it_a, types.intp)
        ib64 = context.cast(builder, ib_, it_b, types.intp)
        rows = []
        for r in range(LANES):
            idx = builder.add(ia64, builder.mul(lda64, ir.Constant(ity, r)))
            rows.append(builder.load(_vptr(context, builder, at, arr_a, idx, types.intp), align=4))
        mlo = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [j for k in range(8) for j in (k, 16 + k)])
        mhi = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [j for k in range(8, 16) for j in (k, 16 + k)])
        for _ in range(4):
            new = []
            for k in range(8):
                new.append(builder.shuffle_vector(rows[k], rows[k + 8], mlo))
                new.append(builder.shuffle_vector(rows[k], rows[k + 8], mhi))
            rows = new
        for r in range(LANES):
            idx = builder.add(ib64, builder.mul(ldb64, ir.Constant(ity, r)))
            builder.store(rows[r], _vptr(context, builder, bt, arr_b, idx, types.intp), align=4)
        return context.get_dummy_value()
    return types.void(a, ia, lda, b, ib, ldb), codegen


@intrinsic
def vfma(typingctx, acc, w, v):
    """``acc + w * v`` with the scalar ``w`` broadcast to every lane (contracted to an FMA)."""
    def codegen(context, builder, sig, args):
        ws = context.cast(builder, args[1], sig.args[1], types.float32)
        b = builder.insert_element(ir.Constant(_VT, ir.Undefined), ws, ir.Constant(ir.IntType(32), 0))
        b = builder.shuffle_vector(b, ir.Constant(_VT, ir.Undefined),
                                   ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))
        return builder.fadd(args[0], builder.fmul(b, args[2], flags=_FAST), flags=_FAST)
    return f32x16(acc, w, v), codegen


@intrinsic
def vadd(typingctx, a, b):
    """Lane-wise ``a + b``."""
    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1], flags=_FAST)
    return f32x16(a, b), codegen


@intrinsic
def vfmav(typingctx, acc, a, b):
    """Lane-wise ``acc + a * b`` (contracted to an FMA)."""
    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], builder.fmul(args[1], args[2], flags=_FAST), flags=_FAST)
    return f32x16(acc, a, b), codegen


@intrinsic
def vsum(typingctx, v):
    """The sum of the 16 lanes (a halving tree of shuffles and adds), as float32."""
    def codegen(context, builder, sig, args):
        x = args[0]
        w = LANES
        while w > 1:
            w //= 2
            ty = ir.VectorType(ir.FloatType(), w)
            lo = builder.shuffle_vector(x, x, ir.Constant(ir.VectorType(ir.IntType(32), w), list(range(w))))
            hi = builder.shuffle_vector(x, x, ir.Constant(ir.VectorType(ir.IntType(32), w), list(range(w, 2 * w))))
            x = builder.fadd(lo, hi, flags=_FAST)
            assert x.type == ty
        return builder.extract_element(x, ir.Constant(ir.IntType(32), 0))
    return types.float32(v), codegen


@intrinsic
def vcodes(typingctx, arr, idx):
    """``arr[idx : idx + 16]`` (1-D contiguous uint8 or uint16) zero-extended to int32 lanes."""
    if not (isinstance(arr, types.Array) and arr.dtype in (types.uint8, types.uint16) and arr.ndim == 1
            and arr.layout == "C"):
        raise TypeError(f"simd.vcodes: needs a 1-D C-contiguous uint8 / uint16 array, got {arr}")
    bits = arr.dtype.bitwidth

    def codegen(context, builder, sig, args):
        a = context.make_array(sig.args[0])(context, builder, args[0])
        i = context.cast(builder, args[1], sig.args[1], types.intp)
        vt = ir.VectorType(ir.IntType(bits), LANES)
        v = builder.load(builder.bitcast(builder.gep(a.data, [i]), vt.as_pointer()), align=bits // 8)
        return builder.zext(v, _IT)
    return i32x16(arr, idx), codegen


def _lut_codegen(npairs: int):
    def codegen(context, builder, sig, args):
        tty, bty = sig.args[0], sig.args[1]
        tab, base, idx = args
        a = context.make_array(tty)(context, builder, tab)
        b = context.cast(builder, base, bty, types.intp)
        if not AVX512:  # portable: one scalar load per lane
            out = ir.Constant(_VT, ir.Undefined)
            for lane in range(LANES):
                j = builder.sext(builder.extract_element(idx, ir.Constant(ir.IntType(32), lane)), b.type)
                v = builder.load(builder.gep(a.data, [builder.add(b, j)]))
                out = builder.insert_element(out, v, ir.Constant(ir.IntType(32), lane))
            return out
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VT, [_VT, _IT, _VT]),
                                            "llvm.x86.avx512.vpermi2var.ps.512")

        def at(off):
            p = builder.gep(a.data, [builder.add(b, ir.Constant(b.type, off))])
            return builder.load(builder.bitcast(p, _VT.as_pointer()), align=4)

        level = [builder.call(fn, [at(32 * q), idx, at(32 * q + 16)]) for q in range(npairs)]
        bit = 32
        while len(level) > 1:   # lanes whose code has this bit set take the upper half
            hi = builder.icmp_unsigned("!=", builder.and_(idx, ir.Constant(_IT, [bit] * LANES)),
                                       ir.Constant(_IT, [0] * LANES))
            level = [builder.select(hi, level[q + 1], level[q]) for q in range(0, len(level), 2)]
            bit *= 2
        return level[0]
    return codegen


def _make_vlut(entries: int):
    npairs = entries // 32

    @intrinsic
    def vlut(typingctx, tab, base, idx):
        _check_array(tab)
        return f32x16(tab, base, idx), _lut_codegen(npairs)

    vlut.__doc__ = (f"``tab[base + idx_l]`` for each lane, codes ``idx_l < {entries}``; reads "
                    f"``tab[base : base + {entries}]`` (pad the table to {entries} floats).")
    return vlut


vlut32, vlut64, vlut128, vlut256 = (_make_vlut(e) for e in (32, 64, 128, 256))


@intrinsic
def vmul(typingctx, a, b):
    """Lane-wise ``a * b``."""
    def codegen(context, builder, sig, args):
        return builder.fmul(args[0], args[1], flags=_FAST)
    return f32x16(a, b), codegen


@intrinsic
def vclamp(typingctx, v, lo, hi):
    """Lane-wise ``min(max(v, lo), hi)`` with the scalars ``lo`` and ``hi`` broadcast (ReLU:
    ``hi = inf``; ReLU6 / hardtanh), as Python's ``max`` / ``min``: ``v < lo ? lo : v``, then
    ``v > hi ? hi : v`` (a NaN lane stays NaN)."""
    def codegen(context, builder, sig, args):
        def splat(a, ty):
            s = context.cast(builder, a, ty, types.float32)
            b = builder.insert_element(ir.Constant(_VT, ir.Undefined), s, ir.Constant(ir.IntType(32), 0))
            return builder.shuffle_vector(b, ir.Constant(_VT, ir.Undefined),
                                          ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))
        lo_v = splat(args[1], sig.args[1])
        hi_v = splat(args[2], sig.args[2])
        x = builder.select(builder.fcmp_ordered("<", args[0], lo_v), lo_v, args[0])
        return builder.select(builder.fcmp_ordered(">", x, hi_v), hi_v, x)
    return f32x16(v, lo, hi), codegen


def _splat(v: float) -> ir.Constant:
    return ir.Constant(_VT, [float(v)] * LANES)


def _exp_ir(builder, x):
    """``exp(x)`` lane-wise (Cephes ``expf``: ``x = n ln2 + r``, ``|r| <= ln2 / 2``, a degree-5
    polynomial for ``(e^r - 1 - r) / r^2``, times ``2^n`` built in the exponent bits; input
    clamped to [-87.3, 88.3], so the result stays a normal float). Max relative error ~2 ulp
    (tests/runtime/test_simd.py checks it against numpy over the whole clamped range)."""
    mod = builder.module
    fmin = cgutils.get_or_insert_function(mod, ir.FunctionType(_VT, [_VT, _VT]), "llvm.minnum.v16f32")
    fmax = cgutils.get_or_insert_function(mod, ir.FunctionType(_VT, [_VT, _VT]), "llvm.maxnum.v16f32")
    rint = cgutils.get_or_insert_function(mod, ir.FunctionType(_VT, [_VT]), "llvm.rint.v16f32")
    x = builder.call(fmax, [builder.call(fmin, [x, _splat(88.3)]), _splat(-87.3)])
    n = builder.call(rint, [builder.fmul(x, _splat(1.44269504088896341))])
    r = builder.fsub(x, builder.fmul(n, _splat(0.693359375)))
    r = builder.fsub(r, builder.fmul(n, _splat(-2.12194440e-4)))
    p = _splat(1.9875691500e-4)
    for c in (1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1):
        p = builder.fadd(builder.fmul(p, r), _splat(c))
    y = builder.fadd(builder.fadd(builder.fmul(p, builder.fmul(r, r)), r), _splat(1.0))
    e = builder.shl(builder.add(builder.fptosi(n, _IT), ir.Constant(_IT, [127] * LANES)),
                    ir.Constant(_IT, [23] * LANES))
    return builder.fmul(y, builder.bitcast(e, _VT))


@intrinsic
def vexp(typingctx, v):
    """Lane-wise ``exp(v)`` (:func:`_exp_ir`)."""
    def codegen(context, builder, sig, args):
        return _exp_ir(builder, args[0])
    return f32x16(v), codegen


@intrinsic
def vsigmoid(typingctx, v):
    """Lane-wise ``1 / (1 + exp(-v))``."""
    def codegen(context, builder, sig, args):
        e = _exp_ir(builder, builder.fsub(_splat(0.0), args[0]))
        return builder.fdiv(_splat(1.0), builder.fadd(_splat(1.0), e))
    return f32x16(v), codegen


@intrinsic
def vtanh(typingctx, v):
    """Lane-wise ``tanh(v) = 1 - 2 / (1 + exp(2v))`` (absolute error ~1e-7; the relative error
    grows as |v| -> 0, where the result is below the absolute error)."""
    def codegen(context, builder, sig, args):
        e = _exp_ir(builder, builder.fmul(args[0], _splat(2.0)))
        return builder.fsub(_splat(1.0), builder.fdiv(_splat(2.0), builder.fadd(_splat(1.0), e)))
    return f32x16(v), codegen
