"""The self-contained ONNX matcher: built from a feature model, run by bare onnxruntime, equal to the engine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from stereodeploy.config import NetworkConfig
from stereodeploy.data.datasets import synthetic_pair
from stereodeploy.data.preprocess import to_gray
from stereodeploy.errors import UserError

TINY_NET = NetworkConfig(layers=2, maps=8, kernel=3)

# Runs in a fresh interpreter that imports only onnxruntime and numpy, and proves stereodeploy stayed out.
BARE_RUN = """
import sys
import numpy as np
import onnxruntime as ort
data = np.load(sys.argv[1])
out = {}
for i, model in enumerate(sys.argv[2:]):
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    out[f"d{i}"] = session.run(["disparity"], {"left": data["left"], "right": data["right"]})[0]
    out[f"max_disp{i}"] = int(session.get_modelmeta().custom_metadata_map["stereodeploy.max_disp"])
assert not any(name.startswith("stereodeploy") for name in sys.modules), "stereodeploy was imported"
np.savez(sys.argv[1].replace(".npz", "_out.npz"), **out)
"""


def as_uint8(image: np.ndarray) -> np.ndarray:
    """A synthetic float image as a decoder would give it: uint8 (H, W, C)."""
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return image[..., None] if image.ndim == 2 else image


def engine_wta(model_file: Path, left: np.ndarray, right: np.ndarray, max_disp: int):
    from stereodeploy.engine.backends import OnnxBackend
    from stereodeploy.engine.matching import wta_from_features

    fl, fr = OnnxBackend(model_file).features_pair(left, right)
    return wta_from_features(fl, fr, max_disp), fl, fr


def test_bare_onnxruntime_matches_engine(model_file, tmp_path):
    import onnx

    from stereodeploy.deploy.export_matcher import build_matcher, export_matcher

    # 101 columns: one padded block of the default size, and seven blocks of 16 with a partial last one
    sample = synthetic_pair(height=45, width=101, max_disp=20, layers=3, seed=4)
    left8, right8 = as_uint8(sample.left), as_uint8(sample.right)  # (H, W, 1) as a gray PNG decodes
    left, right = to_gray(left8), to_gray(right8)
    report = export_matcher(model_file, tmp_path / "matcher.onnx", max_disp=20, postprocess="none")
    assert report.path.is_file() and report.max_disp == 20 and report.checked_pixels > 0
    small = build_matcher(onnx.load_model(str(model_file)), 20, block=16)
    onnx.save_model(small, str(tmp_path / "matcher16.onnx"))
    np.savez(tmp_path / "pair.npz", left=left8, right=right8)
    subprocess.run([sys.executable, "-c", BARE_RUN, str(tmp_path / "pair.npz"), str(tmp_path / "matcher.onnx"),
                    str(tmp_path / "matcher16.onnx")], check=True, cwd=tmp_path)
    out = np.load(tmp_path / "pair_out.npz")
    engine, fl, fr = engine_wta(model_file, left, right, 20)
    for i in (0, 1):
        disp = out[f"d{i}"]
        assert disp.shape == (45, 101) and disp.dtype == np.float32 and int(out[f"max_disp{i}"]) == 20
        ys, xs = np.nonzero(disp != engine)
        assert len(ys) <= 5, f"{len(ys)} pixels differ"
        for y, x in zip(ys, xs):  # the few that differ are ties: both disparities match equally well
            sims = [fl[:, y, x] @ fr[:, y, x - int(d[y, x])] for d in (disp, engine)]
            assert abs(sims[0] - sims[1]) < 1e-4
    visible = np.isfinite(sample.disp_noc)
    assert np.mean(out["d0"][visible] == sample.disp_noc[visible]) > 0.8  # it matches, not just agrees


def test_matcher_never_looks_left_of_the_image(model_file):
    """Right columns x - d < 0 do not exist: a pair whose best match would be there still gets d <= x."""
    import onnx
    import onnxruntime as ort

    from stereodeploy.deploy.export_matcher import build_matcher

    rng = np.random.default_rng(0)
    left = rng.integers(0, 256, (24, 40, 1), dtype=np.uint8)
    model = build_matcher(onnx.load_model(str(model_file)), 12, block=8)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    disp = session.run(["disparity"], {"left": left, "right": np.zeros_like(left)})[0]
    assert np.all(disp <= np.arange(40)) and np.all(disp >= 0)
    engine, _, _ = engine_wta(model_file, to_gray(left), np.zeros((24, 40), np.float32), 12)
    assert np.mean(disp == engine) > 0.99


def test_matcher_metadata_and_engine_refuses_it(model_file, tmp_path):
    import onnx

    from stereodeploy.deploy.export_matcher import export_matcher
    from stereodeploy.engine.backends import OnnxBackend

    report = export_matcher(model_file, tmp_path / "m.onnx", postprocess="none")
    path = report.path
    props = {p.key: p.value for p in onnx.load_model(str(path)).metadata_props}
    assert props["stereodeploy.format"] == "matcher/2" and props["stereodeploy.max_disp"] == "16"  # the model's
    assert props["stereodeploy.matcher.postprocess"] == "none"
    sidecar = json.loads(report.sidecar.read_text())  # the same contract for clients that cannot read metadata
    assert report.sidecar == tmp_path / "m.onnx.json" and sidecar["metadata"] == props
    assert sidecar["inputs"][0] == {"name": "left", "type": "uint8", "shape": ["height", "width", "channels"]}
    assert sidecar["outputs"] == [{"name": "disparity", "type": "float", "shape": ["height", "width"]}]
    assert props["stereodeploy.network"]  # the feature model's contract travels along
    with pytest.raises(UserError, match="self-contained matcher"):
        OnnxBackend(path)


def test_export_matcher_cli(model_file, tmp_path):
    from stereodeploy.cli.app import app

    out = tmp_path / "m.onnx"
    args = ["export-matcher", str(model_file), "--out", str(out), "--max-disp", "24", "--postprocess", "none"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert out.is_file() and (tmp_path / "m.onnx.json").is_file() and "max disparity 24" in res.output
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "exists" in res.output
    res = CliRunner().invoke(app, ["export-matcher", str(tmp_path / "none.onnx"), "--out", str(tmp_path / "x.onnx")])
    assert res.exit_code == 1 and "none.onnx not found" in res.output and "stereodeploy models" in res.output


def test_a_matcher_given_where_a_feature_model_belongs_says_what_it_is(model_file, tmp_path):
    from stereodeploy.cli.app import app

    matcher = tmp_path / "m.onnx"
    args = ["export-matcher", str(model_file), "--out", str(matcher), "--max-disp", "16", "--postprocess", "none"]
    assert CliRunner().invoke(app, args).exit_code == 0
    for command in (["export-matcher", str(matcher), "--out", str(tmp_path / "again.onnx")],
                    ["infer", str(matcher), str(matcher), "--model", str(matcher), "--out", str(tmp_path / "o")]):
        res = CliRunner().invoke(app, command)
        assert res.exit_code == 1 and "Traceback" not in res.output, res.output
        assert f"{matcher} is a self-contained matcher" in res.output and "upgrade" not in res.output


def test_export_matcher_takes_model_as_an_option_too(model_file, tmp_path):
    from stereodeploy.cli.app import app

    out = tmp_path / "m.onnx"
    res = CliRunner().invoke(app, ["export-matcher", "--model", str(model_file), "--out", str(out), "--max-disp", "20",
                                   "--postprocess", "none"])
    assert res.exit_code == 0, res.output
    assert "max disparity 20" in res.output and out.is_file()
    assert "checked against the engine on a synthetic pair: the same disparity at" in res.output
    res = CliRunner().invoke(app, ["export-matcher", str(model_file), "--model", str(tmp_path / "other.onnx"),
                                   "--out", str(tmp_path / "x.onnx")])
    assert res.exit_code == 2 and "given twice" in res.output and not (tmp_path / "x.onnx").exists()


def test_check_line_says_all_the_same_or_how_many_differ():
    from types import SimpleNamespace

    from stereodeploy.cli.app import check_line

    assert check_line(SimpleNamespace(checked_pixels=12288, differing_pixels=0, postprocess="full")) \
        == "the same disparity at all 12288 pixels"
    assert check_line(SimpleNamespace(checked_pixels=100, differing_pixels=3, postprocess="none")) \
        == "the same disparity at 97 of 100 pixels; 3 are ties between two disparities"


@pytest.mark.slow
def test_a_run_directory_gets_advice_that_works(tmp_path, monkeypatch):
    """export-matcher on a training run suggests two commands; both are run here, as the message gives them."""
    import re

    pytest.importorskip("torch")
    from conftest import TINY_NET

    from stereodeploy.cli.app import app
    from stereodeploy.config import RunSpec, TrainConfig
    from stereodeploy.data.datasets import synthetic_pair
    from stereodeploy.train.api import train_run

    monkeypatch.chdir(tmp_path)
    spec = RunSpec(framework="torch", network=TINY_NET, train=TrainConfig(epochs=1, max_examples=128))
    train_run(spec, Path("run"), samples=[synthetic_pair(height=40, width=64, max_disp=10, seed=0)], progress=False)
    res = CliRunner().invoke(app, ["export-matcher", "run", "--out", "m.onnx", "--max-disp", "16"])
    assert res.exit_code == 1 and "--backend" not in res.output, res.output
    commands = re.findall(r"`stereodeploy ([^`]+)`", res.output)
    assert len(commands) == 2, res.output
    for command in commands:
        done = CliRunner().invoke(app, command.split())
        assert done.exit_code == 0, (command, done.output)
    assert Path("m.onnx").is_file()
