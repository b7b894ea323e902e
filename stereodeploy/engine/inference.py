"""Batch inference that writes its outputs: what `stereodeploy infer` does, for applications that want the same.

:func:`resolve_pairs` turns what a user gives (two images, a dataset folder, a pairs file) into named pairs;
:func:`infer_pairs` runs one matcher over them and writes, per pair:

- ``<name>_disp.pfm``: float32 disparity in pixels, ``inf`` where there is no answer (Middlebury convention);
- ``<name>_disp.png``: KITTI uint16 PNG, disparity * 256, 0 = no answer;
- ``<name>_disp_color.png``: the disparity in colour for people, with a colour bar over the range searched
  (``[min_disp, max_disp]``), or over ``vmin..vmax`` of a Middlebury calib.txt beside the left image (the range
  MiddEval3 gives for colour-coding); black = no answer;
- ``<name>_valid.png``: 8-bit mask, 255 where the matcher found the answer itself, 0 where it filled it in (or,
  with ``fill=False`` on the matcher, left it without answer): :attr:`MatchResult.valid`;
- ``<name>_confidence.pfm``: float32 in [0, 1], :attr:`MatchResult.confidence` (0 where not valid);
- with a calibration (given, or the pair's own: :func:`stereodeploy.data.calib.find_calibration`):
  ``<name>_depth.pfm``, float32 depth in metres (``inf`` = none), and ``<name>.ply``, a binary PLY of the valid
  pixels as 3-D points in metres, in the left camera's frame (x right, y down, z forward), coloured by the left
  image (:mod:`stereodeploy.engine.geometry`);
- ``<name>_disp.json``: what produced it (images, model, disparity range, post-processing, SGM preset, fill,
  density, calibration, timings, and the swapped-pair score of :mod:`stereodeploy.engine.sanity`).

The disparity range of a pair: the matcher's, unless no max disparity was given (``max_disp=None``) and a
Middlebury calib.txt beside the left image has ``ndisp``, which is used then (as `stereodeploy evaluate` does).

A pair that looks swapped (most of it matches better at negative disparity) gets a warning
(:func:`warnings.warn`, one line at the CLI); its outputs are written all the same.

Every output path, and the memory the largest pair needs (:func:`refuse_oversized`), is checked before any work
starts, and every file is written atomically, so an interrupted run leaves whole files only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stereodeploy.data.calib import Calibration
from stereodeploy.data.pairs import Pair, read_pairs_file
from stereodeploy.engine.matcher import MatchResult, StereoMatcher
from stereodeploy.errors import UsageError, UserError


def _both(pool: ThreadPoolExecutor, fn: Callable, a, b) -> tuple:
    """``fn(a), fn(b)``, the first in ``pool`` beside the second here."""
    first = pool.submit(fn, a)
    second = fn(b)
    return first.result(), second


def _wait_all(futures: Sequence[Future]) -> None:
    """Wait for every one of ``futures``; the first error (in their order) is raised after all have ended, so no
    write is left running behind it."""
    wait(futures)
    for f in futures:
        f.result()


def _swapped(name: str, left: np.ndarray, right: np.ndarray, max_disp: int) -> tuple[float, str | None]:
    from stereodeploy.data.preprocess import to_gray
    from stereodeploy.engine.sanity import check_swapped

    return check_swapped(name, to_gray(left), to_gray(right), max_disp)


def _write_colour(path: Path, disparity: np.ndarray, colours: tuple[float, float], overwrite: bool) -> None:
    from stereodeploy.data.io import colorize_with_bar, write_png

    write_png(path, colorize_with_bar(disparity, colours[1], min_disp=colours[0]), overwrite=overwrite)


@dataclass
class PairOutput:
    pair: Pair
    result: MatchResult
    files: tuple[Path, ...]


def resolve_pairs(inputs: Sequence[Path], pairs_file: Path | None = None, fmt: str | None = None) -> list[Pair]:
    """The pairs of ``LEFT RIGHT``, of one dataset folder (layout ``fmt``, or detected), or of a pairs file; checks
    that every image exists and that no two pairs would write the same outputs."""
    from stereodeploy.data.datasets import list_frames

    inputs = [Path(p) for p in inputs]
    if fmt is not None and not (len(inputs) == 1 and inputs[0].is_dir()):
        raise UsageError("--format names the layout of a dataset folder: give one folder, or leave --format out")
    if pairs_file is not None:
        if inputs:
            raise UsageError("give either images / a dataset folder or --pairs, not both")
        pairs = read_pairs_file(pairs_file)
    elif len(inputs) == 1 and inputs[0].is_dir():
        pairs = [Pair(f.name, Path(f.left), Path(f.right)) for f in list_frames(inputs[0], fmt)]
    elif len(inputs) == 2:
        pairs = [Pair(inputs[0].stem, inputs[0], inputs[1])]
    elif len(inputs) == 1 and not inputs[0].exists():
        raise UserError(f"{inputs[0]} does not exist: check the path (give LEFT RIGHT images, a dataset folder, or "
                        "--pairs FILE)")
    elif len(inputs) == 1:
        raise UsageError(f"{inputs[0]} is one file: give LEFT RIGHT images, a dataset folder, or --pairs FILE")
    else:
        raise UsageError("give LEFT RIGHT images, one dataset folder (KITTI or Middlebury layout), or --pairs FILE")
    for pair in pairs:
        for image in (pair.left, pair.right):
            if not image.is_file():
                raise UserError(f"image {image} not found: check the path")
    names = [p.name for p in pairs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(f"several pairs would write {twice[0]}_disp.png: give left images distinct names, "
                         "or run them into different --out folders")
    return pairs


def detected_preset(pairs: Sequence[Pair], inputs: Sequence[Path], fmt: str | None = None) -> str | None:
    """The SGM preset the data calls for: ``fmt``'s, a dataset folder's layout, or that of the first left image's
    folders (see :func:`stereodeploy.data.datasets.detect_preset`); None when nothing tells."""
    from stereodeploy.data.datasets import detect_preset, preset_for_format

    if fmt is not None:
        return preset_for_format(fmt)
    if len(inputs) == 1 and Path(inputs[0]).is_dir():
        return detect_preset(inputs[0])
    return detect_preset(pairs[0].left) if pairs else None


_SUFFIXES = (("pfm", "_disp.pfm"), ("png", "_disp.png"), ("color", "_disp_color.png"), ("valid", "_valid.png"),
             ("confidence", "_confidence.pfm"), ("json", "_disp.json"))
_GEOMETRY_SUFFIXES = (("depth", "_depth.pfm"), ("ply", ".ply"))


def output_files(pair: Pair, out: Path, depth: bool = False) -> dict[str, Path]:
    """The files :func:`infer_pairs` writes for ``pair``, by kind (see the module docstring); ``depth``: with the
    depth map and point cloud of a calibrated pair."""
    suffixes = _SUFFIXES + (_GEOMETRY_SUFFIXES if depth else ())
    return {kind: Path(out) / f"{pair.name}{suffix}" for kind, suffix in suffixes}


def pair_calibration(pair: Pair, given: Calibration | None) -> Calibration | None:
    """``given`` (for every pair), else the pair's own calibration file, if its dataset keeps one
    (:func:`stereodeploy.data.calib.find_calibration`), else None."""
    from stereodeploy.data.calib import find_calibration, read_calibration

    if given is not None:
        return given
    found = find_calibration(pair.left)
    return None if found is None else read_calibration(found)


# Peak memory of one match on top of the loaded model, measured with the shipped model (64 feature maps) on a
# 375 x 1242 pair (KITTI's size), from ru_maxrss: winner-take-all held 722-725 MiB at max disparity 64, 256 and
# 1000 (feature maps and their buffers: about 1630 bytes per pixel, none per disparity); the full pipeline
# 725 MiB at 64 and 1414 MiB at 256, 8.1 bytes per pixel per disparity (the uint16 cost volume, SGM's sums
# and the right reference's volume) on top. Rounded up for headroom.
MATCH_BYTES_PER_PIXEL = 1700
FULL_BYTES_PER_VOXEL = 9


def match_memory_bytes(height: int, width: int, max_disp: int, postprocessing: bool) -> int:
    """About how many bytes matching one ``height`` x ``width`` pair takes at ``max_disp`` (see the constants)."""
    pixels = height * width
    return MATCH_BYTES_PER_PIXEL * pixels + (FULL_BYTES_PER_VOXEL * pixels * max_disp if postprocessing else 0)


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image from its header (the whole image only where Pillow cannot tell)."""
    from PIL import Image

    from stereodeploy.data.io import read_image

    try:
        with Image.open(path) as im:
            return im.height, im.width
    except Exception:  # noqa: BLE001 - read_image says what is wrong with the file, in one line
        return read_image(path).shape[:2]


def refuse_oversized(pairs: Sequence[Pair], max_disp: int, postprocessing: bool,
                     available: int | None = None) -> None:
    """UserError, before any work, when the largest pair would need more memory than is available."""
    from stereodeploy.util.memory import refuse_if_oversized

    if not pairs:
        return
    sizes = {pair.left: image_size(pair.left) for pair in pairs}
    biggest = max(sizes, key=lambda p: sizes[p][0] * sizes[p][1])
    h, w = sizes[biggest]
    need = match_memory_bytes(h, w, max_disp, postprocessing)
    fix = "use a smaller --max-disp" + (", or --postprocess none (no cost volume)" if postprocessing else
                                        ", or smaller images")
    refuse_if_oversized(need, f"matching {biggest.name} ({w}x{h}) at max disparity {max_disp}"
                        + (" with post-processing" if postprocessing else ""), fix, available)


def infer_pairs(pairs: Sequence[Pair], matcher: StereoMatcher, out: Path, overwrite: bool = False,
                on_pair: Callable[[PairOutput], None] | None = None, *, max_disp: int | None = None,
                calib: Calibration | None = None) -> list[PairOutput]:
    """Match every pair with ``matcher`` and write its outputs into ``out``; ``on_pair`` sees each as it is done.

    ``max_disp`` is the max disparity the user chose (the matcher's): None lets a pair's Middlebury calib.txt set
    it (``ndisp``), else the matcher's applies (capped at the width - 1). ``calib`` is the calibration of every
    pair, for depth and points; without it, the pairs whose dataset holds one get those (see the module
    docstring). Refuses before any work if an output exists (unless ``overwrite``); stops at the first pair that
    cannot be matched, with the pairs before it written.
    """
    import warnings

    from stereodeploy.data.calib import display_range
    from stereodeploy.data.datasets import max_disp_hint
    from stereodeploy.data.io import (
        ensure_writable,
        read_image,
        write_json,
        write_kitti_disp,
        write_pfm,
        write_ply,
        write_png,
    )
    from stereodeploy.study.evaluate import choose_max_disp, postprocess_name

    out = Path(out)
    calibs = [pair_calibration(pair, calib) for pair in pairs]
    for pair, c in zip(pairs, calibs):
        for path in output_files(pair, out, c is not None).values():
            ensure_writable(path, overwrite)
    refuse_oversized(pairs, matcher.config.max_disp, matcher.postprocessing)
    done = []
    # Pillow decodes and encodes, onnxruntime and the numba kernels run without the GIL: the two images are read
    # side by side, the swapped-pair check runs beside the match, and the outputs are written side by side
    # (about 0.09 s less per KITTI pair on 2 cores; docs/benchmarks.md).
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="stereodeploy-io") as pool:
        for pair, c in zip(pairs, calibs):
            left, right = _both(pool, read_image, pair.left, pair.right)
            calib_txt = pair.left.parent / "calib.txt"
            hint = max_disp_hint(calib_txt) if calib_txt.is_file() else None
            d = choose_max_disp(max_disp, hint, left.shape[1], matcher.config.max_disp)
            m = matcher if d == matcher.config.max_disp else matcher.with_max_disp(d)
            sanity = pool.submit(_swapped, pair.name, left, right, m.config.max_disp)
            result = m.match(left, right)
            swapped, warning = sanity.result()
            if warning is not None:
                warnings.warn(warning, stacklevel=2)
            files = output_files(pair, out, c is not None)
            colours = display_range(calib_txt) or (m.min_disp, m.config.max_disp)
            writes = [pool.submit(write_pfm, files["pfm"], result.disparity, overwrite=overwrite),
                      pool.submit(write_kitti_disp, files["png"], result.disparity, overwrite=overwrite),
                      pool.submit(_write_colour, files["color"], result.disparity, colours, overwrite),
                      pool.submit(write_png, files["valid"], result.valid.astype(np.uint8) * 255, overwrite=overwrite)]
            if result.confidence is not None:
                writes.append(pool.submit(write_pfm, files["confidence"], result.confidence, overwrite=overwrite))
            else:
                del files["confidence"]
            points = 0
            if c is not None:
                cloud = result.points(c, left)
                points = len(cloud)
                writes += [pool.submit(write_pfm, files["depth"], result.depth(c), overwrite=overwrite),
                           pool.submit(write_ply, files["ply"], cloud.xyz, cloud.rgb, overwrite=overwrite)]
            _wait_all(writes)
            write_json(files["json"], {
                "left": str(pair.left), "right": str(pair.right), "model": str(getattr(m.backend, "path", "")),
                "backend": m.backend.name, "device": m.backend.device, "min_disp": m.min_disp,
                "max_disp": m.config.max_disp, "colour_range": list(colours), "postprocess": postprocess_name(m),
                "sgm_preset": m.sgm_preset, "fill": m.fill, "density": 100.0 * float(result.valid.mean()),
                "calibration": None if c is None else c.to_dict(), "points": points,
                "seconds": result.timings, "swapped_score": swapped}, overwrite=overwrite)
            done.append(PairOutput(pair, result, tuple(files.values())))
            if on_pair is not None:
                on_pair(done[-1])
    return done
