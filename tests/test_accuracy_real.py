"""The full pipeline's accuracy on the real pairs in ../shared/data, pinned: speed work on the post-processing
(issue 15) must keep the >= 3 px error within 0.1 point of what it was before that work, for every SGM preset.

The numbers are those of ``python scripts/bench_accuracy.py`` on the tree before issue 15 (shipped torch model,
fp32 features through onnxruntime; KITTI at 228 disparities, Middlebury at each scene's ndisp)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stereodeploy.config import MatchConfig
from stereodeploy.data.datasets import load_dataset
from stereodeploy.engine.backends import open_backend
from stereodeploy.engine.matcher import StereoMatcher
from stereodeploy.study.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
MODEL = ROOT / "models" / "mccnn_fast_torch.onnx"

# (dataset folder, SGM preset, max disparity or None for the scene's own) -> mean >= 3 px error (%) before
BEFORE = {
    ("kitti2015", "kitti2015", 228): 4.707,
    ("kitti2015", "kitti2012", 228): 6.328,
    ("middlebury", "middlebury", None): 10.374,
}


@pytest.mark.slow
@pytest.mark.skipif(not DATA.is_dir() or not MODEL.is_file(), reason="needs ../shared/data and the shipped model")
@pytest.mark.parametrize(("folder", "preset", "max_disp"), list(BEFORE))
def test_full_pipeline_error_is_unchanged_on_real_pairs(folder: str, preset: str, max_disp: int | None) -> None:
    backend = open_backend(MODEL, "onnx")
    matcher = StereoMatcher(backend, MatchConfig.preset("full", backend.meta.max_disp), sgm_preset=preset)
    result = evaluate(load_dataset(DATA / folder), matcher, max_disp=max_disp, warmup=False, progress=False)
    assert abs(result.average_error_rate - BEFORE[(folder, preset, max_disp)]) <= 0.1
