"""ONNX export of the PyTorch network: contract, metadata, parity, refusal of foreign files."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from conftest import TINY_NET

from stereodeploy.config import RunSpec, TrainConfig
from stereodeploy.contract import INPUT_NAME, OUTPUT_NAME, read_meta
from stereodeploy.data.datasets import synthetic_pair
from stereodeploy.deploy.export import export
from stereodeploy.engine.backends import OnnxBackend
from stereodeploy.errors import UserError
from stereodeploy.nets.torch_net import native_features
from stereodeploy.train.api import train_run
from stereodeploy.train.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "run"
    train_run(RunSpec(framework="torch", network=TINY_NET, train=TrainConfig(epochs=1, max_examples=256)), out,
              samples=[synthetic_pair(height=40, width=64, max_disp=10, seed=0)], progress=False)
    return out


def test_export_contract_metadata_and_parity(run_dir, tmp_path):
    report = export(run_dir, tmp_path / "m.onnx", max_disp=40, parity_size=(96, 160))
    assert report.max_abs_diff < 1e-4
    model = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == [INPUT_NAME]
    assert [o.name for o in model.graph.output] == [OUTPUT_NAME]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[1].dim_value == 1 and all(d.dim_param for d in (dims[0], dims[2], dims[3]))  # dynamic N, H, W
    meta = read_meta(model)
    assert meta.network == TINY_NET and meta.max_disp == 40 and meta.patch_size == 5
    sidecar = json.loads((tmp_path / "m.onnx.json").read_text())  # for clients that cannot read metadata_props
    assert sidecar["metadata"] == {p.key: p.value for p in model.metadata_props}
    assert all(len(n.input) == 3 and all(n.input) for n in model.graph.node if n.op_type == "Clip")  # WebGL
    assert meta.source_framework == "torch" and meta.source_framework_version == torch.__version__
    assert meta.training_data["examples"] > 0

    # any batch and size, raw 0..255 input, normalisation inside the graph
    weights = load_checkpoint(run_dir).weights
    backend = OnnxBackend(tmp_path / "m.onnx")
    for shape in ((1, 1, 31, 45), (2, 1, 64, 100)):
        image = np.random.default_rng(1).uniform(0, 255, shape).astype(np.float32)
        got = backend.features_batch(image)
        assert got.shape == (shape[0], TINY_NET.maps) + shape[2:]
        np.testing.assert_allclose(got, native_features(TINY_NET, weights, image), atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # each image of a batch is normalised by itself: a brighter copy gives the same features
    img = np.random.default_rng(2).uniform(0, 200, (1, 1, 30, 40)).astype(np.float32)
    both = backend.features_batch(np.concatenate([img, img * 0.5 + 20]))
    np.testing.assert_allclose(both[0], both[1], atol=1e-4)


def test_export_refuses_to_overwrite(run_dir, tmp_path):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"precious")
    with pytest.raises(UserError, match="exists"):
        export(run_dir, target, parity_size=(40, 60))
    assert target.read_bytes() == b"precious"
    export(run_dir, target, overwrite=True, parity_size=(40, 60))
    assert read_meta(onnx.load(str(target))).network == TINY_NET


def test_engine_refuses_files_that_are_not_feature_models(tmp_path):
    from onnx import TensorProto, helper

    (tmp_path / "junk.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(UserError, match="not a readable ONNX file"):
        OnnxBackend(tmp_path / "junk.onnx")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph), str(tmp_path / "other.onnx"))
    with pytest.raises(UserError, match="not a stereodeploy feature model"):
        OnnxBackend(tmp_path / "other.onnx")
    with pytest.raises(UserError, match="does not exist"):
        OnnxBackend(tmp_path / "missing.onnx")
