"""The command line end to end on tiny synthetic data: train torch -> export -> infer."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from stereodeploy.cli.app import app
from stereodeploy.data.io import read_image, read_kitti_disp

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_import_and_infer_do_not_load_tensorflow():
    code = ("import sys, stereodeploy, stereodeploy.cli.app, stereodeploy.engine.matcher; "
            "print('tensorflow' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


@pytest.mark.slow
def test_train_export_infer(synthetic_dataset, tmp_path):
    pytest.importorskip("torch")
    run = tmp_path / "run"
    res = invoke("train", "torch", "--data", synthetic_dataset, "--out", run, "--epochs", "2", "--max-examples", "512",
                 "--layers", "2", "--maps", "8", "--lr-drop", "1", "--no-progress")
    assert res.exit_code == 0, res.output
    assert "2 epochs" in res.output and "examples/s" in res.output
    config = json.loads((run / "config.json").read_text())
    assert config["framework"] == "torch" and config["network"] == {"layers": 2, "maps": 8, "kernel": 3}
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows] == pytest.approx([0.002, 0.0002])

    res = invoke("export", run, "--out", tmp_path / "m.onnx", "--max-disp", "16")
    assert res.exit_code == 0, res.output
    assert "largest difference" in res.output

    scene = synthetic_dataset / "scene0"
    out = tmp_path / "pred"
    res = invoke("infer", scene / "im0.png", scene / "im1.png", "--model", tmp_path / "m.onnx", "--out", out)
    assert res.exit_code == 0, res.output
    disp = read_kitti_disp(out / "im0_disp.png")
    left = read_image(scene / "im0.png")
    assert disp.shape == left.shape[:2] and np.nanmax(disp) < 16
    color = read_image(out / "im0_disp_color.png")  # the map, then its colour bar below
    assert color.shape[1:] == (left.shape[1], 3) and color.shape[0] > left.shape[0]

    # nothing is overwritten without being asked
    before = (out / "im0_disp.png").read_bytes()
    res = invoke("infer", scene / "im0.png", scene / "im1.png", "--model", tmp_path / "m.onnx", "--out", out)
    assert res.exit_code == 2 and "exists" in res.output and "Traceback" not in res.output
    assert (out / "im0_disp.png").read_bytes() == before


def test_train_needs_data_and_refuses_a_used_run_directory(synthetic_dataset, tmp_path):
    pytest.importorskip("torch")  # the framework is checked first, before the data and the run directory
    res = invoke("train", "torch", "--out", tmp_path / "run")
    assert res.exit_code == 2 and "--data" in res.output
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    res = invoke("train", "torch", "--data", synthetic_dataset, "--out", tmp_path / "used", "--no-progress")
    assert res.exit_code == 2 and "not empty" in res.output
    assert (tmp_path / "used" / "keep.txt").read_text() == "mine"


@pytest.mark.slow
def test_demo_scores_the_shipped_model_and_keeps_an_existing_picture(motorcycle, tmp_path):
    import re

    out = tmp_path / "demo"
    res = runner.invoke(app, ["demo", "--out", str(out)])
    assert res.exit_code == 0, res.output
    error = float(re.search(r">=3 px error ([0-9.]+)%", res.output).group(1))
    assert 0 < error < 15  # the shipped model with post-processing; the model card says 9.3 %
    for label in ("3-6 px", ">= 6 px or none", "no ground truth"):  # the legend's own labels (error_legend)
        assert label in res.output
    assert "red >= 3 px" not in res.output
    picture = out / "motorcycle_full.png"
    before = picture.read_bytes()
    assert before.startswith(b"\x89PNG")
    res = runner.invoke(app, ["demo", "--out", str(out)])
    assert res.exit_code == 2 and "--overwrite" in res.output and picture.read_bytes() == before
    assert runner.invoke(app, ["demo", "--out", str(out), "--postprocess", "none", "--overwrite"]).exit_code == 0
    assert (out / "motorcycle_none.png").is_file()


@pytest.mark.parametrize("framework, missing, extra", [("tf", "tensorflow", "tf"), ("torch", "torch", "torch")])
def test_train_checks_its_framework_before_reading_any_data(monkeypatch, tmp_path, framework, missing, extra):
    from stereodeploy import frameworks

    monkeypatch.setattr(frameworks, "_installed", lambda module: module != missing)
    res = invoke("train", framework, "--data", tmp_path / "no_such_dataset", "--out", tmp_path / "run")
    assert res.exit_code == 1
    assert f"needs {frameworks.FRAMEWORKS[framework].label} ({missing})" in res.output
    assert f"pip install 'stereodeploy[{extra}]'" in res.output and "no_such_dataset" not in res.output
    assert not (tmp_path / "run").exists()


def test_export_of_a_tensorflow_run_checks_for_tf2onnx(monkeypatch, tmp_path):
    from stereodeploy import frameworks
    from stereodeploy.config import NetworkConfig
    from stereodeploy.nets.weights import init_weights
    from stereodeploy.train.checkpoint import Checkpoint, save_checkpoint

    network = NetworkConfig(layers=2, maps=8, kernel=3)
    (tmp_path / "run").mkdir()
    save_checkpoint(tmp_path / "run" / "checkpoint.npz", Checkpoint("tf", network, init_weights(network, 0)))
    monkeypatch.setattr(frameworks, "_installed", lambda module: module != "tf2onnx")
    res = invoke("export", tmp_path / "run", "--out", tmp_path / "m.onnx")
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "exporting a TensorFlow run needs tf2onnx" in res.output and "pip install 'stereodeploy[tf]'" in res.output
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.slow
def test_resume_of_a_folder_without_a_run_suggests_a_command_that_works(synthetic_dataset, tmp_path):
    """Issue 19: it said "give --data again", which then failed; the command it suggests now is run here."""
    import re

    pytest.importorskip("torch")
    out = tmp_path / "runs" / "nothing"
    for extra in ((), ("--data", synthetic_dataset)):  # with or without --data: the same advice
        res = invoke("train", "torch", "--resume", "--out", out, *extra)
        assert res.exit_code == 1 and "give --data again" not in res.output, res.output
        command = re.search(r"`stereodeploy ([^`]+)`", res.output).group(1)
        assert "--resume" not in command and "DATA" in command
    args = [str(synthetic_dataset) if a == "DATA" else a for a in command.split()]
    res = invoke(*args, "--epochs", "1", "--max-examples", "64", "--layers", "2", "--maps", "8", "--no-progress")
    assert res.exit_code == 0, res.output
    assert (out / "config.json").is_file()
    assert "torch: 1 epoch in" in res.output  # not "1 epochs"
