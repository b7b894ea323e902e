"""Cheap checks that a pair is what the matcher assumes, run on the two feature maps before matching.

A swapped pair (the right image given as left) still produces a disparity map, and the program would exit 0 with
noise. In a rectified pair the left image's point ``x`` shows in the right image at ``x - d`` with ``d >= 0``;
swapped, the same surfaces are found at ``x + d``. :func:`swapped_score` measures, on a few rows, how much of the
image matches better at a negative disparity than at any positive one:

- for a sampled left pixel ``x`` (with room for ``D`` disparities on both sides), the best similarity over the
  right pixels ``x - 1 ... x - D`` is compared with the best over ``x + 1 ... x + D``;
- the score is the fraction of sampled pixels whose best match lies on the negative side (ties: neither side).

A correct pair scores well below one half (only occlusions, repetitive and flat texture vote at random); a swapped
one well above. The threshold :data:`SWAPPED_THRESHOLD` sits between what the tests measure on synthetic and real
pairs (see ``tests/test_sanity.py``). The check reads ``rows`` rows and every ``step``-th pixel of them: a few
percent of the work of matching the whole image. :func:`image_swapped_score` runs the same vote on image
patches instead, for a caller that does not hold the feature maps.
"""

from __future__ import annotations

import math

import numpy as np

SWAPPED_THRESHOLD = 0.5  # fraction of sampled pixels matching better at negative disparity
SAMPLE_ROWS = 6
SAMPLE_STEP = 4


def swapped_score(feat_left: np.ndarray, feat_right: np.ndarray, max_disp: int, rows: int = SAMPLE_ROWS,
                  step: int = SAMPLE_STEP) -> float:
    """Fraction (0..1) of sampled left pixels whose best match is at negative disparity; NaN if none can be tested.

    ``feat_left``, ``feat_right``: ``(C, H, W)`` feature maps (unit vectors along C, as the feature models give;
    any real vectors work, similarity is their dot product). ``max_disp`` disparities are searched on each side,
    at most a third of the width, so that the tested pixels ``[D, W - D)`` keep a third of each row. ``rows``
    evenly spaced rows (away from the top and bottom edges) and every ``step``-th pixel of them are tested.
    """
    fl = np.asarray(feat_left, dtype=np.float32)
    fr = np.asarray(feat_right, dtype=np.float32)
    if fl.ndim != 3 or fl.shape != fr.shape:
        raise ValueError(f"swapped_score needs two (C, H, W) maps of one shape, got {fl.shape} and {fr.shape}")
    if rows < 1:
        return math.nan
    ys = sample_rows(fl.shape[1], rows)
    return _score(fl[:, ys], fr[:, ys], max_disp, step)


def image_swapped_score(left: np.ndarray, right: np.ndarray, max_disp: int, rows: int = SAMPLE_ROWS,
                        step: int = SAMPLE_STEP, radius: int = 2) -> float:
    """:func:`swapped_score` on the images themselves, for callers that do not hold the feature maps.

    ``left``, ``right``: ``(H, W)`` grayscale (e.g. :func:`stereodeploy.data.preprocess.to_gray`). Each sampled pixel is
    described by its zero-mean, unit-length ``(2 radius + 1)^2`` neighbourhood (only the sampled rows are
    built): weaker than learned features, so the margin is smaller (all 20 real frames of ../shared/data:
    correct pairs at most 0.26, swapped at least 0.70), but it costs milliseconds and no network.
    """
    gl = np.asarray(left, dtype=np.float32)
    gr = np.asarray(right, dtype=np.float32)
    if gl.ndim != 2 or gl.shape != gr.shape:
        raise ValueError(f"image_swapped_score needs two (H, W) images of one shape, got {gl.shape} and {gr.shape}")
    if rows < 1:
        return math.nan
    ys = sample_rows(gl.shape[0], rows)
    return _score(_patch_vectors(gl, ys, radius), _patch_vectors(gr, ys, radius), max_disp, step)


def sample_rows(height: int, rows: int) -> np.ndarray:
    """``rows`` evenly spaced row indexes of an image of ``height`` rows, away from its first and last row."""
    if height <= 2:
        return np.arange(height)
    return np.unique(np.linspace(0, height - 1, rows + 2).round().astype(np.intp)[1:-1])


def _patch_vectors(gray: np.ndarray, ys: np.ndarray, radius: int) -> np.ndarray:
    """``(K, len(ys), W)``: each pixel of rows ``ys`` as its zero-mean, unit-length (2r+1)^2 neighbourhood."""
    height, width = gray.shape
    padded = np.pad(gray, radius, mode="reflect") if min(height, width) > radius else np.pad(gray, radius, "edge")
    k = 2 * radius + 1
    cols = np.arange(width)[None, :]
    f = np.stack([padded[ys[:, None] + dy, cols + dx] for dy in range(k) for dx in range(k)])
    f -= f.mean(axis=0, keepdims=True)
    return f / (np.linalg.norm(f, axis=0, keepdims=True) + 1e-3)  # flat patches stay near 0: they tie


def _score(fl: np.ndarray, fr: np.ndarray, max_disp: int, step: int) -> float:
    """The vote over every row of ``(C, R, W)`` maps ``fl``, ``fr`` (see :func:`swapped_score`)."""
    _, n_rows, width = fl.shape
    d = min(int(max_disp), (width - 1) // 3)
    if d < 1 or step < 1:
        return math.nan
    xs = np.arange(d, width - d, step)
    if xs.size == 0 or n_rows == 0:
        return math.nan
    offsets = np.arange(1, d + 1)
    left_cols, right_cols = xs[:, None] - offsets, xs[:, None] + offsets  # (n, D) indexes into the right row
    n = np.arange(xs.size)[:, None]
    negative = 0
    for r in range(n_rows):
        sim = fl[:, r, xs].T @ fr[:, r, :]  # (n, W): every tested left pixel against the whole right row
        best_pos = sim[n, left_cols].max(axis=1)  # right pixel x - d: positive disparity (correct pair)
        best_neg = sim[n, right_cols].max(axis=1)  # right pixel x + d: negative disparity (swapped pair)
        negative += int(np.count_nonzero(best_neg > best_pos))
    return negative / (n_rows * xs.size)


def check_swapped(name: str, left: np.ndarray, right: np.ndarray, max_disp: int,
                  threshold: float = SWAPPED_THRESHOLD) -> tuple[float, str | None]:
    """The swapped-pair score of ``left``, ``right`` (grayscale ``(H, W)``) and the one-line warning when it
    exceeds ``threshold`` (None otherwise, also when the images are too narrow to test: the score is then NaN).

    Uses :func:`image_swapped_score`, so it needs no feature maps: about 2% of the time of winner-take-all on a
    KITTI frame with 228 disparities, single-threaded (``scripts/bench_sanity.py``).
    """
    score = image_swapped_score(left, right, max_disp)
    return score, (swapped_warning(name, score) if score > threshold else None)


def swapped_warning(name: str, score: float) -> str:
    """The one-line warning for a pair that looks swapped (the CLI prints it on stderr)."""
    return (f"{name}: {100 * score:.0f}% of the image matches better at negative disparity: are left and right "
            "swapped? Give the left camera's image first")
