"""A self-contained ONNX matcher: two raw images in, winner-take-all disparity out, in plain onnxruntime.

Contract of the file (``stereodeploy.format = matcher/1`` in ``metadata_props``)::

    inputs   left, right   float32 (H, W) grayscale in 0..255, one rectified pair of one size, W > max_disp
    output   disparity     float32 (H, W) winner-take-all disparity of the left image, in 0..max_disp-1

It runs without stereodeploy installed::

    import onnxruntime as ort
    session = ort.InferenceSession("matcher.onnx")
    disparity = session.run(["disparity"], {"left": left_gray, "right": right_gray})[0]

``max_disp`` is fixed at export time and stored as ``stereodeploy.max_disp``; the feature model's own metadata
(network, source framework, training data) is kept alongside.

How the graph computes it, fast in onnxruntime: both images go through the feature model as one batch; the
similarity ``<fL(x), fR(x - d)>`` of a block of ``block`` left columns against the ``block + max_disp - 1``
right columns it can match is one batched MatMul (rows of the image as the batch), and the band of disparities
``0 <= d < max_disp`` is cut out of that (block, block + max_disp - 1) product by a pad-and-reshape that turns its
diagonals into columns; ArgMax over the band gives each left pixel's disparity. A ``Loop`` runs over the
``ceil(W / block)`` blocks, so neither the cost volume nor shifted copies of the features are ever stored. Right
columns left of the image (``x - d < 0``) get an extra feature channel that makes their similarity -10, below
any real similarity of unit vectors, so as in :func:`stereodeploy.engine.matching.wta_from_features` they are
never picked; ties pick the smallest disparity.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stereodeploy.errors import UserError
from stereodeploy.io import atomic_write, ensure_writable

FORMAT = "matcher/2"
LEFT, RIGHT, OUTPUT = "left", "right", "disparity"
DEFAULT_BLOCK = 128  # left columns per MatMul: of 32..256, 128 ran the 1242x375, max_disp 228 loop fastest (1 thread)
MIN_OPSET = 13  # Slice/Pad/Squeeze/Unsqueeze with tensor inputs, ArgMax select_last_index, ReduceSum axes input
POSTPROCESS = ("none", "full")
_PREFIX = "features/"
INPUT_CONTRACT = ("left, right: uint8 (H, W, C), C = 1 gray, 2 gray+alpha, 3 RGB or 4 RGBA (alpha ignored), one "
                  "size, W > max_disp, H and W >= the network's patch; gray = 0.299 R + 0.587 G + 0.114 B")
OUTPUT_CONTRACT = {
    "none": "disparity: float32 (H, W) winner-take-all, integers 0..max_disp-1, smallest d on ties; dense",
    "full": "disparity: float32 (H, W) after SGM, left-right check and filling, subpixel, median and bilateral; "
            "dense, in 0..max_disp-1",
}


def full_settings(preset: str) -> Any:
    """The full pipeline's settings for SGM preset ``preset`` (a name of engine.sgm.SGM_PRESETS)."""
    from stereodeploy.engine.filters import BLUR_PRESETS
    from stereodeploy.engine.sgm import sgm_preset
    from stereodeploy.onnx_pipeline import FullSettings, Penalties
    from stereodeploy.patches import NORM_EPS

    params = sgm_preset(preset)
    sigma, threshold = BLUR_PRESETS[preset]
    return FullSettings(Penalties(params.penalties(), params.D), sigma, threshold, NORM_EPS)


def build_matcher(features_model: Any, max_disp: int, block: int = DEFAULT_BLOCK, postprocess: str = "none",
                  preset: str = "middlebury") -> Any:
    """The self-contained matcher (onnx.ModelProto) around a stereodeploy feature model (onnx.ModelProto):
    winner-take-all (``postprocess='none'``) or MC-CNN's whole post-processing with SGM preset ``preset``."""
    import onnx
    from onnx import TensorProto, compose, helper, version_converter

    from stereodeploy.export import INPUT_NAME, OUTPUT_NAME, read_meta
    from stereodeploy.onnx_pipeline import Graph, full_nodes, gray_nodes, input_checks, wta_nodes

    meta = read_meta(features_model)
    if max_disp < 1 or block < 1:
        raise UserError(f"max disparity and block must be at least 1, got {max_disp} and {block}")
    if postprocess not in POSTPROCESS:
        raise UserError(f"postprocess must be 'none' or 'full', not {postprocess!r}")
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
    feats = compose.add_prefix(features_model, _PREFIX)
    g = Graph("matcher", opset)
    ok = input_checks(g, LEFT, RIGHT, max_disp, meta.patch_size)
    gray_l = g.op("Mul", gray_nodes(g, LEFT), ok, label="left_gray")  # (H, W), after the checks passed
    gray_r = g.op("Mul", gray_nodes(g, RIGHT), ok, label="right_gray")
    axes = g.i64(0, 1)
    g.op("Concat", g.op("Unsqueeze", gray_l, axes), g.op("Unsqueeze", gray_r, axes), axis=0,
         name=_PREFIX + INPUT_NAME)  # (2, 1, H, W): one batch through the feature model
    head = Graph("matching", opset)
    if postprocess == "none":
        disp = wta_nodes(head, _PREFIX + OUTPUT_NAME, max_disp, block)
    else:
        disp = full_nodes(head, _PREFIX + OUTPUT_NAME, gray_l, gray_r, max_disp, block, full_settings(preset),
                          opset)
    head.op("Identity", disp, name=OUTPUT)
    nodes = g.nodes + list(feats.graph.node) + head.nodes
    image = ["height", "width", "channels"]
    out = helper.make_graph(
        nodes, "stereodeploy_matcher",
        [helper.make_tensor_value_info(LEFT, TensorProto.UINT8, image),
         helper.make_tensor_value_info(RIGHT, TensorProto.UINT8, image)],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["height", "width"])],
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
        settings = full_settings(preset)
        props["stereodeploy.matcher.preset"] = preset
        props["stereodeploy.matcher.sgm"] = json.dumps(asdict(sgm_params(preset)))
        props["stereodeploy.matcher.bilateral"] = json.dumps({"sigma": settings.blur_sigma,
                                                              "threshold": settings.blur_threshold})
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model, full_check=True)
    return model


def sgm_params(preset: str) -> Any:
    from stereodeploy.engine.sgm import sgm_preset

    return sgm_preset(preset)


@dataclass
class MatcherReport:
    path: Path
    max_disp: int
    checked_pixels: int  # pixels of the check pair
    differing_pixels: int  # pixels where the matcher and the engine disagree (all ties, or the export fails)


def check_matcher(model: Any, features_model: Any, max_disp: int, size: tuple[int, int] = (64, 0),
                  seed: int = 0) -> tuple[int, int]:
    """Run ``model`` and the engine's winner-take-all on a synthetic pair; return (pixels, differing pixels).

    Raises UserError if a differing pixel is not a tie (its two similarities differ by more than 1e-4).
    """
    import onnxruntime as ort

    from stereodeploy.datasets import synthetic_pair
    from stereodeploy.engine.matching import wta_from_features
    from stereodeploy.export import run_onnx
    from stereodeploy.io import to_gray

    height, width = size[0], size[1] or max_disp + 64
    pair = synthetic_pair(height=height, width=width, max_disp=min(max_disp, width - 1), layers=2, seed=seed)
    left, right = to_gray(pair.left), to_gray(pair.right)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ours = session.run([OUTPUT], {LEFT: left, RIGHT: right})[0]
    feats = run_onnx(features_model, np.stack([left, right])[:, None])
    engine = wta_from_features(feats[0], feats[1], max_disp)
    differ = np.argwhere(ours != engine)
    if len(differ):
        ys, xs = differ[:, 0], differ[:, 1]
        def sim(d: np.ndarray) -> np.ndarray:
            xr = xs - d.astype(np.intp)
            if np.any(xr < 0):
                return np.full(len(xs), -np.inf)
            return np.einsum("cn,cn->n", feats[0][:, ys, xs], feats[1][:, ys, xr])
        gap = np.abs(sim(ours[ys, xs]) - sim(engine[ys, xs]))
        if not np.all(gap <= 1e-4):
            raise UserError(f"matcher check failed: it disagrees with the engine at {int(np.sum(gap > 1e-4))} "
                            "pixels that are not ties; nothing was written")
    return int(ours.size), int(len(differ))


def export_matcher(features: Path | str, out: Path | str, max_disp: int | None = None, overwrite: bool = False,
                   block: int = DEFAULT_BLOCK, check: bool = True) -> MatcherReport:
    """Write the self-contained matcher built from the feature model file ``features`` to ``out``.

    ``max_disp`` defaults to the feature model's; the file is moved into place only after the check against
    the engine's winner-take-all passed.
    """
    import onnx

    from stereodeploy.export import load_onnx, read_meta

    features, out = Path(features), Path(out)
    ensure_writable(out, overwrite)
    proto = load_onnx(features, "feature model")
    max_disp = max_disp or read_meta(proto, str(features)).max_disp
    model = build_matcher(proto, max_disp, block)
    pixels = differ = 0
    if check:
        pixels, differ = check_matcher(model, proto, max_disp)
    with atomic_write(out, overwrite=overwrite) as tmp:
        onnx.save_model(model, str(tmp))
    return MatcherReport(path=out, max_disp=max_disp, checked_pixels=pixels, differing_pixels=differ)
