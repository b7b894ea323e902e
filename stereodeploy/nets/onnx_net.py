"""The feature network written directly as ONNX from framework-neutral weights, with no framework installed.

It builds the same contract as the torch and TensorFlow exporters (input ``image`` raw grayscale (N, 1, H, W),
output ``features`` L2-normalised (N, C, H, W), per-image normalisation inside the graph), node by node, so that a
model can be made, inspected and tested where neither framework is installed (the default install).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stereodeploy.config import NetworkConfig
from stereodeploy.data.preprocess import NORM_EPS
from stereodeploy.nets.weights import Weights

L2_EPS = 1e-12  # as torch.nn.functional.normalize: x / max(||x||, eps)


def to_onnx_model(network: NetworkConfig, weights: Weights, opset: int = 17) -> Any:
    """(network, neutral weights) -> onnx.ModelProto with dynamic batch, height and width."""
    from onnx import TensorProto, helper, numpy_helper

    if len(weights) != network.layers:
        raise ValueError(f"expected {network.layers} layers of weights, got {len(weights)}")
    pad = network.kernel // 2
    inits = [numpy_helper.from_array(np.array(NORM_EPS, np.float32), "norm_eps"),
             numpy_helper.from_array(np.array(L2_EPS, np.float32), "l2_eps")]
    axes_input_from = {"ReduceSum": 13, "ReduceMean": 18}  # before these opsets, axes is an attribute

    def reduce_node(op: str, x: str, axes: list[int], out: str) -> list[Any]:
        if opset < axes_input_from[op]:
            return [helper.make_node(op, [x], [out], name=out, axes=axes, keepdims=1)]
        inits.append(numpy_helper.from_array(np.array(axes, np.int64), f"{out}_axes"))
        return [helper.make_node(op, [x, f"{out}_axes"], [out], name=out, keepdims=1)]

    nodes = [
        *reduce_node("ReduceMean", "image", [2, 3], "image_mean"),
        helper.make_node("Sub", ["image", "image_mean"], ["centered"], name="centered"),
        helper.make_node("Mul", ["centered", "centered"], ["squared"], name="squared"),
        *reduce_node("ReduceMean", "squared", [2, 3], "variance"),
        helper.make_node("Add", ["variance", "norm_eps"], ["variance_eps"], name="variance_eps"),
        helper.make_node("Sqrt", ["variance_eps"], ["std"], name="std"),
        helper.make_node("Div", ["centered", "std"], ["normalised"], name="normalised"),
    ]
    x = "normalised"
    for i, (kernel, bias) in enumerate(weights):
        inits += [numpy_helper.from_array(np.asarray(kernel, np.float32), f"conv{i}.weight"),
                  numpy_helper.from_array(np.asarray(bias, np.float32), f"conv{i}.bias")]
        nodes.append(helper.make_node("Conv", [x, f"conv{i}.weight", f"conv{i}.bias"], [f"conv{i}"], name=f"conv{i}",
                                      kernel_shape=[network.kernel] * 2, pads=[pad] * 4))
        x = f"conv{i}"
        if i < len(weights) - 1:
            nodes.append(helper.make_node("Relu", [x], [f"relu{i}"], name=f"relu{i}"))
            x = f"relu{i}"
    nodes += [
        helper.make_node("Mul", [x, x], ["feature_squares"], name="feature_squares"),
        *reduce_node("ReduceSum", "feature_squares", [1], "feature_norm_squared"),
        helper.make_node("Sqrt", ["feature_norm_squared"], ["feature_norm"], name="feature_norm"),
        helper.make_node("Max", ["feature_norm", "l2_eps"], ["feature_norm_eps"], name="feature_norm_eps"),
        helper.make_node("Div", [x, "feature_norm_eps"], ["features"], name="features"),
    ]
    graph = helper.make_graph(
        nodes, "mccnn_fast_features",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, "height", "width"])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", network.maps, "height", "width"])],
        inits)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="stereodeploy")
    model.ir_version = helper.find_min_ir_version_for(opsets)  # loadable by the oldest runtime that has the opset
    return model
