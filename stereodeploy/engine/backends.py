"""Feature backends: one small class per runtime behind one base, chosen from a table.

Every backend maps raw grayscale images (0..255) to L2-normalised feature maps with the same contract as the
exported ONNX file, so the matching code after it is shared. ``features_pair`` runs left and right as one batch.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from stereodeploy.errors import UsageError, UserError
from stereodeploy.export import INPUT_NAME, OUTPUT_NAME, ModelMeta, read_meta


class Backend(ABC):
    """Turns a pair of (H, W) float32 grayscale images into (C, H, W) features each."""

    name: str = ""
    meta: ModelMeta
    device: str = "cpu"

    @abstractmethod
    def features_batch(self, images: np.ndarray) -> np.ndarray:
        """(N, 1, H, W) float32 0..255 -> (N, C, H, W) float32."""

    def features_pair(self, left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self.features_batch(np.stack([left, right])[:, None].astype(np.float32, copy=False))
        return out[0], out[1]


class OnnxBackend(Backend):
    """onnxruntime on the CPU or, where its CUDA provider is installed and active, on the GPU."""

    name = "onnx"

    def __init__(self, path: Path | str, provider: str = "cpu", threads: int = 0):
        import onnx
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise UserError(f"model file {path} does not exist: give an ONNX file written by `stereodeploy export`")
        try:
            proto = onnx.load_model(str(path), load_external_data=False)
        except Exception as exc:  # noqa: BLE001 - a corrupt file is the user's problem, in one line
            raise UserError(f"{path} is not a readable ONNX file ({type(exc).__name__}): export the model again") from None
        self.meta = read_meta(proto, str(path))
        inputs, outputs = proto.graph.input, proto.graph.output
        if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in outputs] != [OUTPUT_NAME]:
            raise UserError(f"{path} does not have the stereodeploy contract (one input '{INPUT_NAME}', one output "
                            f"'{OUTPUT_NAME}'): export it with `stereodeploy export`")
        providers = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}
        if provider not in providers:
            raise UsageError(f"unknown provider {provider!r}: use cpu or cuda")
        if provider == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            raise UserError("CUDA was asked for but this onnxruntime has no CUDA provider: "
                            "pip install onnxruntime-gpu, or use --provider cpu")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(proto.SerializeToString(), options, providers=providers[provider])
        except Exception as exc:  # noqa: BLE001
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if "opset" in text.lower():
                raise UserError(f"{path} needs an ONNX opset this onnxruntime {ort.__version__} lacks: upgrade "
                                "onnxruntime or export with an older opset") from None
            raise UserError(f"onnxruntime cannot load {path}: {text}") from None
        active = self.session.get_providers()
        if provider == "cuda" and active[0] != "CUDAExecutionProvider":
            raise UserError(f"the CUDA provider did not start (active: {', '.join(active)}): check the CUDA and "
                            "cuDNN libraries onnxruntime-gpu needs, or use --provider cpu")
        self.providers = active
        self.device = "cuda" if active[0] == "CUDAExecutionProvider" else "cpu"
        self.path = path

    def features_batch(self, images: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]


class TorchBackend(Backend):
    """Native PyTorch from a run directory / checkpoint, or from an ONNX file's weights (torch-exported or not)."""

    name = "torch"

    def __init__(self, path: Path | str, device: str = "cpu"):
        import torch

        from stereodeploy.nets import torch_net
        from stereodeploy.train.torch_trainer import resolve_device

        self.dev = resolve_device(device)
        self.meta, weights = load_weights(Path(path))
        net = torch_net.build(self.meta.network, weights).to(self.dev)
        self.module = torch_net.RawImageFeatures(net).eval()
        self.device = str(self.dev)
        self._torch = torch

    def features_batch(self, images: np.ndarray) -> np.ndarray:
        return self.features_tensor(images).cpu().numpy()

    def features_tensor(self, images: np.ndarray):
        with self._torch.inference_mode():
            x = self._torch.from_numpy(np.ascontiguousarray(images)).to(self.dev)
            return self.module(x)


def load_weights(path: Path) -> tuple[ModelMeta, list[tuple[np.ndarray, np.ndarray]]]:
    """Network config and weights from a checkpoint / run directory, or from an exported ONNX file's initializers."""
    if path.suffix == ".onnx":
        import onnx
        from onnx import numpy_helper

        if not path.is_file():
            raise UserError(f"model file {path} does not exist")
        proto = onnx.load_model(str(path))
        meta = read_meta(proto, str(path))
        inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
        weights = []
        for node in proto.graph.node:
            if node.op_type == "Conv":
                k = inits[node.input[1]]
                b = inits[node.input[2]] if len(node.input) > 2 else np.zeros(k.shape[0], np.float32)
                weights.append((k.astype(np.float32), b.astype(np.float32)))
        if len(weights) != meta.network.layers:
            raise UserError(f"{path}: found {len(weights)} convolutions, expected {meta.network.layers}")
        return meta, weights
    from stereodeploy.train.loop import load_checkpoint

    ckpt = load_checkpoint(path)
    meta = ModelMeta(network=ckpt.network, source_framework=ckpt.framework,
                     source_framework_version=ckpt.meta.get("framework_version", ""),
                     training_data=ckpt.meta.get("data", {}))
    return meta, ckpt.weights


# backend name -> "module:class"; a backend is imported only when asked for
BACKENDS = {
    "onnx": "stereodeploy.engine.backends:OnnxBackend",
    "torch": "stereodeploy.engine.backends:TorchBackend",
    "tf": "stereodeploy.engine.tf_backend:TFBackend",
}


def open_backend(path: Path | str, backend: str = "onnx", provider: str = "cpu") -> Backend:
    """The backend ``backend`` for the model at ``path``; ``provider`` is cpu or cuda."""
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
    module, cls = BACKENDS[backend].split(":")
    try:
        factory = getattr(importlib.import_module(module), cls)
    except ImportError as exc:
        extra = {"torch": "torch", "tf": "tf"}.get(backend, "")
        raise UserError(f"the {backend} backend needs {exc.name}: pip install 'stereodeploy[{extra}]'") from None
    if backend == "onnx":
        return factory(path, provider=provider)
    return factory(path, device=provider)
