"""The embedding API: a stereo matcher built on any feature backend.

    matcher = StereoMatcher.from_file("model.onnx", max_disp=128, postprocess="full")
    disparity = matcher(left, right)          # (H, W) float32, NaN where the pipeline has no answer
    result = matcher.match(left, right)       # disparity plus the time of every stage

A matcher holds no per-call state, so one instance may serve several threads at once: onnxruntime sessions and
torch modules in inference mode are safe to call concurrently, and every call keeps its results and timings in
local variables. With post-processing, each thread keeps its own cost volume and two SGM working volumes between
calls (for the last image size it saw: 1.3 GB for a KITTI pair at 228 disparities), which saves faulting that
memory in again on every pair (about 1 s); ``release_buffers()`` drops the calling thread's. The numba kernels of the matching code are serialised only where numba runs on its
``workqueue`` threading layer, which cannot take concurrent launches (the ``omp`` and ``tbb`` layers can).
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ContextManager

import numpy as np

from stereodeploy.config import MatchConfig
from stereodeploy.engine.backends import Backend, open_backend
from stereodeploy.engine.matching import check_max_disp
from stereodeploy.errors import UsageError, UserError
from stereodeploy.io import to_gray

# numba's threading layer is one per process, so the guard of the one layer that is not thread-safe is too.
_WORKQUEUE_LOCK = threading.Lock()


def _numba_guard() -> ContextManager[object]:
    """A lock while numba's layer is unknown (the first launch picks it) or is ``workqueue``; else nothing."""
    import numba

    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        return _WORKQUEUE_LOCK
    return _WORKQUEUE_LOCK if layer == "workqueue" else contextlib.nullcontext()


@dataclass
class MatchResult:
    """One pair's disparity and the seconds each stage took.

    ``timings`` keys: ``features``; ``matching`` (everything after the features); with post-processing also
    ``cost_volume`` and one key per post-processing stage; ``total`` (from the raw images to the disparity).
    """

    disparity: np.ndarray  # (H, W) float32, NaN = invalid
    timings: dict[str, float] = field(default_factory=dict)


class StereoMatcher:
    """Features from ``backend``, then winner-take-all or MC-CNN's post-processing as ``config`` says."""

    def __init__(self, backend: Backend, config: MatchConfig | None = None, sgm_preset: str = "middlebury"):
        self.backend = backend
        self.config = config or MatchConfig(max_disp=backend.meta.max_disp)
        self.sgm_preset = sgm_preset
        self.patch_size = backend.meta.patch_size
        self._local = threading.local()  # per thread: the volumes of post-processing, kept between calls

    def _buffer(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A float32 array of ``shape`` owned by the calling thread, reused while the shape stays the same."""
        buffers = self._local.__dict__.setdefault("buffers", {})
        if name not in buffers or buffers[name].shape != shape:
            buffers.pop(name, None)  # let the old one go before allocating the new one
            buffers[name] = np.empty(shape, np.float32)
        return buffers[name]

    def _scratch(self, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        return self._buffer("sgm_left", shape), self._buffer("sgm_right", shape)

    def release_buffers(self) -> None:
        """Free the calling thread's post-processing volumes."""
        self._local.__dict__.pop("buffers", None)

    @classmethod
    def from_file(cls, path: Path | str, max_disp: int | None = None, postprocess: str = "none",
                  backend: str = "onnx", provider: str = "cpu", sgm_preset: str = "middlebury") -> "StereoMatcher":
        """Open the model at ``path`` with ``backend`` (onnx, torch or tf) on ``provider`` (cpu or cuda).

        ``max_disp`` defaults to the model's; ``postprocess`` is ``none`` (winner-take-all) or ``full``.
        """
        if postprocess not in ("none", "full"):
            raise UsageError(f"postprocess must be 'none' or 'full', not {postprocess!r}")
        if max_disp is not None and max_disp < 1:
            raise UsageError(f"max disparity must be at least 1, got {max_disp}")
        be = open_backend(path, backend=backend, provider=provider)
        return cls(be, MatchConfig.preset(postprocess, max_disp or be.meta.max_disp), sgm_preset=sgm_preset)

    @property
    def max_disp(self) -> int:
        return self.config.max_disp

    def with_max_disp(self, max_disp: int) -> "StereoMatcher":
        """The same backend (shared, not reloaded) with another disparity range."""
        return StereoMatcher(self.backend, replace(self.config, max_disp=max_disp), self.sgm_preset)

    def __call__(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """(H, W) or (H, W, 3) images -> (H, W) float32 disparity of the left image."""
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

    @property
    def postprocessing(self) -> bool:
        cfg = self.config
        return any((cfg.sgm, cfg.lr_check, cfg.subpixel, cfg.median, cfg.bilateral))

    def match(self, left: np.ndarray, right: np.ndarray) -> MatchResult:
        """Disparity of the left image and the time of each stage (see :class:`MatchResult`)."""
        left, right = np.asarray(left), np.asarray(right)
        self._check(left, right)
        cfg = self.config
        t0 = time.perf_counter()
        gl, gr = to_gray(left), to_gray(right)
        timings: dict[str, float] = {}
        with _numba_guard():
            if not self.postprocessing:
                disp = self.backend.wta(gl, gr, cfg.max_disp, timings)
            else:
                from stereodeploy.engine.postprocess import postprocess

                # stored row by row, as engine.matching.row_major_volume: what SGM reads fastest
                volume = self._buffer("cost", (gl.shape[0], cfg.max_disp, gl.shape[1])).transpose(1, 0, 2)
                cost = self.backend.cost_volume(gl, gr, cfg.max_disp, timings, out=volume)
                disp, stages = postprocess(cost, gl, gr, cfg, self.sgm_preset, scratch=self._scratch)
                timings.update(stages)
        total = time.perf_counter() - t0
        timings["matching"] = total - timings["features"]
        timings["total"] = total
        return MatchResult(disparity=disp, timings=timings)
