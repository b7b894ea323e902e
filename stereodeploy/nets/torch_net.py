"""MC-CNN fast in PyTorch."""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from stereodeploy.config import NetworkConfig
from stereodeploy.data.preprocess import NORM_EPS
from stereodeploy.errors import UserError


class FastMCCNN(nn.Module):
    """``layers`` convolutions of ``maps`` maps, ReLU after all but the last, L2-normalised output.

    ``forward(x)`` takes normalised input. With ``padding=False`` (training) a P x P patch gives a 1 x 1 feature;
    with ``padding=True`` (inference) zero padding keeps the image size: (N, 1, H, W) -> (N, C, H, W).
    """

    def __init__(self, config: NetworkConfig = NetworkConfig()):
        super().__init__()
        self.config = config
        channels = [1] + [config.maps] * config.layers
        self.convs = nn.ModuleList(
            nn.Conv2d(cin, cout, config.kernel) for cin, cout in itertools.pairwise(channels)
        )

    def forward(self, x: torch.Tensor, padding: bool = False) -> torch.Tensor:
        pad = self.config.kernel // 2 if padding else 0
        for i, conv in enumerate(self.convs):
            x = F.conv2d(x, conv.weight, conv.bias, padding=pad)
            if i < len(self.convs) - 1:
                x = F.relu(x)
        return F.normalize(x, p=2.0, dim=1, eps=1e-12)


class RawImageFeatures(nn.Module):
    """The exported contract: raw grayscale (N, 1, H, W) float32 in 0..255 -> L2-normalised (N, C, H, W).

    Each image is normalised by its own mean and population variance, as :func:`stereodeploy.data.preprocess.normalize`.
    """

    def __init__(self, net: FastMCCNN):
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        mean = image.mean(dim=(2, 3), keepdim=True)
        var = ((image - mean) ** 2).mean(dim=(2, 3), keepdim=True)
        return self.net((image - mean) / torch.sqrt(var + NORM_EPS), padding=True)


def get_weights(net: FastMCCNN) -> list[tuple]:
    """Weights as numpy in a framework-neutral layout: [(kernel (out, in, kh, kw), bias (out,)), ...]."""
    return [(c.weight.detach().cpu().numpy().copy(), c.bias.detach().cpu().numpy().copy()) for c in net.convs]


def set_weights(net: FastMCCNN, weights: list[tuple]) -> None:
    if len(weights) != len(net.convs):
        raise ValueError(f"expected {len(net.convs)} layers of weights, got {len(weights)}")
    with torch.no_grad():
        for conv, (k, b) in zip(net.convs, weights):
            conv.weight.copy_(torch.from_numpy(k))
            conv.bias.copy_(torch.from_numpy(b))


def build(network: NetworkConfig, weights: list[tuple]) -> FastMCCNN:
    net = FastMCCNN(network)
    set_weights(net, weights)
    return net.eval()


@torch.no_grad()
def native_features(network: NetworkConfig, weights: list[tuple], image) -> np.ndarray:
    """Raw (N, 1, H, W) 0..255 -> (N, C, H, W) features with the native PyTorch network (CPU)."""
    return RawImageFeatures(build(network, weights))(torch.from_numpy(image)).numpy()


def to_onnx_model(network: NetworkConfig, weights: list[tuple], opset: int):
    """The export contract as an onnx.ModelProto: input ``image`` (N, 1, H, W), output ``features``, all dynamic."""
    import io
    import warnings

    import onnx

    from stereodeploy.nets.portable import bound_clips

    module = RawImageFeatures(build(network, weights)).eval()
    example = torch.zeros(1, 1, 32, 48)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (example,), buffer, input_names=["image"], output_names=["features"], opset_version=opset,
            dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                          "features": {0: "batch", 2: "height", 3: "width"}},
            dynamo=False,
        )
    model = onnx.load_from_string(buffer.getvalue())
    bound_clips(model)  # F.normalize's Clip gets its max too: WebGL rejects a Clip without one
    return model


def resolve_device(device: str, option: str = "--device", index: int = 0) -> tuple[torch.device, str]:
    """``cpu`` or ``cuda`` -> (torch.device, description); ``index`` picks the GPU (a distributed process's local
    rank). One line of advice when the device is not there."""
    if device == "cuda":
        if not torch.cuda.is_available():
            raise UserError("CUDA was asked for but torch sees no CUDA device: install a CUDA build of torch, "
                            f"or use {option} cpu")
        if index >= torch.cuda.device_count():
            raise UserError(f"process {index} on this node needs GPU {index}, but torch sees "
                            f"{torch.cuda.device_count()}: start at most that many processes per node")
        dev = torch.device("cuda", index)
        return dev, f"cuda ({torch.cuda.get_device_name(dev)})"
    return torch.device("cpu"), "cpu"


def set_threads(intra: int, inter: int) -> None:
    """Size PyTorch's thread pools (stereodeploy.util.threads decides the counts)."""
    torch.set_num_threads(intra)
    try:
        torch.set_num_interop_threads(inter)
    except RuntimeError:  # already sized by earlier parallel work in this process
        pass


def thread_counts() -> dict[str, int]:
    return {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()}
