"""The patch sampler: which examples exist, where their patches come from, determinism, augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from stereodeploy.config import SamplerConfig
from stereodeploy.patches import PatchIndex, _draw_augmentation, _sample_affine, normalize

H, W, D = 20, 40, 6


def coded_images() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left pixel value y*W + x, right likewise, constant disparity D: each pixel names its own position."""
    code = (np.arange(H)[:, None] * W + np.arange(W)[None, :]).astype(np.float32)
    return code, code.copy(), np.full((H, W), D, np.float32)


def decode(patch_centre: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """Invert normalize() for the coded image: back to y*W + x."""
    return np.rint(patch_centre * np.sqrt(raw.var() + 1e-6) + raw.mean()).astype(int)


def test_normalize_gives_zero_mean_unit_variance():
    img = np.random.default_rng(0).uniform(0, 255, (30, 50)).astype(np.float32)
    n = normalize(img)
    assert n.dtype == np.float32
    assert abs(n.mean()) < 1e-5 and abs(n.std() - 1) < 1e-4
    assert np.all(np.isfinite(normalize(np.full((5, 5), 7.0))))  # a flat image does not divide by zero


def test_index_holds_exactly_the_pixels_whose_patches_fit():
    left, right, disp = coded_images()
    disp[3, 10] = np.nan  # unknown ground truth is never an example
    cfg = SamplerConfig()
    index = PatchIndex(9, cfg)
    n = index.add(left, right, disp)
    r, reach = 4, cfg.neg_high + 4
    cols = [x for x in range(r, W - r) if x - D - reach >= 0 and x - D + reach < W]
    expected = (H - 2 * r) * len(cols) - (1 if 10 in cols else 0)
    assert n == len(index) == expected


def test_batch_patches_come_from_the_right_places():
    left, right, disp = coded_images()
    cfg = SamplerConfig(seed=3)
    index = PatchIndex(9, cfg)
    index.add(left, right, disp)
    batch = index.gather(np.arange(len(index)), epoch=0, batch=0)
    assert batch.left.shape == (len(index), 1, 9, 9)
    lc = decode(batch.left[:, 0, 4, 4], left)
    pc = decode(batch.pos[:, 0, 4, 4], right)
    nc = decode(batch.neg[:, 0, 4, 4], right)
    assert np.all(lc // W == pc // W) and np.all(lc // W == nc // W)  # same row
    o_pos = pc % W - (lc % W - D)
    o_neg = nc % W - (lc % W - D)
    assert set(np.unique(o_pos)) == {-1, 0, 1}
    assert np.all((np.abs(o_neg) >= 4) & (np.abs(o_neg) <= 10))
    assert (o_neg > 0).any() and (o_neg < 0).any()
    # the whole 9x9 window is the neighbourhood of the centre
    full = decode(batch.left[:, 0], left)
    assert np.all(full[:, 0, 0] == lc - 4 * W - 4) and np.all(full[:, 8, 8] == lc + 4 * W + 4)


def test_batches_are_deterministic_and_epochs_differ():
    left, right, disp = coded_images()
    a, b = PatchIndex(9, SamplerConfig(seed=1)), PatchIndex(9, SamplerConfig(seed=1))
    for idx in (a, b):
        idx.add(left, right, disp)
        idx.add(left[:, ::-1].copy(), right[:, ::-1].copy(), disp)
    ba, bb = list(a.batches(2, 16)), list(b.batches(2, 16))
    assert len(ba) == len(a) // 16
    for x, y in zip(ba, bb):
        np.testing.assert_array_equal(x.left, y.left)
        np.testing.assert_array_equal(x.neg, y.neg)
    assert not np.array_equal(a.epoch_order(0), a.epoch_order(1))
    # resuming mid-epoch yields exactly the remaining batches
    rest = list(a.batches(2, 16, start=3))
    np.testing.assert_array_equal(rest[0].pos, ba[3].pos)
    assert len(a.epoch_order(0, max_examples=10)) == 10


def test_identity_augmentation_equals_plain_gather():
    left, right, disp = coded_images()
    index = PatchIndex(9, SamplerConfig())
    index.add(left, right, disp)
    frame, y, x, xr, flat, starts, plane, widths = index._arrays()
    ex = np.arange(len(index))
    plain = index.gather(ex)
    identity = {"angle": np.zeros(len(ex)), "scale": np.ones(len(ex)), "shear": np.zeros(len(ex)),
                "brightness": np.zeros(len(ex)), "contrast": np.ones(len(ex)), "right_brightness": np.zeros(len(ex))}
    got = _sample_affine(flat, starts[frame].astype(np.int64), widths[frame], y.astype(np.int64), x.astype(np.int64),
                         9, identity, right=False)
    np.testing.assert_allclose(got, plain.left, atol=1e-5)


def test_augmented_batches_stay_in_range_and_change_patches():
    left, right, disp = coded_images()
    index = PatchIndex(9, SamplerConfig(augment=True))
    index.add(left, right, disp)
    batch = index.gather(np.arange(len(index)))
    assert all(np.all(np.isfinite(p)) for p in (batch.left, batch.pos, batch.neg))
    plain = PatchIndex(9, SamplerConfig())
    plain.add(left, right, disp)
    assert not np.allclose(batch.left, plain.gather(np.arange(len(plain))).left)
    aug = _draw_augmentation(np.random.default_rng(0), 1000)
    assert np.all(np.abs(np.rad2deg(aug["angle"])) <= 7) and np.all((aug["scale"] >= 0.9) & (aug["scale"] <= 1))
    assert np.all((aug["contrast"] >= 1 / 1.3 - 1e-9) & (aug["contrast"] <= 1.3 + 1e-9))


def test_bad_configurations_are_refused():
    with pytest.raises(ValueError):
        PatchIndex(8)
    with pytest.raises(ValueError):
        PatchIndex(9, SamplerConfig(pos_offset=5, neg_low=4))
    with pytest.raises(ValueError, match="empty"):
        PatchIndex(9).gather(np.arange(1))
