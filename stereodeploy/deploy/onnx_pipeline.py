"""ONNX graphs of the matching pipeline, in standard operators only: image decoding to gray, the input checks,
the cost volume, and MC-CNN's post-processing (SGM, left-right check and filling, subpixel, median, bilateral).

:mod:`stereodeploy.deploy.export_matcher` assembles them around a feature model into one file. Every stage mirrors a
numba stage of :mod:`stereodeploy.engine` (named in each builder's docstring); the tests hold the two to the same
answers. Everything runs in onnxruntime's CPU kernels, which are also what onnxruntime-web's wasm backend runs.

Layout conventions inside the graph:

* ``B = 2`` "pairs" are matched at once: the left image as reference (b = 0), and the right image as reference
  seen in a mirror (b = 1): flipping both images left-right turns the right view's volume
  ``costR[d, y, x] = cost(R(x), L(x + d))`` into an ordinary left-reference volume of the flipped pair, so one
  set of nodes serves both and the right view's disparity is the mirror image of b = 1's.
* Disparities run in reverse, ``k = D - 1 - d`` (what the banded matrix product gives directly); ArgMin and ArgMax
  take the last index on ties, which is the smallest disparity, as the engine does.
* Cost volumes are ``(B, H, W, D)`` float32, ``1 - <fL, fR>``. A cell whose right pixel lies outside the image
  (``x - d < 0``) holds :data:`stereodeploy.engine.spec.OUT_OF_IMAGE`: what the engine's SGM aggregates for such a
  cell (it finds them by position, whatever its stored volume holds there), so both aggregate the same numbers and
  such a cell never wins where a real one exists. The subpixel fit, as the engine's, keeps off them by position.

Every number the engine also uses comes from :mod:`stereodeploy.engine.spec` (the tunable values arrive as a
:class:`~stereodeploy.engine.spec.PipelineSpec`, the sentinels and fixed conventions as its constants) or from
:mod:`stereodeploy.data.preprocess` (gray and normalisation); this module writes none of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from stereodeploy.data.preprocess import LUMA_601, NORM_EPS
from stereodeploy.engine.spec import (
    EXCLUDED,
    MEDIAN_RADIUS,
    NO_NEIGHBOUR,
    OUT_OF_IMAGE,
    SUBPIXEL_MIN_CURVATURE,
    PipelineSpec,
    SGMParams,
    gaussian_window,
    walk_steps,
)

INT64_MIN = np.iinfo(np.int64).min
_OUTSIDE_SIMILARITY = 1.0 - OUT_OF_IMAGE  # of a right column outside the image: its cost is OUT_OF_IMAGE


class Graph:
    """Collects named nodes: ``g.op("Add", a, b)`` returns the output name. Every node gets a unique name
    ``<scope>/<label>_<n>``, so that a runtime error points at the stage that raised it."""

    def __init__(self, scope: str, opset: int):
        self.scope = scope
        self.opset = opset
        self.nodes: list[Any] = []
        self._count = 0

    def _name(self, label: str) -> str:
        self._count += 1
        return f"{self.scope}/{label}_{self._count}"

    def op(self, op_type: str, *inputs: str, label: str | None = None, outputs: int = 1, name: str | None = None,
           **attrs: Any) -> Any:
        from onnx import helper

        node_name = name or self._name(label or op_type)
        outs = [node_name] if outputs == 1 else [f"{node_name}:{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=node_name, **attrs))
        return outs[0] if outputs == 1 else outs

    def const(self, value: Any, dtype: Any = np.int64, label: str = "const") -> str:
        from onnx import numpy_helper

        name = self._name(label)
        tensor = numpy_helper.from_array(np.asarray(value, dtype=dtype), name)
        from onnx import helper

        self.nodes.append(helper.make_node("Constant", [], [name], name=name, value=tensor))
        return name

    def reduce(self, op_type: str, x: str, axes: list[int] | None = None, keepdims: int = 1, **kw: Any) -> str:
        """Reduce* over ``axes`` (all if None), with the axes as input from the opset that made them one."""
        new_style = self.opset >= (13 if op_type == "ReduceSum" else 18)
        if axes is None:
            return self.op(op_type, x, keepdims=keepdims, **kw)
        if new_style:
            return self.op(op_type, x, self.i64(*axes), keepdims=keepdims, **kw)
        return self.op(op_type, x, axes=axes, keepdims=keepdims, **kw)

    def sub(self, scope: str) -> Graph:
        """A graph for a Loop or Scan body, of the same opset."""
        return Graph(scope, self.opset)

    # small conveniences
    def i64(self, *values: int) -> str:
        return self.const(list(values))

    def scalar(self, value: float, dtype: Any = np.float32) -> str:
        return self.const(value, dtype)

    def dim(self, shape: str, axis: int) -> str:
        """[shape[axis]] as a 1-element int64 tensor."""
        return self.op("Slice", shape, self.i64(axis), self.i64(axis + 1), label="dim")

    def flip(self, x: str, axis: int) -> str:
        """``x`` reversed along ``axis``."""
        return self.op("Slice", x, self.i64(-1), self.i64(INT64_MIN), self.i64(axis), self.i64(-1), label="flip")

    def cast(self, x: str, to: int) -> str:
        return self.op("Cast", x, to=to)


def value_info(name: str, elem: int, shape: list[Any] | None) -> Any:
    from onnx import helper

    return helper.make_tensor_value_info(name, elem, shape)


# ------------------------------------------------------------------------------------------- input and checks


def check(g: Graph, cond: str, message: str) -> str:
    """A (1,) float32 tensor of 1.0 that fails at run time, in a node named ``message``, unless the bool scalar
    ``cond`` holds. (ONNX has no assertion: the node reshapes one element to ``2 - cond`` elements.)"""
    one = g.const([1.0], np.float32)
    c = g.cast(cond, 7)  # int64
    size = g.op("Sub", g.const(2), c)
    shape = g.op("Unsqueeze", size, g.i64(0))
    return g.op("Reshape", one, shape, name=f"check: {message}")


def gray_nodes(g: Graph, image: str, checked: str) -> str:
    """uint8 (H, W, C) -> float32 (H, W) gray in 0..255: C = 1 (gray) or 2 (gray, alpha) as it is; C = 3 (RGB) or
    4 (RGBA) by BT.601 luma ``0.299 R + 0.587 G + 0.114 B``, alpha ignored (as :func:`stereodeploy.data.preprocess.to_gray`).
    ``checked`` (the (1,) output of :func:`input_checks`) scales the weights, so the checks run first."""
    channels = g.dim(g.op("Shape", image), 2)
    few = g.op("Less", channels, g.i64(3))  # [bool]
    weights = g.op("Where", few, g.const([1.0, 0.0, 0.0, 0.0], np.float32),
                   g.const(list(LUMA_601) + [0.0], np.float32))
    weights = g.op("Mul", g.op("Slice", weights, g.i64(0), channels, g.i64(0)), checked, label="luma_weights")
    return g.op("MatMul", g.cast(image, 1), weights, label="to_gray")


def input_checks(g: Graph, left: str, right: str, max_disp: int, patch: int) -> str:
    """Nodes that refuse what the engine refuses; returns a (1,) float32 1.0 that depends on all of them."""
    sl, sr = g.op("Shape", left), g.op("Shape", right)
    same = g.reduce("ReduceMin", g.cast(g.op("Equal", sl, sr), 7), keepdims=0)
    ok = check(g, g.op("Equal", same, g.const(1)), "left and right images must have the same height, width and "
               "channels")
    channels = g.dim(sl, 2)
    ok_c = check(g, g.op("Squeeze", g.op("LessOrEqual", channels, g.i64(4)), g.i64(0)),
                 "images must have 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA) channels")
    small = g.reduce("ReduceMin", g.op("Slice", sl, g.i64(0), g.i64(2), g.i64(0)), keepdims=0)
    ok_p = check(g, g.op("GreaterOrEqual", small, g.const(patch)),
                 f"images must be at least {patch}x{patch} pixels (the network's patch)")
    width = g.op("Squeeze", g.dim(sl, 1), g.i64(0))
    ok_w = check(g, g.op("Greater", width, g.const(max_disp)),
                 f"image width must be greater than the max disparity {max_disp} fixed in this file")
    return g.op("Mul", g.op("Mul", ok, ok_c), g.op("Mul", ok_p, ok_w), label="checks_passed")


# ------------------------------------------------------------------------------------------------ cost volume


def _band_body(max_disp: int, block: int, mode: str, opset: int) -> Any:
    """Scan body over blocks of ``block`` left columns. Outer scope: ``band/left`` (N, Wp, C+1) and
    ``band/right`` (N, C+1, Wp + D - 1). Output per block: (N, block) int64 argmax index k (``mode='wta'``) or
    the (N, block, D) cost ``1 - similarity`` (``mode='volume'``), both indexed by k = D - 1 - d."""
    from onnx import TensorProto, helper

    g = Graph(f"band_{mode}", opset)
    span = block + max_disp - 1  # right columns a block of left columns can meet
    start = g.op("Mul", g.op("Unsqueeze", "block_index", g.i64(0)), g.i64(block), label="first_column")
    lblk = g.op("Slice", "band/left", start, g.op("Add", start, g.i64(block)), g.i64(1))  # (N, block, C+1)
    rwin = g.op("Slice", "band/right", start, g.op("Add", start, g.i64(span)), g.i64(2))  # (N, C+1, span)
    sim = g.op("MatMul", lblk, rwin, label="similarity")  # (N, block, span): <fL(x0+i), fR(x0+j-D+1)>
    # Row i of the flat (block * span) product, read with stride span + 1, starts at its diagonal element:
    # skew[i, k] = sim[i, i + k], disparity D - 1 - k.
    flat = g.op("Reshape", sim, g.i64(0, block * span))
    padded = g.op("Pad", flat, g.i64(0, 0, 0, block))
    skew = g.op("Reshape", padded, g.i64(0, block, span + 1))
    band = g.op("Slice", skew, g.i64(0), g.i64(max_disp), g.i64(2), label="band")  # (N, block, D)
    if mode == "wta":
        out = g.op("ArgMax", band, axis=2, keepdims=0, select_last_index=1, label="wta")
        elem = TensorProto.INT64
    else:
        out = g.op("Max", g.op("Sub", g.scalar(1.0), band), g.scalar(0.0), label="cost")
        elem = TensorProto.FLOAT
    g.op("Identity", out, name="block_out")
    return helper.make_graph(g.nodes, f"band_{mode}_body", [value_info("block_index", TensorProto.INT64, [])],
                             [value_info("block_out", elem, None)])


def band_nodes(g: Graph, ref: str, oth: str, max_disp: int, block: int, mode: str) -> str:
    """Banded matching of (B, C, H, W) reference features against (B, C, H, W) features of the other image.

    ``mode='wta'``: (B, H, W) int64 k of the best similarity (winner-take-all, :func:`engine.matching.
    wta_from_features`); ``mode='volume'``: the (W, B, H, D) cost volume, column by column
    (:func:`engine.matching.cost_volume`, k-ordered, :data:`~stereodeploy.engine.spec.OUT_OF_IMAGE` where
    ``x - d < 0``).

    How: the similarity of ``block`` left columns against the ``block + D - 1`` right columns they can match is
    one batched MatMul (rows as the batch), and the band ``0 <= d < D`` is cut out of it by a pad-and-reshape that
    turns its diagonals into columns; a Scan runs over the blocks, so no shifted copy of the features is stored.
    Right columns left of the image get an extra channel that makes their cost OUT_OF_IMAGE.
    """
    from onnx import helper

    shape = g.op("Shape", ref)
    b, c, h, w = (g.dim(shape, i) for i in range(4))
    nb = g.op("Div", g.op("Add", w, g.i64(block - 1)), g.i64(block))  # [ceil(W / block)]
    wpad = g.op("Sub", g.op("Mul", nb, g.i64(block)), w)
    n = g.op("Mul", b, h)
    minus1 = g.i64(-1)
    # left: (N, W, C) plus a channel of ones, padded to Wp columns
    lt = g.op("Reshape", g.op("Transpose", ref, perm=[0, 2, 3, 1]), g.op("Concat", n, w, c, axis=0))
    ones = g.op("ConstantOfShape", g.op("Concat", n, w, g.i64(1), axis=0),
                value=helper.make_tensor("one", 1, [1], [1.0]))
    lx = g.op("Concat", lt, ones, axis=2)
    zero = g.i64(0)
    g.op("Pad", lx, g.op("Concat", zero, zero, zero, zero, wpad, zero, axis=0), name="band/left")
    # right: (N, C, W), D - 1 zero columns on the left, plus an extra channel: 1 - OUT_OF_IMAGE on padding, 0 inside
    rt = g.op("Reshape", g.op("Transpose", oth, perm=[0, 2, 1, 3]), g.op("Concat", n, c, w, axis=0))
    pads = g.op("Concat", zero, zero, g.i64(max_disp - 1), zero, zero, wpad, axis=0)
    rxp = g.op("Pad", rt, pads)
    ones_r = g.op("ConstantOfShape", g.op("Concat", n, g.i64(1), w, axis=0),
                  value=helper.make_tensor("one", 1, [1], [1.0]))
    extra = g.op("Mul", g.op("Sub", g.op("Pad", ones_r, pads), g.scalar(1.0)), g.scalar(-_OUTSIDE_SIMILARITY),
                 label="outside_channel")
    g.op("Concat", rxp, extra, axis=1, name="band/right")
    blocks = g.op("Range", g.const(0), g.op("Squeeze", nb, zero), g.const(1))
    per_block = g.op("Scan", blocks, body=_band_body(max_disp, block, mode, g.opset), num_scan_inputs=1,
                     label=f"{mode}_blocks")  # (nb, N, block[, D]), written in place block by block
    if mode == "wta":
        cols = g.op("Reshape", g.op("Transpose", per_block, perm=[1, 0, 2]), g.op("Concat", n, minus1, axis=0))
        cols = g.op("Slice", cols, zero, w, g.i64(1))  # (N, W)
        return g.op("Reshape", cols, g.op("Concat", b, h, w, axis=0))
    d = g.i64(max_disp)
    cols = g.op("Reshape", g.op("Transpose", per_block, perm=[0, 2, 1, 3]), g.op("Concat", minus1, b, h, d, axis=0))
    return g.op("Slice", cols, zero, w, zero, label="cost_volume")  # (W, B, H, D): column-major


# --------------------------------------------------------------------------------------------------------- SGM


def _masks(g: Graph, image: str, threshold: float) -> list[str]:
    zero, one, m1, two = g.i64(0), g.i64(1), g.i64(-1), g.i64(2)
    big = g.i64(np.iinfo(np.int64).max)
    thr = g.scalar(threshold)

    def small(a: str, b: str) -> str:
        return g.cast(g.op("Less", g.op("Abs", g.op("Sub", a, b)), thr), 1)

    dx = small(g.op("Slice", image, one, big, two), g.op("Slice", image, zero, m1, two))  # (B, H, W-1)
    dy = small(g.op("Slice", image, one, big, one), g.op("Slice", image, zero, m1, one))  # (B, H-1, W)
    return [g.op("Pad", dx, g.i64(0, 0, 1, 0, 0, 0), label="mask_lr"),
            g.op("Pad", dx, g.i64(0, 0, 0, 0, 0, 1), label="mask_rl"),
            g.op("Pad", dy, g.i64(0, 1, 0, 0, 0, 0), label="mask_tb"),
            g.op("Pad", dy, g.i64(0, 0, 0, 0, 1, 0), label="mask_bt")]


def _penalty_maps(g: Graph, lo1: str, table: np.ndarray, vertical: int) -> list[str]:
    """(B, H, W, 1) maps A1, E1, A2, E2 with ``P = A + lo2 * E = table[vertical, which, lo1 + lo2]``."""
    out = []
    for which in (0, 1):
        t0, t1, t2 = (float(v) for v in table[vertical, which])
        a = g.op("Add", g.scalar(t0), g.op("Mul", lo1, g.scalar(t1 - t0)))
        e = g.op("Add", g.scalar(t1 - t0), g.op("Mul", lo1, g.scalar(t2 - 2 * t1 + t0)))
        out += [g.op("Unsqueeze", a, g.i64(3)), g.op("Unsqueeze", e, g.i64(3))]
    return out


def _reduce_min(g: Graph, x: str, axis: int, opset: int) -> str:
    return g.reduce("ReduceMin", x, [axis])


def _path_step(g: Graph, prev: str, m: str, c: str, lane: str, maps: list[str], max_disp: int, opset: int
               ) -> tuple[str, str]:
    """One step of a path, for a whole row or column of pixels at once (:func:`engine.sgm._path_step`):
    ``new = C + min(prev, prev[d +- 1] + P1, min(prev) + P2) - min(prev)``; returns (new, min_d new)."""
    a1, e1, a2, e2 = maps
    p1 = g.op("Add", a1, g.op("Mul", lane, e1), label="P1")
    p2m = g.op("Add", g.op("Add", a2, m), g.op("Mul", lane, e2), label="P2_plus_min")  # a2 + m: one per pixel
    pp = g.op("Pad", prev, g.i64(0, 0, 0, 1, 0, 0, 0, 1), g.scalar(NO_NEIGHBOUR))
    below = g.op("Slice", pp, g.i64(0), g.i64(max_disp), g.i64(3))
    above = g.op("Slice", pp, g.i64(2), g.i64(max_disp + 2), g.i64(3))
    t = g.op("Add", g.op("Min", below, above), p1)
    t = g.op("Min", t, prev, p2m)
    new = g.op("Add", c, g.op("Sub", t, m), label="path_cost")
    return new, _reduce_min(g, new, 3, opset)


def _windows(g: Graph, rows: str, size: int) -> str:
    """(B, L) -> (B, L - size + 1, size) sliding windows ``out[b, x, k] = rows[b, x + k]``, by a skew rather than
    a Gather (which onnxruntime runs element by element): ``size`` copies of the row, flattened and re-read with a
    stride one longer than the row."""
    shape = g.op("Shape", rows)
    b, length = g.dim(shape, 0), g.dim(shape, 1)
    n = g.op("Sub", length, g.i64(size - 1))
    copies = g.op("Expand", g.op("Unsqueeze", rows, g.i64(1)), g.op("Concat", b, g.i64(size), length, axis=0))
    flat = g.op("Pad", g.op("Reshape", copies, g.op("Concat", b, g.i64(-1), axis=0)), g.i64(0, 0, 0, size))
    skew = g.op("Reshape", flat, g.op("Concat", b, g.i64(size), g.op("Add", length, g.i64(1)), axis=0))
    return g.op("Transpose", g.op("Slice", skew, g.i64(0), n, g.i64(2)), perm=[0, 2, 1], label="windows")


def _scan_body(name: str, g: Graph, states: list[str], outs: list[str]) -> Any:
    """A Scan body: inputs ``<name>/state_in<i>`` then the element ``<name>/i`` of the index sequence; outputs
    the new states then the per-step outputs."""
    from onnx import TensorProto, helper

    for i, s in enumerate(states):
        g.op("Identity", s, name=f"{name}/state_out{i}")
    for i, s in enumerate(outs):
        g.op("Identity", s, name=f"{name}/scan_out{i}")
    inputs = [value_info(f"{name}/state_in{i}", TensorProto.FLOAT, None) for i in range(len(states))]
    inputs.append(value_info(f"{name}/i", TensorProto.INT64, []))
    outputs = [value_info(f"{name}/state_out{i}", TensorProto.FLOAT, None) for i in range(len(states))]
    outputs += [value_info(f"{name}/scan_out{i}", TensorProto.FLOAT, None) for i in range(len(outs))]
    return helper.make_graph(g.nodes, name, inputs, outputs)


def sgm_nodes(g: Graph, cost: str, ref: str, oth: str, params: SGMParams, max_disp: int, opset: int
              ) -> tuple[str, str]:
    """Semi-global matching of the (W, B, H, D) k-ordered volume ``cost`` with MC-CNN's adaptive penalties
    (:func:`engine.sgm.aggregate`, left reference). ``ref`` and ``oth`` are the (B, H, W) normalised reference and
    other images. Returns the (H, W, B, D) mean of the four path costs and its (H, W, B) int64 argmin k (the
    largest k, i.e. the smallest disparity, on ties).

    Two Scans: one over columns runs left->right (column i) and right->left (column W-1-i) as one (2, B, H, D)
    tensor and writes each direction's column in place (right->left in reverse); one over rows does top->bottom
    and bottom->top as one (W, B, 2, D) tensor, adding the horizontal sum on the way. The first step of a path
    starts from a zero state, which gives ``L = C`` exactly. The per-pixel penalty maps of the second direction
    are stored mirrored, so that one Gather at ``i`` serves both. Live at the peak: the cost volume and three
    volumes of path costs."""
    from onnx import helper

    zero = g.i64(0)
    table = params.penalties()  # (2, 2, 3): [vertical, which, k]
    m_ref, m_oth = _masks(g, ref, params.D), _masks(g, oth, params.D)
    shape = g.op("Shape", cost)
    w, b, h = (g.dim(shape, i) for i in range(3))
    w_last = g.op("Sub", w, g.i64(1), name="sgm/w_last")
    h_last = g.op("Sub", h, g.i64(1), name="sgm/h_last")
    lane_pads = g.i64(0, 0, max_disp - 1, 0, 0, 0)
    d = g.i64(max_disp)
    maps_h, maps_v = [], []
    lr, rl = (_penalty_maps(g, m_ref[r], table, 0) for r in (0, 1))  # (B, H, W, 1) each
    for j in range(4):  # (W, 2, B, H, 1)
        cols = [g.op("Transpose", m, perm=[2, 0, 1, 3]) for m in (lr[j], g.flip(rl[j], 2))]
        maps_h.append(g.op("Concat", *(g.op("Unsqueeze", c, g.i64(1)) for c in cols), axis=1, label="maps_h"))
    tb, bt = (_penalty_maps(g, m_ref[r], table, 1) for r in (2, 3))
    for j in range(4):  # (H, W, B, 2, 1)
        rows = [g.op("Transpose", m, perm=[1, 2, 0, 3]) for m in (tb[j], g.flip(bt[j], 1))]
        maps_v.append(g.op("Concat", *(g.op("Unsqueeze", r, g.i64(3)) for r in rows), axis=3, label="maps_v"))
    # the other image's mask at column x - d, read as a window: column x + k of the mask padded by D - 1 on the left
    lanes_h = [g.op("Unsqueeze", g.op("Pad", m_oth[r], lane_pads), zero, label=f"lane{r}") for r in (0, 1)]
    lanes_v = g.op("Concat", g.op("Unsqueeze", g.op("Pad", m_oth[2], lane_pads), g.i64(2)),
                   g.op("Unsqueeze", g.flip(g.op("Pad", m_oth[3], lane_pads), 1), g.i64(2)), axis=2)  # (B, H, 2, L)

    def zeros(*dims: str) -> str:
        return g.op("ConstantOfShape", g.op("Concat", *dims, axis=0), value=helper.make_tensor("z", 1, [1], [0.0]))

    two = g.i64(2)
    state_h, state_v = zeros(two, b, h, d), zeros(w, b, two, d)
    m0h, m0v = _reduce_min(g, state_h, 3, opset), _reduce_min(g, state_v, 3, opset)

    # ---- horizontal: (2, B, H, D) = column i left->right, column W-1-i right->left
    name = "sgm_horizontal"
    body = g.sub(name)
    i = f"{name}/i"
    i1 = body.op("Unsqueeze", i, body.i64(0))
    j1 = body.op("Sub", w_last, i1)
    c = body.op("Gather", cost, body.op("Concat", i1, j1, axis=0), axis=0, label="cost_columns")  # (2, B, H, D)
    lane = body.op("Concat", body.op("Slice", lanes_h[0], i1, body.op("Add", i1, d), body.i64(3)),
                   body.op("Slice", lanes_h[1], j1, body.op("Add", j1, d), body.i64(3)), axis=0)
    mp = [body.op("Gather", mm, i, axis=0) for mm in maps_h]  # (2, B, H, 1)
    new, mn = _path_step(body, f"{name}/state_in0", f"{name}/state_in1", c, lane, mp, max_disp, opset)
    outs = [body.op("Slice", new, body.i64(k), body.i64(k + 1), zero) for k in (0, 1)]  # (1, B, H, D)
    columns = g.op("Range", g.const(0), g.op("Squeeze", w, zero), g.const(1))
    scan = g.op("Scan", state_h, m0h, columns, body=_scan_body(name, body, [new, mn], outs), num_scan_inputs=1,
                scan_output_directions=[0, 1], outputs=4, label="sgm_horizontal")
    one = g.i64(1)
    horizontal = g.op("Reshape", g.op("Add", scan[2], scan[3]), g.op("Concat", w, b, h, one, d, axis=0),
                      label="sgm_horizontal_sum")  # (W, B, H, 1, D)

    # ---- vertical: (W, B, 2, D) = row i top->bottom (plus the horizontal sum), row H-1-i bottom->top
    name = "sgm_vertical"
    body = g.sub(name)
    i = f"{name}/i"
    i1 = body.op("Unsqueeze", i, body.i64(0))
    c = body.op("Gather", cost, body.op("Concat", i1, body.op("Sub", h_last, i1), axis=0), axis=2,
                label="cost_rows")  # (W, B, 2, D)
    lane_rows = body.op("Gather", lanes_v, i, axis=1)  # (B, 2, L)
    flat_rows = body.op("Concat", body.i64(-1), body.dim(body.op("Shape", lane_rows), 2), axis=0)
    lane = body.op("Reshape", _windows(body, body.op("Reshape", lane_rows, flat_rows), max_disp),
                   body.op("Concat", b, two, w, d, axis=0))  # (B, 2, W, D)
    lane = body.op("Transpose", lane, perm=[2, 0, 1, 3])  # (W, B, 2, D)
    mp = [body.op("Gather", mm, i, axis=0) for mm in maps_v]  # (W, B, 2, 1)
    new, mn = _path_step(body, f"{name}/state_in0", f"{name}/state_in1", c, lane, mp, max_disp, opset)
    outs = [body.op("Add", body.op("Gather", horizontal, i, axis=2), body.op("Slice", new, zero, one, two),
                    label="sum_three"),
            body.op("Slice", new, one, two, two)]  # (W, B, 1, D)
    rows = g.op("Range", g.const(0), g.op("Squeeze", h, zero), g.const(1))
    scan = g.op("Scan", state_v, m0v, rows, body=_scan_body(name, body, [new, mn], outs), num_scan_inputs=1,
                scan_output_directions=[0, 1], outputs=4, label="sgm_vertical")
    total = g.op("Mul", g.op("Add", scan[2], scan[3]), g.scalar(0.25))  # (H, W, B, 1, D)
    total = g.op("Reshape", total, g.op("Concat", h, w, b, d, axis=0), label="sgm_mean")  # (H, W, B, D)
    k = g.op("ArgMin", total, axis=3, keepdims=0, select_last_index=1, label="sgm_argmin")  # (H, W, B)
    return total, k


# ---------------------------------------------------------------------------------- left-right check and fill


def _grid(g: Graph, h: str, w: str) -> tuple[str, str]:
    """int64 column index (1, W) and row index (H, 1)."""
    x = g.op("Unsqueeze", g.op("Range", g.const(0), g.op("Squeeze", w, g.i64(0)), g.const(1)), g.i64(0))
    y = g.op("Unsqueeze", g.op("Range", g.const(0), g.op("Squeeze", h, g.i64(0)), g.const(1)), g.i64(1))
    return x, y


def lr_check_fill(g: Graph, dl: str, dr: str, max_disp: int, spec: PipelineSpec) -> str:
    """MC-CNN's left-right check and interpolation (:func:`engine.filters.left_right_check` with
    ``spec.lr_threshold``, then :func:`engine.filters.fill_invalid`) of the (H, W) float32 integer-valued
    disparities of the left and the right image; returns the filled left map."""
    return lr_check_fill_match(g, dl, dr, max_disp, spec)[0]


def lr_check_fill_match(g: Graph, dl: str, dr: str, max_disp: int, spec: PipelineSpec) -> tuple[str, str]:
    """:func:`lr_check_fill`, and the (H, W) bool map of the pixels that passed the check (kept, not filled)."""
    zero = g.i64(0)
    shape = g.op("Shape", dl)
    h, w = g.dim(shape, 0), g.dim(shape, 1)
    x, y = _grid(g, h, w)
    wl = g.op("Squeeze", w, zero)
    dli, dri = g.cast(dl, 7), g.cast(dr, 7)
    # match: |dL(x) - dR(x - dL(x))| < threshold
    xr = g.op("Sub", x, dli)
    drx = g.op("GatherElements", dr, g.op("Max", xr, g.const(0)), axis=1)
    match = g.op("And", g.op("GreaterOrEqual", xr, g.const(0)),
                 g.op("Less", g.op("Abs", g.op("Sub", dl, drx)), g.scalar(spec.lr_threshold)), label="lr_match")
    # reach: left pixels xr + d' that some right pixel xr is consistent with, d' in dR(xr) + the spec's offsets
    offsets = spec.reach_offsets()
    targets = []
    for e in offsets:
        dd = g.op("Add", dri, g.const(e))
        tgt = g.op("Add", x, dd)
        ok = g.op("And", g.op("And", g.op("GreaterOrEqual", dd, g.const(0)), g.op("Less", dd, g.const(max_disp))),
                  g.op("Less", tgt, wl))
        targets.append(g.op("Where", ok, tgt, wl))
    idx = g.op("Concat", *targets, axis=1)  # (H, len(offsets) W), W = nowhere
    hw1 = g.op("Concat", h, g.op("Add", w, g.i64(1)), axis=0)
    from onnx import helper

    zeros = g.op("ConstantOfShape", hw1, value=helper.make_tensor("zero", 1, [1], [0.0]))
    ones = g.op("Add", g.op("Mul", g.cast(idx, 1), g.scalar(0.0)), g.scalar(1.0))
    reach = g.op("Slice", g.op("ScatterElements", zeros, idx, ones, axis=1), zero, w, g.i64(1), label="lr_reach")
    reach = g.op("Greater", reach, g.scalar(0.5))
    nomatch = g.op("Not", match)
    occlusion = g.op("And", nomatch, g.op("Not", reach), label="occlusion")
    mismatch = g.op("And", nomatch, reach, label="mismatch")

    # occlusions: the nearest match to the left, else to the right (by the k-th match of the row)
    mi = g.cast(match, 7)
    count = g.op("CumSum", mi, g.const(1), label="matches_so_far")  # inclusive
    slot = g.op("Where", match, g.op("Sub", count, g.const(1)), wl)
    xs = g.op("Add", g.op("Mul", slot, g.const(0)), x)  # (H, W) column index
    zeros_i = g.op("ConstantOfShape", hw1, value=helper.make_tensor("zero", 7, [1], [0]))
    table = g.op("ScatterElements", zeros_i, slot, xs, axis=1, label="match_columns")  # k-th match -> column
    left_col = g.op("GatherElements", table, g.op("Max", g.op("Sub", count, g.const(1)), g.const(0)), axis=1)
    before = g.op("Sub", count, mi)  # matches strictly left of x
    total = g.op("Slice", count, g.i64(-1), g.i64(np.iinfo(np.int64).max), g.i64(1))  # (H, 1)
    right_col = g.op("GatherElements", table, g.op("Min", before, g.op("Sub", w, g.i64(1))), axis=1)
    from_left = g.op("GatherElements", dl, left_col, axis=1)
    from_right = g.op("GatherElements", dl, right_col, axis=1)
    value = g.op("Where", g.op("Greater", count, g.const(0)), from_left,
                 g.op("Where", g.op("Less", before, total), from_right, dl))
    filled = g.op("Where", occlusion, value, dl, label="occlusions_filled")
    return _fill_mismatches(g, filled, mismatch, h, w, x, y), match


def _fill_mismatches(g: Graph, vals: str, mismatch: str, h: str, w: str, x: str, y: str) -> str:
    """Mismatches take the median of the first non-mismatch value along 16 directions (upper middle of an even
    count; kept if none), as :func:`engine.filters.fill_invalid`. The walks are found by pointer jumping: node
    (direction, phase, pixel) points at itself outside a mismatch, else at (1 - phase, pixel + step[phase]) or
    at a sink outside the image; pointing every node at its pointer's pointer until nothing changes halves the
    remaining walk each time."""
    from onnx import TensorProto, helper

    steps = walk_steps()  # the engine's walks, so both fill alike
    n_dir = steps.shape[0]
    hw = g.op("Mul", h, w)
    sink = g.op("Mul", hw, g.i64(2))
    sx = g.const(steps[:, :, 0].reshape(n_dir, 2, 1, 1))
    sy = g.const(steps[:, :, 1].reshape(n_dir, 2, 1, 1))
    phase = g.const(np.arange(2).reshape(1, 2, 1, 1))
    nx, ny = g.op("Add", x, sx), g.op("Add", y, sy)  # (16, 2, H, W)
    inside = g.op("And", g.op("And", g.op("GreaterOrEqual", nx, g.const(0)), g.op("Less", nx, w)),
                  g.op("And", g.op("GreaterOrEqual", ny, g.const(0)), g.op("Less", ny, h)))
    pixel = g.op("Add", g.op("Mul", y, w), x)  # (H, W)
    target = g.op("Add", g.op("Mul", g.op("Sub", g.const(1), phase), hw), g.op("Add", g.op("Mul", ny, w), nx))
    nxt = g.op("Where", inside, target, sink)
    here = g.op("Add", g.op("Mul", phase, hw), pixel)
    ptr = g.op("Where", mismatch, nxt, here)  # (16, 2, H, W)
    ptr = g.op("Reshape", ptr, g.i64(n_dir, -1))
    ptr = g.cast(g.op("Concat", ptr, g.op("Expand", g.op("Reshape", sink, g.i64(1, 1)), g.i64(n_dir, 1)), axis=1),
                 TensorProto.INT32)  # (16, 2HW + 1)

    name = "mismatch_walk"
    body = g.sub(name)
    cur = f"{name}/state_in0"
    jumped = body.op("GatherElements", cur, cur, axis=1, label="pointer_jump")
    changed = body.op("Not", body.op("Equal", body.reduce("ReduceMin", body.cast(body.op("Equal", jumped, cur), 7), keepdims=0), body.const(1)))
    body.op("Identity", changed, name=f"{name}/cond_out")
    body.op("Identity", jumped, name=f"{name}/state_out0")
    graph = helper.make_graph(
        body.nodes, name,
        [value_info(f"{name}/iter", TensorProto.INT64, []), value_info("cond_in", TensorProto.BOOL, []),
         value_info(f"{name}/state_in0", TensorProto.INT32, None)],
        [value_info(f"{name}/cond_out", TensorProto.BOOL, []), value_info(f"{name}/state_out0", TensorProto.INT32,
                                                                          None)])
    ends = g.op("Loop", g.const(64), g.const(True, np.bool_), ptr, body=graph, label="mismatch_walks")
    starts = g.op("Slice", ends, g.i64(0), hw, g.i64(1))  # (16, HW): phase 0
    flat = g.op("Reshape", vals, g.i64(-1))
    nan = g.const([np.inf], np.float32)
    found = g.op("Gather", g.op("Concat", flat, flat, nan, axis=0), g.cast(starts, 7), axis=0)  # (16, HW)
    count = g.reduce("ReduceSum", g.cast(g.op("Less", found, g.scalar(np.inf)), 7), [0])
    ordered = g.op("TopK", found, g.i64(n_dir), axis=0, largest=0, sorted=1, outputs=2, label="walk_sort")[0]
    median = g.op("GatherElements", ordered, g.op("Div", count, g.const(2)), axis=0)  # (1, HW)
    median = g.op("Where", g.op("Greater", count, g.const(0)), median, g.op("Reshape", flat, g.i64(1, -1)))
    median = g.op("Reshape", median, g.op("Shape", vals))
    return g.op("Where", mismatch, median, vals, label="mismatches_filled")


# ---------------------------------------------------------------------------------------- subpixel and filters


def subpixel_nodes(g: Graph, disp: str, volume: str, max_disp: int) -> str:
    """Parabola through the aggregated costs at d - 1, d, d + 1 (:func:`engine.filters.parabola_refine` on the
    SGM volume): ``volume`` is the (H, W, D) k-ordered left volume, ``disp`` (H, W) integer-valued float."""
    shape = g.op("Shape", disp)
    _, w = g.dim(shape, 0), g.dim(shape, 1)
    x, _ = _grid(g, g.dim(shape, 0), w)
    di = g.cast(disp, 7)
    k = g.op("Sub", g.const(max_disp - 1), g.op("Min", g.op("Max", di, g.const(1)), g.const(max(max_disp - 2, 0))))
    idx = g.op("Unsqueeze", k, g.i64(2))  # (H, W, 1)
    lo, hi = g.const(0), g.const(max_disp - 1)
    cm = g.op("GatherElements", volume, g.op("Min", g.op("Add", idx, g.const(1)), hi), axis=2)  # d - 1
    cz = g.op("GatherElements", volume, idx, axis=2)
    cp = g.op("GatherElements", volume, g.op("Max", g.op("Sub", idx, g.const(1)), lo), axis=2)  # d + 1
    cm, cz, cp = (g.op("Squeeze", t, g.i64(2)) for t in (cm, cz, cp))
    usable = g.op("And", g.op("And", g.op("GreaterOrEqual", di, g.const(1)), g.op("LessOrEqual", di,
                                                                               g.const(max_disp - 2))),
                  g.op("GreaterOrEqual", g.op("Sub", x, g.op("Add", di, g.const(1))), g.const(0)))  # by position
    denom = g.op("Mul", g.scalar(2.0), g.op("Sub", g.op("Add", cp, cm), g.op("Mul", g.scalar(2.0), cz)))
    ok = g.op("And", usable, g.op("Greater", denom, g.scalar(SUBPIXEL_MIN_CURVATURE)))
    step = g.op("Div", g.op("Sub", cp, cm), g.op("Where", ok, denom, g.scalar(1.0)))
    step = g.op("Where", ok, g.op("Clip", step, g.scalar(-1.0), g.scalar(1.0)), g.scalar(0.0))
    return g.op("Sub", disp, step, label="subpixel")


def median_nodes(g: Graph, disp: str, radius: int = MEDIAN_RADIUS) -> str:
    """(2 radius + 1)^2 median of a dense (H, W) map, window clipped at the border, the upper middle of an even
    count (:func:`engine.filters.median5`)."""
    size = 2 * radius + 1
    shape = g.op("Shape", disp)
    h, w = g.dim(shape, 0), g.dim(shape, 1)
    padded = g.op("Pad", disp, g.i64(radius, radius, radius, radius), g.scalar(NO_NEIGHBOUR))
    shifted = []
    for dy in range(size):
        rows = g.op("Slice", padded, g.i64(dy), g.op("Add", h, g.i64(dy)), g.i64(0))
        for dx in range(size):
            win = g.op("Slice", rows, g.i64(dx), g.op("Add", w, g.i64(dx)), g.i64(1))
            shifted.append(g.op("Unsqueeze", win, g.i64(0)))
    stack = g.op("Concat", *shifted, axis=0)  # (25, H, W)
    ordered = g.op("TopK", stack, g.i64(size * size), axis=0, largest=0, sorted=1, outputs=2,
                   label="median_sort")[0]
    x, y = _grid(g, h, w)

    def span(i: str, n: str) -> str:  # neighbours of i inside [0, n) within the radius
        hi = g.op("Min", g.op("Add", i, g.const(radius)), g.op("Sub", n, g.i64(1)))
        return g.op("Add", g.op("Sub", hi, g.op("Max", g.op("Sub", i, g.const(radius)), g.const(0))), g.const(1))

    count = g.op("Mul", span(y, h), span(x, w))  # (H, W)
    pick = g.op("Unsqueeze", g.op("Div", count, g.const(2)), g.i64(0))
    return g.op("Squeeze", g.op("GatherElements", ordered, pick, axis=0), g.i64(0), label="median")


def bilateral_nodes(g: Graph, disp: str, sigma: float, threshold: float) -> str:
    """MC-CNN's final filter (:func:`engine.filters.bilateral` gated on the disparity itself): the Gaussian-weighted
    mean over a ``ceil(3 sigma)`` window of the neighbours within ``threshold`` of the centre. A Loop over the
    window's rows; each row's columns at once."""
    from onnx import TensorProto, helper

    kernel = gaussian_window(sigma)  # (size, size), as the engine's
    size = kernel.shape[0]
    r = size // 2
    shape = g.op("Shape", disp)
    h, w = g.dim(shape, 0), g.dim(shape, 1)
    padded = g.op("Pad", disp, g.i64(r, r, r, r), g.scalar(EXCLUDED), label="bilateral_pad")  # outside: excluded
    weights = g.const(kernel.reshape(size, 1, size), np.float32)  # row dy: (1, size)
    centre = g.op("Unsqueeze", disp, g.i64(1))  # (H, 1, W)
    zeros = g.op("ConstantOfShape", g.op("Concat", h, g.i64(1), w, axis=0),
                 value=helper.make_tensor("zero", 1, [1], [0.0]))  # (H, 1, W)

    name = "bilateral_rows"
    body = g.sub(name)
    dy = f"{name}/iter"
    dy1 = body.op("Unsqueeze", dy, body.i64(0))
    rows = body.op("Slice", padded, dy1, body.op("Add", dy1, h), body.i64(0))  # (H, W + 2r)
    cols = [body.op("Unsqueeze", body.op("Slice", rows, body.i64(dx), body.op("Add", w, body.i64(dx)), body.i64(1)),
                    body.i64(1)) for dx in range(size)]
    win = body.op("Concat", *cols, axis=1, label="window")  # (H, size, W)
    keep = body.cast(body.op("Less", body.op("Abs", body.op("Sub", win, centre)), body.scalar(threshold)), 1)
    wt = body.op("Gather", weights, dy, axis=0)  # (1, size)
    num = body.op("Add", f"{name}/state_in0", body.op("MatMul", wt, body.op("Mul", keep, win)))  # (H, 1, W)
    den = body.op("Add", f"{name}/state_in1", body.op("MatMul", wt, keep))
    body.op("Identity", "cond_in", name=f"{name}/cond_out")
    body.op("Identity", num, name=f"{name}/state_out0")
    body.op("Identity", den, name=f"{name}/state_out1")
    graph = helper.make_graph(
        body.nodes, name,
        [value_info(f"{name}/iter", TensorProto.INT64, []), value_info("cond_in", TensorProto.BOOL, []),
         value_info(f"{name}/state_in0", TensorProto.FLOAT, None),
         value_info(f"{name}/state_in1", TensorProto.FLOAT, None)],
        [value_info(f"{name}/cond_out", TensorProto.BOOL, []),
         value_info(f"{name}/state_out0", TensorProto.FLOAT, None),
         value_info(f"{name}/state_out1", TensorProto.FLOAT, None)])
    num, den = g.op("Loop", g.const(size), g.const(True, np.bool_), zeros, zeros, body=graph, outputs=2,
                    label="bilateral")
    return g.op("Squeeze", g.op("Div", num, den), g.i64(1), label="bilateral_mean")


# ------------------------------------------------------------------------------------------------ assembled


def _normalise(g: Graph, gray: str) -> str:
    """(x - mean) / sqrt(var + NORM_EPS) with the population variance
    (:func:`stereodeploy.data.preprocess.normalize`)."""
    mean = g.reduce("ReduceMean", gray, [0, 1])
    centred = g.op("Sub", gray, mean)
    var = g.reduce("ReduceMean", g.op("Mul", centred, centred), [0, 1])
    return g.op("Div", centred, g.op("Sqrt", g.op("Add", var, g.scalar(NORM_EPS))), label="normalised")


def wta_nodes(g: Graph, features: str, max_disp: int, block: int) -> str:
    """(2, C, H, W) features of left and right -> (H, W) float32 winner-take-all disparity."""
    fl = g.op("Slice", features, g.i64(0), g.i64(1), g.i64(0))
    fr = g.op("Slice", features, g.i64(1), g.i64(2), g.i64(0))
    k = g.op("Squeeze", band_nodes(g, fl, fr, max_disp, block, "wta"), g.i64(0))
    return g.cast(g.op("Sub", g.const(max_disp - 1), k), 1)


def full_nodes(g: Graph, features: str, gray_l: str, gray_r: str, max_disp: int, block: int,
               spec: PipelineSpec, opset: int) -> str:
    """(2, C, H, W) features and the (H, W) grays of left and right -> (H, W) float32 disparity after MC-CNN's
    whole post-processing, the stages of :func:`stereodeploy.engine.postprocess.postprocess` with every flag on,
    with the values of ``spec``."""
    fl = g.op("Slice", features, g.i64(0), g.i64(1), g.i64(0))
    fr = g.op("Slice", features, g.i64(1), g.i64(2), g.i64(0))
    ref = g.op("Concat", fl, g.flip(fr, 3), axis=0, label="reference_features")  # left, mirrored right
    oth = g.op("Concat", fr, g.flip(fl, 3), axis=0, label="other_features")
    cost = band_nodes(g, ref, oth, max_disp, block, "volume")  # (W, 2, H, D)
    nl, nr = _normalise(g, gray_l), _normalise(g, gray_r)
    axis0 = g.i64(0)
    ref_n = g.op("Concat", g.op("Unsqueeze", nl, axis0), g.op("Unsqueeze", g.flip(nr, 1), axis0), axis=0)
    oth_n = g.op("Concat", g.op("Unsqueeze", nr, axis0), g.op("Unsqueeze", g.flip(nl, 1), axis0), axis=0)
    total, k = sgm_nodes(g, cost, ref_n, oth_n, spec.sgm, max_disp, opset)  # (H, W, 2, D), (H, W, 2)
    disp = g.cast(g.op("Sub", g.const(max_disp - 1), k), 1)
    dl = g.op("Gather", disp, g.const(0), axis=2, label="sgm_left")
    dr = g.flip(g.op("Gather", disp, g.const(1), axis=2, label="sgm_right_mirrored"), 1)
    filled = lr_check_fill(g, dl, dr, max_disp, spec)
    volume = g.op("Gather", total, g.const(0), axis=2, label="sgm_left_volume")  # (H, W, D)
    refined = subpixel_nodes(g, filled, volume, max_disp)
    smoothed = median_nodes(g, refined)
    return bilateral_nodes(g, smoothed, spec.blur_sigma, spec.blur_t)


# ------------------------------------------------------------------------------- in strips, with validity and confidence


@dataclass(frozen=True)
class Strips:
    """Horizontal strips of ``rows`` output rows each, matched with ``overlap`` rows of context above and below.

    The cost volume and SGM exist for one strip at a time, so the peak memory grows with the image's width, not
    its area. Horizontal paths are whole; vertical paths start ``overlap`` rows before the strip's first row (and
    end as far after its last), where the full image would carry them in from its edge: SGM forgets its past
    within a few dozen rows, which :func:`stereodeploy.deploy.export_matcher.check_matcher` and the tests hold
    against the engine. With ``cells`` set, an image of at most ``cells`` pixels is matched whole, exactly as the
    engine does, and a larger one is cut into strips of the most rows whose matched rows (context included) times
    the width stay within ``cells``, never fewer than ``rows``."""

    rows: int
    overlap: int
    cells: int = 0  # the most pixels a strip may match (context rows included) before the image is cut further

    def rows_for(self, height: int, width: int) -> int:
        """Output rows per strip for an (height, width) image, as the graph computes them: the whole height where
        the image's cells fit ``cells`` (one strip has no context rows), else as many as fit with their context."""
        if height * width <= self.cells:
            return height
        return min(height, max(self.rows, self.cells // width - 2 * self.overlap))


def confidence_nodes(g: Graph, volume: str, k: str, max_disp: int) -> str:
    """(h, W) float32 confidence of the winners ``k`` ((h, W) int64, k-ordered) of the (h, W, D) k-ordered
    aggregated volume, as :func:`stereodeploy.engine.postprocess.confidence_ratio`: ``1 - C(d1) / C2`` with
    ``C2`` the least cost of a disparity at least 2 from the winner whose right pixel is inside the image
    (``d <= x``); 0 where there is no such rival or it costs 0."""
    shape = g.op("Shape", volume)
    w = g.dim(shape, 1)
    k1 = g.op("Unsqueeze", k, g.i64(2))  # (h, W, 1)
    c1 = g.op("GatherElements", volume, k1, axis=2)
    kk = g.const(np.arange(max_disp).reshape(1, 1, max_disp))
    x = g.op("Reshape", g.op("Range", g.const(0), g.op("Squeeze", w, g.i64(0)), g.const(1)), g.i64(1, -1, 1))
    rival = g.op("And", g.op("GreaterOrEqual", g.op("Abs", g.op("Sub", kk, k1)), g.const(2)),
                 g.op("GreaterOrEqual", kk, g.op("Sub", g.const(max_disp - 1), x)), label="rivals")
    c2 = g.reduce("ReduceMin", g.op("Where", rival, volume, g.scalar(np.inf)), [2])  # (h, W, 1)
    ok = g.op("And", g.op("Less", c2, g.scalar(np.inf)), g.op("Greater", c2, g.scalar(0.0)))
    ratio = g.op("Max", g.op("Sub", g.scalar(1.0), g.op("Div", c1, g.op("Where", ok, c2, g.scalar(1.0)))),
                 g.scalar(0.0))
    return g.op("Squeeze", g.op("Where", ok, ratio, g.scalar(0.0)), g.i64(2), label="confidence_ratio")


def full_strip_nodes(g: Graph, features: str, gray_l: str, gray_r: str, max_disp: int, block: int,
                     spec: PipelineSpec, opset: int, strips: Strips) -> tuple[str, str, str]:
    """:func:`full_nodes` in horizontal strips (:class:`Strips`): the cost volumes and SGM of one strip at a time
    in a Scan, which keeps of each strip the winners of both views, the left view's aggregated costs (for the
    subpixel step after filling) and the winners' confidence; the left-right check, filling and filters then run
    on the whole image as in :func:`full_nodes`. Returns the (H, W) float32 disparity, the (H, W) uint8 validity
    (1 where the winner passed the left-right check, 0 where it was filled) and the (H, W) float32 confidence
    (:func:`confidence_nodes`, 0 where not valid).

    Strip s covers output rows ``[start, start + rows)`` (``rows`` by :meth:`Strips.rows_for`),
    ``start = min(s rows, H - rows)`` (the last strip is moved up to end at the image's edge; images lower than
    ``rows`` are one strip), and is matched on rows
    ``[start - overlap, start + rows + overlap)`` cut to the image. The features and the normalised images are
    computed once for the whole image, as the feature model normalises each image as a whole."""
    from onnx import TensorProto, helper

    zero, one = g.i64(0), g.i64(1)
    shape = g.op("Shape", gray_l)
    h, w = g.dim(shape, 0), g.dim(shape, 1)
    tall = g.op("Sub", g.op("Div", g.i64(strips.cells), w), g.i64(2 * strips.overlap))  # the budget's rows
    fits = g.op("Less", g.op("Mul", h, w), g.i64(strips.cells + 1))  # the whole image within the budget
    rows = g.op("Where", fits, h, g.op("Min", h, g.op("Max", g.i64(strips.rows), tall)),
                name="strips/rows")  # Strips.rows_for
    count = g.op("Div", g.op("Sub", g.op("Add", h, rows), one), rows)  # [ceil(H / rows)]
    h_rows = g.op("Sub", h, rows, name="strips/last_start")
    nl, nr = _normalise(g, gray_l), _normalise(g, gray_r)
    ref_n = g.op("Concat", g.op("Unsqueeze", nl, zero), g.op("Unsqueeze", g.flip(nr, 1), zero), axis=0,
                 name="strips/reference_images")  # (2, H, W)
    oth_n = g.op("Concat", g.op("Unsqueeze", nr, zero), g.op("Unsqueeze", g.flip(nl, 1), zero), axis=0,
                 name="strips/other_images")

    name = "strip"
    body = g.sub(name)
    index = f"{name}/index"
    b0 = body.i64(0)
    start = body.op("Min", body.op("Mul", body.op("Unsqueeze", index, b0), rows), h_rows, label="start")
    top = body.op("Max", body.op("Sub", start, body.i64(strips.overlap)), b0)
    bottom = body.op("Min", body.op("Add", body.op("Add", start, rows), body.i64(strips.overlap)), h)
    feats = body.op("Slice", features, top, bottom, body.i64(2), label="strip_features")  # (2, C, h, W)
    fl = body.op("Slice", feats, b0, body.i64(1), b0)
    fr = body.op("Slice", feats, body.i64(1), body.i64(2), b0)
    ref = body.op("Concat", fl, body.flip(fr, 3), axis=0, label="reference_features")  # left, mirrored right
    oth = body.op("Concat", fr, body.flip(fl, 3), axis=0, label="other_features")
    cost = band_nodes(body, ref, oth, max_disp, block, "volume")  # (W, 2, h, D)
    rn = body.op("Slice", ref_n, top, bottom, body.i64(1))
    on = body.op("Slice", oth_n, top, bottom, body.i64(1))
    total, k = sgm_nodes(body, cost, rn, on, spec.sgm, max_disp, opset)  # (h, W, 2, D), (h, W, 2)
    first = body.op("Sub", start, top)
    last = body.op("Add", first, rows)
    k_core = body.op("Slice", k, first, last, b0, label="strip_winners")  # (rows, W, 2)
    volume = body.op("Gather", body.op("Slice", total, first, last, b0), body.const(0), axis=2,
                     label="strip_left_volume")  # (rows, W, D)
    conf = confidence_nodes(body, volume, body.op("Gather", k_core, body.const(0), axis=2), max_disp)
    outs = [(k_core, TensorProto.INT64), (conf, TensorProto.FLOAT), (volume, TensorProto.FLOAT)]
    for i, (out, _) in enumerate(outs):
        body.op("Identity", out, name=f"{name}/scan_out{i}")
    graph = helper.make_graph(body.nodes, name, [value_info(index, TensorProto.INT64, [])],
                              [value_info(f"{name}/scan_out{i}", elem, None) for i, (_, elem) in enumerate(outs)])
    indices = g.op("Range", g.const(0), g.op("Squeeze", count, zero), g.const(1))
    k_s, conf_s, vol_s = g.op("Scan", indices, body=graph, num_scan_inputs=1, outputs=3, label="strips")

    # image row y lies in strip s = min(y // rows, count - 1), at row y - start(s) of it
    y = g.op("Range", g.const(0), g.op("Squeeze", h, zero), g.const(1))
    rows0, last_start = g.op("Squeeze", rows, zero), g.op("Squeeze", h_rows, zero)
    s = g.op("Min", g.op("Div", y, rows0), g.op("Sub", g.op("Squeeze", count, zero), g.const(1)))
    s_rows = g.op("Mul", s, rows0)
    row = g.op("Add", s_rows, g.op("Sub", y, g.op("Min", s_rows, last_start)), label="strip_rows")  # (H,)
    m1, d = g.i64(-1), g.i64(max_disp)
    k = g.op("Gather", g.op("Reshape", k_s, g.op("Concat", m1, w, g.i64(2), axis=0)), row, axis=0)  # (H, W, 2)
    conf = g.op("Gather", g.op("Reshape", conf_s, g.op("Concat", m1, w, axis=0)), row, axis=0)  # (H, W)
    volume = g.op("Gather", g.op("Reshape", vol_s, g.op("Concat", m1, w, d, axis=0)), row, axis=0,
                  label="sgm_left_volume")  # (H, W, D)

    disp = g.cast(g.op("Sub", g.const(max_disp - 1), k), 1)
    dl = g.op("Gather", disp, g.const(0), axis=2, label="sgm_left")
    dr = g.flip(g.op("Gather", disp, g.const(1), axis=2, label="sgm_right_mirrored"), 1)
    filled, match = lr_check_fill_match(g, dl, dr, max_disp, spec)
    refined = subpixel_nodes(g, filled, volume, max_disp)
    smoothed = median_nodes(g, refined)
    out = bilateral_nodes(g, smoothed, spec.blur_sigma, spec.blur_t)
    valid = g.cast(match, TensorProto.UINT8)
    confidence = g.op("Mul", conf, g.cast(match, TensorProto.FLOAT), label="confidence_valid")
    return out, valid, confidence
