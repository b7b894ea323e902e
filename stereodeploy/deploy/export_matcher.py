"""A self-contained ONNX matcher: two images in, disparity out, in plain onnxruntime (any binding: C, C++, C#,
Java, Python, Node, web/wasm, mobile): standard operators only.

Contract of the file (``stereodeploy.format = matcher/2`` in ``metadata_props`` and in the JSON sidecar
``<file>.json`` written beside it)::

    inputs   left, right   uint8 (H, W, C): C = 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA (alpha ignored); one
                           rectified pair of one size; W > max_disp; H, W >= the network's patch (9)
    output   disparity     float32 (H, W) disparity of the left image in pixels, 0..max_disp-1, dense
             valid         (full only) uint8 (H, W): 1 where the winner passed the left-right check, 0 where filled
             confidence    (full only) float32 (H, W) in [0, 1]: 1 - C(d1) / C2 of SGM's costs, 0 where not valid

Gray is BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` inside the graph (:data:`stereodeploy.data.preprocess.LUMA_601`,
as :func:`~stereodeploy.data.preprocess.to_gray`); the feature model normalises each image by its own mean and
variance, so the scale of the input does not matter. Inputs the engine refuses fail inside the graph, in a node whose name says what is wrong
(``check: image width must be greater than the max disparity 228 fixed in this file``).

``postprocess='none'``: winner-take-all, equal to the engine's up to ties. ``'full'``: MC-CNN's post-processing
(SGM with the preset's adaptive penalties, left-right check on the right view's volume, occlusion and mismatch
filling, subpixel, 5 x 5 median, bilateral), built by :mod:`stereodeploy.deploy.onnx_pipeline`, in horizontal
strips once an image outgrows a memory budget, so that its peak memory grows with the image's width rather than its
area (:func:`default_strips`). ``max_disp`` is fixed at export time (``stereodeploy.max_disp``); the feature model's
own metadata is kept alongside.

It runs without stereodeploy installed::

    import onnxruntime as ort
    session = ort.InferenceSession("matcher.onnx")
    disparity = session.run(["disparity"], {"left": left_rgb, "right": right_rgb})[0]
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from stereodeploy.config import MatchConfig
from stereodeploy.data.io import atomic_write, ensure_writable
from stereodeploy.data.preprocess import LUMA_601
from stereodeploy.deploy.sidecar import write_sidecar
from stereodeploy.engine.spec import DEFAULT_PRESET
from stereodeploy.errors import UserError

FORMAT = "matcher/2"
LEFT, RIGHT, OUTPUT = "left", "right", "disparity"
VALID, CONFIDENCE = "valid", "confidence"  # the full pipeline's extra outputs (in strips)
EXTRA_OUTPUTS = (VALID, CONFIDENCE)
EXTRA_CONTRACT = ("valid: uint8 (H, W), 1 where the winner passed the left-right check, 0 where the pipeline "
                  "filled it (occlusion or mismatch); confidence: float32 (H, W) in [0, 1], 1 - C(d1) / C2 of the "
                  "aggregated costs, C2 the best rival at least 2 disparities from the winner d1, 0 where not valid")
DEFAULT_BLOCK = 128  # left columns per MatMul: of 32..256, 128 ran the 1242x375, max_disp 228 loop fastest (1 thread)
MIN_OPSET = 13  # Slice/Pad/Squeeze/Unsqueeze with tensor inputs, ArgMax select_last_index, ReduceSum axes input
_PREFIX = "features/"
INPUT_CONTRACT = ("left, right: uint8 (H, W, C), C = 1 gray, 2 gray+alpha, 3 RGB or 4 RGBA (alpha ignored), one "
                  "size, W > max_disp, H and W >= the network's patch; gray = {} R + {} G + {} B".format(*LUMA_601))
OUTPUT_CONTRACT = {
    "none": "disparity: float32 (H, W) winner-take-all, integers 0..max_disp-1, smallest d on ties; dense",
    "full": "disparity: float32 (H, W) after SGM, left-right check and filling, subpixel, median and bilateral; "
            "dense, in 0..max_disp-1",
}


def build_matcher(features_model: Any, max_disp: int, block: int = DEFAULT_BLOCK, postprocess: str = "none",
                  preset: str = DEFAULT_PRESET, overrides: dict[str, float] | None = None,
                  strips: Any = "auto") -> Any:
    """The self-contained matcher (onnx.ModelProto) around a stereodeploy feature model (onnx.ModelProto):
    winner-take-all (``postprocess='none'``) or MC-CNN's whole post-processing with the values of preset
    ``preset`` and ``overrides`` (:class:`stereodeploy.config.MatchConfig` checks them all, once).

    The full pipeline runs in horizontal strips (``strips``: a :class:`stereodeploy.deploy.onnx_pipeline.Strips`,
    ``'auto'`` for :func:`default_strips`, or None for the whole image at once, about twice the memory of the
    engine) and has two more outputs, ``valid`` and ``confidence`` (:data:`EXTRA_OUTPUTS`)."""
    import onnx
    from onnx import TensorProto, compose, helper, version_converter

    from stereodeploy.contract import INPUT_NAME, OUTPUT_NAME, read_meta
    from stereodeploy.deploy.onnx_pipeline import (
        Graph,
        Strips,
        full_nodes,
        full_strip_nodes,
        gray_nodes,
        input_checks,
        wta_nodes,
    )
    from stereodeploy.nets.portable import bound_clips

    config = MatchConfig.preset(postprocess, max_disp, overrides, sgm_preset=preset)
    meta = read_meta(features_model, "the feature model")
    if block < 1:
        raise UserError(f"block must be at least 1, got {block}")
    if postprocess == "full" and max_disp < 3:
        raise UserError(f"the full pipeline needs a max disparity of at least 3, got {max_disp}")
    graph = features_model.graph
    if [i.name for i in graph.input] != [INPUT_NAME] or [o.name for o in graph.output] != [OUTPUT_NAME]:
        raise UserError(f"the feature model does not have the stereodeploy contract (input '{INPUT_NAME}', output "
                        f"'{OUTPUT_NAME}'): export it with `stereodeploy export`")
    opset = next((o.version for o in features_model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        features_model = version_converter.convert_version(features_model, MIN_OPSET)
        opset = MIN_OPSET
    features_model = copy_model(features_model)
    bound_clips(features_model)  # files exported before Clip had both bounds
    feats = compose.add_prefix(features_model, _PREFIX)
    g = Graph("matcher", opset)
    ok = input_checks(g, LEFT, RIGHT, max_disp, meta.patch_size)
    gray_l = gray_nodes(g, LEFT, ok)  # (H, W), computed once the checks passed
    gray_r = gray_nodes(g, RIGHT, ok)
    axes = g.i64(0, 1)
    g.op("Concat", g.op("Unsqueeze", gray_l, axes), g.op("Unsqueeze", gray_r, axes), axis=0,
         name=_PREFIX + INPUT_NAME)  # (2, 1, H, W): one batch through the feature model
    head = Graph("matching", opset)
    if strips == "auto":
        strips = default_strips(max_disp)
    extra: list[Any] = []
    if postprocess == "none":
        strips = None
        disp = wta_nodes(head, _PREFIX + OUTPUT_NAME, max_disp, block)
    elif strips is None:
        disp = full_nodes(head, _PREFIX + OUTPUT_NAME, gray_l, gray_r, max_disp, block, config.spec, opset)
    else:
        if not isinstance(strips, Strips) or strips.rows < 1 or strips.overlap < 0 or strips.cells < 0:
            raise UserError(f"strips need at least 1 row and no negative overlap or cells, got {strips}")
        disp, valid, confidence = full_strip_nodes(head, _PREFIX + OUTPUT_NAME, gray_l, gray_r, max_disp, block,
                                                   config.spec, opset, strips)
        head.op("Identity", valid, name=VALID)
        head.op("Identity", confidence, name=CONFIDENCE)
        extra = [helper.make_tensor_value_info(VALID, TensorProto.UINT8, ["height", "width"]),
                 helper.make_tensor_value_info(CONFIDENCE, TensorProto.FLOAT, ["height", "width"])]
    head.op("Identity", disp, name=OUTPUT)
    nodes = g.nodes + list(feats.graph.node) + head.nodes
    image = ["height", "width", "channels"]
    out = helper.make_graph(
        nodes, "stereodeploy_matcher",
        [helper.make_tensor_value_info(LEFT, TensorProto.UINT8, image),
         helper.make_tensor_value_info(RIGHT, TensorProto.UINT8, image)],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["height", "width"])] + extra,
        initializer=list(feats.graph.initializer),
        value_info=list(feats.graph.value_info),
    )
    model = helper.make_model(out, opset_imports=list(features_model.opset_import),
                              producer_name="stereodeploy", ir_version=features_model.ir_version)
    props = {p.key: p.value for p in features_model.metadata_props}
    props.update({
        "stereodeploy.format": FORMAT,
        "stereodeploy.max_disp": str(max_disp),
        "stereodeploy.matcher.postprocess": postprocess,
        "stereodeploy.matcher.inputs": INPUT_CONTRACT,
        "stereodeploy.matcher.output": OUTPUT_CONTRACT[postprocess],
        "stereodeploy.matcher.block": str(block),
        "stereodeploy.features_format": meta.format,
    })
    if postprocess == "full":
        spec = config.spec
        props["stereodeploy.matcher.preset"] = preset
        props["stereodeploy.matcher.sgm"] = json.dumps(asdict(spec.sgm))
        props["stereodeploy.matcher.bilateral"] = json.dumps({"sigma": spec.blur_sigma, "threshold": spec.blur_t})
        props["stereodeploy.matcher.spec"] = json.dumps(spec.as_dict())  # every value, overrides included
    if strips is not None:
        props["stereodeploy.matcher.strips"] = json.dumps(
            {"rows": strips.rows, "overlap": strips.overlap, "cells": strips.cells})
        props["stereodeploy.matcher.extra_outputs"] = EXTRA_CONTRACT
    props.update(memory_props(max_disp, postprocess, strips))
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model, full_check=True)
    return model


def copy_model(model: Any) -> Any:
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


@dataclass
class MatcherReport:
    path: Path
    sidecar: Path
    max_disp: int
    postprocess: str
    preset: str
    checked_pixels: int  # pixels of the check pair
    differing_pixels: int  # pixels where the file and the engine disagree (WTA: ties; full: by more than 0.5 px)


CHECK_HEIGHT = 64  # rows of the synthetic check pair; its width is max_disp + 64
FULL_MISMATCH_LIMIT = 0.05  # share of check pixels where the full pipeline may differ from the engine by > 0.5 px:
# room for float rounding at SGM's near-ties and for the engine's own evolution; a broken graph differs everywhere


# Peak memory of the check (this file and the engine on the 64 x (max_disp + 64) check pair), measured from
# ru_maxrss with the shipped model: winner-take-all 476, 1448 and 2587 MiB at max disparity 1000, 4000 and 8000
# (the banded matrix product grows with the width: about 5.4 kB per check pixel); the full pipeline 477 and
# 1193 and 2368 MiB at 256, 512 and 768 (its (H, W, D) volumes: about 55 bytes per pixel per disparity). Rounded up.
CHECK_BASE_BYTES = 160 * 2**20  # onnxruntime's session and the engine's kernels
WTA_BYTES_PER_PIXEL = 5400
FULL_BYTES_PER_PIXEL = 1700
FULL_BYTES_PER_VOXEL = 60


def check_memory_bytes(max_disp: int, postprocess: str, height: int = CHECK_HEIGHT) -> int:
    """About how many bytes checking a matcher of ``max_disp`` takes, on the (height, max_disp + 64) check pair
    (see the constants above). Running the file on an image of that area needs about as much."""
    pixels = height * (max_disp + 64)
    if postprocess == "none":
        return CHECK_BASE_BYTES + WTA_BYTES_PER_PIXEL * pixels
    return CHECK_BASE_BYTES + FULL_BYTES_PER_PIXEL * pixels + FULL_BYTES_PER_VOXEL * pixels * max_disp


def refuse_oversized(max_disp: int, postprocess: str, available: int | None = None) -> None:
    """UserError, before any work, when checking the file would need more memory than is available."""
    from stereodeploy.util.memory import refuse_if_oversized

    what = "winner-take-all" if postprocess == "none" else "full-pipeline"
    refuse_if_oversized(check_memory_bytes(max_disp, postprocess),
                        f"checking a {what} matcher with max disparity {max_disp} (and running it on an image "
                        "wide enough for it)", "use a smaller --max-disp", available)


def _similarity(fl: np.ndarray, fr: np.ndarray, ys: np.ndarray, xs: np.ndarray, d: np.ndarray) -> np.ndarray:
    """<fL(y, x), fR(y, x - d)> per pixel; -inf where the right pixel ``x - d`` is outside the image."""
    xr = xs - d.astype(np.intp)
    inside = xr >= 0
    sim = np.full(len(xs), -np.inf, dtype=np.float64)
    sim[inside] = np.einsum("cn,cn->n", fl[:, ys[inside], xs[inside]], fr[:, ys[inside], xr[inside]])
    return sim


def check_pair(max_disp: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The synthetic uint8 RGB pair the export checks run on: CHECK_HEIGHT x (max_disp + 64)."""
    from stereodeploy.data.datasets import synthetic_pair

    width = max_disp + 64
    pair = synthetic_pair(height=CHECK_HEIGHT, width=width, max_disp=min(max_disp, width - 1), layers=2, seed=seed)
    def rgb(a: np.ndarray) -> np.ndarray:
        a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a

    return rgb(pair.left), rgb(pair.right)


def check_matcher(model: Any, features_path: Path | str, max_disp: int, postprocess: str = "none",
                  preset: str = DEFAULT_PRESET, seed: int = 0, overrides: dict[str, float] | None = None
                  ) -> tuple[int, int]:
    """Run ``model`` and the engine on a synthetic pair; return (pixels, differing pixels).

    Winner-take-all must agree except at ties (the two similarities within 1e-4); the full pipeline may differ
    by more than 0.5 px on at most 5 % of the pixels (:data:`FULL_MISMATCH_LIMIT`). UserError otherwise.
    """
    import onnxruntime as ort

    from stereodeploy.data.preprocess import to_gray
    from stereodeploy.engine.backends import OnnxBackend
    from stereodeploy.engine.matcher import StereoMatcher

    left, right = check_pair(max_disp, seed)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ours = session.run([OUTPUT], {LEFT: left, RIGHT: right})[0]
    backend = OnnxBackend(features_path)
    if postprocess == "none":
        from stereodeploy.engine.matching import wta_from_features

        fl, fr = backend.features_pair(to_gray(left), to_gray(right))
        engine = wta_from_features(fl, fr, max_disp)
        differ = np.argwhere(ours != engine)
        if len(differ):
            ys, xs = differ[:, 0], differ[:, 1]
            gap = np.abs(_similarity(fl, fr, ys, xs, ours[ys, xs]) - _similarity(fl, fr, ys, xs, engine[ys, xs]))
            if not np.all(gap <= 1e-4):  # inf - inf is nan: a pick outside the image is never a tie
                raise UserError(f"matcher check failed: it disagrees with the engine at {int(np.sum(~(gap <= 1e-4)))} "
                                "pixels that are not ties; nothing was written")
        return int(ours.size), len(differ)
    matcher = StereoMatcher(backend, MatchConfig.preset("full", max_disp, overrides, sgm_preset=preset))
    engine = matcher(left, right)
    far = ~(np.abs(ours - engine) <= 0.5)
    if far.mean() > FULL_MISMATCH_LIMIT:
        raise UserError(f"matcher check failed: the full pipeline differs from the engine's by more than 0.5 px at "
                        f"{100 * far.mean():.1f} % of the check pixels; nothing was written")
    return int(ours.size), int(far.sum())


def export_matcher(features: Path | str | None, out: Path | str, max_disp: int | None = None,
                   overwrite: bool = False, block: int = DEFAULT_BLOCK, check: bool = True,
                   postprocess: str = "full", preset: str = DEFAULT_PRESET,
                   overrides: dict[str, float] | None = None) -> MatcherReport:
    """Write the self-contained matcher built from the feature model file ``features`` (default: the shipped
    model) to ``out``, and its JSON sidecar beside it.

    ``max_disp`` defaults to the feature model's; the file is moved into place only after the check against the
    engine passed (winner-take-all for ``postprocess='none'``, the full pipeline with ``preset`` and
    ``overrides`` for ``'full'``).
    """
    import onnx

    from stereodeploy.contract import load_onnx, read_meta
    from stereodeploy.deploy.sidecar import sidecar_path
    from stereodeploy.engine.shipped import default_model_path

    # every option is checked before any work (the model's range stands in until it is known)
    MatchConfig.preset(postprocess, 1 if max_disp is None else max_disp, overrides, sgm_preset=preset)
    features = Path(features) if features is not None else default_model_path()
    out = Path(out)
    ensure_writable(out, overwrite)
    ensure_writable(sidecar_path(out), True)
    if features.is_dir():  # a training run: its features need exporting first (there is no native backend here)
        raise UserError(f"{features} is a folder (a training run?), not a feature model: export it first with "
                        f"`stereodeploy export {features} --out model.onnx`, then run "
                        f"`stereodeploy export-matcher model.onnx --out {out}`")
    proto = load_onnx(features, "feature model")
    meta = read_meta(proto, str(features))  # refuses a matcher file, and an older or newer format, in one line
    max_disp = max_disp or meta.max_disp
    if check:
        refuse_oversized(max_disp, postprocess)
    model = build_matcher(proto, max_disp, block, postprocess, preset, overrides)
    pixels = differ = 0
    if check:
        pixels, differ = check_matcher(model, features, max_disp, postprocess, preset, overrides=overrides)
    with atomic_write(out, overwrite=overwrite) as tmp:
        onnx.save_model(model, str(tmp))
    side = write_sidecar(model, out, overwrite=True)
    return MatcherReport(path=out, sidecar=side, max_disp=max_disp, postprocess=postprocess, preset=preset,
                         checked_pixels=pixels, differing_pixels=differ)


STRIP_ROWS = 48  # output rows per strip of the full pipeline, at least
STRIP_OVERLAP = 24  # rows of context above and below a strip: where SGM's vertical paths are cut
STRIP_BUDGET = 768 * 2**20  # bytes a strip's volumes and SGM may take before the image is cut into more strips
STRIP_BYTES = 30  # per matched pixel and disparity: both views' cost volumes and SGM's paths (see peak_model)


def default_strips(max_disp: int) -> Any:
    """The strips the full pipeline is exported with: as many rows as :data:`STRIP_BUDGET` holds at the image's
    width and ``max_disp`` (an image that fits is matched whole, as the engine matches it), at least
    :data:`STRIP_ROWS`, with :data:`STRIP_OVERLAP` rows of context."""
    from stereodeploy.deploy.onnx_pipeline import Strips

    return Strips(STRIP_ROWS, STRIP_OVERLAP, cells=STRIP_BUDGET // (STRIP_BYTES * max_disp))


class PeakModel(NamedTuple):
    """About what running the file on an (H, W) pair takes at its peak in onnxruntime's CPU kernels with the
    memory arena off: ``fixed + per_pixel H W`` plus, for the volumes, ``per_column W`` or, in strips,
    ``min(strip_per_pixel H W, max(strip, per_column W))`` (a strip holds at least ``per_column`` bytes per image
    column, grows up to ``strip`` bytes, and never past the whole image). The sidecar carries the five numbers as
    ``stereodeploy.matcher.peak_bytes_*``; the examples compute :meth:`need` from them."""

    fixed: int
    per_pixel: int
    per_column: int = 0
    strip: int = 0
    strip_per_pixel: int = 0

    def need(self, height: int, width: int) -> int:
        volumes = self.per_column * width
        if self.strip_per_pixel:
            volumes = min(self.strip_per_pixel * height * width, max(self.strip, volumes))
        return self.fixed + self.per_pixel * height * width + volumes

    @classmethod
    def from_props(cls, props: dict[str, str]) -> PeakModel | None:
        """The model in a file's metadata, None for a file without one."""
        key = "stereodeploy.matcher.peak_bytes_"
        if key + "fixed" not in props:
            return None
        return cls(*(int(props.get(key + name, 0)) for name in cls._fields))


def peak_model(max_disp: int, postprocess: str, strips: Any) -> PeakModel:
    """The :class:`PeakModel` of a file exported with these settings."""
    fixed = 200 * 2**20  # the runtime, the graph and the images
    if postprocess == "none":
        return PeakModel(fixed, 1700, 4 * DEFAULT_BLOCK * (DEFAULT_BLOCK + max_disp) * 4 // DEFAULT_BLOCK)
    if strips is None:
        return PeakModel(fixed, 48 * max_disp)
    # the features and the kept left volume of the whole image; one strip's volumes and SGM's paths (measured:
    # 1.68 GiB for 1242 x 375 at 228 disparities, strips of 48 + 2 x 24 rows, Python onnxruntime 1.32)
    per_cell = STRIP_BYTES * max_disp
    return PeakModel(fixed, 4 * max_disp + 700, per_cell * (strips.rows + 2 * strips.overlap),
                     per_cell * strips.cells, per_cell)


def peak_bytes(props: dict[str, str], height: int, width: int) -> int:
    """The peak for an (height, width) pair by the memory model in the file's metadata ``props``, as the examples
    compute it (0 for a file without one)."""
    model = PeakModel.from_props(props)
    return 0 if model is None else model.need(height, width)


WASM_BYTES = 4 * 2**30  # onnxruntime-web: 32-bit WebAssembly addresses 4 GiB


def memory_props(max_disp: int, postprocess: str, strips: Any) -> dict[str, str]:
    """The file's memory model (:func:`peak_model`) and the largest 4:3 and KITTI-shaped (3.3:1) images that fit
    onnxruntime-web's 4 GiB and a few native memory sizes, as metadata for clients to check an input before they
    run it."""
    model = peak_model(max_disp, postprocess, strips)
    limits = {"wasm": WASM_BYTES} | {f"native {gb} GiB": gb * 2**30 for gb in (2, 4, 8, 16)}

    def largest(budget: int, aspect: float) -> str:  # the need grows with the height at a fixed aspect
        low, high = 0, 1
        while model.need(high, int(aspect * high)) <= budget:
            low, high = high, 2 * high
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (mid, high) if model.need(mid, int(aspect * mid)) <= budget else (low, mid)
        return f"{int(aspect * low)}x{low}"

    sizes = {name: {"4:3": largest(budget, 4 / 3), "3.3:1": largest(budget, 3.3)} for name, budget in limits.items()}
    return {
        **{f"stereodeploy.matcher.peak_bytes_{name}": str(value) for name, value in model._asdict().items()},
        "stereodeploy.matcher.max_size": json.dumps(sizes),
    }
