"""Disparity to metric depth and to a coloured point cloud (numpy only, framework-free).

For a rectified pair with calibration :class:`stereodeploy.data.calib.Calibration` (focal ``f`` in pixels,
baseline ``B``, principal point ``(cx, cy)``, ``doffs``), a left pixel ``(x, y)`` of disparity ``d`` lies at

    Z = f B / (d + doffs),   X = (x - cx) Z / f,   Y = (y - cy) Z / f

in the left camera's frame (x right, y down, z forward; the units of ``B``, metres here). Pixels without an answer
(not valid, not finite) or at infinity (``d + doffs <= 0``) have no depth (NaN) and no point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from stereodeploy.data.calib import Calibration

__all__ = ["PointCloud", "depth_map", "point_cloud"]


@dataclass(frozen=True)
class PointCloud:
    """``xyz``: (N, 3) float32 points; ``rgb``: (N, 3) uint8 colours or None; ``pixels``: (N, 2) int32 (row,
    column) of the left pixel each point comes from."""

    xyz: np.ndarray
    rgb: np.ndarray | None
    pixels: np.ndarray

    def __len__(self) -> int:
        return int(self.xyz.shape[0])


def depth_map(disparity: np.ndarray, calib: Calibration, valid: np.ndarray | None = None) -> np.ndarray:
    """(H, W) float32 depth ``f B / (d + doffs)``; NaN where ``valid`` is False, ``d`` is not finite or
    ``d + doffs <= 0``."""
    d = np.asarray(disparity, dtype=np.float64) + calib.doffs
    keep = np.isfinite(d) & (d > 0)
    if valid is not None:
        if np.shape(valid) != d.shape:
            raise ValueError(f"valid mask {np.shape(valid)} does not match the disparity {d.shape}")
        keep &= np.asarray(valid, dtype=bool)
    depth = np.full(d.shape, np.nan)
    depth[keep] = calib.focal * calib.baseline / d[keep]
    return depth.astype(np.float32)


def _rgb(colours: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 from a gray, gray + alpha, RGB or RGBA image of ``shape`` (values 0..255)."""
    c = np.asarray(colours)
    if c.shape[:2] != shape:
        raise ValueError(f"colours {c.shape} do not match the disparity {shape}")
    if c.ndim == 3 and c.shape[2] in (1, 2):
        c = c[..., 0]
    c = np.repeat(c[..., None], 3, axis=2) if c.ndim == 2 else c[..., :3]
    return np.clip(np.rint(c), 0, 255).astype(np.uint8) if c.dtype != np.uint8 else c


def point_cloud(disparity: np.ndarray, calib: Calibration, valid: np.ndarray | None = None,
                colours: np.ndarray | None = None) -> PointCloud:
    """The pixels of finite depth (and ``valid``) as 3-D points, row by row, coloured by ``colours`` if given."""
    depth = depth_map(disparity, calib, valid)
    h, w = depth.shape
    rows, cols = np.nonzero(np.isfinite(depth))
    z = depth[rows, cols].astype(np.float64)
    cx, cy = calib.principal_point(w, h)
    xyz = np.stack([(cols - cx) * z / calib.focal, (rows - cy) * z / calib.focal, z], axis=1).astype(np.float32)
    rgb = None if colours is None else _rgb(colours, (h, w))[rows, cols]
    return PointCloud(xyz=xyz, rgb=rgb, pixels=np.stack([rows, cols], axis=1).astype(np.int32))
