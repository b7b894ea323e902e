"""What a match returns besides disparity: the valid mask, the confidence, the searched range; and on real data,
that the valid pixels are the better ones."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from stereodeploy.config import MatchConfig
from stereodeploy.data.datasets import synthetic_pair
from stereodeploy.engine.matching import INVALID_COST
from stereodeploy.engine.postprocess import confidence_ratio, postprocess


def test_confidence_ratio_by_hand():
    # one row of three pixels, five disparities, (H, W, D); pixel x may use d = 0 .. x only
    volume = np.full((1, 3, 5), 9.0, dtype=np.float32)
    volume[0, 2] = [0.8, 0.9, 0.2, 0.0, 0.0]  # winner 2 at 0.2; its neighbour 1 is no rival, d = 3, 4 lie outside
    volume[0, 1] = [0.4, 0.3, 0.0, 0.0, 0.0]  # x = 1: d = 0, 1 are neighbours of each other: no rival
    disp = np.array([[0, 1, 2]])
    np.testing.assert_allclose(confidence_ratio(volume, disp), [[0.0, 0.0, 1 - 0.2 / 0.8]], rtol=1e-6)


def test_confidence_ratio_ignores_cells_outside_the_image_and_neighbours():
    volume = np.ones((1, 8, 6), dtype=np.float32)
    volume[0, 7] = [0.6, 0.5, 0.1, 0.15, 0.9, 0.4]  # winner 2; neighbours 1, 3 skipped; best rival d=5 at 0.4
    volume[0, 3] = [0.5, 0.9, 0.9, 0.1, 0.0, 0.0]   # x = 3: d = 4, 5 lie outside the image; rival d=0 at 0.5
    disp = np.zeros((1, 8), dtype=np.int32)
    disp[0, 7], disp[0, 3] = 2, 3
    conf = confidence_ratio(volume, disp)
    assert conf[0, 7] == pytest.approx(1 - 0.1 / 0.4)
    assert conf[0, 3] == pytest.approx(1 - 0.1 / 0.5)
    assert conf[0, 0] == 0.0 and conf[0, 1] == 0.0  # no rival at x < 2
    # a ratio: the uint16 volume gives the same confidence as its float costs
    np.testing.assert_allclose(confidence_ratio(np.rint(volume * 1000).astype(np.uint16), disp), conf, atol=1e-3)


def _step_volume(h: int = 6, w: int = 24, nd: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """A (D, H, W) volume of known winners: background disparity 2 left of x = 10, a nearer surface at 6 from
    x = 10 on, whose costs are lower. Right pixels 4..7 then see the near surface (left x 10..13) rather than the
    background (left x 6..9): those background pixels fail the left-right check."""
    gt = np.where(np.arange(w) < 10, 2, 6)[None, :].repeat(h, 0)
    d = np.arange(nd)[:, None, None]
    cost = (0.1 * np.abs(d - gt[None]) + np.where(gt == 2, 0.05, 0.0)[None]).astype(np.float32)
    cost[np.broadcast_to(d > np.arange(w)[None, None, :], cost.shape)] = INVALID_COST  # x - d < 0
    return cost, gt


def test_postprocess_reports_the_pixels_it_filled():
    cost, gt = _step_volume()
    gray = np.zeros(gt.shape, dtype=np.float32)
    details: dict[str, np.ndarray] = {}
    cfg = MatchConfig(max_disp=cost.shape[0], lr_check=True)
    disp, timings = postprocess(cost, gray, gray, cfg, details=details)
    valid, conf = details["valid"], details["confidence"]
    assert not valid[:, 6:10].any()  # occluded by the near surface
    assert valid[:, 2:6].all() and valid[:, 10:].all()
    np.testing.assert_array_equal(disp[:, 2:6], gt[:, 2:6])  # (x < 2 cannot reach disparity 2)
    np.testing.assert_array_equal(disp[:, 10:], gt[:, 10:])
    assert np.isfinite(disp).all()  # filled
    assert (conf[~valid] == 0).all() and (conf[:, 10:] > 0.5).all()
    assert "confidence" in timings
    # without the check nothing is filled: every pixel is valid, and the disparity is winner-take-all's
    details = {}
    wta, _ = postprocess(cost, gray, gray, MatchConfig(max_disp=cost.shape[0]), details=details)
    assert details["valid"].all() and (details["confidence"] >= 0).all() and (details["confidence"] <= 1).all()
    np.testing.assert_array_equal(disp[valid], wta[valid])


def test_result_is_a_frozen_record(model_file):
    from stereodeploy.engine.matcher import MatchResult, StereoMatcher

    sample = synthetic_pair(height=40, width=64, max_disp=12, seed=0)
    result = StereoMatcher.from_file(model_file, max_disp=12).match(sample.left, sample.right)
    assert isinstance(result, MatchResult) and dataclasses.is_dataclass(result)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.disparity = None  # type: ignore[misc]
    assert result.valid.all() and result.confidence is None  # winner-take-all answers everywhere, unscored
    assert (result.min_disp, result.max_disp) == (0, 12)


@pytest.mark.parametrize("postprocess_name", ["none", "full"])
def test_fill_and_confidence_options(model_file, postprocess_name):
    from stereodeploy.engine.matcher import StereoMatcher

    sample = synthetic_pair(height=48, width=96, max_disp=16, layers=2, seed=1)
    filled = StereoMatcher.from_file(model_file, max_disp=16, postprocess=postprocess_name, confidence=True)
    sparse = StereoMatcher.from_file(model_file, max_disp=16, postprocess=postprocess_name, fill=False)
    a, b = filled.match(sample.left, sample.right), sparse.match(sample.left, sample.right)
    assert a.confidence is not None and a.confidence.dtype == np.float32
    assert 0 <= a.confidence.min() and a.confidence.max() <= 1 and (a.confidence[~a.valid] == 0).all()
    np.testing.assert_array_equal(a.valid, b.valid)
    assert np.isfinite(a.disparity).all()
    np.testing.assert_array_equal(np.isfinite(b.disparity), b.valid)  # no fill: NaN exactly where not valid
    np.testing.assert_array_equal(a.disparity[a.valid], b.disparity[b.valid])
    if postprocess_name == "full":
        assert 0.5 < a.valid.mean() < 1.0  # the check rejects the occlusions beside the rectangles, not more
        assert a.timings["confidence"] > 0


def test_min_disp_shifts_the_search(model_file):
    """A pair whose every disparity is 20 to 27: a search of [16, 32) finds them, as [0, 32) does."""
    from stereodeploy.engine.matcher import StereoMatcher

    base = synthetic_pair(height=48, width=120, max_disp=8, layers=2, seed=5)
    shift = 20  # right image moved 20 columns further left: every disparity grows by 20
    right = np.empty_like(base.right)
    right[:, : -shift] = base.right[:, shift:]
    right[:, -shift:] = base.right[:, -1:]
    gt = base.disp_occ + shift
    win = np.lib.stride_tricks.sliding_window_view(np.pad(base.disp_noc, 2, constant_values=np.nan), (5, 5))
    mask = np.all(win == base.disp_noc[:, :, None, None], axis=(2, 3))  # one visible surface under the patch
    mask[:, : shift + 8 + 2] = False  # columns whose match may lie left of the right image
    assert mask.sum() > 2000
    full = StereoMatcher.from_file(model_file, max_disp=32).match(base.left, right)
    ranged = StereoMatcher.from_file(model_file, max_disp=32, min_disp=16).match(base.left, right)
    assert np.mean(full.disparity[mask] == gt[mask]) > 0.95
    assert not (StereoMatcher.from_file(model_file, max_disp=16).match(base.left, right).disparity[mask]
                == gt[mask]).any()  # a search of [0, 16) cannot find them
    assert np.mean(ranged.disparity[mask] == gt[mask]) > 0.95
    # equal up to the few pixels whose right patch the shift moves onto an image border
    assert np.mean(ranged.disparity[mask] == full.disparity[mask]) > 0.995
    assert (ranged.min_disp, ranged.max_disp) == (16, 32)
    assert ranged.disparity.min() >= 16 and ranged.disparity.max() < 32
    assert not ranged.valid[:, :16].any() and ranged.valid[:, 16:].all()
    # the same with post-processing: the answer stays in the range, the left columns are not valid
    post = StereoMatcher.from_file(model_file, max_disp=32, min_disp=16, postprocess="full").match(base.left, right)
    assert np.nanmin(post.disparity) >= 15 and np.nanmax(post.disparity) <= 32 and not post.valid[:, :16].any()


def test_min_disp_must_lie_below_max_disp(model_file):
    from stereodeploy.engine.matcher import StereoMatcher
    from stereodeploy.errors import UsageError

    with pytest.raises(UsageError, match="min disparity"):
        StereoMatcher.from_file(model_file, max_disp=16, min_disp=16)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*was trained on")  # the shipped model saw both KITTI frames; it holds all the same
def test_valid_pixels_of_the_full_pipeline_are_better_on_real_data(shared_data):
    """`evaluate` on the KITTI frames and two held-out Middlebury scenes of ../shared/data: it reports the error on the
    valid pixels and the density; the valid pixels have fewer errors than all, and the more confident half of
    them fewer than the other half."""
    from stereodeploy.data.datasets import load_dataset
    from stereodeploy.engine.matcher import StereoMatcher
    from stereodeploy.engine.shipped import default_model_path
    from stereodeploy.study.evaluate import error_rate, evaluate
    from stereodeploy.study.report import render_eval_table

    halves = []

    def confidence_halves(sample, r) -> None:
        median = np.median(r.confidence[r.valid])
        halves.append((sample.name, error_rate(r.disparity, sample.disp, valid=r.valid & (r.confidence >= median)),
                       error_rate(r.disparity, sample.disp, valid=r.valid & (r.confidence < median))))

    for folder, preset, names in (("kitti2015", "kitti2015", None), ("middlebury", "middlebury", {"Baby3", "Midd2"})):
        samples = [s for s in load_dataset(shared_data / folder) if names is None or s.name in names]
        matcher = StereoMatcher.from_file(default_model_path(), postprocess="full", sgm_preset=preset)
        result = evaluate(samples, matcher, progress=False, warmup=False, on_frame=confidence_halves)
        assert ">=3 valid" in render_eval_table(result, terminal=False)
        for image in result.images:
            assert image.metrics["error_rate_valid"] < image.error_rate, image.to_dict()
            assert 60 < image.density < 99, image.to_dict()  # the pixels not filled
    for name, sure, unsure in halves:
        assert sure < unsure, (name, sure, unsure)


def test_confidence_ratio_is_the_same_for_every_volume_layout():
    rng = np.random.default_rng(0)
    dhw = rng.random((9, 5, 20), dtype=np.float32)
    disp = rng.integers(0, 9, (5, 20)).clip(max=np.arange(20))  # d <= x
    plain = confidence_ratio(np.ascontiguousarray(dhw.transpose(1, 2, 0)), disp)  # (H, W, D) in memory
    rows = np.ascontiguousarray(dhw.transpose(1, 0, 2)).transpose(1, 0, 2)  # (H, D, W) in memory, as the matcher's
    np.testing.assert_array_equal(confidence_ratio(rows.transpose(1, 2, 0), disp), plain)
    np.testing.assert_array_equal(confidence_ratio(dhw.transpose(1, 2, 0), disp), plain)  # (D, H, W) in memory
