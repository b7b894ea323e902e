"""Image normalisation and the MC-CNN fast patch sampler (numpy only, seeded, framework-free, larger than memory).

The sampler keeps no list of examples and no image in RAM. Each frame added goes to a cache on disk, read back
through memory maps:

- the left and right images as raw ``uint8`` grey levels, with each image's mean and standard deviation kept in
  RAM, so a patch is normalised when it is gathered, exactly as :func:`normalize` would (1 byte per pixel instead
  of 4; grey levels are rounded to integers, a quantisation error of at most 0.5 grey level);
- per pixel, the rounded disparity ``x - xr`` of each usable example (``uint16``, 65535 where the pixel is not an
  example);
- per row, the number of examples of its frame before it (``uint32``).

Example ``k`` is found from these: its frame from the examples per frame (in RAM), the row by counting over that
frame's row totals, then the column by counting the usable pixels of that row. Examples are numbered row by row, frame after frame, as the old in-memory
index listed them. The order of an epoch is a pseudo-random permutation of ``0..n-1`` computed position by position
(a keyed Feistel network with cycle walking), so an epoch still visits every example once and a batch depends only
on ``(seed, epoch, batch number)``: PyTorch and TensorFlow are fed the very same batches, any number of processes
can each take a slice of the same batch, and a resumed run continues with exactly the batches it would have seen.

RAM per frame: its name and about 100 bytes of offsets and statistics. Disk per frame: 4 bytes per pixel plus 4 per
row, in unlinked temporary files (``cache_dir``, the system's temporary folder by default) that vanish with the
index. After each batch the pages it read are unmapped from the process (the kernel keeps them in its page cache
while memory allows), so the resident set does not grow towards the size of the cache as an epoch goes on.
"""

from __future__ import annotations

import mmap
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from stereodeploy.config import SamplerConfig
from stereodeploy.data.preprocess import NORM_EPS

NO_EXAMPLE = np.iinfo(np.uint16).max  # rounded-disparity code of a pixel that is not an example
MAX_WIDTH = int(NO_EXAMPLE)  # x - xr < width must stay below NO_EXAMPLE
MAX_EXAMPLES = 2**62  # epoch positions are computed in uint64 with two spare bits
GATHER_CHUNK = 128  # examples read between two unmappings of the cache (bounds the pages mapped at once)
FEISTEL_ROUNDS = 6




@dataclass
class Batch:
    """One batch of examples: (B, 1, P, P) float32 patches, already normalised."""

    left: np.ndarray
    pos: np.ndarray
    neg: np.ndarray

    def __len__(self) -> int:
        return len(self.left)


@dataclass
class Draw:
    """Where the patches of a batch come from: frame, left centre (y, x), matching right column xr, offsets."""

    frame: np.ndarray  # (B,) int64
    y: np.ndarray
    x: np.ndarray
    xr: np.ndarray
    pos_offset: np.ndarray  # positive patch at xr + pos_offset
    neg_offset: np.ndarray  # negative patch at xr + neg_offset
    augmentation: dict[str, np.ndarray] | None = None

    def slice(self, lo: int, hi: int) -> Draw:
        aug = None if self.augmentation is None else {k: v[lo:hi] for k, v in self.augmentation.items()}
        return Draw(self.frame[lo:hi], self.y[lo:hi], self.x[lo:hi], self.xr[lo:hi], self.pos_offset[lo:hi],
                    self.neg_offset[lo:hi], aug)


class _Spool:
    """An append-only 1-D array in an unlinked temporary file, read through a memory map."""

    def __init__(self, dtype: Any, folder: str | None):
        self.dtype = np.dtype(dtype)
        self._file = tempfile.TemporaryFile(dir=folder, prefix="stereodeploy-patches-")  # noqa: SIM115 - lives as long as the object
        self.size = 0
        self._view: np.ndarray | None = None
        self._map: mmap.mmap | None = None

    def append(self, values: np.ndarray) -> int:
        """Append ``values`` (cast to the spool's type by the caller); returns the index of the first."""
        values = np.ascontiguousarray(values)
        assert values.dtype == self.dtype
        self._file.seek(self.size * self.dtype.itemsize)
        self._file.write(memoryview(values).cast("B"))
        start = self.size
        self.size += values.size
        self._view = None
        return start

    def array(self) -> np.ndarray:
        if self._view is None:
            self._file.flush()
            if self.size == 0:
                return np.empty(0, self.dtype)
            mm = mmap.mmap(self._file.fileno(), self.size * self.dtype.itemsize, access=mmap.ACCESS_READ)
            if hasattr(mm, "madvise"):
                mm.madvise(mmap.MADV_RANDOM)  # batches read scattered rows: no read-ahead
            self._map, self._view = mm, np.frombuffer(mm, self.dtype)
        return self._view

    def release(self) -> None:
        """Unmap the pages read so far from this process (the kernel's page cache keeps them while RAM allows):
        without it the resident set would grow towards the whole cache as an epoch touches every page."""
        if self._map is not None and hasattr(self._map, "madvise"):
            self._map.madvise(mmap.MADV_DONTNEED)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize


class PatchIndex:
    """Every usable training example of a set of frames, and batch gathering (see the module docstring).

    An example is a left pixel (y, x) with ground-truth disparity d whose 9x9 left patch fits and whose right
    patches fit for every offset the sampler may draw (``x - d +- neg_high``). The right centre ``x - d`` is rounded
    to the nearest column.
    """

    def __init__(self, patch_size: int, config: SamplerConfig = SamplerConfig(), cache_dir: str | None = None):
        if patch_size % 2 == 0:
            raise ValueError("patch_size must be odd")
        if not 0 <= config.pos_offset < config.neg_low <= config.neg_high:
            raise ValueError("sampler offsets need 0 <= pos_offset < neg_low <= neg_high")
        self.patch_size = patch_size
        self.config = config
        self._pixels = _Spool(np.uint8, cache_dir)  # per frame: left (H*W), right (H*W)
        self._rdisp = _Spool(np.uint16, cache_dir)  # per frame: x - xr of each example, NO_EXAMPLE elsewhere
        self._row_cum = _Spool(np.uint32, cache_dir)  # per row of every frame: examples of the frame before the row
        self._frames: list[tuple[int, ...]] = []  # (pixel start, rdisp start, first row, height, width, examples before)
        self._stats: list[tuple[float, float, float, float]] = []  # (left mean, left scale, right mean, right scale)
        self._meta: dict[str, np.ndarray] | None = None
        self._count = 0
        self.names: list[str] = []

    @property
    def frames(self) -> int:
        return len(self._frames)

    # ------------------------------------------------------------------ building
    def add(self, left_gray: np.ndarray, right_gray: np.ndarray, disp: np.ndarray, name: str = "") -> int:
        """Add one frame (grayscale 0..255 images, disparity with NaN = unknown); returns its example count."""
        if left_gray.shape != right_gray.shape or left_gray.shape != disp.shape:
            raise ValueError(f"frame {name!r}: left, right and disparity must have the same shape")
        h, w = disp.shape
        if w >= MAX_WIDTH:
            raise ValueError(f"frame {name!r} is {w} pixels wide: the sampler takes images up to {MAX_WIDTH - 1}")
        if self._count + h * w >= MAX_EXAMPLES or h * w >= 2**32:
            raise ValueError(f"frame {name!r}: {h}x{w} pixels exceed what the index counts (2^32 per frame, "
                             f"2^62 in all)")
        left, l_mean, l_scale = _grey_levels(left_gray, name)
        right, r_mean, r_scale = _grey_levels(right_gray, name)
        r = self.patch_size // 2
        reach = self.config.neg_high + r
        cols = np.arange(w, dtype=np.float32)[None, :]
        with np.errstate(invalid="ignore"):
            xr = np.rint(cols - disp)
            ok = np.isfinite(disp) & (disp >= 0) & (xr - reach >= 0) & (xr + reach < w)
        ok[:r] = False
        ok[h - r:] = False
        ok[:, :r] = False
        ok[:, w - r:] = False
        # 0 <= x - xr <= x < w < NO_EXAMPLE wherever ok, so the uint16 code is exact there
        rdisp = np.where(ok, cols - np.where(ok, xr, 0), NO_EXAMPLE).astype(np.uint16)
        per_row = ok.sum(axis=1, dtype=np.int64)
        before = np.concatenate([[0], np.cumsum(per_row)[:-1]]).astype(np.uint32)  # < h * w < 2^32
        first_row = self._row_cum.append(before)
        pixel_start = self._pixels.append(left.ravel())
        self._pixels.append(right.ravel())
        rdisp_start = self._rdisp.append(rdisp.ravel())
        self._frames.append((pixel_start, rdisp_start, first_row, h, w, self._count))
        self._stats.append((l_mean, l_scale, r_mean, r_scale))
        self.names.append(name)
        self._count += int(per_row.sum())
        self._meta = None
        return int(per_row.sum())

    def extend(self, frames: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray, str]]) -> None:
        for left, right, disp, name in frames:
            self.add(left, right, disp, name)

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        """Bytes held in RAM: the per-frame offsets and statistics (the names aside)."""
        return 8 * (len(self._frames) * 6 + len(self._stats) * 4)

    @property
    def cache_bytes(self) -> int:
        """Bytes of the on-disk cache (memory-mapped; the kernel keeps in RAM what batches touch)."""
        return self._pixels.nbytes + self._rdisp.nbytes + self._row_cum.nbytes

    def _arrays(self) -> dict[str, np.ndarray]:
        if self._meta is None:
            if not self._count:
                raise ValueError("the patch index is empty: add frames with ground truth first")
            frames = np.array(self._frames, dtype=np.int64)
            stats = np.array(self._stats, dtype=np.float64)
            self._meta = {"pixel_start": frames[:, 0], "rdisp_start": frames[:, 1], "first_row": frames[:, 2],
                          "height": frames[:, 3], "width": frames[:, 4], "before": frames[:, 5],
                          "left_mean": stats[:, 0],
                          "left_scale": stats[:, 1], "right_mean": stats[:, 2], "right_scale": stats[:, 3]}
        return self._meta

    # ------------------------------------------------------------------ sampling
    def locate(self, examples: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(frame, y, x, xr) of examples ``k`` (int64 arrays), numbered row by row, frame after frame."""
        m = self._arrays()
        k = np.asarray(examples, dtype=np.int64)
        if k.size and (k.min() < 0 or k.max() >= self._count):
            raise IndexError(f"example numbers must be in 0..{self._count - 1}")
        f = np.searchsorted(m["before"], k, side="right") - 1  # the last frame starting at or before k
        local = k - m["before"][f]
        h = m["height"][f]
        hs = np.arange(int(h.max()) if k.size else 1)
        starts = self._row_cum.array()[(m["first_row"][f])[:, None] + np.minimum(hs, h[:, None] - 1)].astype(np.int64)
        starts = np.where(hs < h[:, None], starts, np.iinfo(np.int64).max)  # (B, Hmax): examples before each row
        y = (starts <= local[:, None]).sum(axis=1) - 1  # the last row starting at or before local
        j = local - starts[np.arange(len(y)), y]  # k is the j-th example of its row
        w = m["width"][f]
        cols = np.arange(int(w.max()) if k.size else 1)
        rows = self._rdisp.array()[(m["rdisp_start"][f] + y * w)[:, None] + np.minimum(cols, w[:, None] - 1)]
        valid = (rows != NO_EXAMPLE) & (cols < w[:, None])
        x = np.argmax(np.cumsum(valid, axis=1) > j[:, None], axis=1).astype(np.int64)
        xr = x - rows[np.arange(len(x)), x].astype(np.int64)
        return f.astype(np.int64), y.astype(np.int64), x, xr

    def epoch_examples(self, epoch: int, start: int, stop: int) -> np.ndarray:
        """Examples at positions ``start..stop-1`` of ``epoch``'s order: a seeded permutation of all examples,
        computed for these positions alone."""
        n = self._count
        if not 0 <= start <= stop <= n:
            raise IndexError(f"epoch positions must lie in 0..{n}, got {start}..{stop}")
        return _permutation(np.arange(start, stop, dtype=np.uint64), n, self.config.seed, epoch).astype(np.int64)

    def num_batches(self, examples_per_batch: int, max_examples: int | None = None) -> int:
        n = min(len(self), max_examples) if max_examples else len(self)
        return max(1, n // examples_per_batch)

    def batch(self, epoch: int, number: int, examples_per_batch: int, part: tuple[int, int] | None = None) -> Batch:
        """Batch ``number`` of ``epoch``; ``part = (lo, hi)`` keeps its examples lo..hi-1 (one process's slice)."""
        start = number * examples_per_batch
        examples = self.epoch_examples(epoch, start, min(start + examples_per_batch, len(self)))
        return self.gather(examples, epoch, number, part)

    def batches(self, epoch: int, examples_per_batch: int, max_examples: int | None = None, start: int = 0,
                part: tuple[int, int] | None = None) -> Iterator[Batch]:
        """Yield the batches of ``epoch`` from batch number ``start`` on (for resuming)."""
        for b in range(start, self.num_batches(examples_per_batch, max_examples)):
            yield self.batch(epoch, b, examples_per_batch, part)

    def draw(self, examples: np.ndarray, epoch: int = 0, batch: int = 0, part: tuple[int, int] | None = None) -> Draw:
        """Positions and offsets of ``examples``; offsets are drawn for the whole batch from
        ``(seed, epoch, batch)`` and then sliced by ``part``, so every process sees its share of the same batch."""
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, epoch, batch, 1])
        b = len(examples)
        o_pos = rng.integers(-cfg.pos_offset, cfg.pos_offset + 1, size=b)
        o_neg = rng.integers(cfg.neg_low, cfg.neg_high + 1, size=b) * rng.choice(np.array([-1, 1]), size=b)
        aug = _draw_augmentation(rng, b) if cfg.augment else None
        lo, hi = part if part is not None else (0, b)
        if aug is not None:
            aug = {k: v[lo:hi] for k, v in aug.items()}
        f, y, x, xr = self.locate(np.asarray(examples)[lo:hi])
        return Draw(f, y, x, xr, o_pos[lo:hi].astype(np.int64), o_neg[lo:hi].astype(np.int64), aug)

    def gather(self, examples: np.ndarray, epoch: int = 0, batch: int = 0,
               part: tuple[int, int] | None = None) -> Batch:
        """Patches for ``examples`` (example numbers); offsets drawn from ``(seed, epoch, batch)``."""
        try:
            d = self.draw(examples, epoch, batch, part)
            self._release()
            pieces = [] if len(d.frame) else [self._gather(d)]
            for lo in range(0, len(d.frame), GATHER_CHUNK):  # bounded page use per chunk, then unmapped
                pieces.append(self._gather(d.slice(lo, lo + GATHER_CHUNK)))
                self._release()
        finally:
            self._release()
        if len(pieces) == 1:
            return pieces[0]
        return Batch(*(np.concatenate([getattr(p, k) for p in pieces]) for k in ("left", "pos", "neg")))

    def _release(self) -> None:
        for spool in (self._pixels, self._rdisp, self._row_cum):
            spool.release()

    def _gather(self, d: Draw) -> Batch:
        m = self._arrays()
        pixels = self._pixels.array()
        w = m["width"][d.frame]
        left_base = m["pixel_start"][d.frame]
        right_base = left_base + m["height"][d.frame] * w
        left_norm = (m["left_mean"][d.frame], m["left_scale"][d.frame])
        right_norm = (m["right_mean"][d.frame], m["right_scale"][d.frame])
        if d.augmentation is not None:
            p = self.patch_size
            return Batch(
                left=_sample_affine(pixels, left_base, left_norm, w, d.y, d.x, p, d.augmentation, right=False),
                pos=_sample_affine(pixels, right_base, right_norm, w, d.y, d.xr + d.pos_offset, p, d.augmentation,
                                   right=True),
                neg=_sample_affine(pixels, right_base, right_norm, w, d.y, d.xr + d.neg_offset, p, d.augmentation,
                                   right=True),
            )
        r = self.patch_size // 2
        o = np.arange(-r, r + 1)
        grid = o[None, :, None] * w[:, None, None] + o[None, None, :]  # (B, P, P)
        row = d.y * w

        def take(base: np.ndarray, col: np.ndarray, norm: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
            return _normalised(pixels[(base + row + col)[:, None, None] + grid], norm)[:, None]

        return Batch(left=take(left_base, d.x, left_norm), pos=take(right_base, d.xr + d.pos_offset, right_norm),
                     neg=take(right_base, d.xr + d.neg_offset, right_norm))


def _grey_levels(gray: np.ndarray, name: str) -> tuple[np.ndarray, float, float]:
    """(uint8 grey levels, mean, sqrt(var + NORM_EPS)) of a 0..255 image; the statistics are those of the
    stored levels, so :func:`_normalised` gives exactly ``normalize(levels)``."""
    g = np.asarray(gray, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        if not (np.all(np.isfinite(g)) and g.min() > -0.5 and g.max() < 255.5):
            raise ValueError(f"frame {name!r}: grey levels must be finite and within 0..255")
    levels = np.rint(g).astype(np.uint8)
    g = levels.astype(np.float32)
    return levels, float(g.mean(dtype=np.float64)), float(np.sqrt(g.var(dtype=np.float64) + NORM_EPS))


def _normalised(levels: np.ndarray, norm: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """(B, ...) uint8 grey levels -> float32 normalised with per-example (mean, scale), as :func:`normalize`."""
    shape = (-1,) + (1,) * (levels.ndim - 1)
    return ((levels - norm[0].reshape(shape)) / norm[1].reshape(shape)).astype(np.float32)


# ---------------------------------------------------------------------- epoch order without a list
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijective scramble of uint64 values (wrapping multiplications)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def _permutation(positions: np.ndarray, n: int, seed: int, epoch: int) -> np.ndarray:
    """``pi(positions)`` for a permutation ``pi`` of ``0..n-1`` keyed by ``(seed, epoch)``.

    A balanced Feistel network over the smallest even number of bits that holds ``n - 1`` is a permutation of
    ``0..4^h - 1``; values that land at ``n`` or above are sent through it again (cycle walking) until they fall in
    range, which keeps it a permutation of ``0..n-1``. Fewer than 4 passes are needed on average.
    """
    if not 0 < n < MAX_EXAMPLES:
        raise ValueError(f"cannot permute {n} examples (1..{MAX_EXAMPLES - 1})")
    half = max(1, ((n - 1).bit_length() + 1) // 2)
    mask = np.uint64((1 << half) - 1)
    shift = np.uint64(half)
    keys = np.random.default_rng([seed, epoch]).integers(0, 2**63, size=FEISTEL_ROUNDS, dtype=np.int64)
    keys = keys.astype(np.uint64)
    limit = np.uint64(n)

    def once(v: np.ndarray) -> np.ndarray:
        left, right = v >> shift, v & mask
        for key in keys:
            left, right = right, left ^ (_mix(right ^ key) & mask)
        return (left << shift) | right

    out = once(positions.astype(np.uint64))
    outside = out >= limit
    while outside.any():
        out[outside] = once(out[outside])
        outside = out >= limit
    return out


# ---------------------------------------------------------------------- augmentation (MC-CNN section 4.2)
@dataclass(frozen=True)
class Augmentation:
    """Ranges of MC-CNN's data augmentation (the original's fast-network values)."""

    rotate: float = 7.0  # degrees, +-
    scale_low: float = 0.9  # horizontal scale in [scale_low, 1]
    shear: float = 0.1  # horizontal shear, +-
    brightness: float = 0.7  # added, +- (normalised units)
    contrast: float = 1.3  # multiplied, in [1/contrast, contrast]
    right_brightness: float = 0.3  # extra brightness difference on the right patches, +-


AUGMENTATION = Augmentation()


def _draw_augmentation(rng: np.random.Generator, b: int, a: Augmentation = AUGMENTATION) -> dict[str, np.ndarray]:
    return {
        "angle": np.deg2rad(rng.uniform(-a.rotate, a.rotate, b)),
        "scale": rng.uniform(a.scale_low, 1.0, b),
        "shear": rng.uniform(-a.shear, a.shear, b),
        "brightness": rng.uniform(-a.brightness, a.brightness, b),
        "contrast": np.exp(rng.uniform(-np.log(a.contrast), np.log(a.contrast), b)),
        "right_brightness": rng.uniform(-a.right_brightness, a.right_brightness, b),
    }


def _sample_affine(levels: np.ndarray, base: np.ndarray, norm: tuple[np.ndarray, np.ndarray], w: np.ndarray,
                   y: np.ndarray, x: np.ndarray, p: int, aug: dict[str, np.ndarray], right: bool) -> np.ndarray:
    """Bilinear sampling of a (B, 1, P, P) patch whose pixel grid is rotated, scaled and sheared about its centre.

    The same geometric transform is applied to the left and right patches of an example (as in MC-CNN), so the
    disparity relation between them is kept; photometric changes follow, with an extra brightness on the right.
    Samples that fall outside the image take the nearest edge pixel. ``levels`` holds uint8 grey levels, image
    ``i`` from ``base[i]``, normalised with ``norm = (mean, scale)`` per example.
    """
    r = p // 2
    g = np.arange(-r, r + 1, dtype=np.float64)
    gy, gx = np.meshgrid(g, g, indexing="ij")  # (P, P)
    cos, sin = np.cos(aug["angle"])[:, None, None], np.sin(aug["angle"])[:, None, None]
    sx = aug["scale"][:, None, None]
    sh = aug["shear"][:, None, None]
    u = sx * (gx + sh * gy)  # horizontal scale and shear, then rotation
    v = gy
    px = cos * u - sin * v + x[:, None, None]
    py = sin * u + cos * v + y[:, None, None]
    x0 = np.floor(px).astype(np.int64)
    y0 = np.floor(py).astype(np.int64)
    fx = (px - x0).astype(np.float32)
    fy = (py - y0).astype(np.float32)
    wmax = (w - 1)[:, None, None]
    x0c, x1c = np.clip(x0, 0, wmax), np.clip(x0 + 1, 0, wmax)
    # Rows: the centre is at least r rows from the frame's border, so clipping to the centre row +- r keeps every
    # sample inside the frame (the rotation moves corner samples by about one row at most).
    yc = y[:, None, None]
    y0c = np.clip(y0, yc - r, yc + r)
    y1c = np.clip(y0 + 1, yc - r, yc + r)
    bb = base[:, None, None]
    ww = w[:, None, None]

    def at(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        return _normalised(levels[bb + yy * ww + xx], norm)

    top = at(y0c, x0c) * (1 - fx) + at(y0c, x1c) * fx
    bottom = at(y1c, x0c) * (1 - fx) + at(y1c, x1c) * fx
    patch = top * (1 - fy) + bottom * fy
    bright = aug["brightness"] + (aug["right_brightness"] if right else 0.0)
    patch = patch * aug["contrast"][:, None, None].astype(np.float32) + bright[:, None, None].astype(np.float32)
    return patch.astype(np.float32)[:, None]
