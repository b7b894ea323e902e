"""Shared fixtures: tiny synthetic datasets on disk, tiny networks, the optional real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stereodeploy.config import NetworkConfig
from stereodeploy.data.datasets import synthetic_pair
from stereodeploy.data.io import write_pfm, write_png

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TINY_NET = NetworkConfig(layers=2, maps=8, kernel=3)


def write_middlebury(root: Path, scenes: int = 2, height: int = 48, width: int = 72, max_disp: int = 12,
                     seed: int = 0) -> Path:
    """Synthetic scenes in the MiddEval3 layout (im0.png, im1.png, disp0GT.pfm, calib.txt)."""
    for i in range(scenes):
        s = synthetic_pair(height=height, width=width, max_disp=max_disp, seed=seed + i)
        scene = root / f"scene{i}"
        scene.mkdir(parents=True)
        write_png(scene / "im0.png", s.left)
        write_png(scene / "im1.png", s.right)
        write_pfm(scene / "disp0GT.pfm", s.disp_occ if s.disp_occ is not None else s.disp)
        (scene / "calib.txt").write_text(f"width={width}\nheight={height}\nndisp={max_disp + 4}\n")
    return root


def write_feature_model(path: Path, network: NetworkConfig = TINY_NET, max_disp: int = 16, seed: int = 0,
                        source_framework: str = "torch") -> Path:
    """An untrained, seeded feature model in the export contract, built without any framework
    (:mod:`stereodeploy.nets.onnx_net`), so that the engine is tested in the default install."""
    import onnx

    from stereodeploy.contract import ModelMeta, set_meta
    from stereodeploy.nets.onnx_net import to_onnx_model
    from stereodeploy.nets.weights import init_weights

    model = to_onnx_model(network, init_weights(network, seed), 17)
    set_meta(model, ModelMeta(network=network, source_framework=source_framework, max_disp=max_disp))
    onnx.save_model(model, str(path))
    return path


@pytest.fixture(scope="session")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny feature model (2 layers, 8 maps, max disparity 16) as an ONNX file."""
    return write_feature_model(tmp_path_factory.mktemp("model") / "tiny.onnx")


def onnxruntime_has_cuda() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_middlebury(tmp_path_factory.mktemp("synthetic") / "middlebury")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def motorcycle():
    """scikit-image's Middlebury 2014 Motorcycle pair (left, right, gt with NaN unknown)."""
    data = pytest.importorskip("skimage.data")
    left, right, gt = data.stereo_motorcycle()
    gt = np.where(np.isfinite(gt), gt, np.nan).astype(np.float32)
    return left, right, gt
