"""The embedding API: a stereo matcher built on any feature backend.

    matcher = StereoMatcher.from_file("model.onnx", max_disp=128, postprocess="full")
    disparity = matcher(left, right)          # (H, W) float32, NaN where the pipeline has no answer
    result = matcher.match(left, right)       # disparity, valid mask, confidence, the time of every stage
    depth = result.depth(calib)               # metres, with a calibration of stereodeploy.data.calib
    for result in matcher.match_many(pairs):  # a stream: the next pair's features beside this one's post-processing

A matcher holds no per-call state, so one instance may serve several threads at once: onnxruntime sessions and
torch modules in inference mode are safe to call concurrently, and every call keeps its results and timings in
local variables. With post-processing, each thread keeps its own cost volume (uint16) and two SGM volumes (float32)
between calls (for the last image size it saw: 10 bytes per pixel and disparity, 1.06 GB for a KITTI pair at 228
disparities), which saves faulting that memory in again on every pair (about 1 s); ``release_buffers()`` drops the calling thread's. The numba kernels of
the matching code are serialised only where numba runs on its ``workqueue`` threading layer, which cannot take
concurrent launches (the ``omp`` and ``tbb`` layers can).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stereodeploy.config import MatchConfig, check_max_disp
from stereodeploy.data.preprocess import to_gray
from stereodeploy.engine.backends import Backend, open_backend
from stereodeploy.engine.spec import DEFAULT_PRESET
from stereodeploy.errors import UsageError, UserError

if TYPE_CHECKING:
    from stereodeploy.data.calib import Calibration
    from stereodeploy.engine.geometry import PointCloud

# numba's threading layer is one per process, so the guard of the one layer that is not thread-safe is too.
_WORKQUEUE_LOCK = threading.Lock()


def _numba_guard() -> contextlib.AbstractContextManager[object]:
    """A lock while numba's layer is unknown (the first launch picks it) or is ``workqueue``; else nothing.

    Does not import numba: while it is not imported (or the kernel loader is still importing it), no layer has
    been picked, and waiting for the import here would hold the features back."""
    numba = sys.modules.get("numba")
    if numba is None or not hasattr(numba, "threading_layer"):
        return _WORKQUEUE_LOCK
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        return _WORKQUEUE_LOCK
    return _WORKQUEUE_LOCK if layer == "workqueue" else contextlib.nullcontext()


class _RefuseInThread:
    """A meta path finder that makes importing ``package`` (and its modules) fail in one thread only."""

    def __init__(self, package: str, thread: int):
        self.package, self.thread = package, thread

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.partition(".")[0] == self.package and threading.get_ident() == self.thread:
            raise ModuleNotFoundError(f"{name} is not imported by stereodeploy's kernel loader", name=name)


def _import_numba_without_scipy() -> None:
    """Import numba and the module its first kernel load imports, refusing scipy to this thread meanwhile.

    numba imports scipy only to check its version and whether BLAS is there for ``np.correlate`` and
    ``np.convolve`` in compiled code, neither of which the engine uses: 0.3 s of CPU on a quiet machine (scipy.linalg),
    over 1 s on a busy one. Other threads import scipy as usual, and ``np.dot`` and friends still import it when
    something compiles them. Nothing is refused where scipy is already imported.
    """
    if "scipy" in sys.modules:
        return
    refuse = _RefuseInThread("scipy", threading.get_ident())
    # new lists, not edits in place: another thread's import may be walking the old one
    sys.meta_path = [refuse, *sys.meta_path]
    try:
        import numba  # noqa: F401
        from numba.np import arraymath  # noqa: F401
    finally:
        sys.meta_path = [finder for finder in sys.meta_path if finder is not refuse]


@dataclass(frozen=True)
class MatchResult:
    """One pair's answer: disparity, which pixels were matched rather than filled, how sure each winner is, and the
    seconds each stage took. docs/embedding.md ("The engine in Python") shows it in use.

    - ``disparity``: (H, W) float32, in pixels of the left image (``x_right = x_left - d``), in
      ``[min_disp, max_disp)``; NaN = no answer (the pixels not ``valid``, when the matcher does not fill them).
    - ``valid``: (H, W) bool, True where the pipeline found the answer itself: with post-processing the pixels
      whose winner passed the left-right check; the rest (occlusions and mismatches) were filled from their
      neighbours, or are NaN without filling. Winner-take-all answers everywhere. False left of ``min_disp``
      (no right pixel can match there).
    - ``confidence``: (H, W) float32 in [0, 1], or None when not computed (winner-take-all unless asked for):
      ``1 - C(best) / C(best rival)`` on the (aggregated, with SGM) cost volume, rivals being the disparities at
      least 2 from the winner (:func:`stereodeploy.engine.postprocess.confidence_ratio`); 0 where not ``valid``.
      Higher is surer; it ranks pixels, it is not a probability.
    - ``timings`` keys: ``features``; ``matching`` (everything after the features); with post-processing (or
      confidence) also ``cost_volume``, ``confidence`` and one key per stage; ``total`` (images to disparity).
    - ``min_disp``, ``max_disp``: the range searched, ``[min_disp, max_disp)``.

    :meth:`depth` and :meth:`points` turn it into metric depth and a coloured point cloud with a calibration.
    """

    disparity: np.ndarray
    valid: np.ndarray
    confidence: np.ndarray | None
    timings: dict[str, float] = field(default_factory=dict)
    min_disp: int = 0
    max_disp: int = 0

    def depth(self, calib: Calibration) -> np.ndarray:
        """(H, W) float32 depth along the optical axis, in the units of ``calib.baseline`` (metres from
        :mod:`stereodeploy.data.calib`): ``focal * baseline / (d + doffs)``; NaN where not ``valid`` or where
        ``d + doffs <= 0`` (at infinity)."""
        from stereodeploy.engine.geometry import depth_map

        return depth_map(self.disparity, calib, self.valid)

    def points(self, calib: Calibration, colours: np.ndarray | None = None) -> PointCloud:
        """The ``valid`` pixels of finite depth as 3-D points in the left camera's frame (x right, y down, z
        forward), coloured by ``colours`` ((H, W) or (H, W, 3) image, usually the left one) if given."""
        from stereodeploy.engine.geometry import point_cloud

        return point_cloud(self.disparity, calib, self.valid, colours)


class StereoMatcher:
    """Features from ``backend``, then winner-take-all or MC-CNN's post-processing as ``config`` says.

    The disparities searched are ``[min_disp, config.max_disp)``. ``fill``: keep the values post-processing fills
    in where the left-right check fails (MC-CNN's interpolation), or leave NaN there. ``confidence``: compute
    :attr:`MatchResult.confidence` for winner-take-all too (a second pass over each row's costs, no cost volume);
    post-processing always computes it.
    """

    def __init__(self, backend: Backend, config: MatchConfig | None = None, sgm_preset: str | None = None, *,
                 fill: bool = True, confidence: bool = False, min_disp: int = 0):
        self.backend = backend
        self.config = config or MatchConfig(max_disp=backend.meta.max_disp)
        if sgm_preset is not None:  # a shorthand for the config's own preset
            self.config = replace(self.config, sgm_preset=sgm_preset)
        self.fill = fill
        self.confidence = confidence
        self.min_disp = int(min_disp)
        if not 0 <= self.min_disp < self.config.max_disp:
            raise UsageError(f"min disparity must be in [0, max disparity {self.config.max_disp}), got {min_disp}")
        # what the pipeline runs: max_disp - min_disp disparities, on a right image shifted by min_disp columns
        self._searched = replace(self.config, max_disp=self.config.max_disp - self.min_disp)
        self.patch_size = backend.meta.patch_size
        self._local = threading.local()  # per thread: the volumes of post-processing, kept between calls
        self._loader: threading.Thread | None = None
        self._load_kernels()

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
        """An array of ``shape`` owned by the calling thread, reused while the shape stays the same."""
        buffers = self._local.__dict__.setdefault("buffers", {})
        if name not in buffers or buffers[name].shape != shape or buffers[name].dtype != dtype:
            buffers.pop(name, None)  # let the old one go before allocating the new one
            buffers[name] = np.empty(shape, dtype)
        return buffers[name]

    def _scratch(self, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        return self._buffer("work", shape), self._buffer("aggregated", shape)

    def release_buffers(self) -> None:
        """Free the calling thread's post-processing volumes."""
        self._local.__dict__.pop("buffers", None)

    @classmethod
    def from_file(cls, path: Path | str, max_disp: int | None = None, postprocess: str = "none",
                  backend: str = "onnx", provider: str = "cpu", sgm_preset: str = DEFAULT_PRESET,
                  threads: int | None = None, *, fill: bool = True, confidence: bool = False,
                  min_disp: int = 0) -> StereoMatcher:
        """Open the model at ``path`` with ``backend`` (onnx, torch or tf) on ``provider`` (cpu or cuda).

        ``max_disp`` defaults to the model's; ``postprocess`` is ``none`` (winner-take-all) or ``full``; ``fill``,
        ``confidence`` and ``min_disp`` as in the class.
        ``threads`` caps the CPU threads of the backend (see :func:`~stereodeploy.engine.backends.open_backend`);
        the matching kernels' threads follow :func:`stereodeploy.util.threads.configure_threads`.
        """
        # every option is checked before the model loads (the model's range stands in until it is known)
        config = MatchConfig.preset(postprocess, 1 if max_disp is None else max_disp, sgm_preset=sgm_preset)
        be = open_backend(path, backend=backend, provider=provider, threads=threads)
        config = config if max_disp is not None else replace(config, max_disp=be.meta.max_disp)
        return cls(be, config, fill=fill, confidence=confidence, min_disp=min_disp)

    @property
    def sgm_preset(self) -> str:
        return self.config.sgm_preset

    @property
    def max_disp(self) -> int:
        return self.config.max_disp

    def with_max_disp(self, max_disp: int) -> StereoMatcher:
        """The same backend (shared, not reloaded) with another disparity range."""
        return StereoMatcher(self.backend, replace(self.config, max_disp=max_disp), fill=self.fill,
                             confidence=self.confidence, min_disp=self.min_disp)

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
        check_max_disp(self._searched.max_disp, w)

    @property
    def postprocessing(self) -> bool:
        cfg = self.config
        return any((cfg.sgm, cfg.lr_check, cfg.subpixel, cfg.median, cfg.bilateral))

    def _load_kernels(self) -> None:
        """Import numba and load the kernels this matcher runs, in a thread started with the matcher, so that it
        proceeds while the caller reads images and the first pair's features are computed (a fresh process
        otherwise waits about 0.7 s of CPU for numba's import and its cached kernels; nothing here imports numba
        before the features are done). Once per matcher; a kernel the thread has not loaded yet when it is needed is
        loaded by the caller, as without this."""
        if self._loader is not None:
            return

        def load() -> None:
            # only a head start: whatever fails here, the call that needs a kernel loads it itself and says why
            with contextlib.suppress(Exception):
                _import_numba_without_scipy()
                from stereodeploy.engine import matching

                matching.load_kernels(volume=self.postprocessing, confidence=self.confidence)
                if self.postprocessing:
                    from stereodeploy.engine.postprocess import load_kernels

                    load_kernels(self.config)

        self._loader = threading.Thread(target=load, name="stereodeploy-load-kernels", daemon=True)
        self._loader.start()

    def match(self, left: np.ndarray, right: np.ndarray) -> MatchResult:
        """Disparity of the left image, validity, confidence and the time of each stage (see :class:`MatchResult`)."""
        if not self.postprocessing:  # winner-take-all: no cost volume is stored
            left, right = np.asarray(left), np.asarray(right)
            self._check(left, right)
            t0 = time.perf_counter()
            timings: dict[str, float] = {}
            gl, gr, nd = to_gray(left), self._shifted(to_gray(right)), self._searched.max_disp
            details: dict[str, np.ndarray] = {}
            with _numba_guard():
                if self.confidence:
                    disp, details["confidence"] = self.backend.wta_confidence(gl, gr, nd, timings)
                else:
                    disp = self.backend.wta(gl, gr, nd, timings)
            details["valid"] = np.ones(disp.shape, dtype=bool)
            return self._result(disp, details, timings, t0)
        return self._post(self._front(left, right, "cost"))

    def match_many(self, pairs: Iterable[tuple[np.ndarray, np.ndarray]],
                   overlap: bool = True) -> Iterator[MatchResult]:
        """Match a stream of (left, right) image pairs; yields one :class:`MatchResult` per pair, in order.

        With post-processing and ``overlap``, a second thread computes the next pair's features and cost volume
        (and pulls it from ``pairs``, so reading images overlaps too) while this one post-processes the current
        pair. That holds two cost volumes instead of one (425 MB more for a KITTI pair at 228 disparities); each
        result's ``total`` is then its own latency, from its features to its disparity, and pairs come out faster
        than one ``total`` apart. Without post-processing, or with ``overlap=False``, it equals calling
        :meth:`match` on each pair. Where numba runs on its ``workqueue`` layer the two stages take turns.
        """
        items = iter(pairs)
        if not overlap or not self.postprocessing:
            for left, right in items:
                yield self.match(left, right)
            return

        def front(slot: str) -> tuple | None:
            pair = next(items, None)
            return None if pair is None else self._front(pair[0], pair[1], slot)

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="stereodeploy-features") as pool:
            slot = 0
            pending = pool.submit(front, "cost0")
            while True:
                ready = pending.result()
                if ready is None:
                    return
                slot ^= 1
                pending = pool.submit(front, f"cost{slot}")
                yield self._post(ready)

    def _front(self, left: np.ndarray, right: np.ndarray, slot: str) -> tuple:
        """Features and the cost volume of one pair, into the calling thread's volume ``slot``."""
        left, right = np.asarray(left), np.asarray(right)
        self._check(left, right)
        cfg = self.config
        t0 = time.perf_counter()
        gl, gr = to_gray(left), to_gray(right)
        timings: dict[str, float] = {}
        # stored row by row, as engine.matching.row_major_volume, what SGM reads fastest; for SGM as uint16
        # (round(cost * COST_SCALE)): half the memory and traffic, a step of 3e-5 of a cost
        dtype = np.uint16 if cfg.sgm else np.float32
        nd = self._searched.max_disp
        volume = self._buffer(slot, (gl.shape[0], nd, gl.shape[1]), dtype).transpose(1, 0, 2)
        gr = self._shifted(gr)
        with _numba_guard():
            cost = self.backend.cost_volume(gl, gr, nd, timings, out=volume)
        return cost, gl, gr, timings, t0

    def _post(self, front: tuple) -> MatchResult:
        """The post-processing of a pair prepared by :meth:`_front`."""
        from stereodeploy.engine.postprocess import postprocess

        cost, gl, gr, timings, t0 = front
        details: dict[str, np.ndarray] = {}
        with _numba_guard():
            disp, stages = postprocess(cost, gl, gr, self._searched, scratch=self._scratch, details=details)
        timings.update(stages)
        return self._result(disp, details, timings, t0)

    def _shifted(self, right_gray: np.ndarray) -> np.ndarray:
        """The right image moved ``min_disp`` columns to the right (its first column repeated into the gap), so
        that disparity ``min_disp + d`` of the pair is disparity ``d`` of the shifted one."""
        m = self.min_disp
        if m == 0:
            return right_gray
        out = np.empty_like(right_gray)
        out[:, m:] = right_gray[:, :-m]
        out[:, :m] = right_gray[:, :1]
        return out

    def _result(self, disp: np.ndarray, details: dict[str, np.ndarray], timings: dict[str, float],
                t0: float) -> MatchResult:
        """The result in the pair's own disparities: ``min_disp`` added back, nothing left of it valid, and the
        filled pixels NaN unless the matcher fills."""
        valid, confidence = details["valid"], details.get("confidence")
        if self.min_disp:
            disp = disp + np.float32(self.min_disp)
            valid[:, : self.min_disp] = False
            if confidence is not None:
                confidence[:, : self.min_disp] = 0.0
        if not self.fill:
            disp = np.where(valid, disp, np.float32(np.nan))
        total = time.perf_counter() - t0
        timings["matching"] = total - timings["features"]
        timings["total"] = total
        return MatchResult(disparity=disp, valid=valid, confidence=confidence, timings=timings,
                           min_disp=self.min_disp, max_disp=self.config.max_disp)
