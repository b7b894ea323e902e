"""MC-CNN's disparity refinement after aggregation (Zbontar & LeCun, JMLR 2016, section 3, "Computing the disparity
image"): left-right consistency check and interpolation, subpixel enhancement, 5 x 5 median, and the bilateral-like
filter.

Every function takes and returns float32 (H, W) disparity maps with NaN = unknown; the heavy loops are numba
kernels (``nogil``) run over row ranges in threads. Where the released code (github.com/jzbontar/mc-cnn,
``adcensus.cu``) fixes a detail the paper leaves open, the docstring says so.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from stereodeploy.engine.sgm import run_split
from stereodeploy.engine.spec import (
    EXCLUDED,
    MEDIAN_RADIUS,
    NO_NEIGHBOUR,
    SUBPIXEL_MIN_CURVATURE,
    gaussian_window,
    walk_steps,
)

MATCH, OCCLUSION, MISMATCH = 0, 1, 2
"""Labels of :func:`left_right_check` (the values the original uses)."""

# ------------------------------------------------------------------------------------------ left-right check


@njit(cache=True, nogil=True)
def _lr_kernel(dl, dr, threshold, max_disp, labels, y0, y1):  # pragma: no cover - compiled
    _h, w = dl.shape
    reach = np.zeros(w, dtype=np.bool_)
    for y in range(y0, y1):
        reach[:] = False
        for xr in range(w):  # right pixel xr is consistent with the left pixel xr + d for |d - dR| < threshold
            v = dr[y, xr]
            if not np.isfinite(v):
                continue
            lo = max(int(math.floor(v - threshold)) + 1, 0)  # noqa: RUF046 - int() keeps numba's typing explicit
            hi = min(int(math.ceil(v + threshold)) - 1, max_disp - 1, w - 1 - xr)  # noqa: RUF046 - as above
            for d in range(lo, hi + 1):
                if abs(d - v) < threshold:
                    reach[xr + d] = True
        for x in range(w):
            v = dl[y, x]
            if np.isfinite(v):
                xr = x - int(round(v))  # noqa: RUF046 - as above
                if 0 <= xr < w and abs(v - dr[y, xr]) < threshold:
                    labels[y, x] = MATCH
                    continue
            labels[y, x] = MISMATCH if reach[x] else OCCLUSION


def left_right_check(disp_left: np.ndarray, disp_right: np.ndarray, threshold: float,
                     max_disp: int | None = None) -> np.ndarray:
    """Label each left pixel MATCH, OCCLUSION or MISMATCH (uint8 (H, W)) by MC-CNN's rule (the paper's
    "Interpolation").

    With ``d = disp_left(y, x)``, the pixel matches when ``|d - disp_right(y, x - d)| < threshold``. Otherwise it is
    a mismatch if some disparity ``d'`` in ``[0, max_disp)`` with ``x - d' >= 0`` would be consistent,
    ``|d' - disp_right(y, x - d')| < threshold``, and an occlusion if none is: no right pixel maps onto it (for
    integer maps: :meth:`stereodeploy.engine.spec.PipelineSpec.reach_offsets`). The original uses 1.1 (integer
    disparities within 1 of each other). ``x - d`` is rounded for non-integer maps; NaN
    never matches. Computed per row in O(W) by marking, for each right pixel, the left pixels it is consistent with.
    """
    dl = np.asarray(disp_left, dtype=np.float32)
    dr = np.asarray(disp_right, dtype=np.float32)
    if dl.shape != dr.shape or dl.ndim != 2:
        raise ValueError(f"disparity maps must be (H, W) of one shape, got {dl.shape} and {dr.shape}")
    h, w = dl.shape
    labels = np.empty((h, w), dtype=np.uint8)
    limit = w if max_disp is None else int(max_disp)
    run_split(lambda a, b: _lr_kernel(dl, dr, np.float32(threshold), limit, labels, a, b), h)
    return labels


# ----------------------------------------------------------------------------------------------------- fill

@njit(cache=True, nogil=True)
def _fill_occlusions(disp, labels, out, y0, y1):  # pragma: no cover - compiled
    """Occluded pixels take the nearest MATCH to their left (the background), else the nearest to their right."""
    _h, w = disp.shape
    right = np.empty(w, dtype=np.float32)
    for y in range(y0, y1):
        nearest = np.float32(np.nan)
        for x in range(w - 1, -1, -1):
            if labels[y, x] == MATCH:
                nearest = disp[y, x]
            right[x] = nearest
        nearest = np.float32(np.nan)
        found = False
        for x in range(w):
            if labels[y, x] == MATCH:
                nearest = disp[y, x]
                found = True
            if labels[y, x] != OCCLUSION:
                out[y, x] = disp[y, x]
            elif found:
                out[y, x] = nearest
            elif np.isfinite(right[x]):
                out[y, x] = right[x]
            else:
                out[y, x] = disp[y, x]


@njit(cache=True, nogil=True)
def _walk_values(vals, mismatch, steps, result, i0, i1):  # pragma: no cover - compiled
    """result[i, y, x] for directions i0..i1-1: value of the first non-mismatch pixel on the walk from (y, x)
    along direction i (NaN if the walk leaves the image). Dynamic programming over two phases: O(H W) each."""
    h, w = vals.shape
    nan = np.float32(np.nan)
    v1 = np.empty((h, w), dtype=np.float32)
    for i in range(i0, i1):
        v0 = result[i]
        sx0, sy0 = steps[i, 0, 0], steps[i, 0, 1]
        sx1, sy1 = steps[i, 1, 0], steps[i, 1, 1]
        # visit p + s before p: rows against the vertical step, then columns against a horizontal step
        ys = sy0 if sy0 != 0 else sy1
        xs = sx0 if sy0 == 0 else sx1 if sy1 == 0 else 0
        for yi in range(h):
            y = h - 1 - yi if ys > 0 else yi
            for xi in range(w):
                x = w - 1 - xi if xs > 0 else xi
                if not mismatch[y, x]:
                    v0[y, x] = vals[y, x]
                    v1[y, x] = vals[y, x]
                    continue
                xa, ya = x + sx0, y + sy0
                v0[y, x] = v1[ya, xa] if (0 <= xa < w and 0 <= ya < h) else nan
                xb, yb = x + sx1, y + sy1
                v1[y, x] = v0[yb, xb] if (0 <= xb < w and 0 <= yb < h) else nan


@njit(cache=True, nogil=True)
def _median_of_walks(vals, mismatch, result, out, y0, y1):  # pragma: no cover - compiled
    n = result.shape[0]
    buf = np.empty(n, dtype=np.float32)
    _h, w = vals.shape
    for y in range(y0, y1):
        for x in range(w):
            if not mismatch[y, x]:
                out[y, x] = vals[y, x]
                continue
            k = 0
            for i in range(n):
                v = result[i, y, x]
                if np.isfinite(v):
                    j = k  # insertion sort
                    while j > 0 and buf[j - 1] > v:
                        buf[j] = buf[j - 1]
                        j -= 1
                    buf[j] = v
                    k += 1
            out[y, x] = buf[k // 2] if k > 0 else vals[y, x]


def fill_invalid(disp: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Interpolate the pixels that failed :func:`left_right_check`, as MC-CNN does (the paper's
    "Interpolation").

    OCCLUSION: the value of the nearest MATCH to the left in the same row, the background side (the original then
    looks right when a row has none on the left). MISMATCH, afterwards: walk from the pixel in 16 directions to the
    first pixel that is not a mismatch and take the median of the values found; the median of an even count is
    the upper of the two middle values, as the original sorts and takes element ``n // 2``. The walks are exact,
    computed by dynamic programming rather than pixel by pixel. A pixel with nothing to take from (a row without
    any match, an image of mismatches) keeps its value, so the map stays as dense as it came in.
    """
    d = np.asarray(disp, dtype=np.float32)
    if labels.shape != d.shape:
        raise ValueError(f"labels {labels.shape} do not match the disparity map {d.shape}")
    h, w = d.shape
    filled = np.empty_like(d)
    run_split(lambda a, b: _fill_occlusions(d, labels, filled, a, b), h)
    mismatch = labels == MISMATCH
    if not mismatch.any():
        return filled
    steps = walk_steps()
    result = np.empty((steps.shape[0], h, w), dtype=np.float32)
    run_split(lambda a, b: _walk_values(filled, mismatch, steps, result, a, b), steps.shape[0])
    out = np.empty_like(d)
    run_split(lambda a, b: _median_of_walks(filled, mismatch, result, out, a, b), h)
    return out


# ------------------------------------------------------------------------------------------------ subpixel


def parabola_refine(disp: np.ndarray, c_minus: np.ndarray, c_zero: np.ndarray, c_plus: np.ndarray,
                    usable: np.ndarray) -> np.ndarray:
    """``d - (C+ - C-) / (2 (C+ - 2 C + C-))`` where ``usable`` and the parabola opens upwards (denominator >
    :data:`~stereodeploy.engine.spec.SUBPIXEL_MIN_CURVATURE`, as the original), the step clipped to [-1, 1] as the original does (it matters only where ``d`` is not
    a local minimum, e.g. after interpolation); ``d`` elsewhere."""
    denom = 2.0 * (c_plus + c_minus - 2.0 * c_zero)
    ok = usable & (denom > SUBPIXEL_MIN_CURVATURE)
    step = np.divide(c_plus - c_minus, denom, out=np.zeros_like(denom), where=ok)
    return (disp - np.clip(step, -1.0, 1.0)).astype(np.float32)


def subpixel(disp_int: np.ndarray, cost: np.ndarray, reference: str = "left") -> np.ndarray:
    """Subpixel enhancement (the paper's section of that name): fit a parabola through the costs at ``d - 1, d,
    d + 1`` of the (D, H, W) volume ``cost`` and move to its vertex (see :func:`parabola_refine`). ``disp_int``
    holds integer disparities (float or int array; NaN stays NaN). Pixels at ``d = 0``, ``d = D - 1``, or whose
    neighbour cell lies outside the other image (``x - (d + 1) < 0`` for the left reference, ``x + d + 1 >= W``
    for the right) keep ``d``: the neighbours are chosen by position, so the value a volume holds outside the image
    (:data:`stereodeploy.engine.matching.INVALID_COST`) never enters a fit."""
    nd, _h, w = cost.shape
    d = np.asarray(disp_int, dtype=np.float32)
    finite = np.isfinite(d)
    di = np.where(finite, d, 0).astype(np.int64)
    x = np.arange(w)[None, :]
    far = x - (di + 1) if reference == "left" else w - 1 - (x + di + 1)
    usable = finite & (di >= 1) & (di <= nd - 2) & (far >= 0)
    cm = np.take_along_axis(cost, np.clip(di - 1, 0, nd - 1)[None], 0)[0]
    cz = np.take_along_axis(cost, np.clip(di, 0, nd - 1)[None], 0)[0]
    cp = np.take_along_axis(cost, np.clip(di + 1, 0, nd - 1)[None], 0)[0]
    out = parabola_refine(d, cm, cz, cp, usable)
    out[~finite] = np.nan
    return out


# --------------------------------------------------------------------------------------------------- median


def _sorting_network(n: int) -> np.ndarray:
    """Comparators (i, j), i < j, of Batcher's odd-even merge sort for ``n`` (a power of two) inputs."""
    pairs: list[tuple[int, int]] = []

    def merge(lo: int, length: int, r: int) -> None:
        step = 2 * r
        if step < length:
            merge(lo, length, step)
            merge(lo + r, length, step)
            pairs.extend((i, i + r) for i in range(lo + r, lo + length - r, step))
        else:
            pairs.append((lo, lo + r))

    def sort(lo: int, length: int) -> None:
        if length > 1:
            half = length // 2
            sort(lo, half)
            sort(lo + half, half)
            merge(lo, length, 1)

    sort(0, n)
    return np.array(pairs, dtype=np.int64)


@njit(cache=True, nogil=True)
def _median_kernel(disp, radius, network, out, y0, y1):  # pragma: no cover - compiled
    h, w = disp.shape
    size = 1
    while size < (2 * radius + 1) ** 2:
        size *= 2
    big = np.float32(NO_NEIGHBOUR)
    v = np.empty((size, w), dtype=np.float32)
    count = np.empty(w, dtype=np.int64)
    for y in range(y0, y1):
        v[:] = big
        count[:] = 0
        k = 0
        for dy in range(-radius, radius + 1):
            yy = y + dy
            for dx in range(-radius, radius + 1):
                if 0 <= yy < h:
                    row = disp[yy]
                    for x in range(max(0, -dx), min(w, w - dx)):
                        a = row[x + dx]
                        if np.isfinite(a):
                            v[k, x] = a
                            count[x] += 1
                k += 1
        for c in range(network.shape[0]):  # sort every column of v at once: min/max over contiguous rows
            lo = v[network[c, 0]]
            hi = v[network[c, 1]]
            for x in range(w):
                a = lo[x]
                b = hi[x]
                lo[x] = min(b, a)
                hi[x] = max(a, b)
        for x in range(w):
            out[y, x] = v[count[x] // 2, x] if np.isfinite(disp[y, x]) else np.nan


def median5(disp: np.ndarray, radius: int = MEDIAN_RADIUS) -> np.ndarray:
    """NaN-aware (2 radius + 1)^2 median (5 x 5 by default, the paper's "Refinement"). The window is clipped at
    the image border and NaN neighbours are left out; of an even count the upper middle value is taken, as the
    original does. A NaN pixel stays NaN: this filter smooths, it does not fill. Implemented as a sorting network
    applied to whole rows (branch-free, vectorised), then a per-pixel pick by count."""
    d = np.asarray(disp, dtype=np.float32)
    h, _w = d.shape
    size = 1
    while size < (2 * radius + 1) ** 2:
        size *= 2
    network = _sorting_network(size)
    out = np.empty_like(d)
    run_split(lambda a, b: _median_kernel(d, radius, network, out, a, b), h)
    return out


# ------------------------------------------------------------------------------------------------ bilateral


@njit(cache=True, nogil=True, fastmath=True)
def _bilateral_kernel(dp, gp, kernel, radius, threshold, out, y0, y1):  # pragma: no cover - compiled
    """dp, gp: disparity (NaN -> 0) and guide (NaN -> EXCLUDED) padded by ``radius`` with EXCLUDED guide."""
    _hp, wp = dp.shape
    w = wp - 2 * radius
    num = np.empty(w, dtype=np.float32)
    den = np.empty(w, dtype=np.float32)
    for y in range(y0, y1):
        num[:] = 0.0
        den[:] = 0.0
        centre = gp[y + radius, radius:radius + w]
        for dy in range(-radius, radius + 1):
            for dx in range(-radius, radius + 1):
                wt = kernel[dy + radius, dx + radius]
                g = gp[y + radius + dy, radius + dx:radius + dx + w]
                v = dp[y + radius + dy, radius + dx:radius + dx + w]
                for x in range(w):
                    keep = abs(g[x] - centre[x]) < threshold
                    num[x] += wt * v[x] if keep else np.float32(0.0)
                    den[x] += wt if keep else np.float32(0.0)
        for x in range(w):
            out[y, x] = num[x] / den[x]


def bilateral(disp: np.ndarray, guide: np.ndarray | None, sigma: float, threshold: float,
              radius: int | None = None) -> np.ndarray:
    """MC-CNN's final filter (the paper's "Refinement"): a Gaussian-weighted mean of the disparity over the
    neighbours whose ``guide`` value differs from the centre's by less than ``threshold``,

        out(p) = sum_q g(|p - q|) D(q) [|G(p) - G(q)| < threshold] / sum_q g(|p - q|) [|G(p) - G(q)| < threshold]

    with ``g`` a Gaussian of standard deviation ``sigma`` over a square window of ``radius`` (default
    ``ceil(3 sigma)``, the original's ``gaussian()`` kernel size: :func:`stereodeploy.engine.spec.gaussian_window`).
    The paper writes the gate with the left image's intensity; the released code (``adcensus.mean2d`` called on the
    disparity map) gates on the disparity itself, and that is what its tuned ``blur_t`` values (5 and 2, see
    :data:`stereodeploy.engine.spec.PRESETS`) measure: ``guide=None`` uses the disparity, any (H, W) array gates
    on it instead. The result keeps depth edges larger than
    ``threshold``. NaN pixels stay NaN and do not contribute.
    """
    d = np.asarray(disp, dtype=np.float32)
    g = d if guide is None else np.asarray(guide, dtype=np.float32)
    if g.shape != d.shape:
        raise ValueError(f"guide {g.shape} does not match the disparity map {d.shape}")
    if sigma <= 0 or threshold <= 0:
        raise ValueError("bilateral needs sigma > 0 and threshold > 0")
    kernel = gaussian_window(sigma, radius)  # (2r + 1, 2r + 1)
    r = kernel.shape[0] // 2
    h, w = d.shape
    missing = ~np.isfinite(d) | ~np.isfinite(g)
    dp = np.zeros((h + 2 * r, w + 2 * r), dtype=np.float32)
    gp = np.full((h + 2 * r, w + 2 * r), EXCLUDED, dtype=np.float32)
    dp[r:r + h, r:r + w] = np.where(missing, 0.0, d)
    gp[r:r + h, r:r + w] = np.where(missing, EXCLUDED, g)
    out = np.empty_like(d)
    run_split(lambda a, b: _bilateral_kernel(dp, gp, kernel, r, np.float32(threshold), out, a, b), h)
    out[missing] = np.nan
    return out
