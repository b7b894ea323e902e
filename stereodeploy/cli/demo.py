"""The demo: the shipped model on scikit-image's Middlebury 2014 Motorcycle pair, scored against its ground truth."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stereodeploy.errors import UserError

MOTORCYCLE_MAX_DISP = 70  # ndisp 280 at full resolution; scikit-image ships the pair at a quarter of the width


@dataclass
class DemoResult:
    error_rate: float  # >= 3 px, percent of pixels with ground truth (invalid output counts as an error)
    seconds: float
    timings: dict[str, float]
    image: Path


def motorcycle() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        from skimage import data
    except ImportError:
        raise UserError("the demo pair comes with scikit-image: pip install 'stereodeploy[demo]'") from None
    left, right, gt = data.stereo_motorcycle()
    return left, right, np.where(np.isfinite(gt), gt, np.nan).astype(np.float32)


def side_by_side(*images: np.ndarray, gap: int = 8) -> np.ndarray:
    """uint8 pictures next to each other, top-aligned, on white (shorter ones padded below, as under a legend)."""
    h = max(im.shape[0] for im in images)
    parts = []
    for i, im in enumerate(images):
        im = im if im.ndim == 3 else np.repeat(im[..., None], 3, axis=2)
        pad = np.full((h - im.shape[0],) + im.shape[1:], 255, np.uint8)
        parts.append(np.concatenate([im.astype(np.uint8), pad]))
        if i < len(images) - 1:
            parts.append(np.full((h, gap, 3), 255, np.uint8))
    return np.concatenate(parts, axis=1)


def run_demo(model: Path, out: Path, postprocess: str = "full", backend: str = "onnx", provider: str = "cpu",
             overwrite: bool = False) -> DemoResult:
    """Match the Motorcycle pair, score it, and write left | colour disparity | error map as one PNG.

    The disparity panel has its colour bar (0 to :data:`MOTORCYCLE_MAX_DISP` pixels) and the error map its legend
    under it (:func:`stereodeploy.data.io.colorize_with_bar`, :func:`stereodeploy.data.io.error_map_with_legend`).
    """
    from stereodeploy.data.io import (
        colorize_with_bar,
        ensure_writable,
        error_map_with_legend,
        write_png,
    )
    from stereodeploy.engine.matcher import StereoMatcher
    from stereodeploy.study.evaluate import error_rate

    target = Path(out) / f"motorcycle_{postprocess}.png"
    ensure_writable(target, overwrite)
    left, right, gt = motorcycle()
    matcher = StereoMatcher.from_file(model, max_disp=MOTORCYCLE_MAX_DISP, postprocess=postprocess, backend=backend,
                                      provider=provider)
    matcher.match(left[:64, :128], right[:64, :128])  # warm-up: compiles the matching kernels once
    result = matcher.match(left, right)
    picture = side_by_side(left, colorize_with_bar(result.disparity, MOTORCYCLE_MAX_DISP),
                           error_map_with_legend(result.disparity, gt))
    write_png(target, picture, overwrite=overwrite)
    return DemoResult(error_rate=error_rate(result.disparity, gt), seconds=result.timings["total"],
                      timings=result.timings, image=target)
