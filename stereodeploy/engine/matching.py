"""Cost volume and winner-take-all from two feature maps (numpy + numba, framework-free).

``cost[d, y, x] = 1 - <fL(:, y, x), fR(:, y, x - d)>`` for unit feature vectors, in [0, 2], lower is better.
Where ``x - d < 0`` the right pixel does not exist; the cost there is :data:`INVALID_COST`, worse than any real
cost, so winner-take-all picks it only where no disparity is valid (it then returns 0 for column 0).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

INVALID_COST = 2.0  # the worst real cost (opposite unit vectors); finite, so sums and SGM stay NaN-free


def _hwc(features: np.ndarray) -> np.ndarray:
    """(C, H, W) -> contiguous (H, W, C) float32, so each pixel's feature vector is contiguous."""
    if features.ndim != 3:
        raise ValueError(f"features must be (C, H, W), got shape {features.shape}")
    return np.ascontiguousarray(np.moveaxis(np.asarray(features, dtype=np.float32), 0, -1))


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _volume_kernel(fl: np.ndarray, fr: np.ndarray, max_disp: int, out: np.ndarray) -> None:  # pragma: no cover
    h, w, c = fl.shape
    for y in prange(h):
        row = np.empty((w, max_disp), dtype=np.float32)
        for x in range(w):
            for d in range(max_disp):
                if d > x:
                    row[x, d] = INVALID_COST
                else:
                    s = np.float32(0.0)
                    for k in range(c):
                        s += fl[y, x, k] * fr[y, x - d, k]
                    row[x, d] = np.float32(1.0) - s
        for d in range(max_disp):
            for x in range(w):
                out[d, y, x] = row[x, d]


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _wta_kernel(fl: np.ndarray, fr: np.ndarray, max_disp: int, out: np.ndarray) -> None:  # pragma: no cover
    h, w, c = fl.shape
    for y in prange(h):
        for x in range(w):
            best = -np.inf
            arg = 0
            for d in range(min(max_disp, x + 1)):
                s = np.float32(0.0)
                for k in range(c):
                    s += fl[y, x, k] * fr[y, x - d, k]
                if s > best:  # strict: ties keep the smaller disparity, like numpy's argmin
                    best = s
                    arg = d
            out[y, x] = arg


def check_max_disp(max_disp: int, width: int) -> None:
    from stereodeploy.errors import UsageError

    if max_disp <= 0 or max_disp >= width:
        raise UsageError(f"max disparity must be in [1, image width - 1] = [1, {width - 1}], got {max_disp}")


def cost_volume(fl: np.ndarray, fr: np.ndarray, max_disp: int) -> np.ndarray:
    """(C, H, W) left and right features -> (max_disp, H, W) float32 matching cost, left image as reference."""
    if fl.shape != fr.shape:
        raise ValueError(f"left and right features differ in shape: {fl.shape} vs {fr.shape}")
    check_max_disp(max_disp, fl.shape[-1])
    a, b = _hwc(fl), _hwc(fr)
    out = np.empty((max_disp,) + a.shape[:2], dtype=np.float32)
    _volume_kernel(a, b, max_disp, out)
    return out


def wta_from_features(fl: np.ndarray, fr: np.ndarray, max_disp: int) -> np.ndarray:
    """Winner-take-all disparity straight from the features, without storing the volume: (H, W) float32."""
    if fl.shape != fr.shape:
        raise ValueError(f"left and right features differ in shape: {fl.shape} vs {fr.shape}")
    check_max_disp(max_disp, fl.shape[-1])
    a, b = _hwc(fl), _hwc(fr)
    out = np.empty(a.shape[:2], dtype=np.int32)
    _wta_kernel(a, b, max_disp, out)
    return out.astype(np.float32)


def winner_take_all(cost: np.ndarray) -> np.ndarray:
    """(D, H, W) cost -> (H, W) float32 disparity of the lowest cost (the smallest d on ties)."""
    return np.argmin(cost, axis=0).astype(np.float32)
