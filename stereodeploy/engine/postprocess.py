"""MC-CNN's stereo method after the network (Zbontar & LeCun, JMLR 2016, section 3): semi-global matching on the
left and right volumes, left-right check and interpolation, subpixel enhancement, median and bilateral filters,
each switched on by :class:`stereodeploy.config.MatchConfig`.

Cost convention (one for the whole engine): ``cost[d, y, x] = 1 - <fL(y, x), fR(y, x - d)>`` in [0, 2], lower is
better, as :func:`stereodeploy.engine.matching.cost_volume` produces it. That is the original's ``-<fL, fR>``
shifted by +1, so its published penalties apply unchanged (see :mod:`stereodeploy.engine.sgm`). Cells whose right
pixel does not exist (``x - d < 0``) hold :data:`stereodeploy.engine.spec.INVALID_COST` (2.0, the worst real
cost): winner-take-all takes the volume as it is (ties go to the smaller, valid disparity), and SGM and the
subpixel fit recognise those cells by position, so they never win where a valid disparity exists.

Like the original this pipeline skips cross-based cost aggregation, which the fast network's published settings
turn off (``cbca_i1 = cbca_i2 = 0``). Memory: besides the input it holds two (H, W, D) float32 volumes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

import numpy as np
from numba import njit

from stereodeploy.config import MatchConfig
from stereodeploy.engine.filters import (
    MATCH,
    bilateral,
    fill_invalid,
    left_right_check,
    median5,
    parabola_refine,
    subpixel,
)
from stereodeploy.engine.matching import dequantise, ratio_row, winner_take_all
from stereodeploy.engine.sgm import aggregate, run_split

__all__ = ["confidence_ratio", "load_kernels", "postprocess"]

T = TypeVar("T")


def _normalise(gray: np.ndarray) -> np.ndarray:
    """Zero mean, unit standard deviation per image, as the original normalises before matching."""
    from stereodeploy.data.preprocess import normalize

    return normalize(np.asarray(gray, dtype=np.float32))


@njit(cache=True, nogil=True)
def _gather_kernel(volume, di, cm, cz, cp, y0, y1):  # pragma: no cover - compiled
    _h, w, nd = volume.shape
    for y in range(y0, y1):
        for x in range(w):
            d = min(max(di[y, x], 1), nd - 2)
            cm[y, x] = volume[y, x, d - 1]
            cz[y, x] = volume[y, x, d]
            cp[y, x] = volume[y, x, d + 1]


def _gather_hwd(volume: np.ndarray, disp: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Costs of the left (H, W, D) volume at d - 1, d, d + 1 of the integer-valued ``disp``, and where the fit is
    usable (1 <= d <= D - 2, and the cell at d + 1 inside the image: x - (d + 1) >= 0)."""
    h, w, nd = volume.shape
    finite = np.isfinite(disp)
    di = np.where(finite, disp, 0).astype(np.int64)
    cm, cz, cp = (np.empty((h, w), dtype=np.float32) for _ in range(3))
    run_split(lambda a, b: _gather_kernel(volume, di, cm, cz, cp, a, b), h)
    x = np.arange(w)[None, :]
    usable = finite & (di >= 1) & (di <= nd - 2) & (x - (di + 1) >= 0)
    return cm, cz, cp, usable


# ------------------------------------------------------------------------------------- validity and confidence
# The confidence of a winner, documented in docs/embedding.md ("What a result holds"): matching.ratio_row for a
# row of costs (what the volumes stored row by row and winner-take-all use), _ratio_kernel the same in the loop
# order of an (H, W, D) volume such as SGM's (tests hold the two equal).

@njit(cache=True, nogil=True)
def _ratio_kernel(volume, disp, out, y0, y1):  # pragma: no cover - compiled
    _h, w, nd = volume.shape
    for y in range(y0, y1):
        for x in range(w):
            d1 = disp[y, x]
            c1 = np.float32(volume[y, x, d1])
            c2 = np.float32(np.inf)
            for d in range(min(nd, x + 1)):  # the left reference: right pixel x - d inside the image
                if abs(d - d1) >= 2:
                    c2 = min(c2, np.float32(volume[y, x, d]))
            if c2 == np.inf or c2 <= 0.0:  # no rival (x < 2), or a rival as perfect as the winner
                out[y, x] = 0.0
            else:
                out[y, x] = max(np.float32(0.0), np.float32(1.0) - c1 / c2)


@njit(cache=True, nogil=True)
def _ratio_rows_kernel(rows, disp, out, y0, y1):  # pragma: no cover - compiled
    """As :func:`_ratio_kernel` on an (H, D, W) volume (stored row by row): disparities outer, pixels inner."""
    for y in range(y0, y1):
        ratio_row(rows[y], disp[y], out[y])


def confidence_ratio(volume_hwd: np.ndarray, disp_int: np.ndarray) -> np.ndarray:
    """(H, W) float32 in [0, 1]: how clearly the winner ``disp_int`` beats every rival in the non-negative cost
    volume ``volume_hwd`` ((H, W, D), left reference, any array layout, float32 or uint16):

        confidence = 1 - C(d1) / C2,   C2 = min { C(d) : |d - d1| >= 2, 0 <= d <= x }

    the cost margin to the best rival relative to that rival's cost (a peak ratio). The two neighbours of the
    winner are no rivals: they belong to the same minimum. 0 means a rival as good as the winner (or none at all,
    at x < 2); 1 would be a winner of cost 0 against any costlier rival. A ratio, so the same for the uint16
    volume as for its float costs."""
    h, w, _nd = volume_hwd.shape
    disp = np.asarray(disp_int, dtype=np.int32)
    if disp.shape != (h, w):
        raise ValueError(f"disparity {disp.shape} does not match the volume's {(h, w)}")
    out = np.empty((h, w), dtype=np.float32)
    rows = volume_hwd.transpose(0, 2, 1)
    if rows.flags.c_contiguous and not volume_hwd.flags.c_contiguous:  # the matcher's row-major cost volume
        run_split(lambda a, b: _ratio_rows_kernel(rows, disp, out, a, b), h)
    else:
        run_split(lambda a, b: _ratio_kernel(volume_hwd, disp, out, a, b), h)
    return out


def postprocess(cost_left: np.ndarray, left_gray: np.ndarray, right_gray: np.ndarray, cfg: MatchConfig,
                scratch: Callable[[tuple[int, int, int]], tuple[np.ndarray, np.ndarray]] | None = None,
                details: dict[str, np.ndarray] | None = None,
                ) -> tuple[np.ndarray, dict[str, float]]:
    """Disparity (H, W) float32 of the left image from its (D, H, W) cost volume, and the seconds spent per stage.

    Stages, in the original's order, each on when its ``cfg`` flag is, with the values of ``cfg.spec``
    (:class:`stereodeploy.engine.spec.PipelineSpec`: the preset ``cfg.sgm_preset`` with ``cfg.overrides``):

    - ``sgm``: :func:`stereodeploy.engine.sgm.aggregate` on the left volume (and on the right one for the check);
    - ``lr_check``: the right image's disparity from the right volume read through the left one (without storing
      it), the left-right check and MC-CNN's interpolation: the map is then dense;
    - ``subpixel``: parabola fit on the (aggregated, if ``sgm``) left volume;
    - ``median``: 5 x 5 median; ``bilateral``: the original's disparity-gated Gaussian mean.

    ``left_gray`` and ``right_gray`` are (H, W) grey images in any units (0..255 usually): they are normalised
    per image here, as SGM's intensity threshold expects.
    ``scratch(shape)``, if given, returns two float32 (H, W, D) arrays to use as SGM's working volumes (their
    contents are overwritten); a caller matching many pairs passes buffers it keeps, so the 2 x 425 MB of a
    KITTI-sized pair are not faulted in afresh on every call (about 1 s). Nothing of them escapes the call.
    With every stage off the result is exactly winner-take-all of ``cost_left``. Timings use the keys ``wta``, ``sgm``,
    ``lr_check``, ``subpixel``, ``median``, ``bilateral``; ``lr_check`` includes the right volume's SGM (or
    winner-take-all).

    ``details``, if given, is a dict that receives ``valid`` ((H, W) bool: the pixels whose winner passed the
    left-right check, i.e. were not filled; all True without ``lr_check``) and ``confidence`` ((H, W) float32 in
    [0, 1]: :func:`confidence_ratio` on the volume the winner came from, the aggregated one with ``sgm``; 0 where
    not ``valid``), timed as ``confidence``.
    """
    if cost_left.ndim != 3:
        raise ValueError(f"cost volume must be (D, H, W), got shape {cost_left.shape}")
    nd, h, w = cost_left.shape
    if np.shape(left_gray) != (h, w) or np.shape(right_gray) != (h, w):
        raise ValueError(f"images {np.shape(left_gray)}, {np.shape(right_gray)} do not match the volume's {(h, w)}")
    spec = cfg.spec
    params = spec.sgm

    timings: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], T]) -> T:
        start = time.perf_counter()
        result = fn()
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start
        return result

    if cost_left.dtype != np.float32 and not (cfg.sgm and cost_left.dtype == np.uint16):  # SGM reads uint16
        cost_left = dequantise(cost_left).astype(np.float32, copy=False)
    if cfg.sgm:
        left_n, right_n = _normalise(left_gray), _normalise(right_gray)
        if scratch is not None:
            work, aggregated = scratch((h, w, nd))  # work: the transposed cost volume
        else:
            work = np.empty((h, w, nd), dtype=np.float32)
            aggregated = np.empty((h, w, nd), dtype=np.float32)
        disp_right = None
        if cfg.lr_check:  # right first, so that its buffers can be reused for the left volume
            disp_right = timed("lr_check", lambda: aggregate(cost_left, right_n, left_n, params, "right",
                                                             derived_right=True, keep_volume=False,
                                                             out=aggregated, work=work)[1])
        volume, disp_int = timed("sgm", lambda: aggregate(cost_left, left_n, right_n, params, "left",
                                                          keep_volume=True, out=aggregated, work=work))
        del work
    else:
        volume = None
        disp_int = timed("wta", lambda: winner_take_all(cost_left))
        disp_right = (timed("lr_check", lambda: winner_take_all(cost_left, derived_right=True))
                      if cfg.lr_check else None)
    disp = disp_int.astype(np.float32)
    if details is not None:
        winners = cost_left.transpose(1, 2, 0) if volume is None else volume  # (H, W, D) views
        details["confidence"] = timed("confidence", lambda: confidence_ratio(winners, disp_int))
        details["valid"] = np.ones((h, w), dtype=bool)

    if cfg.lr_check:
        assert disp_right is not None

        def check() -> np.ndarray:
            labels = left_right_check(disp, disp_right.astype(np.float32), spec.lr_threshold, nd)
            if details is not None:
                details["valid"] = labels == MATCH
                details["confidence"][labels != MATCH] = 0.0
            return fill_invalid(disp, labels)

        disp = timed("lr_check", check)
    if cfg.subpixel:
        if volume is not None:
            vol = volume
            disp = timed("subpixel", lambda: parabola_refine(disp, *_gather_hwd(vol, disp)))
        else:
            disp = timed("subpixel", lambda: subpixel(disp, cost_left, "left"))
    if cfg.median:
        disp = timed("median", lambda: median5(disp))
    if cfg.bilateral:
        disp = timed("bilateral", lambda: bilateral(disp, None, spec.blur_sigma, spec.blur_t))
    return disp.astype(np.float32, copy=False), timings


def load_kernels(cfg: MatchConfig) -> None:
    """Load the post-processing kernels ``cfg`` needs from numba's cache (or compile them) by running the chain on
    a tiny volume laid out as the matcher's: what :func:`stereodeploy.engine.matching.load_kernels` does for the
    matching kernels. Only kernels that run on plain threads are run here (numba's parallel ones are loaded by
    that function), so this is safe beside any other work."""
    from stereodeploy.engine.matching import row_major_volume

    if not cfg.sgm:
        return
    nd, h, w = 4, 6, 16
    volume = row_major_volume(nd, h, w, np.uint16)
    volume[...] = np.arange(volume.size, dtype=np.uint16).reshape(volume.shape)
    gray = np.linspace(0.0, 255.0, h * w, dtype=np.float32).reshape(h, w)
    postprocess(volume, gray, gray[:, ::-1].copy(), replace(cfg, max_disp=nd), details={})
