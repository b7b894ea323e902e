"""Tests for MC-CNN's post-processing (engine.sgm, engine.filters, engine.postprocess) on synthetic data whose
answer is known: feature maps built from a known disparity, cost volumes shaped around a known minimum.

The volumes of feature maps are made the way production makes them, by :func:`engine.matching.cost_volume`, so
the cells outside the image hold what production gives the post-processing (INVALID_COST, 2.0)."""

from __future__ import annotations

import numpy as np
import pytest

from stereodeploy.config import MatchConfig
from stereodeploy.engine.filters import (
    MATCH,
    MISMATCH,
    OCCLUSION,
    bilateral,
    fill_invalid,
    left_right_check,
    median5,
    subpixel,
)
from stereodeploy.engine.matching import INVALID_COST, cost_volume, winner_take_all
from stereodeploy.engine.postprocess import postprocess
from stereodeploy.engine.sgm import aggregate, low_gradient_masks
from stereodeploy.engine.spec import OUT_OF_IMAGE, PRESETS, SGMParams, preset_spec
from stereodeploy.errors import UsageError

SGM_PRESETS = {name: spec.sgm for name, spec in PRESETS.items()}

# ------------------------------------------------------------------------------------------------ builders


def sgm(cost: np.ndarray, left_gray: np.ndarray, right_gray: np.ndarray, params: SGMParams,
        reference: str = "left") -> np.ndarray:
    """The (D, H, W) mean of the four path costs of the ``reference`` image's (D, H, W) volume ``cost``."""
    ref, other = (left_gray, right_gray) if reference == "left" else (right_gray, left_gray)
    volume, _ = aggregate(cost, ref, other, params, reference=reference)
    return volume.transpose(2, 0, 1)


def right_volume(cost_left: np.ndarray) -> np.ndarray:
    """The right image's volume from the left one: ``cost_right[d, y, x] = cost_left[d, y, x + d]``,
    INVALID_COST where ``x + d >= W``."""
    nd, h, w = cost_left.shape
    out = np.full((nd, h, w), INVALID_COST, dtype=np.float32)
    for d in range(nd):
        out[d, :, : w - d] = cost_left[d, :, d:]
    return out


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=0, keepdims=True)).astype(np.float32)


def _scene(h: int = 24, w: int = 72, nd: int = 24, d_bg: int = 3, d_fg: int = 11, x_edge: int = 36,
           noise: float = 0.0, channels: int = 16, seed: int = 0):
    """A fronto-parallel background (d_bg) with a foreground block (d_fg) from column ``x_edge`` to the end.
    The right view is the left one forward-warped with a z-buffer; right pixels nobody sees get fresh features.
    Returns left and right features, the true left disparity and the left pixels without a right match."""
    rng = np.random.default_rng(seed)
    disp = np.full((h, w), d_bg, dtype=np.int64)
    disp[:, x_edge:] = d_fg
    fl = _unit(rng.standard_normal((channels, h, w)))
    fr = _unit(rng.standard_normal((channels, h, w)))
    owner = np.full((h, w), -1)
    for y in range(h):
        for x in range(w):  # nearer (larger d) wins
            xr = x - disp[y, x]
            if xr >= 0 and (owner[y, xr] < 0 or disp[y, owner[y, xr]] < disp[y, x]):
                owner[y, xr] = x
                fr[:, y, xr] = fl[:, y, x]
    occluded = np.ones((h, w), dtype=bool)
    for y in range(h):
        for xr in range(w):
            if owner[y, xr] >= 0:
                occluded[y, owner[y, xr]] = False
    if noise:
        fl = _unit(fl + noise * rng.standard_normal(fl.shape))
        fr = _unit(fr + noise * rng.standard_normal(fr.shape))
    return fl, fr, disp.astype(np.float32), occluded


def _reference_sgm(cost: np.ndarray, ref: np.ndarray, other: np.ndarray, p: SGMParams, s: int) -> np.ndarray:
    """The path recurrence written directly in numpy (float64), one path step at a time."""
    nd, h, w = cost.shape
    c = cost.astype(np.float64).copy()
    x = np.arange(w)[None, None, :] + s * np.arange(nd)[:, None, None]
    c[np.broadcast_to((x < 0) | (x >= w), c.shape)] = OUT_OF_IMAGE  # by position, whatever the volume holds
    lo_ref, lo_oth = low_gradient_masks(ref, p.D), low_gradient_masks(other, p.D)
    total = np.zeros_like(c)
    for k, (dy, dx) in enumerate([(0, 1), (0, -1), (1, 0), (-1, 0)]):
        L = np.zeros_like(c)
        n = w if dx else h
        order = range(n) if (dx or dy) > 0 else range(n - 1, -1, -1)
        for step, i in enumerate(order):
            cur = (slice(None), slice(None), i) if dx else (slice(None), i, slice(None))
            if step == 0:
                L[cur] = c[cur]
                continue
            prev = L[(slice(None), slice(None), i - dx) if dx else (slice(None), i - dy, slice(None))]
            ys, xs = (np.arange(h), np.full(h, i)) if dx else (np.full(w, i), np.arange(w))
            xm = xs[None, :] + s * np.arange(nd)[:, None]
            lo2 = np.where((xm >= 0) & (xm < w), lo_oth[k, ys[None, :], np.clip(xm, 0, w - 1)], 0)
            count = (lo_ref[k, ys, xs][None, :] + lo2).astype(int)
            p1 = np.choose(count, [p.P1 / p.Q2, p.P1 / p.Q1, p.P1]) / (p.V if dy else 1.0)
            p2 = np.choose(count, [p.P2 / p.Q2, p.P2 / p.Q1, p.P2])
            m = prev.min(0)
            up = np.vstack([np.full((1, prev.shape[1]), np.inf), prev[:-1]])
            down = np.vstack([prev[1:], np.full((1, prev.shape[1]), np.inf)])
            L[cur] = c[cur] + np.minimum.reduce([prev, up + p1, down + p1, m + p2]) - m
        total += L
    return total / 4


# --------------------------------------------------------------------------------------------------- SGM


@pytest.mark.parametrize("reference", ["left", "right"])
def test_sgm_matches_the_recurrence_written_in_numpy(reference: str) -> None:
    rng = np.random.default_rng(1)
    nd, h, w = 7, 6, 40
    cost = (2 * rng.random((nd, h, w))).astype(np.float32)
    left = rng.standard_normal((h, w)).astype(np.float32) * 0.05  # about half the gradients below D = 0.08
    right = rng.standard_normal((h, w)).astype(np.float32) * 0.05
    p = SGM_PRESETS["kitti2015"]
    got = sgm(cost, left, right, p, reference)
    ref, other, s = (left, right, -1) if reference == "left" else (right, left, 1)
    want = _reference_sgm(cost, ref, other, p, s)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)


def test_sgm_reads_the_right_volume_through_the_left_one() -> None:
    rng = np.random.default_rng(2)
    cost = rng.random((9, 5, 30), dtype=np.float32)
    left, right = rng.standard_normal((2, 5, 30)).astype(np.float32)
    p = SGM_PRESETS["middlebury"]
    direct = sgm(right_volume(cost), left, right, p, "right")
    derived, disp = aggregate(cost, right, left, p, "right", derived_right=True)
    np.testing.assert_array_equal(derived.transpose(2, 0, 1), direct)
    np.testing.assert_array_equal(disp, np.argmin(direct, axis=0))
    _, disp_only = aggregate(cost, right, left, p, "right", derived_right=True, keep_volume=False)
    np.testing.assert_array_equal(disp_only, disp)


def test_sgm_lowers_the_error_of_a_noisy_volume() -> None:
    fl, fr, truth, occluded = _scene(noise=0.3, seed=3)
    cost = cost_volume(fl, fr, 24)
    flat = np.zeros(truth.shape, dtype=np.float32)  # textureless images: full penalties everywhere
    valid = ~occluded
    wta_err = np.mean(winner_take_all(cost)[valid] != truth[valid])
    sgm_err = np.mean(np.argmin(sgm(cost, flat, flat, SGM_PRESETS["kitti2015"]), axis=0)[valid] != truth[valid])
    assert wta_err > 0.3  # the volume is noisy enough to matter
    assert sgm_err < wta_err / 3


def test_sgm_never_picks_a_disparity_outside_the_image() -> None:
    rng = np.random.default_rng(4)
    cost = rng.random((20, 4, 30), dtype=np.float32)
    cost[:, :, :] = np.where(np.arange(20)[:, None, None] > np.arange(30)[None, None, :], 0.0, cost)  # tempting
    disp = np.argmin(sgm(cost, *np.zeros((2, 4, 30), dtype=np.float32), SGM_PRESETS["kitti2012"]), axis=0)
    assert np.all(disp <= np.arange(30)[None, :])


def test_sgm_parameters_presets_and_overrides() -> None:
    assert SGM_PRESETS["kitti2012"] == SGMParams(4, 222.9, 3, 7.5, 1.5, 0.02)
    assert preset_spec("kitti2015", {"P2": 18.38}).sgm.P2 == 18.38
    with pytest.raises(UsageError, match="P3"):
        preset_spec("kitti2015", {"P3": 1.0})
    with pytest.raises(UsageError, match="P2 >= P1"):
        preset_spec("kitti2015", {"P2": 1.0})
    with pytest.raises(UsageError, match="unknown preset"):
        preset_spec("kitti2019")
    penalties = SGMParams(4, 40, 2, 8, 2, 0.1).penalties()
    np.testing.assert_allclose(penalties[0], [[0.5, 2, 4], [5, 20, 40]])  # horizontal: P1/Q2, P1/Q1, P1; P2 ...
    np.testing.assert_allclose(penalties[1, 0], [0.25, 1, 2])  # vertical P1 divided by V


# ----------------------------------------------------------------------------------- left-right check, fill


def test_lr_check_marks_the_occluded_band_and_nothing_else() -> None:
    fl, fr, truth, occluded = _scene()  # background 3, foreground 11 from column 36
    cost = cost_volume(fl, fr, 24)
    dl, dr = winner_take_all(cost), winner_take_all(right_volume(cost))
    assert np.array_equal(dl[~occluded], truth[~occluded])  # clean volume: exact where a match exists
    assert np.array_equal(np.nonzero(occluded[0])[0], [0, 1, 2, *range(28, 36)])  # left border, band 28..35
    labels = left_right_check(dl, dr, 1.1, 24)
    assert np.all(labels[~occluded] == MATCH)
    # No right pixel maps onto the band, but with the 1-pixel tolerance its two ends are reachable from the
    # right pixels next to it (24 + 3 + 1 = 28, 25 + 11 - 1 = 35): mismatches there, unless the random
    # disparity of an occluded pixel happens to be consistent; occlusions inside.
    assert np.all(labels[:, 29:35] == OCCLUSION) and np.all(labels[:, :2] == OCCLUSION)
    ends = labels[:, [2, 28, 35]]
    assert np.all(ends != OCCLUSION) and np.mean(ends == MISMATCH) > 0.8


def test_lr_check_rule_on_a_hand_made_row() -> None:
    dl = np.array([[0, 1, 1, 5, 2, 0]], dtype=np.float32)
    dr = np.array([[0, 9, 1, 9, 9, 2]], dtype=np.float32)
    # x=0, 1, 4: |dL - dR(x - dL)| <= 1 -> match. x=2 (dR(1) = 9) and x=3 (x - 5 < 0) fail, but d'=0 resp. 1 would
    # be consistent (dR(2) = 1) -> mismatch. x=5: no d' in 0..5 has |d' - dR(5 - d')| < 1.1 -> occlusion.
    labels = left_right_check(dl, dr, 1.1)
    assert labels.tolist() == [[MATCH, MATCH, MISMATCH, MISMATCH, MATCH, OCCLUSION]]


def test_fill_makes_the_map_dense_with_the_background_in_the_occluded_band() -> None:
    fl, fr, _truth, _occluded = _scene()
    cost = cost_volume(fl, fr, 24)
    dl = winner_take_all(cost)
    labels = left_right_check(dl, winner_take_all(right_volume(cost)), 1.1, 24)
    filled = fill_invalid(dl, labels)
    assert np.all(np.isfinite(filled))
    assert np.all(filled[:, 29:35] == 3)  # the occluded band takes the background, from its left
    first_match = np.argmax(labels == MATCH, axis=1)  # left border: nothing on the left, so the nearest on the right
    assert np.array_equal(filled[:, :2], np.repeat(dl[np.arange(dl.shape[0]), first_match][:, None], 2, axis=1))
    assert np.all((filled[:, [28, 35]] >= 3) & (filled[:, [28, 35]] <= 11))  # mismatches: median of neighbours
    assert np.array_equal(filled[labels == MATCH], dl[labels == MATCH])


def _walk_median(disp: np.ndarray, mismatch: np.ndarray, y: int, x: int) -> float:
    """The original's rule for one pixel, step by step: in each of 16 directions (unit steps, or a half step on
    one axis rounded half up) go to the first pixel that is not a mismatch; the upper median of what was found."""
    h, w = disp.shape
    found = []
    for dx, dy in [(0, 1), (-0.5, 1), (-1, 1), (-1, 0.5), (-1, 0), (-1, -0.5), (-1, -1), (-0.5, -1), (0, -1),
                   (0.5, -1), (1, -1), (1, -0.5), (1, 0), (1, 0.5), (1, 1), (0.5, 1)]:
        k = 0
        while True:
            xx, yy = x + int(np.floor(k * dx + 0.5)), y + int(np.floor(k * dy + 0.5))
            if not (0 <= xx < w and 0 <= yy < h):
                break
            if not mismatch[yy, xx]:
                found.append(disp[yy, xx])
                break
            k += 1
    return sorted(found)[len(found) // 2]


def test_fill_mismatch_takes_the_median_of_sixteen_walks() -> None:
    rng = np.random.default_rng(8)
    disp = rng.integers(0, 40, (15, 17)).astype(np.float32)
    labels = np.full(disp.shape, MATCH, dtype=np.uint8)
    labels[rng.random(disp.shape) < 0.45] = MISMATCH
    labels[4:11, 5:12] = MISMATCH  # and a block, so that walks are long and leave the image
    out = fill_invalid(disp, labels)
    mismatch = labels == MISMATCH
    want = disp.copy()
    for y, x in zip(*np.nonzero(mismatch)):
        want[y, x] = _walk_median(disp, mismatch, y, x)
    np.testing.assert_array_equal(out, want)


# ----------------------------------------------------------------------------------- subpixel, median, bilateral


def test_subpixel_lowers_the_error_on_a_sloped_disparity() -> None:
    nd, h, w = 32, 4, 80
    truth = np.broadcast_to(np.linspace(6.0, 20.0, w, dtype=np.float32), (h, w))
    d = np.arange(nd, dtype=np.float32)[:, None, None]
    cost = 0.01 * (d - truth[None]) ** 2  # a parabola around the true, fractional disparity
    disp = winner_take_all(cost)
    refined = subpixel(disp, cost)
    inside = np.arange(w) >= disp[0] + 1  # where the cell at d + 1 exists in the right image
    err_int, err_sub = np.abs(disp - truth)[:, inside].mean(), np.abs(refined - truth)[:, inside].mean()
    assert err_sub < 1e-3 and err_int > 0.2
    assert np.array_equal(refined[:, ~inside], disp[:, ~inside])  # no fit across the image border
    flat = np.ones_like(cost)
    assert np.array_equal(subpixel(disp, flat), disp)  # no curvature, no move


def test_median_removes_isolated_outliers_and_keeps_nan() -> None:
    disp = np.full((20, 30), 7.0, dtype=np.float32)
    disp[:, 15:] = 12.0
    noisy = disp.copy()
    noisy[[3, 10, 17], [4, 20, 27]] = [60.0, 0.0, 99.0]
    noisy[8, 8] = np.nan
    out = median5(noisy)
    assert np.isnan(out[8, 8])
    ok = np.isfinite(out)
    assert np.array_equal(out[ok], disp[ok])


def test_median_of_an_even_count_takes_the_upper_middle_value() -> None:
    disp = np.array([[1, 2, 3, 4, 5, 6]], dtype=np.float32)  # corner: the 3 x 1 window holds 1, 2, 3
    out = median5(disp)
    assert out[0, 0] == 2 and out[0, 1] == 3  # 1,2,3 -> 2; 1,2,3,4 -> upper middle 3


def test_bilateral_preserves_an_edge_and_smooths_each_side() -> None:
    rng = np.random.default_rng(5)
    truth = np.full((30, 40), 10.0, dtype=np.float32)
    truth[:, 20:] = 30.0
    noisy = truth + rng.uniform(-0.5, 0.5, truth.shape).astype(np.float32)
    out = bilateral(noisy, None, sigma=6.0, threshold=2.0)
    assert np.abs(out - truth).max() < 0.5  # no blending across the 20-pixel step
    assert np.std(out[:, :15] - truth[:, :15]) < np.std(noisy[:, :15] - truth[:, :15]) / 3
    blurred = bilateral(noisy, None, sigma=6.0, threshold=100.0)  # no gate: a Gaussian blur crosses the edge
    assert np.abs(blurred[:, 18:22] - truth[:, 18:22]).max() > 5


def test_bilateral_can_gate_on_an_intensity_image() -> None:
    disp = np.full((10, 20), 5.0, dtype=np.float32)
    disp[:, 10:] = 6.0
    gray = np.zeros((10, 20), dtype=np.float32)
    gray[:, 10:] = 100.0
    out = bilateral(disp, gray, sigma=3.0, threshold=5.0)
    np.testing.assert_allclose(out, disp, rtol=1e-6)  # the intensity edge keeps the sides apart


# ----------------------------------------------------------------------------------------------- pipeline


def test_all_stages_off_is_winner_take_all() -> None:
    rng = np.random.default_rng(6)
    cost = rng.random((12, 10, 30), dtype=np.float32)
    cost[3, 4, 7] = cost[5, 4, 7] = -1.0  # a tie: the smaller disparity wins, as with numpy
    gray = rng.random((10, 30), dtype=np.float32)
    disp, timings = postprocess(cost, gray, gray, MatchConfig(max_disp=12, sgm_preset="kitti2015"))
    assert disp.dtype == np.float32
    np.testing.assert_array_equal(disp, np.argmin(cost, axis=0).astype(np.float32))
    assert set(timings) == {"wta"}


def test_full_pipeline_is_dense_and_beats_winner_take_all() -> None:
    fl, fr, truth, _occluded = _scene(noise=0.3, seed=7)
    cost = cost_volume(fl, fr, 24)
    gray = np.zeros(truth.shape, dtype=np.float32)
    full = MatchConfig.preset("full", 24, sgm_preset="kitti2015")
    disp, timings = postprocess(cost, gray, gray, full)
    assert disp.shape == truth.shape and np.all(np.isfinite(disp))
    assert set(timings) == {"sgm", "lr_check", "subpixel", "median", "bilateral"}
    bad = lambda d: np.mean(np.abs(d - truth) > 1.0)
    assert bad(disp) < bad(winner_take_all(cost)) / 3
    only_sgm, _ = postprocess(cost, gray, gray, MatchConfig(max_disp=24, sgm=True, sgm_preset="kitti2015"))
    assert np.array_equal(only_sgm, np.argmin(sgm(cost, gray, gray, SGM_PRESETS["kitti2015"]), axis=0))


def test_right_volume_matches_a_direct_computation() -> None:
    fl, fr, _, _ = _scene(h=6, w=30)
    cost_left = cost_volume(fl, fr, 10)
    direct = cost_volume(fr[:, :, ::-1], fl[:, :, ::-1], 10)[:, :, ::-1]  # right reference: x + d, via mirroring
    np.testing.assert_allclose(right_volume(cost_left), direct, atol=1e-6)
    assert np.all(right_volume(cost_left)[5, :, -5:] == INVALID_COST)


def test_right_winner_take_all_reads_the_left_volume_through_a_shift() -> None:
    fl, fr, _, _ = _scene(h=6, w=40, seed=9)
    cost = cost_volume(fl, fr, 16)
    np.testing.assert_array_equal(winner_take_all(cost, derived_right=True), winner_take_all(right_volume(cost)))


def test_sgm_reads_a_uint16_volume_as_its_costs() -> None:
    from stereodeploy.engine.matching import dequantise, row_major_volume

    fl, fr, truth, _ = _scene(noise=0.3, seed=12)
    q = cost_volume(fl, fr, 24, out=row_major_volume(24, *truth.shape, np.uint16))
    rng = np.random.default_rng(13)
    left, right = (rng.standard_normal(truth.shape).astype(np.float32) * 0.05 for _ in range(2))
    full = MatchConfig.preset("full", 24, sgm_preset="kitti2015")
    got, _ = postprocess(q, left, right, full)
    want, _ = postprocess(dequantise(q), left, right, full)
    np.testing.assert_allclose(got, want, atol=1e-4)
    check_only = MatchConfig(max_disp=24, lr_check=True)
    wta, _ = postprocess(q, left, right, check_only)  # no SGM: float
    np.testing.assert_array_equal(wta, postprocess(dequantise(q), left, right, check_only)[0])


def test_every_stage_takes_its_values_from_the_config_spec() -> None:
    """Issue 18: no stage falls back to a value of its own (the bilateral stage used to take Middlebury's blur for
    any custom SGM setting): with a preset, and with overrides, each stage equals the filter called with the
    spec's values."""
    fl, fr, _truth, _ = _scene(noise=0.3, seed=14)
    cost = cost_volume(fl, fr, 24)
    gray = np.zeros(cost.shape[1:], dtype=np.float32)
    wta = winner_take_all(cost)
    for preset, overrides in (("kitti2015", {}), ("middlebury", {"P1": 1.0, "blur_sigma": 1.5, "blur_t": 3.0}),
                              ("kitti2012", {"lr_threshold": 2.1})):
        cfg = MatchConfig(max_disp=24, bilateral=True, sgm_preset=preset, overrides=overrides)
        spec = preset_spec(preset, overrides)
        got, _ = postprocess(cost, gray, gray, cfg)
        np.testing.assert_array_equal(got, bilateral(wta, None, spec.blur_sigma, spec.blur_t))
        cfg = MatchConfig(max_disp=24, lr_check=True, sgm_preset=preset, overrides=overrides)
        got, _ = postprocess(cost, gray, gray, cfg)
        labels = left_right_check(wta, winner_take_all(cost, derived_right=True), spec.lr_threshold, 24)
        np.testing.assert_array_equal(got, fill_invalid(wta, labels))
    blurs = {cfg.spec.blur_sigma for cfg in (MatchConfig(sgm_preset="kitti2015"), MatchConfig(sgm_preset="middlebury"))}
    assert blurs == {4.64, 6.0}
