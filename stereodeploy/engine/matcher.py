"""The embedding API: a stereo matcher built on any feature backend.

    matcher = StereoMatcher.from_file("model.onnx", max_disp=128, postprocess="full")
    disparity = matcher(left, right)          # (H, W) float32, NaN where the pipeline has no answer
    result = matcher.match(left, right)       # disparity plus the time of every stage
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

import numpy as np

from stereodeploy.config import MatchConfig, check_max_disp
from stereodeploy.data.preprocess import to_gray
from stereodeploy.engine.backends import Backend, open_backend
from stereodeploy.errors import UsageError, UserError

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
                  backend: str = "onnx", provider: str = "cpu", sgm_preset: str = "middlebury",
                  threads: int | None = None) -> StereoMatcher:
        """Open the model at ``path`` with ``backend`` (onnx, torch or tf) on ``provider`` (cpu or cuda).

        ``max_disp`` defaults to the model's; ``postprocess`` is ``none`` (winner-take-all) or ``full``.
        ``threads`` caps the CPU threads of the backend (see :func:`~stereodeploy.engine.backends.open_backend`);
        the matching kernels' threads follow :func:`stereodeploy.util.threads.configure_threads`.
        """
        if postprocess not in ("none", "full"):
            raise UsageError(f"postprocess must be 'none' or 'full', not {postprocess!r}")
        if max_disp is not None and max_disp < 1:
            raise UsageError(f"max disparity must be at least 1, got {max_disp}")
        be = open_backend(path, backend=backend, provider=provider, threads=threads)
        return cls(be, MatchConfig.preset(postprocess, max_disp or be.meta.max_disp), sgm_preset=sgm_preset)

    @property
    def max_disp(self) -> int:
        return self.config.max_disp

    def with_max_disp(self, max_disp: int) -> StereoMatcher:
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

                matching.load_kernels(volume=self.postprocessing)
                if self.postprocessing:
                    from stereodeploy.engine.postprocess import load_kernels

                    load_kernels(self.config, self.sgm_preset)

        self._loader = threading.Thread(target=load, name="stereodeploy-load-kernels", daemon=True)
        self._loader.start()

    def match(self, left: np.ndarray, right: np.ndarray) -> MatchResult:
        """Disparity of the left image and the time of each stage (see :class:`MatchResult`)."""
        if not self.postprocessing:
            left, right = np.asarray(left), np.asarray(right)
            self._check(left, right)
            t0 = time.perf_counter()
            timings: dict[str, float] = {}
            with _numba_guard():
                disp = self.backend.wta(to_gray(left), to_gray(right), self.config.max_disp, timings)
            return self._result(disp, timings, t0)
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
        volume = self._buffer(slot, (gl.shape[0], cfg.max_disp, gl.shape[1]), dtype).transpose(1, 0, 2)
        with _numba_guard():
            cost = self.backend.cost_volume(gl, gr, cfg.max_disp, timings, out=volume)
        return cost, gl, gr, timings, t0

    def _post(self, front: tuple) -> MatchResult:
        """The post-processing of a pair prepared by :meth:`_front`."""
        from stereodeploy.engine.postprocess import postprocess

        cost, gl, gr, timings, t0 = front
        with _numba_guard():
            disp, stages = postprocess(cost, gl, gr, self.config, self.sgm_preset, scratch=self._scratch)
        timings.update(stages)
        return self._result(disp, timings, t0)

    @staticmethod
    def _result(disp: np.ndarray, timings: dict[str, float], t0: float) -> MatchResult:
        total = time.perf_counter() - t0
        timings["matching"] = total - timings["features"]
        timings["total"] = total
        return MatchResult(disparity=disp, timings=timings)
