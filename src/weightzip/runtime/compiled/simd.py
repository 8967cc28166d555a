"""Explicit SIMD for the numba kernels: a 16-lane float32 vector type and five intrinsics.

LLVM (through numba) vectorizes a weights-stationary loop ``acc[0:n] += w * xT[b:b+n]`` only
with ``acc`` in memory (a load and a store per lane per stored weight) and, for a register tile
of scalars ``a0 .. a15``, picks the reduction over the weights instead (with gathers, slow on
this CPU). ``F32x16`` is an LLVM ``<16 x float>`` value, so a tile of accumulators stays in
vector registers for the whole row::

    a = vzero()
    for j in range(j0, j1):
        a = vfma(a, w[j], vload(xT, base[j] + s0))   # a[l] += w_j * xT[base_j + s0 + l]
    vstore(acc, s0, a)

No bounds are checked: ``vload(arr, i)`` / ``vstore(arr, i, v)`` touch ``arr[i:i+16]``, which
the caller keeps inside ``arr`` (16 lanes = one AVX-512 register or two AVX2 registers: LLVM
legalizes the width to the host).

Cache note: numba's on-disk cache of a kernel in kernels.py is invalidated when kernels.py
changes, not when this file does. An installed package changes both together; when editing only
this file, clear the cache (``find src -name '*.nb[ic]' -delete``).
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic, models, register_model

LANES = 16
_VT = ir.VectorType(ir.FloatType(), LANES)
_FAST = ("fast",)


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
