"""Feature backends: one small class per runtime behind one base, chosen from a table.

Every backend maps raw grayscale images (0..255) to L2-normalised feature maps with the same contract as the
exported ONNX file, so the matching code after it is shared. ``features_pair`` runs left and right as one batch.

A backend also offers the two matching entry points the matcher uses, :meth:`Backend.wta` and
:meth:`Backend.cost_volume`. By default they bring the features to the host and call the shared numba code of
:mod:`stereodeploy.engine.matching`, imported only then (numba's import is a third of a second that a matcher
spends in a thread while the network runs); the torch backend on a CUDA device overrides them to keep the cost volume and
winner-take-all on the device (:mod:`stereodeploy.engine.torch_backend`).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from stereodeploy.contract import (
    INPUT_NAME,
    OUTPUT_NAME,
    ModelMeta,
    check_model_path,
    load_onnx,
    read_meta,
    session_meta,
    unreadable,
)
from stereodeploy.errors import UsageError, UserError


class Backend(ABC):
    """Turns a pair of (H, W) float32 grayscale images into (C, H, W) features each, and matches them.

    Implementations hold only read-only state after construction, so one instance may serve several threads.
    """

    name: str = ""
    meta: ModelMeta
    device: str = "cpu"

    @abstractmethod
    def features_batch(self, images: np.ndarray, release: bool = False) -> np.ndarray:
        """(N, 1, H, W) float32 0..255 -> (N, C, H, W) float32. ``release``: hand the runtime's working memory
        back afterwards, for a caller about to need a lot of it (runtimes without such memory ignore it)."""

    def features_pair(self, left: np.ndarray, right: np.ndarray,
                      release: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(H, W) float32 0..255 left and right -> their (C, H, W) float32 features, computed as one batch."""
        out = self.features_batch(np.stack([left, right])[:, None].astype(np.float32, copy=False), release)
        return out[0], out[1]

    def wta(self, left: np.ndarray, right: np.ndarray, max_disp: int,
            timings: dict[str, float]) -> np.ndarray:
        """(H, W) grayscale pair -> (H, W) float32 winner-take-all disparity (left reference).

        Adds the seconds spent to ``timings`` under ``features`` and ``matching``.
        """
        return self._features_then(left, right, max_disp, timings, "wta_from_features")

    def wta_confidence(self, left: np.ndarray, right: np.ndarray, max_disp: int,
                       timings: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`wta`, with the winners' confidence (:func:`stereodeploy.engine.postprocess.confidence_ratio`),
        still without storing the cost volume."""
        return self._features_then(left, right, max_disp, timings, "wta_confidence_from_features")

    def _features_then(self, left: np.ndarray, right: np.ndarray, max_disp: int, timings: dict[str, float],
                       kernel: str) -> Any:
        """``matching.<kernel>(features_left, features_right, max_disp)``, timed as ``features`` and ``matching``."""
        t0 = time.perf_counter()
        fl, fr = self.features_pair(left, right)
        t1 = time.perf_counter()
        from stereodeploy.engine import matching  # numba: imported once the features are done

        out = getattr(matching, kernel)(fl, fr, max_disp)
        timings["features"] = t1 - t0
        timings["matching"] = time.perf_counter() - t1
        return out

    def cost_volume(self, left: np.ndarray, right: np.ndarray, max_disp: int,
                    timings: dict[str, float], out: np.ndarray | None = None) -> np.ndarray:
        """(H, W) grayscale pair -> host (max_disp, H, W) float32 cost volume (left reference), into ``out`` if
        given (see :func:`stereodeploy.engine.matching.cost_volume`).

        Adds the seconds spent to ``timings`` under ``features`` and ``cost_volume``.
        """
        t0 = time.perf_counter()
        fl, fr = self.features_pair(left, right, release=True)  # post-processing needs the memory
        t1 = time.perf_counter()
        from stereodeploy.engine.matching import cost_volume

        cost = cost_volume(fl, fr, max_disp, out)
        timings["features"] = t1 - t0
        timings["cost_volume"] = time.perf_counter() - t1
        return cost


class OnnxBackend(Backend):
    """onnxruntime on the CPU or, where its CUDA provider is installed and active, on the GPU."""

    name = "onnx"

    def __init__(self, path: Path | str, provider: str = "cpu", threads: int = 0):
        import onnxruntime as ort

        path = check_model_path(path)
        providers = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}
        if provider not in providers:
            raise UsageError(f"unknown provider {provider!r}: use cpu or cuda")
        if provider == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            raise UserError("CUDA was asked for but this onnxruntime has no CUDA provider: "
                            "pip install onnxruntime-gpu, or use --provider cpu")
        options = ort.SessionOptions()
        # no busy-waiting after a run: the matching code that follows needs those cores
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
        # One session, straight from the file; its metadata and signature are checked before it is ever run. (No
        # `onnx` here: importing it costs over a second, most of it ml_dtypes, for nothing onnxruntime cannot say.)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers[provider])
        except Exception as exc:  # noqa: BLE001
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if "INVALID_PROTOBUF" in text or type(exc).__name__ == "InvalidProtobuf":
                raise unreadable(path, exc) from None
            if "opset" in text.lower():
                raise UserError(f"{path} needs an ONNX opset this onnxruntime {ort.__version__} lacks: upgrade "
                                "onnxruntime or export with an older opset") from None
            raise UserError(f"onnxruntime cannot load {path}: {text}") from None
        self.meta = session_meta(self.session, str(path))
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in outputs] != [OUTPUT_NAME]:
            raise UserError(f"{path} does not have the stereodeploy contract (one input '{INPUT_NAME}', one output "
                            f"'{OUTPUT_NAME}'): export it with `stereodeploy export`")
        active = self.session.get_providers()
        if provider == "cuda" and active[0] != "CUDAExecutionProvider":
            raise UserError(f"the CUDA provider did not start (active: {', '.join(active)}): check the CUDA and "
                            "cuDNN libraries onnxruntime-gpu needs, or use --provider cpu")
        self.providers = active
        self.device = "cuda" if active[0] == "CUDAExecutionProvider" else "cpu"
        # With ``release``, the arena's intermediate buffers go back after the run: post-processing (a 425 MB cost
        # volume and two SGM volumes on a KITTI-sized pair) then reuses that memory instead of adding to it.
        # Measured: peak RSS of a full pipeline 2.18 -> 1.73 GB, for about 0.2 s more per features run, which is
        # why winner-take-all alone keeps the arena (docs/benchmarks.md).
        self._release = ort.RunOptions()
        arena = "gpu:0" if self.device == "cuda" else "cpu:0"
        self._release.add_run_config_entry("memory.enable_memory_arena_shrinkage", arena)
        self.path = path

    def features_batch(self, images: np.ndarray, release: bool = False) -> np.ndarray:
        if not release or self.device != "cpu":
            return self.session.run([OUTPUT_NAME], {INPUT_NAME: images}, self._release if release else None)[0]
        # The output goes into an array numpy owns: onnxruntime's own output would sit in the arena, which then
        # cannot hand that block back, so the 238 MB of a KITTI pair's features would stay resident through the
        # whole post-processing after the array is dropped (peak RSS of a full run 1.57 -> 1.35 GB).
        n, _, h, w = images.shape
        out = np.empty((n, self.meta.network.maps, h, w), dtype=np.float32)
        binding = self.session.io_binding()
        binding.bind_cpu_input(INPUT_NAME, np.ascontiguousarray(images, dtype=np.float32))
        binding.bind_output(OUTPUT_NAME, "cpu", 0, np.float32, list(out.shape), out.ctypes.data)
        self.session.run_with_iobinding(binding, self._release)
        return out


def load_weights(path: Path) -> tuple[ModelMeta, list[tuple[np.ndarray, np.ndarray]]]:
    """Network config and weights from a checkpoint / run directory, or from an exported ONNX file's initializers."""
    if path.suffix == ".onnx":
        from onnx import numpy_helper

        proto = load_onnx(path)
        meta = read_meta(proto, str(path))
        inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
        weights = []
        for node in proto.graph.node:
            if node.op_type == "Conv":
                if node.input[1] not in inits:  # e.g. int8 weights behind a DequantizeLinear
                    raise UserError(f"{path} holds no float32 weights a native backend can load (a quantised "
                                    "model?): use --backend onnx for it, or give the float32 model")
                k = inits[node.input[1]]
                b = inits[node.input[2]] if len(node.input) > 2 else np.zeros(k.shape[0], np.float32)
                weights.append((k.astype(np.float32), b.astype(np.float32)))
        if len(weights) != meta.network.layers:
            raise UserError(f"{path}: found {len(weights)} convolutions, expected {meta.network.layers}")
        return meta, weights
    from stereodeploy.train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    meta = ModelMeta(network=ckpt.network, source_framework=ckpt.framework,
                     source_framework_version=ckpt.meta.get("framework_version", ""),
                     training_data=ckpt.meta.get("data", {}))
    return meta, ckpt.weights


def open_backend(path: Path | str, backend: str = "onnx", provider: str = "cpu", threads: int | None = None) -> Backend:
    """The backend ``backend`` (onnx, or a framework of :data:`stereodeploy.frameworks.FRAMEWORKS`) for the model at
    ``path``; ``provider`` is cpu or cuda. ``threads``: CPU threads per operation (None: the runtime's default; see
    :func:`stereodeploy.util.threads.configure_threads`, which a native framework reads)."""
    from stereodeploy import frameworks

    if provider not in frameworks.DEVICES:
        raise UsageError(f"unknown provider {provider!r}: use {' or '.join(frameworks.DEVICES)}")
    if backend == "onnx":
        return OnnxBackend(path, provider=provider, threads=threads or 0)
    if backend not in frameworks.FRAMEWORKS:
        raise UsageError(f"unknown backend {backend!r}: use one of {', '.join(backend_names())}")
    fw = frameworks.FRAMEWORKS[backend]
    fw.require("backend")
    if threads is not None:
        from stereodeploy.util.threads import configure_threads

        configure_threads(threads, frameworks=[backend])
    return fw.load("backend")(path, device=provider)


def backend_names() -> tuple[str, ...]:
    """Every backend name: onnx, then one per framework."""
    from stereodeploy.frameworks import FRAMEWORKS

    return ("onnx", *FRAMEWORKS)
