"""Metric functions of stereodeploy.study.evaluate on arrays small enough to check by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stereodeploy.data.datasets import StereoSample
from stereodeploy.errors import UsageError, UserError
from stereodeploy.study.evaluate import average_rate, bad_pixels, density, error_rate, ground_truth_kind, image_metrics

NAN = np.nan

# Ground truth with one unknown pixel, and a prediction whose absolute errors are, row by row:
#   0, 3, (no gt) / 3, 4, (prediction missing)
GT = np.array([[1.0, 2.0, NAN], [10.0, 100.0, 4.0]], dtype=np.float32)
PRED = np.array([[1.0, 5.0, 7.0], [13.0, 104.0, NAN]], dtype=np.float32)


def test_study_rule_counts_errors_of_exactly_three_pixels() -> None:
    # >= 3: the errors 3, 3, 4 and the missing prediction are wrong; 4 of the 5 known pixels
    expected = np.array([[False, True, False], [True, True, True]])
    np.testing.assert_array_equal(bad_pixels(PRED, GT, "study"), expected)
    assert error_rate(PRED, GT, "study") == pytest.approx(80.0)


def test_kitti_rule_is_strictly_greater_than_three() -> None:
    # > 3: only the error 4 and the missing prediction
    expected = np.array([[False, False, False], [False, True, True]])
    np.testing.assert_array_equal(bad_pixels(PRED, GT, "kitti"), expected)
    assert error_rate(PRED, GT, "kitti") == pytest.approx(40.0)


def test_d1_rule_also_needs_five_percent_of_the_true_disparity() -> None:
    # the error 4 at gt 100 is under 5% (5 px): correct under D1; the missing prediction stays wrong
    expected = np.array([[False, False, False], [False, False, True]])
    np.testing.assert_array_equal(bad_pixels(PRED, GT, "d1"), expected)
    assert error_rate(PRED, GT, "d1") == pytest.approx(20.0)
    # an error of 6 at gt 100 is above both 3 px and 5 px: wrong
    assert error_rate(np.array([106.0]), np.array([100.0]), "d1") == 100.0


def test_infinite_prediction_is_an_error_and_unknown_gt_is_ignored() -> None:
    pred = np.array([np.inf, -np.inf, 2.0, 50.0])
    gt = np.array([1.0, 1.0, 2.0, np.inf])  # the last pixel has no ground truth (inf as well as NaN)
    assert error_rate(pred, gt, "study") == pytest.approx(100 * 2 / 3)
    assert error_rate(pred, gt, "kitti") == pytest.approx(100 * 2 / 3)


def test_threshold_and_valid_mask() -> None:
    assert error_rate(PRED, GT, "study", threshold=3.5) == pytest.approx(40.0)  # errors 4 and missing
    first_column = np.zeros(GT.shape, dtype=bool)
    first_column[:, 0] = True
    assert error_rate(PRED, GT, "study", valid=first_column) == pytest.approx(50.0)  # errors 0 and 3
    assert error_rate(PRED, GT, "kitti", valid=first_column) == 0.0


def test_rate_without_ground_truth_is_nan_not_zero() -> None:
    assert math.isnan(error_rate(np.ones((2, 2)), np.full((2, 2), NAN)))


def test_density_is_the_share_of_finite_predictions() -> None:
    assert density(PRED) == pytest.approx(100 * 5 / 6)
    assert density(np.array([np.inf, 1.0, NAN, 2.0])) == 50.0
    assert density(PRED, valid=np.array([[False, False, False], [True, True, True]])) == pytest.approx(100 * 2 / 3)
    assert math.isnan(density(np.zeros((0, 3))))


def test_average_is_the_mean_of_per_image_rates() -> None:
    # image A: 1 known pixel, wrong (100%); image B: 3 known pixels, right (0%)
    rate_a = error_rate(np.array([9.0]), np.array([1.0]))
    rate_b = error_rate(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0]))
    assert average_rate([rate_a, rate_b]) == 50.0  # equation 3; pooling the pixels would give 25
    assert average_rate([10.0, None, NAN, 20.0]) == 15.0  # undefined rates left out
    assert math.isnan(average_rate([]))


def test_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(UserError, match=r"prediction is 2x3 but ground truth is 3x2"):
        error_rate(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(UserError, match=r"valid mask is 2x2 but ground truth is 2x3"):
        bad_pixels(PRED, GT, valid=np.ones((2, 2), dtype=bool))
    with pytest.raises(UserError, match=r"valid mask is 3 but prediction is 2x3"):
        density(PRED, valid=np.ones(3, dtype=bool))


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(UserError, match="must be boolean"):
        error_rate(PRED, GT, valid=np.ones(GT.shape))
    with pytest.raises(UsageError, match="unknown error rule 'd2'"):
        error_rate(PRED, GT, "d2")
    with pytest.raises(UsageError, match="must be positive"):
        error_rate(PRED, GT, threshold=0)


def test_image_metrics_reports_every_rule_on_noc_and_occ() -> None:
    occ = GT.copy()
    noc = GT.copy()
    noc[1, 1] = NAN  # the pixel with error 4 is occluded
    sample = StereoSample("s", np.zeros((2, 3)), np.zeros((2, 3)), disp=noc, disp_occ=occ, disp_noc=noc)
    m = image_metrics(PRED, sample)
    assert ground_truth_kind(sample) == "noc"
    assert m["error_rate"] == pytest.approx(75.0)  # errors 0, 3, 3, missing on the 4 noc pixels
    assert m["study_noc"] == pytest.approx(75.0)
    assert m["kitti_noc"] == pytest.approx(25.0)
    assert m["d1_noc"] == pytest.approx(25.0)
    assert (m["study_occ"], m["kitti_occ"], m["d1_occ"]) == pytest.approx((80.0, 40.0, 20.0))
    assert m["density"] == pytest.approx(100 * 5 / 6)

    only_occ = StereoSample("o", np.zeros((2, 3)), np.zeros((2, 3)), disp=occ, disp_occ=occ)
    m = image_metrics(PRED, only_occ)
    assert ground_truth_kind(only_occ) == "occ"
    assert not any(k.endswith("_noc") for k in m)
    assert m["error_rate"] == pytest.approx(80.0)

    with pytest.raises(UserError, match="no ground truth"):
        image_metrics(PRED, StereoSample("x", np.zeros((2, 3)), np.zeros((2, 3))))
