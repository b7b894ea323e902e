"""Calibration files, depth and point clouds, and the files `infer` writes from them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from stereodeploy.data.calib import Calibration, display_range, find_calibration, read_calibration
from stereodeploy.data.io import read_image, read_pfm, read_ply, write_ply, write_png
from stereodeploy.engine.geometry import depth_map, point_cloud
from stereodeploy.errors import UsageError, UserError

# KITTI's rectified projections as calib_cam_to_cam.txt writes them (values on the key's line); the frame in
# ../shared/data/kitti2015/notes has the same matrices with the values on the following lines
KITTI_CALIB = """calib_time: 09-Jan-2012 13:57:47
P_rect_02: 7.215377e+02 0.000000e+00 6.095593e+02 4.485728e+01 0.000000e+00 7.215377e+02 1.728540e+02 2.163791e-01 0.000000e+00 0.000000e+00 1.000000e+00 2.745884e-03
P_rect_03: 7.215377e+02 0.000000e+00 6.095593e+02 -3.395242e+02 0.000000e+00 7.215377e+02 1.728540e+02 2.199936e+00 0.000000e+00 0.000000e+00 1.000000e+00 2.729905e-03
"""
MIDDLEBURY_CALIB = """cam0=[3997.684 0 1176.728; 0 3997.684 1011.728; 0 0 1]
cam1=[3997.684 0 1307.839; 0 3997.684 1011.728; 0 0 1]
doffs=131.111
baseline=193.001
width=2964
height=1988
ndisp=280
vmin=31
vmax=257
"""


def test_read_kitti_calibration(tmp_path):
    path = tmp_path / "000005.txt"
    path.write_text(KITTI_CALIB)
    c = read_calibration(path)
    assert c.focal == pytest.approx(721.5377)
    assert c.baseline == pytest.approx((44.85728 + 339.5242) / 721.5377)  # 0.533 m
    assert (c.cx, c.cy, c.doffs) == (pytest.approx(609.5593), pytest.approx(172.854), 0.0)
    # the values on the lines after each key, as in the excerpt of ../shared/data
    split = tmp_path / "split.txt"
    split.write_text(KITTI_CALIB.replace("P_rect_02: ", "P_rect_02: \n").replace("P_rect_03: ", "\nP_rect_03: \n"))
    assert read_calibration(split) == Calibration(c.focal, c.baseline, c.cx, c.cy, c.doffs, str(split))


def test_read_middlebury_calibration_and_its_display_range(tmp_path):
    path = tmp_path / "calib.txt"
    path.write_text(MIDDLEBURY_CALIB)
    c = read_calibration(path)
    assert (c.focal, c.baseline, c.cx, c.cy, c.doffs) == (3997.684, pytest.approx(0.193001), 1176.728, 1011.728,
                                                          131.111)
    assert display_range(path) == (31.0, 257.0)
    assert find_calibration(tmp_path / "im0.png") == path


def test_infer_finds_a_kitti_frames_calibration(model_file, tmp_path):
    """KITTI 2015's layout keeps one calib_cam_to_cam/<frame>.txt per frame beside image_2: infer uses it."""
    from stereodeploy.data.datasets import synthetic_pair

    root = tmp_path / "kitti" / "training"
    for folder in ("image_2", "image_3", "calib_cam_to_cam"):
        (root / folder).mkdir(parents=True)
    sample = synthetic_pair(height=40, width=72, max_disp=12, seed=0)
    write_png(root / "image_2" / "000007_10.png", sample.left)
    write_png(root / "image_3" / "000007_10.png", sample.right)
    (root / "calib_cam_to_cam" / "000007.txt").write_text(KITTI_CALIB)
    assert find_calibration(root / "image_2" / "000007_10.png") == root / "calib_cam_to_cam" / "000007.txt"
    res = invoke("infer", tmp_path / "kitti", "--model", model_file, "--max-disp", 12, "--out", tmp_path / "out")
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / "out" / "000007_10_disp.json").read_text())
    assert record["calibration"]["focal"] == pytest.approx(721.5377) and (tmp_path / "out" / "000007_10.ply").is_file()


def test_calibration_errors_name_the_fix(tmp_path):
    older = tmp_path / "calib.txt"
    older.write_text("width=413\nheight=370\nndisp=64\nvmin=13\nvmax=52\n")
    with pytest.raises(UserError, match="pass --focal and --baseline"):
        read_calibration(older)
    assert find_calibration(tmp_path / "im0.png") is None  # no cam0: no depth from it
    short = tmp_path / "kitti.txt"
    short.write_text("P_rect_02: 1 0 0\nP_rect_03: 1 0 0 0 0 1 0 0 0 0 1 0\n")
    with pytest.raises(UserError, match="P_rect_02 needs 12 numbers"):
        read_calibration(short)
    with pytest.raises(UserError, match="not found"):
        read_calibration(tmp_path / "missing.txt")
    with pytest.raises(UsageError, match="baseline must be a positive"):
        Calibration(focal=700, baseline=0)


def test_depth_and_points_by_hand():
    calib = Calibration(focal=100.0, baseline=0.5, cx=1.0, cy=0.0, doffs=2.0)
    disp = np.array([[8.0, 48.0, np.nan], [-2.0, 3.0, 18.0]], dtype=np.float32)
    valid = np.array([[True, True, True], [True, True, False]])
    depth = depth_map(disp, calib, valid)
    # Z = f B / (d + doffs): 50 / 10 = 5, 50 / 50 = 1; NaN: no answer, at infinity (d + doffs = 0), not valid
    np.testing.assert_allclose(depth, [[5.0, 1.0, np.nan], [np.nan, 10.0, np.nan]])
    image = np.arange(6, dtype=np.uint8).reshape(2, 3) * 40
    cloud = point_cloud(disp, calib, valid, image)
    # X = (x - cx) Z / f, Y = (y - cy) Z / f
    np.testing.assert_allclose(cloud.xyz, [[-0.05, 0.0, 5.0], [0.0, 0.0, 1.0], [0.0, 0.1, 10.0]], atol=1e-6)
    np.testing.assert_array_equal(cloud.rgb, [[0, 0, 0], [40, 40, 40], [160, 160, 160]])
    np.testing.assert_array_equal(cloud.pixels, [[0, 0], [0, 1], [1, 1]])


def test_ply_round_trip_and_header(tmp_path):
    xyz = np.array([[0.0, 1.5, -2.0], [3.25, 4.0, 5.0]], dtype=np.float32)
    rgb = np.array([[255, 0, 7], [1, 2, 3]], dtype=np.uint8)
    path = write_ply(tmp_path / "p.ply", xyz, rgb)
    head = path.read_bytes()[:200]
    assert head.startswith(b"ply\nformat binary_little_endian 1.0\nelement vertex 2\nproperty float x\n")
    assert b"property uchar red\n" in head
    got_xyz, got_rgb = read_ply(path)
    np.testing.assert_array_equal(got_xyz, xyz)
    np.testing.assert_array_equal(got_rgb, rgb)
    assert path.stat().st_size == head.index(b"end_header\n") + 11 + 2 * 15  # 3 floats + 3 bytes per point
    with pytest.raises(UsageError, match="exists"):
        write_ply(path, xyz)


# ------------------------------------------------------------------------------------------------ infer


def invoke(*args):
    from stereodeploy.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


def scene(tmp_path: Path, calib: str | None = None, seed: int = 0) -> Path:
    """A synthetic Middlebury scene folder: im0.png, im1.png and calib.txt (``calib``) if given."""
    from stereodeploy.data.datasets import synthetic_pair

    sample = synthetic_pair(height=40, width=72, max_disp=12, layers=2, seed=seed)
    folder = tmp_path / "scene"
    folder.mkdir()
    write_png(folder / "im0.png", sample.left)
    write_png(folder / "im1.png", sample.right)
    if calib is not None:
        (folder / "calib.txt").write_text(calib)
    return folder


def test_infer_writes_valid_and_confidence(model_file, tmp_path):
    folder = scene(tmp_path)
    out = tmp_path / "out"
    res = invoke("infer", folder / "im0.png", folder / "im1.png", "--model", model_file, "--max-disp", 12,
                 "--postprocess", "full", "--out", out)
    assert res.exit_code == 0, res.output
    valid = read_image(out / "im0_valid.png")
    confidence = read_pfm(out / "im0_confidence.pfm")
    assert valid.shape == (40, 72) and set(np.unique(valid)) == {0, 255}
    assert ((confidence >= 0) & (confidence <= 1)).all() and (confidence[valid == 0] == 0).all()
    record = json.loads((out / "im0_disp.json").read_text())
    assert record["fill"] is True and record["density"] == pytest.approx(100 * np.mean(valid == 255))
    assert np.isfinite(read_pfm(out / "im0_disp.pfm")).all()  # filled
    assert not (out / "im0.ply").exists()  # no calibration, no depth
    res = invoke("infer", folder / "im0.png", folder / "im1.png", "--model", model_file, "--max-disp", 12,
                 "--no-confidence", "--out", tmp_path / "wta")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "wta" / "im0_valid.png").is_file() and not (tmp_path / "wta" / "im0_confidence.pfm").exists()
    # --no-fill: no answer exactly where the matcher did not find one
    res = invoke("infer", folder / "im0.png", folder / "im1.png", "--model", model_file, "--max-disp", 12,
                 "--postprocess", "full", "--no-fill", "--out", tmp_path / "sparse")
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(np.isfinite(read_pfm(tmp_path / "sparse" / "im0_disp.pfm")), valid == 255)


def test_infer_takes_the_range_from_calib_txt_and_colours_it(model_file, tmp_path):
    folder = scene(tmp_path, "width=72\nheight=40\nndisp=14\nvmin=3\nvmax=11\n")
    res = invoke("infer", folder / "im0.png", folder / "im1.png", "--model", model_file, "--out", tmp_path / "a")
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / "a" / "im0_disp.json").read_text())
    assert record["max_disp"] == 14 and record["colour_range"] == [3.0, 11.0]  # ndisp searched, vmin..vmax shown
    res = invoke("infer", folder / "im0.png", folder / "im1.png", "--model", model_file, "--max-disp", 12,
                 "--min-disp", 2, "--out", tmp_path / "b")
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / "b" / "im0_disp.json").read_text())
    assert (record["min_disp"], record["max_disp"]) == (2, 12)
    disp = read_pfm(tmp_path / "b" / "im0_disp.pfm")
    assert np.nanmin(disp) >= 2 and np.nanmax(disp) < 12


def test_colour_scale_follows_the_range():
    from stereodeploy.data.io import colorbar, colorize

    disp = np.array([[10.0, 20.0, 30.0]], dtype=np.float32)
    np.testing.assert_array_equal(colorize(disp, 30, 10), colorize(disp - 10, 20))  # [10, 30] as [0, 20]
    assert not np.array_equal(colorbar(200, 30, min_disp=10), colorbar(200, 30))


def test_infer_with_focal_and_baseline_writes_depth_and_points(model_file, tmp_path):
    folder = scene(tmp_path)
    out = tmp_path / "out"
    res = invoke("infer", folder / "im0.png", folder / "im1.png", "--model", model_file, "--max-disp", 12,
                 "--focal", 100, "--baseline", 0.25, "--out", out)
    assert res.exit_code == 0, res.output
    disp, depth = read_pfm(out / "im0_disp.pfm"), read_pfm(out / "im0_depth.pfm")
    positive = disp > 0
    np.testing.assert_allclose(depth[positive], 25.0 / disp[positive], rtol=1e-6)
    assert not np.isfinite(depth[~positive]).any()  # d = 0: at infinity
    xyz, rgb = read_ply(out / "im0.ply")
    assert len(xyz) == positive.sum() and rgb is not None and rgb.dtype == np.uint8
    np.testing.assert_allclose(np.sort(xyz[:, 2]), np.sort(depth[positive]), rtol=1e-6)
    record = json.loads((out / "im0_disp.json").read_text())
    assert record["calibration"]["focal"] == 100 and record["points"] == len(xyz)


@pytest.mark.parametrize(("args", "message"), [
    (["--focal", "700"], "--focal and --baseline go together"),
    (["--calib", "calib.txt", "--focal", "700", "--baseline", "0.5"], "either --calib or --focal"),
    (["--min-disp", "12", "--max-disp", "12"], "min disparity must be in"),
])
def test_infer_calibration_and_range_usage_errors(model_file, tmp_path, args, message):
    folder = scene(tmp_path)
    res = invoke("infer", folder / "im0.png", folder / "im1.png", "--model", model_file, "--out", tmp_path / "o",
                 *args)
    assert res.exit_code == 2 and message in res.output, res.output


@pytest.mark.slow
def test_kitti_point_cloud_has_the_ground_truths_depth(shared_data, tmp_path):
    """`infer` on KITTI 2015 frame 000005_10 with its calibration (the excerpt of calib_cam_to_cam in
    ../shared/data/kitti2015/notes): its point cloud lies where the ground truth says. The points are projected
    back to their pixels (u = f X / Z + cx, v = f Y / Z + cy), and their median depth on the pixels with ground
    truth is within 1 m of the ground truth's there; over all points, within a few metres."""
    from stereodeploy.data.io import read_kitti_disp

    kitti = shared_data / "kitti2015"
    calib_file = kitti / "notes" / "000005_10_Calib_excerpt.txt"
    out = tmp_path / "out"
    res = invoke("infer", kitti / "training" / "image_2" / "000005_10.png",
                 kitti / "training" / "image_3" / "000005_10.png", "--postprocess", "full", "--preset", "kitti2015",
                 "--max-disp", 228, "--calib", calib_file, "--out", out)
    assert res.exit_code == 0, res.output
    c = read_calibration(calib_file)
    xyz, rgb = read_ply(out / "000005_10.ply")
    assert rgb is not None and len(xyz) > 0.8 * 1242 * 375
    u = np.rint(c.focal * xyz[:, 0] / xyz[:, 2] + c.cx).astype(int)
    v = np.rint(c.focal * xyz[:, 1] / xyz[:, 2] + c.cy).astype(int)
    assert u.min() >= 0 and u.max() < 1242 and v.min() >= 0 and v.max() < 375
    gt = read_kitti_disp(kitti / "training" / "disp_noc_0" / "000005_10.png")
    gt_depth = c.focal * c.baseline / gt
    known = np.isfinite(gt_depth[v, u])
    assert known.sum() > 50_000
    assert abs(np.median(xyz[known, 2]) - np.median(gt_depth[v, u][known])) < 1.0
    assert abs(np.median(xyz[:, 2]) - np.nanmedian(gt_depth)) < 4.0
