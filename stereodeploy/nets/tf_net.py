"""MC-CNN fast in TensorFlow / Keras 3, numerically the same network as :mod:`stereodeploy.nets.torch_net`.

Inside, tensors are NHWC (TensorFlow's CPU convolutions want channels last); everything that leaves this module
(:func:`native_features`, the ONNX graph of :func:`to_onnx_model`) is NCHW like the PyTorch side. Weights travel in
the framework-neutral layout of :mod:`stereodeploy.nets.weights` ((out, in, kh, kw) kernels) and are converted to
Keras' (kh, kw, in, out) here.
"""

from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf

from stereodeploy.config import NetworkConfig
from stereodeploy.data.preprocess import NORM_EPS
from stereodeploy.errors import UserError
from stereodeploy.nets.weights import Weights, keras_to_torch, torch_to_keras

L2_EPS = 1e-12  # as torch.nn.functional.normalize: x / max(||x||, eps)


def l2_normalize(x: tf.Tensor) -> tf.Tensor:
    """``x / max(||x||_2, 1e-12)`` over the channel axis (last), exactly torch's ``F.normalize(x, dim=1)``.

    Written as ``sqrt(max(sum x^2, eps^2))`` so the gradient is finite (zero) at a zero vector, as in torch.
    """
    return x / tf.sqrt(tf.maximum(tf.reduce_sum(tf.square(x), axis=-1, keepdims=True), L2_EPS**2))


class FastMCCNN(keras.layers.Layer):
    """``layers`` convolutions of ``maps`` maps, ReLU after all but the last, L2-normalised output (NHWC).

    ``call(x, padding=False)`` takes normalised input (N, H, W, 1). Without padding (training) a P x P patch gives a
    1 x 1 feature; with ``padding=True`` zero padding of kernel // 2 ('same') keeps the image size.
    """

    def __init__(self, config: NetworkConfig = NetworkConfig(), **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.kernels: list[keras.Variable] = []
        self.biases: list[keras.Variable] = []
        cin = 1
        for i in range(config.layers):
            self.kernels.append(self.add_weight(shape=(config.kernel, config.kernel, cin, config.maps),
                                                initializer="zeros", name=f"kernel{i}"))
            self.biases.append(self.add_weight(shape=(config.maps,), initializer="zeros", name=f"bias{i}"))
            cin = config.maps
        self.built = True

    def call(self, x: tf.Tensor, padding: bool = False) -> tf.Tensor:
        mode = "SAME" if padding else "VALID"
        last = len(self.kernels) - 1
        for i, (k, b) in enumerate(zip(self.kernels, self.biases)):
            x = tf.nn.bias_add(tf.nn.conv2d(x, k.value, strides=1, padding=mode), b.value)
            if i < last:
                x = tf.nn.relu(x)
        return l2_normalize(x)

    @property
    def variables_in_order(self) -> list[keras.Variable]:
        """kernel0, bias0, kernel1, bias1, ... (the order of :func:`get_weights`)."""
        return [v for pair in zip(self.kernels, self.biases) for v in pair]


def normalize_images(image: tf.Tensor) -> tf.Tensor:
    """Per-image ``(x - mean) / sqrt(var + NORM_EPS)`` with the population variance, over H and W of (N, H, W, 1),
    as :func:`stereodeploy.data.preprocess.normalize` and the PyTorch export."""
    mean = tf.reduce_mean(image, axis=(1, 2), keepdims=True)
    var = tf.reduce_mean(tf.square(image - mean), axis=(1, 2), keepdims=True)
    return (image - mean) / tf.sqrt(var + NORM_EPS)


class RawImageFeatures(keras.layers.Layer):
    """The exported contract on NHWC tensors: raw grayscale (N, H, W, 1) in 0..255 -> (N, H, W, C) features."""

    def __init__(self, net: FastMCCNN, **kwargs):
        super().__init__(**kwargs)
        self.net = net

    def call(self, image: tf.Tensor) -> tf.Tensor:
        return self.net(normalize_images(image), padding=True)


def get_weights(net: FastMCCNN) -> Weights:
    """Weights as numpy in the framework-neutral layout: [(kernel (out, in, kh, kw), bias (out,)), ...]."""
    return keras_to_torch([(np.array(k.numpy()), np.array(b.numpy())) for k, b in zip(net.kernels, net.biases)])


def set_weights(net: FastMCCNN, weights: Weights) -> None:
    if len(weights) != len(net.kernels):
        raise ValueError(f"expected {len(net.kernels)} layers of weights, got {len(weights)}")
    for var_k, var_b, (k, b) in zip(net.kernels, net.biases, torch_to_keras(weights)):
        if tuple(var_k.shape) != k.shape or tuple(var_b.shape) != b.shape:
            raise ValueError(f"weight shapes {k.shape}, {b.shape} do not fit the network "
                             f"({tuple(var_k.shape)}, {tuple(var_b.shape)})")
        var_k.assign(k)
        var_b.assign(b)


def build(network: NetworkConfig, weights: Weights, name: str | None = None) -> FastMCCNN:
    net = FastMCCNN(network, name=name)
    set_weights(net, weights)
    return net


def nchw_function(network: NetworkConfig, weights: Weights) -> tf.types.experimental.PolymorphicFunction:
    """A tf.function with the export contract: ``image`` (N, 1, H, W) raw 0..255 -> (N, C, H, W) features."""
    model = RawImageFeatures(build(network, weights, name="mccnn"), name="raw_image_features")

    @tf.function(input_signature=[tf.TensorSpec((None, 1, None, None), tf.float32, name="image")])
    def features(image: tf.Tensor) -> tf.Tensor:
        out = model(tf.transpose(image, (0, 2, 3, 1)))  # (N, H, W, C)
        return tf.transpose(out, (0, 3, 1, 2))  # (N, C, H, W)

    features.model = model  # keep the variables alive with the function
    return features


def native_features(network: NetworkConfig, weights: Weights, image: np.ndarray) -> np.ndarray:
    """Raw (N, 1, H, W) 0..255 -> (N, C, H, W) features with the native TensorFlow network (CPU)."""
    with tf.device("/CPU:0"):
        return nchw_function(network, weights)(tf.constant(image, tf.float32)).numpy()


def to_onnx_model(network: NetworkConfig, weights: Weights, opset: int):
    """The export contract as an onnx.ModelProto through tf2onnx: input ``image`` (N, 1, H, W), output
    ``features`` (N, C, H, W), N, H and W dynamic, normalisation inside the graph."""
    import tf2onnx

    from stereodeploy.nets.portable import bound_clips

    with tf.device("/CPU:0"):
        func = nchw_function(network, weights)
        model, _ = tf2onnx.convert.from_function(func, input_signature=func.input_signature, opset=opset)
    _rename_output(model, "features")
    bound_clips(model)  # any one-sided Clip gets both bounds (WebGL)
    for value in (model.graph.input[0], model.graph.output[0]):  # dynamic axes named as in the PyTorch export
        dims = value.type.tensor_type.shape.dim
        for i, dim_name in ((0, "batch"), (2, "height"), (3, "width")):
            dims[i].dim_param = dim_name
    return model


def _rename_output(model, name: str) -> None:
    """tf2onnx names the graph output after the TensorFlow tensor (``Identity:0``); give it the contract's name."""
    graph = model.graph
    if len(graph.output) != 1:
        raise RuntimeError(f"expected one graph output from tf2onnx, got {len(graph.output)}")
    old = graph.output[0].name
    if old == name:
        return
    for node in graph.node:
        for i, out in enumerate(node.output):
            if out == old:
                node.output[i] = name
        for i, inp in enumerate(node.input):
            if inp == old:
                node.input[i] = name
    graph.output[0].name = name


def resolve_device(device: str, option: str = "--device", index: int = 0) -> tuple[str, str]:
    """``cpu`` or ``cuda`` -> (TensorFlow device string, description); ``index`` picks the GPU (a worker's local
    index on its host). CPU is pinned even when a GPU is visible, so that the cpu device compares the frameworks
    on the same hardware."""
    if device == "cpu":
        return "/CPU:0", "cpu"
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        raise UserError("CUDA was asked for but TensorFlow sees no GPU: install a GPU build of TensorFlow "
                        f"(pip install 'tensorflow[and-cuda]'), or use {option} cpu")
    if index >= len(gpus):
        raise UserError(f"worker {index} on this host needs GPU {index}, but TensorFlow sees {len(gpus)}: "
                        "run at most that many workers per host")
    name = tf.config.experimental.get_device_details(gpus[index]).get("device_name", "GPU")
    return f"/GPU:{index}", f"cuda ({name})"


def set_threads(intra: int, inter: int) -> None:
    """Size TensorFlow's thread pools (stereodeploy.util.threads decides the counts)."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:  # the runtime has started: the pools are fixed (the environment was read then)
        pass


def thread_counts() -> dict[str, int]:
    """The pools' sizes; 0 (TensorFlow's "not set") falls back to the environment it read at start."""
    return {"intra_op": tf.config.threading.get_intra_op_parallelism_threads()
            or int(os.environ.get("TF_NUM_INTRAOP_THREADS", "0") or 0),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads()
            or int(os.environ.get("TF_NUM_INTEROP_THREADS", "0") or 0)}
