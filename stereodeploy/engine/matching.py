"""Cost volume and winner-take-all from two feature maps (numpy + numba, framework-free).

``cost[d, y, x] = 1 - <fL(:, y, x), fR(:, y, x - d)>`` for unit feature vectors, clamped to [0, 2], lower is better.
Where ``x - d < 0`` the right pixel does not exist; the cost there is :data:`stereodeploy.engine.spec.INVALID_COST`,
the worst value, so winner-take-all never picks it: d = 0 is always valid and wins every tie (ties keep the smaller
disparity).

How it is fast. The work is a banded matrix product: every left pixel meets ``max_disp`` right pixels of its row,
64 multiply-adds each (1242x375 pixels, 228 disparities: 6.8 G multiply-adds). A plain loop spends most of its
time on loads and on summing each 64-channel dot product across vector lanes. Here one *tile* is ``LANES``
neighbouring left pixels (one SIMD vector of a feature channel, read straight from the (C, H, W) layout the
networks produce, so nothing is transposed) against ``GROUP`` disparities at once: per channel, one load of the
left vector, ``GROUP`` shifted loads of the right row and ``GROUP`` fused multiply-adds into ``GROUP`` vector
accumulators that stay in registers. The tile is written as LLVM IR in two numba intrinsics (numba's own loops do
not keep such accumulators in registers); winner-take-all keeps the best cost and its disparity per lane in
registers too, so no cost is ever stored. Rows run in parallel (numba ``prange``). Accumulation is float32, channel
by channel, so results match a float64 reference to about 1e-6.
"""

from __future__ import annotations

import os

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from stereodeploy.config import check_max_disp  # used below; the engine has always imported it from here
from stereodeploy.engine.spec import INVALID_COST

COST_SCALE = 32767.5
"""A cost volume may also be stored as uint16 (half the memory and traffic): ``round(cost * COST_SCALE)``, so
INVALID_COST is 65535 and one step is 3e-5 of a cost. :func:`dequantise` turns it back into float32."""


def _simd_shape(forced: str) -> tuple[int, int]:
    """(pixels per vector, disparities per tile) for this CPU: 16 x 16 with AVX-512 (16 of its 32 registers hold
    accumulators; more gains nothing), else 8 x 8 (AVX2 / NEON: 8 accumulators of 16 or 32 registers).

    ``forced``, the value of ``STEREODEPLOY_SIMD=LANESxGROUP`` (e.g. ``8x8``), overrides the choice; the tests use
    it to run the narrow kernels on a wide CPU.
    """
    if forced:
        try:
            lanes, group = (int(v) for v in forced.lower().split("x"))
        except ValueError:
            lanes = group = 0
        if lanes not in (4, 8, 16) or not 1 <= group <= 24:
            raise ValueError(f"STEREODEPLOY_SIMD={forced!r}: use LANESxGROUP with LANES 4, 8 or 16, GROUP 1..24")
        return lanes, group
    import llvmlite.binding as ll

    try:
        wide = bool(ll.get_host_cpu_features().get("avx512f", False))
    except RuntimeError:  # feature detection unsupported on this platform
        wide = False
    return (16, 16) if wide else (8, 8)


_FORCED = os.environ.get("STEREODEPLOY_SIMD", "")
LANES, GROUP = _simd_shape(_FORCED)
# numba's cache keys a kernel on its code and this CPU, not on the shape chosen above: a kernel compiled for a
# forced shape would be loaded later for the detected one (and the other way round). So the kernels that embed the
# shape are cached only for the detected shape, and a forced shape is compiled afresh in every process.
_CACHE = not _FORCED


# ---------------------------------------------------------------------------------------------- LLVM IR helpers
def _i64(context, builder, value, ty):
    return context.cast(builder, value, ty, types.int64)


def _vector_at(builder, base, offset, vec):
    """Pointer to a ``vec`` starting at element ``offset`` of ``base`` (unaligned access)."""
    return builder.bitcast(builder.gep(base, [offset]), vec.as_pointer())


def _splat(builder, value, vec):
    first = builder.insert_element(ir.Constant(vec, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(first, ir.Constant(vec, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), vec.count), [0] * vec.count))


def _accumulate(builder, pa, pb, ia, sa, ib, sb, nk, accs, vec, fma):
    """``accs[j] = sum_k a[ia + k sa : +LANES] * b[ib + k sb - j : +LANES]`` for every j (registers after mem2reg)."""
    zero = ir.Constant(vec, [0.0] * vec.count)
    for acc in accs:
        builder.store(zero, acc)
    with cgutils.for_range(builder, nk) as loop:
        k = loop.index
        left = builder.load(_vector_at(builder, pa, builder.add(ia, builder.mul(k, sa)), vec), align=4)
        right0 = builder.add(ib, builder.mul(k, sb))
        for j, acc in enumerate(accs):
            offset = builder.sub(right0, ir.Constant(ir.IntType(64), j))
            right = builder.load(_vector_at(builder, pb, offset, vec), align=4)
            builder.store(builder.call(fma, [left, right, builder.load(acc)]), acc)


def _tile_setup(context, builder, signature, args):
    """Common prologue: data pointers, 64-bit offsets, vector types, accumulators, lane x coordinates."""
    a, b, ia, sa, ib, sb, nk, x0, ndisp, dst, idst = args[:11]
    tys = signature.args
    f32 = ir.FloatType()
    vec = ir.VectorType(f32, LANES)
    ivec = ir.VectorType(ir.IntType(32), LANES)
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec, vec, vec]),
                                         f"llvm.fma.v{LANES}f32")
    ptr = [context.make_array(tys[i])(context, builder, v).data for i, v in ((0, a), (1, b), (9, dst))]
    ints = [_i64(context, builder, v, tys[i]) for i, v in ((2, ia), (3, sa), (4, ib), (5, sb), (6, nk), (7, x0),
                                                            (8, ndisp), (10, idst))]
    accs = [cgutils.alloca_once(builder, vec) for _ in range(GROUP)]
    lanes = ir.Constant(ivec, list(range(LANES)))
    xs = builder.add(_splat(builder, builder.trunc(ints[5], ir.IntType(32)), ivec), lanes)  # x of every lane
    return ptr, ints, vec, ivec, fma, accs, xs


def _clamped_cost(builder, acc, vec):
    """``1 - similarity`` clamped to [0, INVALID_COST]."""
    cost = builder.fsub(ir.Constant(vec, [1.0] * LANES), acc)
    low = ir.Constant(vec, [0.0] * LANES)
    high = ir.Constant(vec, [INVALID_COST] * LANES)
    cost = builder.select(builder.fcmp_ordered("<", cost, low), low, cost)
    return builder.select(builder.fcmp_ordered(">", cost, high), high, cost)


def _keep_better(builder, acc, d, valid, best, arg, vec, ivec):
    """Where the cost in ``acc`` beats ``best`` (and ``valid``, if given), store it and disparity ``d``."""
    cost = _clamped_cost(builder, builder.load(acc), vec)
    cur = builder.load(best)
    better = builder.fcmp_ordered("<", cost, cur)
    if valid is not None:
        better = builder.and_(better, valid)
    builder.store(builder.select(better, cost, cur), best)
    dv = _splat(builder, builder.trunc(d, ir.IntType(32)), ivec)
    builder.store(builder.select(better, dv, builder.load(arg)), arg)


@intrinsic
def _wta_tile(typingctx, a, b, ia, sa, ib, sb, nk, x0, ndisp, dst, idst):
    """Winner-take-all for the LANES pixels ``x0 ..``: ``dst[idst + l]`` (int32) = the disparity in
    ``[0, ndisp)`` of the lowest cost, the smallest on ties, among those with ``x0 + l - d >= 0``.

    ``a``/``b`` are flat float32 rows: channel k of the left pixels at ``a[ia + k sa ..]``, of right pixel
    ``x - d`` at ``b[ib + k sb - d ..]``; ``nk`` channels. ``b`` must be readable ``ndisp`` rounded up to GROUP
    elements to the left of every ``ib + k sb``.
    """
    sig = types.void(a, b, ia, sa, ib, sb, nk, x0, ndisp, dst, idst)

    def codegen(context, builder, signature, args):
        (pa, pb, pdst), (ia_, sa_, ib_, sb_, nk_, x0_, nd_, idst_), vec, ivec, fma, accs, xs = _tile_setup(
            context, builder, signature, args)
        best = cgutils.alloca_once_value(builder, ir.Constant(vec, [np.inf] * LANES))
        arg = cgutils.alloca_once_value(builder, ir.Constant(ivec, [0] * LANES))
        i64 = ir.IntType(64)
        groups = builder.sdiv(builder.add(nd_, ir.Constant(i64, GROUP - 1)), ir.Constant(i64, GROUP))
        with cgutils.for_range(builder, groups) as group:
            d0 = builder.mul(group.index, ir.Constant(i64, GROUP))
            _accumulate(builder, pa, pb, ia_, sa_, builder.sub(ib_, d0), sb_, nk_, accs, vec, fma)
            # Most groups lie inside the image and the disparity range: then no lane needs a mask.
            last = builder.add(d0, ir.Constant(i64, GROUP - 1))
            inside = builder.and_(builder.icmp_signed(">=", x0_, last), builder.icmp_signed("<", last, nd_))
            with builder.if_else(inside) as (plain, masked):
                with plain:
                    for j, acc in enumerate(accs):
                        d = builder.add(d0, ir.Constant(i64, j))
                        _keep_better(builder, acc, d, None, best, arg, vec, ivec)
                with masked:
                    for j, acc in enumerate(accs):
                        d = builder.add(d0, ir.Constant(i64, j))
                        dv = _splat(builder, builder.trunc(d, ir.IntType(32)), ivec)
                        valid = builder.icmp_signed(">=", xs, dv)  # x - d >= 0
                        valid = builder.select(builder.icmp_signed("<", d, nd_), valid,
                                               ir.Constant(valid.type, [0] * LANES))  # d < ndisp
                        _keep_better(builder, acc, d, valid, best, arg, vec, ivec)
        builder.store(builder.load(arg), _vector_at(builder, pdst, idst_, ivec), align=4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _cost_tile(typingctx, a, b, ia, sa, ib, sb, nk, x0, ndisp, dst, idst, sdst):
    """Costs of the LANES pixels ``x0 ..`` for every ``d < ndisp``: ``dst[idst + d sdst + l]`` (float32, or uint16
    scaled by :data:`COST_SCALE`), with :data:`INVALID_COST` where ``x0 + l - d < 0``. Operands as in
    :func:`_wta_tile`."""
    sig = types.void(a, b, ia, sa, ib, sb, nk, x0, ndisp, dst, idst, sdst)
    quantised = dst.dtype == types.uint16

    def codegen(context, builder, signature, args):
        (pa, pb, pdst), (ia_, sa_, ib_, sb_, nk_, _, nd_, idst_), vec, ivec, fma, accs, xs = _tile_setup(
            context, builder, signature, args)
        sdst_ = _i64(context, builder, args[11], signature.args[11])
        invalid = ir.Constant(vec, [INVALID_COST] * LANES)
        i64 = ir.IntType(64)
        groups = builder.sdiv(builder.add(nd_, ir.Constant(i64, GROUP - 1)), ir.Constant(i64, GROUP))
        with cgutils.for_range(builder, groups) as group:
            d0 = builder.mul(group.index, ir.Constant(i64, GROUP))
            _accumulate(builder, pa, pb, ia_, sa_, builder.sub(ib_, d0), sb_, nk_, accs, vec, fma)
            for j, acc in enumerate(accs):
                d = builder.add(d0, ir.Constant(i64, j))
                with builder.if_then(builder.icmp_signed("<", d, nd_)):
                    dv = _splat(builder, builder.trunc(d, ir.IntType(32)), ivec)
                    cost = _clamped_cost(builder, builder.load(acc), vec)
                    cost = builder.select(builder.icmp_signed("<", xs, dv), invalid, cost)
                    where = builder.add(idst_, builder.mul(d, sdst_))
                    if quantised:  # round(cost * COST_SCALE), at most 65535.5 -> 65535
                        scaled = builder.fadd(builder.fmul(cost, ir.Constant(vec, [COST_SCALE] * LANES)),
                                              ir.Constant(vec, [0.5] * LANES))
                        cost = builder.fptoui(scaled, ir.VectorType(ir.IntType(16), LANES))
                        builder.store(cost, _vector_at(builder, pdst, where, cost.type), align=2)
                    else:
                        builder.store(cost, _vector_at(builder, pdst, where, vec), align=4)
        return context.get_dummy_value()

    return sig, codegen


# ---------------------------------------------------------------------------------------------- kernels
@njit(cache=_CACHE, nogil=True)
def _padded_rows(fl: np.ndarray, fr: np.ndarray, y: int, max_disp: int) -> tuple:  # pragma: no cover
    """Row ``y`` of both (C, H, W) maps as flat per-channel rows: left ``(C, wp)``, right ``(C, pad + wp)`` with
    ``pad`` zeros before every channel (room for the shifted loads) and zeros after ``w``."""
    c, _, w = fl.shape
    wp = -(-w // LANES) * LANES
    pad = -(-max_disp // GROUP) * GROUP + LANES
    a = np.empty(c * wp, dtype=np.float32)
    b = np.empty(c * (pad + wp), dtype=np.float32)
    for k in range(c):
        a[k * wp:k * wp + w] = fl[k, y]
        a[k * wp + w:(k + 1) * wp] = 0.0
        row = k * (pad + wp)
        b[row:row + pad] = 0.0
        b[row + pad:row + pad + w] = fr[k, y]
        b[row + pad + w:row + pad + wp] = 0.0
    return a, b, wp, pad


@njit(cache=_CACHE, nogil=True)
def _wta_row(fl: np.ndarray, fr: np.ndarray, y: int, max_disp: int, out: np.ndarray) -> None:  # pragma: no cover
    c, _, w = fl.shape
    a, b, wp, pad = _padded_rows(fl, fr, y, max_disp)
    arg = np.empty(wp, dtype=np.int32)
    for x0 in range(0, wp, LANES):
        _wta_tile(a, b, x0, wp, pad + x0, pad + wp, c, x0, max_disp, arg, x0)
    out[y] = arg[:w]


@njit(cache=_CACHE, nogil=True)
def _volume_row(fl: np.ndarray, fr: np.ndarray, y: int, max_disp: int, out: np.ndarray, row0: int,
                sd: int) -> None:  # pragma: no cover
    """Row y's costs into the flat ``out``: cost d of pixel x at ``row0 + d sd + x``."""
    c, _h, w = fl.shape
    a, b, wp, pad = _padded_rows(fl, fr, y, max_disp)
    for x0 in range(0, wp, LANES):
        if x0 + LANES <= w:  # a whole tile: straight into the volume
            _cost_tile(a, b, x0, wp, pad + x0, pad + wp, c, x0, max_disp, out, row0 + x0, sd)
        else:  # the last, partial tile: through a scratch buffer, never past the row's end
            tail = np.empty(max_disp * LANES, dtype=out.dtype)
            _cost_tile(a, b, x0, wp, pad + x0, pad + wp, c, x0, max_disp, tail, 0, LANES)
            for d in range(max_disp):
                out[row0 + d * sd + x0:row0 + d * sd + w] = tail[d * LANES:d * LANES + w - x0]


@njit(cache=True, nogil=True)
def ratio_row(costs: np.ndarray, disp: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    """The confidence of one image row's winners ``disp`` ((W,) int) from its (D, W) costs, into ``out`` ((W,)
    float32): ``1 - C(d1) / C2``, ``C2`` the least cost at ``|d - d1| >= 2`` with the right pixel inside the image
    (``d <= x``), 0 without such a rival or where it costs 0. :func:`stereodeploy.engine.postprocess.confidence_ratio`
    runs it on volumes stored row by row, and the same rule in an (H, W, D) loop order on SGM's (tested equal)."""
    nd, w = costs.shape
    c2 = np.full(w, np.inf, dtype=np.float32)
    for d in range(nd):
        for x in range(d, w):  # x - d >= 0
            if abs(d - disp[x]) >= 2:
                c2[x] = min(c2[x], np.float32(costs[d, x]))
    for x in range(w):
        c1 = np.float32(costs[disp[x], x])
        out[x] = 0.0 if (c2[x] == np.inf or c2[x] <= 0.0) else max(np.float32(0.0), np.float32(1.0) - c1 / c2[x])


@njit(cache=_CACHE, nogil=True)
def _wta_confidence_row(fl: np.ndarray, fr: np.ndarray, y: int, max_disp: int, disp: np.ndarray,
                        conf: np.ndarray) -> None:  # pragma: no cover
    """Row y's costs into a row-sized buffer, then its winners (the first d of least cost, as
    :func:`winner_take_all`) and their :func:`ratio_row`."""
    w = fl.shape[2]
    buf = np.empty(max_disp * w, dtype=np.float32)
    _volume_row(fl, fr, y, max_disp, buf, 0, w)
    costs = buf.reshape(max_disp, w)
    best = np.full(w, np.inf, dtype=np.float32)  # NaN never wins, as in winner_take_all
    arg = np.zeros(w, dtype=np.int32)
    for d in range(max_disp):
        for x in range(w):
            if costs[d, x] < best[x]:
                best[x] = costs[d, x]
                arg[x] = d
    disp[y] = arg
    ratio_row(costs, arg, conf[y])


# The row functions allocate their own buffers: inside a prange body numba could hoist an allocation it sees
# no write to (the intrinsics' writes are invisible to it) and share it between threads.
@njit(parallel=True, cache=_CACHE, nogil=True)
def _wta_kernel(fl: np.ndarray, fr: np.ndarray, max_disp: int, out: np.ndarray) -> None:  # pragma: no cover
    for y in prange(fl.shape[1]):
        _wta_row(fl, fr, y, max_disp, out)


@njit(parallel=True, cache=_CACHE, nogil=True)
def _wta_confidence_kernel(fl: np.ndarray, fr: np.ndarray, max_disp: int, disp: np.ndarray,
                           conf: np.ndarray) -> None:  # pragma: no cover
    for y in prange(fl.shape[1]):
        _wta_confidence_row(fl, fr, y, max_disp, disp, conf)


@njit(parallel=True, cache=_CACHE, nogil=True)
def _volume_kernel(fl: np.ndarray, fr: np.ndarray, max_disp: int, out: np.ndarray, sy: int,
                   sd: int) -> None:  # pragma: no cover
    """Into the flat ``out``: cost d of pixel (y, x) at ``y sy + d sd + x``."""
    for y in prange(fl.shape[1]):
        _volume_row(fl, fr, y, max_disp, out, y * sy, sd)


@njit(parallel=True, cache=True, nogil=True)
def _argmin_kernel(cost: np.ndarray, shift: int, out: np.ndarray) -> None:  # pragma: no cover
    """out[y, x] = the first d minimising cost[d, y, x + shift*d], over the d with x + shift*d inside the row."""
    nd, h, w = cost.shape
    for y in prange(h):
        best = np.full(w, np.inf, dtype=np.float32)
        arg = np.zeros(w, dtype=np.int32)
        for d in range(nd):
            n = w - shift * d
            if n <= 0:
                break
            row = cost[d, y, shift * d:shift * d + n]
            for x in range(n):
                better = row[x] < best[x]
                best[x] = row[x] if better else best[x]
                arg[x] = d if better else arg[x]
        out[y] = arg


# ---------------------------------------------------------------------------------------------- public API
def _pair(fl: np.ndarray, fr: np.ndarray, max_disp: int) -> tuple[np.ndarray, np.ndarray]:
    if fl.ndim != 3 or fl.shape != fr.shape:
        raise ValueError(f"features must be two (C, H, W) arrays of one shape, got {fl.shape} and {fr.shape}")
    check_max_disp(max_disp, fl.shape[-1])
    return (np.ascontiguousarray(fl, dtype=np.float32), np.ascontiguousarray(fr, dtype=np.float32))


def row_major_volume(max_disp: int, height: int, width: int, dtype: type = np.float32) -> np.ndarray:
    """An uninitialised (max_disp, H, W) array stored row by row ((H, D, W) in memory), for the ``out`` of
    :func:`cost_volume`: SGM reads one image row's costs as one contiguous block from it. ``dtype`` float32, or
    uint16 for costs scaled by :data:`COST_SCALE`."""
    return np.empty((height, max_disp, width), dtype=dtype).transpose(1, 0, 2)


def dequantise(cost: np.ndarray) -> np.ndarray:
    """A uint16 volume of :func:`cost_volume` as float32 costs (a float32 volume is returned as it is)."""
    if cost.dtype != np.uint16:
        return cost
    return cost.astype(np.float32) * np.float32(1.0 / COST_SCALE)


def cost_volume(fl: np.ndarray, fr: np.ndarray, max_disp: int, out: np.ndarray | None = None) -> np.ndarray:
    """(C, H, W) left and right features -> (max_disp, H, W) float32 matching cost, left image as reference.

    ``out``, if given, is the (max_disp, H, W) array to fill (and return) instead of a new one: either C-contiguous
    or stored row by row (:func:`row_major_volume`, which post-processing reads fastest); float32, or uint16 for
    costs stored as ``round(cost * COST_SCALE)`` (half the memory; what the matcher gives SGM).
    """
    a, b = _pair(fl, fr, max_disp)
    shape = (max_disp,) + a.shape[1:]
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype not in (np.float32, np.uint16) or not (
            out.flags.c_contiguous or out.transpose(1, 0, 2).flags.c_contiguous):
        raise ValueError(f"out must be a float32 or uint16 array of shape {shape}, C-contiguous or from "
                         "row_major_volume")
    flat = out.reshape(-1) if out.flags.c_contiguous else out.transpose(1, 0, 2).reshape(-1)
    _volume_kernel(a, b, int(max_disp), flat, out.strides[1] // out.itemsize, out.strides[0] // out.itemsize)
    return out


def wta_from_features(fl: np.ndarray, fr: np.ndarray, max_disp: int) -> np.ndarray:
    """Winner-take-all disparity straight from the features, without storing the volume: (H, W) float32.

    Equal to ``winner_take_all(cost_volume(fl, fr, max_disp))``, only faster.
    """
    a, b = _pair(fl, fr, max_disp)
    out = np.empty(a.shape[1:], dtype=np.int32)
    _wta_kernel(a, b, int(max_disp), out)
    return out.astype(np.float32)


def wta_confidence_from_features(fl: np.ndarray, fr: np.ndarray, max_disp: int) -> tuple[np.ndarray, np.ndarray]:
    """Winner-take-all disparity ((H, W) float32) and its confidence ((H, W) float32,
    :func:`stereodeploy.engine.postprocess.confidence_ratio`) straight from the features, one image row of costs
    at a time: equal to ``winner_take_all(volume)`` and ``confidence_ratio`` of ``volume = cost_volume(fl, fr,
    max_disp)`` without storing it (a KITTI pair at 228 disparities: 425 MB less, and no page faults on it)."""
    a, b = _pair(fl, fr, max_disp)
    disp = np.empty(a.shape[1:], dtype=np.int32)
    conf = np.empty(a.shape[1:], dtype=np.float32)
    _wta_confidence_kernel(a, b, int(max_disp), disp, conf)
    return disp.astype(np.float32), conf


def winner_take_all(cost: np.ndarray, derived_right: bool = False) -> np.ndarray:
    """(D, H, W) cost -> (H, W) float32 disparity of the lowest cost (the smallest d on ties; NaN never wins).

    With ``derived_right`` the left volume is read as the right image's, ``cost_right[d, y, x] = cost[d, y, x + d]``
    for ``x + d < W`` (cells with ``x + d >= W`` do not exist and never win), without storing it.
    """
    if cost.ndim != 3:
        raise ValueError(f"cost must be (D, H, W), got shape {cost.shape}")
    out = np.empty(cost.shape[1:], dtype=np.int32)
    _argmin_kernel(cost if cost.dtype == np.float32 else cost.astype(np.float32), 1 if derived_right else 0, out)
    return out.astype(np.float32)


def load_kernels(volume: bool = True, confidence: bool = False) -> None:
    """Load this module's kernels from numba's cache (or compile them) without running them, for the argument
    types the engine passes: a caller may do this in a thread while the network computes features, so that the
    first pair does not wait for it afterwards (about 0.5 s in a fresh process). ``volume=False``: only the
    winner-take-all kernel a matcher without post-processing runs (with ``confidence``, the one that also gives
    the confidence)."""
    from numba import typeof

    f = np.zeros((1, 1, 2), dtype=np.float32)
    i32 = np.zeros((1, 2), dtype=np.int32)
    f2 = np.zeros((1, 2), dtype=np.float32)
    todo: list[tuple] = [(_wta_confidence_kernel, (f, f, 1, i32, f2)) if confidence else (_wta_kernel, (f, f, 1, i32))]
    if volume:
        todo += [(_volume_kernel, (f, f, 1, np.zeros(2, dtype=np.uint16), 1, 1)),
                 (_argmin_kernel, (row_major_volume(1, 1, 2), 1, i32)), (_argmin_kernel, (f, 1, i32))]
    for kernel, args in todo:
        kernel.compile(tuple(typeof(a) for a in args))
