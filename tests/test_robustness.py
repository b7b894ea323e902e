"""Bad input ends with one clear line and a non-zero exit; interrupted training resumes exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import onnxruntime_has_cuda, write_feature_model
from PIL import Image
from typer.testing import CliRunner

from stereodeploy.cli.app import app
from stereodeploy.data.io import write_png

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_clean_failure(res, code: int, *phrases: str) -> None:
    """One line on stderr naming the problem, the right exit code, no traceback."""
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output
    err = res.stderr if hasattr(res, "stderr") else res.output
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A folder with a tiny feature model m.onnx."""
    root = tmp_path_factory.mktemp("robust")
    write_feature_model(root / "m.onnx")
    return root


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    from stereodeploy.data.datasets import synthetic_pair

    root = tmp_path_factory.mktemp("pair")
    s = synthetic_pair(height=40, width=64, seed=1)
    write_png(root / "l.png", s.left)
    write_png(root / "r.png", s.right)
    return root / "l.png", root / "r.png"


def infer(model, left, right, out, *extra):
    return invoke("infer", left, right, "--model", model / "m.onnx", "--out", out, *extra)


def test_missing_empty_truncated_and_non_images(model, pair, tmp_path):
    left, right = pair
    assert_clean_failure(infer(model, tmp_path / "nope.png", right, tmp_path / "o"), 1, "nope.png")
    (tmp_path / "empty.png").write_bytes(b"")
    assert_clean_failure(infer(model, tmp_path / "empty.png", right, tmp_path / "o"), 1, "empty.png")
    data = left.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    assert_clean_failure(infer(model, tmp_path / "cut.png", right, tmp_path / "o"), 1, "cut.png")
    (tmp_path / "text.png").write_text("hello")
    assert_clean_failure(infer(model, tmp_path / "text.png", right, tmp_path / "o"), 1, "text.png")
    assert not (tmp_path / "o").exists()  # nothing written


def test_sizes_and_disparity_range(model, pair, tmp_path):
    left, right = pair
    write_png(tmp_path / "small.png", np.zeros((30, 50), np.uint8))
    assert_clean_failure(infer(model, left, tmp_path / "small.png", tmp_path / "o"), 2, "differ in size")
    write_png(tmp_path / "tiny_l.png", np.zeros((3, 3), np.uint8))
    write_png(tmp_path / "tiny_r.png", np.zeros((3, 3), np.uint8))
    assert_clean_failure(infer(model, tmp_path / "tiny_l.png", tmp_path / "tiny_r.png", tmp_path / "o"), 2, "smaller")
    for bad in ("0", "-3", "64", "500"):
        assert_clean_failure(infer(model, left, right, tmp_path / "o", "--max-disp", bad), 2, "max disparity")
    assert not (tmp_path / "o").exists()


def test_image_modes(model, pair, tmp_path):
    left, right = pair
    gray = np.asarray(Image.open(left))
    # 16-bit grayscale and opaque RGBA convert; the disparity is the same as for the 8-bit pair
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "l16.png")
    Image.fromarray(np.dstack([gray] * 3 + [np.full_like(gray, 255)])).save(tmp_path / "lrgba.png")
    ref = infer(model, left, right, tmp_path / "ref")
    assert ref.exit_code == 0, ref.output
    from stereodeploy.data.io import read_kitti_disp

    expected = read_kitti_disp(tmp_path / "ref" / "l_disp.png")
    for name in ("l16.png", "lrgba.png"):
        res = infer(model, tmp_path / name, right, tmp_path / f"out_{name}")
        assert res.exit_code == 0, res.output
        got = read_kitti_disp(tmp_path / f"out_{name}" / f"{Path(name).stem}_disp.png")
        assert np.mean((got == expected) | (np.isnan(got) & np.isnan(expected))) > 0.99
    # a translucent RGBA image has no one grayscale meaning: refused
    alpha = np.dstack([gray] * 3 + [np.full_like(gray, 100)])
    Image.fromarray(alpha).save(tmp_path / "translucent.png")
    assert_clean_failure(infer(model, tmp_path / "translucent.png", right, tmp_path / "o"), 1, "translucent.png")


def test_bad_models(pair, tmp_path, model):
    import onnx

    left, right = pair
    (tmp_path / "corrupt.onnx").write_bytes(b"\x08\x07garbage")
    res = invoke("infer", left, right, "--model", tmp_path / "corrupt.onnx", "--out", tmp_path / "o")
    assert_clean_failure(res, 1, "corrupt.onnx")
    # valid ONNX from stereodeploy, with its metadata removed
    proto = onnx.load(str(model / "m.onnx"))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "plain.onnx"))
    res = invoke("infer", left, right, "--model", tmp_path / "plain.onnx", "--out", tmp_path / "o")
    assert_clean_failure(res, 1, "not a stereodeploy feature model")
    # a model that asks for an opset this onnxruntime does not have
    proto = onnx.load(str(model / "m.onnx"))
    proto.opset_import[0].version = 99
    onnx.save(proto, str(tmp_path / "future.onnx"))
    res = invoke("infer", left, right, "--model", tmp_path / "future.onnx", "--out", tmp_path / "o")
    assert_clean_failure(res, 1, "opset")
    if not onnxruntime_has_cuda():
        res = invoke("infer", left, right, "--model", model / "m.onnx", "--provider", "cuda", "--out", tmp_path / "o")
        assert_clean_failure(res, 1, "CUDA")
    assert not (tmp_path / "o").exists()


def test_outputs_that_exist_or_cannot_be_written(model, pair, tmp_path):
    left, right = pair
    (tmp_path / "blocker").write_text("a file where a folder should be")
    assert_clean_failure(infer(model, left, right, tmp_path / "blocker"), 1, "blocker")
    res = invoke("export", model / "run", "--out", model / "m.onnx")
    assert_clean_failure(res, 2, "exists", "--overwrite")


def test_dataset_and_checkpoint_mistakes(tmp_path, synthetic_dataset):
    pytest.importorskip("torch")
    (tmp_path / "random").mkdir()
    (tmp_path / "random" / "notes.txt").write_text("no images here")
    res = invoke("train", "torch", "--data", tmp_path / "random", "--out", tmp_path / "run", "--no-progress")
    assert_clean_failure(res, 1, "random")
    res = invoke("export", tmp_path / "random", "--out", tmp_path / "x.onnx")
    assert_clean_failure(res, 1, "checkpoint")
    assert not (tmp_path / "x.onnx").exists()
    # a run from a newer stereodeploy
    run = tmp_path / "newer"
    res = invoke("train", "torch", "--data", synthetic_dataset, "--out", run, "--epochs", "1", "--max-examples", "64",
                 "--layers", "2", "--maps", "4", "--no-progress")
    assert res.exit_code == 0, res.output
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    res = invoke("train", "torch", "--resume", "--out", run, "--no-progress")
    assert_clean_failure(res, 1, "newer", "upgrade")
    (run / "config.json").write_text(json.dumps(config))
    res = invoke("train", "tf", "--resume", "--out", run, "--no-progress")
    assert_clean_failure(res, 1, "torch run, not tf")


def test_frames_without_ground_truth_are_skipped_with_a_warning(tmp_path, synthetic_dataset, caplog):
    pytest.importorskip("torch")
    import shutil

    data = tmp_path / "mixed"
    shutil.copytree(synthetic_dataset, data)
    (data / "scene1" / "disp0GT.pfm").unlink()
    res = invoke("train", "torch", "--data", data, "--out", tmp_path / "run", "--epochs", "1", "--max-examples", "64",
                 "--layers", "2", "--maps", "4", "--no-progress")
    assert res.exit_code == 0, res.output
    assert "skipped 1 of 2 frames without ground truth" in caplog.text
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["skipped_without_gt"] == ["scene1"]


def _checkpoint_position(path: Path) -> tuple[int, int] | None:
    from stereodeploy.train.checkpoint import load_checkpoint

    try:
        ckpt = load_checkpoint(path)
    except Exception:  # noqa: BLE001 - not written yet
        return None
    return ckpt.epoch, ckpt.batch


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_weights(tmp_path, synthetic_dataset):
    pytest.importorskip("torch")
    from stereodeploy.train.checkpoint import load_checkpoint

    args = ["--data", str(synthetic_dataset), "--epochs", "3", "--max-examples", "3200", "--layers", "2",
            "--maps", "8", "--checkpoint-every", "7", "--seed", "3", "--no-progress"]
    cmd = [sys.executable, "-m", "stereodeploy.cli.app", "train", "torch"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd + args + ["--out", str(tmp_path / "straight")], check=True, env=env, capture_output=True)

    proc = subprocess.Popen(cmd + args + ["--out", str(tmp_path / "killed")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "killed" / "checkpoint.npz"
    deadline = time.monotonic() + 120
    position = None
    while time.monotonic() < deadline and proc.poll() is None:
        position = _checkpoint_position(ckpt)
        if position and position[1] > 0:  # a mid-epoch checkpoint exists
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training ended before it could be killed mid-epoch"
    assert position is not None and position[1] > 0

    res = subprocess.run(cmd + ["--resume", "--out", str(tmp_path / "killed"), "--no-progress"], env=env,
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    a = load_checkpoint(tmp_path / "straight").weights
    b = load_checkpoint(tmp_path / "killed").weights
    for (ka, ba), (kb, bb) in zip(a, b):
        np.testing.assert_array_equal(ka, kb)
        np.testing.assert_array_equal(ba, bb)
    rows = [json.loads(x) for x in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2]


def test_overwrite_removes_the_old_runs_checkpoint_and_resume_checks_the_data(tmp_path, synthetic_dataset):
    pytest.importorskip("torch")
    import shutil

    common = ["--epochs", "1", "--max-examples", "64", "--layers", "2", "--maps", "4", "--no-progress"]
    run = tmp_path / "run"
    assert invoke("train", "torch", "--data", synthetic_dataset, "--out", run, *common).exit_code == 0
    (run / "checkpoint.npz").write_bytes(b"old")  # stands for the previous run's checkpoint
    (run / "notes.txt").write_text("mine")
    res = invoke("train", "torch", "--data", synthetic_dataset, "--out", run, "--overwrite", *common)
    assert res.exit_code == 0, res.output
    assert (run / "checkpoint.npz").read_bytes() != b"old" and (run / "notes.txt").read_text() == "mine"
    # resuming with other data than the run was trained on is refused
    other = tmp_path / "other"
    shutil.copytree(synthetic_dataset, other)
    shutil.rmtree(other / "scene1")
    res = invoke("train", "torch", "--resume", "--data", other, "--out", run, "--no-progress")
    assert_clean_failure(res, 1, "not the data it was trained on")
    res = invoke("train", "torch", "--data", synthetic_dataset, "--exclude", "nosuchscene", "--out", tmp_path / "x",
                 *common)
    assert_clean_failure(res, 2, "nosuchscene")
    (tmp_path / "afile").write_text("")
    res = invoke("train", "torch", "--data", synthetic_dataset, "--out", tmp_path / "afile", *common)
    assert_clean_failure(res, 2, "is a file")
    res = invoke("export", run, "--out", tmp_path / "m.onnx", "--max-disp", "0")
    assert_clean_failure(res, 2, "at least 1")
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07garbage")
    scene = synthetic_dataset / "scene0"
    res = invoke("infer", scene / "im0.png", scene / "im1.png", "--model", tmp_path / "bad.onnx",
                 "--backend", "torch", "--out", tmp_path / "o")
    assert_clean_failure(res, 1, "not a readable ONNX file")


def test_a_run_directory_given_as_model_gets_advice_that_works(tmp_path, synthetic_dataset, pair, monkeypatch):
    pytest.importorskip("torch")
    run, left, right = tmp_path / "run", *pair
    assert invoke("train", "torch", "--data", synthetic_dataset, "--out", run, "--epochs", "1", "--max-examples", "64",
                  "--layers", "2", "--maps", "8", "--no-progress").exit_code == 0
    res = invoke("infer", left, right, "--model", run, "--max-disp", 12, "--out", tmp_path / "o")
    assert_clean_failure(res, 1, f"{run} is a folder", f"stereodeploy export {run} --out model.onnx",
                         "--backend torch|tf")
    # both pieces of advice work as written
    monkeypatch.chdir(tmp_path)
    assert invoke("export", run, "--out", "model.onnx").exit_code == 0
    assert invoke("infer", left, right, "--model", tmp_path / "model.onnx", "--max-disp", 12,
                  "--out", tmp_path / "a").exit_code == 0
    assert invoke("infer", left, right, "--model", run, "--backend", "torch", "--max-disp", 12,
                  "--out", tmp_path / "b").exit_code == 0
