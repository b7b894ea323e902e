"""Framework-neutral weights: a list of (kernel (out, in, kh, kw), bias (out,)) float32 numpy pairs per conv.

One seeded initialisation here feeds every framework, so PyTorch and TensorFlow start from the same weights.
"""

from __future__ import annotations

import numpy as np

from stereodeploy.config import NetworkConfig

Weights = list[tuple[np.ndarray, np.ndarray]]


def init_weights(network: NetworkConfig, seed: int) -> Weights:
    """PyTorch's default Conv2d initialisation (uniform in +-1/sqrt(fan_in) for kernel and bias), drawn with numpy."""
    rng = np.random.default_rng([seed, 0x3C])
    weights = []
    cin = 1
    for _ in range(network.layers):
        fan_in = cin * network.kernel * network.kernel
        bound = 1.0 / np.sqrt(fan_in)
        k = rng.uniform(-bound, bound, (network.maps, cin, network.kernel, network.kernel)).astype(np.float32)
        b = rng.uniform(-bound, bound, network.maps).astype(np.float32)
        weights.append((k, b))
        cin = network.maps
    return weights


def torch_to_keras(weights: Weights) -> Weights:
    """Neutral / PyTorch layout -> Keras: kernels (out, in, kh, kw) -> (kh, kw, in, out); biases unchanged."""
    return [(np.ascontiguousarray(np.transpose(k, (2, 3, 1, 0)), dtype=np.float32), np.asarray(b, dtype=np.float32))
            for k, b in weights]


def keras_to_torch(weights: Weights) -> Weights:
    """Keras layout -> neutral / PyTorch: kernels (kh, kw, in, out) -> (out, in, kh, kw); biases unchanged."""
    return [(np.ascontiguousarray(np.transpose(k, (3, 2, 0, 1)), dtype=np.float32), np.asarray(b, dtype=np.float32))
            for k, b in weights]
