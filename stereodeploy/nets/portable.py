"""Small rewrites that make an exported ONNX graph load in every onnxruntime execution provider.

torch.onnx exports ``F.normalize``'s ``clamp_min(eps)`` as ``Clip(x, eps, <empty>)``; onnxruntime-web's WebGL
backend rejects a Clip whose max is missing. :func:`bound_clips` gives every such Clip an explicit max of
float32's largest value, which changes no result.
"""

from __future__ import annotations

from typing import Any

import numpy as np

FLOAT_MAX = float(np.finfo(np.float32).max)
FLOAT_LOWEST = -FLOAT_MAX


def bound_clips(model: Any) -> int:
    """Give every Clip of ``model`` (onnx.ModelProto, opset >= 11, subgraphs included) both bounds, in place;
    returns how many bounds were added. The bounds are float32: our exports clip float32 tensors only."""
    from onnx import numpy_helper

    added = 0

    def fix(graph: Any) -> None:
        nonlocal added
        for node in list(graph.node):
            for attr in node.attribute:
                if attr.type == attr.GRAPH:
                    fix(attr.g)
            if node.op_type != "Clip" or node.domain not in ("", "ai.onnx"):
                continue
            inputs = list(node.input) + [""] * (3 - len(node.input))
            for i, value in ((1, FLOAT_LOWEST), (2, FLOAT_MAX)):
                if inputs[i]:
                    continue
                name = f"{node.name or node.output[0]}/bound{i}"
                graph.initializer.append(numpy_helper.from_array(np.array(value, dtype=np.float32), name))
                inputs[i] = name
                added += 1
            del node.input[:]
            node.input.extend(inputs)

    fix(model.graph)
    return added
