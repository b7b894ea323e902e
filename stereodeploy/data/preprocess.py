"""The preprocessing every stage shares: colour to gray, and the per-image normalisation.

Training, the native backends, the exported feature model and the one-file matcher all apply exactly this; the
framework graphs (``nets/``, ``deploy/onnx_pipeline.py``) write the same formula with these constants.
"""

from __future__ import annotations

import numpy as np

LUMA_601 = (0.299, 0.587, 0.114)  # BT.601 luma weights of R, G, B
NORM_EPS = 1e-6  # added to the variance, in (grey level)^2: negligible on real images, avoids 0/0 on flat ones

def to_gray(img: np.ndarray) -> np.ndarray:
    """Grayscale float32 ``(H, W)`` in 0..255: BT.601 luma for RGB, ``uint16`` scaled by 255/65535.

    Float input is taken to be in 0..255 already.
    """
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 3 and img.shape[2] == 3:
        w = np.asarray(LUMA_601, dtype=np.float32)
        gray = img.astype(np.float32) @ w
    elif img.ndim == 2:
        gray = img.astype(np.float32)
    else:
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {img.shape}")
    if img.dtype == np.uint16:
        gray *= np.float32(255.0 / 65535.0)
    return gray


def normalize(gray: np.ndarray) -> np.ndarray:
    """Per-image normalisation used everywhere (training, every backend, the ONNX graph):
    ``(x - mean) / sqrt(var + NORM_EPS)`` with the population variance. Input (H, W) in 0..255."""
    gray = np.asarray(gray, dtype=np.float32)
    mean = gray.mean(dtype=np.float64)
    var = gray.var(dtype=np.float64)
    return ((gray - mean) / np.sqrt(var + NORM_EPS)).astype(np.float32)
