"""The JSON sidecars: every shipped model has one that says what its metadata says, so that clients without an
ONNX metadata reader (onnxruntime-node, onnxruntime-web, the C++ example) get the same contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stereodeploy.deploy.sidecar import main, sidecar_path, stale_sidecar

MODELS = Path(__file__).resolve().parents[1] / "models"
SHIPPED = sorted(MODELS.glob("*.onnx"))


def test_models_are_shipped() -> None:
    assert [p.name for p in SHIPPED] == ["mccnn_fast_tf.onnx", "mccnn_fast_torch.onnx", "mccnn_fast_torch_int8.onnx"]


@pytest.mark.parametrize("model", SHIPPED, ids=lambda p: p.stem)
def test_each_shipped_model_has_a_sidecar_matching_its_metadata(model: Path) -> None:
    onnx = pytest.importorskip("onnx")
    assert stale_sidecar(model) is None
    written = json.loads(sidecar_path(model).read_text())
    props = {p.key: p.value for p in onnx.load_model(str(model), load_external_data=False).metadata_props}
    assert written["metadata"] == props and written["metadata"]["stereodeploy.format"] == "features/1"
    assert written["inputs"] == [{"name": "image", "type": "float", "shape": ["batch", 1, "height", "width"]}]
    assert [o["name"] for o in written["outputs"]] == ["features"]


def test_stale_sidecar_says_what_differs(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    model = tmp_path / "m.onnx"
    model.write_bytes((MODELS / "mccnn_fast_torch.onnx").read_bytes())
    assert stale_sidecar(model) == f"{sidecar_path(model)} is missing"
    assert main([str(model)]) == 0 and stale_sidecar(model) is None
    written = json.loads(sidecar_path(model).read_text())
    written["metadata"]["stereodeploy.max_disp"] = "64"
    sidecar_path(model).write_text(json.dumps(written))
    assert stale_sidecar(model) == f"{sidecar_path(model)}: its 'metadata' differs from the file's"
