"""Image normalisation and the MC-CNN fast patch sampler (numpy only, seeded, framework-free).

The sampler stores an *index* of examples (frame, row, column, matching right column), never patches, and gathers
a batch of patches on demand. A batch depends only on ``(seed, epoch, batch number)``, so PyTorch and TensorFlow
are fed the very same batches, and a resumed run continues with exactly the batches it would have seen.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from stereodeploy.config import SamplerConfig

NORM_EPS = 1e-6  # added to the variance, in (grey level)^2: negligible on real images, avoids 0/0 on flat ones


def normalize(gray: np.ndarray) -> np.ndarray:
    """Per-image normalisation used everywhere (training, every backend, the ONNX graph):
    ``(x - mean) / sqrt(var + NORM_EPS)`` with the population variance. Input (H, W) in 0..255."""
    gray = np.asarray(gray, dtype=np.float32)
    mean = gray.mean(dtype=np.float64)
    var = gray.var(dtype=np.float64)
    return ((gray - mean) / np.sqrt(var + NORM_EPS)).astype(np.float32)


@dataclass
class Batch:
    """One batch of examples: (B, 1, P, P) float32 patches, already normalised."""

    left: np.ndarray
    pos: np.ndarray
    neg: np.ndarray

    def __len__(self) -> int:
        return len(self.left)


class PatchIndex:
    """Every usable training example of a set of frames, and batch gathering.

    An example is a left pixel (y, x) with ground-truth disparity d whose 9x9 left patch fits and whose right
    patches fit for every offset the sampler may draw (``x - d +- neg_high``). The right centre ``x - d`` is rounded
    to the nearest column. Memory: 8 bytes per example plus the normalised float32 images.
    """

    def __init__(self, patch_size: int, config: SamplerConfig = SamplerConfig()):
        if patch_size % 2 == 0:
            raise ValueError("patch_size must be odd")
        if not 0 <= config.pos_offset < config.neg_low <= config.neg_high:
            raise ValueError("sampler offsets need 0 <= pos_offset < neg_low <= neg_high")
        self.patch_size = patch_size
        self.config = config
        self._images: list[np.ndarray] = []  # flat normalised left, right per frame
        self._widths: list[int] = []
        self._parts: list[tuple[np.ndarray, ...]] = []
        self.frames = 0
        self.names: list[str] = []
        self._built: tuple[np.ndarray, ...] | None = None

    # ------------------------------------------------------------------ building
    def add(self, left_gray: np.ndarray, right_gray: np.ndarray, disp: np.ndarray, name: str = "") -> int:
        """Add one frame (grayscale 0..255 images, disparity with NaN = unknown); returns its example count."""
        if left_gray.shape != right_gray.shape or left_gray.shape != disp.shape:
            raise ValueError(f"frame {name!r}: left, right and disparity must have the same shape")
        h, w = disp.shape
        r = self.patch_size // 2
        reach = self.config.neg_high + r
        with np.errstate(invalid="ignore"):
            xr = np.rint(np.arange(w, dtype=np.float32)[None, :] - disp)
            ok = np.isfinite(disp) & (disp >= 0) & (xr - reach >= 0) & (xr + reach < w)
        ok[:r] = False
        ok[h - r:] = False
        ok[:, :r] = False
        ok[:, w - r:] = False
        ys, xs = np.nonzero(ok)
        frame = self.frames
        self._parts.append((
            np.full(len(ys), frame, dtype=np.uint16),
            ys.astype(np.int16),
            xs.astype(np.int16),
            xr[ys, xs].astype(np.int16),
        ))
        left = normalize(left_gray).ravel()
        right = normalize(right_gray).ravel()
        self._images.append(np.concatenate([left, right]))
        self._widths.append(w)
        self.names.append(name)
        self.frames += 1
        self._built = None
        return len(ys)

    def extend(self, frames: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray, str]]) -> None:
        for left, right, disp, name in frames:
            self.add(left, right, disp, name)

    def _arrays(self) -> tuple[np.ndarray, ...]:
        if self._built is None:
            if not self._parts:
                raise ValueError("the patch index is empty: add frames with ground truth first")
            frame, y, x, xr = (np.concatenate(p) for p in zip(*self._parts))
            self._parts = [(frame, y, x, xr)]
            sizes = np.array([len(im) for im in self._images], dtype=np.int64)
            starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
            flat = np.concatenate(self._images) if len(self._images) > 1 else self._images[0]
            self._images = [flat]
            self._built = (frame, y, x, xr, flat, starts, sizes // 2, np.array(self._widths, dtype=np.int64))
        return self._built

    def __len__(self) -> int:
        return sum(len(p[0]) for p in self._parts)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for p in self._parts for a in p) + sum(im.nbytes for im in self._images)

    # ------------------------------------------------------------------ sampling
    def epoch_order(self, epoch: int, max_examples: int | None = None) -> np.ndarray:
        """The examples of ``epoch`` in the order they are used (a seeded permutation, truncated)."""
        n = len(self)
        rng = np.random.default_rng([self.config.seed, epoch])
        order = rng.permutation(n).astype(np.int64 if n >= 2**31 else np.int32)
        return order[:max_examples] if max_examples else order

    def num_batches(self, examples_per_batch: int, max_examples: int | None = None) -> int:
        n = min(len(self), max_examples) if max_examples else len(self)
        return max(1, n // examples_per_batch)

    def batches(self, epoch: int, examples_per_batch: int, max_examples: int | None = None,
                start: int = 0) -> Iterator[Batch]:
        """Yield the batches of ``epoch`` from batch number ``start`` on (for resuming)."""
        order = self.epoch_order(epoch, max_examples)
        for b in range(start, self.num_batches(examples_per_batch, max_examples)):
            yield self.gather(order[b * examples_per_batch:(b + 1) * examples_per_batch], epoch, b)

    def gather(self, examples: np.ndarray, epoch: int = 0, batch: int = 0) -> Batch:
        """Patches for ``examples`` (indices into the index); offsets drawn from ``(seed, epoch, batch)``."""
        frame_of, ys, xs, xrs, flat, starts, plane, widths = self._arrays()
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, epoch, batch, 1])
        b = len(examples)
        f = frame_of[examples].astype(np.int64)
        y = ys[examples].astype(np.int64)
        x = xs[examples].astype(np.int64)
        xr = xrs[examples].astype(np.int64)
        o_pos = rng.integers(-cfg.pos_offset, cfg.pos_offset + 1, size=b)
        o_neg = rng.integers(cfg.neg_low, cfg.neg_high + 1, size=b) * rng.choice(np.array([-1, 1]), size=b)
        w = widths[f]
        left_base = starts[f]
        right_base = starts[f] + plane[f]
        if cfg.augment:
            aug = _draw_augmentation(rng, b)
            return Batch(
                left=_sample_affine(flat, left_base, w, y, x, self.patch_size, aug, right=False),
                pos=_sample_affine(flat, right_base, w, y, xr + o_pos, self.patch_size, aug, right=True),
                neg=_sample_affine(flat, right_base, w, y, xr + o_neg, self.patch_size, aug, right=True),
            )
        r = self.patch_size // 2
        d = np.arange(-r, r + 1)
        grid = d[None, :, None] * w[:, None, None] + d[None, None, :]  # (B, P, P)
        row = y * w

        def take(base: np.ndarray, col: np.ndarray) -> np.ndarray:
            return flat[(base + row + col)[:, None, None] + grid][:, None]

        return Batch(left=take(left_base, x), pos=take(right_base, xr + o_pos), neg=take(right_base, xr + o_neg))


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


def _sample_affine(flat: np.ndarray, base: np.ndarray, w: np.ndarray, y: np.ndarray, x: np.ndarray, p: int,
                   aug: dict[str, np.ndarray], right: bool) -> np.ndarray:
    """Bilinear sampling of a (B, 1, P, P) patch whose pixel grid is rotated, scaled and sheared about its centre.

    The same geometric transform is applied to the left and right patches of an example (as in MC-CNN), so the
    disparity relation between them is kept; photometric changes follow, with an extra brightness on the right.
    Samples that fall outside the image take the nearest edge pixel.
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
        return flat[bb + yy * ww + xx]

    top = at(y0c, x0c) * (1 - fx) + at(y0c, x1c) * fx
    bottom = at(y1c, x0c) * (1 - fx) + at(y1c, x1c) * fx
    patch = top * (1 - fy) + bottom * fy
    bright = aug["brightness"] + (aug["right_brightness"] if right else 0.0)
    patch = patch * aug["contrast"][:, None, None].astype(np.float32) + bright[:, None, None].astype(np.float32)
    return patch.astype(np.float32)[:, None]
