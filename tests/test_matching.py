"""The numba matching kernels against a plain numpy reference: values, the x - d < 0 border, ties, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stereodeploy.engine.matching import (
    GROUP,
    INVALID_COST,
    LANES,
    cost_volume,
    winner_take_all,
    wta_from_features,
)
from stereodeploy.errors import UsageError


def reference_volume(fl: np.ndarray, fr: np.ndarray, max_disp: int) -> np.ndarray:
    """The definition, in float64: 1 - <fl(x), fr(x - d)> clamped to [0, 2], INVALID_COST where x - d < 0."""
    _, h, w = fl.shape
    out = np.full((max_disp, h, w), INVALID_COST, dtype=np.float64)
    for d in range(max_disp):
        sim = np.einsum("chw,chw->hw", fl[:, :, d:].astype(np.float64), fr[:, :, :w - d].astype(np.float64))
        out[d, :, d:] = np.clip(1.0 - sim, 0.0, INVALID_COST)
    return out


def unit_features(rng: np.random.Generator, c: int, h: int, w: int) -> np.ndarray:
    f = rng.standard_normal((c, h, w)).astype(np.float32)
    return f / np.linalg.norm(f, axis=0, keepdims=True)


# widths and disparity ranges chosen to cover partial SIMD tiles and partial disparity groups
SHAPES = [(8, 3, 37, 13), (64, 2, 2 * LANES + 3, 2 * GROUP + 1), (3, 2, 17, 16), (16, 2, 203, 20), (64, 2, 300, 228)]


@pytest.mark.parametrize("c,h,w,max_disp", SHAPES)
def test_cost_volume_matches_reference(c: int, h: int, w: int, max_disp: int) -> None:
    rng = np.random.default_rng(c + w)
    fl, fr = unit_features(rng, c, h, w), unit_features(rng, c, h, w)
    got = cost_volume(fl, fr, max_disp)
    assert got.shape == (max_disp, h, w) and got.dtype == np.float32
    np.testing.assert_allclose(got, reference_volume(fl, fr, max_disp), atol=2e-6, rtol=0)


@pytest.mark.parametrize("c,h,w,max_disp", SHAPES)
def test_wta_is_argmin_of_the_volume_and_of_the_reference(c: int, h: int, w: int, max_disp: int) -> None:
    rng = np.random.default_rng(7 * c + w)
    fl = unit_features(rng, c, h, w)
    fr = np.roll(fl, -5, axis=2) + 0.5 * unit_features(rng, c, h, w)
    fr /= np.linalg.norm(fr, axis=0, keepdims=True)
    disp = wta_from_features(fl, fr, max_disp)
    assert disp.dtype == np.float32 and disp.shape == (h, w)
    np.testing.assert_array_equal(disp, winner_take_all(cost_volume(fl, fr, max_disp)))
    ref = reference_volume(fl, fr, max_disp)
    chosen = np.take_along_axis(ref, disp.astype(np.int64)[None], axis=0)[0]
    np.testing.assert_allclose(chosen, ref.min(axis=0), atol=2e-6, rtol=0)  # equal up to float32 rounding
    if c >= 8:  # enough channels for the shift to stand out of the noise
        assert np.mean(disp[:, 5:] == 5) > 0.8


def test_a_known_shift_is_recovered_exactly() -> None:
    rng = np.random.default_rng(3)
    right = unit_features(rng, 16, 4, 90)
    left = np.roll(right, 9, axis=2)  # left(x) = right(x - 9)
    disp = wta_from_features(left, right, 30)
    assert np.all(disp[:, 9:] == 9)


def test_left_border_never_picks_a_missing_right_pixel() -> None:
    # every real cost is the worst (opposite vectors: 2.0); a kernel that read zero padding for x - d < 0 would
    # see cost 1.0 there and pick it. The only allowed answer is d = 0, the smallest of the ties.
    c, h, w, max_disp = 4, 2, 3 * LANES + 1, 2 * GROUP + 3
    left = np.zeros((c, h, w), np.float32)
    left[0] = 1.0
    right = -left
    np.testing.assert_array_equal(wta_from_features(left, right, max_disp), np.zeros((h, w), np.float32))
    cost = cost_volume(left, right, max_disp)
    assert np.all(cost == INVALID_COST)
    # with real matches the border cells still hold exactly INVALID_COST
    rng = np.random.default_rng(5)
    fl, fr = unit_features(rng, c, h, w), unit_features(rng, c, h, w)
    cost = cost_volume(fl, fr, max_disp)
    for d in range(max_disp):
        assert np.all(cost[d, :, :d] == INVALID_COST)
        assert np.all(cost[d, :, d:] < INVALID_COST)


def test_ties_keep_the_smallest_disparity() -> None:
    # one-hot features repeating every 5 columns: similarities are exactly 0 or 1 whatever the summation order,
    # so a shift of 3 ties with 8, 13, ...; the right answer is the smallest valid disparity of lowest cost.
    c, h, w, max_disp = 5, 3, 61, 40
    cols = np.arange(w)
    right = np.zeros((c, h, w), np.float32)
    right[cols % c, :, cols] = 1.0
    left = np.zeros_like(right)
    left[(cols - 3) % c, :, cols] = 1.0  # left(x) = right(x - 3)
    disp = wta_from_features(left, right, max_disp)
    expected = np.argmin(reference_volume(left, right, max_disp), axis=0).astype(np.float32)
    np.testing.assert_array_equal(disp, expected)
    assert np.all(disp[:, 3:] == 3) and np.all(disp[:, :3] == 0)  # columns 0-2 have no match: all cost 1, d = 0
    np.testing.assert_array_equal(winner_take_all(cost_volume(left, right, max_disp)), expected)


def test_winner_take_all_by_hand() -> None:
    cost = np.array([[[0.5, 0.2, np.nan]], [[0.1, 0.2, 0.3]], [[0.1, 0.9, np.nan]]], dtype=np.float32)  # (3, 1, 3)
    np.testing.assert_array_equal(winner_take_all(cost), [[1.0, 0.0, 1.0]])  # tie -> smaller d; NaN never wins


def test_non_contiguous_and_float64_inputs_are_accepted() -> None:
    rng = np.random.default_rng(11)
    f = unit_features(rng, 8, 20, 3).transpose(0, 2, 1)  # (8, 3, 20) view, not C-contiguous
    g = np.roll(f, 2, axis=2).astype(np.float64)
    np.testing.assert_array_equal(wta_from_features(f, g, 6), wta_from_features(np.ascontiguousarray(f),
                                                                                np.ascontiguousarray(g, np.float32), 6))


def test_user_mistakes() -> None:
    f = np.zeros((4, 3, 10), np.float32)
    with pytest.raises(UsageError, match="max disparity"):
        wta_from_features(f, f, 10)
    with pytest.raises(UsageError, match="max disparity"):
        cost_volume(f, f, 0)
    with pytest.raises(ValueError, match="one shape"):
        wta_from_features(f, f[:, :2], 3)
    with pytest.raises(ValueError, match="one shape"):
        cost_volume(f[0], f[0], 3)


@pytest.mark.slow
def test_narrow_simd_kernels_match_the_reference(tmp_path: Path) -> None:
    """The 8 x 8 kernels that AVX2 and NEON machines get, compiled in a subprocess (about 20 s each), with a numba
    cache that already holds this CPU's own kernels: STEREODEPLOY_SIMD must not be ignored for them."""
    check = (
        "import numpy as np\n"
        "from tests.test_matching import SHAPES, reference_volume, unit_features\n"
        "from stereodeploy.engine import matching as m\n"
        "for c, h, w, nd in SHAPES[:3]:\n"
        "    rng = np.random.default_rng(w)\n"
        "    fl, fr = unit_features(rng, c, h, w), unit_features(rng, c, h, w)\n"
        "    ref = reference_volume(fl, fr, nd)\n"
        "    assert np.abs(m.cost_volume(fl, fr, nd) - ref).max() < 2e-6\n"
        "    d = m.wta_from_features(fl, fr, nd).astype(int)\n"
        "    assert np.abs(np.take_along_axis(ref, d[None], 0)[0] - ref.min(0)).max() < 2e-6\n"
        "hits = sum(sum(f.stats.cache_hits.values()) for f in (m._wta_kernel, m._volume_kernel))\n"
        "print(m.LANES, m.GROUP, hits)\n"
    )
    root = Path(__file__).resolve().parents[1]
    base = {k: v for k, v in os.environ.items() if k != "STEREODEPLOY_SIMD"}
    base["NUMBA_CACHE_DIR"] = str(tmp_path)

    def run(env: dict[str, str]) -> list[str]:
        done = subprocess.run([sys.executable, "-c", check], cwd=root, env=env, capture_output=True, text=True,
                              timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.split()

    detected = run(base)  # fills the cache with this CPU's kernels
    assert run(dict(base, STEREODEPLOY_SIMD="8x8")) == ["8", "8", "0"]  # a forced shape is compiled, not loaded
    again = run(base)  # the detected shape's kernels are still cached, and load
    assert again[:2] == detected[:2] and again[2] != "0"


def test_uint16_row_major_volume_holds_the_scaled_costs() -> None:
    from stereodeploy.engine.matching import COST_SCALE, dequantise, row_major_volume

    rng = np.random.default_rng(12)
    c, h, w, nd = 16, 3, 2 * LANES + 5, GROUP + 3  # a partial tile and a partial group
    fl, fr = unit_features(rng, c, h, w), unit_features(rng, c, h, w)
    ref = reference_volume(fl, fr, nd)
    for dtype in (np.float32, np.uint16):
        out = row_major_volume(nd, h, w, dtype)
        assert cost_volume(fl, fr, nd, out=out) is out and out.transpose(1, 0, 2).flags.c_contiguous
        if dtype == np.uint16:
            assert np.abs(out.astype(np.float64) - np.rint(ref * COST_SCALE)).max() <= 1
            assert np.all(out[:, :, 0][1:] == 65535)  # INVALID_COST, x - d < 0
            assert np.abs(dequantise(out) - ref).max() < 1.0 / COST_SCALE
        else:
            assert np.abs(out - ref).max() < 2e-6
    with pytest.raises(ValueError, match="float32 or uint16"):
        cost_volume(fl, fr, nd, out=np.empty((nd, h, w), dtype=np.float64))
