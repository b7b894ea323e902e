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

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stereodeploy.errors import UserError
from stereodeploy.io import atomic_write, ensure_writable

FORMAT = "matcher/1"
LEFT, RIGHT, OUTPUT = "left", "right", "disparity"
DEFAULT_BLOCK = 128  # left columns per MatMul: of 32..256, 128 ran the 1242x375, max_disp 228 loop fastest (1 thread)
MIN_OPSET = 13  # Slice/Pad/Squeeze/Unsqueeze with tensor inputs, ArgMax select_last_index
_OUTSIDE = -10.0  # similarity of a right column outside the image; real ones are in [-1, 1]
_PREFIX = "features/"


def _const(name: str, value: Any, dtype: Any = np.int64) -> Any:
    """A Constant node ``name`` holding ``value`` (a scalar gives a 0-d tensor)."""
    from onnx import helper, numpy_helper

    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value, dtype=dtype), name))


def _block_body(max_disp: int, block: int) -> Any:
    """Loop body: iteration ``b`` -> (H, block) int64 index ``k`` of the best disparity ``max_disp - 1 - k``."""
    from onnx import TensorProto, helper

    n = helper.make_node
    span = block + max_disp - 1  # right columns a block of left columns can match
    nodes = [
        _const("b_block", [block]), _const("b_span", [span]), _const("b_zero", [0]), _const("b_one", [1]),
        _const("b_two", [2]), _const("b_d", [max_disp]),
        _const("b_flat", [0, block * span]), _const("b_skew", [0, block, span + 1]),
        _const("b_pad", [0, 0, 0, block]),
        n("Unsqueeze", ["iter", "b_zero"], ["b_iter1"]),
        n("Mul", ["b_iter1", "b_block"], ["b_start"]),  # first left column of the block (padded coordinates)
        n("Add", ["b_start", "b_block"], ["b_lend"]),
        n("Add", ["b_start", "b_span"], ["b_rend"]),
        n("Slice", ["m_left", "b_start", "b_lend", "b_one"], ["b_lblk"]),  # (H, block, C+1)
        n("Slice", ["m_right", "b_start", "b_rend", "b_two"], ["b_rwin"]),  # (H, C+1, span)
        n("MatMul", ["b_lblk", "b_rwin"], ["b_sim"]),  # (H, block, span): sim[i, j] = <fL(x0+i), fR(x0+j-D+1)>
        # Row i of the flat (block * span) product, read with stride span + 1, starts at its diagonal element:
        # skew[i, k] = sim[i, i + k], disparity D - 1 - k.
        n("Reshape", ["b_sim", "b_flat"], ["b_simflat"]),
        n("Pad", ["b_simflat", "b_pad"], ["b_simpad"]),
        n("Reshape", ["b_simpad", "b_skew"], ["b_skewed"]),  # (H, block, span + 1)
        n("Slice", ["b_skewed", "b_zero", "b_d", "b_two"], ["b_band"]),  # (H, block, D)
        # the largest k on ties = the smallest disparity, as the engine's winner-take-all
        n("ArgMax", ["b_band"], ["k_block"], axis=2, keepdims=0, select_last_index=1),
        n("Identity", ["cond_in"], ["cond_out"]),
    ]
    return helper.make_graph(
        nodes, "matcher_block",
        [helper.make_tensor_value_info("iter", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("k_block", TensorProto.INT64, None)],
    )


def _head_nodes(features: str, max_disp: int, block: int) -> list[Any]:
    """Nodes from the (2, C, H, W) features of left and right to the (H, W) float32 ``disparity``."""
    from onnx import helper

    n = helper.make_node
    return [
        _const("m_i0", 0), _const("m_i1", 1), _const("m_zero", [0]), _const("m_one", [1]), _const("m_two", [2]),
        _const("m_three", [3]), _const("m_block", [block]), _const("m_blockm1", [block - 1]),
        _const("m_dm1", [max_disp - 1]), _const("m_dm1s", max_disp - 1), _const("m_zeros3", [0, 0, 0]),
        _const("m_1f", 1.0, np.float32), _const("m_outside", -_OUTSIDE, np.float32),
        _const("m_flat", [0, -1]), _const("m_true", True, np.bool_),
        n("Gather", [features, "m_i0"], ["m_fl"], axis=0),  # (C, H, W)
        n("Gather", [features, "m_i1"], ["m_fr"], axis=0),
        n("Shape", ["m_fl"], ["m_shape"]),
        n("Slice", ["m_shape", "m_one", "m_two"], ["m_h"]),  # [H]
        n("Slice", ["m_shape", "m_two", "m_three"], ["m_w"]),  # [W]
        n("Add", ["m_w", "m_blockm1"], ["m_wb"]),
        n("Div", ["m_wb", "m_block"], ["m_nb"]),  # [ceil(W / block)]
        n("Mul", ["m_nb", "m_block"], ["m_wp"]),
        n("Sub", ["m_wp", "m_w"], ["m_wpad"]),  # columns added on the right to fill the last block
        n("Concat", ["m_one", "m_h", "m_w"], ["m_chshape"], axis=0),
        helper.make_node("ConstantOfShape", ["m_chshape"], ["m_ones"],
                         value=helper.make_tensor("one", 1, [1], [1.0])),  # (1, H, W)
        # left: features plus a channel of ones, as (H, Wp, C+1)
        n("Concat", ["m_fl", "m_ones"], ["m_flx"], axis=0),
        n("Transpose", ["m_flx"], ["m_flt"], perm=[1, 2, 0]),
        n("Concat", ["m_zeros3", "m_zero", "m_wpad", "m_zero"], ["m_lpads"], axis=0),
        n("Pad", ["m_flt", "m_lpads"], ["m_left"]),
        # right: D-1 columns of padding on the left, features 0 and extra channel -10 there, as (H, C+1, Wr)
        n("Concat", ["m_zero", "m_zero", "m_dm1", "m_zero", "m_zero", "m_wpad"], ["m_rpads"], axis=0),
        n("Pad", ["m_fr", "m_rpads"], ["m_frp"]),
        n("Pad", ["m_ones", "m_rpads"], ["m_inside"]),  # 1 inside the image, 0 in the padding
        n("Sub", ["m_inside", "m_1f"], ["m_in1"]),
        n("Mul", ["m_in1", "m_outside"], ["m_extra"]),  # 0 inside, -10 outside
        n("Concat", ["m_frp", "m_extra"], ["m_frx"], axis=0),
        n("Transpose", ["m_frx"], ["m_right"], perm=[1, 0, 2]),
        n("Squeeze", ["m_nb", "m_zero"], ["m_trips"]),
        n("Loop", ["m_trips", "m_true"], ["m_ks"], body=_block_body(max_disp, block)),  # (nb, H, block)
        n("Transpose", ["m_ks"], ["m_kt"], perm=[1, 0, 2]),
        n("Reshape", ["m_kt", "m_flat"], ["m_kflat"]),  # (H, Wp)
        n("Slice", ["m_kflat", "m_zero", "m_w", "m_one"], ["m_k"]),  # (H, W)
        n("Sub", ["m_dm1s", "m_k"], ["m_disp"]),
        n("Cast", ["m_disp"], [OUTPUT], to=1),
    ]


def build_matcher(features_model: Any, max_disp: int, block: int = DEFAULT_BLOCK) -> Any:
    """The self-contained matcher (onnx.ModelProto) around a stereodeploy feature model (onnx.ModelProto)."""
    import onnx
    from onnx import TensorProto, compose, helper, version_converter

    from stereodeploy.export import INPUT_NAME, OUTPUT_NAME, read_meta

    meta = read_meta(features_model)
    if max_disp < 1 or block < 1:
        raise UserError(f"max disparity and block must be at least 1, got {max_disp} and {block}")
    graph = features_model.graph
    if [i.name for i in graph.input] != [INPUT_NAME] or [o.name for o in graph.output] != [OUTPUT_NAME]:
        raise UserError(f"the feature model does not have the stereodeploy contract (input '{INPUT_NAME}', output "
                        f"'{OUTPUT_NAME}'): export it with `stereodeploy export`")
    opset = next((o.version for o in features_model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        features_model = version_converter.convert_version(features_model, MIN_OPSET)
        opset = MIN_OPSET
    feats = compose.add_prefix(features_model, _PREFIX)
    n = helper.make_node
    stem = [
        _const("m_axes01", [0, 1]),
        n("Unsqueeze", [LEFT, "m_axes01"], ["m_left1"]),  # (1, 1, H, W)
        n("Unsqueeze", [RIGHT, "m_axes01"], ["m_right1"]),
        n("Concat", ["m_left1", "m_right1"], [_PREFIX + INPUT_NAME], axis=0),  # (2, 1, H, W), one batch
    ]
    nodes = stem + list(feats.graph.node) + _head_nodes(_PREFIX + OUTPUT_NAME, max_disp, block)
    image = ["height", "width"]
    out = helper.make_graph(
        nodes, "stereodeploy_matcher",
        [helper.make_tensor_value_info(LEFT, TensorProto.FLOAT, image),
         helper.make_tensor_value_info(RIGHT, TensorProto.FLOAT, image)],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, image)],
        initializer=list(feats.graph.initializer),
        value_info=list(feats.graph.value_info),
    )
    model = helper.make_model(out, opset_imports=list(features_model.opset_import),
                              producer_name="stereodeploy", ir_version=features_model.ir_version)
    props = {p.key: p.value for p in features_model.metadata_props}
    props.update({
        "stereodeploy.format": FORMAT,
        "stereodeploy.max_disp": str(max_disp),
        "stereodeploy.matcher.inputs": "left, right: float32 (H, W) grayscale 0..255, W > max_disp",
        "stereodeploy.matcher.output": "disparity: float32 (H, W) winner-take-all, smallest d on ties",
        "stereodeploy.matcher.block": str(block),
        "stereodeploy.features_format": meta.format,
    })
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model, full_check=True)
    return model


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
