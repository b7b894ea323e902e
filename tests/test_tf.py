"""The TensorFlow path held to parity with PyTorch: weights, features, training steps, ONNX export, engine, CLI.

Tolerances and why they are what they are: docs/training.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")
torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from stereodeploy.config import NetworkConfig, SamplerConfig, TrainConfig
from stereodeploy.data.datasets import synthetic_pair
from stereodeploy.data.io import write_pfm, write_png
from stereodeploy.data.patches import PatchIndex
from stereodeploy.data.preprocess import normalize, to_gray
from stereodeploy.errors import UserError
from stereodeploy.nets import tf_net, torch_net
from stereodeploy.nets.weights import init_weights, keras_to_torch, torch_to_keras
from stereodeploy.train.tf_trainer import TFStepper
from stereodeploy.train.torch_trainer import TorchStepper

TINY = NetworkConfig(layers=2, maps=8)
STEPS = 50
LOSS_RTOL = 0.01  # per-step losses of the two frameworks
WEIGHT_ATOL = 1e-5  # final weights after 50 steps; observed ~1e-7, weights move ~1e-2 (asserted below)
FEATURE_ATOL = 1e-5  # native torch vs native tf, same weights
ONNX_ATOL = 1e-4  # the export contract's tolerance (stereodeploy.deploy.export.PARITY_TOLERANCE)


def _random_weights(network: NetworkConfig, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Init weights with random biases of both signs and no symmetry, so a layout mistake cannot hide."""
    rng = np.random.default_rng(seed)
    return [(k, rng.normal(0, 0.1, b.shape).astype(np.float32)) for k, b in init_weights(network, seed)]


def _images(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, 1, h, w)).astype(np.float32)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Small networks on a shared 2-core machine: one torch thread avoids OpenMP spin contention (10x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def batches():
    """50 batches of 64 examples (128 pairs) from a synthetic pair, in the loop's order, over several epochs."""
    s = synthetic_pair(64, 96, max_disp=16, seed=1)
    index = PatchIndex(TINY.patch_size, SamplerConfig(seed=0))
    index.add(to_gray(s.left), to_gray(s.right), s.disp)
    out, epoch = [], 0
    while len(out) < STEPS:
        out.extend(index.batches(epoch, 64))
        epoch += 1
    return out[:STEPS]


# ------------------------------------------------------------------------------------------ weights and features
def test_layout_conversion_moves_each_element_to_its_keras_place():
    k = np.arange(4 * 3 * 5 * 7, dtype=np.float32).reshape(4, 3, 5, 7)  # (out, in, kh, kw)
    b = np.arange(4, dtype=np.float32)
    [(kk, bk)] = torch_to_keras([(k, b)])
    assert kk.shape == (5, 7, 3, 4)
    assert kk[2, 6, 1, 3] == k[3, 1, 2, 6]
    np.testing.assert_array_equal(bk, b)
    [(back, bb)] = keras_to_torch([(kk, bk)])
    np.testing.assert_array_equal(back, k)
    np.testing.assert_array_equal(bb, b)


def test_tf_normalisation_is_patches_normalize():
    img = _images(2, 17, 23)
    img[1] = 7.0  # a flat image: NORM_EPS keeps it finite (all zeros)
    got = tf_net.normalize_images(tf.constant(img.transpose(0, 2, 3, 1))).numpy().transpose(0, 3, 1, 2)
    for i in range(2):
        np.testing.assert_allclose(got[i, 0], normalize(img[i, 0]), atol=2e-5)
    assert np.all(got[1] == 0)


def test_weights_transfer_both_ways_and_give_the_same_features():
    net = NetworkConfig(layers=3, maps=8)
    w = _random_weights(net, 3)
    image = _images(2, 21, 30, seed=1)
    # torch -> tf: through the neutral layout, read back bit-exact
    tf_model = tf_net.build(net, torch_net.get_weights(torch_net.build(net, w)))
    for (a, b), (c, d) in zip(tf_net.get_weights(tf_model), w):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    ref = torch_net.native_features(net, w, image)
    assert ref.shape == (2, 8, 21, 30)
    got = tf_net.native_features(net, tf_net.get_weights(tf_model), image)
    assert got.shape == ref.shape
    assert np.max(np.abs(got - ref)) < FEATURE_ATOL
    # tf -> torch, after changing the TF weights in place
    tf_model.kernels[0].assign(tf_model.kernels[0].numpy()[:, ::-1] * 1.5)  # mirror kw: non-symmetric change
    back = tf_net.get_weights(tf_model)
    assert not np.allclose(back[0][0], w[0][0])
    torch_model = torch_net.build(net, back)
    x = normalize(image[0, 0])[None, None]
    ref_same = torch_model(torch.from_numpy(x), padding=True).detach().numpy()
    got_same = tf_model(tf.constant(x.transpose(0, 2, 3, 1)), padding=True).numpy().transpose(0, 3, 1, 2)
    assert np.max(np.abs(got_same - ref_same)) < FEATURE_ATOL
    # patch (valid) mode: a P x P patch gives one feature vector
    patches = np.random.default_rng(2).normal(size=(5, 1, net.patch_size, net.patch_size)).astype(np.float32)
    ref_p = torch_model(torch.from_numpy(patches)).detach().numpy()  # (5, C, 1, 1)
    got_p = tf_model(tf.constant(patches.transpose(0, 2, 3, 1))).numpy().transpose(0, 3, 1, 2)
    assert got_p.shape == ref_p.shape == (5, 8, 1, 1)
    assert np.max(np.abs(got_p - ref_p)) < FEATURE_ATOL
    np.testing.assert_allclose(np.linalg.norm(got_p[:, :, 0, 0], axis=1), 1.0, atol=1e-6)


# ------------------------------------------------------------------------------------------ training parity
def _run(stepper, batches, lrs):
    return np.array([stepper.step(b, lr)[0] for b, lr in zip(batches, lrs)])


def test_fifty_cpu_steps_agree_with_torch(batches):
    tf.config.experimental.enable_op_determinism()
    cfg = TrainConfig(batch_size=128, lr=0.002, momentum=0.9)
    w0 = init_weights(TINY, 0)
    lrs = [cfg.lr] * 25 + [cfg.lr * 0.1] * 25  # a drop half way, as at an epoch boundary
    t, f = TorchStepper(TINY, cfg, w0), TFStepper(TINY, cfg, w0)
    assert f.framework == "tf" and f.device == "cpu"
    lt, lf = _run(t, batches, lrs), _run(f, batches, lrs)
    assert np.all(lt > 0)
    assert np.max(np.abs(lf - lt) / lt) < LOSS_RTOL
    assert lt[-10:].mean() < lt[:10].mean()  # it learns
    for (a, b), (c, d), (k0, _) in zip(t.get_weights(), f.get_weights(), w0):
        assert np.max(np.abs(a - k0)) > 100 * WEIGHT_ATOL  # the weights did move: the comparison means something
        assert np.max(np.abs(a - c)) < WEIGHT_ATOL
        assert np.max(np.abs(b - d)) < WEIGHT_ATOL
    for (a, b), (c, d) in zip(t.get_momentum(), f.get_momentum()):
        assert np.max(np.abs(a - c)) < 10 * WEIGHT_ATOL and np.max(np.abs(b - d)) < 10 * WEIGHT_ATOL


@pytest.mark.parametrize("make", [TorchStepper, TFStepper], ids=["torch", "tf"])
def test_lr_drop_applies_the_new_rate_to_the_whole_velocity(make, batches):
    """v <- mu v + g; w <- w - lr v: right after a drop the step is lr_new * v. Keras' rule (v <- mu v - lr g;
    w <- w + v) would still carry the old rate in mu v: a step larger by (lr_old - lr_new) mu v_old."""
    lr_old, lr_new, mu = 0.01, 0.001, 0.9
    s = make(TINY, TrainConfig(batch_size=128, lr=lr_old, momentum=mu), init_weights(TINY, 0))
    for b in batches[:3]:
        s.step(b, lr_old)
    w_before, v_before = s.get_weights(), s.get_momentum()
    s.step(batches[3], lr_new)
    w_after, v_after = s.get_weights(), s.get_momentum()
    for (w0, _), (w1, _), (v0, _), (v1, _) in zip(w_before, w_after, v_before, v_after):
        rounding = 2 * np.spacing(np.abs(w0).max())  # w0 - w1 is known to float32 rounding of w
        assert np.max(np.abs((w0 - w1) - lr_new * v1)) <= rounding
        assert np.max(np.abs((lr_old - lr_new) * mu * v0)) > 100 * rounding  # the test tells the rules apart


def test_momentum_round_trip_and_resume_equivalence(batches):
    cfg = TrainConfig(batch_size=128)
    a = TFStepper(TINY, cfg, init_weights(TINY, 0))
    for b in batches[:5]:
        a.step(b, cfg.lr)
    b_ = TFStepper(TINY, cfg, a.get_weights())
    b_.set_momentum(a.get_momentum())
    la, lb = a.step(batches[5], cfg.lr), b_.step(batches[5], cfg.lr)
    assert la == lb
    for (x, y), (u, v) in zip(a.get_weights(), b_.get_weights()):
        np.testing.assert_array_equal(x, u)
        np.testing.assert_array_equal(y, v)
    gray = _images(1, 25, 37, seed=4)[0, 0]  # the validation features: the trained weights, image contract
    feats = a.features(gray)
    assert feats.shape == (8, 25, 37)
    assert np.max(np.abs(feats - torch_net.native_features(TINY, a.get_weights(), gray[None, None])[0])) < FEATURE_ATOL


# ------------------------------------------------------------------------------------------ export
def _dims(value) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def test_onnx_from_tf_matches_native_tf_and_onnx_from_torch():
    from stereodeploy.deploy.export import run_onnx

    w = _random_weights(TINY, 5)
    m_tf = tf_net.to_onnx_model(TINY, w, 17)
    m_torch = torch_net.to_onnx_model(TINY, w, 17)
    onnx.checker.check_model(m_tf, full_check=True)
    for m in (m_tf, m_torch):  # the same contract
        assert [i.name for i in m.graph.input] == ["image"] and [o.name for o in m.graph.output] == ["features"]
        assert _dims(m.graph.input[0]) == ["batch", 1, "height", "width"]
        out = _dims(m.graph.output[0])
        assert [out[0], out[2], out[3]] == ["batch", "height", "width"]
    assert _dims(m_tf.graph.output[0])[1] == 8  # (torch's exporter leaves the channel count symbolic)
    for shape in [(1, 1, 19, 27), (3, 1, 40, 33)]:  # dynamic N, H, W
        image = _images(shape[0], shape[2], shape[3], seed=shape[0])
        onnx_tf = run_onnx(m_tf, image)
        assert onnx_tf.shape == (shape[0], 8) + shape[2:]
        assert np.max(np.abs(onnx_tf - tf_net.native_features(TINY, w, image))) < ONNX_ATOL
        assert np.max(np.abs(onnx_tf - run_onnx(m_torch, image))) < ONNX_ATOL


def _checkpoint(path: Path, framework: str, network: NetworkConfig, weights) -> Path:
    from stereodeploy.train.checkpoint import Checkpoint, save_checkpoint

    save_checkpoint(path, Checkpoint(framework=framework, network=network, weights=weights,
                                     meta={"framework_version": "test"}))
    return path


def _motorcycle() -> tuple[np.ndarray, np.ndarray]:
    """skimage's Middlebury 2014 Motorcycle (shipped with scikit-image), grey, halved to 250 x 370."""
    data = pytest.importorskip("skimage.data")
    left, right, _ = data.stereo_motorcycle()

    def half(img: np.ndarray) -> np.ndarray:
        g = to_gray(img)
        h, w = g.shape[0] // 2 * 2, g.shape[1] // 2 * 2
        return g[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))

    return half(left), half(right)


def test_engine_gives_the_same_disparity_from_either_export(tmp_path: Path):
    from stereodeploy.contract import read_meta
    from stereodeploy.deploy.export import export
    from stereodeploy.engine.backends import open_backend
    from stereodeploy.engine.matcher import StereoMatcher
    from stereodeploy.engine.matching import cost_volume

    net = NetworkConfig()  # the real 4 x 64 network
    w = init_weights(net, 7)
    files = {}
    for fw in ("torch", "tf"):
        ckpt = _checkpoint(tmp_path / f"{fw}.npz", fw, net, w)
        report = export(ckpt, tmp_path / f"{fw}.onnx", max_disp=48, parity_size=(64, 96))
        assert report.max_abs_diff < ONNX_ATOL
        files[fw] = report.path
        assert read_meta(onnx.load(str(report.path))).source_framework == fw
    left, right = _motorcycle()
    d_torch = StereoMatcher.from_file(files["torch"])(left, right)
    d_tf = StereoMatcher.from_file(files["tf"])(left, right)
    differ = d_torch != d_tf
    assert differ.sum() <= 1e-3 * differ.size, f"{differ.sum()} of {differ.size} pixels differ"
    if differ.any():  # where they differ, the two disparities' costs tie
        be = open_backend(files["torch"])
        cost = cost_volume(*be.features_pair(left, right), 48)
        ys, xs = np.nonzero(differ)
        gap = np.abs(cost[d_torch[ys, xs].astype(int), ys, xs] - cost[d_tf[ys, xs].astype(int), ys, xs])
        assert np.all(gap < 1e-4), np.sort(gap)[-5:]
    # the native TF backend, from the TF export (weights read back from its initializers) and from the checkpoint
    ref = open_backend(files["tf"]).features_batch(_images(1, 30, 41))
    for src in (files["tf"], tmp_path / "tf.npz", files["torch"]):
        be = open_backend(src, backend="tf")
        assert be.name == "tf" and be.device == "cpu"
        assert np.max(np.abs(be.features_batch(_images(1, 30, 41)) - ref)) < ONNX_ATOL


# ------------------------------------------------------------------------------------------ CLI, end to end
def _middlebury_folder(root: Path) -> Path:
    for i in range(2):
        s = synthetic_pair(48, 80, max_disp=12, seed=10 + i)
        scene = root / f"scene{i}"
        scene.mkdir(parents=True)
        write_png(scene / "im0.png", s.left)
        write_png(scene / "im1.png", s.right)
        write_pfm(scene / "disp0GT.pfm", s.disp)
    return root


def test_cli_train_tf_then_export_and_torch_refuses_to_resume_it(tmp_path: Path):
    from typer.testing import CliRunner

    from stereodeploy.cli.app import app
    from stereodeploy.train.checkpoint import load_checkpoint

    data = _middlebury_folder(tmp_path / "data")
    run = tmp_path / "run"
    runner = CliRunner()
    args = ["--data", str(data), "--val", str(data), "--max-disp", "12", "--out", str(run), "--epochs", "2", "--batch-size", "64", "--max-examples", "320",
            "--lr-drop", "1", "--layers", "2", "--maps", "8", "--no-progress"]
    res = runner.invoke(app, ["train", "tf", *args])
    assert res.exit_code == 0, res.output
    assert "tf: 2 epochs" in res.output
    for name in ("config.json", "metrics.jsonl", "summary.json", "checkpoint.npz", "accuracy.png"):
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    assert config["framework"] == "tf" and config["framework_version"] == tf.__version__
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows] == pytest.approx([0.002, 0.0002])
    assert all(r["steps"] == 10 for r in rows)
    assert all(0 <= r["validation_error"] <= 100 for r in rows)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["framework"] == "tf" and summary["examples_per_second"] > 0
    ckpt = load_checkpoint(run)
    assert ckpt.framework == "tf" and ckpt.epoch == 2 and ckpt.network == TINY

    # the same run in torch follows the same schedule on the same batches: equal epoch losses within 1%
    run_t = tmp_path / "run_torch"
    res_t = runner.invoke(app, ["train", "torch", *[a if a != str(run) else str(run_t) for a in args]])
    assert res_t.exit_code == 0, res_t.output
    rows_t = [json.loads(x) for x in (run_t / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows_t] == [r["lr"] for r in rows]
    np.testing.assert_allclose([r["loss"] for r in rows], [r["loss"] for r in rows_t], rtol=LOSS_RTOL)
    np.testing.assert_allclose([r["validation_error"] for r in rows], [r["validation_error"] for r in rows_t],
                               atol=0.5)  # percent: a few tie pixels at most

    out = tmp_path / "x.onnx"
    res = runner.invoke(app, ["export", str(run), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "from tf" in res.output
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["stereodeploy.source_framework"] == "tf"
    assert meta["stereodeploy.source_framework_version"] == tf.__version__

    res = runner.invoke(app, ["train", "torch", "--resume", "--out", str(run), "--no-progress"])
    assert res.exit_code != 0
    assert "is a tf run, not torch" in res.output and "train tf --resume" in res.output
    with pytest.raises(UserError, match="tf checkpoint, not torch"):
        load_checkpoint(run, framework="torch")
