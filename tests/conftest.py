"""Shared fixtures: tiny synthetic datasets on disk, tiny networks, the optional real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stereodeploy.config import NetworkConfig
from stereodeploy.datasets import synthetic_pair
from stereodeploy.io import write_pfm, write_png

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
