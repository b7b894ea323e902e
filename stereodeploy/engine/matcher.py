"""The embedding API: a stereo matcher built on any feature backend.

    matcher = StereoMatcher.from_file("model.onnx", max_disp=128, postprocess="full")
    disparity = matcher(left, right)          # (H, W) float32, NaN where the pipeline has no answer
    result = matcher.match(left, right)       # disparity plus the time of every stage

A matcher holds no per-call state, so one instance may serve several threads at once (onnxruntime sessions and
torch modules in inference mode are safe to call concurrently).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from stereodeploy.config import MatchConfig
from stereodeploy.engine.backends import Backend, open_backend
from stereodeploy.engine.matching import check_max_disp, cost_volume, wta_from_features
from stereodeploy.errors import UserError
from stereodeploy.io import to_gray


@dataclass
class MatchResult:
    disparity: np.ndarray  # (H, W) float32
    timings: dict[str, float] = field(default_factory=dict)  # seconds: features, matching, <stages>, total


class StereoMatcher:
    def __init__(self, backend: Backend, config: MatchConfig | None = None, sgm_preset: str = "middlebury"):
        self.backend = backend
        self.config = config or MatchConfig(max_disp=backend.meta.max_disp)
        self.sgm_preset = sgm_preset
        self.patch_size = backend.meta.patch_size

    @classmethod
    def from_file(cls, path: Path | str, max_disp: int | None = None, postprocess: str = "none",
                  backend: str = "onnx", provider: str = "cpu", sgm_preset: str = "middlebury") -> "StereoMatcher":
        be = open_backend(path, backend=backend, provider=provider)
        return cls(be, MatchConfig.preset(postprocess, max_disp or be.meta.max_disp), sgm_preset=sgm_preset)

    def with_max_disp(self, max_disp: int) -> "StereoMatcher":
        return StereoMatcher(self.backend, replace(self.config, max_disp=max_disp), self.sgm_preset)

    def __call__(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        return self.match(left, right).disparity

    def _check(self, left: np.ndarray, right: np.ndarray) -> None:
        if left.shape[:2] != right.shape[:2]:
            raise UserError(f"left and right images differ in size ({left.shape[1]}x{left.shape[0]} vs "
                            f"{right.shape[1]}x{right.shape[0]}): give a rectified pair of one size", exit_code=2)
        h, w = left.shape[:2]
        if min(h, w) < self.patch_size:
            raise UserError(f"images of {w}x{h} are smaller than the network's {self.patch_size}x{self.patch_size} "
                            "patch: give larger images", exit_code=2)
        check_max_disp(self.config.max_disp, w)

    def match(self, left: np.ndarray, right: np.ndarray) -> MatchResult:
        self._check(left, right)
        cfg = self.config
        t0 = time.perf_counter()
        gl, gr = to_gray(left), to_gray(right)
        fl, fr = self.backend.features_pair(gl, gr)
        t1 = time.perf_counter()
        timings = {"features": t1 - t0}
        if not any((cfg.sgm, cfg.lr_check, cfg.subpixel, cfg.median, cfg.bilateral)):
            disp = wta_from_features(fl, fr, cfg.max_disp)
            timings["matching"] = time.perf_counter() - t1
        else:
            from stereodeploy.engine.postprocess import postprocess

            cost = cost_volume(fl, fr, cfg.max_disp)
            timings["cost_volume"] = time.perf_counter() - t1
            disp, stages = postprocess(cost, gl, gr, cfg, self.sgm_preset)
            timings.update(stages)
            timings["matching"] = time.perf_counter() - t1
        timings["total"] = time.perf_counter() - t0
        return MatchResult(disparity=disp, timings=timings)
