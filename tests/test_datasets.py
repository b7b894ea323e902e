"""Tests for stereodeploy.data.datasets: layout detection, loading, error messages, synthetic pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stereodeploy.data.datasets import (
    FORMATS,
    Frame,
    detect_format,
    detect_preset,
    list_frames,
    load_dataset,
    load_frame,
    parse_calib,
    preset_for_format,
    synthetic_pair,
)
from stereodeploy.data.io import write_kitti_disp, write_pfm
from stereodeploy.errors import UsageError, UserError

SHARED_DATA = Path(__file__).parents[1].parent / "shared" / "data"
H, W = 6, 10


def _img(path: Path, value: int, rgb: bool = True, shape: tuple[int, int] = (H, W)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full(shape + ((3,) if rgb else ()), value, dtype=np.uint8)
    Image.fromarray(arr).save(path)


def _gt(value: float) -> np.ndarray:
    disp = np.full((H, W), value, dtype=np.float32)
    disp[0, 0] = np.nan
    return disp


def _kitti(root: Path, left: str, right: str, noc: str, occ: str, rgb: bool) -> Path:
    """Frames 000000_10 (noc + occ), 000001_10 (occ only), 000002_10 (no gt) and a 000000_11 to skip."""
    train = root / "training"
    for name in ("000000_10", "000001_10", "000002_10", "000000_11"):
        _img(train / left / f"{name}.png", 10, rgb)
        _img(train / right / f"{name}.png", 20, rgb)
    (train / noc).mkdir()
    (train / occ).mkdir()
    write_kitti_disp(train / noc / "000000_10.png", _gt(2.5))
    write_kitti_disp(train / occ / "000000_10.png", _gt(3.0))
    write_kitti_disp(train / occ / "000001_10.png", _gt(4.0))
    return root


@pytest.fixture
def kitti2015(tmp_path: Path) -> Path:
    return _kitti(tmp_path / "kitti2015", "image_2", "image_3", "disp_noc_0", "disp_occ_0", rgb=True)


@pytest.fixture
def kitti2012(tmp_path: Path) -> Path:
    return _kitti(tmp_path / "kitti2012", "image_0", "image_1", "disp_noc", "disp_occ", rgb=False)


@pytest.fixture
def middlebury(tmp_path: Path) -> Path:
    """Scene Alpha: gt + calib + non-occlusion mask; Beta: no gt, no calib; a stray folder to ignore."""
    root = tmp_path / "MiddEval3" / "trainingQ"
    alpha, beta = root / "Alpha", root / "Beta"
    for scene in (alpha, beta):
        _img(scene / "im0.png", 30)
        _img(scene / "im1.png", 40)
    gt = np.arange(H * W, dtype=np.float32).reshape(H, W)
    gt[H - 1, W - 1] = np.nan
    write_pfm(alpha / "disp0GT.pfm", gt)
    mask = np.full((H, W), 255, np.uint8)
    mask[:, :2] = 128
    Image.fromarray(mask).save(alpha / "mask0nocc.png")
    (alpha / "calib.txt").write_text("cam0=[1 0 2; 0 1 3; 0 0 1]\nwidth=10\nheight=6\n\nndisp=32\nvmin=1\n")
    (root / "notes").mkdir()
    return root


# ---------------------------------------------------------------------------------------------------- detection


def test_every_layout_has_its_own_sgm_and_filter_preset() -> None:
    from stereodeploy.engine.spec import DEFAULT_PRESET, PRESETS

    assert {fmt: preset_for_format(fmt) for fmt in FORMATS} == {
        "kitti2012": "kitti2012", "kitti2015": "kitti2015", "middlebury": "middlebury"}
    assert sorted(PRESETS) == sorted(FORMATS) and DEFAULT_PRESET in PRESETS
    with pytest.raises(UsageError, match="unknown dataset format 'kitti'"):
        preset_for_format("kitti")


def test_preset_detected_from_dataset_folders_and_images_inside_them(
        kitti2015: Path, kitti2012: Path, middlebury: Path, tmp_path: Path) -> None:
    assert detect_preset(kitti2015) == "kitti2015" and detect_preset(kitti2015 / "training") == "kitti2015"
    assert detect_preset(kitti2012) == "kitti2012" and detect_preset(middlebury) == "middlebury"
    assert detect_preset(middlebury / "Alpha") == "middlebury"
    assert detect_preset(kitti2015 / "training" / "image_2" / "000000_10.png") == "kitti2015"
    assert detect_preset(kitti2015 / "training" / "image_3" / "000000_10.png") == "kitti2015"
    assert detect_preset(kitti2012 / "training" / "image_1" / "000000_10.png") == "kitti2012"
    assert detect_preset(middlebury / "Alpha" / "im0.png") == "middlebury"
    # Images outside any layout, folders without one: nothing detected (the caller uses DEFAULT_PRESET).
    _img(tmp_path / "loose" / "left.png", 1)
    _img(tmp_path / "loose" / "image_2" / "a.png", 1)  # image_2 without image_3 beside it
    assert detect_preset(tmp_path / "loose" / "left.png") is None
    assert detect_preset(tmp_path / "loose" / "image_2" / "a.png") is None
    assert detect_preset(tmp_path / "loose") is None


def test_detect_each_layout_from_root_or_training(kitti2015: Path, kitti2012: Path, middlebury: Path) -> None:
    assert detect_format(kitti2015) == "kitti2015"
    assert detect_format(kitti2015 / "training") == "kitti2015"
    assert detect_format(kitti2012) == "kitti2012"
    assert detect_format(middlebury) == "middlebury"
    assert detect_format(middlebury / "Alpha") == "middlebury"


def test_kitti2012_colored_folders_are_recognised(tmp_path: Path) -> None:
    root = _kitti(tmp_path / "k12c", "colored_0", "colored_1", "disp_noc", "disp_occ", rgb=True)
    assert detect_format(root) == "kitti2012"
    assert [f.left.parent.name for f in list_frames(root)] == ["colored_0"] * 3


def test_unrecognised_layout_lists_what_was_looked_for(tmp_path: Path) -> None:
    (tmp_path / "random").mkdir()
    with pytest.raises(UserError, match=r"no stereo dataset layout recognised; looked for KITTI 2015 .*Middlebury"):
        detect_format(tmp_path)
    with pytest.raises(UserError, match=r"nowhere: no such dataset folder \(the path does not exist\)"):
        list_frames(tmp_path / "nowhere")


def test_recognised_layout_without_pairs_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "training" / "image_2").mkdir(parents=True)
    (tmp_path / "training" / "image_3").mkdir()
    _img(tmp_path / "training" / "image_2" / "000000_11.png", 1)  # only a non-pair frame
    with pytest.raises(UserError, match="no stereo pairs found for format kitti2015"):
        list_frames(tmp_path)
    with pytest.raises(UserError, match="no stereo pairs found for format middlebury"):
        list_frames(tmp_path, fmt="middlebury")
    with pytest.raises(UsageError, match=r"unknown dataset format 'kitti': use one of kitti2012, kitti2015"):
        list_frames(tmp_path, fmt="kitti")


# ---------------------------------------------------------------------------------------------------- loading


@pytest.mark.parametrize("fixture", ["kitti2015", "kitti2012"])
def test_kitti_frames_gt_and_missing_maps(fixture: str, request: pytest.FixtureRequest) -> None:
    root: Path = request.getfixturevalue(fixture)
    frames = list_frames(root)
    assert [f.name for f in frames] == ["000000_10", "000001_10", "000002_10"]  # _11 skipped
    assert frames[0].disp_noc is not None and frames[1].disp_noc is None and frames[2].disp_occ is None
    both, occ_only, no_gt = load_dataset(root)
    rgb = fixture == "kitti2015"
    assert both.left.shape == ((H, W, 3) if rgb else (H, W)) and both.right.shape == both.left.shape
    assert int(both.left.flat[0]) == 10 and int(both.right.flat[0]) == 20
    assert np.isnan(both.disp[0, 0]) and both.disp[1, 1] == 2.5  # noc preferred
    assert both.disp_occ is not None and both.disp_occ[1, 1] == 3.0
    assert occ_only.disp_noc is None and occ_only.disp is not None and occ_only.disp[1, 1] == 4.0
    assert no_gt.disp is None and no_gt.disp_occ is None and no_gt.disp_noc is None
    assert both.max_disp is None


def test_middlebury_scenes_gt_mask_and_calib(middlebury: Path) -> None:
    alpha, beta = load_dataset(middlebury)
    assert (alpha.name, beta.name) == ("Alpha", "Beta")
    assert alpha.left.shape == (H, W, 3) and int(alpha.right[0, 0, 0]) == 40
    assert alpha.disp_occ is not None and alpha.disp_noc is not None
    assert alpha.disp_occ[0, 3] == 3.0 and alpha.disp_occ[2, 5] == 25.0  # top row first
    assert np.isnan(alpha.disp_occ[H - 1, W - 1])
    assert np.isnan(alpha.disp_noc[:, :2]).all() and alpha.disp_noc[0, 3] == 3.0  # mask 128 = occluded
    assert alpha.disp is alpha.disp_noc
    assert alpha.max_disp == 32
    assert beta.disp is None and beta.max_disp is None
    single = load_dataset(middlebury / "Alpha")
    assert [s.name for s in single] == ["Alpha"]


def test_middlebury_without_mask_uses_full_gt(middlebury: Path) -> None:
    (middlebury / "Alpha" / "mask0nocc.png").unlink()
    sample = load_dataset(middlebury / "Alpha")[0]
    assert sample.disp_noc is None and sample.disp is sample.disp_occ


def test_calib_parsing_and_bad_ndisp(tmp_path: Path) -> None:
    calib = tmp_path / "calib.txt"
    calib.write_text("cam0=[1 0 2; 0 1 3]\n ndisp = 70 \n")
    assert parse_calib(calib) == {"cam0": "[1 0 2; 0 1 3]", "ndisp": "70"}
    scene = tmp_path / "S"
    _img(scene / "im0.png", 1)
    _img(scene / "im1.png", 2)
    (scene / "calib.txt").write_text("ndisp=lots\n")
    with pytest.raises(UserError, match=r"calib\.txt: ndisp='lots' is not an integer"):
        load_dataset(scene)
    (scene / "calib.txt").write_text("ndisp 64\n")
    with pytest.raises(UserError, match=r"calib\.txt:1: expected key=value"):
        load_dataset(scene)


def test_size_mismatch_names_both_files(tmp_path: Path) -> None:
    scene = tmp_path / "S"
    _img(scene / "im0.png", 1)
    _img(scene / "im1.png", 2, shape=(H, W + 1))
    with pytest.raises(UserError, match=r"im1\.png: size 11x6 differs from the left image .*im0\.png \(10x6\)"):
        load_dataset(scene)
    frame = Frame("x", "kitti2015", scene / "im0.png", scene / "im0.png", disp_occ=scene / "im1.png")
    with pytest.raises(UserError, match=r"im1\.png: not a KITTI disparity map"):
        load_frame(frame)


# ---------------------------------------------------------------------------------------------------- synthetic


def test_synthetic_noc_pixels_match_exactly_and_occlusions_exist() -> None:
    s = synthetic_pair(height=48, width=80, max_disp=16, layers=3, seed=0)
    assert s.left.dtype == np.uint8 and s.left.shape == (48, 80) and s.right.shape == (48, 80)
    assert s.max_disp == 16 and s.disp is s.disp_noc
    occ, noc = s.disp_occ, s.disp_noc
    assert occ is not None and noc is not None
    assert np.isfinite(occ).all() and (occ == np.rint(occ)).all()
    levels = np.unique(occ)
    assert len(levels) == 4 and levels.min() >= 1 and levels.max() < 16  # background + 3 distinct layers
    ys, xs = np.nonzero(np.isfinite(noc))
    d = noc[ys, xs].astype(int)
    np.testing.assert_array_equal(s.right[ys, xs - d], s.left[ys, xs])
    x_right = np.arange(80)[None, :] - occ
    assert np.isnan(noc[x_right < 0]).all() and (x_right < 0).any()  # out of view
    occluded = np.isnan(noc) & (x_right >= 0)
    assert occluded.sum() > 20
    # an occluded pixel's right position shows a nearer surface, so its own texture is not there
    oy, ox = np.nonzero(occluded)
    assert np.mean(s.right[oy, ox - occ[oy, ox].astype(int)] != s.left[oy, ox]) > 0.8


def test_synthetic_texture_lets_a_block_matcher_find_the_match() -> None:
    s = synthetic_pair(height=48, width=80, max_disp=16, layers=3, seed=4)
    left, right = s.left.astype(np.float32), s.right.astype(np.float32)
    r = 2
    costs = np.full((16, 48, 80), np.inf, np.float32)
    for d in range(16):
        diff = np.abs(left[:, d:] - right[:, : 80 - d])
        c = np.cumsum(np.cumsum(np.pad(diff, ((r + 1, r), (r + 1, r)), mode="edge"), 0), 1)
        k = 2 * r + 1
        costs[d, :, d:] = c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]
    wta = costs.argmin(axis=0)
    noc = s.disp_noc
    known = np.isfinite(noc)
    assert np.mean(wta[known] == noc[known]) > 0.9


def test_synthetic_is_deterministic_in_seed_and_noise_keeps_scene() -> None:
    a, b, c = synthetic_pair(seed=7), synthetic_pair(seed=7), synthetic_pair(seed=8)
    for name in ("left", "right", "disp_occ", "disp_noc"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.left, c.left)
    noisy = synthetic_pair(seed=7, noise=4.0)
    np.testing.assert_array_equal(noisy.disp_noc, a.disp_noc)
    delta = noisy.left.astype(float) - a.left
    assert 3.0 < delta.std() < 5.0
    assert not np.array_equal(noisy.right - a.right, noisy.left - a.left)  # independent noise per image


def test_synthetic_slope_gives_subpixel_gt_rendered_by_interpolation() -> None:
    s = synthetic_pair(height=32, width=64, max_disp=24, layers=0, seed=2, slope=(0.1, 0.03))
    occ = s.disp_occ
    assert len(np.unique(np.round(occ % 1, 3))) > 50  # non-integer disparities
    xs = np.arange(64)
    worst = 0.0
    for y in range(32):
        shown_at = xs - occ[y].astype(np.float64)  # where each left pixel lands in the right image
        xr = xs[(xs >= shown_at[0]) & (xs <= shown_at[-1])]
        u = np.interp(xr, shown_at, xs)  # left coordinate of the surface point each right pixel shows
        expected = np.interp(u, xs, s.left[y].astype(np.float64))
        worst = max(worst, float(np.abs(s.right[y, xr] - expected).max()))
    assert worst <= 0.51  # only the rounding to uint8
    assert np.isnan(s.disp_noc[xs[None, :] - occ < 0]).all()
    assert np.isfinite(s.disp_noc[xs[None, :] - occ >= 0]).all()  # no layers: nothing occluded


def test_synthetic_rejects_impossible_ranges() -> None:
    with pytest.raises(ValueError, match="max_disp=4 leaves"):
        synthetic_pair(max_disp=4, layers=3)


# ---------------------------------------------------------------------------------------------------- real data


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="shared data folder absent")
def test_real_middlebury_scene_and_kitti2015_frame() -> None:
    rocks = load_dataset(SHARED_DATA / "middlebury" / "Rocks2")[0]
    assert rocks.left.shape == (370, 425, 3) and rocks.right.shape == rocks.left.shape
    assert rocks.max_disp == 64
    assert rocks.disp is not None and rocks.disp.shape == (370, 425)
    known = np.isfinite(rocks.disp)
    assert known.mean() > 0.8
    assert 20 <= np.nanmin(rocks.disp) and np.nanmax(rocks.disp) <= 64  # calib vmin=23, vmax=56

    frames = {f.name: f for f in list_frames(SHARED_DATA / "kitti2015")}
    assert {"000005_10", "000046_10"} <= set(frames)
    k5 = load_frame(frames["000005_10"])
    assert k5.left.shape == (375, 1242, 3) and k5.right.shape == k5.left.shape
    assert k5.disp_noc is not None and k5.disp_occ is None and k5.disp is k5.disp_noc
    assert 0.05 < np.isfinite(k5.disp).mean() < 0.6  # sparse lidar ground truth
    assert 0 < np.nanmin(k5.disp) and np.nanmax(k5.disp) < 256
    k46 = load_frame(frames["000046_10"])
    assert k46.disp_noc is None and k46.disp is k46.disp_occ and k46.disp is not None
