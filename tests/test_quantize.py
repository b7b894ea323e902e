"""int8 quantisation: the contract and metadata survive, features stay close to float32, mistakes are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stereodeploy.config import NetworkConfig
from stereodeploy.data.datasets import synthetic_pair
from stereodeploy.data.io import write_png
from stereodeploy.data.preprocess import to_gray
from stereodeploy.errors import UsageError, UserError
from stereodeploy.nets.weights import init_weights
from tests.conftest import write_feature_model

pytest.importorskip("onnxruntime.quantization")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from stereodeploy.deploy.quantize import (
    QUANT_KEY,
    calibration_crops,
    int8_path,
    quantize_file,
    quantize_model,
    summary,
)

NET = NetworkConfig(layers=3, maps=16, kernel=3)  # first conv stays float, two are quantised


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised feature model in the export contract, built without a framework (the same graph as
    torch's export, tests/test_architecture.py), beside the checkpoint of its weights."""
    from stereodeploy.train.checkpoint import Checkpoint, save_checkpoint

    root = tmp_path_factory.mktemp("quant")
    save_checkpoint(root / "checkpoint.npz", Checkpoint(framework="torch", network=NET, weights=init_weights(NET, 0)))
    return write_feature_model(root / "model.onnx", NET, max_disp=24)


@pytest.fixture(scope="module")
def calibration_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("calib")
    for seed in range(2):
        s = synthetic_pair(height=80, width=120, max_disp=16, seed=seed)
        write_png(root / f"left{seed}.png", s.left)
        write_png(root / f"right{seed}.png", s.right)
    return root


def features(path: Path, image: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(["features"], {"image": image[None, None].astype(np.float32)})[0][0]


def test_int8_model_keeps_contract_metadata_and_features(fp32_model: Path, calibration_dir: Path, tmp_path: Path):
    out = tmp_path / "m_int8.onnx"
    report = quantize_model(fp32_model, out, [calibration_dir], crop_size=64, crops_per_image=2)
    assert report.path == out and out.is_file()
    assert report.images == 4 and report.crops == 8 and report.crop_size == 64
    q = onnx.load_model(str(out))
    assert [i.name for i in q.graph.input] == ["image"] and [o.name for o in q.graph.output] == ["features"]
    props = {p.key: p.value for p in q.metadata_props}
    fp = {p.key: p.value for p in onnx.load_model(str(fp32_model)).metadata_props}
    assert all(props[k] == v for k, v in fp.items())  # every float32 key carried over unchanged
    info = json.loads(props[QUANT_KEY])
    assert info["activations"] == "uint8" and info["calibration"]["crops"] == 8
    ops = [n.op_type for n in q.graph.node]
    assert ops.count("QuantizeLinear") >= 2
    # the first convolution reads the float normalised image, not a dequantised one
    producers = {o: n.op_type for n in q.graph.node for o in n.output}
    convs = [n for n in q.graph.node if n.op_type == "Conv"]
    assert producers.get(convs[0].input[0]) != "DequantizeLinear"
    assert all(producers.get(c.input[0]) == "DequantizeLinear" for c in convs[1:])
    assert info["float32_convolutions"] == [convs[0].name] == report.excluded

    # held-out image (another seed): int8 feature vectors point where the float32 ones do
    img = to_gray(synthetic_pair(height=72, width=100, max_disp=16, seed=9).left)
    fa, fb = features(fp32_model, img), features(out, img)
    assert fa.shape == fb.shape == (NET.maps, 72, 100)
    cos = (fa * fb).sum(axis=0)
    assert cos.mean() > 0.98 and np.percentile(cos, 1) > 0.9
    assert report.cosine_mean > 0.98


def test_int8_model_matches_like_the_float_model(fp32_model: Path, calibration_dir: Path, tmp_path: Path):
    from stereodeploy.engine.matcher import StereoMatcher

    out = quantize_model(fp32_model, tmp_path / "q.onnx", [calibration_dir / "left0.png"], crop_size=64).path
    s = synthetic_pair(height=64, width=96, max_disp=12, seed=21)
    d32 = StereoMatcher.from_file(fp32_model, max_disp=16)(s.left, s.right)
    d8 = StereoMatcher.from_file(out, max_disp=16)(s.left, s.right)
    assert np.mean(d32 == d8) > 0.9
    known = np.isfinite(s.disp)
    assert np.mean(np.abs(d8[known] - s.disp[known]) < 3) > np.mean(np.abs(d32[known] - s.disp[known]) < 3) - 0.05


def test_progress_callback_sees_every_calibration_crop(fp32_model: Path, calibration_dir: Path, tmp_path: Path,
                                                      capsys):
    calls: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        calls.append((done, total))
        print(f"crop {done}/{total}")  # a caller's callback may print: its output is not swallowed

    report = quantize_model(fp32_model, tmp_path / "q.onnx", [calibration_dir / "left0.png"], crop_size=32,
                            crops_per_image=3, progress=progress)
    assert calls == [(i, 5) for i in range(1, 6)] and report.crops == 3  # 3 crops, quantisation, feature check
    assert capsys.readouterr().out.splitlines() == [f"crop {i}/5" for i in range(1, 6)]


def test_progress_true_draws_a_bar_on_a_terminal_s_stderr(fp32_model: Path, calibration_dir: Path, tmp_path: Path,
                                                          capfd, monkeypatch):
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    monkeypatch.setenv("FORCE_COLOR", "0")
    quantize_model(fp32_model, tmp_path / "q.onnx", [calibration_dir / "left0.png"], crop_size=32,
                   crops_per_image=2, progress=True)
    captured = capfd.readouterr()
    assert "int8: calibrating" in captured.err and "4/4" in captured.err
    assert "calibrating" not in captured.out  # stdout stays for results


@pytest.mark.parametrize("progress", [False, True])  # True, but stderr is not a terminal here (a log file)
def test_without_a_bar_each_stage_is_logged(fp32_model: Path, calibration_dir: Path, tmp_path: Path, caplog,
                                            progress: bool):
    import logging

    with caplog.at_level(logging.INFO, logger="stereodeploy"):
        quantize_model(fp32_model, tmp_path / "q.onnx", [calibration_dir / "left0.png"], crop_size=32,
                       crops_per_image=4, progress=progress)
    lines = [r.getMessage() for r in caplog.records if r.name == "stereodeploy"]
    assert lines[0] == "int8: calibrating on 4 crops of 1 image"
    assert [line.split(" (")[0] for line in lines[1:-1]] == [
        "int8: calibrated 1 of 4 crops", "int8: calibrated 2 of 4 crops", "int8: calibrated 3 of 4 crops",
        "int8: calibration done", "int8: quantised"]
    assert lines[-1].startswith("int8: done in ")
    from stereodeploy.deploy.quantize import count

    assert (count(1, "image"), count(4, "crop"), count(0, "crop")) == ("1 image", "4 crops", "0 crops")


def test_quantize_file_defaults_beside_the_input_and_checks_before_work(fp32_model: Path, calibration_dir: Path,
                                                                       tmp_path: Path):
    import shutil

    model = tmp_path / "m.onnx"
    shutil.copy(fp32_model, model)
    report = quantize_file(model, calibration=[calibration_dir / "left1.png"], crop_size=32, crops_per_image=1)
    assert report.path == tmp_path / "m_int8.onnx" and report.path.is_file()
    line = summary(report)
    assert line.startswith(f"wrote {report.path}: int8") and "calibrated on 1 crop of 1 image;" in line and "\n" not in line
    with pytest.raises(UsageError, match="exists: pass --overwrite"):  # refused before the calibration is read
        quantize_file(model, calibration=[tmp_path / "missing"])
    with pytest.raises(UsageError, match="is the model being quantised"):
        quantize_file(model, model, overwrite=True)
    with pytest.raises(UserError, match="calibration source .*missing does not exist"):
        quantize_file(model, tmp_path / "other.onnx", [tmp_path / "missing"])
    assert not (tmp_path / "other.onnx").exists()
    again = quantize_file(model, calibration=[calibration_dir / "left1.png"], crop_size=32, crops_per_image=1,
                          overwrite=True)
    assert again.path == report.path


def test_calibration_crops_are_seeded_and_fit_small_images():
    imgs = [np.arange(50 * 40, dtype=np.float32).reshape(50, 40), np.ones((300, 500), np.float32)]
    a = calibration_crops(imgs, size=64, per_image=3, seed=1)
    b = calibration_crops(imgs, size=64, per_image=3, seed=1)
    assert len(a) == 6 and all(x.shape == (1, 1, 40, 40) for x in a[:3]) and a[3].shape == (1, 1, 64, 64)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert int8_path("dir/model.onnx") == Path("dir/model_int8.onnx")


def test_mistakes_are_refused(fp32_model: Path, calibration_dir: Path, tmp_path: Path):
    with pytest.raises(UserError, match="does not exist"):
        quantize_model(fp32_model, tmp_path / "a.onnx", [tmp_path / "missing.png"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no stereo dataset and no images"):
        quantize_model(fp32_model, tmp_path / "a.onnx", [tmp_path / "empty"])
    with pytest.raises(UserError, match="does not exist"):
        quantize_model(tmp_path / "nope.onnx", tmp_path / "a.onnx", [calibration_dir])
    (tmp_path / "exists.onnx").write_bytes(b"x")
    with pytest.raises(UsageError, match="exists"):
        quantize_model(fp32_model, tmp_path / "exists.onnx", [calibration_dir])
    q = quantize_model(fp32_model, tmp_path / "q.onnx", [calibration_dir / "left1.png"], crop_size=32).path
    with pytest.raises(UserError, match="already quantised"):
        quantize_model(q, tmp_path / "qq.onnx", [calibration_dir])
    plain = onnx.load_model(str(fp32_model))
    del plain.metadata_props[:]
    onnx.save_model(plain, str(tmp_path / "plain.onnx"))
    with pytest.raises(UserError, match="not a stereodeploy"):
        quantize_model(tmp_path / "plain.onnx", tmp_path / "b.onnx", [calibration_dir])
    assert not (tmp_path / "a.onnx").exists() and not (tmp_path / "b.onnx").exists()


def test_cli_export_quantize(fp32_model: Path, calibration_dir: Path, tmp_path: Path):
    pytest.importorskip("torch", reason="exports a torch checkpoint with PyTorch (torch)")
    from typer.testing import CliRunner

    from stereodeploy.cli.app import app

    ckpt = fp32_model.parent / "checkpoint.npz"
    out = tmp_path / "exp" / "model.onnx"
    res = CliRunner().invoke(app, ["export", str(ckpt), "--out", str(out), "--max-disp", "24", "--quantize", "int8",
                                   "--calibration", str(calibration_dir / "left0.png"),
                                   "--calibration", str(calibration_dir / "right0.png")])
    assert res.exit_code == 0, res.output
    assert out.is_file() and (tmp_path / "exp" / "model_int8.onnx").is_file()
    assert "model_int8.onnx" in res.output and "2 images" in res.output
    res = CliRunner().invoke(app, ["export", str(ckpt), "--out", str(tmp_path / "x.onnx"),
                                   "--calibration", str(calibration_dir)])
    assert res.exit_code == 2 and "only used with --quantize" in res.output
    assert not (tmp_path / "x.onnx").exists()
    # an existing int8 file is refused before anything is exported
    (tmp_path / "exp" / "again_int8.onnx").write_bytes(b"x")
    res = CliRunner().invoke(app, ["export", str(ckpt), "--out", str(tmp_path / "exp" / "again.onnx"),
                                   "--quantize", "int8", "--calibration", str(calibration_dir)])
    assert res.exit_code == 2 and not (tmp_path / "exp" / "again.onnx").exists()
    res = CliRunner().invoke(app, ["export", str(ckpt), "--out", str(tmp_path / "exp" / "third.onnx"),
                                   "--quantize", "int8", "--calibration", str(tmp_path / "missing")])
    assert res.exit_code == 1 and "does not exist" in res.output and not (tmp_path / "exp" / "third.onnx").exists()


@pytest.mark.slow
def test_real_pairs_error_stays_within_half_a_point(shared_data: Path):
    """The shipped model, calibrated on its own training scenes, on Middlebury scenes it was not trained on."""
    from stereodeploy.contract import read_meta
    from stereodeploy.data.datasets import load_dataset
    from stereodeploy.engine.matching import wta_from_features
    from stereodeploy.study.evaluate import error_rate

    model = Path(__file__).resolve().parents[1] / "models" / "mccnn_fast_torch.onnx"
    if not model.is_file():
        pytest.skip("no shipped model in models/")
    trained = set(read_meta(onnx.load_model(str(model))).training_data.get("frames", []))
    scenes = load_dataset(shared_data / "middlebury")
    held_out = [s for s in scenes if s.name not in trained and s.disp is not None][:6]
    calib = [shared_data / "middlebury" / s.name for s in scenes if s.name in trained][:4]
    if len(held_out) < 3 or not calib:
        pytest.skip("the shipped model's training frames leave too few held-out Middlebury scenes")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        q = quantize_model(model, Path(tmp) / "q.onnx", calib).path
        rates = {}
        for name, path in (("fp32", model), ("int8", q)):
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            errs = []
            for s in held_out:
                x = np.stack([to_gray(s.left), to_gray(s.right)])[:, None].astype(np.float32)
                f = sess.run(["features"], {"image": x})[0]
                nd = min(int(np.nanmax(s.disp)) + 8, x.shape[-1] - 1)
                errs.append(error_rate(wta_from_features(f[0], f[1], nd), s.disp))
            rates[name] = float(np.mean(errs))
    assert rates["int8"] - rates["fp32"] <= 0.5, rates


def test_native_backend_refuses_an_int8_model_in_one_line(fp32_model: Path, calibration_dir: Path, tmp_path: Path):
    from stereodeploy.engine.backends import load_weights
    from stereodeploy.errors import UserError

    out = tmp_path / "q_int8.onnx"
    quantize_model(fp32_model, out, [calibration_dir], crop_size=64, crops_per_image=1)
    with pytest.raises(UserError, match="no float32 weights"):
        load_weights(out)
