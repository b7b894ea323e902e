"""Adaptation to unlabelled pairs (stereodeploy.train.adapt): the confidence tests, refusal, and a small run that
improves a pair's error without reading its ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from stereodeploy.data.synth import SynthConfig, synth_pair, write_scene
from stereodeploy.errors import UserError
from stereodeploy.train.adapt import Confidence, _dilate, confidence_tests


def _volume(h: int, w: int, nd: int, disp: np.ndarray, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """A cost volume whose minimum is at ``disp`` (left) with a margin of 0.5 (2.0 where x - d < 0)."""
    rng = np.random.default_rng(seed)
    cost = np.full((nd, h, w), 1.0, np.float32) + rng.uniform(0, noise, (nd, h, w)).astype(np.float32)
    ys, xs = np.mgrid[0:h, 0:w]
    cost[disp, ys, xs] = 0.5
    for d in range(nd):
        cost[d, :, :d] = 2.0
    return cost


def test_confidence_tests_known_answers():
    h, w, nd = 6, 30, 8
    disp = np.full((h, w), 3)
    cost = _volume(h, w, nd, disp)
    full = disp.astype(np.float32)
    t = confidence_tests(cost, full, Confidence(occlusion_radius=1))
    # x < 3 leaves the right image: not consistent; everything else is consistent with a 0.5 margin
    assert not t["consistent"][:, :3].any() and t["consistent"][:, 3:].all()
    assert t["clear_margin"][:, 3:].all()
    # pixels within 1 of an inconsistent one are not away from occlusion
    assert not t["away_from_occlusion"][:, :4].any() and t["away_from_occlusion"][:, 4:].all()
    assert t["confident"][:, 4:].all() and not t["confident"][:, :4].any()
    # a full-pipeline answer far from winner-take-all is not trusted
    full2 = full.copy()
    full2[2, 10] = 7.0
    assert not confidence_tests(cost, full2)["confident"][2, 10]
    # a flat cost (no margin) is not trusted
    flat = cost.copy()
    flat[:, 4, 20] = 1.0
    flat[3, 4, 20] = 0.99
    assert not confidence_tests(flat, full)["clear_margin"][4, 20]


def test_dilate_square():
    m = np.zeros((7, 7), bool)
    m[3, 3] = True
    d = _dilate(m, 2)
    assert d.sum() == 25 and d[1:6, 1:6].all()


def _pair_dir(tmp_path, seed: int):
    """A synthetic pair from scikit-image's photos (natural texture: weak and strong areas), in MiddEval3 layout."""
    import skimage.data

    photos = [skimage.data.coffee(), skimage.data.astronaut(), skimage.data.rocket()]
    s = synth_pair(photos[0], photos[1:], SynthConfig(width=192, height=144, max_disp=16, segments=10, layers=1),
                   seed=seed, name="pair")
    write_scene(s, tmp_path / "pair")
    (tmp_path / "pair" / "calib.txt").write_text("ndisp=16\n")
    return s


def test_refuses_when_too_few_pixels_are_confident(tmp_path):
    """Two unrelated noise images: nothing is consistent, adaptation refuses with one line."""
    pytest.importorskip("torch")
    from stereodeploy.data.io import write_png
    from stereodeploy.train.adapt import adapt

    rng = np.random.default_rng(0)
    for name in ("im0.png", "im1.png"):
        write_png(tmp_path / "noise" / name, rng.integers(0, 256, (64, 96), dtype=np.uint8))
    (tmp_path / "noise" / "calib.txt").write_text("ndisp=16\n")
    from stereodeploy.engine.shipped import default_model_path

    with pytest.raises(UserError, match="confident"):
        adapt(default_model_path(), [tmp_path / "noise"], tmp_path / "run", max_disp=16, progress=False,
              min_fraction=0.5)


@pytest.mark.slow
def test_adaptation_improves_the_pair_without_its_ground_truth(tmp_path):
    """A weak model (1024 training examples of pairs from other photos) adapted on one synthetic pair's images
    (its confident pixels, and two synthetic pairs made from its left image): its winner-take-all error on that
    pair falls by more than 2 points; the ground-truth files are removed before adapting."""
    pytest.importorskip("torch")
    import skimage.data

    from stereodeploy.config import RunSpec, SamplerConfig, TrainConfig
    from stereodeploy.deploy.export import export
    from stereodeploy.engine.matcher import StereoMatcher
    from stereodeploy.study.evaluate import error_rate
    from stereodeploy.train.adapt import adapt
    from stereodeploy.train.api import train_run

    others = [synth_pair(photo, (), SynthConfig(width=144, height=96, max_disp=16, segments=8, layers=0), seed=i)
              for i, photo in enumerate([skimage.data.chelsea(), skimage.data.camera()])]
    spec = RunSpec(framework="torch", train=TrainConfig(epochs=1, max_examples=1024, seed=0),
                   sampler=SamplerConfig(seed=0), threads=1)
    train_run(spec, tmp_path / "weak", samples=others, progress=False)
    weak = export(tmp_path / "weak", tmp_path / "weak.onnx", max_disp=16).path
    target = _pair_dir(tmp_path, 7)
    (tmp_path / "pair" / "disp0GT.pfm").unlink()  # adaptation never sees the answer
    (tmp_path / "pair" / "mask0nocc.png").unlink()

    def wta_error(model):
        return error_rate(StereoMatcher.from_file(model, max_disp=16)(target.left, target.right), target.disp)

    before = wta_error(weak)
    summary = adapt(weak, [tmp_path / "pair"], tmp_path / "adapted", max_disp=16, progress=False, threads=1,
                    cfg=TrainConfig(epochs=2, lr=0.002, lr_drops=(1,), max_examples=6000, seed=0), min_fraction=0.01,
                    synth=2)
    after = wta_error(export(tmp_path / "adapted", tmp_path / "adapted.onnx", max_disp=16).path)
    assert summary["pseudo_labels"]["fraction"] > 0.01
    assert after < before - 2.0, (before, after)


@pytest.mark.slow
def test_cli_adapt_then_export(tmp_path):
    """`stereodeploy adapt` on a synthetic pair with the shipped model, then the export its message suggests."""
    pytest.importorskip("torch")
    from typer.testing import CliRunner

    from stereodeploy.cli.app import app
    from stereodeploy.engine.shipped import default_model_path

    _pair_dir(tmp_path, 3)
    runner = CliRunner()
    res = runner.invoke(app, ["adapt", str(default_model_path()), "--data", str(tmp_path / "pair"), "--out",
                              str(tmp_path / "run"), "--epochs", "1", "--max-examples", "512", "--no-progress",
                              "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert "confident pixels of 1 pairs" in res.output
    res = runner.invoke(app, ["export", str(tmp_path / "run"), "--out", str(tmp_path / "m.onnx")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "m.onnx").is_file()
    res = runner.invoke(app, ["adapt", str(tmp_path / "missing.onnx"), "--data", str(tmp_path / "pair"), "--out",
                              str(tmp_path / "run2")])
    assert res.exit_code == 1 and "model file not found" in res.output
