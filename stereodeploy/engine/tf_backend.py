"""Native TensorFlow feature backend (kept apart from backends.py so that only this module imports TensorFlow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stereodeploy.engine.backends import Backend, load_weights


class TFBackend(Backend):
    """Native TensorFlow from a run directory / checkpoint, or from an ONNX file's weights (any source framework)."""

    name = "tf"

    def __init__(self, path: Path | str, device: str = "cpu"):
        import tensorflow as tf

        from stereodeploy.frameworks import FRAMEWORKS
        from stereodeploy.nets import tf_net

        self.tf_device, _ = FRAMEWORKS["tf"].resolve_device(device, "--provider")
        self.device = "cuda" if "GPU" in self.tf_device else "cpu"
        self.meta, weights = load_weights(Path(path))
        with tf.device(self.tf_device):
            self._function = tf_net.nchw_function(self.meta.network, weights)
        self._tf = tf

    def features_batch(self, images: np.ndarray, release: bool = False) -> np.ndarray:
        """(N, 1, H, W) float32 0..255 -> (N, C, H, W) float32."""
        with self._tf.device(self.tf_device):
            return self._function(np.ascontiguousarray(images, dtype=np.float32)).numpy()
