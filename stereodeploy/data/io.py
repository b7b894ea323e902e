"""Reading and writing images, disparity maps and pictures (numpy + Pillow only).

Conventions (see ``docs/architecture.md``):

- images come back as stored: ``(H, W)`` or ``(H, W, 3)``, ``uint8`` or (grayscale only) ``uint16``;
  :func:`stereodeploy.data.preprocess.to_gray` turns any of them into float32 ``(H, W)`` in 0..255;
- disparity maps are float32 ``(H, W)`` with **NaN = unknown**; readers map the file format's own code for
  "unknown" (PFM ``inf``, KITTI ``0``) to NaN and writers map NaN back;
- every file is written through :func:`atomic_write`, which refuses to replace an existing file unless asked to.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from stereodeploy.errors import UsageError, UserError

# ITU-R BT.601 luma weights for R, G, B.

# Anchor colours (position in 0..1, R, G, B) of a turbo-like map: dark violet -> blue -> cyan -> green -> yellow
# -> orange -> dark red. Its darkest colour is not black, so black stays free for "unknown".
_DISPARITY_ANCHORS = (  # no colour near black (the colour of "no answer"): luminance >= 70 at both ends
    (0.00, 120, 60, 175),
    (0.13, 67, 97, 226),
    (0.25, 40, 160, 250),
    (0.38, 27, 215, 200),
    (0.50, 80, 250, 110),
    (0.63, 170, 250, 50),
    (0.75, 245, 195, 45),
    (0.88, 240, 100, 20),
    (1.00, 190, 25, 20),
)

# Error colours: below the threshold, blue (exact) -> cyan -> green -> pale yellow; at or above it orange, and
# from twice the threshold red. A missing prediction where ground truth exists is drawn as the worst error.
_GOOD_ANCHORS = (
    (0.00, 35, 60, 170),
    (0.35, 60, 160, 210),
    (0.70, 90, 195, 100),
    (1.00, 215, 225, 120),
)
ERROR_ORANGE = (245, 120, 30)
ERROR_RED = (220, 20, 20)

_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, zlib.error)

# "Pf" or "PF", width, height, scale (negative = little-endian), then one whitespace byte before the data.
_PFM_HEADER = re.compile(rb"\A(Pf|PF)\s+(\d+)\s+(\d+)\s+(\S+)\s")


# --------------------------------------------------------------------------------------------------------------
# Atomic writes


def ensure_writable(path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Check, before any long work, that ``path`` can be written; return it as a :class:`Path`.

    Raises :class:`UsageError` if ``path`` exists and ``overwrite`` is false (or is a folder), and
    :class:`UserError` if its folder cannot be created or written. Creates nothing.
    """
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path} is a folder: give a file name to write")
    if path.exists() and not overwrite:
        raise UsageError(f"{path} exists: pass --overwrite to replace it")
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"cannot create folder {path.parent}: {ancestor} is a file; choose another output path")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"folder {ancestor} is not writable: choose another output path")
    return path


@contextmanager
def atomic_write(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it onto ``path``, on error delete it.

    The temporary file is ``.<stem>.tmp-<random><suffix>`` in the same folder, so writers that look at the
    extension (Pillow, ONNX, ...) work, and the final rename is atomic: an interrupted run never leaves a
    half-written file under the real name. Missing parent folders are created.

    Example::

        with atomic_write("out/disp.png") as tmp:
            Image.fromarray(img).save(tmp)
    """
    path = ensure_writable(path, overwrite)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create folder {path.parent}: {err.strerror}; choose another output path") from err
    tmp = _create_temp(path)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _create_temp(path: Path) -> Path:
    """Create an empty, uniquely named file next to ``path`` (mode 0666 minus the umask, like a normal file)."""
    for _ in range(100):
        tmp = path.with_name(f".{path.stem}.tmp-{secrets.token_hex(4)}{path.suffix}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as err:
            raise UserError(
                f"cannot write in folder {path.parent}: {err.strerror}; choose another output path"
            ) from err
        os.close(fd)
        return tmp
    raise UserError(f"cannot create a temporary file in folder {path.parent}; remove stale .*.tmp-* files there")


# --------------------------------------------------------------------------------------------------------------
# Images


def _check_file(path: Path, what: str) -> None:
    if not path.exists():
        raise UserError(f"{path}: {what} not found; check the path")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not {what}; give the file's path")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file; re-export or re-download it")


def _open_image(path: Path) -> Image.Image:
    """Open and fully decode ``path`` with Pillow, turning every failure into a one-line :class:`UserError`."""
    _check_file(path, "image")
    try:
        im = Image.open(path)
    except UnidentifiedImageError as err:
        raise UserError(f"{path}: not an image file Pillow can read; pass a PNG, PPM or JPEG image") from err
    except _DECODE_ERRORS as err:
        raise UserError(f"{path}: unreadable image ({err}); re-export or re-download it") from err
    try:
        im.load()
    except _DECODE_ERRORS as err:
        im.close()
        raise UserError(f"{path}: truncated or corrupt image ({err}); re-export or re-download it") from err
    return im


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image as stored: ``(H, W)`` or ``(H, W, 3)``, ``uint8``, or ``uint16`` for 16-bit grayscale.

    Palette and CMYK/YCbCr images become RGB, 1-bit images ``uint8`` 0/255. An alpha channel is dropped when
    it is fully opaque; a transparent image is refused (its hidden pixels have no defined intensity).
    """
    path = Path(path)
    im = _open_image(path)
    with im:
        mode = im.mode
        if mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("L" if mode == "1" else "RGB")
        elif mode in ("PA", "La"):
            im = im.convert("RGBA" if mode == "PA" else "LA")
        arr = np.asarray(im)
        mode = im.mode
    if mode in ("RGBA", "LA"):
        alpha = arr[..., -1]
        if not np.all(alpha == np.iinfo(arr.dtype).max):
            raise UserError(f"{path}: image has transparent pixels; save it without an alpha channel")
        arr = arr[..., :3] if mode == "RGBA" else arr[..., 0]
    elif mode.startswith("I"):  # 16/32-bit grayscale: keep 16 bits as uint16
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise UserError(f"{path}: integer image with values outside 0..65535; save it as 8- or 16-bit")
        arr = arr.astype(np.uint16)
    elif mode not in ("L", "RGB"):
        raise UserError(f"{path}: unsupported image mode {mode}; save it as 8-bit grayscale or RGB")
    return np.ascontiguousarray(arr)




def write_png(path: str | os.PathLike[str], arr: np.ndarray, overwrite: bool = False,
              text: dict[str, str] | None = None) -> Path:
    """Write ``uint8`` ``(H, W)``/``(H, W, 3)`` or ``uint16`` ``(H, W)`` as PNG, atomically.

    ``text``: key/value pairs stored as PNG text chunks (how the map was made: model, preset...); read them back
    with :func:`read_png_text`.
    """
    arr = np.asarray(arr)
    ok = (arr.dtype == np.uint8 and (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4)))) or (
        arr.dtype == np.uint16 and arr.ndim == 2
    )
    if not ok:
        raise ValueError(f"write_png takes uint8 (H, W[, 3]) or uint16 (H, W), got {arr.dtype} {arr.shape}")
    im = Image.fromarray(np.ascontiguousarray(arr))
    info = None
    if text:
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        for key, value in text.items():
            info.add_itxt(str(key), str(value))
    with atomic_write(path, overwrite) as tmp:
        # zlib level 1: a KITTI-sized map encodes about 4x faster than at the default 6 (27 vs 107 ms for the
        # uint16 disparity, 41 vs 117 ms for its colour picture) for files 10-20 % larger
        im.save(tmp, format="PNG", pnginfo=info, compress_level=1)
    return Path(path)


def read_png_text(path: str | os.PathLike[str]) -> dict[str, str]:
    """The text chunks of a PNG file (see :func:`write_png`'s ``text``)."""
    im = _open_image(Path(path))
    with im:
        return {str(k): str(v) for k, v in getattr(im, "text", {}).items()}


# --------------------------------------------------------------------------------------------------------------
# Disparity files


def read_pfm(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a PFM disparity map as float32 ``(H, W)``, top row first, ``inf`` (unknown) -> NaN.

    Both byte orders (negative scale = little-endian) are read; a colour ``PF`` file gives its first channel.
    """
    path = Path(path)
    _check_file(path, "PFM file")
    data = path.read_bytes()
    match = _PFM_HEADER.match(data[:256])
    if match is None:
        raise UserError(
            f"{path}: not a PFM file (starts with {data[:8]!r}); expected 'Pf' or 'PF', width, height, scale"
        )
    magic = match.group(1)
    width, height = int(match.group(2)), int(match.group(3))
    try:
        scale = float(match.group(4))
    except ValueError as err:
        raise UserError(f"{path}: PFM header has a bad scale {match.group(4)!r}; the file is corrupt") from err
    if width <= 0 or height <= 0 or scale == 0:
        raise UserError(f"{path}: PFM header has size {width}x{height} and scale {scale}; the file is corrupt")
    pos = match.end()  # exactly one whitespace byte ends the header
    channels = 3 if magic == b"PF" else 1
    count = width * height * channels
    if len(data) - pos < 4 * count:
        raise UserError(
            f"{path}: truncated PFM ({len(data) - pos} data bytes, {4 * count} expected for {width}x{height});"
            " re-export or re-download it"
        )
    dtype = np.dtype("<f4" if scale < 0 else ">f4")
    values = np.frombuffer(data, dtype=dtype, count=count, offset=pos).reshape(height, width, channels)
    disp = values[::-1, :, 0].astype(np.float32)  # rows are stored bottom-up
    disp[~np.isfinite(disp)] = np.nan
    return disp


def write_pfm(path: str | os.PathLike[str], disp: np.ndarray, overwrite: bool = False) -> Path:
    """Write float ``(H, W)`` as little-endian ``Pf`` PFM (rows bottom-up), atomically.

    Middlebury's convention: scale ``-1`` (little-endian, no scaling) and ``inf`` for unknown; every non-finite
    value (NaN = invalid in memory, ``-inf``) is written as ``inf``, so :func:`read_pfm` gives NaN back.
    """
    disp = np.asarray(disp)
    if disp.ndim != 2:
        raise ValueError(f"write_pfm takes an (H, W) map, got shape {disp.shape}")
    out = disp.astype("<f4")
    out[~np.isfinite(out)] = np.inf
    height, width = out.shape
    with atomic_write(path, overwrite) as tmp, open(tmp, "wb") as f:
        f.write(b"Pf\n%d %d\n-1.0\n" % (width, height))
        f.write(np.ascontiguousarray(out[::-1]).tobytes())
    return Path(path)


def read_kitti_disp(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a KITTI 16-bit disparity PNG as float32 ``(H, W)``: value / 256, 0 (unknown) -> NaN."""
    path = Path(path)
    raw = read_image(path)
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise UserError(
            f"{path}: not a KITTI disparity map (got {raw.dtype} {'x'.join(map(str, raw.shape))},"
            " expected a 16-bit grayscale PNG); pass the disp_noc/disp_occ file"
        )
    disp = raw.astype(np.float32) / np.float32(256.0)
    disp[raw == 0] = np.nan
    return disp


def kitti_encode(disp: np.ndarray) -> np.ndarray:
    """KITTI encoding of float disparity: ``round(d * 256)`` as uint16; NaN or ``<= 0`` -> 0 (unknown).

    Positive values are kept at least 1 (so they stay "known") and at most 65535 (255.996 pixels).
    """
    disp = np.asarray(disp, dtype=np.float64)
    valid = np.isfinite(disp) & (disp > 0)
    scaled = np.rint(np.where(valid, disp, 0.0) * 256.0)
    return np.where(valid, np.clip(scaled, 1, 65535), 0).astype(np.uint16)


def write_kitti_disp(path: str | os.PathLike[str], disp: np.ndarray, overwrite: bool = False,
                     text: dict[str, str] | None = None) -> Path:
    """Write float ``(H, W)`` disparity as a KITTI 16-bit PNG (see :func:`kitti_encode`), atomically; ``text``
    as in :func:`write_png`."""
    disp = np.asarray(disp)
    if disp.ndim != 2:
        raise ValueError(f"write_kitti_disp takes an (H, W) map, got shape {disp.shape}")
    return write_png(path, kitti_encode(disp), overwrite, text=text)


def read_disp(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a disparity map by extension: ``.pfm`` (PFM) or ``.png`` (KITTI 16-bit)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".pfm":
        return read_pfm(path)
    if suffix == ".png":
        return read_kitti_disp(path)
    raise UserError(f"{path}: unknown disparity format {suffix or '(no extension)'}; use .pfm or .png (KITTI)")


# --------------------------------------------------------------------------------------------------------------
# Pictures


def _lut(anchors: tuple[tuple[float, int, int, int], ...], n: int = 256) -> np.ndarray:
    """Linear interpolation of ``(position, R, G, B)`` anchors into an ``(n, 3)`` uint8 table."""
    pos = np.array([a[0] for a in anchors])
    rgb = np.array([a[1:] for a in anchors], dtype=np.float64)
    t = np.linspace(0.0, 1.0, n)
    table = np.stack([np.interp(t, pos, rgb[:, c]) for c in range(3)], axis=1)
    return np.rint(table).astype(np.uint8)


def colorize(disp: np.ndarray, max_disp: float | None = None, min_disp: float = 0.0) -> np.ndarray:
    """Colour a disparity map: ``min_disp`` (default 0) -> violet ... ``max_disp`` -> red (turbo-like), NaN -> black.

    Every colour of the ramp is well away from black (luminance at least 70 of 255), so a disparity near the low
    end never reads as "no answer".

    ``max_disp`` defaults to the largest finite value; values outside ``[min_disp, max_disp]`` are clipped.
    Returns uint8 ``(H, W, 3)``.
    """
    disp = np.asarray(disp, dtype=np.float32)
    finite = np.isfinite(disp)
    out = np.zeros(disp.shape + (3,), dtype=np.uint8)
    if not finite.any():
        return out
    top = float(np.max(disp[finite])) if max_disp is None else float(max_disp)
    if top <= 0:
        top = 1.0
    lut = _lut(_DISPARITY_ANCHORS)
    span = top - min_disp if top > min_disp else 1.0
    idx = np.rint(np.clip((disp[finite] - min_disp) / span, 0.0, 1.0) * (len(lut) - 1)).astype(np.intp)
    out[finite] = lut[idx]
    return out


def error_map(disp: np.ndarray, gt: np.ndarray, threshold: float = 3.0) -> np.ndarray:
    """Colour ``|disp - gt|`` where ground truth is known; uint8 ``(H, W, 3)``.

    Below ``threshold`` the colour goes blue (exact) -> cyan -> green -> pale yellow; from ``threshold`` it is
    orange and from ``2 * threshold`` red (clearly bad). A NaN prediction where ``gt`` is known is red; pixels
    without ground truth are black.
    """
    disp = np.asarray(disp, dtype=np.float32)
    gt = np.asarray(gt, dtype=np.float32)
    if disp.shape != gt.shape:
        raise UserError(
            f"disparity is {'x'.join(map(str, disp.shape))} but ground truth is {'x'.join(map(str, gt.shape))}:"
            " compare maps of the same frame"
        )
    if threshold <= 0:
        raise UsageError(f"error threshold must be positive, got {threshold}")
    known = np.isfinite(gt)
    err = np.abs(disp - gt)
    err[known & ~np.isfinite(err)] = np.inf  # missing prediction counts as the worst error
    out = np.zeros(gt.shape + (3,), dtype=np.uint8)
    lut = _lut(_GOOD_ANCHORS)
    good = known & (err < threshold)
    idx = np.rint(err[good] / threshold * (len(lut) - 1)).astype(np.intp)
    out[good] = lut[np.minimum(idx, len(lut) - 1)]
    out[known & (err >= threshold) & (err < 2 * threshold)] = ERROR_ORANGE
    out[known & (err >= 2 * threshold)] = ERROR_RED
    return out


# --------------------------------------------------------------------------------------------------------------
# Legends drawn under the pictures (Pillow's built-in bitmap font: no font file, the same pixels everywhere)

LEGEND_BACKGROUND = (255, 255, 255)
LEGEND_INK = (0, 0, 0)
_PAD = 4  # pixels around the strip's content
_BAR_HEIGHT = 10
_TICK = 3
_SWATCH = 12


def _font():
    from PIL import ImageFont

    loader = getattr(ImageFont, "load_default_imagefont", None)  # Pillow >= 10.1; before, load_default() is it
    return loader() if loader is not None else ImageFont.load_default()


def _text_size(font, text: str) -> tuple[int, int]:
    left, _, right, bottom = font.getbbox(text)
    return right - left, bottom


def _fitting(font, variants: tuple[str, ...], width: int) -> str:
    """The first (longest) of ``variants`` that fits in ``width`` pixels, else the last one."""
    for text in variants:
        if _text_size(font, text)[0] <= width:
            return text
    return variants[-1]


def nice_ticks(top: float, max_ticks: int) -> list[float]:
    """Tick values ``0, s, 2s, ... <= top`` with ``s`` 1, 2 or 5 times a power of ten, at most ``max_ticks``."""
    if top <= 0 or max_ticks < 2:
        return [0.0]
    step = 10.0 ** np.floor(np.log10(top / (max_ticks - 1)))
    for factor in (1, 2, 5, 10):
        if int(np.floor(top / (factor * step) + 1e-9)) + 1 <= max_ticks:
            step *= factor
            break
    count = int(np.floor(top / step + 1e-9)) + 1
    return [round(i * step, 10) for i in range(count)]


def _tick_label(value: float) -> str:
    return f"{value:g}"


def colorbar(width: int, max_disp: float, label: str = "disparity (px)", min_disp: float = 0.0) -> np.ndarray:
    """A legend strip for pictures from :func:`colorize` with the same ``max_disp``: uint8 ``(h, width, 3)``.

    On a white strip: a title naming the range (``disparity (px): 0 to 228, black = unknown``, shortened on narrow
    pictures), the colour bar whose column ``i`` has exactly the colour :func:`colorize` gives disparity
    ``i / (n - 1) * max_disp`` (``n`` columns of bar), and ticks at round values. The range is fixed by the caller,
    not by the data: ``stereodeploy infer`` uses the disparity range it searched, so every picture of a run shares
    one scale. Text uses Pillow's built-in bitmap font. ``min_disp`` starts the range elsewhere than 0 (ticks
    stay at round values).
    """
    from PIL import Image, ImageDraw

    if width < 1:
        raise ValueError(f"colorbar needs a width of at least 1 pixel, got {width}")
    top = float(max_disp) if max_disp and max_disp > 0 else 1.0
    font = _font()
    line = _text_size(font, "0")[1]
    bar_y = _PAD + line + 2
    height = bar_y + _BAR_HEIGHT + _TICK + line + _PAD
    strip = np.empty((height, width, 3), np.uint8)
    strip[:] = LEGEND_BACKGROUND
    x0, x1 = min(_PAD, width - 1), max(min(_PAD, width - 1) + 1, width - _PAD)  # bar columns [x0, x1)
    n = x1 - x0
    lo = float(min_disp) if min_disp < top else 0.0
    values = np.linspace(lo, top, n, dtype=np.float32) if n > 1 else np.full(1, lo, np.float32)
    strip[bar_y:bar_y + _BAR_HEIGHT, x0:x1] = colorize(values[None], top, lo)[0]
    im = Image.fromarray(strip)
    draw = ImageDraw.Draw(im)
    span = _tick_label(top)
    start = _tick_label(lo)
    title = _fitting(font, (f"{label}: {start} to {span}, black = unknown", f"{label}: {start} to {span}",
                            f"{start} to {span} px"), width - 2 * _PAD)
    draw.text((x0, _PAD), title, fill=LEGEND_INK, font=font)
    label_width = _text_size(font, span)[0] + 8
    ticks = nice_ticks(top - lo, max(2, n // (3 * label_width))) if n > 1 else [0.0]
    if lo:  # the same step, at its round multiples inside [lo, top]
        step = ticks[1] - ticks[0] if len(ticks) > 1 else top - lo
        ticks = [round(k * step, 10) for k in range(int(np.ceil(lo / step - 1e-9)), int(np.floor(top / step + 1e-9)) + 1)]
    for value in ticks:
        x = x0 + round((value - lo) / (top - lo) * (n - 1))
        draw.line([(x, bar_y + _BAR_HEIGHT), (x, bar_y + _BAR_HEIGHT + _TICK - 1)], fill=LEGEND_INK)
        text = _tick_label(value)
        w = _text_size(font, text)[0]
        tx = min(max(0, x - w // 2), max(0, width - w))
        draw.text((tx, bar_y + _BAR_HEIGHT + _TICK), text, fill=LEGEND_INK, font=font)
    return np.asarray(im).copy()


def error_legend(width: int, threshold: float = 3.0) -> np.ndarray:
    """A legend strip for pictures from :func:`error_map` with the same ``threshold``: uint8 ``(h, width, 3)``.

    Swatches with labels, wrapped onto as many lines as ``width`` needs: the blue..yellow ramp ``0-3 px``, orange
    ``3-6 px``, red ``>= 6 px or none`` (a missing prediction counts as the worst error) and black ``no ground
    truth`` (for ``threshold`` 3).
    """
    from PIL import Image, ImageDraw

    if width < 1:
        raise ValueError(f"error_legend needs a width of at least 1 pixel, got {width}")
    t, t2 = _tick_label(threshold), _tick_label(2 * threshold)
    lut = _lut(_GOOD_ANCHORS)
    ramp = lut[np.rint(np.linspace(0, len(lut) - 1, _SWATCH * 2)).astype(np.intp)]  # error_map's own colours
    items = [
        (ramp, f"0-{t} px"),
        (np.tile(np.array(ERROR_ORANGE, np.uint8), (_SWATCH, 1)), f"{t}-{t2} px"),
        (np.tile(np.array(ERROR_RED, np.uint8), (_SWATCH, 1)), f">= {t2} px or none"),
        (np.zeros((_SWATCH, 3), np.uint8), "no ground truth"),
    ]
    font = _font()
    line = _text_size(font, "0")[1]
    row_h = max(line, _SWATCH) + 3
    title = _fitting(font, ("error |d - gt|:", "error:"), width - 2 * _PAD)
    # Flow layout: (x, row) of the title and of every item; wrap when the next one does not fit.
    placed, x, row = [], _PAD, 0
    for kind, payload, w in [("text", title, _text_size(font, title)[0])] + [
            ("item", item, len(item[0]) + 3 + _text_size(font, item[1])[0]) for item in items]:
        if x > _PAD and x + w > width - _PAD:
            x, row = _PAD, row + 1
        placed.append((kind, payload, x, row))
        x += w + 10
    height = 2 * _PAD + (row + 1) * row_h
    strip = np.empty((height, width, 3), np.uint8)
    strip[:] = LEGEND_BACKGROUND
    for kind, payload, x, r in placed:
        if kind == "item":
            colours, _ = payload
            y = _PAD + r * row_h + (row_h - 3 - _SWATCH) // 2
            cols = colours[: max(0, width - x)]
            strip[y:y + _SWATCH, x:x + len(cols)] = cols[None]
    im = Image.fromarray(strip)
    draw = ImageDraw.Draw(im)
    for kind, payload, x, r in placed:
        text = payload if kind == "text" else payload[1]
        tx = x if kind == "text" else x + len(payload[0]) + 3
        draw.text((tx, _PAD + r * row_h), text, fill=LEGEND_INK, font=font)
    return np.asarray(im).copy()


def with_legend(picture: np.ndarray, legend: np.ndarray) -> np.ndarray:
    """``picture`` (uint8 ``(H, W[, 3])``) with ``legend`` (uint8 ``(h, W, 3)``) under it: ``(H + h, W, 3)``."""
    picture = np.asarray(picture)
    if picture.ndim == 2:
        picture = np.repeat(picture[..., None], 3, axis=2)
    if picture.shape[1] != legend.shape[1]:
        raise ValueError(f"legend is {legend.shape[1]} pixels wide, picture {picture.shape[1]}")
    return np.concatenate([picture.astype(np.uint8, copy=False), legend], axis=0)


def colorize_with_bar(disp: np.ndarray, max_disp: float, label: str = "disparity (px)",
                      min_disp: float = 0.0) -> np.ndarray:
    """:func:`colorize` with its :func:`colorbar` under it (range ``min_disp..max_disp``, required: a fixed
    scale)."""
    picture = colorize(disp, max_disp, min_disp)
    return with_legend(picture, colorbar(picture.shape[1], max_disp, label, min_disp))


def error_map_with_legend(disp: np.ndarray, gt: np.ndarray, threshold: float = 3.0) -> np.ndarray:
    """:func:`error_map` with its :func:`error_legend` under it."""
    picture = error_map(disp, gt, threshold)
    return with_legend(picture, error_legend(picture.shape[1], threshold))


# --------------------------------------------------------------------------------------------------------------
# Point clouds


def write_ply(path: str | os.PathLike[str], xyz: np.ndarray, rgb: np.ndarray | None = None,
              overwrite: bool = False) -> Path:
    """Write (N, 3) points (and (N, 3) uint8 colours) as a binary little-endian PLY, atomically.

    One ``vertex`` element with float32 ``x y z`` and, with colours, uchar ``red green blue``: what MeshLab,
    CloudCompare, Open3D and Blender read. No faces.
    """
    xyz = np.asarray(xyz, dtype="<f4")
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"write_ply takes (N, 3) points, got shape {xyz.shape}")
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.shape != xyz.shape or rgb.dtype != np.uint8:
            raise ValueError(f"write_ply takes (N, 3) uint8 colours for (N, 3) points, got {rgb.dtype} {rgb.shape}")
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    rows = np.empty(len(xyz), dtype=fields)
    for i, axis in enumerate("xyz"):
        rows[axis] = xyz[:, i]
    if rgb is not None:
        for i, channel in enumerate(("red", "green", "blue")):
            rows[channel] = rgb[:, i]
    types = {"<f4": "float", "u1": "uchar"}
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(xyz)}"]
    header += [f"property {types[t]} {name}" for name, t in fields] + ["end_header"]
    with atomic_write(path, overwrite) as tmp, open(tmp, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(rows.tobytes())
    return Path(path)


def read_ply(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """The points (N, 3) float32 and colours (N, 3) uint8 (or None) of a PLY written by :func:`write_ply`."""
    data = Path(path).read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    if header[:2] != ["ply", "format binary_little_endian 1.0"]:
        raise UserError(f"{path}: not a binary little-endian PLY")
    count = next(int(line.split()[2]) for line in header if line.startswith("element vertex"))
    names = [line.split()[2] for line in header if line.startswith("property")]
    fields = [(n, "<f4" if n in "xyz" else "u1") for n in names]
    rows = np.frombuffer(data, dtype=fields, count=count, offset=end)
    xyz = np.stack([rows[a] for a in "xyz"], axis=1)
    rgb = np.stack([rows[c] for c in ("red", "green", "blue")], axis=1) if "red" in names else None
    return xyz, rgb


# --------------------------------------------------------------------------------------------------------------
# JSON and text


def to_jsonable(obj: Any) -> Any:
    """``obj`` with NaN/inf floats as ``None`` (strict JSON has no NaN), tuples as lists, paths as strings."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (np.floating, np.integer)):
        return to_jsonable(obj.item())
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | Path, obj: Any, overwrite: bool = False) -> Path:
    """Write ``obj`` as indented, strict JSON (see :func:`to_jsonable`), atomically."""
    text = json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n"
    return write_text(path, text, overwrite)


def write_text(path: str | Path, text: str, overwrite: bool = False) -> Path:
    with atomic_write(path, overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
