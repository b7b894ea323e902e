"""stereodeploy: train, export and deploy the MC-CNN fast stereo matcher in PyTorch, TensorFlow and ONNX.

Embedding API::

    from stereodeploy import StereoMatcher
    matcher = StereoMatcher.from_file("model.onnx", max_disp=128, postprocess="full")
    disparity = matcher(left, right)  # numpy images in, (H, W) float32 disparity out (NaN = invalid)

Importing the package loads neither torch nor TensorFlow.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["StereoMatcher", "__version__"]


def __getattr__(name: str):  # lazy, so `import stereodeploy` stays light
    if name == "StereoMatcher":
        from stereodeploy.engine.matcher import StereoMatcher

        return StereoMatcher
    raise AttributeError(name)
