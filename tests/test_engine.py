"""The engine: cost volume and winner-take-all, backends (onnx, torch, torch's device path), StereoMatcher, infer CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_NET, onnxruntime_has_cuda
from numpy.lib.stride_tricks import sliding_window_view
from typer.testing import CliRunner

from stereodeploy.data.datasets import synthetic_pair
from stereodeploy.data.io import read_kitti_disp, read_pfm, write_png
from stereodeploy.data.preprocess import to_gray
from stereodeploy.engine.matching import INVALID_COST, cost_volume, winner_take_all, wta_from_features
from stereodeploy.errors import UserError


def unit_features(rng: np.random.Generator, c: int, h: int, w: int) -> np.ndarray:
    f = rng.standard_normal((c, h, w)).astype(np.float32)
    return f / np.linalg.norm(f, axis=0, keepdims=True)


def patch_features(gray: np.ndarray, radius: int = 2) -> np.ndarray:
    """A hand-built 'network': each pixel's zero-mean, unit-norm (2r+1)^2 patch, (C, H, W)."""
    padded = np.pad(gray.astype(np.float32), radius, mode="reflect")
    patches = sliding_window_view(padded, (2 * radius + 1,) * 2).reshape(*gray.shape, -1)
    patches = patches - patches.mean(axis=-1, keepdims=True)
    patches /= np.linalg.norm(patches, axis=-1, keepdims=True) + 1e-6
    return np.ascontiguousarray(np.moveaxis(patches, -1, 0), dtype=np.float32)


def interior(sample, radius: int) -> np.ndarray:
    """Pixels whose whole (2r+1)^2 window lies on one surface that is visible in the right image."""
    win = (2 * radius + 1,) * 2
    occ = sliding_window_view(np.pad(sample.disp_occ, radius, constant_values=np.nan), win)
    noc = sliding_window_view(np.pad(sample.disp_noc, radius, constant_values=np.nan), win)
    return np.all(occ == sample.disp_occ[:, :, None, None], axis=(2, 3)) & np.all(np.isfinite(noc), axis=(2, 3))


def similarity_at(fl: np.ndarray, fr: np.ndarray, disp: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    d = disp[ys, xs].astype(np.intp)
    return np.einsum("cn,cn->n", fl[:, ys, xs], fr[:, ys, xs - d])


def assert_same_but_ties(a: np.ndarray, b: np.ndarray, fl: np.ndarray, fr: np.ndarray, max_share: float = 1e-3) -> None:
    """Two winner-take-all maps agree except at a few pixels where both disparities match equally well."""
    ys, xs = np.nonzero(a != b)
    assert len(ys) <= max_share * a.size, f"{len(ys)} of {a.size} pixels differ"
    gap = np.abs(similarity_at(fl, fr, a, ys, xs) - similarity_at(fl, fr, b, ys, xs))
    assert np.all(gap < 1e-4), f"differing pixels are not ties: similarity gaps up to {gap.max():.2e}"


# ------------------------------------------------------------------------------------------------ matching


def test_matching_recovers_known_shift_with_patch_features():
    sample = synthetic_pair(height=48, width=96, max_disp=16, layers=2, seed=3)
    fl, fr = patch_features(to_gray(sample.left)), patch_features(to_gray(sample.right))
    mask = interior(sample, 2)
    assert mask.sum() > 1000 and len(np.unique(sample.disp_occ[mask])) == 3  # background and two rectangles
    disp = wta_from_features(fl, fr, 16)
    np.testing.assert_array_equal(disp[mask], sample.disp_occ[mask])
    np.testing.assert_array_equal(winner_take_all(cost_volume(fl, fr, 16))[mask], sample.disp_occ[mask])


def test_matcher_recovers_known_shift_with_untrained_network(model_file):
    from stereodeploy.engine.matcher import StereoMatcher

    matcher = StereoMatcher.from_file(model_file, max_disp=16)
    for seed in (0, 1):
        sample = synthetic_pair(height=48, width=96, max_disp=16, layers=2, seed=seed)
        mask = interior(sample, TINY_NET.patch_size // 2)
        assert mask.sum() > 1000
        np.testing.assert_array_equal(matcher(sample.left, sample.right)[mask], sample.disp_occ[mask])


def test_cost_volume_values_and_invalid_region():
    rng = np.random.default_rng(0)
    fl, fr = unit_features(rng, 8, 5, 20), unit_features(rng, 8, 5, 20)
    cost = cost_volume(fl, fr, 6)
    assert cost.shape == (6, 5, 20) and cost.dtype == np.float32 and not np.isnan(cost).any()
    for d in range(6):
        assert np.all(cost[d, :, :d] == INVALID_COST)  # x - d < 0: the worst cost, not NaN
        expected = 1.0 - np.einsum("chw,chw->hw", fl[:, :, d:], fr[:, :, : 20 - d])
        np.testing.assert_allclose(cost[d, :, d:], expected, atol=1e-5)
    assert cost.min() >= -1e-6 and cost.max() <= 2.0 + 1e-6


def test_wta_equals_argmin_of_cost_volume():
    rng = np.random.default_rng(1)
    fl, fr = unit_features(rng, 16, 12, 40), unit_features(rng, 16, 12, 40)
    wta = wta_from_features(fl, fr, 10)
    np.testing.assert_array_equal(wta, np.argmin(cost_volume(fl, fr, 10), axis=0).astype(np.float32))
    assert np.all(wta <= np.arange(40))  # never a disparity that leaves the right image


def test_nan_costs_never_win_and_tiny_volumes_stay_in_bounds():
    """A NaN feature (so NaN costs) never wins, in either winner-take-all; a volume smaller than one SIMD tile is
    filled without writing past its end."""
    from stereodeploy.engine.matching import wta_confidence_from_features

    rng = np.random.default_rng(7)
    fl, fr = unit_features(rng, 8, 2, 20), unit_features(rng, 8, 2, 20)
    fr[:, 0, 5] = np.nan  # right pixel 5: every cost that uses it is NaN
    expected = winner_take_all(cost_volume(fl, fr, 8))
    np.testing.assert_array_equal(wta_from_features(fl, fr, 8), expected)
    np.testing.assert_array_equal(wta_confidence_from_features(fl, fr, 8)[0], expected)
    assert expected[0, 5] != 0  # d = 0 would use the NaN pixel
    for h, w, nd in ((1, 15, 10), (1, 7, 3), (2, 5, 3)):
        a, b = unit_features(rng, 8, h, w), unit_features(rng, 8, h, w)
        cost = cost_volume(a, b, nd)
        reference = 1.0 - np.stack([np.pad(np.einsum("chw,chw->hw", a[:, :, d:], b[:, :, : w - d]), ((0, 0), (d, 0)),
                                           constant_values=1.0 - INVALID_COST) for d in range(nd)])
        np.testing.assert_allclose(cost, reference, atol=1e-5)


@pytest.mark.parametrize("width", [40, 7])  # 7: narrower than one SIMD tile, the row buffer's partial tile
def test_wta_with_confidence_equals_the_volume_path(width):
    """Winner-take-all with confidence, one row of costs at a time, gives exactly what the stored volume gives:
    its winners and :func:`confidence_ratio` on it (on both of its layouts)."""
    from stereodeploy.engine.matching import row_major_volume, wta_confidence_from_features
    from stereodeploy.engine.postprocess import confidence_ratio

    rng = np.random.default_rng(5)
    nd = min(10, width - 1)
    fl, fr = unit_features(rng, 16, 12, width), unit_features(rng, 16, 12, width)
    disp, conf = wta_confidence_from_features(fl, fr, nd)
    volume = cost_volume(fl, fr, nd)
    np.testing.assert_array_equal(disp, wta_from_features(fl, fr, nd))
    np.testing.assert_array_equal(conf, confidence_ratio(volume.transpose(1, 2, 0), disp.astype(np.int32)))
    rows = cost_volume(fl, fr, nd, row_major_volume(nd, 12, width))
    np.testing.assert_array_equal(conf, confidence_ratio(rows.transpose(1, 2, 0), disp.astype(np.int32)))
    assert conf.dtype == np.float32 and (conf >= 0).all() and (conf <= 1).all() and conf.max() > 0.1


# ------------------------------------------------------------------------------------------------ torch


def test_torch_cost_volume_and_wta_equal_numba_on_cpu():
    torch = pytest.importorskip("torch")
    from stereodeploy.engine.torch_backend import torch_cost_volume, torch_wta

    rng = np.random.default_rng(2)
    fl, fr = unit_features(rng, 16, 10, 50), unit_features(rng, 16, 10, 50)
    cost = torch_cost_volume(torch.from_numpy(fl), torch.from_numpy(fr), 12)
    np.testing.assert_allclose(cost.numpy(), cost_volume(fl, fr, 12), atol=1e-6)
    wta = torch_wta(torch.from_numpy(fl), torch.from_numpy(fr), 12).numpy()
    assert wta.dtype == np.float32
    np.testing.assert_array_equal(wta, wta_from_features(fl, fr, 12))


def test_torch_device_path_matches_host_path(model_file):
    pytest.importorskip("torch")
    from stereodeploy.config import MatchConfig
    from stereodeploy.engine.matcher import StereoMatcher
    from stereodeploy.engine.torch_backend import TorchBackend

    sample = synthetic_pair(height=40, width=80, max_disp=12, layers=2, seed=5)
    gl, gr = to_gray(sample.left), to_gray(sample.right)
    host = TorchBackend(model_file, device_matching=False)
    device = TorchBackend(model_file, device_matching=True)  # the CUDA code path, run on CPU tensors
    fl, fr = host.features_pair(gl, gr)
    timings: dict[str, float] = {}
    assert_same_but_ties(device.wta(gl, gr, 12, timings), host.wta(gl, gr, 12, {}), fl, fr)
    assert set(timings) == {"features", "matching"}
    np.testing.assert_allclose(device.cost_volume(gl, gr, 12, {}), host.cost_volume(gl, gr, 12, {}), atol=1e-5)
    (d_disp, d_conf), (h_disp, h_conf) = device.wta_confidence(gl, gr, 12, {}), host.wta_confidence(gl, gr, 12, {})
    assert_same_but_ties(d_disp, h_disp, fl, fr)
    same = d_disp == h_disp
    np.testing.assert_allclose(d_conf[same], h_conf[same], atol=1e-4)
    assert d_conf.dtype == np.float32 and d_conf.max() > 0.1
    result = StereoMatcher(device, MatchConfig(max_disp=12)).match(sample.left, sample.right)
    assert result.disparity.shape == (40, 80) and {"features", "matching", "total"} <= set(result.timings)


def test_onnx_and_torch_backends_agree_on_a_real_pair(model_file, motorcycle):
    pytest.importorskip("torch")
    from stereodeploy.engine.matcher import StereoMatcher

    left, right = (np.ascontiguousarray(to_gray(im)[::4, ::4]) for im in motorcycle[:2])  # 186x125
    onnx_disp = StereoMatcher.from_file(model_file, max_disp=24, backend="onnx")(left, right)
    torch_matcher = StereoMatcher.from_file(model_file, max_disp=24, backend="torch")
    torch_disp = torch_matcher(left, right)
    fl, fr = torch_matcher.backend.features_pair(left, right)
    assert_same_but_ties(onnx_disp, torch_disp, fl, fr)
    assert len(np.unique(onnx_disp)) > 10  # a real disparity map, not a constant


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_cuda_without_cuda_is_a_clear_user_error(model_file, backend):
    from stereodeploy.engine.matcher import StereoMatcher

    if backend == "onnx":
        if onnxruntime_has_cuda():
            pytest.skip("this onnxruntime has CUDA")
    else:
        torch = pytest.importorskip("torch")
        if torch.cuda.is_available():
            pytest.skip("torch sees a CUDA device")
    with pytest.raises(UserError, match=r"CUDA.*--provider cpu") as info:
        StereoMatcher.from_file(model_file, backend=backend, provider="cuda")
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------------ matcher


def test_matcher_is_thread_safe(model_file):
    from stereodeploy.engine.matcher import StereoMatcher

    matcher = StereoMatcher.from_file(model_file, max_disp=16)
    pairs = [synthetic_pair(height=48, width=96, max_disp=16, layers=2, seed=s) for s in range(4)]
    serial = [matcher(p.left, p.right) for p in pairs]
    assert not all(np.array_equal(serial[0], s) for s in serial[1:])  # the pairs give different answers
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda i: (i % 4, matcher.match(pairs[i % 4].left, pairs[i % 4].right)), range(16)))
    for i, result in results:
        np.testing.assert_array_equal(result.disparity, serial[i])
        assert result.timings["total"] >= result.timings["features"] > 0


def test_full_pipeline_reuses_its_volumes_without_mixing_calls(model_file):
    """Post-processing keeps its volumes per thread between calls: results equal a fresh matcher's, across sizes
    and threads, and release_buffers() frees them."""
    from stereodeploy.engine.matcher import StereoMatcher

    small = [synthetic_pair(height=40, width=80, max_disp=12, seed=s) for s in range(2)]
    large = synthetic_pair(height=56, width=112, max_disp=12, seed=7)
    order = [small[0], large, small[1], small[0]]

    def fresh(p):
        return StereoMatcher.from_file(model_file, max_disp=16, postprocess="full")(p.left, p.right)

    expected = [fresh(p) for p in order]
    matcher = StereoMatcher.from_file(model_file, max_disp=16, postprocess="full")
    for p, e in zip(order, expected):
        np.testing.assert_array_equal(matcher(p.left, p.right), e)
    assert set(matcher._local.buffers) == {"cost", "work", "aggregated"}
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda i: matcher(order[i % 4].left, order[i % 4].right), range(8)))
    for i, g in enumerate(got):
        np.testing.assert_array_equal(g, expected[i % 4])
    matcher.release_buffers()
    assert not hasattr(matcher._local, "buffers")


def test_matcher_threads_survive_numba_workqueue_layer(model_file):
    """numba's workqueue layer aborts the process on concurrent launches; the matcher must serialise them."""
    code = (
        "import sys; from concurrent.futures import ThreadPoolExecutor; import numba\n"
        "from stereodeploy.data.datasets import synthetic_pair\n"
        "from stereodeploy.engine.matcher import StereoMatcher\n"
        "m = StereoMatcher.from_file(sys.argv[1], max_disp=16)\n"
        "p = synthetic_pair(height=64, width=160, max_disp=16)\n"
        "with ThreadPoolExecutor(4) as pool: list(pool.map(lambda i: m(p.left, p.right), range(12)))\n"
        "print(numba.threading_layer())\n"
    )
    env = {**os.environ, "NUMBA_THREADING_LAYER": "workqueue"}
    res = subprocess.run([sys.executable, "-c", code, str(model_file)], capture_output=True, text=True, env=env,
                         check=False)
    assert res.returncode == 0, res.stderr[-500:]
    assert res.stdout.strip() == "workqueue"


def test_matcher_refuses_bad_input(model_file):
    from stereodeploy.engine.matcher import StereoMatcher

    matcher = StereoMatcher.from_file(model_file, max_disp=16)
    img = np.zeros((20, 30), np.uint8)
    with pytest.raises(UserError, match="differ in size"):
        matcher(img, np.zeros((20, 31), np.uint8))
    with pytest.raises(UserError, match="max disparity"):
        matcher.with_max_disp(30)(img, img)
    with pytest.raises(UserError, match="'none' or 'full'"):
        StereoMatcher.from_file(model_file, postprocess="some")


def test_matcher_with_postprocessing_reports_stage_timings(model_file):
    from stereodeploy.engine.matcher import StereoMatcher

    sample = synthetic_pair(height=48, width=96, max_disp=16, layers=2, seed=0)
    result = StereoMatcher.from_file(model_file, max_disp=16, postprocess="full").match(sample.left, sample.right)
    assert result.disparity.shape == (48, 96) and result.disparity.dtype == np.float32
    assert {"features", "cost_volume", "matching", "total"} <= set(result.timings)


# ------------------------------------------------------------------------------------------------ infer CLI


def invoke(*args):
    from stereodeploy.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


def write_pair(folder: Path, name: str, seed: int) -> tuple[Path, Path]:
    sample = synthetic_pair(height=40, width=72, max_disp=12, layers=2, seed=seed)
    left, right = folder / f"{name}_left.png", folder / f"{name}_right.png"
    write_png(left, sample.left)
    write_png(right, sample.right)
    return left, right


def assert_disparity_file(path: Path, shape: tuple[int, int], min_density: float = 0.8) -> dict:
    """The four outputs of a pair agree: PFM (float, inf = none), KITTI PNG (1/256 px), colour PNG, JSON record."""
    import json

    assert path.with_name(path.name.replace("_disp.png", "_disp_color.png")).is_file()
    disp = read_kitti_disp(path)
    exact = read_pfm(path.with_suffix(".pfm"))
    assert disp.shape == exact.shape == shape and np.isfinite(disp).mean() > min_density
    # KITTI's PNG has no code for a disparity of 0 (0 means unknown); the PFM keeps it
    assert np.array_equal(np.isnan(disp), np.isnan(exact) | (exact < 0.5 / 256))
    assert np.nanmax(np.abs(disp - exact)) <= 0.5 / 256 + 1e-6
    return json.loads(path.with_suffix(".json").read_text())


def test_infer_one_pair(model_file, tmp_path):
    left, right = write_pair(tmp_path, "a", 0)
    res = invoke("infer", left, right, "--model", model_file, "--max-disp", 12, "--out", tmp_path / "out")
    assert res.exit_code == 0, res.output
    assert_disparity_file(tmp_path / "out" / "a_left_disp.png", (40, 72))
    assert (read_pfm(tmp_path / "out" / "a_left_disp.pfm") == 0).any()  # winner-take-all answers 0 at the left edge
    assert len(res.output.strip().splitlines()) == 1 and res.output.startswith("a_left: ")


def test_infer_dataset_folder(model_file, tmp_path):
    from stereodeploy.data.datasets import list_frames

    root = tmp_path / "middlebury"
    for i in range(2):
        left, right = write_pair(tmp_path, f"s{i}", i)
        (root / f"scene{i}").mkdir(parents=True)
        left.rename(root / f"scene{i}" / "im0.png")
        right.rename(root / f"scene{i}" / "im1.png")
    assert [f.name for f in list_frames(root)] == ["scene0", "scene1"]
    res = invoke("infer", root, "--model", model_file, "--max-disp", 12, "--out", tmp_path / "out")
    assert res.exit_code == 0, res.output
    assert len(res.output.strip().splitlines()) == 2
    for name in ("scene0", "scene1"):
        record = assert_disparity_file(tmp_path / "out" / f"{name}_disp.png", (40, 72))
        assert record["sgm_preset"] == "middlebury" and record["max_disp"] == 12
        assert record["left"].endswith(f"{name}/im0.png")


def test_infer_takes_the_sgm_preset_from_the_data(model_file, tmp_path):
    root = tmp_path / "kitti"
    for side in ("image_2", "image_3", "disp_noc_0"):
        (root / "training" / side).mkdir(parents=True)
    left, right = write_pair(tmp_path, "f", 0)
    left.rename(root / "training" / "image_2" / "000001_10.png")
    right.rename(root / "training" / "image_3" / "000001_10.png")
    common = ["--model", model_file, "--max-disp", 12, "--postprocess", "full"]
    res = invoke("infer", root, *common, "--out", tmp_path / "a")
    assert res.exit_code == 0, res.output
    assert "SGM preset kitti2015 (detected from the data's folders; --preset chooses another)" in res.output
    assert assert_disparity_file(tmp_path / "a" / "000001_10_disp.png", (40, 72))["sgm_preset"] == "kitti2015"
    res = invoke("infer", root, *common, "--preset", "kitti2012", "--out", tmp_path / "b")
    assert "SGM preset kitti2012 (--preset)" in res.output
    assert assert_disparity_file(tmp_path / "b" / "000001_10_disp.png", (40, 72))["sgm_preset"] == "kitti2012"
    res = invoke("infer", root, *common, "--format", "middlebury", "--out", tmp_path / "c")
    assert res.exit_code == 1 and "no stereo pairs found for format middlebury" in res.output


def test_infer_pairs_file_checks_every_output_first(model_file, tmp_path):
    (tmp_path / "img").mkdir()
    lines = ["# left right"]
    for i in range(3):
        left, right = write_pair(tmp_path / "img", f"p{i}", i)
        lines.append(f"img/{left.name} {right.resolve()}")  # relative to the list's folder, or absolute
    (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "p2_left_disp.png").write_bytes(b"keep")
    res = invoke("infer", "--pairs", tmp_path / "pairs.txt", "--model", model_file, "--max-disp", 12, "--out", out)
    assert res.exit_code == 2 and "p2_left_disp.png exists" in res.output and "Traceback" not in res.output
    assert sorted(p.name for p in out.iterdir()) == ["p2_left_disp.png"]  # nothing written before the refusal
    res = invoke("infer", "--pairs", tmp_path / "pairs.txt", "--model", model_file, "--max-disp", 12, "--out", out,
                 "--overwrite")
    assert res.exit_code == 0, res.output
    assert len(res.output.strip().splitlines()) == 3
    for i in range(3):
        assert_disparity_file(out / f"p{i}_left_disp.png", (40, 72))


def test_infer_usage_errors(model_file, tmp_path):
    left, right = write_pair(tmp_path, "a", 0)
    res = invoke("infer", left, "--model", model_file)
    assert res.exit_code == 2 and "a_left.png is one file: give LEFT RIGHT images" in res.output
    (tmp_path / "bad.txt").write_text(f"{left} {right} name extra\n")
    res = invoke("infer", "--pairs", tmp_path / "bad.txt", "--model", model_file)
    assert res.exit_code == 2 and "bad.txt:1" in res.output
    res = invoke("infer", left, tmp_path / "missing.png", "--model", model_file, "--out", tmp_path / "o")
    assert res.exit_code == 1 and "missing.png not found" in res.output and not (tmp_path / "o").exists()


def test_infer_warns_about_a_swapped_pair_in_one_line(model_file, tmp_path):
    left, right = write_pair(tmp_path, "a", 0)
    res = invoke("infer", right, left, "--model", model_file, "--max-disp", 12, "--out", tmp_path / "swapped")
    assert res.exit_code == 0, res.output
    warning = [line for line in res.output.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "swapped" in warning[0], res.output
    assert assert_disparity_file(tmp_path / "swapped" / "a_right_disp.png", (40, 72), 0)["swapped_score"] > 0.5
    res = invoke("infer", left, right, "--model", model_file, "--max-disp", 12, "--out", tmp_path / "fine")
    assert "warning" not in res.output
    assert assert_disparity_file(tmp_path / "fine" / "a_left_disp.png", (40, 72))["swapped_score"] < 0.5


def test_infer_pairs_file_names_outputs_and_models_by_name(tmp_path):
    scenes = []
    for i in range(2):
        left, right = write_pair(tmp_path, f"s{i}", i)
        (tmp_path / f"scene{i}").mkdir()
        scenes.append((left.rename(tmp_path / f"scene{i}" / "im0.png"), right.rename(tmp_path / f"scene{i}" / "im1.png")))
    (tmp_path / "pairs.txt").write_text("".join(f"scene{i}/im0.png scene{i}/im1.png Scene{i}\n" for i in range(2)))
    res = invoke("infer", "--pairs", tmp_path / "pairs.txt", "--model", "mccnn_fast_torch_int8", "--max-disp", 12,
                 "--out", tmp_path / "out")
    assert res.exit_code == 0, res.output
    for i in range(2):
        record = assert_disparity_file(tmp_path / "out" / f"Scene{i}_disp.png", (40, 72))
        assert record["model"].endswith("mccnn_fast_torch_int8.onnx")
    res = invoke("infer", "--pairs", tmp_path / "pairs.txt", "--model", "no_such_model", "--out", tmp_path / "x")
    assert res.exit_code == 1 and "stereodeploy models" in res.output and not (tmp_path / "x").exists()
    listing = invoke("models")
    assert listing.exit_code == 0 and "mccnn_fast_torch (default)" in listing.output
    assert "mccnn_fast_tf" in listing.output and "int8" in listing.output


def test_infer_says_a_missing_path_does_not_exist_and_which_preset_applied(model_file, tmp_path):
    from stereodeploy.cli.app import preset_line

    res = invoke("infer", tmp_path / "nowhere", "--model", model_file)
    assert res.exit_code == 1 and f"{tmp_path / 'nowhere'} does not exist: check the path" in res.output
    assert "not a folder" not in res.output
    assert preset_line("middlebury", False, None, False) == \
        "SGM preset middlebury (the default: the data's folders name no dataset; --preset chooses another)"
    assert preset_line("kitti2012", False, "kitti2012", True) == \
        "SGM preset kitti2012 (from --format; --preset chooses another)"
