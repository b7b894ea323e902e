"""Rectified stereo pairs with exact dense disparity, made from single ordinary images (numpy and Pillow only).

One pair from one photo:

1. **Disparity field.** The photo is cut into segments (a SLIC-like clustering on position and colour, so that
   most disparity edges follow image edges). A slanted background plane covers the picture; about half of the
   segments leave it for a slanted plane of their own (a step in depth). Then ``layers`` foreground layers are
   pasted on top: random polygons cut from *other* images, each on a slanted plane nearer than everything it
   covers. The disparity range (smallest, largest) is drawn per pair.
2. **Right view by forward warping.** Every left pixel ``x`` of a surface moves to ``x - d(x)``; between two
   neighbouring pixels of the same surface the image and the disparity are interpolated linearly, so slanted
   planes stretch and shrink without gaps. A z-buffer keeps, at every right pixel, the nearest surface (largest
   disparity). Right pixels that no left pixel reaches (disocclusions, the right border) are filled from another
   image. A left pixel is *non-occluded* when the right pixel it maps to shows its own surface at its own depth.
3. **Camera realism** (after the warp, independently per view): gain, gamma, white balance, blur, noise, JPEG.

Ground truth: ``disp_occ`` is the left disparity everywhere (the scene is fully known), ``disp_noc`` (= ``disp``)
is NaN where the left pixel is hidden in the right view or leaves it. With integer disparities and before the
realism step, ``right[y, x - d] == left[y, x]`` exactly at every non-occluded pixel (the tests check it).

:func:`synth_pair` makes one pair, :func:`synth_samples` a training source (a list of
:class:`~stereodeploy.data.datasets.StereoSample`), :func:`write_scene` writes the MiddEval3 layout
(``im0.png``, ``im1.png``, ``disp0GT.pfm`` (``disp_occ``), ``mask0nocc.png`` (255 non-occluded, 128 occluded),
``calib.txt``) that :func:`~stereodeploy.data.datasets.load_dataset` reads back.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stereodeploy.data.datasets import StereoSample
from stereodeploy.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp")
MAX_SLOPE = 0.25  # |dd/dx| and |dd/dy| of any plane, pixels per pixel (below 0.5: a surface never folds over)


@dataclass(frozen=True)
class SynthConfig:
    """How pairs are made. Sizes in pixels; the source image is scaled so that it covers ``width`` x ``height``
    and a random window of that size is cut. ``max_disp`` bounds the largest disparity of a pair; each pair draws
    its own range: largest in ``[min_range * max_disp, max_disp]``, smallest in ``[0, largest / 3]``."""

    width: int = 384
    height: int = 288
    max_disp: int = 64
    min_range: float = 0.3
    segments: int = 40
    layers: int = 3
    integer: bool = False  # round the disparity field to whole pixels (exact warps; used by the tests)
    realism: bool = True
    compactness: float = 40.0  # segmentation: weight of position against colour (higher: rounder segments)
    smooth: int = 7  # segmentation: mode filter of this size over the labels (0: off), removes slivers

    def __post_init__(self) -> None:
        if self.width < 32 or self.height < 32:
            raise UserError(f"synthetic pairs need at least 32x32 pixels, got {self.width}x{self.height}: raise --size")
        if not 4 <= self.max_disp < self.width // 2:
            raise UserError(f"--max-disp {self.max_disp} must be in 4..{self.width // 2 - 1} for pairs "
                            f"{self.width} wide")
        if self.segments < 1 or self.layers < 0:
            raise UserError("--segments must be at least 1 and --layers at least 0")


# --------------------------------------------------------------------------------------------------------------
# Source images


def list_images(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Image files among ``paths`` (files, or folders searched recursively), sorted within each folder."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES))
        elif p.is_file():
            found.append(p)
        else:
            raise UserError(f"{p}: no such image or folder; check the path")
    if not found:
        raise UserError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) under {', '.join(map(str, paths))}: give "
                        "photos or folders of photos")
    return found


def load_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """An image file as ``uint8`` RGB ``(H, W, 3)`` (grey images repeated, 16-bit scaled down)."""
    from stereodeploy.data.io import read_image

    img = read_image(path)
    if img.dtype == np.uint16:
        img = (img / 257.0).round().astype(np.uint8)
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img


def _fit(img: np.ndarray, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Scale ``img`` (RGB uint8) to cover ``width`` x ``height`` (times a random zoom up to 1.5) and cut a random
    window of that size; float64 0..255."""
    from PIL import Image

    h, w = img.shape[:2]
    scale = max(width / w, height / h) * rng.uniform(1.0, 1.5)
    size = (max(width, round(w * scale)), max(height, round(h * scale)))
    im = np.asarray(Image.fromarray(img).resize(size, Image.BILINEAR), dtype=np.float64)
    y0 = int(rng.integers(0, size[1] - height + 1))
    x0 = int(rng.integers(0, size[0] - width + 1))
    out = im[y0 : y0 + height, x0 : x0 + width]
    return out[:, ::-1] if rng.random() < 0.5 else out  # a mirrored photo is as plausible a scene


# --------------------------------------------------------------------------------------------------------------
# Disparity field


def segment(img: np.ndarray, n: int, rng: np.random.Generator, iterations: int = 4,
            compactness: float = 40.0, smooth: int = 7) -> np.ndarray:
    """SLIC-like segmentation: ``(H, W)`` int labels 0..k-1 from k-means on (x, y, colour) started on a jittered
    grid of about ``n`` centres. Colour distances are in grey levels, positions scaled so that one grid step
    weighs ``compactness`` grey levels. A ``smooth`` x ``smooth`` mode filter then removes slivers (a low
    compactness alone leaves many: pixels join far centres of similar colour). Every label that remains is used."""
    h, w = img.shape[:2]
    step = np.sqrt(h * w / n)
    gy = np.arange(step / 2, h, step)
    gx = np.arange(step / 2, w, step)
    cy, cx = (a.ravel() for a in np.meshgrid(gy, gx, indexing="ij"))
    cy = np.clip(cy + rng.uniform(-step / 3, step / 3, cy.shape), 0, h - 1)
    cx = np.clip(cx + rng.uniform(-step / 3, step / 3, cx.shape), 0, w - 1)
    sub = max(1, int(step // 6))  # cluster a subsampled image, then label every pixel once
    small = img[::sub, ::sub]
    ys, xs = np.mgrid[0:h:sub, 0:w:sub]
    feats = np.concatenate([np.stack([ys, xs], -1) * (compactness / step), small], axis=-1).reshape(-1, 5)
    centres = np.concatenate([np.stack([cy, cx], -1) * (compactness / step),
                              img[cy.astype(int), cx.astype(int)]], axis=-1)
    for _ in range(iterations):
        labels = _nearest(feats, centres)
        for k in range(len(centres)):
            members = feats[labels == k]
            if len(members):
                centres[k] = members.mean(axis=0)
    yy, xx = np.mgrid[0:h, 0:w]
    full = np.concatenate([np.stack([yy, xx], -1) * (compactness / step), img], axis=-1).reshape(-1, 5)
    labels = _nearest(full, centres).reshape(h, w)
    if smooth > 1 and labels.max() < 256:
        from PIL import Image, ImageFilter

        im = Image.fromarray(labels.astype(np.uint8)).filter(ImageFilter.ModeFilter(smooth))
        labels = np.asarray(im).astype(np.intp)
    _, dense = np.unique(labels, return_inverse=True)
    return dense.reshape(h, w)


def _nearest(points: np.ndarray, centres: np.ndarray, chunk: int = 20000) -> np.ndarray:
    out = np.empty(len(points), np.intp)
    c2 = (centres**2).sum(axis=1)
    for i in range(0, len(points), chunk):
        p = points[i : i + chunk]
        out[i : i + chunk] = np.argmin(c2[None, :] - 2.0 * p @ centres.T, axis=1)
    return out


def _plane(rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray, centre: tuple[float, float],
           level: float, slope: float) -> np.ndarray:
    """A random slanted plane through ``level`` at ``centre``, slopes within +-``slope`` (at most MAX_SLOPE)."""
    sy, sx = rng.uniform(-1.0, 1.0, 2) * min(slope, MAX_SLOPE) * rng.uniform(0.0, 1.0)
    return level + sx * (xs - centre[1]) + sy * (ys - centre[0])


def _polygon_mask(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random star-shaped polygon (6..12 corners) covering roughly 3 to 20 % of the picture."""
    from PIL import Image, ImageDraw

    cy, cx = rng.uniform(0.15, 0.85) * height, rng.uniform(0.15, 0.85) * width
    radius = np.sqrt(height * width * rng.uniform(0.03, 0.2) / np.pi)
    n = int(rng.integers(6, 13))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = radius * rng.uniform(0.5, 1.3, n)
    points = [(float(cx + r * np.cos(a)), float(cy + r * np.sin(a))) for a, r in zip(angles, radii)]
    im = Image.new("L", (width, height), 0)
    ImageDraw.Draw(im).polygon(points, fill=1)
    return np.asarray(im, dtype=bool)


@dataclass
class Scene:
    """A left view with its exact disparity and the surface each pixel belongs to (same id = one plane)."""

    left: np.ndarray  # (H, W, 3) float64 0..255
    disp: np.ndarray  # (H, W) float64
    surface: np.ndarray  # (H, W) int


def random_scene(image: np.ndarray, others: Sequence[np.ndarray], cfg: SynthConfig,
                 rng: np.random.Generator) -> Scene:
    """The left view (``image`` with foreground layers cut from ``others``) and a random piecewise planar
    disparity field over it; see the module docstring."""
    h, w = cfg.height, cfg.width
    left = _fit(image, w, h, rng)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    d_max = rng.uniform(cfg.min_range, 1.0) * cfg.max_disp
    d_min = rng.uniform(0.0, d_max / 3)
    # The background and the segment planes live in the lower part of the range, the layers above them.
    top = d_min + 0.6 * (d_max - d_min)
    slope = 0.5 * (d_max - d_min) / max(h, w)  # no plane spans more than half the range across the picture
    disp = _plane(rng, ys, xs, (h / 2, w / 2), rng.uniform(d_min, top), slope)
    surface = np.zeros((h, w), np.int64)
    labels = segment(left, cfg.segments, rng, compactness=cfg.compactness, smooth=cfg.smooth)
    for k in range(labels.max() + 1):
        if rng.random() < 0.5:
            continue
        m = labels == k
        c = (ys[m].mean(), xs[m].mean())
        disp[m] = _plane(rng, ys, xs, c, rng.uniform(d_min, top), slope)[m]
        surface[m] = k + 1
    disp = np.clip(disp, d_min, top)
    next_id = labels.max() + 2
    for _ in range(cfg.layers):
        if not others:
            break
        mask = _polygon_mask(rng, h, w)
        if not mask.any():
            continue
        patch = _fit(others[int(rng.integers(len(others)))], w, h, rng)
        c = (ys[mask].mean(), xs[mask].mean())
        plane = _plane(rng, ys, xs, c, 0.0, slope)
        under = disp[mask].max()
        level = rng.uniform(under + 1.0, max(under + 1.0, d_max))  # nearer than all it covers
        plane = plane - plane[mask].min() + level
        left[mask] = patch[mask]
        disp[mask] = plane[mask]
        surface[mask] = next_id
        next_id += 1
    disp = np.clip(disp, 0.0, cfg.max_disp - 1)
    if cfg.integer:
        disp = np.rint(disp)
    return Scene(left=left, disp=disp, surface=surface)


# --------------------------------------------------------------------------------------------------------------
# Forward warp


@dataclass
class Warp:
    """The right view a forward warp made: image (NaN where nothing arrived), the disparity and surface of what
    shows at each right pixel (-1 where nothing arrived), and the left pixels that are visible in it."""

    right: np.ndarray  # (H, W, 3) float64, NaN = hole
    right_disp: np.ndarray  # (H, W) float64, NaN = hole
    right_surface: np.ndarray  # (H, W) int, -1 = hole
    visible: np.ndarray  # (H, W) bool, of the left image


def forward_warp(left: np.ndarray, disp: np.ndarray, surface: np.ndarray) -> Warp:
    """Render the right view of a left view with disparity ``disp`` (nearer = larger disparity wins).

    Each left pixel ``x`` and its right neighbour ``x + 1`` on the same surface span ``[x - d(x), x + 1 - d(x + 1))``
    in the right view; every whole right pixel in that span takes the linear interpolation of the two (image and
    disparity). The last pixel of a surface on a row spans one pixel at its own disparity. Candidates that land on
    the same right pixel are resolved by a z-buffer: the largest disparity wins (ties: the leftmost source).
    """
    h, w = disp.shape
    nxt_same = np.zeros((h, w), bool)
    nxt_same[:, :-1] = surface[:, :-1] == surface[:, 1:]
    d1 = np.where(nxt_same, np.roll(disp, -1, axis=1), disp)
    i0 = left
    i1 = np.where(nxt_same[..., None], np.roll(left, -1, axis=1), left)
    xs = np.arange(w, dtype=np.float64)[None, :]
    a = xs - disp  # where x lands
    b = xs + 1.0 - d1  # where x + 1 lands (or the end of the surface)
    rows = np.broadcast_to(np.arange(h)[:, None], (h, w))
    cand = []
    for k in (0, 1, 2):  # a span is shorter than 1 + 2 * MAX_SLOPE < 2 pixels: at most 2 whole pixels, from ceil(a)
        xr = np.ceil(a - 1e-9) + k
        ok = (xr < b - 1e-9) & (xr >= 0) & (xr < w)
        t = np.clip((xr - a) / np.maximum(b - a, 1e-9), 0.0, 1.0)
        cand.append((ok, xr, t))
    flat, dd, val, surf, src = [], [], [], [], []
    for ok, xr, t in cand:
        y, x = rows[ok], np.nonzero(ok)[1]
        tt = t[ok]
        flat.append(y * w + xr[ok].astype(np.int64))
        dd.append((1 - tt) * disp[ok] + tt * d1[ok])
        val.append((1 - tt)[:, None] * i0[ok] + tt[:, None] * i1[ok])
        surf.append(surface[ok])
        src.append(y * w + x)
    flat, dd, val = np.concatenate(flat), np.concatenate(dd), np.concatenate(val)
    surf, src = np.concatenate(surf), np.concatenate(src)
    # z-buffer: sort by (target, disparity, -source); the last of each target wins.
    order = np.lexsort((-src, dd, flat))
    flat, dd, val, surf = flat[order], dd[order], val[order], surf[order]
    last = np.ones(len(flat), bool)
    last[:-1] = flat[1:] != flat[:-1]
    right = np.full((h * w, left.shape[2]), np.nan)
    right_disp = np.full(h * w, np.nan)
    right_surface = np.full(h * w, -1, np.int64)
    right[flat[last]] = val[last]
    right_disp[flat[last]] = dd[last]
    right_surface[flat[last]] = surf[last]
    right, right_disp, right_surface = right.reshape(h, w, -1), right_disp.reshape(h, w), right_surface.reshape(h, w)
    # A left pixel is visible when the right pixels around x - d show its surface at its depth.
    xr = xs - disp
    inside = (xr >= 0) & (xr <= w - 1)
    visible = inside.copy()
    for xi in (np.floor(xr), np.ceil(xr)):
        xi = np.clip(xi, 0, w - 1).astype(np.int64)
        rs, rd = right_surface[rows, xi], right_disp[rows, xi]
        visible &= (rs == surface) & (np.abs(np.nan_to_num(rd, nan=-1e9) - disp) < 1.0)
    return Warp(right=right, right_disp=right_disp, right_surface=right_surface, visible=visible)


# --------------------------------------------------------------------------------------------------------------
# Camera realism


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    from PIL import Image, ImageFilter

    if sigma <= 0.05:
        return img
    u8 = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(u8).filter(ImageFilter.GaussianBlur(sigma)), dtype=np.float64)


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float64)


def camera(img: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """One camera's rendering of ``img`` (float RGB 0..255): gain, gamma and white balance, then blur, noise and
    JPEG; ``strength`` scales how far each departs from neutral. Returns uint8."""
    s = strength
    x = np.clip(img / 255.0, 0.0, 1.0)
    x = x ** np.exp(rng.uniform(-0.2, 0.2) * s)  # gamma ~ 0.82 .. 1.22
    x = x * np.exp(rng.uniform(-0.2, 0.2) * s) * np.exp(rng.uniform(-0.06, 0.06, 3) * s)  # gain, white balance
    x = _blur(np.clip(x, 0, 1) * 255.0, rng.uniform(0.0, 0.8) * s)
    x = x + rng.normal(0.0, rng.uniform(0.0, 3.0) * s, x.shape)
    if rng.random() < 0.5 * s:
        x = _jpeg(x, int(rng.integers(60, 96)))
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------------------------
# Pairs


def synth_pair(image: np.ndarray, others: Sequence[np.ndarray] = (), cfg: SynthConfig = SynthConfig(),
               seed: int = 0, name: str | None = None) -> StereoSample:
    """One pair from ``image`` (RGB or grey ``uint8``), deterministic in ``seed``; ``others`` give the foreground
    layers and the fill of disocclusions (``image`` itself when empty). Images ``uint8`` RGB ``(H, W, 3)``."""
    image = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image
    others = [np.repeat(o[..., None], 3, axis=2) if o.ndim == 2 else o for o in others]
    scene_seq, fill_seq, left_seq, right_seq = np.random.SeedSequence(seed).spawn(4)
    rng = np.random.default_rng(scene_seq)
    scene = random_scene(image, others, cfg, rng)
    warp = forward_warp(scene.left, scene.disp, scene.surface)
    fill_rng = np.random.default_rng(fill_seq)
    fill = _fit((others or [image])[int(fill_rng.integers(len(others or [image])))], cfg.width, cfg.height, fill_rng)
    hole = np.isnan(warp.right[..., 0])
    right = np.where(hole[..., None], fill, warp.right)
    if cfg.realism:
        strength = 1.0
        left_u8 = camera(scene.left, np.random.default_rng(left_seq), strength)
        right_u8 = camera(right, np.random.default_rng(right_seq), strength)
    else:
        left_u8 = np.clip(np.rint(scene.left), 0, 255).astype(np.uint8)
        right_u8 = np.clip(np.rint(right), 0, 255).astype(np.uint8)
    disp_occ = scene.disp.astype(np.float32)
    disp_noc = np.where(warp.visible, disp_occ, np.float32(np.nan)).astype(np.float32)
    return StereoSample(name=name or f"synth_{seed}", left=left_u8, right=right_u8, disp=disp_noc,
                        disp_occ=disp_occ, disp_noc=disp_noc, max_disp=int(np.ceil(np.nanmax(disp_occ))) + 1)


def synth_samples(images: Sequence[np.ndarray] | Sequence[str | os.PathLike[str]], count: int,
                  cfg: SynthConfig = SynthConfig(), seed: int = 0, prefix: str = "synth") -> list[StereoSample]:
    """``count`` pairs (a training source), the ``i``-th from image ``i mod len(images)`` with seed
    ``(seed, i)``; the other images give its foreground layers and fills. Paths are read once."""
    arrays = [load_rgb(p) if isinstance(p, (str, os.PathLike)) else p for p in images]
    if not arrays:
        raise UserError("no source images for synthetic pairs: give at least one photo")
    out = []
    for i in range(count):
        k = i % len(arrays)
        others = [a for j, a in enumerate(arrays) if j != k] or [arrays[k]]
        pair_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        out.append(synth_pair(arrays[k], others, cfg, seed=pair_seed, name=f"{prefix}_{i:04d}"))
    return out


def write_scene(sample: StereoSample, folder: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Write ``sample`` in the MiddEval3 layout: ``im0.png``, ``im1.png``, ``disp0GT.pfm`` (the full left
    disparity), ``mask0nocc.png`` (255 non-occluded, 128 occluded) and ``calib.txt`` (``ndisp`` = the pair's range)."""
    from stereodeploy.data.io import write_pfm, write_png, write_text

    folder = Path(folder)
    occ = sample.disp_occ if sample.disp_occ is not None else sample.disp
    noc = sample.disp_noc if sample.disp_noc is not None else sample.disp
    h, w = occ.shape
    write_png(folder / "im0.png", sample.left, overwrite=overwrite)
    write_png(folder / "im1.png", sample.right, overwrite=overwrite)
    write_pfm(folder / "disp0GT.pfm", occ, overwrite=overwrite)
    mask = np.where(np.isfinite(noc), 255, np.where(np.isfinite(occ), 128, 0)).astype(np.uint8)
    write_png(folder / "mask0nocc.png", mask, overwrite=overwrite)
    ndisp = sample.max_disp or int(np.ceil(np.nanmax(occ))) + 1
    vmax = float(np.nanmax(occ))
    vmin = float(np.nanmin(occ))
    calib = (f"cam0=[1000 0 {w / 2} 0 1000 {h / 2} 0 0 1]\ncam1=[1000 0 {w / 2} 0 1000 {h / 2} 0 0 1]\n"
             f"doffs=0\nbaseline=100\nwidth={w}\nheight={h}\nndisp={ndisp}\nisint=0\n"
             f"vmin={vmin:.2f}\nvmax={vmax:.2f}\ndyavg=0\ndymax=0\n")
    write_text(folder / "calib.txt", calib, overwrite=overwrite)
    return folder


def make_dataset(images: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], count: int,
                 cfg: SynthConfig = SynthConfig(), seed: int = 0, overwrite: bool = False) -> list[Path]:
    """`stereodeploy synth`: ``count`` pairs from the images at ``images`` into ``out/<name>/`` (MiddEval3)."""
    from stereodeploy.data.io import ensure_writable

    if count < 1:
        raise UserError("--count must be at least 1")
    out = Path(out)
    paths = list_images(images)
    names = [f"synth_{i:04d}" for i in range(count)]
    for n in names:
        ensure_writable(out / n / "im0.png", overwrite)
    samples = synth_samples(paths, count, cfg, seed=seed)
    return [write_scene(s, out / s.name, overwrite=overwrite) for s in samples]
