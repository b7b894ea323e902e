"""The one description of MC-CNN's matching pipeline, read by both of its implementations: the numba engine
(:mod:`stereodeploy.engine.matching`, :mod:`~stereodeploy.engine.sgm`, :mod:`~stereodeploy.engine.filters`,
:mod:`~stereodeploy.engine.postprocess`) and the ONNX graph builders (:mod:`stereodeploy.deploy.onnx_pipeline`,
:mod:`stereodeploy.deploy.export_matcher`). Neither side writes a number of its own that the other also uses; a
change here changes both, and ``tests/test_onnx_pipeline.py`` holds them together over several specs.

What it holds:

* :class:`PipelineSpec`, the tunable values (SGM's penalties, the bilateral filter's sigma and gate, the left-right
  threshold and the reach derived from it), and :data:`PRESETS`, the named specs tuned per benchmark;
  :class:`stereodeploy.config.MatchConfig` carries a preset name and overrides and validates them once.
* The fixed conventions and sentinels below (out-of-image costs, "no neighbour", the median's window, ...).
* Gray and normalisation are :mod:`stereodeploy.data.preprocess`'s (``LUMA_601``, ``NORM_EPS``), which training,
  every backend and the file share; they are not repeated here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from types import MappingProxyType
from typing import Any

import numpy as np

from stereodeploy.errors import UsageError

# ----------------------------------------------------------------------------------------- fixed conventions

INVALID_COST = 2.0
"""What a stored cost volume holds where the matching pixel does not exist (``x - d < 0`` for the left image):
the worst real cost (opposite unit vectors). Finite, so sums stay NaN-free; winner-take-all never prefers it, as
d = 0 always exists and ties keep the smaller disparity."""

OUT_OF_IMAGE = 1000.0
"""What SGM aggregates for a cell whose matching pixel is outside the other image: far above any aggregated valid
cost (at most ``2 + P2``), so such a cell never wins; finite, so no inf - inf appears. The engine substitutes it by
position whatever the volume holds there; the file's volume holds it in those cells."""

NO_NEIGHBOUR = 3.0e38
"""Stands for a neighbour that does not exist: SGM's ``d +- 1`` terms at the ends of the disparity range, the
median's padding. Finite (the SGM kernels are compiled with fastmath, which assumes no infinities)."""

EXCLUDED = 1.0e30
"""Bilateral filter: the gate value of pixels outside the image (and of missing ones), farther from any real value
than any threshold, so they never take part."""

SUBPIXEL_MIN_CURVATURE = 1e-5
"""The subpixel parabola is fitted only where ``2 (C+ - 2 C + C-)`` exceeds this (it opens upwards), as the
original does."""

MEDIAN_RADIUS = 2
"""The median filter's window is ``(2 r + 1)^2``: 5 x 5, the paper's "Refinement"."""

WALK_DIRECTIONS = ((0, 1), (-0.5, 1), (-1, 1), (-1, 0.5), (-1, 0), (-1, -0.5), (-1, -1), (-0.5, -1),
                   (0, -1), (0.5, -1), (1, -1), (1, -0.5), (1, 0), (1, 0.5), (1, 1), (0.5, 1))
"""The 16 directions the original walks from a mismatch, as (dx, dy) per step: the 8 compass directions and the 8
between them with a half step on one axis. Position k of a walk is (x + round(k dx), y + round(k dy)), halves
rounded up, so a half-step direction alternates two unit steps (:func:`walk_steps`)."""


def walk_steps() -> np.ndarray:
    """(16, 2, 2) int64: for each of :data:`WALK_DIRECTIONS` the two alternating unit steps (phase, (sx, sy))."""
    steps = np.zeros((len(WALK_DIRECTIONS), 2, 2), dtype=np.int64)
    for i, (dx, dy) in enumerate(WALK_DIRECTIONS):
        pos = [(math.floor(k * dx + 0.5), math.floor(k * dy + 0.5)) for k in range(3)]
        for phase in range(2):
            steps[i, phase] = (pos[phase + 1][0] - pos[phase][0], pos[phase + 1][1] - pos[phase][1])
    return steps


def gaussian_window(sigma: float, radius: int | None = None) -> np.ndarray:
    """The bilateral filter's spatial weights: a (2 r + 1, 2 r + 1) float32 Gaussian of standard deviation
    ``sigma``, ``r = ceil(3 sigma)`` unless given (the original's ``gaussian()`` kernel size), not normalised (the
    filter divides by the sum of the weights it keeps)."""
    r = math.ceil(3 * sigma) if radius is None else int(radius)
    offsets = np.arange(-r, r + 1, dtype=np.float64)
    return np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2.0 * sigma**2)).astype(np.float32)


# ------------------------------------------------------------------------------------------- tunable values


@dataclass(frozen=True)
class SGMParams:
    """MC-CNN's SGM hyperparameters, named as in the paper's table: penalties ``P1`` < ``P2``, divisors ``Q1``
    (one image has an edge) and ``Q2`` (both have one), vertical divisor ``V`` of P1, and the intensity-difference
    threshold ``D`` in units of the image's standard deviation (see :mod:`stereodeploy.engine.sgm`)."""

    P1: float
    P2: float
    Q1: float
    Q2: float
    V: float
    D: float

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not np.isfinite(value) or value < 0 or (value == 0 and f.name != "D"):
                raise UsageError(f"SGM parameter {f.name} must be a positive number, got {value}")
        if self.P2 < self.P1:
            raise UsageError(f"SGM needs P2 >= P1, got P1={self.P1}, P2={self.P2}: raise P2 or lower P1")
        if self.P2 + INVALID_COST >= OUT_OF_IMAGE:
            raise UsageError(f"SGM needs P2 < {OUT_OF_IMAGE - INVALID_COST} so that cells outside the image never "
                             f"win, got {self.P2}")

    def penalties(self) -> np.ndarray:
        """(2, 2, 3) float32 table ``[vertical, which, k]``: ``which`` 0 is P1, 1 is P2; ``k`` counts the images
        (0, 1 or 2) whose intensity difference is below ``D``."""
        table = np.empty((2, 2, 3), dtype=np.float32)
        for vertical in (0, 1):
            p1 = self.P1 / (self.V if vertical else 1.0)
            table[vertical, 0] = (p1 / self.Q2, p1 / self.Q1, p1)
            table[vertical, 1] = (self.P2 / self.Q2, self.P2 / self.Q1, self.P2)
        return table


SGM_NAMES = tuple(f.name for f in fields(SGMParams))


@dataclass(frozen=True)
class PipelineSpec:
    """The tunable values of the post-processing: SGM's parameters, the bilateral filter's ``blur_sigma`` (its
    Gaussian's standard deviation, in pixels) and ``blur_t`` (its gate, in pixels of disparity: a neighbour takes
    part when its disparity is within ``blur_t`` of the centre's), and the left-right check's ``lr_threshold`` (in
    pixels: a left pixel matches when ``|dL(x) - dR(x - dL(x))| < lr_threshold``; the original's 1.1 lets integer
    disparities differ by 1)."""

    sgm: SGMParams
    blur_sigma: float
    blur_t: float
    lr_threshold: float = 1.1

    def __post_init__(self) -> None:
        for name in ("blur_sigma", "blur_t", "lr_threshold"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise UsageError(f"{name} must be a positive number, got {value}")

    def reach_offsets(self) -> tuple[int, ...]:
        """The integer offsets ``e`` with ``|e| < lr_threshold``: a right pixel of integer disparity ``dR``
        "reaches" the left pixels ``xr + dR + e`` (those it would be consistent with); a left pixel that fails the
        check is a mismatch when some right pixel reaches it and an occlusion otherwise. (1.1 gives -1, 0, 1.)"""
        n = math.ceil(self.lr_threshold) - 1
        return tuple(range(-n, n + 1))

    def bilateral_weights(self) -> np.ndarray:
        """:func:`gaussian_window` of ``blur_sigma``."""
        return gaussian_window(self.blur_sigma)

    def with_overrides(self, overrides: Mapping[str, float] | None) -> PipelineSpec:
        """This spec with some values replaced by name: an SGM parameter (:data:`SGM_NAMES`) or one of
        ``blur_sigma``, ``blur_t``, ``lr_threshold``. A bad name or value raises UsageError."""
        if not overrides:
            return self
        unknown = sorted(set(overrides) - set(TUNABLE))
        if unknown:
            raise UsageError(f"unknown pipeline setting(s) {', '.join(unknown)}: use {', '.join(TUNABLE)}")
        try:
            values = {n: float(v) for n, v in overrides.items()}
        except (TypeError, ValueError):
            raise UsageError(f"pipeline settings must be numbers, got {dict(overrides)}") from None
        sgm = replace(self.sgm, **{n: v for n, v in values.items() if n in SGM_NAMES})
        return replace(self, sgm=sgm, **{n: v for n, v in values.items() if n not in SGM_NAMES})

    def as_dict(self) -> dict[str, Any]:
        """Every tunable value by name (as :meth:`with_overrides` takes them), for metadata and reports."""
        out = asdict(self)
        return {**out.pop("sgm"), **out}


TUNABLE = (*SGM_NAMES, "blur_sigma", "blur_t", "lr_threshold")
"""The names :meth:`PipelineSpec.with_overrides` accepts."""


PRESETS: Mapping[str, PipelineSpec] = MappingProxyType({
    # main.lua, fast architecture, combined as the paper's table does: P2 = pi1 * pi2, Q2 = q1 * q2.
    "kitti2012": PipelineSpec(SGMParams(P1=4.0, P2=222.9, Q1=3.0, Q2=7.5, V=1.5, D=0.02), 7.74, 5.0),  # pi2 55.72
    "kitti2015": PipelineSpec(SGMParams(P1=2.3, P2=42.3, Q1=3.0, Q2=6.0, V=1.25, D=0.08), 4.64, 5.0),  # pi2 18.38
    "middlebury": PipelineSpec(SGMParams(P1=2.3, P2=24.3, Q1=4.0, Q2=8.0, V=1.5, D=0.08), 6.0, 2.0),  # pi2 24.3
})
"""The fast network's settings per benchmark, named after the dataset layout they were tuned on (so a layout's
preset is the one of its own name). SGM: the KITTI entries are the paper's table. The Middlebury entry is the
original's own fast/Middlebury setting (``main.lua``: pi1 2.3, pi2 24.3, q1 4, q2 2, alpha1 1.5, tau_so 0.08) with
P2 = pi2, as the released ``sgm2`` kernel uses it, not pi1 * pi2 = 55.9: on six *training* scenes (Baby2, Bowling1,
Cloth2, Lampshade1, Midd1, Rocks2; never the held-out ones) with the shipped torch model, P2 24.3 gave 11.7 % >=3 px
error against 13.9 % for 55.9 (16: 11.3 %, 32: 12.1 %, 100: 15.5 %). Blur: (blur_sigma, blur_t) of ``main.lua``."""

DEFAULT_PRESET = "middlebury"
"""For images that belong to no recognised dataset layout."""


def preset_spec(name: str, overrides: Mapping[str, float] | None = None) -> PipelineSpec:
    """The spec of preset ``name`` of :data:`PRESETS`, with ``overrides`` applied (see
    :meth:`PipelineSpec.with_overrides`). An unknown name raises UsageError."""
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}: use one of {', '.join(PRESETS)}")
    return PRESETS[name].with_overrides(overrides)
