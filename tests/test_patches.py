"""The patch sampler: which examples exist, where their patches come from, determinism, augmentation, and that the
disk-backed sampler keeps the examples and the statistics of the in-memory one it replaced."""

from __future__ import annotations

import numpy as np
import pytest

from stereodeploy.config import SamplerConfig
from stereodeploy.data.datasets import synthetic_pair
from stereodeploy.data.patches import PatchIndex, _draw_augmentation, _permutation, _sample_affine
from stereodeploy.data.preprocess import normalize, to_gray

H, W, D = 10, 24, 6
SMALL = SamplerConfig(pos_offset=1, neg_low=2, neg_high=3)  # reach 7: examples fit in a 10x24 frame


def coded_images() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel value y*W + x (< 256), constant disparity D: each pixel names its own position."""
    code = (np.arange(H)[:, None] * W + np.arange(W)[None, :]).astype(np.float32)
    return code, code.copy(), np.full((H, W), D, np.float32)


def decode(patch: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """Invert normalize() for the coded image: back to y*W + x."""
    return np.rint(patch * np.sqrt(raw.var() + 1e-6) + raw.mean()).astype(int)


def old_examples(disp: np.ndarray, patch: int, cfg: SamplerConfig) -> np.ndarray:
    """The in-memory index this sampler replaced: (y, x, xr) of every example, row by row (np.nonzero order)."""
    h, w = disp.shape
    r, reach = patch // 2, cfg.neg_high + patch // 2
    with np.errstate(invalid="ignore"):
        xr = np.rint(np.arange(w, dtype=np.float32)[None, :] - disp)
        ok = np.isfinite(disp) & (disp >= 0) & (xr - reach >= 0) & (xr + reach < w)
    ok[:r], ok[h - r:], ok[:, :r], ok[:, w - r:] = False, False, False, False
    ys, xs = np.nonzero(ok)
    return np.stack([ys, xs, xr[ys, xs].astype(np.int64)], axis=1)


def kitti_like_frames(n: int = 4) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, str]]:
    """Textured pairs of two sizes with sparse (LiDAR-like), fractional ground truth."""
    rng = np.random.default_rng(0)
    frames = []
    for i in range(n):
        s = synthetic_pair(height=40 + 8 * (i % 2), width=90 + 20 * (i % 2), max_disp=14, seed=i, slope=0.02)
        disp = np.where(rng.random(s.disp.shape) < 0.4, s.disp + rng.uniform(-0.5, 0.5, s.disp.shape), np.nan)
        frames.append((to_gray(s.left), to_gray(s.right), disp.astype(np.float32), f"f{i}"))
    return frames


def test_normalize_gives_zero_mean_unit_variance():
    img = np.random.default_rng(0).uniform(0, 255, (30, 50)).astype(np.float32)
    n = normalize(img)
    assert n.dtype == np.float32
    assert abs(n.mean()) < 1e-5 and abs(n.std() - 1) < 1e-4
    assert np.all(np.isfinite(normalize(np.full((5, 5), 7.0))))  # a flat image does not divide by zero


def test_index_holds_exactly_the_pixels_whose_patches_fit():
    left, right, disp = coded_images()
    disp[4, 15] = np.nan  # unknown ground truth is never an example
    index = PatchIndex(9, SMALL)
    n = index.add(left, right, disp)
    r, reach = 4, SMALL.neg_high + 4
    cols = [x for x in range(r, W - r) if x - D - reach >= 0 and x - D + reach < W]
    expected = (H - 2 * r) * len(cols) - (1 if 15 in cols else 0)
    assert n == len(index) == expected > 0


def test_examples_are_numbered_as_the_in_memory_index_listed_them():
    frames = kitti_like_frames()
    index = PatchIndex(9, SamplerConfig())
    index.extend(frames)
    old = [np.column_stack([np.full(len(e), i), e]) for i, (_, _, d, _) in enumerate(frames)
           for e in [old_examples(d, 9, SamplerConfig())]]
    old = np.concatenate(old)
    assert len(index) == len(old) > 1000
    f, y, x, xr = index.locate(np.arange(len(index)))
    np.testing.assert_array_equal(np.stack([f, y, x, xr], axis=1), old)
    with pytest.raises(IndexError):
        index.locate(np.array([len(index)]))


def test_batch_patches_come_from_the_right_places_and_are_normalised_exactly():
    left, right, disp = coded_images()
    index = PatchIndex(9, SamplerConfig(pos_offset=1, neg_low=2, neg_high=3, seed=3))
    index.add(left, right, disp)
    batch = index.gather(np.arange(len(index)), epoch=0, batch=0)
    assert batch.left.shape == (len(index), 1, 9, 9) and batch.left.dtype == np.float32
    lc = decode(batch.left[:, 0, 4, 4], left)
    pc = decode(batch.pos[:, 0, 4, 4], right)
    nc = decode(batch.neg[:, 0, 4, 4], right)
    assert np.all(lc // W == pc // W) and np.all(lc // W == nc // W)  # same row
    o_pos = pc % W - (lc % W - D)
    o_neg = nc % W - (lc % W - D)
    assert set(np.unique(o_pos)) <= {-1, 0, 1} and np.all((np.abs(o_neg) >= 2) & (np.abs(o_neg) <= 3))
    full = decode(batch.left[:, 0], left)
    assert np.all(full[:, 0, 0] == lc - 4 * W - 4) and np.all(full[:, 8, 8] == lc + 4 * W + 4)
    # the uint8 cache with per-image statistics gives exactly the old normalised float32 images
    y, x = lc // W, lc % W
    ref = normalize(left)
    np.testing.assert_array_equal(batch.left[:, 0, 4, 4], ref[y, x])


def test_offsets_and_frame_coverage_keep_the_old_samplers_statistics():
    frames = kitti_like_frames()
    cfg = SamplerConfig(seed=5)
    index = PatchIndex(9, cfg)
    index.extend(frames)
    n = len(index)
    counts = np.array([len(old_examples(d, 9, cfg)) for _, _, d, _ in frames])
    share = counts / counts.sum()
    # coverage: the first 2,000 examples of an epoch spread over the frames as a uniform draw does
    first = index.epoch_examples(0, 0, 2000)
    f, _, _, _ = index.locate(first)
    got = np.bincount(f, minlength=len(frames))
    chi2 = float(np.sum((got - 2000 * share) ** 2 / (2000 * share)))
    assert chi2 < 16.3  # 99.9 % quantile of chi-square with 3 degrees of freedom
    old = np.random.default_rng([cfg.seed, 0]).permutation(n)[:2000]  # what the old sampler drew
    old_f = np.searchsorted(np.cumsum(counts), old, side="right")
    assert np.abs(np.bincount(old_f, minlength=len(frames)) / 2000 - got / 2000).max() < 0.05
    # offsets: the very same draws as the old sampler (positive uniform in -1..1, negative 4..10 either side)
    d = index.draw(first[:1000], epoch=0, batch=0)
    assert set(np.unique(d.pos_offset)) == {-1, 0, 1}
    assert set(np.unique(np.abs(d.neg_offset))) == set(range(4, 11))
    assert abs(np.mean(d.neg_offset > 0) - 0.5) < 0.06 and abs(np.mean(d.pos_offset == 0) - 1 / 3) < 0.06
    # positions are spread over each frame, not clustered: mean row and column of the draws near the index's
    f, y, x, _ = index.locate(first)
    _, all_y, all_x, _ = index.locate(np.arange(n))
    for a, b in ((y, all_y), (x, all_x)):
        assert abs(a.mean() - b.mean()) < 4 * b.std() / np.sqrt(len(a))


def test_epoch_order_is_a_permutation_and_deterministic():
    for n in (1, 2, 3, 7, 64, 1000, 4097):
        perm = _permutation(np.arange(n, dtype=np.uint64), n, seed=1, epoch=2)
        assert sorted(perm.tolist()) == list(range(n)), n
    perm = _permutation(np.arange(1000, dtype=np.uint64), 1000, 1, 2)
    np.testing.assert_array_equal(perm[300:310], _permutation(np.arange(300, 310, dtype=np.uint64), 1000, 1, 2))
    assert not np.array_equal(perm, _permutation(np.arange(1000, dtype=np.uint64), 1000, 1, 3))
    assert not np.array_equal(perm, _permutation(np.arange(1000, dtype=np.uint64), 1000, 2, 2))
    # positions near the end of a huge epoch cost no more than those at the start
    big = _permutation(np.arange(2**40 - 5, 2**40, dtype=np.uint64), 2**40, 0, 0)
    assert np.all(big < 2**40) and len(set(big.tolist())) == 5
    with pytest.raises(ValueError):
        _permutation(np.arange(1, dtype=np.uint64), 2**62, 0, 0)


def test_batches_are_deterministic_and_slices_are_parts_of_the_same_batch():
    frames = kitti_like_frames(2)
    a, b = PatchIndex(9, SamplerConfig(seed=1)), PatchIndex(9, SamplerConfig(seed=1))
    for idx in (a, b):
        idx.extend(frames)
    ba, bb = list(a.batches(2, 16, max_examples=160)), list(b.batches(2, 16, max_examples=160))
    assert len(ba) == 10
    for x, y in zip(ba, bb):
        np.testing.assert_array_equal(x.left, y.left)
        np.testing.assert_array_equal(x.neg, y.neg)
    rest = list(a.batches(2, 16, max_examples=160, start=3))  # resuming mid-epoch: exactly the remaining batches
    np.testing.assert_array_equal(rest[0].pos, ba[3].pos)
    assert not np.array_equal(a.epoch_examples(0, 0, 50), a.epoch_examples(1, 0, 50))
    for parts in ([(0, 5), (5, 11), (11, 16)], [(0, 8), (8, 16)]):  # uneven and even slices
        pieces = [a.batch(2, 4, 16, part) for part in parts]
        for name in ("left", "pos", "neg"):
            np.testing.assert_array_equal(np.concatenate([getattr(p, name) for p in pieces]), getattr(ba[4], name))


def test_batches_larger_than_a_gather_chunk_are_gathered_whole():
    index = PatchIndex(9, SamplerConfig(seed=4))
    index.extend(kitti_like_frames(2))
    whole = index.batch(1, 2, 300)  # three chunks of at most 128 examples
    halves = [index.batch(1, 2, 300, part) for part in ((0, 150), (150, 300))]
    np.testing.assert_array_equal(np.concatenate([h.pos for h in halves]), whole.pos)
    f, y, x, _ = index.locate(index.epoch_examples(1, 600, 900))
    ref = normalize(kitti_like_frames(2)[int(f[200])][0])
    assert whole.left[200, 0, 4, 4] == pytest.approx(ref[y[200], x[200]], abs=0.02)  # uint8 rounding at most


def test_sliced_augmented_batches_match_the_whole_batch():
    frames = kitti_like_frames(2)
    index = PatchIndex(9, SamplerConfig(augment=True, seed=2))
    index.extend(frames)
    whole = index.batch(0, 1, 12)
    halves = [index.batch(0, 1, 12, part) for part in ((0, 7), (7, 12))]
    np.testing.assert_array_equal(np.concatenate([h.neg for h in halves]), whole.neg)


def test_identity_augmentation_equals_plain_gather():
    left, right, disp = coded_images()
    index = PatchIndex(9, SMALL)
    index.add(left, right, disp)
    ex = np.arange(len(index))
    plain = index.gather(ex)
    m = index._arrays()
    f, y, x, _ = index.locate(ex)
    identity = {"angle": np.zeros(len(ex)), "scale": np.ones(len(ex)), "shear": np.zeros(len(ex)),
                "brightness": np.zeros(len(ex)), "contrast": np.ones(len(ex)), "right_brightness": np.zeros(len(ex))}
    got = _sample_affine(index._pixels.array(), m["pixel_start"][f], (m["left_mean"][f], m["left_scale"][f]),
                         m["width"][f], y, x, 9, identity, right=False)
    np.testing.assert_allclose(got, plain.left, atol=1e-5)


def test_augmented_batches_stay_in_range_and_change_patches():
    left, right, disp = coded_images()
    index = PatchIndex(9, SamplerConfig(pos_offset=1, neg_low=2, neg_high=3, augment=True))
    index.add(left, right, disp)
    batch = index.gather(np.arange(len(index)))
    assert all(np.all(np.isfinite(p)) for p in (batch.left, batch.pos, batch.neg))
    plain = PatchIndex(9, SMALL)
    plain.add(left, right, disp)
    assert not np.allclose(batch.left, plain.gather(np.arange(len(plain))).left)
    aug = _draw_augmentation(np.random.default_rng(0), 1000)
    assert np.all(np.abs(np.rad2deg(aug["angle"])) <= 7) and np.all((aug["scale"] >= 0.9) & (aug["scale"] <= 1))
    assert np.all((aug["contrast"] >= 1 / 1.3 - 1e-9) & (aug["contrast"] <= 1.3 + 1e-9))


def test_bad_configurations_and_narrowing_are_refused():
    with pytest.raises(ValueError):
        PatchIndex(8)
    with pytest.raises(ValueError):
        PatchIndex(9, SamplerConfig(pos_offset=5, neg_low=4))
    with pytest.raises(ValueError, match="empty"):
        PatchIndex(9).gather(np.arange(1))
    index = PatchIndex(9, SMALL)
    wide = np.zeros((1, 70000), np.float32)
    with pytest.raises(ValueError, match="wide"):
        index.add(wide, wide, wide)  # x - xr would not fit the uint16 cache
    img, _, disp = coded_images()
    with pytest.raises(ValueError, match="0..255"):
        index.add(img * 2, img, disp)  # grey levels would not fit uint8
    assert len(index) == 0 and index.frames == 0


def test_memory_held_per_frame_is_a_small_constant(tmp_path):
    index = PatchIndex(9, SamplerConfig(), cache_dir=str(tmp_path))
    left, right, disp = coded_images()
    for i in range(50):
        index.add(left, right, disp, f"f{i}")
    assert index.nbytes == 50 * 80  # offsets and statistics only; the images and examples live on disk
    assert index.cache_bytes == 50 * (H * W * 4 + H * 4)
