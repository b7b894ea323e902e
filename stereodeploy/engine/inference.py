"""Batch inference that writes its outputs: what `stereodeploy infer` does, for applications that want the same.

:func:`resolve_pairs` turns what a user gives (two images, a dataset folder, a pairs file) into named pairs;
:func:`infer_pairs` runs one matcher over them and writes, per pair:

- ``<name>_disp.pfm``: float32 disparity in pixels, ``inf`` where there is no answer (Middlebury convention);
- ``<name>_disp.png``: KITTI uint16 PNG, disparity * 256, 0 = no answer;
- ``<name>_disp_color.png``: the disparity in colour for people, with a colour bar from 0 to the max disparity
  searched (the same scale for every pair of a run; black = no answer);
- ``<name>_disp.json``: what produced it (images, model, max disparity, post-processing, SGM preset, timings, and
  the swapped-pair score of :mod:`stereodeploy.engine.sanity`).

A pair that looks swapped (most of it matches better at negative disparity) gets a warning
(:func:`warnings.warn`, one line at the CLI); its outputs are written all the same.

Every output path is checked before any work starts, and every file is written atomically, so an interrupted run
leaves whole files only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from stereodeploy.data.pairs import Pair, read_pairs_file
from stereodeploy.engine.matcher import MatchResult, StereoMatcher
from stereodeploy.errors import UsageError, UserError


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
    elif len(inputs) == 1:
        raise UsageError(f"{inputs[0]} is not a folder: give LEFT RIGHT images, a dataset folder, or --pairs FILE")
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


def output_files(pair: Pair, out: Path) -> dict[str, Path]:
    """The files :func:`infer_pairs` writes for ``pair``, by kind (see the module docstring)."""
    return {kind: Path(out) / f"{pair.name}{suffix}" for kind, suffix in
            (("pfm", "_disp.pfm"), ("png", "_disp.png"), ("color", "_disp_color.png"), ("json", "_disp.json"))}


def infer_pairs(pairs: Sequence[Pair], matcher: StereoMatcher, out: Path, overwrite: bool = False,
                on_pair: Callable[[PairOutput], None] | None = None) -> list[PairOutput]:
    """Match every pair with ``matcher`` and write its outputs into ``out``; ``on_pair`` sees each as it is done.

    Refuses before any work if an output exists (unless ``overwrite``); stops at the first pair that cannot be
    matched, with the pairs before it written.
    """
    import warnings

    from stereodeploy.data.io import (
        colorize_with_bar,
        ensure_writable,
        read_image,
        write_json,
        write_kitti_disp,
        write_pfm,
        write_png,
    )
    from stereodeploy.data.preprocess import to_gray
    from stereodeploy.engine.sanity import check_swapped
    from stereodeploy.study.evaluate import postprocess_name

    out = Path(out)
    for pair in pairs:
        for path in output_files(pair, out).values():
            ensure_writable(path, overwrite)
    done = []
    for pair in pairs:
        left, right = read_image(pair.left), read_image(pair.right)
        result = matcher.match(left, right)
        swapped, warning = check_swapped(pair.name, to_gray(left), to_gray(right), matcher.config.max_disp)
        if warning is not None:
            warnings.warn(warning, stacklevel=2)
        files = output_files(pair, out)
        write_pfm(files["pfm"], result.disparity, overwrite=overwrite)
        write_kitti_disp(files["png"], result.disparity, overwrite=overwrite)
        write_png(files["color"], colorize_with_bar(result.disparity, matcher.config.max_disp), overwrite=overwrite)
        write_json(files["json"], {
            "left": str(pair.left), "right": str(pair.right), "model": str(getattr(matcher.backend, "path", "")),
            "backend": matcher.backend.name, "device": matcher.backend.device, "max_disp": matcher.config.max_disp,
            "postprocess": postprocess_name(matcher), "sgm_preset": matcher.sgm_preset,
            "seconds": result.timings, "swapped_score": swapped}, overwrite=overwrite)
        done.append(PairOutput(pair, result, tuple(files.values())))
        if on_pair is not None:
            on_pair(done[-1])
    return done
