"""Stereo calibration for depth: read KITTI and Middlebury calibration files, or take the values given.

A rectified pair needs four numbers to turn disparity into depth, ``Z = focal * baseline / (d + doffs)``, and the
principal point to place a pixel in 3-D (:mod:`stereodeploy.engine.geometry`):

- KITTI (``calib_cam_to_cam.txt`` of the raw data, ``calib_cam_to_cam/<frame>.txt`` of KITTI 2015): the rectified
  projection matrices ``P_rect_02`` (left colour camera) and ``P_rect_03`` (right), 3 x 4 each, ``P = K [I | t]``
  with ``P[0, 3] = -focal * t_x``. Focal length ``P_rect_02[0, 0]``, principal point ``(P[0, 2], P[1, 2])``,
  baseline ``(P_rect_02[0, 3] - P_rect_03[0, 3]) / focal`` in metres (0.54 m on KITTI's car), doffs the difference
  of the two principal points' x (0 after KITTI's rectification). The values may follow their key on the same line
  or on the next ones.
- Middlebury (``calib.txt`` of the 2014 / MiddEval3 datasets): ``cam0=[f 0 cx; 0 f cy; 0 0 1]``, ``cam1`` alike,
  ``doffs`` (x difference of the principal points, ``cx1 - cx0``), ``baseline`` in millimetres (converted to
  metres here). The 2001-2006 scenes rewritten into that layout carry no ``cam0``: they cannot give depth.

Depth comes out in the units of :attr:`Calibration.baseline`: metres throughout this package.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stereodeploy.errors import UsageError, UserError

__all__ = ["Calibration", "display_range", "find_calibration", "read_calibration"]

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


@dataclass(frozen=True)
class Calibration:
    """A rectified pair's geometry: ``focal`` in pixels, ``baseline`` in metres, principal point ``(cx, cy)`` of the
    left camera in pixels (None: the image centre), ``doffs`` in pixels, and where it came from."""

    focal: float
    baseline: float
    cx: float | None = None
    cy: float | None = None
    doffs: float = 0.0
    source: str = "given"

    def __post_init__(self) -> None:
        if not (np.isfinite(self.focal) and self.focal > 0):
            raise UsageError(f"focal length must be a positive number of pixels, got {self.focal}")
        if not (np.isfinite(self.baseline) and self.baseline > 0):
            raise UsageError(f"baseline must be a positive number of metres, got {self.baseline}")

    def principal_point(self, width: int, height: int) -> tuple[float, float]:
        """``(cx, cy)``, the image centre ``((W - 1) / 2, (H - 1) / 2)`` where the calibration has none."""
        return (self.cx if self.cx is not None else (width - 1) / 2.0,
                self.cy if self.cy is not None else (height - 1) / 2.0)

    def to_dict(self) -> dict[str, float | str | None]:
        return {"focal": self.focal, "baseline": self.baseline, "cx": self.cx, "cy": self.cy, "doffs": self.doffs,
                "source": self.source}


def _kitti_matrix(text: str, key: str, path: Path) -> np.ndarray:
    """The 12 numbers after ``key:`` (on its line or the next ones, up to the next key) as a 3 x 4 matrix."""
    match = re.search(rf"^{key}:\s*(.*?)(?=^\w+:|\Z)", text, flags=re.MULTILINE | re.DOTALL)
    values = re.findall(_NUMBER, match.group(1)) if match else []
    if len(values) != 12:
        raise UserError(f"{path}: {key} needs 12 numbers (a 3x4 projection matrix), found {len(values)}; "
                        "give KITTI's calib_cam_to_cam file")
    return np.array([float(v) for v in values]).reshape(3, 4)


def _read_kitti(path: Path, text: str) -> Calibration:
    p2, p3 = _kitti_matrix(text, "P_rect_02", path), _kitti_matrix(text, "P_rect_03", path)
    focal = float(p2[0, 0])
    if focal <= 0 or abs(p3[0, 0] - focal) > 1e-6 * focal:
        raise UserError(f"{path}: P_rect_02 and P_rect_03 differ in focal length; give a rectified calibration")
    return Calibration(focal=focal, baseline=float((p2[0, 3] - p3[0, 3]) / focal), cx=float(p2[0, 2]),
                       cy=float(p2[1, 2]), doffs=float(p3[0, 2] - p2[0, 2]), source=str(path))


def _read_middlebury(path: Path, text: str) -> Calibration:
    from stereodeploy.data.datasets import parse_calib

    values = parse_calib(path)
    missing = [k for k in ("cam0", "baseline") if k not in values]
    if missing:
        raise UserError(f"{path} has no {' and no '.join(missing)} (older Middlebury scenes carry only the "
                        "disparity range): pass --focal and --baseline for depth")
    cam0 = [float(v) for v in re.findall(_NUMBER, values["cam0"])]
    if len(cam0) != 9:
        raise UserError(f"{path}: cam0 needs 9 numbers ([f 0 cx; 0 f cy; 0 0 1]), found {len(cam0)}")
    try:
        baseline_mm = float(values["baseline"])
        doffs = float(values.get("doffs", 0.0))
    except ValueError as err:
        raise UserError(f"{path}: {err}; fix the calibration file") from None
    return Calibration(focal=cam0[0], baseline=baseline_mm / 1000.0, cx=cam0[2], cy=cam0[5], doffs=doffs,
                       source=str(path))


def read_calibration(path: str | os.PathLike[str]) -> Calibration:
    """The calibration in ``path``: KITTI (``P_rect_02`` / ``P_rect_03``) or Middlebury ``calib.txt``
    (``cam0``, ``baseline`` in mm, ``doffs``), told apart by their keys."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"calibration file {path} not found: check the path")
    text = path.read_text(errors="replace")
    if re.search(r"^P_rect_02:", text, flags=re.MULTILINE):
        return _read_kitti(path, text)
    return _read_middlebury(path, text)


def find_calibration(left_image: str | os.PathLike[str]) -> Path | None:
    """The calibration file a dataset keeps for ``left_image``, if there is one: ``calib.txt`` beside a
    Middlebury ``im0.png`` (only when it has ``cam0``), or KITTI's ``calib_cam_to_cam/<frame>.txt`` beside the
    ``image_2`` folder (frame ``000005`` for ``000005_10.png``)."""
    left = Path(left_image)
    middlebury = left.parent / "calib.txt"
    if middlebury.is_file() and re.search(r"^cam0\s*=", middlebury.read_text(errors="replace"), re.MULTILINE):
        return middlebury
    kitti = left.parent.parent / "calib_cam_to_cam" / f"{left.stem.split('_')[0]}.txt"
    return kitti if kitti.is_file() else None


def display_range(calib_txt: str | os.PathLike[str] | None) -> tuple[float, float] | None:
    """Middlebury ``calib.txt``'s ``vmin`` and ``vmax``: a tight bound on the scene's disparities that MiddEval3
    gives for colour-coding only (its README: an algorithm may not use it), so it sets the colour scale of
    pictures and never the search. None without a file, either key, or when ``vmin >= vmax``."""
    if calib_txt is None or not Path(calib_txt).is_file():
        return None
    from stereodeploy.data.datasets import parse_calib

    values = parse_calib(calib_txt)
    try:
        low, high = float(values["vmin"]), float(values["vmax"])
    except (KeyError, ValueError):
        return None
    return (low, high) if 0 <= low < high else None
