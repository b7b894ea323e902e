"""Stereo datasets as :class:`StereoSample` objects: KITTI 2012 / 2015, Middlebury (MiddEval3), synthetic pairs.

Layouts read (``root`` may be the folder holding ``training/`` or, for KITTI, the training folder itself)::

    kitti2015   training/image_2/000000_10.png, image_3/..., disp_noc_0/..., disp_occ_0/...
    kitti2012   training/image_0/000000_10.png, image_1/... (or colored_0, colored_1), disp_noc/..., disp_occ/...
    middlebury  <Scene>/im0.png, im1.png, disp0GT.pfm (optional), mask0nocc.png (optional), calib.txt
                (``root`` may also be a single scene folder)

Only the ``_10`` KITTI frames are stereo pairs with ground truth; ``_11`` (the next time step) is skipped.
Ground truth is optional: a frame without it is still listed and loaded with ``disp=None``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

from stereodeploy.data.io import read_disp, read_image
from stereodeploy.errors import UsageError, UserError

FORMATS = ("kitti2012", "kitti2015", "middlebury")


@dataclass(frozen=True)
class _KittiLayout:
    image_dirs: tuple[tuple[str, str], ...]  # (left, right) folder pairs, preferred first
    disp_noc: str
    disp_occ: str


_KITTI = MappingProxyType(
    {
        "kitti2015": _KittiLayout((("image_2", "image_3"),), "disp_noc_0", "disp_occ_0"),
        "kitti2012": _KittiLayout((("image_0", "image_1"), ("colored_0", "colored_1")), "disp_noc", "disp_occ"),
    }
)
_MIDDLEBURY_GT = ("disp0GT.pfm", "disp0.pfm")
_LAYOUTS_HELP = (
    "KITTI 2015 (training/image_2, image_3), KITTI 2012 (training/image_0, image_1 or colored_0, colored_1), "
    "Middlebury MiddEval3 (<scene>/im0.png, im1.png)"
)


@dataclass
class StereoSample:
    """A rectified pair and its ground truth (float32, NaN = unknown), all ``(H, W)`` aligned with ``left``.

    ``disp`` is the best ground truth available: non-occluded if present, else the full (occluded) map.
    ``max_disp`` is a hint (Middlebury's ``ndisp``, the synthetic range), ``None`` when the dataset has none.
    """

    name: str
    left: np.ndarray
    right: np.ndarray
    disp: np.ndarray | None = None
    disp_occ: np.ndarray | None = None
    disp_noc: np.ndarray | None = None
    max_disp: int | None = None


@dataclass(frozen=True)
class Frame:
    """Where one pair's files are; :func:`load_frame` reads them. Missing ground truth is ``None``."""

    name: str
    fmt: str
    left: Path
    right: Path
    disp_noc: Path | None = None
    disp_occ: Path | None = None
    mask_noc: Path | None = None  # Middlebury: 255 = non-occluded, 128 = occluded, 0 = unknown
    calib: Path | None = None


# --------------------------------------------------------------------------------------------------------------
# Layout detection and listing


def _check_root(root: str | os.PathLike[str]) -> Path:
    path = Path(root)
    if not path.exists():
        raise UserError(f"{path}: no such dataset folder (the path does not exist); check it")
    if not path.is_dir():
        raise UserError(f"{path}: is a file; give the dataset folder")
    return path


def _kitti_base(root: Path) -> Path:
    return root / "training" if (root / "training").is_dir() else root


def _kitti_dirs(base: Path, layout: _KittiLayout) -> tuple[Path, Path] | None:
    for left, right in layout.image_dirs:
        if (base / left).is_dir() and (base / right).is_dir():
            return base / left, base / right
    return None


def _is_middlebury_scene(folder: Path) -> bool:
    return (folder / "im0.png").is_file() and (folder / "im1.png").is_file()


def _middlebury_scenes(root: Path) -> list[Path]:
    if _is_middlebury_scene(root):
        return [root]
    return sorted(d for d in root.iterdir() if d.is_dir() and _is_middlebury_scene(d))


def detect_format(root: str | os.PathLike[str]) -> str:
    """Name the layout of ``root``: ``'kitti2012'``, ``'kitti2015'`` or ``'middlebury'``."""
    path = _check_root(root)
    base = _kitti_base(path)
    for fmt, layout in _KITTI.items():
        if _kitti_dirs(base, layout) is not None:
            return fmt
    if _middlebury_scenes(path):
        return "middlebury"
    raise UserError(f"{path}: no stereo dataset layout recognised; looked for {_LAYOUTS_HELP}")


def _optional(path: Path) -> Path | None:
    return path if path.is_file() else None


def _kitti_frames(root: Path, fmt: str) -> list[Frame]:
    layout = _KITTI[fmt]
    base = _kitti_base(root)
    dirs = _kitti_dirs(base, layout)
    if dirs is None:
        return []
    left_dir, right_dir = dirs
    frames = []
    for left in sorted(left_dir.glob("*_10.png")):
        right = right_dir / left.name
        if not right.is_file():
            continue
        frames.append(
            Frame(
                name=left.stem,
                fmt=fmt,
                left=left,
                right=right,
                disp_noc=_optional(base / layout.disp_noc / left.name),
                disp_occ=_optional(base / layout.disp_occ / left.name),
            )
        )
    return frames


def _middlebury_frames(root: Path) -> list[Frame]:
    frames = []
    for scene in _middlebury_scenes(root):
        gt = next((scene / n for n in _MIDDLEBURY_GT if (scene / n).is_file()), None)
        frames.append(
            Frame(
                name=scene.name,
                fmt="middlebury",
                left=scene / "im0.png",
                right=scene / "im1.png",
                disp_occ=gt,
                mask_noc=_optional(scene / "mask0nocc.png") if gt is not None else None,
                calib=_optional(scene / "calib.txt"),
            )
        )
    return frames


def list_frames(root: str | os.PathLike[str], fmt: str | None = None) -> list[Frame]:
    """List the stereo pairs under ``root`` (layout detected unless ``fmt`` names it), sorted by name."""
    path = _check_root(root)
    if fmt is None:
        fmt = detect_format(path)
    elif fmt not in FORMATS:
        raise UsageError(f"unknown dataset format {fmt!r}: use one of {', '.join(FORMATS)}")
    frames = _middlebury_frames(path) if fmt == "middlebury" else _kitti_frames(path, fmt)
    if not frames:
        raise UserError(f"{path}: no stereo pairs found for format {fmt}; expected {_LAYOUTS_HELP}")
    return frames


# --------------------------------------------------------------------------------------------------------------
# Post-processing presets from the data

def preset_for_format(fmt: str) -> str:
    """The post-processing preset for a dataset layout (``kitti2012``, ``kitti2015`` or ``middlebury``): the presets
    of :data:`stereodeploy.engine.spec.PRESETS` are tuned per benchmark and named after its layout."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown dataset format {fmt!r}: use one of {', '.join(FORMATS)}")
    return fmt


def detect_preset(path: str | os.PathLike[str]) -> str | None:
    """The preset the data at ``path`` calls for, or ``None`` when it cannot tell.

    A folder: its dataset layout (:func:`detect_format`). An image file: a KITTI left/right image inside its
    layout's image folders (``image_2`` beside ``image_3``: KITTI 2015; ``image_0``/``image_1`` or
    ``colored_0``/``colored_1``: KITTI 2012), or a Middlebury scene's ``im0.png``/``im1.png`` (both present).
    """
    path = Path(path)
    if path.is_dir():
        try:
            return preset_for_format(detect_format(path))
        except UserError:
            return None
    folder = path.parent
    for fmt, layout in _KITTI.items():
        for left, right in layout.image_dirs:
            partner = {left: right, right: left}.get(folder.name)
            if partner is not None and (folder.parent / partner).is_dir():
                return preset_for_format(fmt)
    if path.name in ("im0.png", "im1.png") and _is_middlebury_scene(folder):
        return preset_for_format("middlebury")
    return None


# --------------------------------------------------------------------------------------------------------------
# Loading


def parse_calib(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read Middlebury ``calib.txt`` ``key=value`` lines into a dict of strings (blank lines skipped)."""
    path = Path(path)
    entries: dict[str, str] = {}
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise UserError(f"{path}:{number}: expected key=value, got {line[:40]!r}; fix or remove the line")
        entries[key.strip()] = value.strip()
    return entries


def max_disp_hint(calib: Path | None) -> int | None:
    """Middlebury ``calib.txt``'s ``ndisp`` (an upper bound on the disparity), None without a file or the key."""
    if calib is None:
        return None
    ndisp = parse_calib(calib).get("ndisp")
    if ndisp is None:
        return None
    try:
        value = int(ndisp)
    except ValueError as err:
        raise UserError(f"{calib}: ndisp={ndisp!r} is not an integer; fix the calibration file") from err
    if value <= 0:
        raise UserError(f"{calib}: ndisp={value} must be positive; fix the calibration file")
    return value


def _check_shape(what: Path, arr: np.ndarray, shape: tuple[int, ...], left: Path) -> None:
    if arr.shape[:2] != shape:
        raise UserError(
            f"{what}: size {arr.shape[1]}x{arr.shape[0]} differs from the left image {left}"
            f" ({shape[1]}x{shape[0]}); pair files of the same frame"
        )


def load_frame(frame: Frame) -> StereoSample:
    """Read one frame's images, ground truth and disparity hint into a :class:`StereoSample`."""
    left = read_image(frame.left)
    right = read_image(frame.right)
    shape = left.shape[:2]
    _check_shape(frame.right, right, shape, frame.left)
    occ = noc = None
    if frame.disp_occ is not None:
        occ = read_disp(frame.disp_occ)
        _check_shape(frame.disp_occ, occ, shape, frame.left)
    if frame.disp_noc is not None:
        noc = read_disp(frame.disp_noc)
        _check_shape(frame.disp_noc, noc, shape, frame.left)
    elif frame.mask_noc is not None and occ is not None:
        mask = read_image(frame.mask_noc)
        _check_shape(frame.mask_noc, mask, shape, frame.left)
        mask = mask if mask.ndim == 2 else mask[..., 0]
        noc = np.where(mask == 255, occ, np.float32(np.nan)).astype(np.float32)
    return StereoSample(
        name=frame.name,
        left=left,
        right=right,
        disp=noc if noc is not None else occ,
        disp_occ=occ,
        disp_noc=noc,
        max_disp=max_disp_hint(frame.calib),
    )


def load_dataset(root: str | os.PathLike[str], fmt: str | None = None) -> list[StereoSample]:
    """Load every pair under ``root`` (see :func:`list_frames`)."""
    return [load_frame(frame) for frame in list_frames(root, fmt)]


# --------------------------------------------------------------------------------------------------------------
# Synthetic pairs


def _box_blur(a: np.ndarray, radius: int, passes: int = 2) -> np.ndarray:
    """Separable box blur (``passes`` times per axis, close to a Gaussian), reflecting at the borders."""
    k = 2 * radius + 1
    for axis in (0, 1):
        for _ in range(passes):
            pad = [(0, 0), (0, 0)]
            pad[axis] = (radius + 1, radius)
            c = np.cumsum(np.pad(a, pad, mode="reflect"), axis=axis)
            hi = [slice(None), slice(None)]
            lo = [slice(None), slice(None)]
            hi[axis] = slice(k, None)
            lo[axis] = slice(0, -k)
            a = (c[tuple(hi)] - c[tuple(lo)]) / k
    return a


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Random, non-periodic, high-contrast texture with integer grey levels in 0..255 (float64)."""
    fine = _box_blur(rng.standard_normal((height, width)), 1)
    coarse = _box_blur(rng.standard_normal((height, width)), 4)
    t = fine / fine.std() + 0.7 * coarse / coarse.std()
    t = (t - t.mean()) / t.std()
    return np.clip(np.rint(rng.uniform(80.0, 175.0) + 45.0 * t), 0, 255)


def synthetic_pair(
    height: int = 64,
    width: int = 96,
    max_disp: int = 16,
    layers: int = 3,
    seed: int = 0,
    noise: float = 0.0,
    slope: float | tuple[float, float] = 0.0,
) -> StereoSample:
    """A rendered pair with exact ground truth, deterministic in ``seed``.

    The scene is a textured background plane (disparity ``d0 + sx * x + sy * y``; integer and constant when
    ``slope`` is 0) and ``layers`` fronto-parallel textured rectangles in front of it at distinct integer
    disparities below ``max_disp`` (nearer = larger). Each surface carries its own texture in left-image
    coordinates; the right image shows the surface point ``u`` of a layer at ``x = u - d``, painted far to near
    so nearer rectangles occlude. With a slope the background is sampled with linear interpolation of its
    (integer-valued) texture, so ground truth is exact to subpixel precision.

    ``disp_occ`` is the left disparity everywhere; ``disp_noc`` (= ``disp``) is NaN where the left pixel is
    hidden in the right view or falls outside it (``x - d < 0``). ``noise`` is the standard deviation (grey
    levels) of independent Gaussian noise added to each image; the scene itself does not depend on it.
    Returns uint8 grayscale ``(H, W)`` images.
    """
    sx, sy = (float(slope), 0.0) if isinstance(slope, (int, float)) else (float(slope[0]), float(slope[1]))
    if height < 8 or width < 8:
        raise ValueError(f"synthetic pair needs at least 8x8 pixels, got {width}x{height}")
    if layers < 0 or noise < 0:
        raise ValueError(f"layers and noise must be >= 0, got layers={layers}, noise={noise}")
    if sx >= 0.5:
        raise ValueError(f"slope along x must be below 0.5 pixel per pixel, got {sx}")
    scene_seq, noise_seq = np.random.SeedSequence(seed).spawn(2)
    rng = np.random.default_rng(scene_seq)

    # Background plane: smallest disparity `base` >= 1, largest `base + span`; rectangles lie strictly in front.
    lo = min(0.0, sx * (width - 1)) + min(0.0, sy * (height - 1))
    span = abs(sx) * (width - 1) + abs(sy) * (height - 1)
    base = int(rng.integers(1, max(1, max_disp // 4) + 1))
    d0 = base - lo
    candidates = np.arange(int(np.floor(base + span)) + 1, max_disp)
    if len(candidates) < layers:
        raise ValueError(
            f"max_disp={max_disp} leaves {len(candidates)} integer disparities in front of the background"
            f" (up to {base + span:.2f}) for {layers} layers: raise max_disp or lower the slope"
        )
    disparities = np.sort(rng.choice(candidates, size=layers, replace=False)).astype(int)
    rects = []
    for _ in range(layers):
        h = int(rng.integers(max(2, height // 5), height // 2 + 1))
        w = int(rng.integers(max(2, width // 6), width // 3 + 1))
        y0 = int(rng.integers(0, height - h + 1))
        x0 = int(rng.integers(0, width - w + 1))
        rects.append((y0, y0 + h, x0, x0 + w))

    # Textures in left-image coordinates, wide enough for every right pixel to find its surface point.
    u_max = (width - 1 + d0 + max(0.0, sy * (height - 1))) / (1.0 - sx)
    tex_w = max(width + max_disp, int(np.ceil(u_max)) + 2)
    textures = [_texture(rng, height, tex_w) for _ in range(layers + 1)]

    ys = np.arange(height)[:, None]
    xs = np.arange(width)[None, :]
    # Left view: background, then rectangles far to near.
    left = textures[0][:, :width].copy()
    disp = d0 + sx * xs + sy * ys + np.zeros((height, width))
    owner = np.zeros((height, width), dtype=np.intp)
    # Right view: background point u shows at x' = u - d(u, y)  <=>  u = (x' + d0 + sy * y) / (1 - sx).
    u = (xs + d0 + sy * ys) / (1.0 - sx)
    u0 = np.floor(u).astype(np.intp)
    frac = u - u0
    rows = np.broadcast_to(ys, (height, width))
    right = textures[0][rows, u0] * (1.0 - frac) + textures[0][rows, u0 + 1] * frac
    right_owner = np.zeros((height, width), dtype=np.intp)
    for k, ((y0, y1, x0, x1), d) in enumerate(zip(rects, disparities), start=1):
        left[y0:y1, x0:x1] = textures[k][y0:y1, x0:x1]
        disp[y0:y1, x0:x1] = d
        owner[y0:y1, x0:x1] = k
        r0 = max(x0 - d, 0)
        if r0 < x1 - d:
            right[y0:y1, r0 : x1 - d] = textures[k][y0:y1, r0 + d : x1]
            right_owner[y0:y1, r0 : x1 - d] = k

    # A left pixel is visible in the right view when the right pixels around x - d show the same surface.
    xr = xs - disp
    inside = xr >= 0
    xf = np.clip(np.floor(xr).astype(np.intp), 0, width - 1)
    xc = np.clip(np.ceil(xr).astype(np.intp), 0, width - 1)
    visible = inside & (right_owner[rows, xf] == owner) & (right_owner[rows, xc] == owner)

    if noise > 0:
        noise_rng = np.random.default_rng(noise_seq)
        left = left + noise_rng.normal(0.0, noise, left.shape)
        right = right + noise_rng.normal(0.0, noise, right.shape)
    disp_occ = disp.astype(np.float32)
    disp_noc = np.where(visible, disp_occ, np.float32(np.nan)).astype(np.float32)
    return StereoSample(
        name=f"synthetic_{seed}",
        left=np.clip(np.rint(left), 0, 255).astype(np.uint8),
        right=np.clip(np.rint(right), 0, 255).astype(np.uint8),
        disp=disp_noc,
        disp_occ=disp_occ,
        disp_noc=disp_noc,
        max_disp=max_disp,
    )
