"""The swapped-pair check: hand-checked cases, synthetic pairs with known disparity, real pairs (skipped if absent)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from stereodeploy.data.datasets import load_dataset, synthetic_pair
from stereodeploy.data.preprocess import to_gray
from stereodeploy.engine.sanity import (
    SWAPPED_THRESHOLD,
    _patch_vectors,
    check_swapped,
    image_swapped_score,
    sample_rows,
    swapped_score,
    swapped_warning,
)


def patch_features(img: np.ndarray, radius: int = 2) -> np.ndarray:
    """(25, H, W) unit vectors: each pixel's zero-mean 5x5 neighbourhood, a stand-in for a feature network."""
    g = to_gray(img)
    g = (g - g.mean()) / (g.std() + 1e-6)
    p = np.pad(g, radius, mode="reflect")
    h, w = g.shape
    k = 2 * radius + 1
    f = np.stack([p[dy:dy + h, dx:dx + w] for dy in range(k) for dx in range(k)])
    f -= f.mean(axis=0, keepdims=True)
    return f / (np.linalg.norm(f, axis=0, keepdims=True) + 1e-6)


def brute_force(fl: np.ndarray, fr: np.ndarray, d: int, ys: list[int], xs: range) -> float:
    votes = total = 0
    for y in ys:
        for x in xs:
            pos = max(float(fl[:, y, x] @ fr[:, y, x - k]) for k in range(1, d + 1))
            neg = max(float(fl[:, y, x] @ fr[:, y, x + k]) for k in range(1, d + 1))
            votes += neg > pos
            total += 1
    return votes / total


def test_score_equals_a_plain_loop_over_the_sampled_pixels() -> None:
    rng = np.random.default_rng(1)
    fl, fr = rng.standard_normal((2, 3, 10, 40)).astype(np.float32)
    # rows=3 of 10: linspace(0, 9, 5) -> rows 2, 4, 7 (ends dropped); D=5: pixels 5, 7, ..., 33
    got = swapped_score(fl, fr, 5, rows=3, step=2)
    assert got == pytest.approx(brute_force(fl, fr, 5, [2, 4, 7], range(5, 35, 2)))


def test_one_shifted_row_scores_zero_and_its_swap_one() -> None:
    rng = np.random.default_rng(2)
    right = rng.standard_normal((4, 1, 60)).astype(np.float32)
    right /= np.linalg.norm(right, axis=0, keepdims=True)
    left = np.roll(right, 3, axis=2)  # left(x) = right(x - 3): disparity +3 everywhere
    assert swapped_score(left, right, 10, rows=1, step=1) == 0.0
    assert swapped_score(right, left, 10, rows=1, step=1) == 1.0
    flat = np.ones((4, 1, 60), np.float32) / 2
    assert swapped_score(flat, flat, 10, rows=1, step=1) == 0.0  # ties (a textureless row) vote for neither


def test_too_narrow_or_mismatched_maps() -> None:
    f = np.ones((2, 5, 3), np.float32)
    assert math.isnan(swapped_score(f, f, 16))  # a third of 3 pixels leaves no disparity to test
    assert check_swapped("p", f[0], f[0], 16)[1] is None  # NaN: no warning
    with pytest.raises(ValueError, match="one shape"):
        swapped_score(f, np.ones((2, 5, 4), np.float32), 4)


@pytest.mark.parametrize("seed", range(4))
def test_synthetic_pairs_known_disparity_normal_low_swapped_high(seed: int) -> None:
    s = synthetic_pair(height=64, width=160, max_disp=24, seed=seed, noise=2.0)
    fl, fr = patch_features(s.left), patch_features(s.right)
    normal, swapped = swapped_score(fl, fr, 24), swapped_score(fr, fl, 24)
    assert normal < 0.2 and swapped > 0.8  # measured: 0.03-0.06 and 0.92-0.97 with the default sampling


def test_sample_rows_spread_over_the_image_away_from_its_edges() -> None:
    assert sample_rows(375, 6).tolist() == [53, 107, 160, 214, 267, 321]
    assert sample_rows(5, 6).tolist() == [1, 2, 3]  # fewer rows than asked: each once
    assert sample_rows(2, 6).tolist() == [0, 1]


def test_image_score_is_the_feature_score_on_patch_vectors() -> None:
    s = synthetic_pair(height=40, width=120, max_disp=16, seed=5)
    gl, gr = to_gray(s.left), to_gray(s.right)
    every_row = np.arange(40)
    fl, fr = _patch_vectors(gl, every_row, 2), _patch_vectors(gr, every_row, 2)
    assert image_swapped_score(gl, gr, 16) == swapped_score(fl, fr, 16)
    with pytest.raises(ValueError, match="one shape"):
        image_swapped_score(gl, gr[:, :-1], 16)


@pytest.mark.parametrize("seed", range(4))
def test_image_score_on_synthetic_pairs(seed: int) -> None:
    s = synthetic_pair(height=64, width=160, max_disp=24, seed=seed, noise=2.0)
    gl, gr = to_gray(s.left), to_gray(s.right)
    assert image_swapped_score(gl, gr, 24) < 0.2 and image_swapped_score(gr, gl, 24) > 0.8


def test_warning_is_one_line_naming_the_fix() -> None:
    s = synthetic_pair(height=64, width=160, max_disp=24, seed=1)
    gl, gr = to_gray(s.left), to_gray(s.right)
    normal, warning = check_swapped("p", gl, gr, 24)
    assert normal < SWAPPED_THRESHOLD and warning is None
    swapped, warning = check_swapped("p", gr, gl, 24)
    assert swapped > SWAPPED_THRESHOLD and warning == swapped_warning("p", swapped)
    text = swapped_warning("000005_10", 0.91)
    assert "\n" not in text and "91%" in text and "swapped" in text and "left" in text


@pytest.mark.slow
def test_real_pairs_with_the_shipped_model(shared_data: Path) -> None:
    from stereodeploy.engine.backends import open_backend
    from stereodeploy.engine.shipped import default_model_path

    backend = open_backend(default_model_path())
    samples = load_dataset(shared_data / "kitti2015")
    samples += [s for s in load_dataset(shared_data / "middlebury") if s.name in ("Midd1", "Lampshade1", "tsukuba")]
    for s in samples:
        rows = slice(s.left.shape[0] // 2 - 64, s.left.shape[0] // 2 + 64)  # 128 full-width rows: faster, same test
        fl, fr = backend.features_pair(to_gray(s.left[rows]), to_gray(s.right[rows]))
        d = s.max_disp or 228
        normal, swapped = swapped_score(fl, fr, d), swapped_score(fr, fl, d)
        # Over all 20 real frames: normal at most 0.16, swapped at least 0.83 (scripts in the commit message).
        assert normal < SWAPPED_THRESHOLD - 0.2 and swapped > SWAPPED_THRESHOLD + 0.2, (s.name, normal, swapped)


@pytest.mark.slow
def test_real_pairs_image_score(shared_data: Path) -> None:
    samples = load_dataset(shared_data / "kitti2015") + load_dataset(shared_data / "middlebury")
    for s in samples:
        gl, gr = to_gray(s.left), to_gray(s.right)
        d = s.max_disp or 228
        normal, swapped = image_swapped_score(gl, gr, d), image_swapped_score(gr, gl, d)
        # Measured on these 20 frames: normal at most 0.26, swapped at least 0.70.
        assert normal < SWAPPED_THRESHOLD - 0.15 and swapped > SWAPPED_THRESHOLD + 0.15, (s.name, normal, swapped)
