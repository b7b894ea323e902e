"""Semi-global matching with MC-CNN's intensity-adaptive penalties (Zbontar & LeCun, JMLR 2016, section 3,
"Semiglobal matching").

For each of four directions ``r`` (left->right, right->left, top->bottom, bottom->top) the path cost is

    L_r(p, d) = C(p, d) + min(L_r(p-r, d), L_r(p-r, d-1) + P1, L_r(p-r, d+1) + P1, min_k L_r(p-r, k) + P2)
                - min_k L_r(p-r, k)

with ``L_r(p, d) = C(p, d)`` where ``p - r`` lies outside the image, and the result is the mean of the four
``L_r`` (the original sums them and divides by 4). The penalties adapt to the image: with ``D1 = |I(p) - I(p-r)|``
in the reference image and ``D2 = |I'(q) - I'(q-r)|`` at the matching pixel ``q`` of the other image,

    both D1, D2 < D  ->  P1,      P2
    both >= D        ->  P1 / Q2, P2 / Q2
    otherwise        ->  P1 / Q1, P2 / Q1

and P1 is further divided by ``V`` along the two vertical directions.

Units, checked against the authors' released code (github.com/jzbontar/mc-cnn, ``main.lua`` and ``adcensus.cu``):

* The fast network's volume there is ``-<fL, fR>``, the negated cosine similarity of unit vectors, in [-1, 1]
  (``StereoJoin`` subtracts the products). Ours is ``1 - <fL, fR>`` in [0, 2]: the same scale shifted by +1.
  Every ``L_r`` is then shifted by exactly +1 (the minimum subtracted at each step shifts with it), so the
  argmin, the left-right check and the subpixel fit are unchanged and the published penalties apply as they are.
* The intensities that ``D1``, ``D2`` and ``D`` are measured in are images normalised per image to zero mean and
  unit standard deviation (``x:add(-x:mean()):div(x:std())`` before matching), so ``D = 0.02`` is 2 % of an
  image's standard deviation. :func:`aggregate` expects such images;
  :func:`stereodeploy.engine.postprocess.postprocess` normalises the grey images it is given.
* The paper's hyperparameter table reports ``P2 = pi1 * pi2`` and ``Q2 = q1 * q2`` (that is what ``main.lua
  -print_args`` prints as ``sgm_P2`` and ``sgm_Q2``); KITTI 2012 fast: pi1 = 4, pi2 = 55.72, q1 = 3, q2 = 2.5,
  alpha1 = 1.5, tau_so = 0.02 -> (P1, P2, Q1, Q2, V, D) = (4, 222.9, 3, 7.5, 1.5, 0.02). The CUDA kernel that
  ``main.lua`` finally calls (``sgm2``) divides by ``q1 * q2`` as the table says, but uses ``pi2`` itself as P2 (an
  older kernel, ``sgm``, used ``pi1 * pi2``). We follow the paper's table, as CNES Pandora's
  ``mc_cnn_fast_penalty`` also does (P2 = 42.3 for KITTI 2015); override ``P2 = pi2``
  (:class:`stereodeploy.config.MatchConfig` ``overrides``) to reproduce the released kernel instead. The values
  per benchmark are :data:`stereodeploy.engine.spec.PRESETS`.
* Two small departures from ``sgm2``: it divides by V only one of the two ``d +- 1`` transitions per vertical
  direction, we divide both as the paper writes; and for the right-reference volume it keeps measuring ``D1`` in
  the left image, whereas we measure ``D1`` in the right image (the reference) and ``D2`` in the left one at
  ``x + d``. A gradient whose neighbour falls outside the image counts as large (``sgm2`` uses 10).

Cells outside the image. The volumes SGM is given follow the engine's one convention
(:data:`stereodeploy.engine.spec.INVALID_COST`, 2.0, the worst real cost, where the matching pixel does not
exist). SGM does not rely on that value: it recognises such cells by position (``x - d < 0`` for the left
reference, ``x + d >= W`` for the right) and aggregates them as costing
:data:`stereodeploy.engine.spec.OUT_OF_IMAGE` (1000) whatever the volume holds there, so paths never run through
them and they never win where a valid disparity exists. In its
output volume they hold ``OUT_OF_IMAGE`` or more; nothing after SGM reads them by value (the subpixel fit checks
positions too).

Speed: numba kernels, compiled with fastmath (the costs must be finite), run on row ranges (horizontal paths)
or column ranges (vertical paths) in threads, with the GIL released. Each image row of the cost volume (fastest
when it is stored row by row, and as uint16: see :func:`aggregate`) is transposed in cache to (W, D), so that a
path step is one vectorised loop over contiguous disparities; the horizontal pass does that while it aggregates
the row, and keeps the transposed rows for the two vertical passes.
The mean of the four paths and its argmin come out of the last pass, so a volume is read three times in all.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np
from numba import njit

from stereodeploy.engine.matching import COST_SCALE
from stereodeploy.engine.spec import NO_NEIGHBOUR, OUT_OF_IMAGE, SGMParams

__all__ = ["SGMParams", "aggregate", "low_gradient_masks", "run_split", "threads"]

Reference = Literal["left", "right"]


# ----------------------------------------------------------------------------------------------------- helpers


def threads() -> int:
    """Worker threads for the kernels: the CPUs this process may use, at most NUMBA_NUM_THREADS when that is set
    (numba's own parallel loops read it too; :func:`stereodeploy.util.threads.configure_threads` sets it)."""
    try:
        cpus = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = max(1, os.cpu_count() or 1)
    cap = os.environ.get("NUMBA_NUM_THREADS", "")
    return min(cpus, int(cap)) if cap.isdigit() and int(cap) > 0 else cpus


def run_split(kernel: Callable[[int, int], object], n: int, parts: int | None = None) -> None:
    """Run ``kernel(start, stop)`` over ``range(n)`` split into contiguous parts, one per thread (the kernels
    release the GIL). Exceptions propagate."""
    parts = max(1, min(parts or threads(), n))
    bounds = [n * i // parts for i in range(parts + 1)]
    if parts == 1:
        kernel(0, n)
        return
    with ThreadPoolExecutor(max_workers=parts) as pool:
        for future in [pool.submit(kernel, bounds[i], bounds[i + 1]) for i in range(parts)]:
            future.result()


def low_gradient_masks(image: np.ndarray, threshold: float) -> np.ndarray:
    """(4, H, W) float32 masks, 1 where ``|I(p) - I(p - r)| < threshold`` for the directions r = left->right,
    right->left, top->bottom, bottom->top; 0 where ``p - r`` is outside the image (a large difference)."""
    img = np.asarray(image, dtype=np.float32)
    h, w = img.shape
    masks = np.zeros((4, h, w), dtype=np.float32)
    dx = np.abs(np.diff(img, axis=1)) < threshold  # (H, W-1): between x and x+1
    dy = np.abs(np.diff(img, axis=0)) < threshold  # (H-1, W): between y and y+1
    masks[0, :, 1:] = dx  # previous pixel on a left->right path is x-1
    masks[1, :, :-1] = dx  # right->left: x+1
    masks[2, 1:, :] = dy  # top->bottom: y-1
    masks[3, :-1, :] = dy  # bottom->top: y+1
    return masks


# ----------------------------------------------------------------------------------------------------- kernels
# The kernels work on (H, W, D) volumes, every pixel's disparities contiguous: each path step is then one
# vectorisable loop over d, and each image row one contiguous block of memory. The reference pixel (y, x) matches
# column x + s*d of the other image (s = -1 for the left reference, +1 for the right one). ``lo_ref`` and
# ``lo_oth`` are the masks of :func:`low_gradient_masks` for the reference and the other image, ``pen`` is
# :meth:`SGMParams.penalties`. The kernels are compiled with fastmath: they assume NaN-free, finite costs.

@njit(cache=True, nogil=True, fastmath=True)
def _row_to_hwd(src, shift, s, invalid, scale, y, o):  # pragma: no cover - compiled
    """o[x, d] = scale * src[y, d, x + shift*d] where column x + s*d of the other image exists, else ``invalid``:
    one row of an (H, W, D) copy, in 8 x 8 tiles (constant trip counts, so LLVM unrolls them)."""
    _h, nd, w = src.shape
    for x0 in range(0, w, 8):
        for d0 in range(0, nd, 8):
            full = x0 + 8 <= w and d0 + 8 <= nd
            if s < 0:
                full = full and x0 >= d0 + 7
            else:
                full = full and x0 + d0 + 14 < w
            if full:
                for d in range(d0, d0 + 8):
                    r = src[y, d, x0 + shift * d:x0 + shift * d + 8]
                    for j in range(8):
                        o[x0 + j, d] = np.float32(r[j]) * scale
            else:  # a tile on the edge of the valid triangle or of the volume
                xe = min(x0 + 8, w)
                for d in range(d0, min(d0 + 8, nd)):
                    if s < 0:
                        lo, hi = min(max(d, x0), xe), xe
                    else:
                        lo, hi = x0, max(min(w - d, xe), x0)
                    row = src[y, d]
                    for x in range(x0, lo):
                        o[x, d] = invalid
                    for x in range(lo, hi):
                        o[x, d] = np.float32(row[x + shift * d]) * scale
                    for x in range(hi, xe):
                        o[x, d] = invalid


@njit(cache=True, nogil=True, fastmath=True)
def _fill_lane(lane, mask_row, s):  # pragma: no cover - compiled
    """lane[off(x) + d] = mask at the matching column x + s*d (0 outside the image), off(x) = x if s > 0 else
    w - 1 - x, so that a pixel reads its D masks contiguously."""
    w = mask_row.shape[0]
    for j in range(lane.shape[0]):
        lane[j] = 0.0
    for j in range(w):
        lane[j] = mask_row[j] if s > 0 else mask_row[w - 1 - j]


@njit(cache=True, nogil=True, fastmath=True)
def _min(a):  # pragma: no cover - compiled
    """Minimum of a 1-D float32 array. Eight running minima: a single one would be a loop-carried dependency
    that keeps LLVM from vectorising."""
    n = a.shape[0]
    big = np.float32(NO_NEIGHBOUR)
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = big
    for i in range(n // 8):
        b = 8 * i
        m0 = min(m0, a[b])
        m1 = min(m1, a[b + 1])
        m2 = min(m2, a[b + 2])
        m3 = min(m3, a[b + 3])
        m4 = min(m4, a[b + 4])
        m5 = min(m5, a[b + 5])
        m6 = min(m6, a[b + 6])
        m7 = min(m7, a[b + 7])
    m = min(min(min(m0, m1), min(m2, m3)), min(min(m4, m5), min(m6, m7)))
    for i in range(n - n % 8, n):
        m = min(m, a[i])
    return m


@njit(cache=True, nogil=True, fastmath=True)
def _path_step(cr, pp, cc, lane, off, b1, e1, b2m, e2, m):  # pragma: no cover - compiled
    """One path step at one pixel: ``cc[1:D+1]`` from the previous pixel's ``pp`` (both padded with NO_NEIGHBOUR at 0
    and D+1). P1 = b1 + lo2 * e1, P2 + m = b2m + lo2 * e2, with lo2 the other image's mask. Returns min_d.
    Slices, not offset indices, so that numba emits no negative-index checks and the loop vectorises."""
    nd = cr.shape[0]
    lo2 = lane[off:off + nd]
    below = pp[0:nd]
    same = pp[1:nd + 1]
    above = pp[2:nd + 2]
    new = cc[1:nd + 1]
    for d in range(nd):
        l2 = lo2[d]
        a = below[d]
        b = above[d]
        t = (min(b, a)) + (b1 + l2 * e1)
        a = same[d]
        t = min(t, a)
        b = b2m + l2 * e2
        t = min(b, t)
        new[d] = cr[d] + (t - m)
    return _min(new)


@njit(cache=True, nogil=True, fastmath=True)
def _horizontal_kernel(src, shift, s, invalid, scale, c, lo_ref, lo_oth, pen, out, y0, y1):  # pragma: no cover
    """For rows y0..y1-1: c[y] = the row of the (H, D, W) volume ``src`` as (W, D) (see _row_to_hwd), then
    out[y] = L_{left->right} + L_{right->left} on it while it is in cache."""
    _h, w, nd = c.shape
    big = np.float32(NO_NEIGHBOUR)
    state = np.empty((2, nd + 2), dtype=np.float32)
    state[:, 0] = big
    state[:, nd + 1] = big
    lane = np.zeros(w + nd, dtype=np.float32)
    for y in range(y0, y1):
        _row_to_hwd(src, shift, s, invalid, scale, y, c[y])
        for k in range(2):  # 0: left->right, 1: right->left
            _fill_lane(lane, lo_oth[k, y], s)
            x = 0 if k == 0 else w - 1
            pp = state[0]
            cr = c[y, x]
            o = out[y, x]
            m = big
            for d in range(nd):
                v = cr[d]
                pp[d + 1] = v
                m = min(m, v)
                if k == 0:
                    o[d] = v
                else:
                    o[d] += v
            for step in range(1, w):
                x = step if k == 0 else w - 1 - step
                pp = state[(step - 1) & 1]
                cc = state[step & 1]
                lo1 = int(lo_ref[k, y, x])
                b1 = pen[0, 0, lo1]
                b2 = pen[0, 1, lo1]
                off = x if s > 0 else w - 1 - x
                m = _path_step(c[y, x], pp, cc, lane, off, b1, pen[0, 0, lo1 + 1] - b1, b2 + m,
                               pen[0, 1, lo1 + 1] - b2, m)
                o = out[y, x]
                new = cc[1:nd + 1]
                if k == 0:
                    for d in range(nd):
                        o[d] = new[d]
                else:
                    for d in range(nd):
                        o[d] += new[d]


@njit(cache=True, nogil=True, fastmath=True)
def _vertical_kernel(c, s, lo_ref, lo_oth, pen, out, disp, x0, x1, down, mode):  # pragma: no cover - compiled
    """One vertical direction (top->bottom if ``down``) over columns x0..x1-1.

    mode 0: out += L.  mode 1: out = (out + L) / 4 and disp = its argmin.  mode 2: disp = argmin(out + L).
    """
    h, w, nd = c.shape
    n = x1 - x0
    big = np.float32(NO_NEIGHBOUR)
    quarter = np.float32(0.25)
    k = 2 if down else 3
    state = np.empty((2, n, nd + 2), dtype=np.float32)
    state[:, :, 0] = big
    state[:, :, nd + 1] = big
    m = np.empty(n, dtype=np.float32)
    tot = np.empty(nd, dtype=np.float32)
    lane = np.zeros(w + nd, dtype=np.float32)
    for step in range(h):
        y = step if down else h - 1 - step
        _fill_lane(lane, lo_oth[k, y], s)
        for i in range(n):
            x = x0 + i
            cc = state[step & 1, i]
            cr = c[y, x]
            if step == 0:
                mn = big
                for d in range(nd):
                    cc[d + 1] = cr[d]
                    mn = min(mn, cr[d])
            else:
                lo1 = int(lo_ref[k, y, x])
                b1 = pen[1, 0, lo1]
                b2 = pen[1, 1, lo1]
                off = x if s > 0 else w - 1 - x
                mn = _path_step(cr, state[(step - 1) & 1, i], cc, lane, off, b1, pen[1, 0, lo1 + 1] - b1,
                                b2 + m[i], pen[1, 1, lo1 + 1] - b2, m[i])
            m[i] = mn
            o = out[y, x]
            new = cc[1:nd + 1]
            if mode == 0:
                for d in range(nd):
                    o[d] += new[d]
            else:
                if mode == 1:
                    for d in range(nd):
                        o[d] = (o[d] + new[d]) * quarter
                    tot = o
                else:
                    for d in range(nd):
                        tot[d] = o[d] + new[d]
                best = _min(tot)
                j = 0
                while j < nd - 1 and tot[j] != best:
                    j += 1
                disp[y, x] = j


# ----------------------------------------------------------------------------------------------------- driver


def _rows(cost: np.ndarray) -> np.ndarray:
    """The (D, H, W) volume as an (H, D, W) view: C-contiguous (the fast case) when the volume is stored row by
    row (:func:`stereodeploy.engine.matching.row_major_volume`), strided when it is a plain (D, H, W) array."""
    if cost.dtype not in (np.float32, np.uint16):
        cost = cost.astype(np.float32)
    if not (cost.flags.c_contiguous or cost.transpose(1, 0, 2).flags.c_contiguous):
        cost = np.ascontiguousarray(cost)
    return cost.transpose(1, 0, 2)


def aggregate(cost: np.ndarray, ref_gray: np.ndarray, other_gray: np.ndarray, params: SGMParams,
              reference: Reference = "left", derived_right: bool = False, keep_volume: bool = True,
              out: np.ndarray | None = None, work: np.ndarray | None = None) -> tuple[np.ndarray | None, np.ndarray]:
    """SGM core: returns (the (H, W, D) mean of the four path costs, or None without ``keep_volume``; its (H, W)
    int32 argmin).

    ``cost`` is a (D, H, W) volume; with ``derived_right`` it is the left volume read as the right one,
    ``costR[d, y, x] = cost[d, y, x + d]``. Any (D, H, W) array works; one stored row by row, ``(H, D, W)`` in
    memory (:func:`stereodeploy.engine.matching.row_major_volume`), is read faster: a row's costs are then one
    contiguous block instead of D blocks a plane apart. A uint16 volume (costs scaled by
    :data:`stereodeploy.engine.matching.COST_SCALE`) is read as its float costs. ``ref_gray`` is the reference image, ``other_gray`` the other one,
    both normalised. ``out`` and ``work`` are optional (H, W, D) float32 scratch buffers to reuse (``work``
    receives the transposed costs); without ``keep_volume`` one write pass is saved and ``out`` is left holding
    partial sums.
    """
    if cost.ndim != 3:
        raise ValueError(f"cost volume must be (D, H, W), got shape {cost.shape}")
    nd, h, w = cost.shape
    if ref_gray.shape != (h, w) or other_gray.shape != (h, w):
        raise ValueError(f"images {ref_gray.shape} and {other_gray.shape} do not match the volume's (H, W) {(h, w)}")
    if reference not in ("left", "right"):
        raise ValueError(f"reference must be 'left' or 'right', not {reference!r}")
    if derived_right and reference != "right":
        raise ValueError("derived_right reads the left volume as the right one: it needs reference='right'")
    rows = _rows(cost)
    scale = np.float32(1.0 / COST_SCALE if rows.dtype == np.uint16 else 1.0)
    s = -1 if reference == "left" else 1
    shift = 1 if derived_right else 0
    invalid = np.float32(OUT_OF_IMAGE)
    lo_ref = low_gradient_masks(ref_gray, params.D)
    lo_oth = low_gradient_masks(other_gray, params.D)
    pen = params.penalties()
    out = np.empty((h, w, nd), dtype=np.float32) if out is None else out
    c = np.empty((h, w, nd), dtype=np.float32) if work is None else work
    disp = np.empty((h, w), dtype=np.int32)
    parts = threads()
    run_split(lambda a, b: _horizontal_kernel(rows, shift, s, invalid, scale, c, lo_ref, lo_oth, pen, out, a, b), h,
              parts)
    run_split(lambda a, b: _vertical_kernel(c, s, lo_ref, lo_oth, pen, out, disp, a, b, True, 0), w, parts)
    mode = 1 if keep_volume else 2
    run_split(lambda a, b: _vertical_kernel(c, s, lo_ref, lo_oth, pen, out, disp, a, b, False, mode), w, parts)
    return (out if keep_volume else None), disp
